import shutil

import numpy as np
import pytest
import torch

import skbert._encode
from skbert import BertSentenceVectorizer, BertWordVectorizer
from skbert._cache import TokenStateCache, default_cache, row_key
from skbert._model import clear_cache

TEXTS = ["the cat sat on the bank", "a dog barked", "", "river bank money robber"]


@pytest.fixture
def forward_calls(monkeypatch):
    """Count the sequences that reach the model."""
    calls = []
    forward = skbert._encode.forward_hidden_states

    def counting(loaded, inputs, layers):
        calls.append(inputs["input_ids"].shape[0])
        return forward(loaded, inputs, layers)

    monkeypatch.setattr(skbert._encode, "forward_hidden_states", counting)
    return calls


def test_lru_cache_stays_within_budget_and_evicts_oldest():
    entry = {0: torch.zeros(4, 8)}  # 128 bytes
    cache = TokenStateCache(max_bytes=3 * 128)
    for key in (b"a", b"b", b"c"):
        cache.put(key, dict(entry))
    assert cache.get(b"a", [0]) is not None  # a becomes the most recent
    cache.put(b"d", dict(entry))
    assert cache.n_bytes <= 3 * 128 and len(cache) == 3
    assert cache.get(b"b", [0]) is None  # the least recently used went first
    assert cache.get(b"a", [0]) is not None and cache.get(b"d", [0]) is not None
    assert cache.get(b"a", [0, 1]) is None  # a layer it does not hold
    cache.put(b"huge", {0: torch.zeros(100, 8)})  # larger than the whole budget
    assert cache.get(b"huge", [0]) is None and cache.n_bytes <= 3 * 128


def test_row_key_depends_on_ids_types_and_model():
    assert row_key("m", [1, 2]) == row_key("m", [1, 2])
    assert row_key("m", [1, 2]) != row_key("m", [1, 3])
    assert row_key("m", [1, 2]) != row_key("n", [1, 2])
    assert row_key("m", [1, 2], [0, 1]) != row_key("m", [1, 2], [0, 0])


@pytest.mark.parametrize(
    "params",
    [
        dict(layers=-1, pooling="mean"),
        dict(layers=[0, 1, 2], layer_combine="concat", pooling="max"),
        dict(layers=[1, 2], layer_combine="sum", pooling="cls", normalize=True),
        dict(layers=1, pooling="mean_max", include_special_tokens=False),
    ],
)
def test_cached_equals_uncached(tiny_bert, params):
    default_cache().clear()
    uncached = BertSentenceVectorizer(model=str(tiny_bert), **params)
    cached = BertSentenceVectorizer(model=str(tiny_bert), cache="memory", **params)
    expected = uncached.fit_transform(TEXTS)
    first = cached.fit_transform(TEXTS)
    second = cached.transform(TEXTS)
    assert cached.transform_stats_["cache_hits"] == len(TEXTS)
    np.testing.assert_allclose(first, expected, atol=1e-5)
    np.testing.assert_allclose(second, expected, atol=1e-5)


def test_second_call_and_other_settings_skip_the_model(tiny_bert, forward_calls):
    default_cache().clear()
    BertSentenceVectorizer(
        model=str(tiny_bert), layers=-1, cache="memory"
    ).fit_transform(TEXTS)
    assert sum(forward_calls) == len(TEXTS)
    forward_calls.clear()
    # other pooling, other (shallower) layers, normalisation: all from the cache
    for params in (
        dict(layers=-1, pooling="max"),
        dict(layers=[0, 1], layer_combine="concat", pooling="cls"),
        dict(layers=1, normalize=True),
    ):
        vectorizer = BertSentenceVectorizer(
            model=str(tiny_bert), cache="memory", **params
        )
        vectorizer.fit_transform(TEXTS)
        assert vectorizer.transform_stats_["cache_hits"] == len(TEXTS)
    assert forward_calls == []


def test_any_layers_hit_after_one_pass(tiny_bert, forward_calls):
    default_cache().clear()
    BertSentenceVectorizer(
        model=str(tiny_bert), layers=1, cache="memory"
    ).fit_transform(TEXTS)
    assert sum(forward_calls) == len(TEXTS)
    forward_calls.clear()
    vectorizer = BertSentenceVectorizer(model=str(tiny_bert), layers=2, cache="memory")
    vectorizer.fit_transform(TEXTS)  # deeper than asked before: stored all the same
    assert forward_calls == []
    assert vectorizer.transform_stats_["cache_hits"] == len(TEXTS)


def test_word_vectors_cached_equal_uncached(tiny_bert):
    default_cache().clear()
    samples = [("the cat sat on the bank", 19, 23), (["a", "dog", "barked"], 1)]
    expected = BertWordVectorizer(model=str(tiny_bert)).fit_transform(samples)
    cached = BertWordVectorizer(model=str(tiny_bert), cache="memory").fit()
    np.testing.assert_allclose(cached.transform(samples), expected, atol=1e-5)
    np.testing.assert_allclose(cached.transform(samples), expected, atol=1e-5)


def test_new_weights_invalidate_entries(tiny_bert, tmp_path):
    from transformers import AutoModel

    directory = tmp_path / "model"
    shutil.copytree(tiny_bert, directory)
    before = BertSentenceVectorizer(model=str(directory), cache="memory").fit_transform(
        TEXTS
    )
    model = AutoModel.from_pretrained(directory)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(1.5)
    model.save_pretrained(directory)
    clear_cache()  # forget loaded models; the token-state cache is kept
    vectorizer = BertSentenceVectorizer(model=str(directory), cache="memory")
    after = vectorizer.fit_transform(TEXTS)
    assert vectorizer.transform_stats_["cache_hits"] == 0
    assert not np.allclose(before, after, atol=1e-3)


def test_grid_search_runs_the_model_about_once(tiny_bert, forward_calls):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline

    default_cache().clear()
    texts = [f"the cat sat on the bank {w}" for w in "abcdefghijkl"]
    labels = [0, 1] * 6
    pipeline = Pipeline(
        [
            ("bert", BertSentenceVectorizer(model=str(tiny_bert), cache="memory")),
            ("clf", LogisticRegression()),
        ]
    )
    grid = {"bert__layers": [-1, 1, [1, 2]], "bert__pooling": ["mean", "max", "cls"]}
    GridSearchCV(pipeline, grid, cv=3).fit(texts, labels)
    # 9 candidates x 3 folds (+ refit) would run the model on ~ 9 * 3 * 12 texts
    # without the cache; with it each text runs once.
    assert sum(forward_calls) == len(texts)
