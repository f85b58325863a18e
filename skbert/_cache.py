"""Token-state caches between model and pooling: in memory, and on disk.

Grid searches over ``layers``, ``layer_combine``, ``pooling``,
``subword_pooling`` and ``normalize`` change only what happens *after* the
model. A cache keeps, for each model input (one row of token ids), the hidden
states of the layers the model ran, so later settings pool from them instead
of running the model again.

Keys
----
An entry is keyed by the model's fingerprint (where its weights came from,
their files' sizes, modification times, inodes and change times, the device
and the dtype) and by
the exact token ids and segment ids the model reads. Everything that changes
the model's output (the text, ``max_length``, ``long_text``, ``stride``,
``pairs``) changes those ids, so it is part of the key without being listed.

Values
------
One float32 CPU tensor of shape ``(seq_len, n_layers, hidden)`` per row: the
real tokens only (no padding) and hidden states ``0 .. n_layers - 1``, that
is every layer up to the deepest one a call asked for (the model stops there,
so early exit is kept). A later call that needs a deeper layer runs the model
again and replaces the entry. float32 keeps cached results within float
rounding of the uncached path (the tests hold them to 1e-5); it costs twice
float16's memory, which the budget bounds.

In memory, the budget is ``SKBERT_CACHE_MB`` megabytes (default 1024) for the
whole process; the least recently used entries go first. A call whose states
could not all fit in the budget stores nothing in memory: an LRU scan larger
than itself would evict every entry before its reuse.

On disk (:class:`DiskCache`), each entry is one file named by its key, with a
header holding its shape and a BLAKE2b checksum of its bytes. Files are
written to a temporary name and renamed into place, so readers and other
writers (processes sharing the directory) only ever see whole entries. An
entry that fails its checks is removed and recomputed, never returned. A
directory that cannot be created or written to gives one warning per call and
the call goes on without writing. The directory is bounded by
``SKBERT_DISK_CACHE_MB`` megabytes (default 10240, ``inf`` for no bound): past
it, the entries least recently written or read go first.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import stat
import struct
import threading
import time
from array import array
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from ._validation import warn_user

__all__ = ["DiskCache", "TokenStateCache", "default_cache", "disk_cache", "row_key"]


def row_key(fingerprint: str, input_ids: list[int], token_type_ids=None) -> bytes:
    """A 128-bit digest of one model input under one model fingerprint."""
    digest = hashlib.blake2b(fingerprint.encode(), digest_size=16)
    digest.update(array("q", input_ids).tobytes())
    if token_type_ids is not None:
        digest.update(b"|types|")
        digest.update(array("q", token_type_ids).tobytes())
    return digest.digest()


def _nbytes(states: torch.Tensor) -> int:
    return states.numel() * states.element_size()


class TokenStateCache:
    """Least-recently-used map from row keys to tensors ``(seq_len, n_layers, hidden)``.

    It also memoises tokenization (``get_tokens``/``put_tokens``), so a text
    seen before is not tokenized again, within a tenth of the budget (by an
    estimate of its size); and pooled rows (``get_pooled``/``put_pooled``),
    so a row pooled the same way before is not pooled again, within a
    quarter of the budget. States come first: the memos give way to them
    when all three together would exceed the budget.

    Parameters
    ----------
    max_bytes : int
        Memory budget for the token states and both memos together; pooled
        rows, then tokenizations, then states are evicted, oldest use first,
        to stay within it. An entry larger than the whole budget is not
        stored.
    """

    persistent = False

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self.n_bytes = 0
        self._entries: OrderedDict[bytes, torch.Tensor] = OrderedDict()
        self._tokens: OrderedDict[tuple, tuple] = OrderedDict()
        self._token_bytes = 0
        self._pooled: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._pooled_bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(
        self, key: bytes, n_layers: int, *, keep: bool = True
    ) -> torch.Tensor | None:
        """The entry for ``key`` if it holds at least ``n_layers`` layers, else None.

        ``keep`` is for :meth:`DiskCache.get`; memory keeps what it has.
        """
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.shape[1] < n_layers:
                return None
            self._entries.move_to_end(key)
            return entry

    def lookup(
        self, key: bytes, n_layers: int, *, keep: bool = True
    ) -> torch.Tensor | None:
        """:meth:`get`: in memory, an entry is at hand (see
        :meth:`DiskCache.lookup`)."""
        return self.get(key, n_layers, keep=keep)

    def begin_call(self) -> None:
        """Nothing to do in memory (see :meth:`DiskCache.begin_call`)."""

    def put(self, key: bytes, states: torch.Tensor, *, keep: bool = True) -> None:
        """Store ``states`` for ``key`` unless it holds fewer layers than the entry.

        ``keep=False`` stores nothing (the caller's states would not fit).
        """
        if not keep:
            return
        size = _nbytes(states)
        with self._lock:
            old = self._entries.get(key)
            if old is not None:
                if old.shape[1] >= states.shape[1]:
                    self._entries.move_to_end(key)
                    return
                del self._entries[key]
                self.n_bytes -= _nbytes(old)
            if size > self.max_bytes:
                return
            self._entries[key] = states
            self.n_bytes += size
            self._trim()

    def _over_budget(self) -> bool:
        return self.n_bytes + self._token_bytes + self._pooled_bytes > self.max_bytes

    def _trim(self) -> None:
        """Evict until states and memos together fit the budget: pooled rows
        first, then tokenizations, then states, each oldest use first. States
        cost a model run to compute again, the memos little, so the states of
        a call that fit the budget are never pushed out by memos."""
        while self._over_budget() and self._pooled:
            _, evicted = self._pooled.popitem(last=False)
            self._pooled_bytes -= evicted.nbytes
        while self._over_budget() and self._tokens:
            _, (_, size) = self._tokens.popitem(last=False)
            self._token_bytes -= size
        while self._over_budget() and self._entries:
            _, evicted = self._entries.popitem(last=False)
            self.n_bytes -= _nbytes(evicted)

    def get_tokens(self, key: tuple) -> tuple | None:
        """A memoised tokenization (see :func:`skbert._encode.tokenize_cached`)."""
        with self._lock:
            item = self._tokens.get(key)
            if item is None:
                return None
            self._tokens.move_to_end(key)
            return item[0]

    def put_tokens(
        self, key: tuple, value: tuple, n_tokens: int, n_chars: int = 0
    ) -> None:
        """Memoise a tokenization of ``n_tokens`` token ids of a ``n_chars`` text.

        Its size is estimated at 512 bytes, 56 a token and one a character
        (Python lists of ints, the row keys and the text): 146 MiB for
        100,000 SICK-based texts of 1.7 M tokens, where clearing such a memo
        was measured to free 163 MiB.
        """
        size = 512 + 56 * n_tokens + n_chars
        with self._lock:
            if key in self._tokens:
                return
            self._tokens[key] = (value, size)
            self._token_bytes += size
            while self._token_bytes > self.max_bytes // 10 and self._tokens:
                _, (_, evicted) = self._tokens.popitem(last=False)
                self._token_bytes -= evicted
            self._trim()

    def get_pooled(self, keys: list[bytes], pool_key: tuple, layouts: list) -> list:
        """Memoised pooled rows (see :func:`skbert._encode.encode_texts`), or None.

        ``layouts`` holds, per row, a digest of what pooling reads besides the
        states (which tokens are special, each token's segment): inputs with
        the same tokens and states can differ there.
        """
        with self._lock:
            memo_keys = [(*pair, pool_key) for pair in zip(keys, layouts, strict=True)]
            found = [self._pooled.get(memo_key) for memo_key in memo_keys]
            for memo_key, row in zip(memo_keys, found, strict=True):
                if row is not None:
                    self._pooled.move_to_end(memo_key)
            return found

    def put_pooled(
        self, keys: list[bytes], pool_key: tuple, rows: np.ndarray, layouts: list
    ) -> None:
        """Memoise pooled ``rows``, within a quarter of the budget."""
        with self._lock:
            for key, layout, row in zip(keys, layouts, rows, strict=True):
                memo_key = (key, layout, pool_key)
                if memo_key in self._pooled:
                    continue
                self._pooled[memo_key] = row.copy()
                self._pooled_bytes += row.nbytes
            while self._pooled_bytes > self.max_bytes // 4 and self._pooled:
                _, evicted = self._pooled.popitem(last=False)
                self._pooled_bytes -= evicted.nbytes
            self._trim()

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._tokens.clear()
            self._pooled.clear()
            self.n_bytes = 0
            self._token_bytes = 0
            self._pooled_bytes = 0


_DEFAULT: TokenStateCache | None = None
_DEFAULT_LOCK = threading.Lock()


def _budget_bytes(variable: str, default: str) -> float:
    """The budget in bytes that environment ``variable`` gives in megabytes."""
    value = os.environ.get(variable, default)
    try:
        megabytes = float(value)
    except ValueError:
        megabytes = float("nan")
    if not megabytes >= 0:
        raise ValueError(
            f"{variable} must be a number of megabytes >= 0 (or inf), got {value!r}."
        )
    return megabytes * 2**20


def default_cache() -> TokenStateCache:
    """The process-wide memory cache that every estimator shares."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            budget = _budget_bytes("SKBERT_CACHE_MB", "1024")
            _DEFAULT = TokenStateCache(int(min(budget, 2**62)))
        return _DEFAULT


# -- on disk -------------------------------------------------------------------

_MAGIC = b"SKBT\x02"
# magic, seq_len, n_layers, hidden, payload bytes, and the BLAKE2b-128 of the
# key, the shape and the payload (see _digest)
_HEADER = struct.Struct("<5sIIIQ16s")
_SUFFIX = ".skbt"
# the names skbert writes in a cache directory, and only those are ever removed
_FOLDER = re.compile(r"[0-9a-f]{2}")
_ENTRY = re.compile(r"[0-9a-f]{32}" + re.escape(_SUFFIX))
_TEMPORARY = re.compile(
    r"\.[0-9a-f]{32}" + re.escape(_SUFFIX) + r"\.\d+\.\d+(\.[0-9a-f]{8})?\.tmp"
)


# errors that say an entry's own path is taken (a file named like a folder of
# entries, a folder named like an entry), not that the directory is unwritable
_PATH_TAKEN = (FileExistsError, NotADirectoryError, IsADirectoryError)


def _open_entry(path: Path):
    """``path`` opened for reading if it is a regular file: a named pipe (or a
    device) in an entry's place would block the read or never end."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{str(path)!r} is not a regular file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _digest(key: bytes, shape: tuple[int, ...], payload) -> bytes:
    """What an entry's header holds to check it: a file that holds another
    key's entry (a sync or a restore gone wrong) or a changed shape fails too."""
    digest = hashlib.blake2b(key, digest_size=16)
    digest.update(struct.pack("<III", *shape))
    digest.update(payload)
    return digest.digest()


class DiskCache:
    """Token states in a directory, with the process's memory cache in front.

    Parameters
    ----------
    directory : path
        Created if missing. Entries live in ``directory/<2 hex>/<32 hex>.skbt``.
    memory : TokenStateCache
        Looked up first; entries read from disk are kept there too.
    max_disk_bytes : float, default=inf
        Most bytes of entries in the directory. Past it, the entries least
        recently written or read (by modification time, which a read
        refreshes) are removed until the directory holds 90% of it.

    Notes
    -----
    :meth:`begin_call` starts a call: the first failed write of a call warns
    and stops further writes for the rest of that call.

    The directory's size is counted at the first call of a process and then
    kept up to date from this process's writes; it is counted again after
    each tenth of the budget this process writes (``RECOUNT_SHARE``) and at
    each eviction, so the entries that other processes wrote are taken into
    account then: N processes sharing a directory exceed the budget by about
    N tenths of it at most.
    """

    persistent = True

    def __init__(
        self,
        directory: str | os.PathLike,
        memory: TokenStateCache,
        max_disk_bytes: float = float("inf"),
    ):
        self.directory = Path(directory)
        self.memory = memory
        self.max_disk_bytes = max_disk_bytes
        self._disk_bytes: int | None = None  # counted at the first call
        self._written = 0  # bytes this process wrote since the last count
        self._on_disk: set[bytes] = set()
        self._lock = threading.Lock()
        self._writable = True
        self._blocked_warned = False  # an entry's path taken by something else
        self._evict_stuck = False  # old entries that could not be removed
        self._stuck_warned = False
        self.n_corrupt = 0

    @property
    def max_bytes(self) -> int:
        return self.memory.max_bytes

    def begin_call(self) -> None:
        """Retry writing (a full or read-only directory may have been fixed)."""
        self._writable = True
        self._blocked_warned = False
        self._stuck_warned = False
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            self._fail(error)
            return
        if self._disk_bytes is None:  # also removes stale temporary files
            self._recount()

    def _entries(self) -> list[tuple[int, int, Path]]:
        """(modification time in ns, size, path) of every entry file."""
        found = []
        try:
            folders = [
                e
                for e in os.scandir(self.directory)
                if _FOLDER.fullmatch(e.name) and e.is_dir()
            ]
        except OSError:
            return found
        for folder in folders:
            try:
                files = list(os.scandir(folder.path))
            except OSError:
                continue
            for file in files:
                if _TEMPORARY.fullmatch(file.name):
                    _remove_stale(file)  # left by a process that was killed
                    continue
                if not _ENTRY.fullmatch(file.name):
                    continue  # not skbert's: never counted, never removed
                try:
                    info = file.stat()
                except OSError:  # removed meanwhile, by another process
                    continue
                found.append((info.st_mtime_ns, info.st_size, Path(file.path)))
        return found

    def _recount(self) -> None:
        """Count the directory again (other processes write to it too), and
        evict if it is over the budget."""
        entries = self._entries()
        with self._lock:
            self._disk_bytes = sum(size for _, size, _ in entries)
            self._written = 0
            self._evict_stuck = False  # try again, once a tenth of the budget
            over = self._disk_bytes > self.max_disk_bytes
        if over:
            self._evict(entries)

    def _evict(self, entries: list | None = None) -> None:
        """Remove the least recently used entries down to 90% of the budget
        (of ``entries``, the directory's, counted now if None)."""
        entries = sorted(self._entries() if entries is None else entries)
        total = sum(size for _, size, _ in entries)
        target = 0.9 * self.max_disk_bytes
        removed, failed = [], []
        for _, size, path in entries:
            if total <= target:
                break
            try:
                path.unlink()
            except FileNotFoundError:  # another process removed it first
                pass
            except OSError as error:  # another user's entry, a read-only file
                failed.append(error)
                continue
            total -= size
            removed.append(path)
        with self._lock:
            self._disk_bytes = total
            self._written = 0
            for path in removed:
                self._on_disk.discard(bytes.fromhex(path.name[: -len(_SUFFIX)]))
            # entries left that could not go: no new scan at each write, only
            # at the next recount
            self._evict_stuck = total > target
            warn = self._evict_stuck and bool(failed) and not self._stuck_warned
            self._stuck_warned |= warn
        if warn:
            reason = failed[0].strerror or failed[0]
            warn_user(  # no counts: one message however often it comes
                f"skbert cannot remove old entries of its token-state cache in "
                f"{str(self.directory)!r} ({reason}), so it may hold more than its "
                f"budget of {self.max_disk_bytes / 2**20:.0f} MiB "
                "(SKBERT_DISK_CACHE_MB). Remove them by hand, or give this process a "
                "cache directory of its own. Results are not affected."
            )

    def _fail(self, error: OSError) -> None:
        if self._writable:
            warn_user(
                f"skbert cannot write its token-state cache to {str(self.directory)!r} "
                f"({error.strerror or error}); this call goes on without writing "
                "to it. Results are not affected."
            )
        self._writable = False

    def _blocked(self, path: Path, error: OSError) -> None:
        if not self._blocked_warned:
            why = (
                "something else is in its place"
                if isinstance(error, _PATH_TAKEN)
                else "an entry there cannot be replaced"
            )
            warn_user(
                f"skbert cannot write a token-state cache entry to {str(path)!r} "
                f"({error.strerror or error}): {why} in "
                f"{str(self.directory)!r}. That entry is not written; the others "
                "are. Results are not affected."
            )
        self._blocked_warned = True

    def _path(self, key: bytes) -> Path:
        name = key.hex()
        return self.directory / name[:2] / (name + _SUFFIX)

    def get_tokens(self, key: tuple) -> tuple | None:
        return self.memory.get_tokens(key)

    def put_tokens(
        self, key: tuple, value: tuple, n_tokens: int, n_chars: int = 0
    ) -> None:
        self.memory.put_tokens(key, value, n_tokens, n_chars)

    def get_pooled(self, keys: list[bytes], pool_key: tuple, layouts: list) -> list:
        """Memoised pooled rows of the keys whose states are on disk, else None.

        Rows pooled under ``cache="memory"`` may have no file yet: they go
        the way of states, which writes them.
        """
        found = self.memory.get_pooled(keys, pool_key, layouts)
        with self._lock:
            return [
                row if key in self._on_disk else None
                for key, row in zip(keys, found, strict=True)
            ]

    def put_pooled(
        self, keys: list[bytes], pool_key: tuple, rows: np.ndarray, layouts: list
    ) -> None:
        self.memory.put_pooled(keys, pool_key, rows, layouts)

    def get(
        self, key: bytes, n_layers: int, *, keep: bool = True
    ) -> torch.Tensor | None:
        """The entry for ``key`` from memory, else from disk if it is whole.

        An entry read from disk is kept in memory too if ``keep``.
        """
        entry = self.memory.get(key, n_layers)
        if entry is not None:
            if key not in self._on_disk:  # maybe computed under cache="memory"
                try:
                    on_disk = self._path(key).exists()
                except OSError:  # no access: the write below warns
                    on_disk = False
                if on_disk:
                    with self._lock:
                        self._on_disk.add(key)
                else:
                    self._write(key, entry)
            return entry
        entry = self._read(key)
        if entry is None or entry.shape[1] < n_layers:
            return None
        self.memory.put(key, entry, keep=keep)
        return entry

    def lookup(
        self, key: bytes, n_layers: int, *, keep: bool = True
    ) -> torch.Tensor | bool | None:
        """Like :meth:`get`, but an entry that only the disk holds is not read:
        True if its header says it is whole and holds ``n_layers`` layers
        (:meth:`get` reads and checks it later, when it is needed), else None.
        So a call can find its hits without holding all their states."""
        if self.memory.get(key, n_layers) is not None:
            return self.get(key, n_layers, keep=keep)
        path = self._path(key)
        try:
            with _open_entry(path) as file:
                header = file.read(_HEADER.size)
                size = os.fstat(file.fileno()).st_size
            magic, seq_len, layers, hidden, n_bytes, _ = _HEADER.unpack(header)
        except (OSError, struct.error):
            return None
        if magic != _MAGIC or size != _HEADER.size + n_bytes or layers < n_layers:
            return None
        try:  # now recently used: the writes of this call evict others first
            os.utime(path)
        except OSError:
            pass
        return True

    def put(self, key: bytes, states: torch.Tensor, *, keep: bool = True) -> None:
        """Write ``states`` to disk, and keep them in memory if ``keep``."""
        if keep:
            self.memory.put(key, states)
        self._write(key, states)

    def _read(self, key: bytes) -> torch.Tensor | None:
        path = self._path(key)
        try:
            with _open_entry(path) as file:
                data = file.read()
        except OSError:
            return None
        header_size = _HEADER.size
        try:
            magic, seq_len, n_layers, hidden, n_bytes, digest = _HEADER.unpack_from(
                data
            )
        except struct.error:
            magic = None
        payload = memoryview(data)[header_size:]
        if (
            magic != _MAGIC
            or n_bytes != len(payload)
            or n_bytes != 4 * seq_len * n_layers * hidden
            or _digest(key, (seq_len, n_layers, hidden), payload) != digest
        ):
            self.n_corrupt += 1
            try:  # recomputed by the caller and written again
                path.unlink()
            except OSError:
                pass
            return None
        array = np.frombuffer(bytearray(payload), dtype="<f4")
        try:  # now recently used: evicted last
            os.utime(path)
        except OSError:
            pass
        with self._lock:
            self._on_disk.add(key)
        return torch.from_numpy(array.reshape(seq_len, n_layers, hidden))

    def _write(self, key: bytes, states: torch.Tensor) -> None:
        if not self._writable:
            return
        path = self._path(key)
        # written from the states' own buffer, without a copy
        array = states.contiguous().numpy().astype("<f4", copy=False)
        payload = memoryview(array).cast("B")
        header = _HEADER.pack(
            _MAGIC,
            *states.shape,
            len(payload),
            _digest(key, tuple(states.shape), payload),
        )
        n_bytes = len(header) + len(payload)
        if n_bytes > self.max_disk_bytes:  # would push out everything else
            return
        # a name no other writer picks (processes in other PID namespaces
        # share a directory too), created exclusively
        temporary = path.with_name(
            f".{path.name}.{os.getpid()}.{threading.get_ident()}."
            f"{secrets.token_hex(4)}.tmp"
        )
        written = False
        try:
            path.parent.mkdir(exist_ok=True)
            with open(temporary, "xb") as file:
                file.write(header)
                file.write(payload)
            written = True
            os.replace(temporary, path)  # atomic: readers see all of it or none
        except BaseException as error:  # KeyboardInterrupt too: leave no file
            try:
                temporary.unlink()
            except OSError:
                pass
            if not isinstance(error, OSError):
                raise
            if isinstance(error, _PATH_TAKEN) and self.directory.is_dir():
                self._blocked(path, error)  # this entry only; write the others
            elif written and isinstance(error, PermissionError):
                # the folder took a file; this entry's name does not (another
                # user's entry in a shared directory with the sticky bit)
                self._blocked(path, error)
            else:
                self._fail(error)
            return
        with self._lock:
            self._on_disk.add(key)
            if self._disk_bytes is not None:
                self._disk_bytes += n_bytes
                self._written += n_bytes
            over = self._disk_bytes is not None and (
                self._disk_bytes > self.max_disk_bytes
            )
            recount = self._written > RECOUNT_SHARE * self.max_disk_bytes
        if over and not self._evict_stuck:
            self._evict()
        elif recount:
            self._recount()


# a process counts its cache directory again after writing this share of the
# budget: other processes' entries count too
RECOUNT_SHARE = 0.1

# a temporary file older than this was left by a process that was killed
STALE_TEMPORARY_S = 3600


def _remove_stale(file: os.DirEntry) -> None:
    """Remove a temporary entry file not written to for an hour."""
    try:
        if time.time() - file.stat().st_mtime > STALE_TEMPORARY_S:
            os.unlink(file.path)
    except OSError:  # written or removed meanwhile: leave it
        pass


_DISK: dict[str, DiskCache] = {}


def disk_cache(directory: str | os.PathLike) -> DiskCache:
    """The process's :class:`DiskCache` for ``directory`` (one per directory)."""
    name = os.path.abspath(os.path.expanduser(os.fspath(directory)))
    memory = default_cache()
    with _DEFAULT_LOCK:
        cache = _DISK.get(name)
        if cache is None:
            budget = _budget_bytes("SKBERT_DISK_CACHE_MB", "10240")
            cache = _DISK[name] = DiskCache(name, memory, budget)
        return cache
