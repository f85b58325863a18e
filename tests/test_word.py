"""BertWordVectorizer, and the sub-word pooling and windows it is built on.

Expected vectors are computed by hand from ``model(...,
output_hidden_states=True).hidden_states`` of a model loaded straight from
transformers, never from skbert's own engine.
"""

import pickle
import warnings
from functools import cache

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from torch.utils._python_dispatch import TorchDispatchMode

import skbert._encode
from skbert import BertSentenceVectorizer, BertWordVectorizer
from skbert._encode import centre_uncovered, window_around, windows_for_words
from skbert._pooling import pool_subwords

BANK_TEXT = (
    "After stealing money from the bank vault, the bank robber was seen "
    "fishing on the Mississippi river bank."
)
TUTORIAL_TEXT = "Here is the sentence I want embeddings for."


# -- hand computations ----------------------------------------------------------


@cache
def _reference(path):
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    return tokenizer, model


def hidden_states(path, text=None, input_ids=None):
    """All hidden states of one sequence: tuple of (seq_len, hidden) tensors."""
    tokenizer, model = _reference(str(path))
    if input_ids is None:
        inputs = tokenizer(text, return_tensors="pt")
    else:
        ids = torch.tensor([input_ids])
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    with torch.no_grad():
        states = model(**inputs, output_hidden_states=True).hidden_states
    return tuple(s[0] for s in states)


def tokens_of(path, text):
    tokenizer, _ = _reference(str(path))
    return tokenizer.convert_ids_to_tokens(tokenizer(text)["input_ids"])


def last_two_summed(path, text=None, input_ids=None):
    states = hidden_states(path, text, input_ids)
    return (states[-1] + states[-2]).numpy()


def hand_pool(pieces, how):
    return {
        "mean": pieces.mean(axis=0),
        "sum": pieces.sum(axis=0),
        "max": pieces.max(axis=0),
        "first": pieces[0],
        "last": pieces[-1],
        "first_last": np.concatenate([pieces[0], pieces[-1]]),
    }[how]


def unit(X):
    return X / np.linalg.norm(X, axis=-1, keepdims=True)


# -- fitted vectorizers, shared by the tests of a module --------------------------


@pytest.fixture(scope="module")
def tiny(tiny_bert):
    return BertWordVectorizer(model=str(tiny_bert), device="cpu").fit()


@pytest.fixture(scope="module")
def bundled(bundled_model):
    return BertWordVectorizer(device="cpu", progress_bar=False).fit()


# -- pool_subwords: hand-built tensors ---------------------------------------------


@pytest.fixture
def token_vectors():
    # batch 1, seq_len 6, hidden 2; word 0 = positions 1, 2, 4; word 1 has no
    # token; word 2 = position 3; positions 0 and 5 belong to no word
    embeddings = torch.tensor(
        [[[9.0, 9.0], [1.0, -2.0], [3.0, 4.0], [7.0, 0.5], [-1.0, 6.0], [9.0, 9.0]]]
    )
    word_ids = torch.tensor([[-1, 0, 0, 2, 0, -1]])
    return embeddings, word_ids


@pytest.mark.parametrize(
    "how, expected",
    [
        ("mean", [[1.0, 8 / 3], [0.0, 0.0], [7.0, 0.5]]),
        ("sum", [[3.0, 8.0], [0.0, 0.0], [7.0, 0.5]]),
        ("max", [[3.0, 6.0], [0.0, 0.0], [7.0, 0.5]]),
        ("first", [[1.0, -2.0], [0.0, 0.0], [7.0, 0.5]]),
        ("last", [[-1.0, 6.0], [0.0, 0.0], [7.0, 0.5]]),
        (
            "first_last",
            [[1.0, -2.0, -1.0, 6.0], [0.0, 0.0, 0.0, 0.0], [7.0, 0.5, 7.0, 0.5]],
        ),
    ],
)
def test_pool_subwords_by_hand(token_vectors, how, expected):
    embeddings, word_ids = token_vectors
    before = embeddings.clone(), word_ids.clone()
    pooled = pool_subwords(embeddings, word_ids, how)
    torch.testing.assert_close(pooled, torch.tensor(expected))
    # flat (n_tokens, hidden) input gives the same, and inputs are untouched
    flat = pool_subwords(embeddings.reshape(6, 2), word_ids.reshape(6), how)
    torch.testing.assert_close(flat, pooled)
    assert torch.equal(embeddings, before[0]) and torch.equal(word_ids, before[1])


class _Ops(TorchDispatchMode):
    """Record every aten op (with its arguments) that runs inside."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls.append((func.overloadpacket.__name__, args))
        return func(*args, **(kwargs or {}))


def _waits_for_the_device(name, args):
    """Ops that make a GPU sync with the host: their output size or a value
    must be read back (nonzero, item, bincount, boolean-mask indexing)."""
    if name in ("nonzero", "_local_scalar_dense", "bincount", "masked_select"):
        return True
    indices = args[1] if name == "index" else ()
    return any(
        isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices or ()
    )


@pytest.mark.parametrize("how", ["mean", "sum", "max", "first", "last", "first_last"])
def test_pool_subwords_never_waits_for_the_device(token_vectors, how):
    # on a GPU each of these ops would stall the host once per batch
    embeddings, word_ids = token_vectors
    with _Ops() as ops:
        pool_subwords(embeddings, word_ids, how, n_words=3)
    assert ops.calls
    assert [name for name, args in ops.calls if _waits_for_the_device(name, args)] == []


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("how", ["mean", "sum", "max", "first", "last", "first_last"])
def test_pool_subwords_in_half_precision_and_without_tokens(token_vectors, how, dtype):
    embeddings, word_ids = token_vectors
    pooled = pool_subwords(embeddings.to(dtype), word_ids, how, n_words=4)
    expected = pool_subwords(embeddings, word_ids, how, n_words=4)
    torch.testing.assert_close(pooled.float(), expected, atol=1e-2, rtol=1e-2)
    # no token at all, or tokens of no word only: zeros, never NaN
    none = pool_subwords(embeddings[:, :0].to(dtype), word_ids[:, :0], how, n_words=2)
    outside = pool_subwords(embeddings.to(dtype), torch.full((1, 6), -1), how, 2)
    for pooled in (none, outside):
        assert pooled.dtype == dtype and pooled.shape[0] == 2
        assert pooled.eq(0).all()


@pytest.mark.parametrize("how", ["mean", "sum", "max", "first", "last", "first_last"])
def test_pool_subwords_refuses_a_word_id_beyond_n_words(token_vectors, how):
    embeddings, word_ids = token_vectors  # ids up to 2
    with pytest.raises((IndexError, RuntimeError)):
        pool_subwords(embeddings, word_ids, how, n_words=2)


def test_pool_subwords_n_words_and_errors(token_vectors):
    embeddings, word_ids = token_vectors
    assert pool_subwords(embeddings, word_ids, "mean", n_words=5).shape == (5, 2)
    assert torch.isfinite(pool_subwords(embeddings, word_ids, "max", 5)).all()
    with pytest.raises(ValueError, match="how must be one of"):
        pool_subwords(embeddings, word_ids, "avg")
    with pytest.raises(ValueError, match="word_ids has 3 entries"):
        pool_subwords(embeddings, word_ids[:, :3], "mean")


def test_windows_cover_every_word_with_context():
    first = np.arange(0, 100, dtype=np.int64)
    starts, window_of_word = windows_for_words(100, first, first + 1, 20)
    assert starts[0] == 0 and starts.max() == 80
    for k, w in enumerate(window_of_word):
        assert starts[w] <= k < starts[w] + 20
        # most context on the shorter side among the windows that hold it
        best = max(
            min(k - s, s + 20 - k - 1) for s in starts if s <= k and k + 1 <= s + 20
        )
        assert min(k - starts[w], starts[w] + 20 - k - 1) == best
    # a word longer than half a window gets a window centred on it
    starts, window_of_word = windows_for_words(
        100, np.array([5, 33]), np.array([6, 48]), 20
    )
    s = starts[window_of_word[1]]
    assert s <= 33 and 48 <= s + 20
    assert window_around(100, 33, 48, 20) == 31  # 2 tokens left, 3 right
    assert window_around(10, 3, 4, 20) == 0
    assert window_around(100, 98, 100, 20) == 80


def _windows_by_brute_force(n_tokens, first, stop, width):
    """Every word against every window (the former implementation)."""
    stride = max(width // 2, 1)
    starts = np.append(np.arange(0, n_tokens - width, stride), n_tokens - width)
    left = first[:, None] - starts[None, :]
    right = starts[None, :] + width - stop[:, None]
    context = np.where((left >= 0) & (right >= 0), np.minimum(left, right), -1)
    window_of_word = context.argmax(axis=1)
    uncovered = np.flatnonzero(context.max(axis=1, initial=-1) < 0)
    return centre_uncovered(
        n_tokens, first, stop, width, starts, window_of_word, uncovered
    )


@pytest.mark.parametrize("seed", range(20))
def test_windows_equal_every_word_against_every_window(seed):
    rng = np.random.default_rng(seed)
    width = int(rng.integers(2, 40))
    n_tokens = int(rng.integers(width + 1, 400))
    # words in order, of 1 to width tokens, some longer than half a window
    lengths = rng.integers(1, width + 1, size=n_tokens)
    stops = np.cumsum(lengths)
    stops = stops[stops <= n_tokens]
    first = np.concatenate([[0], stops[:-1]]).astype(np.int64)
    got = windows_for_words(n_tokens, first, stops, width)
    expected = _windows_by_brute_force(n_tokens, first, stops, width)
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])


def test_windows_of_a_book_take_memory_linear_in_its_words():
    import tracemalloc

    n_tokens = 200_000  # a book: (words x windows) int64 would be 2.5 GB
    first = np.arange(n_tokens, dtype=np.int64)
    tracemalloc.start()
    starts, window_of_word = windows_for_words(n_tokens, first, first + 1, 254)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 200 * n_tokens  # a few int64 arrays per word, not 12 KB
    assert len(window_of_word) == n_tokens and len(starts) == 1574


# -- correctness against hidden_states ----------------------------------------------


def test_bank_experiment_reproduces_the_tutorial(bundled, bundled_model):
    tokens = tokens_of(bundled_model, BANK_TEXT)
    assert [tokens[i] for i in (6, 10, 19)] == ["bank"] * 3
    states = hidden_states(bundled_model, BANK_TEXT)
    summed = torch.stack(states[-4:]).sum(dim=0).numpy()  # sum of the last four
    expected = summed[[6, 10, 19]]

    starts = [i for i in range(len(BANK_TEXT)) if BANK_TEXT.startswith("bank", i)]
    X = bundled.transform([(BANK_TEXT, s, s + 4) for s in starts])
    assert bundled.layers_ == [3, 4, 5, 6]
    assert X.shape == (3, 384) and X.dtype == np.float32
    np.testing.assert_allclose(X, expected, atol=1e-5)

    # the same three occurrences, marked up
    marked = [BANK_TEXT[:s] + "[bank]" + BANK_TEXT[s + 4 :] for s in starts]
    np.testing.assert_allclose(bundled.transform(marked), expected, atol=1e-5)

    cos = unit(X) @ unit(X).T
    same, different = cos[0, 1], cos[1, 2]  # vault~robber, robber~river
    assert same > different


def test_embeddings_mean_is_the_mean_of_its_four_pieces(bundled, bundled_model):
    tokens = tokens_of(bundled_model, TUTORIAL_TEXT)
    assert tokens[7:11] == ["em", "##bed", "##ding", "##s"]
    states = hidden_states(bundled_model, TUTORIAL_TEXT)
    pieces = torch.stack(states[-4:]).sum(dim=0).numpy()[7:11]
    start = TUTORIAL_TEXT.index("embeddings")
    X = bundled.transform([(TUTORIAL_TEXT, start, start + len("embeddings"))])
    np.testing.assert_allclose(X[0], pieces.mean(axis=0), atol=1e-5)
    assert not np.allclose(X[0], pieces[0], atol=1e-3)


@pytest.mark.parametrize("how", ["mean", "first", "last", "sum", "max", "first_last"])
def test_each_subword_pooling_against_hidden_states(tiny_bert, how):
    text = "here is the sentence i want embeddings for"
    assert tokens_of(tiny_bert, text)[7:11] == ["em", "##bed", "##ding", "##s"]
    pieces = last_two_summed(tiny_bert, text)[7:11]
    vectorizer = BertWordVectorizer(
        model=str(tiny_bert), subword_pooling=how, device="cpu"
    ).fit()
    assert vectorizer.layers_ == [1, 2]  # "auto" clamps to the 2 layers there are
    start = text.index("embeddings")
    X = vectorizer.transform(
        [
            (text, start, start + 10),
            (text.split(), 6),
            "here is the sentence i want [embeddings] for",
        ]
    )
    width = 64 if how == "first_last" else 32
    assert X.shape == (3, width) == (3, vectorizer.get_feature_names_out().size)
    for row in X:
        np.testing.assert_allclose(row, hand_pool(pieces, how), atol=1e-5)


def test_layers_and_layer_combine(tiny_bert):
    text = "the cat sat on the bank"  # "cat" is token 2
    states = hidden_states(tiny_bert, text)
    sample = [(text, 4, 7)]
    for layers, combine, expected in [
        (0, "sum", states[0][2]),  # the non-contextual input embeddings
        ([-1], "sum", states[2][2]),
        ([0, 2], "concat", torch.cat([states[0][2], states[2][2]])),
        ("auto", "mean", (states[1][2] + states[2][2]) / 2),
    ]:
        vectorizer = BertWordVectorizer(
            model=str(tiny_bert), layers=layers, layer_combine=combine, device="cpu"
        ).fit()
        np.testing.assert_allclose(
            vectorizer.transform(sample)[0], expected.numpy(), atol=1e-5
        )


def test_distilbert_without_token_type_ids(tiny_distilbert):
    text = "the bank of the river"
    states = hidden_states(tiny_distilbert, text)
    expected = (states[1] + states[2])[2].numpy()
    vectorizer = BertWordVectorizer(model=str(tiny_distilbert), device="cpu").fit()
    np.testing.assert_allclose(
        vectorizer.transform([(text, 4, 8)])[0], expected, atol=1e-5
    )


# -- forms of input -------------------------------------------------------------


def test_every_form_of_input_gives_the_same_vector(tiny, tiny_bert):
    text = "the new york bank of the river"
    tokens = text.split()
    expected = last_two_summed(tiny_bert, text)[4]  # "bank"
    samples = [
        (text, 13, 17),
        [text, 13, 17],
        (tokens, 3),
        (np.array(tokens), np.int64(3)),
        "the new york [bank] of the river",
        {"text": text, "start": 13, "end": 17},
        {"tokens": tokens, "index": 3},
    ]
    X = tiny.transform(samples)
    np.testing.assert_allclose(X, np.tile(expected, (len(samples), 1)), atol=1e-5)

    frames = [
        pd.DataFrame({"text": [text], "start": [13], "end": [17], "other": ["x"]}),
        pd.DataFrame({"tokens": [tokens], "index": [3]}),
        pd.DataFrame({"sentence": [text], "a": [13], "b": [17]}),  # by position
        pd.DataFrame({"words": [tokens], "i": [3]}),
        pd.DataFrame({"marked": ["the new york [bank] of the river"]}),
        pd.DataFrame({"text": ["the new york [bank] of the river"]}),  # one column
        pd.DataFrame({"text": [text], "start": [13.0], "end": [17.0]}),  # float ints
    ]
    for frame in frames:
        np.testing.assert_allclose(tiny.transform(frame)[0], expected, atol=1e-5)
    as_array = np.array([[text, 13, 17]], dtype=object)
    np.testing.assert_allclose(tiny.transform(as_array)[0], expected, atol=1e-5)
    series = pd.Series(["the new york [bank] of the river"], index=["a"])
    np.testing.assert_allclose(tiny.transform(series)[0], expected, atol=1e-5)


def test_a_span_may_cover_several_words(tiny, tiny_bert):
    text = "i want new york city"
    states = last_two_summed(tiny_bert, text)
    assert tokens_of(tiny_bert, text)[3:5] == ["new", "york"]
    X = tiny.transform([(text, 7, 15), (text.split(), 2), "i want [new york] city"])
    np.testing.assert_allclose(X[0], states[3:5].mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(X[2], X[0], atol=1e-6)
    np.testing.assert_allclose(X[1], states[3], atol=1e-5)
    # a span that cuts into a word takes the whole pieces it overlaps (warned
    # about once per loaded model: see the next test)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cut = tiny.transform([(text, 8, 14)])
    np.testing.assert_allclose(cut[0], X[0], atol=1e-6)


def test_a_span_that_cuts_into_a_token_is_warned_about(tiny_bert, tmp_path):
    import shutil

    # a model of its own: the warning comes once per loaded model
    copy = shutil.copytree(tiny_bert, tmp_path / "copy")
    tiny = BertWordVectorizer(model=copy).fit()
    text = "the robber at the bank"  # "robber" is one token
    message = (
        r"1 of 2 samples cut into a token, as sample 1: the span \(4, 7\) 'rob' "
        r"lies inside 'robber'\. Each is embedded as the whole tokens it touches"
    )
    with pytest.warns(UserWarning, match=message):
        X = tiny.transform([(text, 4, 10), (text, 4, 7)])
    np.testing.assert_array_equal(X[0], X[1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per load, not at each call
        tiny.transform([(text, 4, 7)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # whole words, a word of pieces, punctuation
        tiny.transform(
            [(text, 18, 22), ("the zqx bank", 4, 7), ("bank,", 0, 4)]
            + [("the embeddings", 4, 6)]  # "em" of em ##bed ##ding ##s: a piece
        )


def test_unknown_words_are_split_into_pieces_not_unk(tiny, tiny_bert):
    text = "the zqx bank"
    tokens = tokens_of(tiny_bert, text)
    assert tokens[2:5] == ["z", "##q", "##x"] and "[UNK]" not in tokens
    expected = last_two_summed(tiny_bert, text)[2:5].mean(axis=0)
    np.testing.assert_allclose(
        tiny.transform([(text.split(), 1)])[0], expected, atol=1e-5
    )


def test_batch_size_and_order_invariance(bundled_model):
    samples = [
        (BANK_TEXT, 30, 34),
        (TUTORIAL_TEXT.split(), 6),
        "A [bank] account.",
        ("The cat sat on the mat while the dog barked at the postman.", 4, 7),
        (BANK_TEXT, 100, 104),
        (["Sound", "carries", "well", "over", "water", "."], 1),
        "Tokyo is [東京].",
        (BANK_TEXT, 46, 50),
        ("I flew to New York.", 10, 18),
    ]
    X1 = BertWordVectorizer(batch_size=1, device="cpu").fit().transform(samples)
    vectorizer = BertWordVectorizer(batch_size=7, device="cpu").fit()
    X7 = vectorizer.transform(samples)
    np.testing.assert_allclose(X1, X7, atol=1e-5)
    order = np.random.default_rng(0).permutation(len(samples))
    shuffled = vectorizer.transform([samples[i] for i in order])
    np.testing.assert_allclose(shuffled, X7[order], atol=1e-5)
    # a sample's row does not depend on the other samples in the call
    np.testing.assert_allclose(vectorizer.transform(samples[3:4])[0], X7[3], atol=1e-5)

    texts = [BANK_TEXT, TUTORIAL_TEXT, "Short one.", ["pre", "tokenized", "text"]]
    w1 = BertWordVectorizer(batch_size=1, device="cpu").fit().transform_words(texts)
    w7 = vectorizer.transform_words(texts)
    pd.testing.assert_frame_equal(w1.iloc[:, :5], w7.iloc[:, :5])
    np.testing.assert_allclose(w1.iloc[:, 5:], w7.iloc[:, 5:], atol=1e-5)


def test_occurrences_in_one_text_share_one_forward_pass(tiny, monkeypatch):
    seen = []
    forward = skbert._encode.forward_hidden_states

    def counting(loaded, inputs, layers):
        seen.append(inputs["input_ids"].shape[0])
        return forward(loaded, inputs, layers)

    monkeypatch.setattr(skbert._encode, "forward_hidden_states", counting)
    tiny = clone(tiny).set_params(cache=None).fit()  # count passes, not cache hits
    text = "the bank robber was seen fishing on the river bank"
    end = len(text)
    samples = [(text, 4, 8), (text, end - 4, end), (text.split(), 2), "a [cat] sat"]
    tiny.transform(samples)
    assert sum(seen) == 2  # two distinct texts, two sequences
    seen.clear()
    tiny.transform_words([text, text, text.split(), "a cat sat"])
    assert sum(seen) == 2


# -- transform_words ----------------------------------------------------------------


def _raw_split_empty_and_repeated() -> pd.Series:
    """Texts of every kind, labelled: raw, pre-tokenized, empty, repeated."""
    return pd.Series(
        ["the bank vault", ["new", "york", "e-mail"], "", "the bank vault"],
        index=["a", "b", "c", "d"],
    )


def test_transform_words_table(tiny, tiny_bert):
    texts = _raw_split_empty_and_repeated()
    words = tiny.transform_words(texts)
    names = list(tiny.get_feature_names_out())
    assert list(words.columns) == ["sample", "position", "word", "start", "end"] + names
    assert words["sample"].tolist() == ["a"] * 3 + ["b"] * 3 + ["d"] * 3
    assert words["position"].tolist() == [0, 1, 2] * 3
    vault, given = ["the", "bank", "vault"], ["new", "york", "e-mail"]
    assert words["word"].tolist() == vault + given + vault
    # offsets into the text; for a pre-tokenized text, into its words joined by " "
    assert words[["start", "end"]].values.tolist()[:6] == [
        [0, 3],
        [4, 8],
        [9, 14],
        [0, 3],
        [4, 8],
        [9, 15],
    ]
    assert all(words[n].dtype == np.float32 for n in names)
    features = words[names].to_numpy()
    states = last_two_summed(tiny_bert, "the bank vault")
    np.testing.assert_allclose(features[:3], states[1:4], atol=1e-5)
    np.testing.assert_allclose(features[6:], features[:3])  # the duplicate text
    # "e-mail" is one given word: its pieces e, -, m, ##a, ##i, ##l pooled together
    pieces = last_two_summed(tiny_bert, "new york e-mail")[3:-1]
    np.testing.assert_allclose(features[5], pieces.mean(axis=0), atol=1e-5)
    # and equals transform on the same occurrence
    np.testing.assert_allclose(
        features[5], tiny.transform([(["new", "york", "e-mail"], 2)])[0], atol=1e-6
    )


def test_transform_words_raw_and_pretokenized_are_distinct(tiny):
    raw = tiny.transform_words(["can't stop"])
    assert raw["word"].tolist() == ["can", "'", "t", "stop"]
    given = tiny.transform_words([["can't", "stop"]])
    assert given["word"].tolist() == ["can't", "stop"]
    # a list of str is a list of raw texts, never one pre-tokenized text
    two = tiny.transform_words(["can't", "stop"])
    assert two["sample"].tolist() == [0, 0, 0, 1]


def test_transform_words_rows_do_not_depend_on_the_other_texts(tiny):
    texts = [
        ["a", "cat", ""],
        [],
        "the bank vault",
        "",
        ["the", "bank", "vault"],
        "naive e-mail",
        ["x"],
        "the bank vault",
    ]
    with pytest.warns(UserWarning, match="have no token"):
        together = tiny.transform_words(texts)
    alone = []
    for i, text in enumerate(texts):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            rows = tiny.transform_words([text])
        alone.append(rows.assign(sample=i))
    alone = pd.concat(alone, ignore_index=True)
    pd.testing.assert_frame_equal(together.iloc[:, :5], alone.iloc[:, :5])
    np.testing.assert_allclose(together.iloc[:, 5:], alone.iloc[:, 5:], atol=1e-5)
    assert together["word"].tolist() == [
        "a", "cat", "", "the", "bank", "vault", "the", "bank", "vault",
        "naive", "e", "-", "mail", "x", "the", "bank", "vault",
    ]  # fmt: skip


def test_transform_words_empty_input_and_zero_token_words(tiny):
    empty = tiny.transform_words([])
    assert empty.shape == (0, 5 + 32)
    pd.testing.assert_series_equal(empty.dtypes, tiny.transform_words(["a"]).dtypes)
    pd.testing.assert_series_equal(
        tiny.tokenize([]).dtypes, tiny.tokenize(["a"]).dtypes
    )
    # a pandas index keeps its dtype in both, with rows or without
    texts = pd.Series(["x y", "z"], index=pd.CategoricalIndex(["a", "b"]))
    for X in (texts, texts[:0]):
        assert tiny.tokenize(X)["sample"].dtype == "category"
        assert tiny.transform_words(X)["sample"].dtype == "category"
    assert tiny.transform([]).shape == (0, 32)
    with pytest.warns(UserWarning, match="1 word.* have no token"):
        words = tiny.transform_words([["the", "\u0301", "bank"]])
    assert words["word"].tolist() == ["the", "\u0301", "bank"]
    assert np.all(words.iloc[1, 5:].to_numpy() == 0)
    assert np.isfinite(words.iloc[:, 5:].to_numpy(dtype=float)).all()


OFFSET_TEXT = "Naïve users can't e-mail 😀 or ❤️ from 東京."


def test_offsets_map_back_to_the_users_characters(bundled, bundled_model):
    words = bundled.transform_words([OFFSET_TEXT])
    assert words["word"].tolist() == [
        "Naïve",
        "users",
        "can",
        "'",
        "t",
        "e",
        "-",
        "mail",
        "😀",
        "or",
        "❤️",
        "from",
        "東",
        "京",
        ".",
    ]
    for word, start, end in words[["word", "start", "end"]].itertuples(index=False):
        assert OFFSET_TEXT[start:end] == word
    features = words.iloc[:, 5:].to_numpy()
    assert np.isfinite(features).all() and (np.abs(features).sum(axis=1) > 0).all()
    # transform on the same spans gives the same vectors (one window, one pass)
    spans = [(OFFSET_TEXT, s, e) for s, e in words[["start", "end"]].to_numpy()]
    np.testing.assert_allclose(bundled.transform(spans), features, atol=1e-5)
    # "naïve" is read as "naive" and "😀" as [UNK], but both get their own vector
    tokens = tokens_of(bundled_model, OFFSET_TEXT)
    assert tokens[1] == "naive" and tokens[9] == "[UNK]"
    states = hidden_states(bundled_model, OFFSET_TEXT)
    summed = torch.stack(states[-4:]).sum(dim=0).numpy()
    np.testing.assert_allclose(features[0], summed[1], atol=1e-5)
    np.testing.assert_allclose(features[8], summed[9], atol=1e-5)


# -- long texts -------------------------------------------------------------------


LONG_WORDS = (
    "the cat sat on the bank after fishing in the river and the dog barked at "
    "the robber that was stealing money from the vault of the city bank"
).split()  # 29 words, one token each in the tiny vocab


def test_one_progress_bar_counts_the_texts_read_in_windows(
    tiny_bert, capsys, bar_counts
):
    texts = [LONG_WORDS, LONG_WORDS[:5], LONG_WORDS[3:]]
    samples = [(text, i) for text in texts for i in range(len(text))]
    vectorizer = BertWordVectorizer(
        model=str(tiny_bert), max_length=8, device="cpu", progress_bar=True
    ).fit()
    capsys.readouterr()
    with pytest.warns(UserWarning, match="2 of 3 distinct texts were longer"):
        vectorizer.transform(samples)
    assert vectorizer.transform_stats_["n_windows"] > 3
    counts = bar_counts(capsys.readouterr().err)
    assert {total for _, total in counts} == {3}  # texts, not windows
    assert counts[-1] == (3, 3)


def test_word_warnings_name_the_callers_line(tiny_bert):
    vectorizer = BertWordVectorizer(model=str(tiny_bert), max_length=8).fit()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        vectorizer.transform([(LONG_WORDS, 3)])
        vectorizer.fit_transform([(LONG_WORDS, 3)])
    assert len(caught) == 2 and {w.filename for w in caught} == {__file__}


def test_long_text_keeps_the_target_in_a_centred_window(tiny_bert):
    text = " ".join(LONG_WORDS * 2)  # 58 tokens
    tokenizer, _ = _reference(str(tiny_bert))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == 58
    vectorizer = BertWordVectorizer(model=str(tiny_bert), max_length=12, device="cpu")
    vectorizer.fit()
    width = 10  # 12 minus [CLS] and [SEP]
    for index in (0, 5, 30, 57):
        start = window_around(58, index, index + 1, width)
        assert start <= index < start + width
        window = [
            tokenizer.cls_token_id,
            *ids[start : start + width],
            tokenizer.sep_token_id,
        ]
        expected = last_two_summed(tiny_bert, input_ids=window)[1 + index - start]
        with pytest.warns(UserWarning, match="1 of 1 distinct texts were longer"):
            X = vectorizer.transform([(text.split(), index)])
        np.testing.assert_allclose(X[0], expected, atol=1e-5)
    # the head-truncated text would not even contain word 57
    assert 57 >= width


def test_transform_words_on_a_long_text_never_pools_a_fragment(tiny_bert):
    text = " ".join(LONG_WORDS[:20]) + " embeddings " + " ".join(LONG_WORDS[20:])
    tokenizer, _ = _reference(str(tiny_bert))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    n, width = len(ids), 10
    assert n == 33  # 29 one-token words, and "embeddings" in 4 pieces
    vectorizer = BertWordVectorizer(model=str(tiny_bert), max_length=12, device="cpu")
    with pytest.warns(UserWarning, match="were longer than max_length=12"):
        words = vectorizer.fit().transform_words([text])
    assert words["word"].tolist() == text.split()
    features = words.iloc[:, 5:].to_numpy()
    # every token range of every word
    firsts = list(range(20)) + [20] + list(range(24, 33))
    stops = list(range(1, 21)) + [24] + list(range(25, 34))
    # the vector of each word, for every window of `width` tokens that holds it
    by_window = {}
    for s in range(n - width + 1):
        window = [tokenizer.cls_token_id, *ids[s : s + width], tokenizer.sep_token_id]
        by_window[s] = last_two_summed(tiny_bert, input_ids=window)
    for k, (a, b) in enumerate(zip(firsts, stops, strict=True)):
        matches = [
            s
            for s, states in by_window.items()
            if s <= a
            and b <= s + width
            and np.allclose(
                features[k], states[1 + a - s : 1 + b - s].mean(0), atol=1e-5
            )
        ]
        assert matches, f"word {k} was not pooled from a window that holds all of it"
    # and "embeddings" (4 pieces) is pooled whole
    assert words["word"][20] == "embeddings"


# -- transform_tokens: one row per token the model reads ---------------------------


def test_transform_tokens_is_the_tutorials_token_matrix(bundled_model):
    vectorizer = BertWordVectorizer(
        layers=[-1, -2, -3, -4], layer_combine="concat", device="cpu"
    ).fit()
    tokens = vectorizer.transform_tokens([BANK_TEXT])
    states = hidden_states(bundled_model, BANK_TEXT)
    # the tutorial's token_vecs_cat: every token, [CLS] and [SEP] included
    expected = torch.cat([states[-1], states[-2], states[-3], states[-4]], 1).numpy()
    assert tokens.shape == (22, 7 + 4 * 384)
    np.testing.assert_allclose(tokens.iloc[:, 7:].to_numpy(), expected, atol=1e-5)
    assert tokens["token"].tolist() == tokens_of(bundled_model, BANK_TEXT)
    assert tokens["special"].tolist() == [True] + [False] * 20 + [True]
    # the columns of tokenize(), which shows the same tokens
    shown = vectorizer.tokenize([BANK_TEXT])
    pd.testing.assert_frame_equal(
        tokens[["sample", "position", "token", "token_id", "special"]],
        shown[["sample", "position", "token", "token_id", "special"]],
    )
    # token_vecs_sum (the default layers) at the three "bank" rows are the
    # word vectors of the bank experiment
    summed = BertWordVectorizer(device="cpu").fit()
    rows = summed.transform_tokens([BANK_TEXT]).iloc[[6, 10, 19], 7:].to_numpy()
    starts = [i for i in range(len(BANK_TEXT)) if BANK_TEXT.startswith("bank", i)]
    np.testing.assert_allclose(
        rows, summed.transform([(BANK_TEXT, s, s + 4) for s in starts]), atol=1e-6
    )


def test_the_readmes_every_layer_recipes_are_the_tutorials_arrays(bundled_model):
    # README: every hidden state side by side, reshaped to the tutorial's
    # [tokens x layers x features] array; one token in one layer
    # (hidden_states[5][0][5]); the vocabulary by token id
    states = hidden_states(bundled_model, TUTORIAL_TEXT)
    n_tokens = len(tokens_of(bundled_model, TUTORIAL_TEXT))
    every_layer = (
        BertWordVectorizer(layers="all", layer_combine="concat", device="cpu")
        .fit()
        .transform_tokens([TUTORIAL_TEXT])
    )
    array = every_layer.iloc[:, 7:].to_numpy().reshape(n_tokens, len(states), 384)
    np.testing.assert_allclose(array, torch.stack(states, dim=1).numpy(), atol=1e-5)
    one = BertWordVectorizer(layers=5, device="cpu").fit()
    token_5_layer_5 = one.transform_tokens([TUTORIAL_TEXT]).iloc[5, 7:]
    np.testing.assert_allclose(
        token_5_layer_5.to_numpy(dtype=np.float32), states[5][5].numpy(), atol=1e-5
    )
    lines = (bundled_model / "vocab.txt").read_text(encoding="utf-8").splitlines()
    shown = one.tokenizer_.convert_ids_to_tokens(range(5000, 5020))
    assert shown == lines[5000:5020]


def test_transform_tokens_rows_offsets_and_labels(tiny, tiny_bert):
    texts = _raw_split_empty_and_repeated()
    tokens = tiny.transform_tokens(texts)
    names = list(tiny.get_feature_names_out())
    columns = ["sample", "position", "token", "token_id", "special", "start", "end"]
    assert list(tokens.columns) == columns + names
    assert tokens["token"].tolist() == (
        ["[CLS]", "the", "bank", "vault", "[SEP]"]
        + ["[CLS]", "new", "york", "e", "-", "mail", "[SEP]"]
        + ["[CLS]", "[SEP]"]  # an empty text: the model reads [CLS] [SEP]
        + ["[CLS]", "the", "bank", "vault", "[SEP]"]
    )
    assert tokens["sample"].tolist() == list("a" * 5 + "b" * 7 + "cc" + "d" * 5)
    assert tokens["position"].tolist() == [*range(5), *range(7), 0, 1, *range(5)]
    # offsets into the text (0, 0 for special tokens); "e-mail" starts at 9
    assert tokens[["start", "end"]].values.tolist()[5:12] == [
        [0, 0], [0, 3], [4, 8], [9, 10], [10, 11], [11, 15], [0, 0],
    ]  # fmt: skip
    features = tokens[names].to_numpy()
    assert features.dtype == np.float32
    np.testing.assert_allclose(
        features[:5], last_two_summed(tiny_bert, "the bank vault"), atol=1e-5
    )
    np.testing.assert_allclose(
        features[5:12], last_two_summed(tiny_bert, "new york e-mail"), atol=1e-5
    )
    np.testing.assert_allclose(
        features[12:14], last_two_summed(tiny_bert, ""), atol=1e-5
    )
    np.testing.assert_allclose(features[14:], features[:5])  # the duplicate text
    # no texts: the same columns and dtypes
    empty = tiny.transform_tokens(texts[:0])
    assert empty.shape == (0, 7 + 32)
    pd.testing.assert_series_equal(empty.dtypes, tokens.dtypes)


def test_transform_tokens_of_a_long_text_reads_each_token_in_a_window(tiny_bert):
    text = " ".join(LONG_WORDS[:20]) + " embeddings " + " ".join(LONG_WORDS[20:])
    tokenizer, _ = _reference(str(tiny_bert))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    n, width = len(ids), 10
    vectorizer = BertWordVectorizer(model=str(tiny_bert), max_length=12, device="cpu")
    with pytest.warns(UserWarning, match="their tokens were embedded from windows"):
        tokens = vectorizer.fit().transform_tokens([text])
    assert tokens["token_id"].tolist() == tokenizer(text)["input_ids"]
    features = tokens.iloc[:, 7:].to_numpy()
    by_window = {}
    for s in range(n - width + 1):
        window = [tokenizer.cls_token_id, *ids[s : s + width], tokenizer.sep_token_id]
        by_window[s] = last_two_summed(tiny_bert, input_ids=window)
    # [CLS] from the window at the start, [SEP] from the one at the end
    np.testing.assert_allclose(features[0], by_window[0][0], atol=1e-5)
    np.testing.assert_allclose(features[-1], by_window[n - width][-1], atol=1e-5)
    for k in range(n):
        context = [
            min(k - s, s + width - 1 - k)
            for s, states in by_window.items()
            if s <= k < s + width
            and np.allclose(features[1 + k], states[1 + k - s], atol=1e-5)
        ]
        assert context, f"token {k} was not read from a window that holds it"
        # from the middle of a window where the text allows: windows start
        # every width // 2 tokens, so at least a quarter window on each side
        assert max(context) >= min(k, n - 1 - k, width // 4), k
    assert vectorizer.transform_stats_["n_windowed"] == 1


def test_transform_tokens_with_views_and_first_last(tiny_bert):
    views = {"sum": {"layers": [-2, -1]}, "fl": {"subword_pooling": "first_last"}}
    vectorizer = BertWordVectorizer(model=str(tiny_bert), views=views, device="cpu")
    tokens = vectorizer.fit().transform_tokens(["the bank vault"])
    names = vectorizer.get_feature_names_out()
    assert list(tokens.columns[7:]) == list(names) and len(names) == 32 + 2 * 32
    features = tokens[names].to_numpy()
    summed = last_two_summed(tiny_bert, "the bank vault")
    np.testing.assert_allclose(features[:, :32], summed, atol=1e-5)
    # a token is a word of one piece: "first_last" is its vector twice
    np.testing.assert_allclose(features[:, 32:64], summed, atol=1e-5)
    np.testing.assert_allclose(features[:, 64:], summed, atol=1e-5)


@pytest.mark.parametrize("how", ["mean", "first", "last", "sum", "max", "first_last"])
def test_a_word_longer_than_the_window_is_read_in_pieces(tiny_bert, how):
    # "embeddings" is em ##bed ##ding ##s; max_length=4 leaves 2 tokens a window
    tokenizer, _ = _reference(str(tiny_bert))
    text = "the embeddings"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == 5
    # two pieces of 2 tokens, each centred in a window of its own
    pieces = [
        last_two_summed(
            tiny_bert,
            input_ids=[tokenizer.cls_token_id, *ids[a:b], tokenizer.sep_token_id],
        )[1:-1]
        for a, b in ((1, 3), (3, 5))
    ]
    expected = hand_pool(np.concatenate(pieces), how)
    vectorizer = BertWordVectorizer(
        model=str(tiny_bert), max_length=4, subword_pooling=how, device="cpu"
    ).fit()
    with pytest.warns(UserWarning, match=r"1 distinct target\(s\) had more tokens"):
        X = vectorizer.transform([(text, 4, 14), (text, 0, 3), (text.split(), 1)])
    np.testing.assert_allclose(X[0], expected, atol=1e-5)
    np.testing.assert_array_equal(X[2], X[0])
    the = last_two_summed(
        tiny_bert, input_ids=[tokenizer.cls_token_id, *ids[:2], tokenizer.sep_token_id]
    )[1]
    np.testing.assert_allclose(X[1], hand_pool(the[None], how), atol=1e-5)
    with pytest.warns(UserWarning, match=r"1 distinct word\(s\) had more tokens"):
        words = vectorizer.transform_words([text, "the", text.split()])
    assert words["word"].tolist() == ["the", "embeddings", "the", "the", "embeddings"]
    np.testing.assert_array_equal(words.iloc[4, 5:], words.iloc[1, 5:])
    np.testing.assert_allclose(words.iloc[1, 5:].to_numpy(), expected, atol=1e-5)


def test_a_long_word_of_a_long_text_is_pooled_from_its_pieces(tiny_bert):
    # a word of 4 tokens in a text of 33, windows of 3 tokens: 2 pieces of 2
    text = " ".join(LONG_WORDS[:20]) + " embeddings " + " ".join(LONG_WORDS[20:])
    tokenizer, _ = _reference(str(tiny_bert))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == 33
    pieces = []
    for a, b in ((20, 22), (22, 24)):
        start = window_around(33, a, b, 3)
        window = [tokenizer.cls_token_id, *ids[start : start + 3]]
        states = last_two_summed(tiny_bert, input_ids=[*window, tokenizer.sep_token_id])
        pieces.append(states[1 + a - start : 1 + b - start])
    vectorizer = BertWordVectorizer(model=str(tiny_bert), max_length=5, device="cpu")
    with pytest.warns(UserWarning, match="had more tokens than fit"):
        words = vectorizer.fit().transform_words([text])
    assert words["word"][20] == "embeddings"
    np.testing.assert_allclose(
        words.iloc[20, 5:].to_numpy(), np.concatenate(pieces).mean(0), atol=1e-5
    )
    # the same from transform, with the word as a span
    with pytest.warns(UserWarning, match=r"1 distinct target\(s\) had more tokens"):
        X = vectorizer.transform([(text.split(), 20)])
    np.testing.assert_allclose(X[0], words.iloc[20, 5:].to_numpy(), atol=1e-6)


def test_whitespace_tokens_at_a_given_word_s_end_do_not_count(tiny_roberta):
    # byte-level BPE keeps "\n" as tokens of no word: "cat\n\n\n\n" is one word of
    # one token and four of whitespace, which fits in a window of 3 tokens
    words = ["the", "bank", "cat\n\n\n\n", "sat", "on", "the", "river", "bank"]
    vectorizer = BertWordVectorizer(model=str(tiny_roberta), max_length=5, cache=None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no word is read in pieces
        warnings.filterwarnings("ignore", message=".*distinct texts were longer")
        table = vectorizer.fit().transform_words([words])
        X = vectorizer.transform([(words, 2)])
    np.testing.assert_allclose(table.iloc[2, 5:].to_numpy(), X[0], atol=1e-6)


def test_pieces_count_only_the_tokens_of_a_word(tiny_roberta):
    # a span with newline tokens (of no word) inside, read in pieces: each
    # piece's weight in the mean is its tokens of a word, not its whitespace
    from skbert._encode import tokenize_with_offsets
    from skbert.word import _pieces, _token_range

    tokenizer, _ = _reference(str(tiny_roberta))
    text = "bank\n\n\n\nvault robber"
    (doc,) = tokenize_with_offsets(tokenizer, [text])
    first, stop = _token_range(doc, 0, len(text))
    assert (doc.word_ids[first:stop] < 0).sum() >= 2  # newlines inside the span
    keys, target, n_tokens = _pieces([doc], [(0, first, stop)], {}, width=3)
    assert len(keys) > 1 and target.tolist() == [0] * len(keys)
    for (_, a, b), n in zip(keys, n_tokens, strict=True):
        assert n == (doc.word_ids[a:b] >= 0).sum()
    assert n_tokens.sum() == (doc.word_ids[first:stop] >= 0).sum()


def test_a_text_of_exactly_max_length_tokens_is_not_windowed(tiny_bert):
    vectorizer = BertWordVectorizer(model=str(tiny_bert), max_length=5).fit()
    tokenizer, _ = _reference(str(tiny_bert))
    assert len(tokenizer("the bank vault")["input_ids"]) == 5
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "longer than max_length" warning
        vectorizer.transform(["the [bank] vault"])
        vectorizer.transform_words(["the bank vault"])
    assert vectorizer.transform_stats_["n_windowed"] == 0


def test_max_length_must_leave_room_for_a_word(tiny_bert):
    with pytest.raises(ValueError, match="leaves no room for a word"):
        BertWordVectorizer(model=str(tiny_bert), max_length=2, device="cpu").fit()


# -- bad input ------------------------------------------------------------------


@pytest.mark.parametrize(
    "samples, error, match",
    [
        (
            [("the bank", 4, 8), ("the bank", 4, 9)],
            ValueError,
            r"Sample 1 of X: the span \(4, 9\) is outside the text of length 8",
        ),
        (
            [("the bank", -1, 3)],
            ValueError,
            r"Sample 0 of X: the span \(-1, 3\) is outside",
        ),
        (
            [("the bank", 3, 3)],
            ValueError,
            r"Sample 0 of X: the span \(3, 3\) is empty",
        ),
        ([("the bank", 5, 3)], ValueError, r"span \(5, 3\) ends before it starts"),
        ([("the bank", 9, 3)], ValueError, r"span \(9, 3\) is outside"),
        (
            pd.DataFrame({"text": ["the bank"], "label": [0], "n_words": [2]}),
            ValueError,
            r"has the column 'text' but not 'start', 'end'.*"
            r"transform_words\(X\['text'\]\)",
        ),
        (
            pd.DataFrame({"tokens": [["the", "bank"]], "label": [1]}),
            ValueError,
            r"has the column 'tokens' but not 'index'",
        ),
        (
            pd.DataFrame({"text": ["the bank"], "start": [4], "x": [8]}),
            ValueError,
            r"has the columns 'text', 'start' but not 'end'",
        ),
        (["the bank"], ValueError, "no marked target.*use transform_words"),
        (
            pd.DataFrame({"tokens": [["the", "bank"]], "start": [0]}),
            ValueError,
            r"has the columns 'tokens', 'start' of both forms",
        ),
        (
            [("the  bank", 3, 5)],
            ValueError,
            r"Sample 0 of X: the span \(3, 5\) is only whitespace",
        ),
        (
            [("the \u0301 bank", 4, 5)],
            ValueError,
            r"Sample 0 of X: the target span \(4, 5\) '\u0301' covers no token",
        ),
        (
            [("the \u200b bank", 4, 5)],
            ValueError,
            "covers no token: the tokenizer drops",
        ),
        (
            [(["the", "bank"], 2)],
            ValueError,
            r"Sample 0 of X: index 2 is out of range for 2 tokens",
        ),
        (
            [(["the", "bank"], -1)],
            ValueError,
            r"index -1 is out of range for 2 tokens; use 0 <= index < 2",
        ),
        (
            [(["the", " ", "bank"], 1)],
            ValueError,
            r"the word 1 \(' '\) is only whitespace",
        ),
        ([(["the", "", "bank"], 1)], ValueError, r"the word 1 \(''\) is empty"),
        (
            [(["the", "\u0301"], 1)],
            ValueError,
            r"the target word 1 \('\u0301'\) covers no token",
        ),
        (
            [("the bank", 1, 2, 3)],
            ValueError,
            r"Sample 0 of X is malformed: expected \(text, start, end\), "
            r"\(tokens, index\).*tuple of length 4",
        ),
        ([("the bank",)], ValueError, "Sample 0 of X is malformed.*length 1"),
        ([42], ValueError, "Sample 0 of X is malformed.*got int: 42"),
        (
            [("the bank", "4", 8)],
            TypeError,
            r"Sample 0 of X: start is str \('4'\), expected int",
        ),
        ([("the bank", 4.5, 8)], TypeError, r"start is float \(4.5\), expected int"),
        ([("the bank", True, 8)], TypeError, "start is bool"),
        ([(b"the bank", 4, 8)], TypeError, "text is bytes"),
        (
            [("the bank", 1)],
            TypeError,
            r"tokens is str \('the bank'\), expected a list of words",
        ),
        ([(["the", 7], 0)], TypeError, r"word 1 of tokens is int \(7\), expected str"),
        (
            [("I went to the bank.", "bank")],
            TypeError,
            r"is 2 str: \('I went to the bank\.', 'bank'\).*re\.finditer\(rf'\\b"
            r".*or mark it: 'I went to the \[bank\]\.'",
        ),
        (
            [["the", "river", "bank"]],
            TypeError,
            r"is 3 str: .*give the position of the word: \(words, index\); for "
            "every word of a text, use transform_words",
        ),
        (
            [["the", "bank", "of", "the", "river"]],
            TypeError,
            r"is 5 str: .*give its position: \(words, index\), such as \(words, 1\) "
            "for 'bank'; for every word of a text, use transform_words",
        ),
        (
            [np.array(["the", "bank", "of", "the"])],
            TypeError,
            r"is 4 str: \('the', 'bank', 'of', 'the'\).* \(words, 1\) for 'bank';",
        ),
        ([("the bank", "4", "8")], TypeError, r"start is str \('4'\), expected int\.$"),
        (
            np.array([["the bank", 4, 8]]),
            TypeError,
            r"start is str_ \(np.str_\('4'\)\), expected int\. A numpy array that "
            "holds texts and numbers holds them all as str: build it with dtype=object",
        ),
        ([("the bank", "4.0", " 8")], TypeError, r"start is str \('4.0'\)"),
        ([("pi or 1e3", "nan", "1e3")], TypeError, r"is 3 str: \('pi or 1e3'"),
        ([({"a": 1}, 0)], TypeError, "Sample 0 of X is malformed.*first element dict"),
        ([{"text": "a", "begin": 0}], ValueError, "Sample 0 of X is a dict with keys"),
        (["the bank"], ValueError, "Sample 0 of X is a str with no marked target"),
        (["[the] [bank]"], ValueError, r"Sample 0 of X marks 2 '\[' and 2 '\]'"),
        (["the ]bank["], ValueError, "mark exactly one target"),
        (["the [] bank"], ValueError, r"marked target '' is empty"),
        ([None], ValueError, r"X contains 1 missing sample\(s\).* at position\(s\) 0"),
        (
            [("a b", 0, 1), (None, 0, 1), ("a", np.nan, 1)],
            ValueError,
            r"2 missing sample\(s\) .*position\(s\) 1, 2",
        ),
        ([(["a", None], 0)], ValueError, "1 missing sample"),
        ([(["a", "b"], pd.NA)], ValueError, "1 missing sample"),
        (
            "the [bank]",
            ValueError,
            "Iterable over samples expected, string object received",
        ),
        (42, TypeError, "Iterable over samples expected, got int"),
        (
            ("the bank", 4, 8),
            TypeError,
            r"X is a single sample, \('the bank', 4, 8\); pass a list of samples",
        ),
        ((["the", "bank"], 1), TypeError, r"pass a list.*\[\(\['the', 'bank'\], 1\)\]"),
        (("the bank", 4.0, 8.0), TypeError, "X is a single sample"),
        ((["the", "bank"], 1.0), TypeError, "X is a single sample"),
        ({"text": "the bank", "start": 4, "end": 8}, TypeError, "X is a single sample"),
        (
            [{"text": "a", "start": 0, "end": 1, "tokens": ["a"], "index": 0}],
            ValueError,
            r"expected the keys text, start, end or tokens, index \(not both\)",
        ),
        (
            pd.DataFrame({"a": [1], "b": [2], "c": [3], "d": [4]}),
            ValueError,
            "Expected a DataFrame with columns text, start, end or tokens, index",
        ),
        (
            pd.DataFrame(
                {
                    "text": ["a"],
                    "start": [0],
                    "end": [1],
                    "tokens": [["a"]],
                    "index": [0],
                }
            ),
            ValueError,
            "both the columns",
        ),
    ],
)
def test_bad_samples_are_named_in_the_error(tiny, samples, error, match):
    with pytest.raises(error, match=match):
        tiny.transform(samples)


def test_fit_checks_samples_too(tiny_bert):
    with pytest.raises(
        ValueError, match="Sample 0 of X is a str with no marked target"
    ):
        BertWordVectorizer(model=str(tiny_bert), device="cpu").fit(["no target"])


def test_handle_missing_empty_gives_zero_rows(tiny_bert, tiny):
    vectorizer = BertWordVectorizer(
        model=str(tiny_bert), handle_missing="empty", device="cpu"
    ).fit()
    frame = pd.DataFrame(
        {
            "text": ["the bank", None, "the bank"],
            "start": [4, 0, np.nan],
            "end": [8, 1, 8],
        }
    )
    X = vectorizer.transform(frame)
    np.testing.assert_allclose(X[0], tiny.transform([("the bank", 4, 8)])[0], atol=1e-6)
    assert np.all(X[1:] == 0)
    with pytest.warns(UserWarning, match="1 word.* have no token"):
        words = vectorizer.transform_words(["the bank", None, ["a", None]])
    assert words["sample"].tolist() == [0, 0, 2, 2]
    assert words["word"].tolist() == ["the", "bank", "a", ""]
    with pytest.raises(
        ValueError, match=r"texts contains 2 missing text\(s\) or word\(s\)"
    ):
        tiny.transform_words(["the bank", None, ["a", None]])


def test_a_missing_word_beside_the_target_is_read_as_in_transform_words(tiny_bert):
    vectorizer = BertWordVectorizer(
        model=str(tiny_bert), handle_missing="empty", device="cpu"
    ).fit()
    words = ["the", None, "river", "bank"]
    X = vectorizer.transform(
        [
            (words, 3),
            {"tokens": ["the", np.nan, "river", "bank"], "index": 3},
            (["the", "", "river", "bank"], 3),
            (words, 1),  # the target itself is missing
            (["the", "bank"], None),
        ]
    )
    with pytest.warns(UserWarning, match="empty or missing words"):
        rows = vectorizer.transform_words([words])
    expected = rows.iloc[3, 5:].to_numpy(dtype=np.float32)
    assert np.abs(expected).sum() > 0
    for row in X[:3]:
        np.testing.assert_allclose(row, expected, atol=1e-6)
    assert np.all(X[3:] == 0)
    with pytest.raises(ValueError, match="missing"):  # "error" still refuses it
        BertWordVectorizer(model=str(tiny_bert), device="cpu").fit().transform(
            [(words, 3)]
        )


def test_words_join_back_to_the_texts_as_the_page_shows(tiny):
    # docs/word_vectors.md, "Back to your data"
    docs = pd.DataFrame({"text": ["the bank", "a river"], "label": [0, 1]})
    for index in (
        pd.Index(["p", "q"]),
        pd.MultiIndex.from_tuples([("d", 1), ("d", 2)]),
    ):
        docs.index = index.set_names(["doc", "para"][: index.nlevels])
        words = tiny.transform_words(docs["text"])
        if index.nlevels == 1:
            joined = words.join(docs, on="sample")
        else:
            names = docs.index.names
            tuples = pd.MultiIndex.from_tuples(words["sample"], names=names)
            joined = words.set_index(tuples).join(docs)
        assert joined["label"].tolist() == [0, 0, 1, 1]
        assert joined["word"].tolist() == ["the", "bank", "a", "river"]


def test_transform_words_reads_the_text_column_of_a_dataframe(tiny):
    frame = pd.DataFrame(
        {"id": [7, 8], "text": ["the bank", "a river"]}, index=["p", "q"]
    )
    words = tiny.transform_words(frame)
    expected = tiny.transform_words(frame["text"])
    pd.testing.assert_frame_equal(words, expected)
    assert words["sample"].tolist() == ["p", "p", "q", "q"]
    tokens = pd.DataFrame({"tokens": [["the", "bank"]], "label": [1]})
    assert tokens.pipe(tiny.transform_words)["word"].tolist() == ["the", "bank"]


@pytest.mark.parametrize(
    "texts, error, match",
    [
        ("the bank", ValueError, "Iterable over raw text documents expected, string"),
        (
            pd.DataFrame({"text": ["x"], "tokens": [["y"]]}),
            ValueError,
            "or one named 'text' or 'tokens'",
        ),
        ([3], TypeError, r"Text 0 is int \(3\), expected a str or a list of words"),
        ([["a", 3]], TypeError, r"Text 0: word 1 is int \(3\), expected str"),
        (
            pd.DataFrame({"a": ["x"], "b": ["y"]}),
            ValueError,
            "Expected one column of texts",
        ),
        (np.array([["a", "b"]]), ValueError, "Expected a 1-D sequence of texts"),
    ],
)
def test_bad_texts_for_transform_words(tiny, texts, error, match):
    with pytest.raises(error, match=match):
        tiny.transform_words(texts)


def test_transform_words_reads_a_one_column_array_as_texts(tiny):
    texts = ["the river bank", "a dog barked"]
    expected = tiny.transform_words(texts)
    for column in (np.array(texts)[:, None], np.array(texts, dtype=object)[:, None]):
        pd.testing.assert_frame_equal(tiny.transform_words(column), expected)


def test_invalid_parameters(tiny_bert):
    with pytest.raises(
        ValueError,
        match=r"The 'subword_pooling' parameter of BertWordVectorizer must be a str "
        r"among \{'first', 'first_last', 'last', 'max', 'mean', 'sum'\}. Got 'avg'",
    ):
        BertWordVectorizer(model=str(tiny_bert), subword_pooling="avg").fit()
    with pytest.raises(ValueError, match=r"layers=\[3\] is out of range"):
        BertWordVectorizer(model=str(tiny_bert), layers=[3]).fit()


# -- scikit-learn citizenship -----------------------------------------------------


def test_params_clone_and_not_fitted(tiny_bert):
    vectorizer = BertWordVectorizer()
    params = vectorizer.get_params()
    assert params["layers"] == "auto" and params["layer_combine"] == "sum"
    assert params["subword_pooling"] == "mean" and params["device"] == "auto"
    with pytest.raises(NotFittedError):
        vectorizer.transform([("a b", 0, 1)])
    with pytest.raises(NotFittedError):
        vectorizer.transform_words(["a b"])
    fitted = BertWordVectorizer(model=str(tiny_bert), subword_pooling="first").fit()
    cloned = clone(fitted)
    assert cloned.get_params() == fitted.get_params()
    assert not hasattr(cloned, "layers_")


def test_feature_names_and_widths(tiny_bert):
    vectorizer = BertWordVectorizer(model=str(tiny_bert), device="cpu").fit()
    names = vectorizer.get_feature_names_out()
    assert names[0] == "bertwordvectorizer0" and len(names) == 32
    wide = BertWordVectorizer(
        model=str(tiny_bert),
        layers=[0, 1, 2],
        layer_combine="concat",
        subword_pooling="first_last",
        device="cpu",
    ).fit()
    assert wide.get_feature_names_out().size == 32 * 3 * 2
    assert wide.transform(["a [cat] sat"]).shape == (1, 192)


def test_set_output_pandas_keeps_the_index(tiny_bert):
    vectorizer = BertWordVectorizer(model=str(tiny_bert), device="cpu")
    vectorizer.set_output(transform="pandas")
    frame = pd.DataFrame(
        {"tokens": [["the", "bank"], ["a", "cat"]], "index": [1, 1]}, index=[10, 20]
    )
    out = vectorizer.fit_transform(frame)
    assert isinstance(out, pd.DataFrame)
    assert list(out.index) == [10, 20]
    assert list(out.columns) == list(vectorizer.get_feature_names_out())


SAMPLES = [
    "the [bank] vault",
    "stealing money from the [bank]",
    "the [bank] robber",
    "money in the [bank]",
    "the river [bank]",
    "fishing on the [bank]",
    "the [bank] of the river",
    "a city [bank]",
]
LABELS = [1, 1, 1, 1, 0, 0, 0, 1]


def test_pipeline_gridsearch_and_pickle(tiny_bert):
    pipe = Pipeline(
        [
            ("words", BertWordVectorizer(model=str(tiny_bert), device="cpu")),
            ("clf", LogisticRegression(max_iter=1000)),
        ]
    )
    pipe.fit(SAMPLES, LABELS)
    assert pipe.predict(SAMPLES).shape == (8,)
    search = GridSearchCV(
        pipe, {"words__subword_pooling": ["mean", "first_last"]}, cv=2
    ).fit(SAMPLES, LABELS)
    assert search.best_params_["words__subword_pooling"] in ("mean", "first_last")

    vectorizer = pipe.named_steps["words"]
    before = vectorizer.transform(SAMPLES)
    restored = pickle.loads(pickle.dumps(vectorizer))
    assert "_loaded_model" not in restored.__dict__
    np.testing.assert_array_equal(restored.transform(SAMPLES), before)


def test_column_transformer_on_word_in_context_pairs(tiny_bert):
    frame = pd.DataFrame(
        {
            "tokens_a": [s.replace("[", "").replace("]", "").split() for s in SAMPLES],
            "index_a": [s.split().index("[bank]") for s in SAMPLES],
        }
    )
    frame["tokens_b"] = frame["tokens_a"][::-1].tolist()
    frame["index_b"] = frame["index_a"][::-1].tolist()
    vectorizer = BertWordVectorizer(model=str(tiny_bert), device="cpu")
    both = ColumnTransformer(
        [
            ("a", vectorizer, ["tokens_a", "index_a"]),
            ("b", clone(vectorizer), ["tokens_b", "index_b"]),
        ]
    )
    X = both.fit_transform(frame)
    assert X.shape == (8, 64)
    np.testing.assert_allclose(X[:, :32], X[::-1, 32:], atol=1e-6)
    direct = vectorizer.fit().transform(SAMPLES)
    np.testing.assert_allclose(X[:, :32], direct, atol=1e-5)


def test_no_warning_for_short_texts(tiny):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tiny.transform(SAMPLES)
        tiny.transform_words(["the bank vault"])


WORD_SAMPLES = ["the [bank] vault", ("the new york city", 4, 12), (["e-mail"], 0)]
WORD_TEXTS = ["the bank vault", ["new", "york", "e-mail"], ""]


def test_bfloat16_on_cpu_is_close_to_float32(tiny_bert, tiny):
    half = BertWordVectorizer(model=str(tiny_bert), device="cpu", dtype="bfloat16")
    X = half.fit().transform(WORD_SAMPLES)
    assert X.dtype == np.float32
    np.testing.assert_allclose(X, tiny.transform(WORD_SAMPLES), atol=0.1)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_cuda_matches_cpu(tiny_bert, tiny, dtype):
    gpu = BertWordVectorizer(model=str(tiny_bert), device="cuda", dtype=dtype).fit()
    atol = 1e-4 if dtype == "float32" else 5e-2
    X = gpu.transform(WORD_SAMPLES)
    assert X.dtype == np.float32
    np.testing.assert_allclose(X, tiny.transform(WORD_SAMPLES), atol=atol)
    words = gpu.transform_words(WORD_TEXTS)
    expected = tiny.transform_words(WORD_TEXTS)
    np.testing.assert_allclose(words.iloc[:, 5:], expected.iloc[:, 5:], atol=atol)


def test_word_views_equal_separate_vectorizers(tiny_bert):
    samples = [("the cat sat on the bank", 19, 23), (["a", "dog", "embeddings"], 2)]
    views = [
        {"layers": -1, "subword_pooling": "first"},
        {"layers": [0, 2], "layer_combine": "concat", "subword_pooling": "first_last"},
    ]
    vectorizer = BertWordVectorizer(model=str(tiny_bert), views=views, cache=None)
    got = vectorizer.fit_transform(samples)
    expected = np.hstack(
        [
            BertWordVectorizer(model=str(tiny_bert), cache=None, **view).fit_transform(
                samples
            )
            for view in views
        ]
    )
    np.testing.assert_allclose(got, expected, atol=1e-6)
    # a word longer than a window, read in pieces: each view joins its own
    long = [("the embeddings", 4, 14)]
    params = dict(model=str(tiny_bert), cache=None, max_length=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # read in pieces
        got = BertWordVectorizer(views=views, **params).fit_transform(long)
        expected = np.hstack(
            [BertWordVectorizer(**params, **view).fit_transform(long) for view in views]
        )
    np.testing.assert_allclose(got, expected, atol=1e-6)
    names = vectorizer.get_feature_names_out()
    assert list(names[[0, 32, -1]]) == [
        "l-1_first_0",
        "l0.2_concat_first_last_0",
        "l0.2_concat_first_last_127",
    ]
    words = vectorizer.transform_words(["the cat sat"])
    assert list(words.columns[5:7]) == ["l-1_first_0", "l-1_first_1"]


def test_transform_stats_for_words(tiny_bert):
    vectorizer = BertWordVectorizer(model=str(tiny_bert), max_length=8).fit()
    samples = [("the cat sat", 4, 7), ("the cat sat", 8, 11), ("a dog barked", 2, 5)]
    vectorizer.transform(samples)
    stats = vectorizer.transform_stats_
    assert stats["n_samples"] == 3 and stats["n_distinct"] == 2
    assert stats["n_windows"] == 2 and stats["n_truncated"] == 0
    assert stats["n_tokens"] == 5 + 5 and stats["seconds"] > 0
    long_text = "the cat sat on the bank of the river"
    with pytest.warns(UserWarning, match="1 of 2 distinct texts were longer"):
        vectorizer.transform_words([long_text, "a dog"])
    stats = vectorizer.transform_stats_
    assert stats["n_samples"] == 2 and stats["n_windowed"] == 1
    assert stats["n_windows"] > 2


def test_word_vectors_give_freed_memory_back_every_trim_batches(tiny_bert, monkeypatch):
    released = []
    monkeypatch.setattr(skbert._encode, "TRIM_BATCHES", 2)
    monkeypatch.setattr(
        skbert._encode, "release_freed_memory", lambda: released.append(1)
    )
    texts = ["the bank vault", "a river bank", "the cat sat", "hello world", "a b"]
    vectorizer = BertWordVectorizer(
        model=str(tiny_bert), batch_size=1, device="cpu", cache=None
    ).fit()
    vectorizer.transform_words(texts)  # one batch per text: after the 2nd and 4th
    assert len(released) == 2


@pytest.mark.parametrize(
    "sample",
    # the missing word is the target (a missing word beside it is read as "")
    [{"tokens": ["the", None], "index": 1}, {"index": 1, "tokens": ["the", None]}],
)
def test_a_missing_word_in_a_dict_sample_is_missing_whatever_the_key_order(
    tiny_bert, sample
):
    params = dict(model=str(tiny_bert), device="cpu")
    with pytest.raises(ValueError, match="missing sample"):
        BertWordVectorizer(**params).fit().transform([sample])
    empty = BertWordVectorizer(**params, handle_missing="empty").fit()
    assert np.all(empty.transform([sample]) == 0)


def test_whitespace_tokens_of_byte_level_bpe_are_no_words(tiny_roberta):
    # byte-level BPE keeps a second space ("Ġ", no character after trimming)
    # and line ends ("Ċ") as tokens; they are not words, and a word pooled
    # from a raw text, a span or a pre-tokenized text reads the same tokens
    vectorizer = BertWordVectorizer(model=str(tiny_roberta), cache=None).fit()
    words = vectorizer.transform_words(["the  bank", "the bank\n\nvault"])
    assert words["word"].tolist() == ["the", "bank", "the", "bank", "vault"]
    text = "the bank zoo"
    tokens = vectorizer.tokenize([text])["token"].tolist()
    assert "Ġ" in tokens  # "zoo" (unseen) starts with a bare space token here
    from_text = vectorizer.transform_words([text])
    zoo = from_text[from_text["word"] == "zoo"].iloc[0, 5:].to_numpy(np.float32)
    np.testing.assert_allclose(vectorizer.transform([(text, 9, 12)])[0], zoo)
    np.testing.assert_allclose(
        vectorizer.transform([(text.split(" "), 2)])[0], zoo, atol=1e-6
    )
    given = vectorizer.transform_words([text.split(" ")])
    np.testing.assert_allclose(given.iloc[2, 5:].to_numpy(np.float32), zoo, atol=1e-6)


def test_whitespace_tokens_inside_a_span_or_a_given_word_are_not_pooled(tiny_roberta):
    # "\n" between two words is a token of its own ("Ċ") for byte-level BPE
    text = "the bank\nvault robber"
    summed = BertWordVectorizer(model=tiny_roberta, subword_pooling="sum").fit()
    span, bank, vault = summed.transform([(text, 4, 14), (text, 4, 8), (text, 9, 14)])
    np.testing.assert_allclose(span, bank + vault, atol=1e-5)
    # a given word with a line end in it or after it, as transform_words pools it
    vectorizer = BertWordVectorizer(model=tiny_roberta).fit()
    for words in (["the", "bank\nvault", "robber"], ["the", "bank\n", "vault"]):
        table = vectorizer.transform_words([words])
        np.testing.assert_allclose(
            vectorizer.transform([(words, 1)])[0],
            table.iloc[1, 5:].to_numpy(np.float32),
            atol=1e-6,
        )


def test_wordpiece_reads_some_words_as_one_unk(bundled_model):
    # the limit docs/word_vectors.md states: the tokenizer's, not skbert's
    vectorizer = BertWordVectorizer(model=bundled_model).fit()
    words = ["hello🦜world", "a" * 101, "embeddings"]
    tokens = vectorizer.tokenize([words])["token"].tolist()
    assert tokens == [
        "[CLS]",
        "[UNK]",
        "[UNK]",
        "em",
        "##bed",
        "##ding",
        "##s",
        "[SEP]",
    ]


def test_dict_samples_ignore_other_keys_as_dataframes_do(tiny_bert):
    frame = pd.DataFrame(
        {"text": ["She sat on the bank."], "start": [15], "end": [19], "label": [1]}
    )
    vectorizer = BertWordVectorizer(model=tiny_bert).fit()
    np.testing.assert_array_equal(
        vectorizer.transform(frame.to_dict("records")), vectorizer.transform(frame)
    )
    words = [{"tokens": ["the", "bank"], "index": 1, "id": "w1"}]
    np.testing.assert_array_equal(
        vectorizer.transform(words), vectorizer.transform([(["the", "bank"], 1)])
    )


@pytest.fixture(scope="module")
def untrimmed_roberta(tiny_roberta, tmp_path_factory):
    """tiny_roberta with offsets that count the space before a piece into it
    ("Ġbank" starts at the space), as DeBERTa-v3's Metaspace or ModernBERT's
    byte-level tokenizers report them."""
    import shutil

    from transformers import RobertaTokenizerFast

    directory = tmp_path_factory.mktemp("untrimmed-roberta")
    for path in tiny_roberta.iterdir():
        shutil.copy(path, directory)
    tokenizer = RobertaTokenizerFast.from_pretrained(tiny_roberta, trim_offsets=False)
    tokenizer.save_pretrained(directory)
    encoded = tokenizer(
        "the bank", add_special_tokens=False, return_offsets_mapping=True
    )
    assert encoded["offset_mapping"][-1] == (3, 8)  # " bank", space included
    return directory


def test_words_start_at_their_text_when_offsets_count_the_space(untrimmed_roberta):
    vectorizer = BertWordVectorizer(model=untrimmed_roberta, cache=None).fit()
    words = vectorizer.transform_words(["the bank  vault\triver"])
    assert words["word"].tolist() == ["the", "bank", "vault", "river"]
    assert words[["start", "end"]].values.tolist() == [
        [0, 3],
        [4, 8],
        [10, 15],
        [16, 21],
    ]
    # pre-tokenized words: each gets its own pieces, none is empty
    tokens = ["the", "bank", "vault", "river"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        given = vectorizer.transform_words([tokens])
    features = vectorizer.get_feature_names_out()
    expected = vectorizer.transform([(tokens, i) for i in range(len(tokens))])
    np.testing.assert_allclose(given[features].to_numpy(), expected, atol=1e-6)
    assert np.abs(expected).sum(axis=1).min() > 0


def test_each_chinese_character_is_a_word_but_kana_and_hangul_are_not(
    bundled_model,
):
    # BERT's normalizer puts spaces around CJK ideographs only
    vectorizer = BertWordVectorizer(model=bundled_model).fit()
    table = vectorizer.transform_words(["東京は大きい都市です", "한국어 텍스트"])
    words = table.groupby("sample")["word"].apply(list).tolist()
    assert words == [
        ["東", "京", "は", "大", "きい", "都", "市", "です"],
        ["한국어", "텍스트"],
    ]


def test_transform_words_reads_a_pyarrow_array(tiny):
    pa = pytest.importorskip("pyarrow")
    words = tiny.transform_words(pa.array(["the bank", "a cat"]))
    assert words["word"].tolist() == ["the", "bank", "a", "cat"]


@pytest.mark.parametrize("method", ["transform_words", "transform_tokens", "tokenize"])
def test_a_dict_of_texts_is_refused_not_read_by_its_keys(tiny, method):
    name = "X" if method == "tokenize" else "texts"  # as the method calls it
    with pytest.raises(TypeError, match=rf"^{name} is a dict; .*keys"):
        getattr(tiny, method)({"id-1": "the river bank"})


def test_fitting_on_whole_texts_points_to_fit_without_x(tiny_bert):
    with pytest.raises(ValueError, match=r"fit\(\) without X"):
        BertWordVectorizer(model=str(tiny_bert)).fit(["the bank of the river"])


def test_samples_in_a_pyarrow_array_and_bytes_texts(tiny):
    pa = pytest.importorskip("pyarrow")
    marked = ["the [bank] vault", "a [cat]"]
    np.testing.assert_array_equal(
        tiny.transform(pa.array(marked)), tiny.transform(marked)
    )
    with pytest.raises(TypeError, match=r"decode it first"):
        tiny.transform_words([b"the bank"])


def test_a_word_marker_written_in_the_text_keeps_its_character(tiny_sentencepiece):
    vectorizer = BertWordVectorizer(model=tiny_sentencepiece("xlm_roberta")).fit()
    words = vectorizer.transform_words(["a \u2581Bank"])
    assert words["word"].tolist() == ["a", "\u2581Bank"]
    assert words[["start", "end"]].values.tolist() == [[0, 1], [2, 7]]
    assert vectorizer.transform([("a \u2581Bank", 2, 3)]).shape == (1, 32)


@pytest.mark.parametrize("kind", ["xlm_roberta", "deberta_v3"])
@pytest.mark.parametrize("how", ["first", "mean"])
def test_a_word_marker_of_its_own_is_pooled_with_its_word_wherever_it_is(
    tiny_sentencepiece, kind, how
):
    # sentencepiece reads "Bank" as "▁", "B", "ank"; DeBERTa-v2's tokenizer maps
    # that "▁" to the word's first letter at the start of a text and to the
    # space before it elsewhere, so the same word pooled other pieces there
    path = tiny_sentencepiece(kind)
    text = "Bank Bank, the bank"
    tokenizer, model = _reference(str(path))
    encoded = tokenizer(text, return_tensors="pt")
    pieces = tokenizer.convert_ids_to_tokens(encoded["input_ids"][0])
    word_ids = encoded.word_ids()
    first = [pieces[k] for k, w in enumerate(word_ids) if w == 0]
    assert first[:2] == ["▁", "B"]
    assert [pieces[k] for k, w in enumerate(word_ids) if w == 1][:-1] == first
    with torch.no_grad():
        states = model(**encoded, output_hidden_states=True).hidden_states[-1][0]
    vectorizer = BertWordVectorizer(
        model=path, layers=-1, subword_pooling=how, cache=None
    ).fit()
    X = vectorizer.transform([(text, 0, 4), (text, 5, 9)])
    for row, word in zip(X, (0, 1), strict=True):
        # "Bank" alone: the second word's last piece is its comma
        mine = [k for k, w in enumerate(word_ids) if w == word][: len(first)]
        expected = hand_pool(states[mine].numpy(), how)
        np.testing.assert_allclose(row, expected, atol=1e-5)
    words = vectorizer.transform_words([text])
    np.testing.assert_allclose(words.iloc[0, 5:].to_numpy(), X[0], atol=1e-5)


def test_layers_all_gives_every_hidden_state_to_word_vectors(tiny_bert):
    text = "the bank vault"
    vectorizer = BertWordVectorizer(
        model=tiny_bert, layers="all", layer_combine="concat"
    ).fit()
    assert vectorizer.layers_ == [0, 1, 2]
    states = hidden_states(tiny_bert, text)
    expected = np.concatenate([state[2].numpy() for state in states])  # "bank"
    np.testing.assert_allclose(
        vectorizer.transform([(text, 4, 8)])[0], expected, atol=1e-5
    )


def test_tokenize_shows_the_tokenizers_offsets_transform_tokens_the_trimmed_ones(
    tiny_sentencepiece,
):
    vectorizer = BertWordVectorizer(model=tiny_sentencepiece("deberta_v3")).fit()
    text = "Bank the bank"
    raw = vectorizer.tokenize([text])
    trimmed = vectorizer.transform_tokens([text])
    row = raw.index[raw["token"] == "\u2581th"][0]  # "▁th", "e"
    assert (raw.loc[row, "start"], raw.loc[row, "end"]) == (4, 7)  # " th"
    assert (trimmed.loc[row, "start"], trimmed.loc[row, "end"]) == (5, 7)  # "th"


def test_repeated_index_labels_are_warned_about_in_long_tables(tiny, tiny_bert):
    texts = pd.Series(["a cat", "the dog sat"], index=["x", "x"])
    with pytest.warns(UserWarning, match=r"repeats 1 label\(s\), as 'x'.*reset_index"):
        words = tiny.transform_words(texts)
    assert words["sample"].tolist() == ["x"] * 5
    with pytest.warns(UserWarning, match=r"repeats 1 label\(s\)"):
        tiny.transform_tokens(texts)
    with pytest.warns(UserWarning, match=r"repeats 1 label\(s\)"):
        BertSentenceVectorizer(model=str(tiny_bert)).fit().tokenize(texts)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tiny.transform_words(texts.reset_index(drop=True))
