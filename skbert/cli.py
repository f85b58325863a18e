"""The ``skbert`` command line: embed a file of texts into a file of vectors.

A thin ``argparse`` layer over :class:`~skbert.BertSentenceVectorizer`. It reads
the texts, maps each option to the estimator parameter of the same name, calls
``fit_transform`` and writes the result; every decision about embedding is the
estimator's.

Examples
--------
.. code-block:: console

    $ skbert embed reviews.csv --column text --output reviews.parquet
    $ skbert embed lines.txt --output lines.npy --layers -1 -2 -3 -4 \\
          --layer-combine concat --pooling cls
    $ python -m skbert embed reviews.parquet --column body --output body.npy
"""

from __future__ import annotations

import argparse
import ast
import csv
import functools
import io
import os
import re
import secrets
import shlex
import signal
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

import numpy as np

# nothing here imports torch: --help and --version answer at once, and the
# estimator is imported when a command runs
from . import __version__
from ._validation import (
    DTYPES,
    LAYER_COMBINES,
    POOLINGS,
    CacheSpec,
    check_params,
    missing_message,
)

__all__ = ["main"]

INPUT_FORMATS = (".csv", ".tsv", ".parquet", ".txt")
OUTPUT_FORMATS = (".npy", ".parquet")
# INPUT "-" (this str, never a Path): standard input, one text per line
STDIN = "-"
# Texts embedded and written per step: the vectors of one chunk are all that
# is held in memory (10,000 x 384 float32 is 15 MB for the bundled model).
CHUNK_SIZE = 10_000

# Exit codes: 2 for a wrong command line or unusable input/output path (found
# before any model is loaded), 1 for a failure while reading the input,
# loading the model, embedding or writing the output.
EXIT_USAGE = 2
EXIT_FAILURE = 1


_EMBED_EPILOG = """\
inputs:
  .csv      one text per row, from --column; cells are read as written:
            'NA' or 'null' stay texts and an empty cell is the text '', so
            output rows match input rows. In a one-column file an empty
            line is an empty cell; in a file of several columns it is no
            row (as pandas reads it)
  .tsv      the same, separated by tabs, without quoting: a '"' is part
            of its text
  .parquet  one text per row, from --column; nulls are missing texts
            (see --handle-missing)
  .txt      one text per line (UTF-8; \\n, \\r\\n or \\r line ends); only the
            line end is removed, and blank lines are kept as '' texts, so
            row i of the output is line i+1 of the file
  -         standard input, read as .txt, or as --input-format says
  --input-format csv|tsv|parquet|txt reads INPUT in that format, whatever
  its extension.

outputs:
  .npy      float32 array of shape (n_texts, n_features), for numpy.load
  .parquet  float32 columns bertsentencevectorizer0, bertsentencevectorizer1, ...
  The texts are read whole; their vectors are embedded and written in
  chunks of 10,000 texts, so the vectors held in memory do not grow with
  the input. The file is written under a temporary name next to OUT and
  renamed at the end, so OUT never exists half-written; the temporary file
  is removed if the run fails or is stopped (Ctrl-C, SIGTERM, SIGHUP), and
  one left by a killed run is removed by a later run to the same OUT once
  its process is gone and it is an hour old.

exit status:
  0 on success; 2 for a wrong command line or an unusable input or output
  path, found before any model is loaded; 1 if reading the input, loading
  the model, embedding or writing fails.

examples:
  skbert embed reviews.csv --column text --output reviews.parquet
  zcat texts.txt.gz | skbert embed - --output vectors.npy
  zcat texts.csv.gz | skbert embed - --input-format csv --output vectors.npy
"""


def _layers_with_commas(argv: list[str]) -> str | None:
    """The first value of --layers written with commas ("-1,-2"), which
    argparse would read as an option, or None."""
    index = re.compile(r"-?\d+")
    listed = re.compile(r"-?\d+(,\s*-?\d+)*,?|(-?\d+,)+\s*")
    for i, word in enumerate(argv):
        if word.startswith("--layers="):
            values = [word.partition("=")[2]]
        elif word == "--layers":
            values = []
            for value in argv[i + 1 :]:  # nargs="+": the words that follow
                if not listed.fullmatch(value):
                    break
                values.append(value)
        else:
            continue
        for value in values:
            if "," in value and listed.fullmatch(value):
                return value
            if not index.fullmatch(value):
                break
    return None


def _looks_like_input(value: str) -> bool:
    """Whether a word is a file name (one that exists, or with an input's
    extension), not a mistyped layer index such as 1.5."""
    suffix = Path(value).suffix.lower()
    return (
        value == STDIN
        or Path(value).exists()
        or suffix in INPUT_FORMATS
        or suffix in _COMPRESSED
    )


class CLIError(Exception):
    """A problem with the command line's files, reported as one line."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that reports errors as one ``skbert: error:`` line."""

    def error(self, message: str) -> NoReturn:
        hint = f" (see '{self.prog} --help')"
        bad = re.match(r"argument --layers: invalid int value: (['\"])(.*)\1$", message)
        if bad and _looks_like_input(bad[2]):
            # nargs="+" takes what follows, INPUT included
            hint = "; put INPUT before --layers" + hint
        elif bad:
            hint = "; --layers takes hidden-state indices, e.g. --layers -2" + hint
        self.exit(EXIT_USAGE, f"skbert: error: {_first_line(message)}{hint}\n")


# what the per-call truncation warning says (BertSentenceVectorizer._warn_truncated)
_TRUNCATED = "distinct texts were longer than max_length="


def _first_line(message: object) -> str:
    lines = str(message).strip().splitlines()
    return lines[0] if lines else type(message).__name__


# the options' choices: the estimator's, less segment_mean (it needs pairs,
# which the command line does not read); a test keeps them in step
CHOICES = {
    "layer_combine": LAYER_COMBINES,
    "pooling": ("auto", *POOLINGS),
    "dtype": DTYPES,
    "handle_missing": ("error", "empty"),
}


def _positive_int(value: str) -> int:
    """Parse an int >= 1 (--max-length)."""
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {value!r}")
    return number


def _auto_or_int(value: str) -> int | str:
    """Parse "auto" or a positive int (the batching options)."""
    if value.lower() == "auto":
        return "auto"
    try:
        return _positive_int(value)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected 'auto' or an int >= 1, got {value!r}"
        ) from None


def _token_limit(value: str) -> int | str | None:
    """Parse --max-batch-tokens: "auto", "none" (no limit) or a positive int."""
    if value.lower() == "none":
        return None
    try:
        return _auto_or_int(value)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected 'auto', 'none' or an int >= 1, got {value!r}"
        ) from None


def _cache_directory(value: str) -> Path:
    """Parse --cache: a directory name, never a word that means "no cache"."""
    if value.strip().lower() in (*CacheSpec.NOT_PATHS, "memory"):
        raise argparse.ArgumentTypeError(
            f"expected a directory, got {value!r}; leave --cache out to run "
            "without a cache"
        )
    return Path(value)


def build_parser() -> argparse.ArgumentParser:
    """Build the ``skbert`` argument parser.

    Returns
    -------
    parser : argparse.ArgumentParser
    """
    parser = _Parser(
        prog="skbert",
        description="BERT embeddings from the command line.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    embed = commands.add_parser(
        "embed",
        help="embed each text of a file as one vector (BertSentenceVectorizer)",
        description=(  # raw text (for the epilog's layout): wrapped by hand
            "Embed each text of INPUT as one vector with BertSentenceVectorizer and\n"
            "write the vectors, one row per text in input order, to --output."
        ),
        epilog=_EMBED_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    embed.add_argument(
        "input",
        metavar="INPUT",
        help="file of texts: .csv, .tsv, .parquet (one text per row) or .txt (per "
        "line); - reads standard input (as .txt unless --input-format says)",
    )
    embed.add_argument(
        "--input-format",
        choices=[suffix[1:] for suffix in INPUT_FORMATS],
        default=None,
        help="read INPUT in this format, whatever its extension: e.g. "
        "`cat texts.csv | skbert embed - --input-format csv ...` (default: "
        "INPUT's extension; txt for -)",
    )
    embed.add_argument(
        "-o",
        "--output",
        required=True,
        type=Path,
        metavar="OUT",
        help="where to write the vectors: .npy or .parquet, in a directory that can "
        "be written; replaced if it exists (but never the input file)",
    )
    embed.add_argument(
        "--column",
        default=None,
        help="column of a .csv, .tsv or .parquet INPUT that holds the texts "
        "(default: text)",
    )
    embed.add_argument(
        "--model",
        default=None,
        metavar="M",
        help="local model directory (as written by save_pretrained) or Hugging Face "
        "hub id; default: the bundled all-MiniLM-L6-v2",
    )
    embed.add_argument(
        "--layers",
        nargs="+",
        type=int,
        default=None,
        metavar="I",
        help="hidden-state indices to use: 0 is the embedding output, -1 the last "
        "layer, e.g. --layers -1 -2 -3 -4; default: the model's "
        "sentence-transformers layer if it has one, else -2 (it takes every number "
        "that follows: put INPUT before it)",
    )
    embed.add_argument(
        "--layer-combine",
        default="mean",
        choices=CHOICES["layer_combine"],
        help="how several --layers become one vector per token; concat multiplies "
        "the width by their number (default: %(default)s)",
    )
    embed.add_argument(
        "--pooling",
        default="auto",
        # segment_mean needs sentence pairs, which the command line does not take
        choices=CHOICES["pooling"],
        help="how token vectors become one vector per text; auto uses the model's "
        "sentence-transformers pooling if it has one, else mean "
        "(default: %(default)s)",
    )
    embed.add_argument(
        "--exclude-special-tokens",
        dest="include_special_tokens",
        action="store_false",
        help="leave [CLS] and [SEP] out of mean, max, mean_max, max_mean, "
        "mean_sqrt_len and last pooling",
    )
    embed.add_argument(
        "--max-length",
        type=_positive_int,
        default=None,
        metavar="N",
        help="longest input in tokens, special tokens included; longer texts are "
        "cut to their head, with a warning; default: the model's sentence-transformers "
        "max_seq_length (256 for the bundled model), else its limit",
    )
    embed.add_argument(
        "--normalize",
        action=argparse.BooleanOptionalAction,
        default="auto",
        help="scale each vector to unit L2 norm; default: where the vectors are "
        "the ones the model's sentence-transformers config gives and it ends in a "
        "Normalize module",
    )
    embed.add_argument(
        "--dense",
        action=argparse.BooleanOptionalAction,
        default="auto",
        help="apply the Dense layers of the model's sentence-transformers config "
        "after pooling (LaBSE, distiluse-*); default: where the vectors are the "
        "ones the config pools",
    )
    embed.add_argument(
        "--prompt",
        default="auto",
        metavar="TEXT",
        help="text put before every text, e.g. 'query: '; auto: the model's "
        "sentence-transformers default prompt if it has one; '' for none "
        "(default: %(default)s)",
    )
    embed.add_argument(
        "--prompt-name",
        default=None,
        metavar="NAME",
        help="put the model's sentence-transformers prompt of this name before "
        "every text, e.g. query (the names are in its "
        "config_sentence_transformers.json)",
    )
    embed.add_argument(
        "--batch-size",
        type=_auto_or_int,
        default="auto",
        metavar="N",
        help="most texts per forward pass; auto: 32 on the CPU, no limit on a "
        "GPU, where --max-batch-tokens sizes batches (32 with --max-batch-tokens "
        "none) (default: %(default)s)",
    )
    embed.add_argument(
        "--max-batch-tokens",
        type=_token_limit,
        default="auto",
        metavar="N",
        help="most padded tokens per forward pass; auto: 4096 on the CPU, "
        "16384 on a GPU; none: no limit, --batch-size alone sizes batches "
        "(auto: 32 texts on every device) (default: %(default)s)",
    )
    embed.add_argument(
        "--device",
        default="auto",
        help="torch device: auto (cuda, then mps, then cpu), cpu, cuda, cuda:1 or "
        "mps (default: %(default)s)",
    )
    embed.add_argument(
        "--dtype",
        default="float32",
        choices=CHOICES["dtype"],
        help="precision the model computes in; the output is float32 either way "
        "(default: %(default)s)",
    )
    embed.add_argument(
        "--progress",
        dest="progress_bar",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar on stderr; default: only when stderr is a terminal",
    )
    embed.add_argument(
        "--handle-missing",
        default="error",
        choices=CHOICES["handle_missing"],
        help="what to do with missing texts (nulls in a .parquet INPUT): error "
        "stops, empty embeds them as '' (default: %(default)s)",
    )
    embed.add_argument(
        "--cache",
        type=_cache_directory,
        default=None,
        metavar="DIR",
        help="keep token states in DIR: a rerun after an interruption embeds only "
        "the texts not finished, and later runs with other --layers (no deeper), "
        "--pooling or --[no-]normalize skip the model (default: no cache). It holds "
        "every layer's states up to the deepest one used, 4 bytes per number: "
        "about 226 MiB for 2,000 SICK sentences with the bundled model; DIR is "
        "bounded by SKBERT_DISK_CACHE_MB, default 10240 MB, least recently used first",
    )
    embed.set_defaults(run=_embed, parser=embed)
    return parser


# -- input and output -------------------------------------------------------


def _suffix(path: Path | str) -> str:
    return ".txt" if path == STDIN else path.suffix.lower()


def _input_format(path: Path | str, input_format: str | None) -> str:
    """The format INPUT is read in: ``input_format`` ("csv", ...) if given,
    else from its extension, as ".csv", ".tsv", ".parquet" or ".txt"."""
    return f".{input_format}" if input_format else _suffix(path)


def _shown(path: Path | str) -> str:
    """How messages name an input: quoted as typed, or standard input."""
    return "standard input" if path == STDIN else repr(str(path))


# what files of other formats begin with (none of them UTF-8 text but Parquet
# and bzip2, checked further in _looks_like): named in the error for an input
# that is read as another format, with what to do (or the tool that
# decompresses it)
_COMPRESSED = {".gz": "zcat", ".bz2": "bzcat", ".xz": "xzcat", ".zst": "zstdcat"}
_MAGIC = {
    b"PAR1": ("a Parquet file", "read it with --input-format parquet"),
    b"\x1f\x8b": ("gzip-compressed data", "zcat"),
    b"BZh": ("bzip2-compressed data", "bzcat"),
    b"\xfd7zXZ\x00": ("xz-compressed data", "xzcat"),
    b"(\xb5/\xfd": ("zstd-compressed data", "zstdcat"),
    b"PK\x03\x04": ("a zip archive", "unpack it first"),
    b"PK\x05\x06": ("an empty zip archive", "unpack it first"),
}


def _looks_like(opened: Callable[[], BinaryIO], suffix: str) -> str | None:
    """What the input seems to be, and what to do, when its first bytes say it
    is not ``suffix`` (a Parquet file read as CSV, a compressed file); else
    None."""
    with opened() as file:
        head = file.read(10)
        if head.startswith(b"PAR1"):  # a text may begin so; a Parquet file ends
            size = file.seek(0, os.SEEK_END)  # with its footer's length and PAR1
            file.seek(max(size - 8, 0))
            tail = file.read(8)
            footer = int.from_bytes(tail[:4], "little")
            if suffix == ".parquet" or tail[4:] != b"PAR1" or footer + 12 > size:
                return None
    # bzip2: a first block, or the end of an empty stream
    if head.startswith(b"BZh") and head[4:10] not in (b"1AY&SY", b"\x17rE8P\x90"):
        return None
    for magic, (what, how) in _MAGIC.items():
        if head.startswith(magic):
            if how in _COMPRESSED.values():
                how = (
                    f"decompress it first: {how} FILE | skbert embed - "
                    f"--input-format {suffix[1:]}"
                )
            return f"{what} ({how})"
    return None


def _check_input(path: Path, input_format: str | None = None) -> None:
    if path == STDIN:
        return
    if not path.exists():
        raise CLIError(f"input file {str(path)!r} does not exist.")
    if not path.is_file():
        if path.is_dir():
            raise CLIError(f"input {str(path)!r} is a directory; name a file.")
        raise CLIError(
            f"input {str(path)!r} is not a regular file (a pipe?); send it to "
            "standard input instead: ... | skbert embed - --input-format FORMAT."
        )
    tool = _COMPRESSED.get(path.suffix.lower())
    if tool is not None and input_format is None:
        inner = Path(path.stem).suffix.lower()
        fmt = f" --input-format {inner[1:]}" if inner in INPUT_FORMATS else ""
        raise CLIError(
            f"cannot read {str(path)!r}: it is compressed ({path.suffix}); "
            f"decompress it through a pipe: {tool} {shlex.quote(str(path))} | "
            f"skbert embed -{fmt} ..."
        )
    if _input_format(path, input_format) not in INPUT_FORMATS:
        raise CLIError(
            f"cannot read {str(path)!r}: unknown input extension "
            f"{path.suffix or '(none)'!r}; use one of {', '.join(INPUT_FORMATS)}, "
            "or say the format with --input-format."
        )


# the temporary name holds this much of the output's name at most, so that an
# output name the file system takes has a temporary name it takes too
_TEMPORARY_STEM = 200


def _temporary_stem(path: Path) -> str:
    """At most ``_TEMPORARY_STEM`` bytes of ``path``'s name, whole characters."""
    return os.fsencode(path.name)[:_TEMPORARY_STEM].decode("utf-8", "ignore")


def _temporary_name(path: Path) -> Path:
    """A new name next to ``path`` for writing it, hidden, unique to this call."""
    stem = _temporary_stem(path)
    return path.with_name(f".{stem}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _remove_stale_temporaries(path: Path) -> None:
    """Remove the temporary files that killed runs left for ``path``: their
    process is gone and they were not written to for an hour (as the disk
    cache's; a run writes one every chunk)."""
    from ._cache import _remove_stale

    pattern = re.compile(
        rf"\.{re.escape(_temporary_stem(path))}\.(\d+)\.[0-9a-f]{{8}}\.tmp"
    )
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is not None and not _process_alive(int(match.group(1))):
            _remove_stale(entry)


def _process_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (perhaps as another user)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's, say
        return True
    return True


def _check_output(path: Path, input_path: Path) -> None:
    try:
        is_directory = path.is_dir()
    except OSError as error:  # a name too long, say
        raise CLIError(f"cannot write {str(path)!r}: {error.strerror}.") from None
    if is_directory:
        raise CLIError(f"output {str(path)!r} is a directory; name a file.")
    if str(path) == "-":
        raise CLIError(
            "cannot write to standard output; name a .npy or .parquet file "
            "with --output."
        )
    if _suffix(path) not in OUTPUT_FORMATS:
        raise CLIError(
            f"cannot write {str(path)!r}: unknown output extension "
            f"{path.suffix or '(none)'!r}; use one of {', '.join(OUTPUT_FORMATS)}."
        )
    parent = path.parent
    if not parent.is_dir():
        raise CLIError(
            f"cannot write {str(path)!r}: directory {str(parent)!r} does not exist."
        )
    if input_path != STDIN and path.exists() and os.path.samefile(path, input_path):
        raise CLIError(
            f"output {str(path)!r} is the input file; name another file, so the "
            "texts are not replaced by their vectors."
        )
    _remove_stale_temporaries(path)
    probe = _temporary_name(path)  # what the output is first written as
    try:
        open(probe, "xb").close()
        probe.unlink()
    except OSError as error:
        raise CLIError(
            f"cannot write {str(path)!r}: {error.strerror or error}."
        ) from None


def _missing_column(path: Path | str, column: str, columns: Sequence[str]) -> CLIError:
    names = ", ".join(repr(str(name)) for name in list(columns)[:10])
    if len(columns) > 10:
        names += f", ... ({len(columns)} columns)"
    shown = _shown(path)
    return CLIError(
        f"{shown[0].upper() + shown[1:]} has no column {column!r}; its columns are "
        f"[{names}]. Choose one with --column."
    )


def read_texts(path: Path | str, column: str, input_format: str | None = None) -> Any:
    """Read the texts of a .csv, .tsv, .parquet or .txt file.

    Parameters
    ----------
    path : Path or "-"
        The input file; its extension picks the format. The str ``"-"`` reads
        standard input, as .txt unless ``input_format`` says otherwise.
    column : str
        The column holding the texts (.csv, .tsv and .parquet only).
    input_format : {"csv", "tsv", "parquet", "txt"} or None, default=None
        The format to read, whatever the extension; None: from the extension.

    Returns
    -------
    texts : pandas.Series or list of str
        One entry per row (.csv, .tsv, .parquet) or line (.txt). CSV and TSV
        cells are strings as written (``keep_default_na=False``: "NA" stays a
        text, an empty cell is "", and so is the empty line a one-column file
        writes for one; in a file of several columns an empty line is no row);
        parquet nulls stay missing for ``handle_missing``. For .txt, only the
        line end is removed and blank lines are "".

    Raises
    ------
    ValueError
        The file cannot be decoded or parsed; the message names it.
    """
    import pandas as pd
    import pyarrow as pa

    if path == STDIN:
        data = sys.stdin.buffer.read()
        opened = functools.partial(io.BytesIO, data)
    else:
        opened = functools.partial(open, path, "rb")
    suffix = _input_format(path, input_format)
    seems = _looks_like(opened, suffix)
    if seems is not None:
        raise ValueError(
            f"cannot read {_shown(path)} as {suffix}: it looks like {seems}."
        )
    try:
        texts = _read_texts(path, column, opened, suffix)
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"cannot read {_shown(path)} as {suffix}: "
            f"{_bad_utf8(opened, exc)}; the {'input' if path == STDIN else 'file'} "
            "must be UTF-8."
        ) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, pa.ArrowException) as exc:
        raise ValueError(
            f"cannot read {_shown(path)} as {suffix}: {_first_line(exc).rstrip('.')}."
        ) from None
    if hasattr(texts, "map"):  # a column of another type than text
        kinds = texts.map(_text_or_missing)
        if not kinds.all():
            position = int(np.flatnonzero(~kinds.to_numpy(dtype=bool))[0])
            value = texts.iloc[position]
            value = value.item() if isinstance(value, np.generic) else value
            shown = repr(value)
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            raise ValueError(
                f"column {column!r} of {_shown(path)} holds {type(value).__name__} "
                f"values ({shown} in row {position}, counted from 0), not texts; "
                "choose a column of strings with --column, or convert it."
            )
    return texts


def _text_or_missing(value: Any) -> bool:
    """Whether a cell is a str or missing (None, NaN, pd.NA), not a list or number."""
    import pandas as pd

    if isinstance(value, str) or value is None:
        return True
    return bool(pd.api.types.is_scalar(value) and pd.isna(value))


def _bad_utf8(opened: Callable[[], BinaryIO], exc: UnicodeDecodeError) -> str:
    """Where the first byte that is not UTF-8 is: line and byte offset.
    ``opened()`` opens the input (again) for reading bytes."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = lines = 0
    previous = b""  # the last byte of the chunk before: a CR before an LF
    with opened() as file:
        while chunk := file.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as error:
                start = max(error.start, 0)
                lines += _line_ends(previous + chunk[:start]) - _line_ends(previous)
                byte = f"byte {chunk[start]:#04x}" if start < len(chunk) else "a byte"
                return f"{byte} at line {lines + 1} (byte {offset + start})"
            lines += _line_ends(previous + chunk) - _line_ends(previous)
            offset += len(chunk)
            previous = chunk[-1:]
    pending = decoder.getstate()[0]  # a character cut off by the end of the file
    if pending:
        at = offset - len(pending)
        return f"byte {pending[0]:#04x} at line {lines + 1} (byte {at})"
    return _first_line(exc).rstrip(".")


def _line_ends(data: bytes) -> int:
    """Line ends in ``data``, as the .txt reader counts them: LF, CRLF or CR."""
    return data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n")


def _read_texts(
    path: Path | str, column: str, opened: Callable[[], BinaryIO], suffix: str
) -> Any:
    import pandas as pd

    if suffix == ".txt":
        with io.TextIOWrapper(opened(), encoding="utf-8-sig", newline=None) as f:
            return [line[:-1] if line.endswith("\n") else line for line in f]
    if suffix in (".csv", ".tsv"):
        sep = "\t" if suffix == ".tsv" else ","
        quoting = csv.QUOTE_NONE if suffix == ".tsv" else csv.QUOTE_MINIMAL
        with opened() as file:
            header = pd.read_csv(file, nrows=0, sep=sep, quoting=quoting).columns
        if column not in header:
            raise _missing_column(path, column, header)
        _check_fields(path, opened, sep, quoting, column)
        with opened() as file:
            frame = pd.read_csv(
                file,
                sep=sep,
                # TSV has no quoting: a cell that starts with '"' is read as written
                quoting=quoting,
                usecols=[column],
                dtype=str,
                keep_default_na=False,
                na_filter=False,
                # an empty line is an empty cell of a one-column file: keep its
                # row; with several columns it is no row, as pandas reads it
                skip_blank_lines=len(header) > 1,
                # but not the blank lines above the header
                skiprows=_blank_lines_at_start(opened),
                # a row with a trailing comma must not turn its first cell into
                # the index and shift every column
                index_col=False,
            )
        return frame[column]
    import pyarrow.parquet as pq

    with opened() as file:
        names = pq.read_schema(file).names
    if column not in names:
        raise _missing_column(path, column, names)
    # from arrow, ignoring the pandas metadata, which would make a column
    # that was a DataFrame's index the index again
    with opened() as file:
        table = pq.read_table(file, columns=[column])
    return table.to_pandas(ignore_metadata=True)[column]


def _check_fields(
    path: Path | str,
    opened: Callable[[], BinaryIO],
    sep: str,
    quoting: int,
    column: str | None = None,
) -> None:
    """Refuse a row with more cells than the header (pandas would drop the
    extra ones without a word) or with fewer (it would fill in ''), and a
    header that names ``column`` twice (pandas would read the first)."""
    limit = csv.field_size_limit()
    csv.field_size_limit(2**31 - 1)  # a text may be longer than 128 KiB
    try:
        with io.TextIOWrapper(opened(), encoding="utf-8-sig", newline="") as file:
            reader = csv.reader(file, delimiter=sep, quoting=quoting)
            n_header = n_named = 0
            for fields in reader:
                if not n_header:
                    if any(f.strip() for f in fields):
                        if column is not None and fields.count(column) > 1:
                            raise ValueError(
                                f"cannot read {_shown(path)}: its header names the "
                                f"column {column!r} {fields.count(column)} times; "
                                "rename all but one."
                            )
                        # columns without a name at the end (a delimiter at the
                        # end of the header) may be missing from a row
                        n_header = n_named = len(fields)
                        while n_named > 1 and not fields[n_named - 1]:
                            n_named -= 1
                    continue
                if len(fields) <= 1 and not "".join(fields).strip():
                    continue  # a blank line: an empty cell, or no row
                while len(fields) > n_named and not fields[-1]:
                    fields.pop()  # delimiters at the end of the row
                n = len(fields)
                if n_named <= n <= n_header:
                    continue
                if n < n_named:
                    reason = "each row needs a cell for every column"
                elif sep == ",":
                    reason = "a text with a comma must be quoted"
                else:
                    reason = "a .tsv text cannot hold a tab (use .csv, quoted)"
                expected = n_header if n > n_header else n_named
                kind = ".csv" if sep == "," else ".tsv"
                raise ValueError(
                    f"cannot read {_shown(path)} as {kind}: line {reader.line_num} "
                    f"has {n} cell{'s' * (n != 1)} and the header {expected}; "
                    f"{reason}."
                )
    finally:
        csv.field_size_limit(limit)


def _blank_lines_at_start(opened: Callable[[], BinaryIO]) -> int:
    """The number of blank lines before the first line with text."""
    n_blank = 0
    with io.TextIOWrapper(
        opened(), encoding="utf-8-sig", errors="replace", newline=None
    ) as f:
        for line in f:
            if line.strip():
                break
            n_blank += 1
    return n_blank


def write_vectors(
    path: Path, vectors: np.ndarray, feature_names: Sequence[str]
) -> None:
    """Write ``vectors`` to ``path`` (.npy or .parquet), atomically.

    The data goes to a temporary file in the same directory, which is then
    renamed over ``path`` with ``os.replace``.

    Parameters
    ----------
    path : Path
    vectors : ndarray of shape (n_texts, n_features), dtype float32
    feature_names : sequence of str of length n_features
        Column names of a .parquet output.
    """
    with VectorWriter(path, len(vectors), feature_names) as writer:
        writer.write(vectors)


class VectorWriter:
    """Stream rows of vectors to a .npy or .parquet file, atomically.

    Rows are appended chunk by chunk, so only one chunk is ever in memory.
    They go to a temporary file next to ``path``, renamed over ``path`` when
    the ``with`` block ends without error and removed when it fails.

    Parameters
    ----------
    path : Path
    n_rows : int
        The number of rows that will be written (the .npy header needs it).
    feature_names : sequence of str
        Column names of a .parquet output; their number is the width.
    """

    def __init__(self, path: Path, n_rows: int, feature_names: Sequence[str]):
        self.path = path
        self.n_rows = n_rows
        self.feature_names = [str(name) for name in feature_names]
        self.written = 0
        self._tmp = _temporary_name(path)
        self._file = None
        self._parquet = None

    def __enter__(self) -> VectorWriter:
        # "xb": the file gets the usual permissions (umask) and an existing
        # file of the same name is never overwritten.
        self._file = open(self._tmp, "xb")
        if _suffix(self.path) == ".npy":
            np.lib.format.write_array_header_1_0(
                self._file,
                {
                    "descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                    "fortran_order": False,
                    "shape": (self.n_rows, len(self.feature_names)),
                },
            )
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            self._schema = pa.schema(
                [(name, pa.float32()) for name in self.feature_names]
            )
            self._parquet = pq.ParquetWriter(self._file, self._schema)
        return self

    def write(self, vectors: np.ndarray) -> None:
        """Append rows: an array of shape (n, n_features)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.shape[1:] != (len(self.feature_names),):
            raise ValueError(
                f"Expected rows of width {len(self.feature_names)}, got shape "
                f"{vectors.shape}."
            )
        if self.written + len(vectors) > self.n_rows:
            raise ValueError(f"More than the announced {self.n_rows} rows.")
        try:
            if self._parquet is None:
                self._file.write(vectors.tobytes())
            else:
                import pyarrow as pa

                columns = [pa.array(vectors[:, j]) for j in range(vectors.shape[1])]
                self._parquet.write_table(
                    pa.Table.from_arrays(columns, schema=self._schema)
                )
        except OSError as error:
            raise self._cannot_write(error) from error
        self.written += len(vectors)

    def _cannot_write(self, error: OSError) -> OSError:
        """``error`` saying which file: "No space left on device" alone does not."""
        said = OSError(f"cannot write {str(self.path)!r}: {error.strerror or error}")
        said.errno = error.errno
        return said

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            try:  # closing writes what is buffered: it can fail as a write does
                try:
                    if self._parquet is not None:
                        if self.n_rows == 0:  # keep the schema of an empty output
                            self._parquet.write_table(self._schema.empty_table())
                        self._parquet.close()
                finally:
                    self._file.close()
            except OSError as error:
                if exc_type is not None:  # the first error is the one to tell
                    return
                raise self._cannot_write(error) from error
            if exc_type is None:
                if self.written != self.n_rows:
                    raise ValueError(
                        f"{self.written} rows written, {self.n_rows} announced."
                    )
                os.replace(self._tmp, self.path)
        finally:
            self._tmp.unlink(missing_ok=True)


def _chunks(texts: Any, size: int):
    """Consecutive pieces of ``texts`` (list or pandas Series), ``size`` at most."""
    for start in range(0, len(texts), size):
        if hasattr(texts, "iloc"):
            yield texts.iloc[start : start + size]
        else:
            yield texts[start : start + size]


# -- the embed command ------------------------------------------------------


def _embed(args: argparse.Namespace) -> int:
    from ._encode import shared_progress
    from ._model import parse_device
    from .sentence import BertSentenceVectorizer

    source = STDIN if args.input == STDIN else Path(args.input)
    _check_input(source, args.input_format)
    _check_output(args.output, source)
    if args.column is not None and _input_format(source, args.input_format) == ".txt":
        raise CLIError(
            "--column applies to .csv, .tsv and .parquet inputs; "
            f"{'standard input' if source == STDIN else 'a .txt input'} has one "
            "text per line."
        )
    column = "text" if args.column is None else args.column

    if args.prompt != "auto" and args.prompt_name is not None:
        raise CLIError(
            f"Pass either --prompt or --prompt-name, not both: got --prompt "
            f"{args.prompt!r} and --prompt-name {shlex.quote(args.prompt_name)}. "
            "--prompt-name uses the model's prompt of that name."
        )
    if args.model is not None and not str(args.model).strip():
        raise CLIError("--model is empty; leave it out to use the bundled model.")
    if args.cache is not None:
        cache = args.cache.expanduser()
        taken = next((p for p in (cache, *cache.parents) if p.exists()), None)
        if taken is not None and not taken.is_dir():
            where = "is" if taken == cache else f"lies under {str(taken)!r}, which is"
            raise CLIError(
                f"--cache {str(args.cache)!r} {where} a file; name a directory for "
                "the cache (it is made if missing)."
            )
    repeated = sorted({i for i in args.layers or () if args.layers.count(i) > 1})
    if repeated:
        raise CLIError(
            f"--layers {' '.join(map(str, args.layers))} names hidden state "
            f"{', '.join(map(str, repeated))} more than once; name each once."
        )
    layers: str | int | list[int] = "auto"
    if args.layers is not None:
        layers = args.layers[0] if len(args.layers) == 1 else list(args.layers)
    vectorizer = BertSentenceVectorizer(
        model=args.model,
        layers=layers,
        layer_combine=args.layer_combine,
        pooling=args.pooling,
        include_special_tokens=args.include_special_tokens,
        max_length=args.max_length,
        normalize=args.normalize,
        prompt=args.prompt,
        prompt_name=args.prompt_name,
        dense=args.dense,
        batch_size=args.batch_size,
        max_batch_tokens=args.max_batch_tokens,
        device=args.device,
        dtype=args.dtype,
        progress_bar=args.progress_bar,
        handle_missing=args.handle_missing,
        # one pass over a corpus: memory would only hold what it never reuses
        cache=args.cache,
    )
    try:  # a wrong option value is a usage error, found before any file is read
        check_params(vectorizer, vectorizer._parameter_constraints)
        if args.device != "auto":  # a device this machine lacks fails later, with 1
            parse_device(args.device)
    except ValueError as exc:  # InvalidParameterError is a ValueError too
        raise CLIError(str(exc)) from None
    if source == STDIN and sys.stdin is None:  # started with stdin closed
        raise CLIError("INPUT is -, but there is no standard input to read.")
    if source == STDIN and sys.stdin.isatty():
        fmt = _input_format(source, args.input_format)
        what = "one per line" if fmt == ".txt" else f"as {fmt}"
        print(
            f"skbert: reading texts from standard input, {what}; end with Ctrl-D",
            file=sys.stderr,
        )
    texts = read_texts(source, column, args.input_format)
    if args.handle_missing == "error" and hasattr(texts, "isna"):
        missing = np.flatnonzero(texts.isna().to_numpy()).tolist()
        if missing:  # said in the command line's words, not the estimator's
            message = missing_message(
                missing,
                f"column {column!r}",
                ", or pass --handle-missing empty to embed them as ''.",
            )
            raise ValueError(
                message.format("text(s) (null cells, rows counted from 0)")
            )
    start = time.perf_counter()
    n_texts = len(texts)
    n_cut = n_read = n_chunks = 0  # truncated texts and texts, over the chunks
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # every chunk's, deduplicated below
        try:
            vectorizer.fit(texts)  # checks every text, with its position
            names = vectorizer.get_feature_names_out()
            # chunk by chunk: only one chunk of vectors is ever in memory
            with (
                VectorWriter(args.output, n_texts, names) as writer,
                shared_progress(n_texts, args.progress_bar),  # one bar, not per chunk
            ):
                for chunk in _chunks(texts, CHUNK_SIZE):
                    writer.write(vectorizer.transform(chunk))
                    n_cut += vectorizer.transform_stats_["n_truncated"]
                    n_read += vectorizer.transform_stats_["n_distinct"]
                    n_chunks += 1
        finally:
            lines = [_first_line(w.message) for w in caught]
            # one truncation warning for the whole file, not one per chunk
            if n_chunks > 1 and any(_TRUNCATED in line for line in lines):
                lines = [line for line in lines if _TRUNCATED not in line]
                lines.append(
                    f"{n_cut} of {n_read} texts were longer than "
                    f"max_length={vectorizer.max_length_} tokens and were truncated "
                    f"to their first tokens (a text repeated in the file counts "
                    f"once per chunk of {CHUNK_SIZE:,} texts)."
                )
            for message in dict.fromkeys(lines):
                message = _in_cli_words(message, _typed(args))
                print(f"skbert: warning: {message}", file=sys.stderr)
    seconds = time.perf_counter() - start
    rate = n_texts / seconds if seconds > 0 else float("inf")
    try:
        print(
            f"Embedded {n_texts} text{'' if n_texts == 1 else 's'} -> shape "
            f"{(n_texts, len(names))} float32 in "
            f"{seconds:.2f} s ({rate:.1f} texts/s, model loading included); "
            f"wrote {args.output}",
            flush=True,
        )
    except BrokenPipeError:  # nobody reads the summary (| head): no failure
        _quiet_stdout()
    return 0


def _quiet_stdout() -> None:
    """Point a closed standard output at the null device, so that Python's
    flush at exit does not fail on it."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    except (OSError, ValueError, AttributeError):  # no file descriptor (tests)
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``skbert`` command line.

    Parameters
    ----------
    argv : sequence of str, default=None
        The arguments without the program name; None reads ``sys.argv[1:]``.

    Returns
    -------
    status : int
        0 on success; 2 for a wrong command line or an unusable input or output
        path, found before any model is loaded; 1 if reading the input, loading
        the model, embedding or writing fails. Errors are reported
        on stderr as one ``skbert: error: ...`` line.
    """
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    commas = _layers_with_commas([str(word) for word in argv])
    if commas is not None:
        indices = " ".join(part.strip() for part in commas.split(",") if part.strip())
        print(
            f"skbert: error: argument --layers: got {commas!r}; separate "
            f"hidden-state indices with spaces, e.g. --layers {indices} "
            "(see 'skbert embed --help')",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        args, unknown = parser.parse_known_args(argv)
        if unknown:  # said by the command's parser: its --help lists the options
            args.parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    except SystemExit as exc:  # --help, --version, or a usage error
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        with _stopped_by_signals():
            return args.run(args)
    except _Terminated as stop:
        said = "hung up" if stop.signum == _SIGHUP else "terminated"
        print(f"skbert: {said}", file=sys.stderr)
        return 128 + stop.signum
    except CLIError as exc:
        return _fail(exc, EXIT_USAGE, _typed(args))
    except (ValueError, TypeError, OSError, ImportError) as exc:
        return _fail(exc, EXIT_FAILURE, _typed(args))
    except Exception as exc:  # noqa: BLE001 - any other failure: one line too
        print(
            f"skbert: error: {type(exc).__name__}: {_first_line(exc)}",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("skbert: interrupted", file=sys.stderr)
        return 130


class _Terminated(BaseException):
    """SIGTERM or SIGHUP arrived: unwinds like Ctrl-C, so the temporary output
    goes."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


# a closed terminal or a dropped ssh session (not on Windows)
_SIGHUP = getattr(signal, "SIGHUP", None)


class _stopped_by_signals:
    """Within the block, SIGTERM and SIGHUP raise :class:`_Terminated` (in the
    main thread; elsewhere, signals cannot be handled and nothing changes)."""

    def __enter__(self) -> None:
        self._previous = {}
        for signum in (signal.SIGTERM, _SIGHUP):
            # a signal the caller ignores (nohup ignores SIGHUP) stays ignored
            if signum is None or signal.getsignal(signum) is signal.SIG_IGN:
                continue
            try:
                self._previous[signum] = signal.signal(signum, self._raise)
            except ValueError:  # not the main thread
                return

    @staticmethod
    def _raise(signum, frame) -> NoReturn:
        raise _Terminated(signum)

    def __exit__(self, *exc_info) -> None:
        # None: a handler not set from Python; the default
        for signum, previous in self._previous.items():
            signal.signal(signum, previous or signal.SIG_DFL)


# the estimator's messages name its parameters; here they are options
_EMPTY = "''"  # an empty value, as a shell takes it
_CLI_WORDS = [
    (
        re.compile(r"device='([^']*)' or '([^']*)'"),
        lambda m: f"--device {m[1] or _EMPTY} or {m[2] or _EMPTY}",
    ),
    (re.compile(r"device='([^']*)'"), lambda m: f"--device {m[1] or _EMPTY}"),
    (re.compile(r"model=None"), "no --model"),
    (
        re.compile(r"use max_length <= (\d+), or None"),
        r"use --max-length <= \1, or leave it out",
    ),
    (re.compile(r"max_length=(\d+)"), r"--max-length \1"),
    (re.compile(r"max_length (>=|<=) (\d+)"), r"--max-length \1 \2"),
    (
        re.compile(r"The parameter 'include_special_tokens'"),
        "--exclude-special-tokens",
    ),
    (re.compile(r"The parameter 'dense'"), "--dense"),
    (re.compile(r"handle_missing='([^']*)'"), r"--handle-missing \1"),
    (re.compile(r"either prompt or prompt_name"), "either --prompt or --prompt-name"),
    (re.compile(r"prompt_name=None"), "no --prompt-name"),
    (re.compile(r"\bprompt_name\b"), "--prompt-name"),
    (re.compile(r"prompt=None"), "--prompt ''"),
    (re.compile(r"prompt=\.\.\."), "--prompt TEXT"),
    (re.compile(r"layer_combine='([^']*)'"), r"--layer-combine \1"),
    (re.compile(r"\b(pooling|dtype)='([^']*)'"), r"--\1 \2"),
    (
        re.compile(r"layers=\[([-\d, ]*)\]"),
        lambda m: "--layers " + m[1].replace(",", ""),
    ),
]


def _typed(args: argparse.Namespace) -> list[str]:
    """The strings the user typed that a message may quote: never rewritten."""
    values = [args.input, args.output, args.model, args.cache, args.column]
    # messages may show a path as typed or normalised ("dir/" as "dir")
    values = [str(v) for v in values if v is not None]
    values += [os.path.normpath(v) for v in values]
    # "-" (standard input) is in every message's options and negative numbers
    return [v for v in dict.fromkeys(values) if v not in (STDIN, ".")]


# a Python str literal as repr() writes one, escapes included
_STR_LITERAL = r"'(?:[^'\\]|\\.)*'" + "|" + r'"(?:[^"\\]|\\.)*"'


def _in_cli_words(message: str, typed: Sequence[str] = ()) -> str:
    """``message`` with the estimator's parameters named as options; what the
    user wrote in it is left as it is: ``typed`` values (paths, names) and
    quoted prompts and prompt names."""
    if "\x00" in message:  # the mark below: never mistaken for one
        return message
    original, kept = message, []

    def keep(text: str) -> str:
        kept.append(text)
        return f"\x00{len(kept) - 1}\x00"

    def as_typed(literal: str) -> str:
        try:
            return shlex.quote(ast.literal_eval(literal))
        except (ValueError, SyntaxError):  # pragma: no cover - repr's own form
            return literal

    def mark(m: re.Match) -> str:
        if m["name"] is not None:
            return "--prompt-name " + keep(as_typed(m["name"]))
        if m["prompt"] is not None:
            return "--prompt " + keep(m["prompt"])
        return keep(m[0])  # a quoted prompt, or a typed value

    values = sorted({v for v in typed if v}, key=len, reverse=True)
    # one pass over the message, leftmost match first: nothing is looked for
    # inside what is already marked (a path that holds "prompt='x'", a prompt
    # that holds "prompt_name='y'")
    marks = re.compile(
        "|".join(
            [
                # a typed value first: a path that holds "prompt='x'" is a path
                *(
                    ("(?<!\\w)" if re.match(r"\w", v) else "")
                    + re.escape(v)
                    + ("(?![\\w=])" if re.search(r"\w$", v) else "")
                    for v in values
                ),
                rf"\bprompt_name=(?P<name>{_STR_LITERAL})",
                rf"\bprompt=(?P<prompt>{_STR_LITERAL})",
                rf"(?<=prompt )(?:{_STR_LITERAL})",
                rf"(?<=prompt \()(?:{_STR_LITERAL})",
            ]
        )
    )
    try:
        message = marks.sub(mark, message)
        for pattern, replacement in _CLI_WORDS:
            message = pattern.sub(replacement, message)
        return re.sub("\x00(\\d+)\x00", lambda m: kept[int(m[1])], message)
    except Exception:  # noqa: BLE001 - a message is never lost to its rewording
        return original


def _fail(exc: BaseException, status: int, typed: Sequence[str] = ()) -> int:
    print(f"skbert: error: {_in_cli_words(_first_line(exc), typed)}", file=sys.stderr)
    return status
