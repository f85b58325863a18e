"""Parameter and input checks, with the error texts users see. No torch import."""

from __future__ import annotations

import numbers
import os
import sys
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

__all__ = [
    "invalid_parameter",
    "Options",
    "check_params",
    "check_texts",
    "check_unicode",
    "warn_user",
]


POOLINGS = ("mean", "max", "mean_max", "max_mean", "cls", "last", "mean_sqrt_len")
LAYER_COMBINES = ("mean", "sum", "concat")
SUBWORD_POOLINGS = ("mean", "first", "last", "sum", "max", "first_last")
DTYPES = ("float32", "bfloat16", "float16")


def _package_dir(module_file: str) -> str:
    return os.path.dirname(os.path.abspath(module_file)) + os.sep


def _library_dirs() -> tuple[str, ...]:
    import joblib
    import sklearn

    return tuple(
        _package_dir(m.__file__) for m in (sys.modules[__package__], sklearn, joblib)
    )


def warn_if_duplicate_labels(index: Any) -> None:
    """Warn that a pandas index with repeated labels gives rows of different
    texts the same ``sample`` value in a long table of tokens or words."""
    if index is None or getattr(index, "is_unique", True):
        return
    repeated = index[index.duplicated()].unique()
    first = repeated[0].item() if hasattr(repeated[0], "item") else repeated[0]
    warn_user(
        f"The index of X repeats {len(repeated)} label(s), as {first!r}: the "
        "rows of different texts share a 'sample' value. Reset it "
        "(X.reset_index(drop=True)) to tell them apart."
    )


def warn_user(message: str, category: type[Warning] = UserWarning) -> None:
    """Warn from the user's line: the first caller outside skbert, sklearn and
    joblib (through which a ``Pipeline`` calls its steps).

    scikit-learn wraps ``transform`` and ``fit_transform`` (``set_output``), so
    a fixed ``stacklevel`` would name a line of sklearn. Python's default filter
    shows a warning once per text and line, so every call through that one
    line would then hide the warnings of later calls with the same text.
    """
    inside = _library_dirs()
    frame, level = sys._getframe(1), 2
    while frame is not None and frame.f_code.co_filename.startswith(inside):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


_invalid_parameter_error: type | None = None


def _invalid_parameter_class() -> type:
    """skbert's ``InvalidParameterError``, made at first use: a subclass of
    scikit-learn's own (a ValueError and a TypeError), so that code catching it
    for scikit-learn estimators catches it here too. Made lazily because
    importing scikit-learn takes seconds, and ``skbert --help`` imports this
    module."""
    global _invalid_parameter_error
    if _invalid_parameter_error is None:
        from sklearn.utils._param_validation import (
            InvalidParameterError as SklearnInvalidParameterError,
        )

        _invalid_parameter_error = type(
            "InvalidParameterError",
            (SklearnInvalidParameterError,),
            {
                "__module__": __name__,
                "__doc__": "A parameter has a wrong type or value (scikit-learn's "
                "InvalidParameterError, a ValueError and a TypeError).",
            },
        )
    return _invalid_parameter_error


def __getattr__(name: str) -> Any:
    if name == "InvalidParameterError":
        return _invalid_parameter_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def invalid_parameter(message: str) -> Exception:
    """An ``InvalidParameterError`` with ``message``, to raise."""
    return _invalid_parameter_class()(message)


class Options:
    """A closed set of allowed string values for one parameter."""

    def __init__(self, *values: str):
        self.values = tuple(values)

    def describe(self) -> str:
        return "a str among {" + ", ".join(repr(v) for v in sorted(self.values)) + "}"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str) and value in self.values


class Interval:
    """An int in ``[low, high]`` (``high=None`` means unbounded), or ``None``."""

    def __init__(self, low: int, high: int | None = None, allow_none: bool = False):
        self.low, self.high, self.allow_none = low, high, allow_none

    def describe(self) -> str:
        top = "inf" if self.high is None else str(self.high)
        text = f"an int in the range [{self.low}, {top}]"
        return text + " or None" if self.allow_none else text

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.allow_none
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            return False
        return value >= self.low and (self.high is None or value <= self.high)


class Boolean:
    def describe(self) -> str:
        return "a bool"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, bool | np.bool_)


class ModelSpec:
    def describe(self) -> str:
        return (
            "None (the bundled model), a Hugging Face hub id or a local directory "
            "(a non-empty str or os.PathLike)"
        )

    def accepts(self, value: Any) -> bool:
        # "" would be the current directory, whatever it holds
        if isinstance(value, str):
            return bool(value.strip())
        return value is None or isinstance(value, os.PathLike)


class LayerSpec:
    def describe(self) -> str:
        return (
            "'auto', 'all', an int, or a non-empty list of ints (or tuple, range "
            "or 1-D integer array)"
        )

    def accepts(self, value: Any) -> bool:
        if isinstance(value, str):
            return value in ("auto", "all")
        if _is_int(value):
            return True
        if isinstance(value, np.ndarray) and value.ndim != 1:
            return False
        if isinstance(value, list | tuple | range | np.ndarray) and len(value) > 0:
            return all(_is_int(v) for v in value)
        return False


class DeviceSpec:
    def describe(self) -> str:
        return "a str or a torch.device"

    def accepts(self, value: Any) -> bool:
        import torch

        return isinstance(value, str | torch.device)


class AnyStr:
    def describe(self) -> str:
        return "a str"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str)


class CacheSpec:
    # strings that mean "no cache" or nothing: never taken for a directory name
    NOT_PATHS = ("", "none", "null", "false", "off", "no")

    def describe(self) -> str:
        return (
            "'memory', None (no cache), or a directory (a non-empty str or "
            "os.PathLike; not a word such as 'none' or 'Memory')"
        )

    def accepts(self, value: Any) -> bool:
        if value is None or isinstance(value, os.PathLike):
            return True
        if not isinstance(value, str):
            return False
        word = value.strip().lower()
        # "Memory" or "memory " would be a directory of that name on disk
        return word not in self.NOT_PATHS and (word != "memory" or value == "memory")


class ViewsSpec:
    def describe(self) -> str:
        return "None, a list of dicts, or a dict of dicts"

    def accepts(self, value: Any) -> bool:
        return value is None or isinstance(value, list | tuple | dict)


class NoneValue:
    def describe(self) -> str:
        return "None"

    def accepts(self, value: Any) -> bool:
        return value is None


class ProgressSpec:
    def describe(self) -> str:
        return "a bool or None"

    def accepts(self, value: Any) -> bool:
        return value is None or isinstance(value, bool | np.bool_)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_params(estimator: Any, constraints: dict[str, list]) -> None:
    """Check every parameter of ``estimator`` against ``constraints``.

    Raises :class:`InvalidParameterError` (both a ``ValueError`` and a
    ``TypeError``) in scikit-learn's wording, naming the parameter, the
    allowed values and the value received.
    """
    name = type(estimator).__name__
    params = estimator.get_params(deep=False)
    for param, allowed in constraints.items():
        value = params[param]
        if any(c.accepts(value) for c in allowed):
            continue
        described = " or ".join(c.describe() for c in allowed)
        raise invalid_parameter(
            f"The {param!r} parameter of {name} must be {described}. "
            f"Got {value!r} instead."
        )


def normalize_layers(
    layers: int | list[int], n_hidden_states: int, name: str = "layers"
) -> list[int]:
    """Turn user layer indices into non-negative indices into ``hidden_states``.

    ``hidden_states`` has ``n_hidden_states = num_layers + 1`` entries: index 0
    is the embedding output, 1..num_layers the encoder layers; negative
    indices count from the top (-1 is the last layer). ``name`` is what the
    error message calls the setting (a view's ``views['deep']['layers']``).
    """
    requested = [int(layers)] if _is_int(layers) else [int(i) for i in layers]
    resolved = []
    for index in requested:
        if not -n_hidden_states <= index < n_hidden_states:
            raise ValueError(
                f"{name}={requested!r} is out of range for a model with "
                f"{n_hidden_states} hidden-state outputs; use indices in "
                f"[{-n_hidden_states}, {n_hidden_states - 1}]."
            )
        if index % n_hidden_states in resolved:
            earlier = requested[resolved.index(index % n_hidden_states)]
            same = (
                ""
                if earlier == index
                else f" ({earlier} and {index} are the same one of "
                f"{n_hidden_states} hidden states)"
            )
            raise ValueError(
                f"{name}={requested!r} names hidden state {index % n_hidden_states} "
                f"twice{same}; list each layer once."
            )
        resolved.append(index % n_hidden_states)
    return resolved


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        import pandas as pd

        if value is pd.NA or value is pd.NaT:
            return True
    except ImportError:  # pragma: no cover - pandas is a dependency
        pass
    return isinstance(value, float | np.floating) and np.isnan(value)


def missing_message(positions: list[int], what: str, remedy: str) -> str:
    """The error text for missing values: their count and first positions."""
    first = ", ".join(str(i) for i in positions[:5])
    more = ", ..." if len(positions) > 5 else ""
    return (
        f"{what} contains {len(positions)} missing {{}} at position(s) {first}{more}; "
        f"drop or fill them first{remedy}"
    )


def check_unicode(texts: list, what: str) -> None:
    """Refuse a text the tokenizer cannot read: one holding a lone surrogate
    (from a decode with ``errors="surrogateescape"``, or a JSON ``\\ud83d``
    escape without its pair). The tokenizer would refuse it with a TypeError
    that names neither the text nor the cause. ``what`` names the items in
    messages, e.g. "Element {} of X"."""
    for i, text in enumerate(texts):
        if isinstance(text, str) and not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ValueError(
                    f"{what.format(i)} is not valid Unicode: character "
                    f"{exc.start} is the lone surrogate {text[exc.start]!r}, "
                    "which no tokenizer reads (left by a decode with "
                    "errors='surrogateescape', or a JSON escape without its "
                    "pair); repair the text first, e.g. with "
                    "text.encode('utf-8', 'replace').decode('utf-8')."
                ) from None


def as_pandas_frame(X: Any) -> Any:
    """A polars DataFrame (what scikit-learn passes from a polars table) or
    Series as a pandas one, so every check reads it as pandas' (a polars
    Series of lists holds its items as Series); anything else as it is.
    Nulls stay None."""
    if not type(X).__module__.startswith("polars"):
        return X
    import pandas as pd

    if not hasattr(X, "get_column"):  # a Series (a LazyFrame is refused later)
        if not hasattr(X, "to_list"):
            return X
        return pd.Series(X.to_list(), dtype=object, name=X.name)
    return pd.DataFrame(
        {
            name: pd.Series(X.get_column(name).to_list(), dtype=object)
            for name in X.columns
        },
        index=pd.RangeIndex(X.shape[0]),
    )


def pyarrow_items(X: Any) -> list:
    """The items of a pyarrow Array or ChunkedArray; a Table or RecordBatch
    is refused with the way to select its column."""
    if hasattr(X, "column_names"):
        raise ValueError(
            f"Expected a sequence of texts, got a pyarrow {type(X).__name__} with "
            f"columns {X.column_names!r}; select the text column, e.g. "
            "X.column('text'), or convert it with X.to_pandas()."
        )
    return X.to_pylist()


def warn_if_not_finite(X: np.ndarray, dtype: Any, what: str = "output rows") -> None:
    """Warn, naming their count and the dtype, when rows of ``X`` (``what``)
    hold NaN or infinite values (a model overflowing float16, say)."""
    finite = np.isfinite(X).all(axis=1) if X.size else np.ones(len(X), bool)
    n_bad = len(X) - int(finite.sum())
    if n_bad:
        name = str(dtype).removeprefix("torch.")
        advice = (
            "float16 holds values up to 65504 only: use dtype='bfloat16' or 'float32'"
            if name == "float16"
            else "check the model's weights"
        )
        warn_user(
            f"{n_bad} of {len(X)} {what} hold NaN or infinite values: the "
            f"model's states overflowed or were not finite in {name}; {advice}."
        )


def reject_mapping(X: Any, what: str = "X") -> None:
    """Refuse a dict-like X: iterating it gives its keys, not its texts."""
    if isinstance(X, Mapping):
        raise TypeError(
            f"{what} is a {type(X).__name__}; iterating it gives its keys, not its "
            f"values. Pass list({what}.values()) for the values, or "
            f"pd.Series({what}) to keep the keys as the index."
        )


def _describe(value: Any) -> str:
    return f"{type(value).__name__} ({value!r})"


def check_texts(X: Any, *, handle_missing: str = "error") -> tuple[list[str], Any]:
    """Validate raw text input and return it as a list of ``str``.

    Accepts a list, tuple, generator, 1-D ndarray or pandas Series of
    ``str``, or a 2-D array/DataFrame with exactly one column (as
    ``ColumnTransformer`` passes with ``["text"]``). Returns the texts and the
    pandas index of the input, if it had one.

    Missing values (None, NaN, pd.NA) raise ``ValueError`` naming their count
    and first positions, unless ``handle_missing="empty"``, which embeds them
    as ``""``. Other non-``str`` items raise ``TypeError`` naming the position.
    """
    if isinstance(X, str | bytes):
        raise ValueError(  # as in scikit-learn's CountVectorizer
            "Iterable over raw text documents expected, string object received. "
            "Wrap a single text in a list."
        )
    reject_mapping(X)
    X = as_pandas_frame(X)
    index = getattr(X, "index", None) if hasattr(X, "iloc") else None
    if hasattr(X, "iloc") and getattr(X, "ndim", 1) == 2:  # DataFrame
        if X.shape[1] != 1:
            raise ValueError(
                f"Expected one column of texts, got a DataFrame with {X.shape[1]} "
                f"columns {list(X.columns)!r}; select the text column, e.g. "
                "X['text'], or use a ColumnTransformer."
            )
        items = X.iloc[:, 0].tolist()
    elif isinstance(X, np.ndarray):
        if X.ndim == 2:
            if X.shape[1] != 1:
                raise ValueError(
                    f"Expected one column of texts, got a 2-D array of shape "
                    f"{X.shape}; pass a 1-D sequence of texts or a single column."
                )
            items = X[:, 0].tolist()
        elif X.ndim == 1:
            items = X.tolist()
        else:
            raise ValueError(
                f"Expected a 1-D sequence of texts, got an array of shape {X.shape}."
            )
    elif hasattr(X, "tolist") and hasattr(X, "iloc"):  # Series
        items = X.tolist()
    elif hasattr(X, "to_pylist"):  # a pyarrow Array or ChunkedArray
        items = pyarrow_items(X)
    elif isinstance(X, Iterable):
        items = list(X)
    else:
        raise TypeError(
            "Iterable over raw text documents expected, got "
            f"{type(X).__name__} object instead."
        )

    if all(isinstance(item, str) for item in items):  # the common case
        check_unicode(items, "Element {} of X")
        return items, index
    # one-column rows, e.g. from a list of lists: their one item is the text
    items = [
        item[0]
        if isinstance(item, list | tuple)
        and len(item) == 1
        or isinstance(item, np.ndarray)
        and item.shape == (1,)
        else item
        for item in items
    ]
    missing = [i for i, item in enumerate(items) if _is_missing(item)]
    if missing and handle_missing == "error":
        message = missing_message(
            missing,
            "X",
            ", e.g. X.fillna(''), or pass handle_missing='empty' to embed them as ''.",
        )
        raise ValueError(message.format("text(s) (None, NaN or pd.NA)"))
    missing_set = set(missing)
    texts = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            texts.append(item)
        elif i in missing_set:  # handle_missing == "empty"
            texts.append("")
        elif (
            isinstance(item, tuple | list)
            and len(item) == 2
            and all(isinstance(part, str) for part in item)
        ):
            raise TypeError(
                f"Element {i} of X is a pair of texts or a list of two words, "
                "expected str; pass pairs=True to encode (text_a, text_b) pairs as "
                "one input, or join the words into one text (' '.join(words))."
            )
        elif isinstance(item, tuple | list | np.ndarray) and all(
            isinstance(part, str) for part in item
        ):
            raise TypeError(
                f"Element {i} of X is a list of {len(item)} words, expected str; "
                "join them into one text first (' '.join(words))."
            )
        elif isinstance(item, bytes | bytearray):
            raise TypeError(
                f"Element {i} of X is {_describe(item)[:80]}, expected str; decode "
                "it first, e.g. item.decode('utf-8')."
            )
        else:
            raise TypeError(
                f"Element {i} of X is {_describe(item)}, expected str; convert it "
                "with str() or drop it first."
            )
    check_unicode(texts, "Element {} of X")
    return texts, index


def check_pairs(
    X: Any, *, handle_missing: str = "error"
) -> tuple[list[str], list[str], Any]:
    """Validate sentence pairs and return the first texts, the second texts
    and the pandas index of the input, if it had one.

    Accepts an iterable of ``(text_a, text_b)`` (tuples, lists or 2-element
    arrays), a DataFrame with exactly two text columns (or one column of
    pairs), or a 2-D array with two columns. Missing texts follow
    ``handle_missing`` as in :func:`check_texts`.
    """
    if isinstance(X, str | bytes):
        raise ValueError(  # as in scikit-learn's CountVectorizer
            "Iterable over (text_a, text_b) pairs expected, string object received."
        )
    reject_mapping(X)
    X = as_pandas_frame(X)
    index = X.index if hasattr(X, "iloc") else None
    if (
        hasattr(X, "iloc")
        and getattr(X, "ndim", 1) == 2
        and X.shape[1] == 1
        and isinstance(
            next((v for v in X.iloc[:, 0] if not _is_missing(v)), None),
            tuple | list | np.ndarray,
        )
    ):
        X = X.iloc[:, 0]  # one column of (text_a, text_b) pairs, as a Series
    if hasattr(X, "iloc") and getattr(X, "ndim", 1) == 2:
        if X.shape[1] != 2:
            raise ValueError(
                f"pairs=True expects two text columns, got a DataFrame with "
                f"{X.shape[1]} columns {list(X.columns)!r}; select the two text "
                "columns, e.g. X[['sentence_a', 'sentence_b']]."
            )
        rows = list(zip(X.iloc[:, 0].tolist(), X.iloc[:, 1].tolist(), strict=True))
    elif isinstance(X, np.ndarray) and X.ndim == 2:
        if X.shape[1] != 2:
            raise ValueError(
                f"pairs=True expects two text columns, got an array of shape {X.shape}."
            )
        rows = [tuple(row) for row in X.tolist()]
    elif isinstance(X, Iterable):
        rows = X.tolist() if hasattr(X, "iloc") else list(X)
    else:
        raise TypeError(
            "Iterable over (text_a, text_b) pairs expected, got "
            f"{type(X).__name__} object instead."
        )
    firsts, seconds, missing = [], [], []
    for i, row in enumerate(rows):
        if isinstance(row, str) or not isinstance(row, tuple | list | np.ndarray):
            raise TypeError(
                f"Element {i} of X is {_describe(row)}, expected a pair "
                "(text_a, text_b)."
            )
        if len(row) != 2:
            raise ValueError(
                f"Element {i} of X has {len(row)} items, expected a pair "
                "(text_a, text_b)."
            )
        pair = []
        for part in row:
            if _is_missing(part):
                if not missing or missing[-1] != i:
                    missing.append(i)
                pair.append("")
            elif isinstance(part, str):
                pair.append(part)
            else:
                raise TypeError(
                    f"Element {i} of X holds {_describe(part)}, expected two str."
                )
        firsts.append(pair[0])
        seconds.append(pair[1])
    if missing and handle_missing == "error":
        message = missing_message(
            missing,
            "X",
            ", or pass handle_missing='empty' to embed them as ''.",
        )
        raise ValueError(message.format("pair(s) (None, NaN or pd.NA in a text)"))
    check_unicode(firsts, "The first text of element {} of X")
    check_unicode(seconds, "The second text of element {} of X")
    return firsts, seconds, index
