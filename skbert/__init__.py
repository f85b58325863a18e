"""skbert: BERT embeddings as scikit-learn transformers."""

from .sentence import BertSentenceVectorizer
from .word import BertWordVectorizer

__version__ = "0.1.0"

__all__ = ["BertSentenceVectorizer", "BertWordVectorizer", "__version__"]
