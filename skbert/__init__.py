"""skbert: BERT embeddings as scikit-learn transformers."""

from .sentence import BertSentenceVectorizer

__version__ = "0.1.0"

__all__ = ["BertSentenceVectorizer", "__version__"]
