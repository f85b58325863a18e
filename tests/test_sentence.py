import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from skbert import BertSentenceVectorizer

POOLINGS = ["mean", "max", "mean_max", "cls", "last", "mean_sqrt_len"]
TEXTS = ["hello world", "the cat sat on the new york bank", "a dog barked"]
TUTORIAL = "Here is the sentence I want embeddings for."
BANK = (
    "After stealing money from the bank vault, the bank robber was seen "
    "fishing on the Mississippi river bank."
)


def _hidden_states(path, text):
    """The tutorial's computation: one text, all hidden states, no padding."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    encoded = tokenizer(text, return_tensors="pt", return_special_tokens_mask=True)
    special = encoded.pop("special_tokens_mask")[0].bool()
    with torch.no_grad():
        hidden_states = model(**encoded, output_hidden_states=True).hidden_states
    return [h[0] for h in hidden_states], special


def _hand_pool(tokens, how):
    if how == "mean":
        return tokens.mean(0)
    if how == "max":
        return tokens.max(0).values
    if how == "mean_max":
        return torch.cat([tokens.mean(0), tokens.max(0).values])
    if how == "cls":
        return tokens[0]
    if how == "last":
        return tokens[-1]
    if how == "mean_sqrt_len":
        return tokens.sum(0) / len(tokens) ** 0.5
    raise AssertionError(how)


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("include_special_tokens", [True, False])
def test_pooling_equals_hand_computation(tiny_bert, pooling, include_special_tokens):
    vectorizer = BertSentenceVectorizer(
        model=str(tiny_bert),
        layers=[-1, 1],
        layer_combine="sum",
        pooling=pooling,
        include_special_tokens=include_special_tokens,
        batch_size=2,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cls without special tokens warns
        X = vectorizer.fit_transform(TEXTS)
    for i, text in enumerate(TEXTS):
        hidden_states, special = _hidden_states(tiny_bert, text)
        tokens = hidden_states[2] + hidden_states[1]
        if not include_special_tokens and pooling != "cls":
            tokens = tokens[~special]
        expected = _hand_pool(tokens, pooling).numpy()
        np.testing.assert_allclose(X[i], expected, atol=1e-5)


@pytest.mark.parametrize(
    "layers, combine, width",
    [(-1, "mean", 32), ([0, 1, 2], "concat", 96), ([1, 2], "sum", 32)],
)
def test_layer_combination_widths_and_values(tiny_distilbert, layers, combine, width):
    vectorizer = BertSentenceVectorizer(
        model=str(tiny_distilbert), layers=layers, layer_combine=combine, pooling="mean"
    )
    X = vectorizer.fit_transform(TEXTS)
    assert X.shape == (3, width) and vectorizer.get_feature_names_out().shape == (
        width,
    )
    hidden_states, _ = _hidden_states(tiny_distilbert, TEXTS[1])
    chosen = [hidden_states[i] for i in np.atleast_1d(layers)]
    if combine == "concat":
        tokens = torch.cat(chosen, dim=-1)
    else:
        tokens = torch.stack(chosen).sum(0) if combine == "sum" else chosen[0]
    np.testing.assert_allclose(X[1], tokens.mean(0).numpy(), atol=1e-5)


def test_auto_without_sentence_transformers_config(tiny_bert):
    vectorizer = BertSentenceVectorizer(model=str(tiny_bert)).fit()
    assert vectorizer.layers_ == [1]  # second-to-last of 2 layers
    assert vectorizer.pooling_ == "mean"
    assert vectorizer.max_length_ == 64
    assert vectorizer.get_params()["layers"] == "auto"


def test_auto_on_bundled_model_follows_its_config():
    vectorizer = BertSentenceVectorizer().fit()
    assert vectorizer.layers_ == [6]
    assert vectorizer.pooling_ == "mean"
    assert vectorizer.max_length_ == 256
    assert vectorizer.n_layers_ == 6 and vectorizer.hidden_size_ == 384


def test_bundled_model_equals_sentence_transformers():
    from sentence_transformers import SentenceTransformer

    from skbert._model import bundled_model_path

    texts = [TUTORIAL, BANK, "", "A man is playing a guitar.", "x " * 400]
    with pytest.warns(UserWarning, match="1 of 5 distinct texts"):
        X = BertSentenceVectorizer(normalize=True).fit_transform(texts)
    reference = SentenceTransformer(str(bundled_model_path()), device="cpu").encode(
        texts, convert_to_numpy=True
    )
    assert np.abs(X - reference).max() <= 1e-6


@pytest.mark.parametrize(
    "kwargs, layers, combine, width",
    [
        (dict(layers=-2, pooling="mean"), [-2], None, 384),
        (
            dict(layers=[-1, -2, -3, -4], layer_combine="concat", pooling="mean"),
            [-1, -2, -3, -4],
            "concat",
            4 * 384,
        ),
        (
            dict(layers=[-4, -3, -2, -1], layer_combine="sum", pooling="mean"),
            [-4, -3, -2, -1],
            "sum",
            384,
        ),
    ],
)
def test_tutorial_recipes_equal_hand_computation(kwargs, layers, combine, width):
    from skbert._model import bundled_model_path

    X = BertSentenceVectorizer(**kwargs).fit_transform([BANK, TUTORIAL])
    assert X.shape == (2, width)
    for row, text in enumerate([BANK, TUTORIAL]):
        hidden_states, _ = _hidden_states(str(bundled_model_path()), text)
        chosen = [hidden_states[i] for i in layers]
        if combine == "concat":
            tokens = torch.cat(chosen, dim=-1)
        elif combine == "sum":
            tokens = torch.stack(chosen).sum(0)
        else:
            tokens = chosen[0]
        np.testing.assert_allclose(X[row], tokens.mean(0).numpy(), atol=1e-5)


def test_batch_size_1_and_64_agree_on_bundled_model():
    texts = [TUTORIAL, BANK, "short", "A much longer text " * 20, ""]
    one = BertSentenceVectorizer(batch_size=1).fit_transform(texts)
    many = BertSentenceVectorizer(batch_size=64).fit_transform(texts)
    np.testing.assert_allclose(one, many, atol=1e-5)


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("include_special_tokens", [True, False])
def test_empty_and_whitespace_texts_are_finite(
    tiny_bert, pooling, include_special_tokens
):
    vectorizer = BertSentenceVectorizer(
        model=str(tiny_bert),
        pooling=pooling,
        include_special_tokens=include_special_tokens,
        normalize=True,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        X = vectorizer.fit_transform(["", "   ", "\n\t", "hello"])
    assert np.isfinite(X).all()
    if not include_special_tokens and pooling != "cls":
        assert (X[:3] == 0).all()  # documented: no token left pools to zeros


def test_empty_input_gives_zero_rows(tiny_bert):
    vectorizer = BertSentenceVectorizer(
        model=str(tiny_bert), layers=[1, 2], layer_combine="concat", pooling="mean_max"
    ).fit()
    X = vectorizer.transform([])
    assert X.shape == (0, 128) and X.dtype == np.float32


def test_input_forms(tiny_bert):
    vectorizer = BertSentenceVectorizer(model=str(tiny_bert)).fit()
    expected = vectorizer.transform(TEXTS)
    np.testing.assert_array_equal(vectorizer.transform(t for t in TEXTS), expected)
    np.testing.assert_array_equal(
        vectorizer.transform(np.array(TEXTS, dtype=object).reshape(-1, 1)), expected
    )
    np.testing.assert_array_equal(
        vectorizer.transform(pd.DataFrame({"text": TEXTS})), expected
    )
    with pytest.raises(ValueError, match="one column"):
        vectorizer.transform(pd.DataFrame({"a": TEXTS, "b": TEXTS}))
    with pytest.raises(TypeError, match="string object received"):
        vectorizer.transform("hello world")
    with pytest.raises(TypeError, match="Element 1 of X is int"):
        vectorizer.transform(["a", 1])
    with pytest.raises(ValueError, match=r"2 missing text\(s\).*0, 2"):
        vectorizer.transform([None, "a", np.nan])


def test_missing_texts_opt_in_as_empty(tiny_bert):
    vectorizer = BertSentenceVectorizer(model=str(tiny_bert), handle_missing="empty")
    X = vectorizer.fit_transform(pd.Series(["a", None, pd.NA]))
    reference = vectorizer.transform(["a", "", ""])
    np.testing.assert_array_equal(X, reference)


def test_truncation_warns_once_with_count(tiny_bert):
    vectorizer = BertSentenceVectorizer(model=str(tiny_bert), max_length=8).fit()
    long_text = "the cat sat on the new york bank after fishing"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        X = vectorizer.transform([long_text, long_text + " a", "hi", long_text])
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1
    assert "2 of 3 distinct texts" in messages[0] and "max_length=8" in messages[0]
    head = vectorizer.transform(["the cat sat on the new"])  # 6 words + 2 = 8
    np.testing.assert_allclose(X[0], head[0], atol=1e-6)


def test_max_length_beyond_model_is_refused(tiny_bert):
    with pytest.raises(ValueError, match="max_length=100 is more than.*64 tokens"):
        BertSentenceVectorizer(model=str(tiny_bert), max_length=100).fit()


def test_normalize_gives_unit_rows(tiny_bert):
    X = BertSentenceVectorizer(model=str(tiny_bert), normalize=True).fit_transform(
        TEXTS
    )
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-6)


def test_bfloat16_output_is_float32_and_close(tiny_bert):
    exact = BertSentenceVectorizer(model=str(tiny_bert)).fit_transform(TEXTS)
    fast = BertSentenceVectorizer(model=str(tiny_bert), dtype="bfloat16").fit_transform(
        TEXTS
    )
    assert fast.dtype == np.float32
    cosine = (
        (exact * fast).sum(1)
        / np.linalg.norm(exact, axis=1)
        / np.linalg.norm(fast, axis=1)
    )
    assert cosine.min() > 0.99


def test_bad_layer_gives_valid_range(tiny_bert):
    with pytest.raises(
        ValueError, match=r"3 hidden-state outputs; use indices in \[-3, 2\]"
    ):
        BertSentenceVectorizer(model=str(tiny_bert), layers=[-4]).fit()


@pytest.mark.parametrize(
    "param, value",
    [
        ("pooling", "avg"),
        ("layer_combine", "add"),
        ("dtype", "fp16"),
        ("handle_missing", "ignore"),
        ("layers", "last"),
    ],
)
def test_misspelt_options_list_allowed_values(tiny_bert, param, value):
    vectorizer = BertSentenceVectorizer(model=str(tiny_bert), **{param: value})
    with pytest.raises(ValueError, match=f"The '{param}' parameter.*Got '{value}'"):
        vectorizer.fit()


def test_cls_without_special_tokens_warns(tiny_bert):
    vectorizer = BertSentenceVectorizer(
        model=str(tiny_bert), pooling="cls", include_special_tokens=False
    )
    with pytest.warns(UserWarning, match="'include_special_tokens' will not be used"):
        vectorizer.fit()


def test_tokenize_shows_wordpieces_like_the_tutorial():
    tokens = BertSentenceVectorizer().fit().tokenize([TUTORIAL])
    assert tokens["token"].tolist() == [
        "[CLS]",
        "here",
        "is",
        "the",
        "sentence",
        "i",
        "want",
        "em",
        "##bed",
        "##ding",
        "##s",
        "for",
        ".",
        "[SEP]",
    ]
    assert tokens["token_id"].tolist()[:3] == [101, 2182, 2003]
    row = tokens[tokens["token"] == "##ding"].iloc[0]
    assert TUTORIAL[row["start"] : row["end"]] == "ding"
