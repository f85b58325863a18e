"""A per-process, memory-bounded cache of token states between model and pooling.

Grid searches over ``layers``, ``layer_combine``, ``pooling``,
``subword_pooling`` and ``normalize`` change only what happens *after* the
model. The cache keeps, for each model input (one row of token ids), the
hidden states of every layer, so that later settings pool from memory instead
of running the model again. (A call that fills the cache therefore runs all
the layers, without early exit.)

Keys
----
An entry is keyed by the model's fingerprint (where its weights came from,
their files' sizes and modification times, the device and the dtype) and by
the exact token ids and segment ids the model reads. Everything that changes
the model's output (the text, ``max_length``, ``long_text``, ``stride``,
``pairs``) changes those ids, so it is part of the key without being listed.

Values
------
float32 tensors on the CPU, one per layer, holding only the real tokens (no
padding). float32 keeps cached results within float rounding of the uncached
path (the tests hold them to 1e-5); it costs twice float16's memory, which the
budget bounds. The budget is ``SKBERT_CACHE_MB`` megabytes (default 1024);
the least recently used entries are evicted first.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict

import numpy as np
import torch

__all__ = ["TokenStateCache", "default_cache", "row_key"]


def row_key(fingerprint: str, input_ids: list[int], token_type_ids=None) -> bytes:
    """A 128-bit digest of one model input under one model fingerprint."""
    digest = hashlib.blake2b(fingerprint.encode(), digest_size=16)
    digest.update(np.asarray(input_ids, dtype=np.int64).tobytes())
    if token_type_ids is not None:
        digest.update(b"|types|")
        digest.update(np.asarray(token_type_ids, dtype=np.int64).tobytes())
    return digest.digest()


class TokenStateCache:
    """Least-recently-used map from row keys to ``{layer: Tensor (seq_len, hidden)}``.

    Parameters
    ----------
    max_bytes : int
        Memory budget; entries are evicted, oldest use first, to stay within it.
        An entry larger than the whole budget is not stored.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self.n_bytes = 0
        self._entries: OrderedDict[bytes, dict[int, torch.Tensor]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes, layers: list[int]) -> dict[int, torch.Tensor] | None:
        """The entry for ``key`` if it holds every layer in ``layers``, else None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or any(layer not in entry for layer in layers):
                return None
            self._entries.move_to_end(key)
            return entry

    def put(self, key: bytes, states: dict[int, torch.Tensor]) -> None:
        """Store (or extend) the entry for ``key``, then evict to fit the budget."""
        size = sum(t.numel() * t.element_size() for t in states.values())
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.n_bytes -= sum(t.numel() * t.element_size() for t in old.values())
                states = {**old, **states}
                size = sum(t.numel() * t.element_size() for t in states.values())
            if size > self.max_bytes:
                return
            self._entries[key] = states
            self.n_bytes += size
            while self.n_bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self.n_bytes -= sum(
                    t.numel() * t.element_size() for t in evicted.values()
                )

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.n_bytes = 0


_DEFAULT: TokenStateCache | None = None
_DEFAULT_LOCK = threading.Lock()


def default_cache() -> TokenStateCache:
    """The process-wide cache that estimators with ``cache="memory"`` share."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            megabytes = float(os.environ.get("SKBERT_CACHE_MB", "1024"))
            _DEFAULT = TokenStateCache(int(megabytes * 2**20))
        return _DEFAULT
