"""The batching engine: from texts to pooled ``float32`` arrays.

Texts are deduplicated, tokenized once with the fast tokenizer (rows that
tokenize alike run once), sorted by token length and cut into batches padded
only to their own longest member.
Each batch runs under ``torch.inference_mode``, stops after the deepest
requested layer and is pooled on the device; from a GPU the pooled rows are
copied to the host without waiting (:class:`HostCopies`). Rows come back in
the caller's order.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import ctypes
import functools
import hashlib
import json
import sys
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ._cache import row_key
from ._model import LoadedModel, forward_hidden_states
from ._pooling import (
    LAYER_COMBINES,
    combine_layers,
    pool_segments,
    pool_subwords,
    pool_tokens,
    select_layers,
)

__all__ = [
    "LONG_TEXT",
    "Batch",
    "DocTokens",
    "aggregate_windows",
    "concat_poolers",
    "Tokenized",
    "encode_texts",
    "encode_token_groups",
    "iter_batches",
    "prompt_tokens",
    "rows_keeping_prompt",
    "special_tokens_around",
    "tokenize",
    "tokenize_cached",
    "tokenize_pairs",
    "tokenize_with_offsets",
    "window_around",
    "windows_for_words",
]


LONG_TEXT = ("truncate", "truncate_tail", "truncate_head_tail", "window", "window_max")


@dataclass
class Tokenized:
    """Token ids of texts (or pairs), at most ``max_length`` per row.

    Attributes
    ----------
    input_ids : list of list of int, one per row, special tokens included.
    special_tokens_mask : list of list of int, 1 where a token is special.
    n_truncated : int, number of texts that lost tokens.
    token_type_ids : list of list of int or None
        Segment ids for the model (0 for text A, 1 for text B); None: all 0.
    segment_ids : list of list of int or None
        For pairs, 0 for the tokens of A and 1 for those of B, also for
        models that take no ``token_type_ids``.
    text_of_row : ndarray of shape (n_rows,) or None
        With windows, the text each row belongs to (non-decreasing); None
        means one row per text.
    n_windowed : int, number of texts read in more than one window.
    truncated : ndarray of shape (n_texts,) of bool or None
        Which texts lost tokens.
    row_keys : list of bytes or None
        Cache keys of the rows (see :func:`skbert._cache.row_key`), when known.
    memo : tuple or None
        What :func:`remember_tokens` memoises (see :func:`tokenize_cached`).
    """

    input_ids: list[list[int]]
    special_tokens_mask: list[list[int]]
    n_truncated: int
    token_type_ids: list[list[int]] | None = None
    segment_ids: list[list[int]] | None = None
    text_of_row: np.ndarray | None = None
    n_windowed: int = 0
    truncated: np.ndarray | None = None
    row_keys: list[bytes] | None = None
    memo: tuple | None = None


def tokenize(
    tokenizer,
    texts: list[str],
    max_length: int,
    long_text: str = "truncate",
    stride: int = 0,
    prompt_chars: int = 0,
) -> Tokenized:
    """Tokenize ``texts`` into rows of at most ``max_length`` tokens.

    Parameters
    ----------
    tokenizer : a fast tokenizer
    texts : list of str
    max_length : int
        Tokens per row, special tokens included.
    long_text : {"truncate", "truncate_tail", "truncate_head_tail", "window", \
"window_max"}
        What happens to a longer text: keep its head, its tail, or its first
        quarter and last three quarters (of the room left by the special
        tokens); or read it in overlapping windows, each with its own special
        tokens (``"window"`` and ``"window_max"`` tokenize the same way).
    stride : int
        With windows, the number of tokens consecutive windows share.
    prompt_chars : int
        The length of the prompt that each text begins with (0 for none). Its
        tokens stay at the head of every row (see :func:`rows_keeping_prompt`):
        before a text's tail, and in every window.
    """
    if not texts:
        return Tokenized([], [], 0)
    if long_text == "truncate" or (long_text.startswith("window") and not prompt_chars):
        windows = long_text != "truncate"
        encoded = _encode_overflowing(
            tokenizer, texts, max_length, stride if windows else 0
        )
        # A long text overflows into extra rows; its first row is its head.
        text_of_row = np.asarray(encoded["overflow_to_sample_mapping"], dtype=np.int64)
        rows_per_text = np.bincount(text_of_row, minlength=len(texts))
        n_long = int((rows_per_text > 1).sum())
        if windows:
            return Tokenized(
                input_ids=encoded["input_ids"],
                special_tokens_mask=encoded["special_tokens_mask"],
                n_truncated=0,
                text_of_row=text_of_row,
                n_windowed=n_long,
                truncated=np.zeros(len(texts), dtype=bool),
            )
        heads = np.cumsum(rows_per_text) - rows_per_text
        return Tokenized(
            input_ids=[encoded["input_ids"][row] for row in heads],
            special_tokens_mask=[encoded["special_tokens_mask"][row] for row in heads],
            n_truncated=n_long,
            truncated=rows_per_text > 1,
        )
    prefix, suffix = special_tokens_around(tokenizer)
    room = max_length - len(prefix) - len(suffix)
    encoded = call_tokenizer(
        tokenizer,
        texts,
        add_special_tokens=False,
        truncation=False,
        return_attention_mask=False,
        return_token_type_ids=False,
        return_offsets_mapping=bool(prompt_chars),
        verbose=False,
    )
    windows = long_text.startswith("window")
    input_ids, special, text_of_row = [], [], []
    rows_per_text = np.zeros(len(texts), dtype=np.int64)
    truncated = np.zeros(len(texts), dtype=bool)
    for i, ids in enumerate(encoded["input_ids"]):
        n_prompt = 0
        if prompt_chars:
            n_prompt = prompt_tokens(encoded["offset_mapping"][i], prompt_chars)
        rows = rows_keeping_prompt(n_prompt, len(ids), room, long_text, stride)
        rows_per_text[i] = len(rows)
        truncated[i] = len(rows[0]) < len(ids) and not windows
        for positions in rows:
            if len(positions) < len(ids):
                ids_row = [ids[k] for k in positions]
            else:
                ids_row = ids
            input_ids.append(prefix + ids_row + suffix)
            special.append([1] * len(prefix) + [0] * len(ids_row) + [1] * len(suffix))
            text_of_row.append(i)
    if windows:
        return Tokenized(
            input_ids=input_ids,
            special_tokens_mask=special,
            n_truncated=0,
            text_of_row=np.asarray(text_of_row, dtype=np.int64),
            n_windowed=int((rows_per_text > 1).sum()),
            truncated=truncated,
        )
    return Tokenized(input_ids, special, int(truncated.sum()), truncated=truncated)


def prompt_tokens(offsets, prompt_chars: int) -> int:
    """How many of a prompted text's first tokens (special tokens left out,
    character ``offsets`` in order) lie inside its ``prompt_chars``-long
    prompt. A token that runs past the prompt's end is the text's (byte-level
    BPE may join the prompt's last space to the text's first word, "Ġbank")."""
    n = 0
    for _, end in offsets:
        if end > prompt_chars:
            break
        n += 1
    return n


def rows_keeping_prompt(
    n_prompt: int, n_tokens: int, room: int, long_text: str, stride: int = 0
) -> list[list[int]]:
    """The positions of a text's tokens (special tokens left out) in each row
    the model reads, with the text's first ``n_prompt`` tokens (its prompt)
    at the head of every row.

    A text of at most ``room`` tokens is one row. A longer one keeps its
    prompt and, of the rest, what ``long_text`` keeps in ``room - n_prompt``
    tokens: its head ("truncate"), its tail ("truncate_tail"), its first
    quarter and last three quarters ("truncate_head_tail"), or overlapping
    windows that share ``stride`` tokens ("window", "window_max"), laid out as
    a fast tokenizer's overflowing rows are. A prompt that leaves no room for
    text (``n_prompt >= room``) is read as text from its ``room``-th token on.
    """
    if n_tokens <= room:
        return [list(range(n_tokens))]
    if room <= 0:  # the special tokens alone fill max_length
        return [[]]
    n_prompt = min(n_prompt, room - 1)
    head = list(range(n_prompt))
    body = list(range(n_prompt, n_tokens))
    width = room - n_prompt
    if not long_text.startswith("window"):
        if long_text == "truncate":
            return [head + body[:width]]
        return [head + cut_to_room(body, width, long_text)]
    step = max(1, width - stride)
    rows, start = [], 0
    while True:
        rows.append(head + body[start : start + width])
        if start + width >= len(body):
            return rows
        start += step


def cut_to_room(values: list, room: int, long_text: str) -> list:
    """The ``room`` entries of a long text's ``values`` (token ids, offsets)
    that ``long_text`` keeps: its tail ("truncate_tail"), or its first quarter
    and last three quarters ("truncate_head_tail")."""
    head = 0 if long_text == "truncate_tail" else room // 4
    return values[:head] + values[len(values) - (room - head) :]


def pair_segments(encoded, row: int) -> list[int]:
    """Segment ids of a tokenized pair: 0 up to B's first token, 1 from there
    on (B's final separator included); an empty B keeps only that separator."""
    n = len(encoded["input_ids"][row])
    sequence = encoded.sequence_ids(row)
    b_start = next((k for k, s in enumerate(sequence) if s == 1), n - 1)
    return [0] * b_start + [1] * (n - b_start)


def right_truncating(tokenizer):
    """``tokenizer``, or a shallow copy of it that truncates on the right.

    skbert's ``long_text`` says which tokens a long text keeps ("truncate" its
    head); a tokenizer whose config sets ``truncation_side="left"`` would keep
    the tail instead. The user's tokenizer is not changed.
    """
    if getattr(tokenizer, "truncation_side", "right") == "right":
        return tokenizer
    copied = copy.copy(tokenizer)
    copied.truncation_side = "right"
    return copied


# a private copy of each tokenizer's Rust backend, set up per call under a lock
_BACKENDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_BACKENDS_LOCK = threading.Lock()
# id of a tokenizer's shared Rust backend -> the lock of calls through it
_CALL_LOCKS: dict[int, threading.Lock] = {}


def call_tokenizer(tokenizer, *args, **kwargs):
    """``tokenizer(*args, **kwargs)``, with its backend to this call alone.

    transformers sets truncation and padding on the tokenizer's Rust backend
    at each call, and the backend is shared (by every estimator of the model,
    and by :func:`right_truncating`'s copies): two threads calling at once
    could each encode with the other's settings (rows longer than
    ``max_length``, say).
    """
    backend = getattr(tokenizer, "_tokenizer", None)
    if backend is None:
        return tokenizer(*args, **kwargs)
    with _BACKENDS_LOCK:
        lock = _CALL_LOCKS.setdefault(id(backend), threading.Lock())
    with lock:
        return tokenizer(*args, **kwargs)


def _encode_overflowing(tokenizer, texts: list[str], max_length: int, stride: int):
    """``input_ids``, ``special_tokens_mask`` and ``overflow_to_sample_mapping``
    of ``texts``, truncated to ``max_length`` with overflowing rows, as
    ``tokenizer(texts, truncation=True, return_overflowing_tokens=True, ...)``
    gives them.

    A fast tokenizer's Rust backend is called directly, which skips
    transformers' conversion of each encoding into Python dicts (1.22x
    faster in ``benchmarks/bench_tokenize.py``).
    The backend is a private copy, so the user's tokenizer keeps its settings;
    it truncates on the right, whatever the tokenizer's ``truncation_side``.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or getattr(tokenizer, "split_special_tokens", False):
        # a setting that transformers applies itself
        return call_tokenizer(
            right_truncating(tokenizer),
            texts,
            truncation=True,
            max_length=max_length,
            stride=stride,
            return_overflowing_tokens=True,
            return_special_tokens_mask=True,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
    with _BACKENDS_LOCK:
        entry = _BACKENDS.get(tokenizer)
        if entry is None or entry[0] is not backend:
            entry = (backend, backend.from_str(backend.to_str()), threading.Lock())
            _BACKENDS[tokenizer] = entry
    _, private, lock = entry
    with lock:
        private.no_padding()
        private.enable_truncation(max_length, stride=stride, strategy="longest_first")
        encodings = private.encode_batch(texts, add_special_tokens=True)
    input_ids, special, text_of_row = [], [], []
    for i, encoding in enumerate(encodings):
        for row in (encoding, *encoding.overflowing):
            input_ids.append(row.ids)
            special.append(row.special_tokens_mask)
            text_of_row.append(i)
    return {
        "input_ids": input_ids,
        "special_tokens_mask": special,
        "overflow_to_sample_mapping": text_of_row,
    }


def tokenize_pairs(
    tokenizer, texts_a: list[str], texts_b: list[str], max_length: int
) -> Tokenized:
    """Tokenize pairs as one input each: ``[CLS] A [SEP] B [SEP]`` for BERT.

    Pairs longer than ``max_length`` lose tokens from the longer side first.
    ``token_type_ids`` are the tokenizer's (0 for A, 1 for B); ``segment_ids``
    say the same for every model, also those without token types (DistilBERT).
    """
    if not texts_a:
        return Tokenized([], [], 0, token_type_ids=[], segment_ids=[])
    encoded = call_tokenizer(
        right_truncating(tokenizer),
        texts_a,
        texts_b,
        truncation="longest_first",
        max_length=max_length,
        return_special_tokens_mask=True,
        return_token_type_ids=True,
        return_attention_mask=False,
    )
    full = call_tokenizer(
        tokenizer,
        texts_a,
        texts_b,
        truncation=False,
        return_attention_mask=False,
        return_token_type_ids=False,
        verbose=False,
    )
    truncated = np.array([len(ids) > max_length for ids in full["input_ids"]])
    segment_ids = [pair_segments(encoded, i) for i in range(len(encoded["input_ids"]))]
    return Tokenized(
        input_ids=encoded["input_ids"],
        special_tokens_mask=encoded["special_tokens_mask"],
        n_truncated=int(truncated.sum()),
        token_type_ids=encoded["token_type_ids"],
        segment_ids=segment_ids,
        truncated=truncated,
    )


def tokenize_cached(
    cache,
    loaded: LoadedModel,
    texts: list,
    *,
    pairs: bool,
    max_length: int,
    long_text: str = "truncate",
    stride: int = 0,
    prompt_chars: int = 0,
) -> Tokenized:
    """:func:`tokenize` (or :func:`tokenize_pairs`) with a memo in ``cache``.

    Texts tokenized before under the same model and settings are not
    tokenized again, and the rows come with their cache keys
    (``row_keys``). ``texts`` holds pairs ``(a, b)`` when ``pairs``. New
    tokenizations are not memoised yet: they are in ``memo``, for
    :func:`remember_tokens` once the caller knows it keeps the call.
    """
    windows = long_text.startswith("window")
    settings = (
        loaded.fingerprint,
        max_length,
        "window" if windows else long_text,
        stride if windows else 0,
        pairs,
        0 if long_text == "truncate" else prompt_chars,
    )
    # GridSearchCV hands every candidate the same folds: whole calls repeat
    call_key = (settings, tuple(texts))
    seen = cache.get_tokens(call_key)
    if seen is not None:
        return seen
    records = [cache.get_tokens((settings, text)) for text in texts]
    todo = [i for i, record in enumerate(records) if record is None]
    if todo:
        new = [texts[i] for i in todo]
        if pairs:
            part = tokenize_pairs(
                loaded.tokenizer, [a for a, _ in new], [b for _, b in new], max_length
            )
        else:
            part = tokenize(
                loaded.tokenizer, new, max_length, long_text, stride, prompt_chars
            )
        part.row_keys = _row_keys(
            loaded,
            part.input_ids,
            part.token_type_ids if loaded.uses_token_type_ids else None,
        )
        if len(todo) == len(texts):  # nothing memoised: the call is ``part``
            # its per-text records are built only if the call is kept
            part.memo = (call_key, None, settings, texts)
            return part
        new_records = list(_text_records(settings, new, part))
        for i, (_, record) in zip(todo, new_records, strict=True):
            records[i] = record
    input_ids, special, types, segments, keys, text_of_row = [], [], [], [], [], []
    for t, (ids, spec, typ, seg, _, row_keys) in enumerate(records):
        input_ids += ids
        special += spec
        keys += row_keys
        if typ is not None:
            types += typ
        if seg is not None:
            segments += seg
        text_of_row += [t] * len(ids)
    truncated = np.fromiter((r[4] for r in records), dtype=bool, count=len(records))
    rows_per_text = np.fromiter(
        (len(r[0]) for r in records), dtype=np.int64, count=len(records)
    )
    tokenized = Tokenized(
        input_ids=input_ids,
        special_tokens_mask=special,
        n_truncated=int(truncated.sum()),
        token_type_ids=types if pairs else None,
        segment_ids=segments if pairs else None,
        text_of_row=np.asarray(text_of_row, dtype=np.int64) if windows else None,
        n_windowed=int((rows_per_text > 1).sum()),
        truncated=truncated,
        row_keys=keys,
    )
    tokenized.memo = (call_key, new_records if todo else [])
    return tokenized


def _text_records(settings: tuple, texts: list, part: Tokenized):
    """``((settings, text), record)`` for each text of ``part``, in order.

    A record holds a text's rows: ids, special-token masks, token type ids,
    segment ids (None unless pairs), whether it was truncated, row keys.
    """
    text_of_row = (
        np.arange(len(texts)) if part.text_of_row is None else part.text_of_row
    )
    bounds = np.searchsorted(text_of_row, np.arange(len(texts) + 1))
    for k, text in enumerate(texts):
        rows = range(bounds[k], bounds[k + 1])
        types = segments = None
        if part.token_type_ids is not None:
            types = [part.token_type_ids[r] for r in rows]
            segments = [part.segment_ids[r] for r in rows]
        record = (
            [part.input_ids[r] for r in rows],
            [part.special_tokens_mask[r] for r in rows],
            types,
            segments,
            bool(part.truncated[k]),
            [part.row_keys[r] for r in rows],
        )
        yield (settings, text), record


def _row_keys(
    loaded: LoadedModel, input_ids: list[list[int]], token_type_ids=None
) -> list[bytes]:
    """The cache key of each row (``token_type_ids`` only for models that read them)."""
    if token_type_ids is None:
        return [row_key(loaded.fingerprint, ids) for ids in input_ids]
    return [
        row_key(loaded.fingerprint, ids, types)
        for ids, types in zip(input_ids, token_type_ids, strict=True)
    ]


def remember_tokens(cache, tokenized: Tokenized) -> None:
    """Put the tokenizations :func:`tokenize_cached` made into ``cache``'s memo."""
    if tokenized.memo is None:
        return
    call_key, new_records, *lazy = tokenized.memo
    if new_records is None:  # the call is one tokenization: records built now
        new_records = _text_records(*lazy, tokenized)
    for key, record in new_records:
        cache.put_tokens(key, record, sum(map(len, record[0])), len(str(key[1])))
    # a whole call: the rows' lists again
    n_tokens = sum(map(len, tokenized.input_ids)) + 8 * len(call_key[1])
    cache.put_tokens(call_key, tokenized, n_tokens)
    tokenized.memo = None  # memoised once


@dataclass
class Batch:
    """One padded batch, in length-sorted order.

    Attributes
    ----------
    rows : ndarray of shape (batch,), the positions of these sequences in the input.
    attention_mask : Tensor of shape (batch, seq_len), on the model's device.
    special_tokens_mask : Tensor of shape (batch, seq_len), on the model's device.
    layers : list of int
        The layers :meth:`combined` combines by default.
    layer_combine : {"mean", "sum", "concat"}
    states : dict of int to Tensor of shape (batch, seq_len, hidden) or None
        The hidden states the model returned (at least ``layers``).
    cached : list of Tensor of shape (n_tokens, n_layers, hidden) or None
        Instead of ``states``, the cache entries of the rows (real tokens only).
    segment_ids : Tensor of shape (batch, seq_len) or None
        For pairs, 0 on the tokens of A and 1 on those of B (and on padding).
    """

    rows: np.ndarray
    attention_mask: torch.Tensor
    special_tokens_mask: torch.Tensor
    layers: list[int]
    layer_combine: str
    states: dict[int, torch.Tensor] | None = None
    cached: list[torch.Tensor] | None = None
    segment_ids: torch.Tensor | None = None
    _combined: dict = field(default_factory=dict, repr=False)

    def combined(
        self,
        layers: list[int] | None = None,
        how: str | None = None,
        first_token: bool = False,
    ) -> torch.Tensor:
        """Tensor of shape (batch, seq_len, width): ``layers`` combined by ``how``.

        Defaults to the batch's own ``layers`` and ``layer_combine``; each
        combination is computed once per batch. ``first_token=True`` needs
        only position 0 (shape (batch, 1, width)), which spares a batch read
        from the cache the combination of every other token.
        """
        layers = list(self.layers if layers is None else layers)
        how = self.layer_combine if how is None else how
        key = (tuple(layers), how if len(layers) > 1 else None)
        if first_token:
            if key in self._combined or self.states is not None:
                return self.combined(layers, how)[:, :1]
            key = (*key, "first")
        if key not in self._combined:
            if self.states is None:
                entries = [e[:1] for e in self.cached] if first_token else self.cached
                value = _combine_cached(entries, layers, how)
                value = value.to(self.attention_mask.device)
            # in float32, as from the cache: a low-precision model's states
            # are combined and pooled without losing more (a no-op for float32)
            elif len(layers) == 1:  # nothing to combine: skip the stack's copy
                value = self.states[layers[0]].float()
            else:
                value = combine_layers(select_layers(self.states, layers).float(), how)
            self._combined[key] = value
        return self._combined[key]


def _combine_cached(
    entries: list[torch.Tensor], layers: list[int], how: str
) -> torch.Tensor:
    """Combine the layers of each cache entry, then pad: (batch, seq_len, width).

    Combining row by row before padding reads each entry once and writes
    only the combined width, which is what bounds the cache's hit path.
    """
    return torch.nn.utils.rnn.pad_sequence(
        _combined_rows(entries, layers, how), batch_first=True
    )


def _combined_rows(
    entries: list[torch.Tensor], layers: list[int], how: str
) -> list[torch.Tensor]:
    """Each cache entry's ``layers`` combined by ``how``: (n_tokens, width) each."""
    low = min(layers)
    in_order = layers == sorted(layers) or how in ("sum", "mean")  # or no matter
    if in_order and sorted(layers) == list(range(low, low + len(layers))):
        parts = [entry[:, low : low + len(layers)] for entry in entries]  # views
    else:
        index = torch.tensor(layers)
        parts = [entry.index_select(1, index) for entry in entries]
    if len(layers) == 1:
        rows = [part[:, 0] for part in parts]
    elif how == "concat":
        rows = [part.reshape(len(part), -1) for part in parts]
    elif how == "sum":
        rows = [part.sum(dim=1) for part in parts]
    elif how == "mean":
        rows = [part.mean(dim=1) for part in parts]
    else:
        raise ValueError(f"how must be one of {LAYER_COMBINES}, got {how!r}.")
    return rows


def _show_progress(progress_bar: bool | None) -> bool:
    if progress_bar is None:
        return bool(getattr(sys.stderr, "isatty", lambda: False)())
    return progress_bar


# the bar that every call inside shared_progress advances (the CLI's file)
_SHARED_BAR: contextvars.ContextVar = contextvars.ContextVar(
    "skbert_progress_bar", default=None
)


def _new_bar(total: int, progress_bar: bool | None):
    return tqdm(
        total=total,
        disable=not _show_progress(progress_bar),
        unit="text",
        desc="skbert",
    )


@contextlib.contextmanager
def shared_progress(total: int, progress_bar: bool | None) -> Iterator[None]:
    """One progress bar over ``total`` texts for every call made inside.

    The command line embeds a file in chunks, one ``transform`` each; inside
    this context they all advance the same bar instead of one bar per chunk.
    """
    with _new_bar(total, progress_bar) as bar:
        token = _SHARED_BAR.set(bar)
        try:
            yield
        finally:
            _SHARED_BAR.reset(token)


@contextlib.contextmanager
def text_progress(total: int, progress_bar: bool | None) -> Iterator[tqdm]:
    """A bar over the ``total`` texts of one call, or the shared one."""
    shared = _SHARED_BAR.get()
    if shared is not None:
        yield shared
        return
    with _new_bar(total, progress_bar) as bar:
        yield bar


class TextCounter:
    """Advance a bar over texts as the model rows that stand for them finish.

    ``copies[t]`` counts the occurrences of text ``t`` in the call (a text
    given twice runs once and counts twice); ``text_of_row`` maps model rows
    to their text when long texts are read in windows (None: one row per
    text). A text counts when the last of its rows is done.
    """

    def __init__(self, bar: tqdm, copies: np.ndarray, text_of_row=None):
        self.bar = bar
        self.copies = copies
        self.text_of_row = text_of_row
        if text_of_row is not None:  # rows of each text still to finish
            self.left = np.bincount(text_of_row, minlength=len(copies))

    def rows_done(self, rows: np.ndarray) -> None:
        if self.text_of_row is None:
            finished = rows
        else:
            texts = self.text_of_row[rows]
            np.subtract.at(self.left, texts, 1)
            finished = np.unique(texts[self.left[texts] == 0])
        step = int(self.copies[finished].sum())
        if step:
            self.bar.update(step)


# distinct texts tokenized at once by encode_texts
CHUNK_TEXTS = 8192


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def release_freed_memory() -> None:
    """Give the pages glibc's heap holds freed back to the system.

    Each batch's tensors have their own sizes; glibc serves many of them from
    its heap and keeps what they free, scattered between live blocks, so over
    a long call the process grows with memory nobody uses
    (``benchmarks/bench_memory.py``). ``malloc_trim(0)`` returns the whole
    free pages (about 0.1 ms a call in an exploratory timing). It changes no
    setting and frees nothing in use; elsewhere than glibc it does nothing.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


# batches iter_batches yields between two release_freed_memory calls
TRIM_BATCHES = 32

# padded tokens per batch read from the cache (no model to bound the batch)
HIT_TOKENS = 4096


# device-to-host copies in flight at most before the oldest is waited for: each
# holds a batch's pooled rows or states in pinned memory
MAX_COPIES_IN_FLIGHT = 4
# and the pinned bytes they may hold together: a batch's states of every layer
# (for the cache) take hundreds of MB for a base-sized model, and pinned memory
# that torch has allocated stays allocated; one copy is always let through
MAX_BYTES_IN_FLIGHT = 256 * 2**20


class HostCopies:
    """Copy device tensors to the host without waiting; hand each over when done.

    ``put(key, tensor)``: from CUDA, ``tensor`` is copied into pinned host
    memory with ``non_blocking=True`` and ``deliver(key, host)`` is called once
    the copy's event has completed: checked at each ``put``, waited for when
    more than ``MAX_COPIES_IN_FLIGHT`` copies, or more than one copy and
    ``MAX_BYTES_IN_FLIGHT`` bytes, are pending, and at ``finish``.
    From other devices the copy is made and delivered at once, even ahead
    of CUDA copies still in flight; CUDA copies are delivered in the order
    they were put.
    """

    def __init__(self, deliver: Callable[[object, torch.Tensor], None]):
        self.deliver = deliver
        self.pending: deque = deque()  # (key, pinned host tensor, event)
        self.pending_bytes = 0

    def put(self, key, tensor: torch.Tensor) -> None:
        if not tensor.is_cuda:
            self.deliver(key, tensor.cpu())
            return
        host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
        host.copy_(tensor, non_blocking=True)
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(tensor.device))
        self.pending.append((key, host, event))
        self.pending_bytes += host.nbytes
        while self.pending and (
            len(self.pending) > MAX_COPIES_IN_FLIGHT
            or (len(self.pending) > 1 and self.pending_bytes > MAX_BYTES_IN_FLIGHT)
            or self.pending[0][2].query()
        ):
            self._deliver_oldest()

    def finish(self) -> None:
        """Wait for the copies still in flight and deliver them."""
        while self.pending:
            self._deliver_oldest()

    def _deliver_oldest(self) -> None:
        key, host, event = self.pending.popleft()
        self.pending_bytes -= host.nbytes
        event.synchronize()  # returns at once when the copy has completed
        self.deliver(key, host)


# A model batch costs about as much as this many more padded tokens (launch
# overhead, smaller matrix products): the price of a split in ``batch_rows``.
BATCH_COST_TOKENS = 64
# Above this many rows per batch, ``batch_rows`` fills batches greedily.
PLANNED_MAX_ROWS = 512


def batch_rows(
    order: np.ndarray,
    lengths: np.ndarray,
    batch_size: int | None,
    max_tokens: int | None,
) -> Iterator[np.ndarray]:
    """Split ``order`` (rows sorted longest first) into consecutive batches.

    A batch holds at most ``batch_size`` rows (None: no limit) and at most
    ``max_tokens`` padded tokens, rows times its longest row (None: no
    limit), but always at least one row.

    Within those limits the split is planned: it minimises the padded tokens
    of all batches plus ``BATCH_COST_TOKENS`` per batch (dynamic programming
    over the sorted rows), so a batch ends where the lengths drop sharply
    instead of padding short rows to a long one. With no row limit (the
    default on an accelerator), or when a batch may hold more than
    ``PLANNED_MAX_ROWS`` rows, batches are filled greedily instead: as many
    rows as the limits allow.
    """
    n = len(order)
    if n == 0:
        return
    sorted_lengths = [max(int(x), 1) for x in lengths[order]]
    window = n if batch_size is None else min(batch_size, n)
    if max_tokens is not None:
        window = min(window, max(1, max_tokens // sorted_lengths[-1]))
    if batch_size is None or window > PLANNED_MAX_ROWS:
        start = 0
        while start < n:
            size = n - start if batch_size is None else batch_size
            if max_tokens is not None:
                size = min(size, max(1, max_tokens // sorted_lengths[start]))
            yield order[start : start + size]
            start += size
        return
    starts = _planned_starts(sorted_lengths, window, max_tokens)
    for start, stop in zip(starts, starts[1:] + [n], strict=True):
        yield order[start:stop]


def _planned_starts(
    lengths: list[int], window: int, max_tokens: int | None
) -> list[int]:
    """First row of each batch in the cheapest split of ``lengths`` (descending).

    ``cost[j]`` is the cheapest split of the first ``j`` rows; the last batch
    of that split starts at ``start[j]``. A batch of rows ``i..j-1`` pads to
    ``lengths[i]``. Its token count grows as ``i`` goes down, so the search
    stops at the first start over ``max_tokens``.
    """
    n = len(lengths)
    cost = [0] * (n + 1)
    start = [0] * (n + 1)
    for j in range(1, n + 1):
        best, best_i = cost[j - 1] + lengths[j - 1], j - 1
        for i in range(j - 2, max(0, j - window) - 1, -1):
            tokens = (j - i) * lengths[i]
            if max_tokens is not None and tokens > max_tokens:
                break
            if cost[i] + tokens < best:
                best, best_i = cost[i] + tokens, i
        cost[j] = best + BATCH_COST_TOKENS
        start[j] = best_i
    starts = []
    j = n
    while j > 0:
        j = start[j]
        starts.append(j)
    return starts[::-1]


def _padded(tokenized: Tokenized, rows: np.ndarray, lengths: np.ndarray, pad_id: int):
    """Padded ``input_ids``, ``types``, ``special`` and ``segments`` of ``rows``."""
    seq_len = int(lengths[rows[0]])
    input_ids = np.full((len(rows), seq_len), pad_id, dtype=np.int64)
    special = np.zeros((len(rows), seq_len), dtype=np.int64)
    types = np.zeros((len(rows), seq_len), dtype=np.int64)
    segments = np.ones((len(rows), seq_len), dtype=np.int64)
    for j, row in enumerate(rows):
        length = lengths[row]
        input_ids[j, :length] = tokenized.input_ids[row]
        special[j, :length] = tokenized.special_tokens_mask[row]
        if tokenized.token_type_ids is not None:
            types[j, :length] = tokenized.token_type_ids[row]
        if tokenized.segment_ids is not None:
            segments[j, :length] = tokenized.segment_ids[row]
    attention = (np.arange(seq_len)[None, :] < lengths[rows][:, None]).astype(np.int64)
    return input_ids, attention, types, special, segments


def iter_batches(
    loaded: LoadedModel,
    tokenized: Tokenized,
    *,
    layers: list[int],
    layer_combine: str,
    device: torch.device,
    batch_size: int | None,
    cache=None,
    stats: dict[str, int] | None = None,
    keep: bool | None = None,
    max_batch_tokens: int | None = None,
) -> Iterator[Batch]:
    """Run the model over length-sorted batches and yield their token states.

    Parameters
    ----------
    loaded : LoadedModel
    tokenized : Tokenized
    layers : list of int
        Non-negative indices into ``hidden_states`` (0 = embedding output).
    layer_combine : {"mean", "sum", "concat"}
        How :meth:`Batch.combined` combines ``layers`` by default.
    device : torch.device
    batch_size : int or None
        Most rows per model batch (None: no limit); see :func:`batch_rows`.
    cache : TokenStateCache, DiskCache or None
        Rows found in the cache skip the model; the others run it, and the
        states of every layer up to the deepest in ``layers`` are stored. The
        rows found in the cache come first, in batches of up to
        ``HIT_TOKENS`` padded tokens, on the CPU where the states are; those
        on disk are read batch by batch, so a call holds one batch of their
        states, and one whose file turns out damaged or gone runs the model
        instead. The rows that run the model follow, in batches of
        ``batch_size``. On CUDA the states are copied to the host without
        waiting and stored once the copy has finished (:class:`HostCopies`).
    stats : dict or None
        ``stats["cache_hits"]`` is increased by the rows found in the cache;
        ``stats["cache_kept"]`` says whether the rows' states are kept in
        memory (False when the states of all the rows, found or computed,
        would not fit in its budget).
    keep : bool or None
        Whether to keep the states computed or read from disk in memory;
        None decides from their size, as above.
    max_batch_tokens : int or None
        Most padded tokens per model batch (None: no limit).
    """
    n = len(tokenized.input_ids)
    lengths = np.fromiter(
        (len(x) for x in tokenized.input_ids), dtype=np.int64, count=n
    )
    order = np.argsort(-lengths, kind="stable")
    pad_id = loaded.tokenizer.pad_token_id or 0
    deepest = max(layers)
    run_layers = layers
    hits = order[:0]
    if cache is not None:
        keys = tokenized.row_keys
        if keys is None:
            keys = _row_keys(
                loaded,
                tokenized.input_ids,
                tokenized.token_type_ids if loaded.uses_token_type_ids else None,
            )
        # a call whose states could not all stay in memory keeps none there,
        # neither those it computes nor those it reads from disk (it would
        # evict its own entries before any reuse)
        if keep is None:
            row_bytes = (deepest + 1) * loaded.hidden_size * 4  # a token's states
            keep = int(lengths.sum()) * row_bytes <= cache.max_bytes
        # states in memory, or True for those on disk, read batch by batch below
        entries = [cache.lookup(key, deepest + 1, keep=keep) for key in keys]
        found = np.fromiter((e is not None for e in entries), dtype=bool, count=n)
        hits, order = order[found[order]], order[~found[order]]
        store = keep or cache.persistent
        if stats is not None:
            stats["cache_kept"] = keep
        if store:
            run_layers = list(range(deepest + 1))
        if stats is not None:
            stats["cache_hits"] = stats.get("cache_hits", 0) + len(hits)
    with torch.inference_mode():
        stored = HostCopies(
            lambda rows, host: _store_states(cache, keys, lengths, rows, host, keep)
        )
        n_yielded = 0

        def counted(batch: Batch) -> Batch:
            nonlocal n_yielded
            n_yielded += 1
            if n_yielded % TRIM_BATCHES == 0:
                release_freed_memory()
            return batch

        def run_model(order: np.ndarray) -> Iterator[Batch]:
            batches = batch_rows(order, lengths, batch_size, max_batch_tokens)
            if not loaded.pads_safely:  # no padding: runs of one length only
                batches = (
                    run
                    for rows in batches
                    for run in np.split(
                        rows, np.flatnonzero(np.diff(lengths[rows])) + 1
                    )
                )
            for rows in batches:
                yield model_batch(rows)

        def model_batch(rows: np.ndarray) -> Batch:
            input_ids, attention, types, special, segments = _padded(
                tokenized, rows, lengths, pad_id
            )
            if stats is not None:  # model runs only, not batches read from the cache
                stats["n_batches"] = stats.get("n_batches", 0) + 1
                stats["n_padded_tokens"] = (
                    stats.get("n_padded_tokens", 0) + input_ids.size
                )
            inputs = {
                "input_ids": _upload(input_ids, device),
                "attention_mask": _upload(attention, device),
            }
            if loaded.uses_token_type_ids:
                inputs["token_type_ids"] = _upload(types, device)
            states = forward_hidden_states(loaded, inputs, run_layers)
            if cache is not None and store:
                stacked = torch.stack([states[i] for i in run_layers], dim=2)
                stored.put(rows, stacked.to(torch.float32))  # no wait on CUDA
            return counted(
                Batch(
                    rows=rows,
                    attention_mask=inputs["attention_mask"],
                    special_tokens_mask=_upload(special, device),
                    states=states,
                    layers=layers,
                    layer_combine=layer_combine,
                    segment_ids=(
                        None
                        if tokenized.segment_ids is None
                        else _upload(segments, device)
                    ),
                )
            )

        # the hits first: read from disk batch by batch (one batch of states
        # held at a time), before this call's writes could evict them
        unread = []  # hits whose entry on disk turned out damaged or gone
        start = 0
        while start < len(hits):
            # longest first: as many rows as fit HIT_TOKENS at this length
            stop = start + max(1, HIT_TOKENS // int(lengths[hits[start]]))
            rows = hits[start:stop]
            start = stop
            for row in rows:
                if entries[row] is True:  # on disk: read (and checked) now
                    entries[row] = cache.get(keys[row], deepest + 1, keep=keep)
            read = np.array([entries[row] is not None for row in rows], dtype=bool)
            unread.extend(rows[~read])
            rows = rows[read]
            if len(rows):
                yield counted(
                    _cached_batch(
                        tokenized,
                        rows,
                        lengths,
                        pad_id,
                        entries,
                        layers,
                        layer_combine,
                        torch.device("cpu"),  # pooled where the states are
                    )
                )
            for row in rows:
                entries[row] = None  # pooled: the states need not stay here
        if unread:
            if stats is not None:
                stats["cache_hits"] -= len(unread)
            order = np.concatenate([order, np.array(unread, dtype=order.dtype)])
            order = order[np.argsort(-lengths[order], kind="stable")]
        yield from run_model(order)
        stored.finish()


def _upload(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """``array`` as a tensor on ``device``.

    To CUDA it goes through pinned memory without waiting: a copy from
    pageable memory would first synchronise the stream, once per batch.
    """
    tensor = torch.from_numpy(array)
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def _store_states(cache, keys, lengths, rows, states, keep) -> None:
    """Put each row's states (host tensor, batch-padded) into ``cache``."""
    for j, row in enumerate(rows):
        row_states = states[j, : lengths[row]]
        # kept in memory: a copy, so the batch's tensor is not kept with it;
        # only written to disk: the slice itself
        cache.put(keys[row], row_states.clone() if keep else row_states, keep=keep)


def _cached_batch(
    tokenized: Tokenized,
    rows: np.ndarray,
    lengths: np.ndarray,
    pad_id: int,
    entries: list[torch.Tensor],
    layers: list[int],
    layer_combine: str,
    device: torch.device,
) -> Batch:
    """A :class:`Batch` of ``rows`` read from their cache entries, no model run."""
    _, attention, _, special, segments = _padded(tokenized, rows, lengths, pad_id)
    return Batch(
        rows=rows,
        attention_mask=_upload(attention, device),
        special_tokens_mask=_upload(special, device),
        layers=layers,
        layer_combine=layer_combine,
        cached=[entries[row] for row in rows],
        segment_ids=(
            None if tokenized.segment_ids is None else _upload(segments, device)
        ),
    )


def _subset(tokenized: Tokenized, rows: np.ndarray) -> Tokenized:
    """The rows ``rows`` of ``tokenized`` (what :func:`iter_batches` reads)."""

    def pick(values):
        return None if values is None else [values[r] for r in rows]

    return Tokenized(
        input_ids=pick(tokenized.input_ids),
        special_tokens_mask=pick(tokenized.special_tokens_mask),
        n_truncated=0,
        token_type_ids=pick(tokenized.token_type_ids),
        segment_ids=pick(tokenized.segment_ids),
        row_keys=pick(tokenized.row_keys),
    )


def encode_texts(
    loaded: LoadedModel,
    texts: list[str],
    *,
    layers: list[int],
    layer_combine: str,
    pool: Callable[[Batch], torch.Tensor],
    n_features: int,
    max_length: int,
    device: torch.device,
    batch_size: int | None,
    progress_bar: bool | None = None,
    long_text: str = "truncate",
    stride: int = 0,
    prompt_chars: int = 0,
    texts_b: list[str] | None = None,
    cache=None,
    pool_key: tuple | None = None,
    max_batch_tokens: int | None = None,
) -> tuple[np.ndarray, dict[str, int]]:
    """Embed ``texts`` into a ``float32`` array of shape (n_texts, n_features).

    Identical texts (or pairs) run through the model once. ``pool`` turns a
    :class:`Batch` into a tensor of shape (batch, n_features). With
    ``long_text="window"`` the windows of a text are averaged, weighted by
    their number of non-special tokens; with ``"window_max"`` their
    element-wise max is taken. ``texts_b`` makes each row the pair
    ``(texts[i], texts_b[i])``, encoded as one input. ``prompt_chars`` is
    the length of a prompt each text begins with, kept at the head of every
    row (see :func:`tokenize`).

    With a ``cache`` and a ``pool_key`` (a hashable description of everything
    ``pool`` does), pooled rows are memoised too: a row pooled before the same
    way is not pooled again.

    Returns the array and counts for the call: ``n_texts``, ``n_distinct``,
    ``n_tokens`` (in all inputs, read from the cache or not), ``n_truncated``,
    ``n_windowed``, ``n_windows``, ``cache_hits`` (inputs whose states or
    pooled vectors came from ``cache``), ``n_alike`` (inputs that took the
    vector of another input of the call that tokenized alike),
    ``cache_kept`` (whether the computed ones were kept in memory),
    ``n_batches`` (model runs) and ``n_padded_tokens`` (the tokens those runs
    computed, padding included).
    """
    keys = texts if texts_b is None else list(zip(texts, texts_b, strict=True))
    first_of: dict = {}
    inverse = np.fromiter(
        (first_of.setdefault(key, len(first_of)) for key in keys),
        dtype=np.int64,
        count=len(keys),
    )
    unique = list(first_of)
    if cache is not None:
        cache.begin_call()
    out = np.empty((len(unique), n_features), dtype=np.float32)
    stats = {"cache_hits": 0, "n_tokens": 0, "n_truncated": 0}
    stats.update(n_windowed=0, n_windows=0, n_batches=0, n_padded_tokens=0, n_alike=0)
    keep = None
    copies = np.bincount(inverse, minlength=len(unique))  # per distinct text
    # chunks of texts bound what tokenization holds at once (~0.4 GiB for
    # 100,000 texts); within a chunk, batches are length-sorted
    with text_progress(len(keys), progress_bar) as bar:
        for start in range(0, len(unique), CHUNK_TEXTS):
            chunk = unique[start : start + CHUNK_TEXTS]
            if cache is not None:
                tokenized = tokenize_cached(
                    cache,
                    loaded,
                    chunk,
                    pairs=texts_b is not None,
                    max_length=max_length,
                    long_text=long_text,
                    stride=stride,
                    prompt_chars=prompt_chars,
                )
                if keep is None and len(unique) > len(chunk):
                    # a call's states that could not all stay in memory keep none
                    # there (an LRU scan larger than itself evicts all before reuse)
                    n_tokens = sum(len(ids) for ids in tokenized.input_ids)
                    size = n_tokens * len(unique) / len(chunk)
                    size *= (max(layers) + 1) * loaded.hidden_size * 4
                    keep = size <= cache.max_bytes
            elif texts_b is None:
                tokenized = tokenize(
                    loaded.tokenizer, chunk, max_length, long_text, stride, prompt_chars
                )
            else:
                tokenized = tokenize_pairs(
                    loaded.tokenizer,
                    [a for a, _ in chunk],
                    [b for _, b in chunk],
                    max_length,
                )
            _encode_tokenized(
                loaded,
                tokenized,
                out[start : start + len(chunk)],
                layers=layers,
                layer_combine=layer_combine,
                pool=pool,
                n_features=n_features,
                device=device,
                batch_size=batch_size,
                max_batch_tokens=max_batch_tokens,
                progress=TextCounter(
                    bar, copies[start : start + len(chunk)], tokenized.text_of_row
                ),
                long_text=long_text,
                cache=cache,
                pool_key=pool_key,
                keep=keep,
                stats=stats,
            )
            stats["n_tokens"] += sum(len(ids) for ids in tokenized.input_ids)
            stats["n_truncated"] += tokenized.n_truncated
            stats["n_windowed"] += tokenized.n_windowed
            stats["n_windows"] += len(tokenized.input_ids)
            del tokenized
            if len(unique) > CHUNK_TEXTS:  # a long call: keep its heap from growing
                release_freed_memory()
    stats = {
        **stats,
        "n_texts": len(keys),
        "n_distinct": len(unique),
        "cache_kept": bool(stats.get("cache_kept", False)),
    }
    # first occurrences come in input order: without duplicates inverse is
    # 0..n-1, and skipping the copy keeps peak memory at one output
    return (out if len(unique) == len(keys) else out[inverse]), stats


def _pool_layouts(tokenized: Tokenized) -> list[bytes]:
    """Per row, a digest of what pooling reads besides the token states.

    Which tokens are special, and each token's segment: two inputs with the
    same token ids (so the same cache entry) can differ there, e.g. a pair
    and the text that joins it with a literal "[SEP]" on a model without
    segment ids.
    """
    segments = tokenized.segment_ids
    return [
        hashlib.blake2b(
            bytes(mask) + b"|" + (b"" if segments is None else bytes(segments[i])),
            digest_size=8,
        ).digest()
        for i, mask in enumerate(tokenized.special_tokens_mask)
    ]


def _first_same_row(tokenized: Tokenized, layouts: list[bytes] | None) -> np.ndarray:
    """Per row, the first row with the same inputs: token ids, token types,
    special tokens and segments (everything the model and pooling read).

    Distinct texts can tokenize alike ("The cat" and "the cat" for an uncased
    model, other spacing), and so can windows: such rows run once.
    """
    n_rows = len(tokenized.input_ids)
    first: dict = {}
    if layouts is not None:  # row keys: ids and token types, hashed already
        identities = zip(tokenized.row_keys, layouts, strict=True)
    else:
        columns = [tokenized.input_ids, tokenized.special_tokens_mask]
        for values in (tokenized.token_type_ids, tokenized.segment_ids):
            if values is not None:
                columns.append(values)
        identities = zip(*(map(tuple, column) for column in columns), strict=True)
    return np.fromiter(
        (first.setdefault(identity, r) for r, identity in enumerate(identities)),
        dtype=np.int64,
        count=n_rows,
    )


def _encode_tokenized(
    loaded: LoadedModel,
    tokenized: Tokenized,
    out: np.ndarray,
    *,
    layers: list[int],
    layer_combine: str,
    pool: Callable[[Batch], torch.Tensor],
    n_features: int,
    device: torch.device,
    batch_size: int | None,
    max_batch_tokens: int | None,
    progress: TextCounter,
    long_text: str,
    cache,
    pool_key: tuple | None,
    keep: bool | None,
    stats: dict,
) -> None:
    """Pool the texts of ``tokenized`` (one chunk of a call) into ``out``.

    ``out`` has shape (n_texts, n_features). Unless long texts run in windows
    (a row per window, aggregated at the end), rows are texts and pool
    straight into ``out``: no chunk buffer. ``progress`` advances as rows
    are pooled or found pooled in the cache. Rows with the same inputs run
    once (see :func:`_first_same_row`).
    """
    n_rows = len(tokenized.input_ids)
    if tokenized.text_of_row is None:
        rows_out = out
    else:
        rows_out = np.empty((n_rows, n_features), dtype=np.float32)
    todo = None  # rows still to pool, when not all of them are
    memo = cache is not None and pool_key is not None
    if memo:
        layouts = _pool_layouts(tokenized)
        found = cache.get_pooled(tokenized.row_keys, pool_key, layouts)
        done = np.fromiter((f is not None for f in found), dtype=bool, count=n_rows)
        if done.any():
            rows_out[done] = np.stack([f for f in found if f is not None])
            stats["cache_hits"] += int(done.sum())
            todo = np.flatnonzero(~done)
            progress.rows_done(np.flatnonzero(done))
    # rows alike: the first still to pool runs, the others follow it
    first = _first_same_row(tokenized, layouts if memo else None)
    pending = np.arange(n_rows) if todo is None else todo
    is_pending = np.zeros(n_rows, dtype=bool)
    is_pending[pending] = True
    follows = (first != np.arange(n_rows)) & is_pending[first]
    followers: dict[int, list[int]] = {}
    if follows[pending].any():
        for r in pending[follows[pending]]:
            followers.setdefault(int(first[r]), []).append(int(r))
        todo = pending[~follows[pending]]
        stats["n_alike"] += int(follows[pending].sum())

    def store(rows: np.ndarray, pooled: np.ndarray) -> None:
        rows = rows if todo is None else todo[rows]
        rows_out[rows] = pooled
        if memo and stats.get("cache_kept", True):
            cache.put_pooled(
                [tokenized.row_keys[r] for r in rows],
                pool_key,
                pooled,
                [layouts[r] for r in rows],
            )
        alike = [(r, followers[r]) for r in rows.tolist() if r in followers]
        for r, same in alike:  # the rows like these get the same vectors
            rows_out[same] = rows_out[r]
        if alike:
            rows = np.concatenate([rows, *(same for _, same in alike)])
        progress.rows_done(rows)

    copies = HostCopies(lambda rows, host: store(rows, host.numpy()))
    for batch in iter_batches(
        loaded,
        tokenized if todo is None else _subset(tokenized, todo),
        layers=layers,
        layer_combine=layer_combine,
        device=device,
        batch_size=batch_size,
        max_batch_tokens=max_batch_tokens,
        cache=cache,
        stats=stats,
        keep=keep,
    ):
        copies.put(batch.rows, pool(batch).float())  # no wait on CUDA
    copies.finish()
    if cache is not None and stats.get("cache_kept", True):
        remember_tokens(cache, tokenized)
    if tokenized.text_of_row is None:
        return
    # windows are weighted by their tokens of text
    weights = np.fromiter(
        (len(mask) - sum(mask) for mask in tokenized.special_tokens_mask),
        dtype=np.float32,
        count=n_rows,
    )
    out[:] = aggregate_windows(rows_out, weights, tokenized.text_of_row, long_text)


def aggregate_windows(
    rows: np.ndarray, weights: np.ndarray, text_of_row: np.ndarray, how: str
) -> np.ndarray:
    """Pool the vectors of each text's windows into one vector per text.

    Parameters
    ----------
    rows : ndarray of shape (n_windows, n_features)
    weights : ndarray of shape (n_windows,), tokens per window (0 counts as 1).
    text_of_row : ndarray of shape (n_windows,), non-decreasing text ids,
        every text from 0 to n_texts - 1 present.
    how : {"window", "window_max"}
        Weighted mean, or element-wise max. A text with one window gets that
        window's vector exactly.

    Returns
    -------
    texts : ndarray of shape (n_texts, n_features)
    """
    if len(rows) == 0:
        return rows
    starts = np.flatnonzero(np.r_[True, text_of_row[1:] != text_of_row[:-1]])
    counts = np.diff(np.r_[starts, len(text_of_row)])
    out = rows[starts].copy()
    several = counts > 1
    if several.any():
        if how == "window_max":
            pooled = np.maximum.reduceat(rows, starts, axis=0)
        else:
            w = np.maximum(weights, 1.0)[:, None]
            pooled = np.add.reduceat(rows * w, starts, axis=0)
            pooled /= np.add.reduceat(w, starts, axis=0)
        out[several] = pooled[several]
    return out


def sentence_pooler(
    pooling: str,
    include_special_tokens: bool,
    layers: list[int] | None = None,
    layer_combine: str | None = None,
) -> Callable[[Batch], torch.Tensor]:
    """The ``pool`` callback of :func:`encode_texts` for sentence vectors.

    ``layers`` and ``layer_combine`` pick the batch's token vectors (default:
    the batch's own, as :meth:`Batch.combined` gives them).
    """

    def pool(batch: Batch) -> torch.Tensor:
        if pooling == "cls":  # position 0, whatever the mask
            return batch.combined(layers, layer_combine, first_token=True)[:, 0]
        if (
            batch.cached is not None
            and include_special_tokens
            and pooling
            in (
                "mean",
                "max",
                "mean_max",
                "max_mean",
            )
        ):
            # every token of a cached row counts: reduce row by row, no padding
            rows = _combined_rows(
                batch.cached,
                list(batch.layers if layers is None else layers),
                batch.layer_combine if layer_combine is None else layer_combine,
            )
            reduce = {"mean": torch.Tensor.mean, "max": torch.Tensor.amax}
            parts = [
                torch.stack([reduce[part](row, dim=0) for row in rows])
                for part in pooling.split("_")
            ]
            pooled = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
            return pooled.to(batch.attention_mask.device)
        embeddings = batch.combined(layers, layer_combine)
        token_mask = batch.attention_mask
        if not include_special_tokens:
            token_mask = token_mask * (1 - batch.special_tokens_mask)
        if pooling == "segment_mean":
            return pool_segments(embeddings, token_mask, batch.segment_ids)
        return pool_tokens(embeddings, token_mask, pooling)

    return pool


def concat_poolers(
    poolers: list[Callable[[Batch], torch.Tensor]],
) -> Callable[[Batch], torch.Tensor]:
    """One ``pool`` callback that joins the vectors of several, side by side."""
    if len(poolers) == 1:
        return poolers[0]
    return lambda batch: torch.cat([pool(batch) for pool in poolers], dim=1)


# -- word vectors: token offsets, windows around targets, sub-word pooling ---


@dataclass
class DocTokens:
    """The tokens of one text, without special tokens and without truncation.

    Attributes
    ----------
    input_ids : ndarray of shape (n_tokens,), int64
    starts, ends : ndarray of shape (n_tokens,), int64
        Character offsets of each token into the text, as the fast tokenizer
        maps them back through normalization (accents, casing, dropped
        characters): ``text[starts[i]:ends[i]]`` is what the user wrote,
        without the whitespace some tokenizers count into a piece.
    word_ids : ndarray of shape (n_tokens,), int64
        The tokenizer's word of each token (its pre-tokenizer's split), -1
        where it has none.
    """

    input_ids: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    word_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.input_ids)


@functools.cache
def _whitespace_code_points() -> np.ndarray:
    """Every code point ``str.isspace`` calls whitespace (computed once)."""
    return np.array([c for c in range(0x110000) if chr(c).isspace()], dtype=np.uint32)


def _trim_to_content(
    text: str, starts: np.ndarray, ends: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Trim the character spans ``[starts, ends)`` of ``text`` to their first
    and last character that is not whitespace.

    Returns whether each span holds such a character, and the trimmed starts
    and ends (spans without one are left as they are).
    """
    code_points = np.frombuffer(
        text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32
    )
    solid = ~np.isin(code_points, _whitespace_code_points())
    before = np.concatenate([[0], np.cumsum(solid)])
    has = before[ends] > before[starts]
    at = np.flatnonzero(solid)
    starts, ends = starts.copy(), ends.copy()
    starts[has] = at[before[starts[has]]]
    ends[has] = at[before[ends[has]] - 1] + 1
    return has, starts, ends


def _word_marker_id(tokenizer) -> int | None:
    """The id of the token that is a Metaspace pre-tokenizer's word marker
    alone ("▁", sentencepiece models), or None where there is none."""

    def replacement(config: Any) -> str | None:
        if isinstance(config, dict):
            if config.get("type") == "Metaspace":
                return config.get("replacement")
            children = config.get("pretokenizers") or ()
        else:
            children = config if isinstance(config, list) else ()
        for child in children:
            found = replacement(child)
            if found:
                return found
        return None

    backend = getattr(tokenizer, "backend_tokenizer", None)
    pre = getattr(backend, "pre_tokenizer", None)
    if pre is None:
        return None
    try:
        marker = replacement(json.loads(pre.__getstate__()))
    except Exception:  # noqa: BLE001 - a custom pre-tokenizer is not serialisable
        return None
    if not marker:
        return None
    found = tokenizer.convert_tokens_to_ids(marker)
    return None if found is None or found == tokenizer.unk_token_id else int(found)


def tokenize_with_offsets(tokenizer, texts: list[str]) -> list[DocTokens]:
    """Tokenize whole ``texts`` (no special tokens, no truncation) with offsets."""
    if not texts:
        return []
    marker = _word_marker_id(tokenizer)
    encoded = call_tokenizer(
        tokenizer,
        texts,
        add_special_tokens=False,
        truncation=False,
        return_offsets_mapping=True,
        return_attention_mask=False,
        return_token_type_ids=False,
        verbose=False,  # long texts are windowed, not fed whole to the model
    )
    docs = []
    for text, encoding in zip(texts, encoded.encodings, strict=True):
        n = len(encoding.ids)
        offsets = np.asarray(encoding.offsets, dtype=np.int64).reshape(n, 2)
        word_ids = np.fromiter(
            (-1 if w is None else w for w in encoding.word_ids),
            dtype=np.int64,
            count=n,
        )
        # a token of whitespace alone, or of no character (byte-level BPE
        # keeps spaces and line ends: "Ġ", "Ċ") belongs to no word; the
        # others are trimmed to their text: a piece such as "▁bank" (Metaspace)
        # or "Ġbank" (untrimmed byte-level BPE) starts at "b", not at the space
        has, starts, ends = _trim_to_content(text, offsets[:, 0], offsets[:, 1])
        ids = np.asarray(encoding.ids, dtype=np.int64)
        if marker is not None and n > 1:
            # sentencepiece's word marker as a token of its own ("▁" before
            # "B", "ank") belongs to the word that follows (word_ids says so).
            # Some tokenizers map it to that word's first character (always
            # XLM-R, DeBERTa-v2 at the start of a text), others to the space
            # before (DeBERTa-v2 elsewhere): aligned to the word's first
            # character, the same word pools the same pieces wherever it is
            # (a "▁" written in the text keeps its own character)
            lone = np.flatnonzero(
                (ids[:-1] == marker)
                & (word_ids[:-1] >= 0)
                & (word_ids[:-1] == word_ids[1:])
                & has[1:]
                & (~has[:-1] | (offsets[:-1, 0] == offsets[1:, 0]))
            )
            has[lone] = True
            starts[lone] = starts[lone + 1]
            ends[lone] = starts[lone + 1] + 1
        word_ids[~has] = -1
        docs.append(
            DocTokens(
                input_ids=ids,
                starts=starts,
                ends=ends,
                word_ids=word_ids,
            )
        )
    return docs


def special_tokens_around(tokenizer) -> tuple[list[int], list[int]]:
    """The special token ids the tokenizer puts before and after one text.

    ``[CLS]`` and ``[SEP]`` for BERT, ``<s>`` and ``</s>`` for RoBERTa, found
    by tokenizing a one-letter probe, so any fast tokenizer works.
    """
    probe = call_tokenizer(
        tokenizer, "a", return_special_tokens_mask=True, verbose=False
    )
    ids, special = probe["input_ids"], probe["special_tokens_mask"]
    content = [i for i, flag in enumerate(special) if not flag]
    if not content:  # pragma: no cover - every tokenizer keeps a letter
        return list(ids), []
    return list(ids[: content[0]]), list(ids[content[-1] + 1 :])


def window_around(n_tokens: int, first: int, stop: int, width: int) -> int:
    """Start of the ``width``-token window that centres tokens ``[first, stop)``.

    The window lies inside ``[0, n_tokens)`` and contains the target, which
    must fit (``stop - first <= width``); when the text is no longer than
    ``width`` the window starts at 0.
    """
    if n_tokens <= width:
        return 0
    start = first - (width - (stop - first)) // 2
    return int(min(max(start, 0), n_tokens - width))


def windows_for_words(
    n_tokens: int, first: np.ndarray, stop: np.ndarray, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping windows that cover every word of a long text, and each word's.

    Windows of ``width`` tokens start every ``width // 2`` tokens (the last
    one ends at the end of the text). Each word ``[first[k], stop[k])`` is
    pooled from the window that contains all of it with the most context on
    its shorter side, so no word is ever pooled from a cut-off fragment. A
    word that no such window contains (longer than half a window) gets a
    window centred on it.

    Returns
    -------
    starts : ndarray of shape (n_windows,), the window starts.
    window_of_word : ndarray of shape (n_words,), an index into ``starts``.
    """
    if n_tokens <= width:
        return np.zeros(1, dtype=np.int64), np.zeros(len(first), dtype=np.int64)
    stride = max(width // 2, 1)
    starts = np.arange(0, n_tokens - width, stride, dtype=np.int64)
    starts = np.append(starts, n_tokens - width)
    first = np.asarray(first, dtype=np.int64)
    stop = np.asarray(stop, dtype=np.int64)
    # Only the few windows that start in [stop - width, first] can hold a word:
    # the regular ones from j_lo on, and the last. Look at those alone (memory
    # linear in the words, not words x windows), in window order, keeping the
    # first window with the most context on the shorter side.
    n_regular = len(starts) - 1
    j_lo = np.maximum(0, -((width - stop) // stride))  # ceil((stop - width) / stride)
    best = np.zeros(len(first), dtype=np.int64)
    best_context = np.full(len(first), -1, dtype=np.int64)
    candidates = [
        (j_lo + o, j_lo + o < n_regular) for o in range(-(-width // stride) + 1)
    ]
    candidates.append((np.full(len(first), n_regular), True))
    for j, regular in candidates:
        start = np.where(j < n_regular, j * stride, n_tokens - width)
        left, right = first - start, start + width - stop
        context = np.where(
            regular & (left >= 0) & (right >= 0), np.minimum(left, right), -1
        )
        better = context > best_context
        best[better], best_context[better] = j[better], context[better]
    return centre_uncovered(
        n_tokens, first, stop, width, starts, best, np.flatnonzero(best_context < 0)
    )


def centre_uncovered(
    n_tokens: int,
    first: np.ndarray,
    stop: np.ndarray,
    width: int,
    starts: np.ndarray,
    window_of_word: np.ndarray,
    uncovered: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Give the ``uncovered`` words a window centred on each (shared where equal).

    Returns ``starts`` with those windows appended, and ``window_of_word``
    (changed in place) pointing the uncovered words at them.
    """
    if len(uncovered):
        extra = [window_around(n_tokens, first[k], stop[k], width) for k in uncovered]
        extra_starts, where = np.unique(np.asarray(extra), return_inverse=True)
        window_of_word[uncovered] = len(starts) + where.reshape(-1)
        starts = np.append(starts, extra_starts)
    return starts, window_of_word


def _segments(starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """Concatenate ``arange(starts[i], stops[i])`` for every i, without a loop."""
    lengths = stops - starts
    total = int(lengths.sum())
    offsets = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
    return offsets + np.arange(total)


def encode_token_groups(
    loaded: LoadedModel,
    docs: list[DocTokens],
    window_doc: np.ndarray,
    window_start: np.ndarray,
    group_window: np.ndarray,
    group_first: np.ndarray,
    group_stop: np.ndarray,
    *,
    width: int,
    views: list[tuple[list[int], str, str]],
    n_features: int,
    device: torch.device,
    batch_size: int | None,
    progress_bar: bool | None = None,
    cache=None,
    stats: dict | None = None,
    max_batch_tokens: int | None = None,
    positions: bool = False,
) -> np.ndarray:
    """Embed groups of consecutive tokens, each pooled from one window of a text.

    A window is up to ``width`` tokens of ``docs[window_doc[w]]`` starting at
    token ``window_start[w]``, wrapped in the tokenizer's special tokens. A
    group is the tokens ``[group_first[g], group_stop[g])`` of its window's
    text (a word or a span of words), which must lie inside the window. Each
    window runs through the model once, however many groups it holds, in
    the length-sorted batches of :func:`iter_batches`, and the pieces of
    every group in a batch are pooled at once by
    :func:`~skbert._pooling.pool_subwords`. Tokens that belong to no word
    (whitespace some tokenizers keep) are left out of a group's pool.

    With ``positions=True``, ``group_first`` and ``group_stop`` are positions
    in the window's model input instead, special tokens included (0 is the
    first special token before the text), and every token in them is pooled.

    Each of ``views``, ``(layers, layer_combine, subword_pooling)``, gives
    one block of columns, side by side, all from the same forward pass.
    ``stats``, if given, receives ``n_windows`` and ``n_tokens`` (the inputs
    run or read from the cache, special tokens included), ``cache_hits``
    and ``cache_kept``.

    Returns
    -------
    pooled : ndarray of shape (n_groups, n_features), float32
        Groups with no token are zeros.
    """
    if cache is not None:
        cache.begin_call()
    prefix, suffix = special_tokens_around(loaded.tokenizer)
    n_groups = len(group_first)
    out = np.zeros((n_groups, n_features), dtype=np.float32)
    nonempty = group_stop > group_first
    if not nonempty.any():
        return out
    # run only the windows that some group is pooled from
    used, group_window = np.unique(group_window[nonempty], return_inverse=True)
    group_window = group_window.reshape(-1)
    group_first, group_stop = group_first[nonempty], group_stop[nonempty]
    group_id = np.flatnonzero(nonempty)
    window_doc, window_start = window_doc[used], window_start[used]
    window_stop = np.array(
        [
            min(start + width, len(docs[doc]))
            for doc, start in zip(window_doc, window_start, strict=True)
        ],
        dtype=np.int64,
    )
    if positions:  # the window's input: special tokens around its text
        lower = np.zeros(len(window_start), dtype=np.int64)
        upper = len(prefix) + window_stop - window_start + len(suffix)
    else:
        lower, upper = window_start, window_stop
    outside = (group_first < lower[group_window]) | (group_stop > upper[group_window])
    if outside.any():
        raise ValueError("Every group of tokens must lie inside its window.")
    input_ids = [
        prefix + docs[doc].input_ids[start:stop].tolist() + suffix
        for doc, start, stop in zip(window_doc, window_start, window_stop, strict=True)
    ]
    special = [
        [1] * len(prefix) + [0] * (stop - start) + [1] * len(suffix)
        for start, stop in zip(window_start, window_stop, strict=True)
    ]

    if stats is not None:
        stats["n_windows"] = len(input_ids)
        stats["n_tokens"] = sum(len(ids) for ids in input_ids)
        stats.setdefault("cache_hits", 0)
        stats.setdefault("cache_kept", False)

    # every (group, token) pair, ordered by window and by position in it
    lengths = group_stop - group_first
    member_group = np.repeat(np.arange(len(group_first)), lengths)
    member_token = _segments(group_first, group_stop)
    member_window = group_window[member_group]
    if positions:
        member_position = member_token
    else:
        # tokens of no word (whitespace a byte-level BPE keeps, such as "\n"
        # inside a span of words) are not pooled
        doc_start = np.cumsum([0] + [len(doc) for doc in docs])
        word_ids = np.concatenate([doc.word_ids for doc in docs] + [np.zeros(0, int)])
        content = word_ids[doc_start[window_doc[member_window]] + member_token] >= 0
        member_group = member_group[content]
        member_token = member_token[content]
        member_window = member_window[content]
        member_position = len(prefix) + member_token - window_start[member_window]
    order = np.lexsort((member_position, member_window))
    member_group = member_group[order]
    member_window = member_window[order]
    member_position = member_position[order]
    window_ptr = np.searchsorted(member_window, np.arange(len(window_doc) + 1))

    def pool_groups(batch: Batch) -> tuple[np.ndarray, torch.Tensor] | None:
        """The groups of the windows of ``batch`` and their pooled vectors."""
        rows = batch.rows
        members = _segments(window_ptr[rows], window_ptr[rows + 1])
        if len(members) == 0:
            return None
        seq_len = int(batch.attention_mask.shape[1])
        local_row = np.repeat(
            np.arange(len(rows)), window_ptr[rows + 1] - window_ptr[rows]
        )
        flat_index = local_row * seq_len + member_position[members]
        groups, local_group = np.unique(member_group[members], return_inverse=True)
        on = batch.attention_mask.device
        flat_index = _upload(flat_index, on)
        local_group = _upload(local_group.reshape(-1), on)
        blocks = []
        for layers, layer_combine, subword_pooling in views:
            embeddings = batch.combined(layers, layer_combine)
            token_vectors = embeddings.reshape(-1, embeddings.shape[-1])[flat_index]
            blocks.append(
                pool_subwords(
                    token_vectors.float(),
                    local_group,
                    subword_pooling,
                    n_words=len(groups),
                )
            )
        return groups, blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=1)

    def deliver(key: tuple[np.ndarray, np.ndarray], pooled: torch.Tensor) -> None:
        groups, rows = key
        out[group_id[groups]] = pooled.numpy()
        progress.rows_done(rows)

    n_texts = len(np.unique(window_doc))
    with text_progress(n_texts, progress_bar) as bar:
        progress = TextCounter(bar, np.ones(len(docs), dtype=np.int64), window_doc)
        copies = HostCopies(deliver)
        for batch in iter_batches(
            loaded,
            Tokenized(input_ids, special, 0),
            layers=sorted({layer for layers, _, _ in views for layer in layers}),
            layer_combine="mean",
            device=device,
            batch_size=batch_size,
            max_batch_tokens=max_batch_tokens,
            cache=cache,
            stats=stats,
        ):
            pooled = pool_groups(batch)
            if pooled is None:
                progress.rows_done(batch.rows)
            else:
                copies.put((pooled[0], batch.rows), pooled[1])  # no wait on CUDA
        copies.finish()
    return out
