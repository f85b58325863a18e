"""skbert: BERT embeddings as scikit-learn transformers."""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

__all__ = ["BertSentenceVectorizer", "BertWordVectorizer", "__version__"]

if TYPE_CHECKING:
    from .sentence import BertSentenceVectorizer
    from .word import BertWordVectorizer

# the estimators import torch (seconds): loaded at first use, so that
# ``skbert --help`` and ``--version`` answer at once
_LAZY = {
    "BertSentenceVectorizer": "sentence",
    "BertWordVectorizer": "word",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
