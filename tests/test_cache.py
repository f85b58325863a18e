import os
import re
import shutil
import threading
import warnings
from functools import partial

import numpy as np
import pytest
import torch

import skbert._cache
import skbert._encode
from skbert import BertSentenceVectorizer, BertWordVectorizer
from skbert._cache import TokenStateCache, row_key
from skbert._model import clear_cache

TEXTS = ["the cat sat on the bank", "a dog barked", "", "river bank money robber"]


@pytest.fixture(autouse=True)
def memory_cache(monkeypatch):
    """A fresh 256 MiB process cache (conftest gives the others a budget of 0)."""
    cache = TokenStateCache(256 * 2**20)
    monkeypatch.setattr(skbert._cache, "_DEFAULT", cache)
    monkeypatch.setattr(skbert._cache, "_DISK", {})
    return cache


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


LONG = " ".join(["the cat sat on the bank", "a dog barked", "river bank money"] * 3)


@pytest.mark.parametrize(
    "first, second",
    [
        (dict(max_length=32), dict(max_length=8)),
        (dict(max_length=12), dict(max_length=12, long_text="truncate_tail")),
        (dict(max_length=12), dict(max_length=12, long_text="truncate_head_tail")),
        (dict(max_length=12), dict(max_length=12, long_text="window")),
        (
            dict(max_length=12, long_text="window", stride=0),
            dict(max_length=12, long_text="window", stride=3),
        ),
        (dict(dtype="float32"), dict(dtype="bfloat16")),
    ],
)
def test_a_setting_that_changes_the_input_or_states_misses_the_cache(
    tiny_bert, first, second
):
    # one shared process cache, as in a grid search over these settings: the
    # second setting must get its own tokenization and states
    texts = [LONG, "a dog barked", LONG + " the end"]
    make = partial(BertSentenceVectorizer, model=str(tiny_bert), device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # truncation notices
        before = make(**first).fit_transform(texts)
        expected = make(cache=None, **second).fit_transform(texts)
        vectorizer = make(**second).fit()
        got = vectorizer.transform(texts)
        unseen = make(cache=None, **second).fit()
        unseen.transform(texts)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert not np.allclose(got, before, atol=1e-6)  # the setting matters here
    if "dtype" in second:  # every state differs; the others share "a dog barked"
        assert vectorizer.transform_stats_["cache_hits"] == 0
    assert (
        vectorizer.transform_stats_["n_windows"] == unseen.transform_stats_["n_windows"]
    )


def test_lru_cache_stays_within_budget_and_evicts_oldest():
    entry = torch.zeros(4, 2, 4)  # (seq_len, n_layers, hidden): 128 bytes
    cache = TokenStateCache(max_bytes=3 * 128)
    for key in (b"a", b"b", b"c"):
        cache.put(key, entry.clone())
    assert cache.get(b"a", 2) is not None  # a becomes the most recent
    cache.put(b"d", entry.clone())
    assert cache.n_bytes <= 3 * 128 and len(cache) == 3
    assert cache.get(b"b", 2) is None  # the least recently used went first
    assert cache.get(b"a", 2) is not None and cache.get(b"d", 2) is not None
    assert cache.get(b"a", 3) is None  # a layer it does not hold
    cache.put(b"huge", torch.zeros(100, 2, 4))  # larger than the whole budget
    assert cache.get(b"huge", 1) is None and cache.n_bytes <= 3 * 128
    cache.put(b"e", entry.clone(), keep=False)  # the caller's call would not fit
    assert cache.get(b"e", 1) is None


def test_deeper_entry_replaces_shallower_one():
    cache = TokenStateCache(max_bytes=10_000)
    cache.put(b"a", torch.zeros(3, 2, 4))
    cache.put(b"a", torch.ones(3, 4, 4))
    assert cache.get(b"a", 4).shape == (3, 4, 4) and cache.n_bytes == 3 * 4 * 4 * 4
    cache.put(b"a", torch.zeros(3, 1, 4))  # shallower: the deeper one stays
    assert float(cache.get(b"a", 1).sum()) == 3 * 4 * 4


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
        dict(layers=[1, 2], layer_combine="mean", pooling="mean_max"),
        dict(layers=[1, 2], layer_combine="sum", pooling="max_mean"),
        dict(layers=[2, 0], layer_combine="sum", pooling="mean_sqrt_len"),
        # layers out of order: summed from one slice, concatenated in order
        dict(layers=[-1, -2], layer_combine="sum", pooling="mean"),
        dict(layers=[2, 1, 0], layer_combine="mean", pooling="max"),
        dict(layers=[-1, -2], layer_combine="concat", pooling="mean_max"),
    ],
)
def test_cached_equals_uncached(tiny_bert, params, memory_cache):
    uncached = BertSentenceVectorizer(model=str(tiny_bert), **params)
    cached = BertSentenceVectorizer(model=str(tiny_bert), cache="memory", **params)
    expected = uncached.fit_transform(TEXTS)
    first = cached.fit_transform(TEXTS)
    memoised = cached.transform(TEXTS)  # the pooled rows of the first call
    assert cached.transform_stats_["cache_hits"] == len(TEXTS)
    memory_cache._pooled.clear()  # pool again, from the cached states
    second = cached.transform(TEXTS)
    stats = cached.transform_stats_
    assert stats["cache_hits"] == len(TEXTS) and stats["n_batches"] == 0
    np.testing.assert_allclose(first, expected, atol=1e-5)
    np.testing.assert_allclose(memoised, expected, atol=1e-5)
    np.testing.assert_allclose(second, expected, atol=1e-5)


@pytest.mark.parametrize("layers", [2, [1, 2]])
@pytest.mark.parametrize("pooling", ["mean", "max", "cls", "last", "mean_sqrt_len"])
def test_low_precision_states_pool_alike_from_the_cache(tiny_bert, pooling, layers):
    # bfloat16 states are cached as float32; the model's own are pooled in
    # float32 too, so the cache changes nothing beyond float rounding
    params = dict(model=str(tiny_bert), dtype="bfloat16", layers=layers)
    skbert._cache.default_cache().clear()
    BertSentenceVectorizer(**params, pooling="mean_max").fit().transform(TEXTS)
    cached = BertSentenceVectorizer(**params, pooling=pooling).fit()
    got = cached.transform(TEXTS)
    assert cached.transform_stats_["cache_hits"] == len(TEXTS)
    expected = cached.set_params(cache=None).transform(TEXTS)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_second_call_and_other_settings_skip_the_model(tiny_bert, forward_calls):
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


def test_cache_keeps_early_exit_and_deeper_layers_extend_it(tiny_bert):
    vectorizer = BertSentenceVectorizer(model=str(tiny_bert), layers=1, cache="memory")
    vectorizer.fit()
    called = []
    layer = vectorizer.model_.encoder.layer[1]  # hidden state 2
    handle = layer.register_forward_pre_hook(lambda *args: called.append(1))
    try:
        vectorizer.transform(TEXTS)
        assert called == []  # layers=1 stores states 0..1 and stops there
        deeper = BertSentenceVectorizer(model=str(tiny_bert), layers=2, cache="memory")
        deeper.fit_transform(TEXTS)  # deeper than stored: runs again, once
        assert called and deeper.transform_stats_["cache_hits"] == 0
        called.clear()
        for layers in (2, 1, 0, [0, 2]):
            again = BertSentenceVectorizer(
                model=str(tiny_bert), layers=layers, cache="memory"
            )
            again.fit_transform(TEXTS)
            assert again.transform_stats_["cache_hits"] == len(TEXTS)
        assert called == []
    finally:
        handle.remove()


def test_call_too_big_for_the_budget_stores_nothing(tiny_bert, monkeypatch):
    # an LRU scan larger than the cache would evict every entry before reuse
    cache = TokenStateCache(4000)  # one row's states fit, the call's do not
    monkeypatch.setattr(skbert._cache, "_DEFAULT", cache)
    vectorizer = BertSentenceVectorizer(model=str(tiny_bert))  # the default cache
    vectorizer.fit_transform(TEXTS)
    assert len(cache) == 0 and cache.n_bytes == 0
    vectorizer.fit_transform(TEXTS[:1])  # a call that fits is stored
    assert len(cache) == 1


def test_word_vectors_cached_equal_uncached(tiny_bert):
    samples = [("the cat sat on the bank", 19, 23), (["a", "dog", "barked"], 1)]
    expected = BertWordVectorizer(model=str(tiny_bert)).fit_transform(samples)
    cached = BertWordVectorizer(model=str(tiny_bert), cache="memory").fit()
    np.testing.assert_allclose(cached.transform(samples), expected, atol=1e-5)
    np.testing.assert_allclose(cached.transform(samples), expected, atol=1e-5)
    assert cached.transform_stats_["cache_hits"] == cached.transform_stats_["n_windows"]


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


# -- on disk -------------------------------------------------------------------


def _new_process(monkeypatch):
    """Forget what this process holds, as a later process would."""
    monkeypatch.setattr(skbert._cache, "_DEFAULT", TokenStateCache(256 * 2**20))
    monkeypatch.setattr(skbert._cache, "_DISK", {})


def _entries(directory):
    return sorted(directory.glob("*/*.skbt"))


def test_disk_cache_serves_a_later_process(tiny_bert, tmp_path, monkeypatch):
    directory = tmp_path / "states"
    expected = BertSentenceVectorizer(model=str(tiny_bert), cache=None).fit_transform(
        TEXTS
    )
    first = BertSentenceVectorizer(model=str(tiny_bert), cache=directory)
    np.testing.assert_allclose(first.fit_transform(TEXTS), expected, atol=1e-5)
    assert len(_entries(directory)) == len(TEXTS)
    assert not list(directory.glob("*/.*.tmp"))  # no temporary file left
    _new_process(monkeypatch)
    later = BertSentenceVectorizer(
        model=str(tiny_bert), cache=str(directory), pooling="max"
    )
    later.fit_transform(TEXTS)
    assert later.transform_stats_["cache_hits"] == len(TEXTS)
    np.testing.assert_allclose(
        later.transform(TEXTS),
        BertSentenceVectorizer(
            model=str(tiny_bert), cache=None, pooling="max"
        ).fit_transform(TEXTS),
        atol=1e-5,
    )


def test_memory_entries_reach_a_disk_cache_asked_for_later(tiny_bert, tmp_path):
    BertSentenceVectorizer(model=str(tiny_bert), cache="memory").fit_transform(TEXTS)
    vectorizer = BertSentenceVectorizer(model=str(tiny_bert), cache=tmp_path / "c")
    vectorizer.fit_transform(TEXTS)  # hits in memory, written to disk
    assert vectorizer.transform_stats_["cache_hits"] == len(TEXTS)
    assert len(_entries(tmp_path / "c")) == len(TEXTS)


def test_interrupted_transform_resumes(tiny_bert, tmp_path, monkeypatch):
    texts = [f"the cat sat on the bank {w}" for w in "abcdef"]
    expected = BertSentenceVectorizer(model=str(tiny_bert), cache=None).fit_transform(
        texts
    )
    forward = skbert._encode.forward_hidden_states
    calls = []

    def interrupted(loaded, inputs, layers):
        calls.append(inputs["input_ids"].shape[0])
        if len(calls) == 3 and interrupt:
            raise KeyboardInterrupt
        return forward(loaded, inputs, layers)

    interrupt = True

    monkeypatch.setattr(skbert._encode, "forward_hidden_states", interrupted)
    vectorizer = BertSentenceVectorizer(
        model=str(tiny_bert), cache=tmp_path, batch_size=1
    ).fit()
    with pytest.raises(KeyboardInterrupt):
        vectorizer.transform(texts)
    assert len(_entries(tmp_path)) == 2  # the two batches that finished
    _new_process(monkeypatch)
    calls.clear()
    interrupt = False
    np.testing.assert_allclose(vectorizer.transform(texts), expected, atol=1e-5)
    assert calls == [1, 1, 1, 1]  # only the four unfinished texts ran
    assert vectorizer.transform_stats_["cache_hits"] == 2


KILLED_RUN = """
import os, signal, sys
import skbert._encode
from skbert import BertSentenceVectorizer

forward = skbert._encode.forward_hidden_states
calls = []

def killed(loaded, inputs, layers):
    calls.append(1)
    if len(calls) == 4:
        os.kill(os.getpid(), signal.SIGKILL)
    return forward(loaded, inputs, layers)

skbert._encode.forward_hidden_states = killed
texts = [f"the cat sat on the bank {w}" for w in "abcdef"]
vectorizer = BertSentenceVectorizer(model=sys.argv[1], cache=sys.argv[2], batch_size=1)
vectorizer.fit_transform(texts)
"""


def test_killed_process_resumes_from_whole_entries(tiny_bert, tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", KILLED_RUN, str(tiny_bert), str(tmp_path)],
        capture_output=True,
    )
    assert result.returncode == -9, result.stderr.decode()
    texts = [f"the cat sat on the bank {w}" for w in "abcdef"]
    vectorizer = BertSentenceVectorizer(model=str(tiny_bert), cache=tmp_path)
    got = vectorizer.fit_transform(texts)
    assert vectorizer.transform_stats_["cache_hits"] == 3
    expected = BertSentenceVectorizer(model=str(tiny_bert), cache=None).fit_transform(
        texts
    )
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_corrupt_or_partial_entries_are_recomputed(tiny_bert, tmp_path, monkeypatch):
    expected = BertSentenceVectorizer(model=str(tiny_bert), cache=None).fit_transform(
        TEXTS
    )
    BertSentenceVectorizer(model=str(tiny_bert), cache=tmp_path).fit_transform(TEXTS)
    first, second, third = _entries(tmp_path)[:3]
    data = first.read_bytes()
    first.write_bytes(data[: len(data) // 2])  # a partial write
    data = bytearray(second.read_bytes())
    data[-3] ^= 0xFF  # a flipped bit in the payload
    second.write_bytes(bytes(data))
    third.write_bytes(b"")  # an empty file
    _new_process(monkeypatch)
    vectorizer = BertSentenceVectorizer(model=str(tiny_bert), cache=tmp_path)
    np.testing.assert_allclose(vectorizer.fit_transform(TEXTS), expected, atol=1e-5)
    assert vectorizer.transform_stats_["cache_hits"] == len(TEXTS) - 3
    _new_process(monkeypatch)  # rewritten whole: all hits now
    vectorizer.transform(TEXTS)
    assert vectorizer.transform_stats_["cache_hits"] == len(TEXTS)


def test_unwritable_directory_warns_and_goes_on(tiny_bert, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    expected = BertSentenceVectorizer(model=str(tiny_bert), cache=None).fit_transform(
        TEXTS
    )
    vectorizer = BertSentenceVectorizer(model=str(tiny_bert), cache=blocker / "cache")
    with pytest.warns(UserWarning, match="cannot write its token-state cache") as got:
        result = vectorizer.fit_transform(TEXTS)
    assert len([w for w in got if "token-state cache" in str(w.message)]) == 1
    np.testing.assert_allclose(result, expected, atol=1e-5)


def test_full_disk_warns_once_per_call_and_leaves_no_partial_file(
    tiny_bert, tmp_path, monkeypatch
):
    import errno

    def full(source, target):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(skbert._cache.os, "replace", full)
    expected = BertSentenceVectorizer(model=str(tiny_bert), cache=None).fit_transform(
        TEXTS
    )
    vectorizer = BertSentenceVectorizer(model=str(tiny_bert), cache=tmp_path).fit()
    for _ in range(2):
        with pytest.warns(UserWarning, match="No space left on device") as got:
            result = vectorizer.transform(TEXTS)
        assert len([w for w in got if "token-state cache" in str(w.message)]) == 1
        np.testing.assert_allclose(result, expected, atol=1e-5)
    assert not list(tmp_path.rglob("*.tmp")) and not _entries(tmp_path)


CONCURRENT_RUN = """
import sys
from skbert import BertSentenceVectorizer

texts = [f"the cat sat on the bank {i}" for i in range(200)]
vectorizer = BertSentenceVectorizer(model=sys.argv[1], cache=sys.argv[2], batch_size=4)
vectorizer.fit_transform(texts)
"""


def test_concurrent_writers_leave_only_whole_entries(tiny_bert, tmp_path):
    import subprocess
    import sys

    runs = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT_RUN, str(tiny_bert), str(tmp_path)],
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    for run in runs:
        assert run.wait() == 0, run.stderr.read().decode()
    texts = [f"the cat sat on the bank {i}" for i in range(200)]
    reader = skbert._cache.DiskCache(tmp_path, TokenStateCache(0))
    assert len(_entries(tmp_path)) == 200
    assert all(
        reader._read(bytes.fromhex(path.stem)) is not None
        for path in _entries(tmp_path)
    )
    assert reader.n_corrupt == 0
    vectorizer = BertSentenceVectorizer(model=str(tiny_bert), cache=tmp_path)
    got = vectorizer.fit_transform(texts)
    assert vectorizer.transform_stats_["cache_hits"] == 200
    expected = BertSentenceVectorizer(model=str(tiny_bert), cache=None).fit_transform(
        texts
    )
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_disk_cache_with_parallel_grid_search(tiny_bert, tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline

    texts = [f"the cat sat on the bank {w}" for w in "abcdefghijkl"]
    labels = [0, 1] * 6
    grid = {"bert__pooling": ["mean", "max"]}
    scores = []
    for cache, n_jobs in ((None, 1), (tmp_path, 2)):
        pipeline = Pipeline(
            [
                ("bert", BertSentenceVectorizer(model=str(tiny_bert), cache=cache)),
                ("clf", LogisticRegression()),
            ]
        )
        search = GridSearchCV(pipeline, grid, cv=3, n_jobs=n_jobs).fit(texts, labels)
        scores.append(search.cv_results_["mean_test_score"])
    np.testing.assert_allclose(scores[0], scores[1])
    assert len(_entries(tmp_path)) == len(texts)


def test_changed_weights_invalidate_disk_entries(tiny_bert, tmp_path, monkeypatch):
    from transformers import AutoModel

    directory = tmp_path / "model"
    shutil.copytree(tiny_bert, directory)
    states = tmp_path / "states"
    BertSentenceVectorizer(model=str(directory), cache=states).fit_transform(TEXTS)
    model = AutoModel.from_pretrained(directory)
    model.save_pretrained(directory)  # same weights, new files
    clear_cache()
    _new_process(monkeypatch)
    vectorizer = BertSentenceVectorizer(model=str(directory), cache=states)
    vectorizer.fit_transform(TEXTS)
    assert vectorizer.transform_stats_["cache_hits"] == 0


def _other_weights(tiny_bert, directory):
    """``directory``: tiny_bert with other random weights of the same size."""
    from transformers import AutoModel, BertConfig

    shutil.copytree(tiny_bert, directory)
    torch.manual_seed(1)
    AutoModel.from_config(BertConfig.from_pretrained(tiny_bert)).save_pretrained(
        directory
    )
    return directory / "model.safetensors"


def test_new_weights_of_the_same_size_and_time_invalidate_disk_entries(
    tiny_bert, tmp_path, monkeypatch
):
    # cp -p, rsync -a or tar put new weights in place with the old file's
    # modification time; a fine-tuned model has the same size
    import os

    directory = tmp_path / "model"
    shutil.copytree(tiny_bert, directory)
    weights = directory / "model.safetensors"
    states = tmp_path / "states"
    BertSentenceVectorizer(model=directory, cache=states).fit_transform(TEXTS)
    new = _other_weights(tiny_bert, tmp_path / "other")
    old = weights.stat()
    assert new.stat().st_size == old.st_size
    shutil.copyfile(new, weights)
    os.utime(weights, ns=(old.st_atime_ns, old.st_mtime_ns))
    clear_cache()
    _new_process(monkeypatch)
    vectorizer = BertSentenceVectorizer(model=directory, cache=states)
    got = vectorizer.fit_transform(TEXTS)
    assert vectorizer.transform_stats_["cache_hits"] == 0
    expected = BertSentenceVectorizer(model=new.parent, cache=None).fit_transform(TEXTS)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_weights_saved_again_while_they_load_are_loaded_again(
    tiny_bert, tmp_path, monkeypatch
):
    import os

    import skbert._model

    directory = tmp_path / "model"
    shutil.copytree(tiny_bert, directory)
    new = _other_weights(tiny_bert, tmp_path / "other")
    load, calls = skbert._model._load, []

    def saved_during_the_first_load(*args, **kwargs):
        loaded = load(*args, **kwargs)
        if not calls:  # a trainer saves (atomically) just after the read
            shutil.copyfile(new, tmp_path / "weights.tmp")
            os.replace(tmp_path / "weights.tmp", directory / "model.safetensors")
        calls.append(loaded)
        return loaded

    monkeypatch.setattr(skbert._model, "_load", saved_during_the_first_load)
    clear_cache()
    states = tmp_path / "states"
    got = BertSentenceVectorizer(model=directory, cache=states).fit_transform(TEXTS)
    assert len(calls) == 2
    expected = BertSentenceVectorizer(model=new.parent, cache=None).fit_transform(TEXTS)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    clear_cache()
    _new_process(monkeypatch)  # and what was stored is the new weights' states
    later = BertSentenceVectorizer(model=directory, cache=states)
    np.testing.assert_allclose(later.fit_transform(TEXTS), expected, atol=1e-5)
    assert later.transform_stats_["cache_hits"] == len(TEXTS)


def test_views_from_the_cache_equal_uncached(tiny_bert, memory_cache):
    views = [
        {"layers": -1, "pooling": "max"},
        {"layers": [2, 0], "layer_combine": "concat", "pooling": "cls"},
        {"layers": [0, 1, 2], "layer_combine": "mean", "normalize": True},
    ]
    expected = BertSentenceVectorizer(
        model=str(tiny_bert), views=views, cache=None
    ).fit_transform(TEXTS)
    cached = BertSentenceVectorizer(model=str(tiny_bert), views=views).fit()
    np.testing.assert_allclose(cached.transform(TEXTS), expected, atol=1e-5)
    np.testing.assert_allclose(cached.transform(TEXTS), expected, atol=1e-5)
    assert cached.transform_stats_["cache_hits"] == len(TEXTS)
    memory_cache._pooled.clear()  # pool again, from the cached states
    np.testing.assert_allclose(cached.transform(TEXTS), expected, atol=1e-5)
    assert cached.transform_stats_["n_batches"] == 0


def test_pooled_rows_are_memoised_per_setting(tiny_bert, monkeypatch):
    vectorizer = BertSentenceVectorizer(model=str(tiny_bert), pooling="max").fit()
    first = vectorizer.transform(TEXTS)

    def no_pooling(*args, **kwargs):
        raise AssertionError("pooled again")

    monkeypatch.setattr(skbert._encode, "pool_tokens", no_pooling)
    np.testing.assert_array_equal(vectorizer.transform(TEXTS), first)
    assert vectorizer.transform_stats_["cache_hits"] == len(TEXTS)
    with pytest.raises(AssertionError, match="pooled again"):  # another setting
        vectorizer.set_params(pooling="mean_sqrt_len").fit().transform(TEXTS)


def test_pooled_memo_stays_within_a_quarter_of_the_budget():
    cache = TokenStateCache(max_bytes=4 * 3 * 64)  # a quarter holds 3 rows
    rows = np.ones((5, 16), dtype=np.float32)  # 64 bytes each
    keys = [bytes([i]) for i in range(5)]
    layouts = [b"l"] * 5
    cache.put_pooled(keys, ("p",), rows, layouts)
    found = cache.get_pooled(keys, ("p",), layouts)
    assert [row is not None for row in found] == [False, False, True, True, True]
    assert cache.get_pooled(keys[-1:], ("q",), layouts[-1:]) == [None]  # pooling
    assert cache.get_pooled(keys[-1:], ("p",), [b"m"]) == [None]  # special tokens


def test_pooled_memo_tells_apart_inputs_with_the_same_tokens(tiny_distilbert):
    # DistilBERT reads no segment ids: a pair and the text joining it with a
    # literal [SEP] are the same token ids and states, but not the same tokens
    # to pool (which are special, which belong to A or B)
    def vectors(X, **params):
        cached = BertSentenceVectorizer(model=str(tiny_distilbert), **params).fit()
        return cached.transform(X), cached.set_params(cache=None).transform(X)

    skbert._cache.default_cache().clear()
    vectors([("the cat", "sat")], pairs=True, include_special_tokens=False)
    got, expected = vectors(["the cat [SEP] sat"], include_special_tokens=False)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    vectors([("the [SEP] cat", "sat")], pairs=True, pooling="segment_mean")
    got, expected = vectors(
        [("the", "cat [SEP] sat")], pairs=True, pooling="segment_mean"
    )
    np.testing.assert_allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize("cache", [None, "memory"])
def test_rows_alike_in_one_call_are_told_apart_by_what_pooling_reads(
    tiny_distilbert, cache
):
    # within one call, rows with the same token ids run once only if pooling
    # reads them alike too: here the A/B split differs (DistilBERT reads no
    # segment ids, so the model's states are the same)
    X = [("the [SEP] cat", "sat"), ("the", "cat [SEP] sat")]
    params = dict(model=str(tiny_distilbert), pairs=True, pooling="segment_mean")
    skbert._cache.default_cache().clear()
    alone = BertSentenceVectorizer(cache=None, **params).fit()
    expected = np.vstack([alone.transform([x]) for x in X])
    assert not np.allclose(expected[0], expected[1], atol=1e-4)
    vectorizer = BertSentenceVectorizer(cache=cache, **params).fit()
    np.testing.assert_allclose(vectorizer.transform(X), expected, atol=1e-6)


@pytest.mark.parametrize("long_text", ["truncate", "window"])
def test_chunks_of_a_call_equal_one_chunk(tiny_bert, monkeypatch, long_text):
    texts = TEXTS + ["the cat sat on the bank " * 8, "a dog barked", "hello world"]
    params = dict(model=str(tiny_bert), long_text=long_text, max_length=16)
    with pytest.warns(UserWarning) if long_text == "truncate" else _no_warning():
        expected = BertSentenceVectorizer(cache=None, **params).fit_transform(texts)
    monkeypatch.setattr(skbert._encode, "CHUNK_TEXTS", 2)
    for cache in (None, "memory", "memory"):
        vectorizer = BertSentenceVectorizer(cache=cache, **params).fit()
        with pytest.warns(UserWarning) if long_text == "truncate" else _no_warning():
            got = vectorizer.transform(texts)
        np.testing.assert_allclose(got, expected, atol=1e-5)
        stats = vectorizer.transform_stats_
        assert stats["n_texts"] == 7 and stats["n_distinct"] == 6
        assert stats["n_truncated"] == (long_text == "truncate")
        assert stats["n_windowed"] == (long_text == "window")
    assert stats["cache_hits"] == stats["n_windows"]  # the second cached call


def test_a_call_in_chunks_too_big_for_the_budget_keeps_nothing(tiny_bert, monkeypatch):
    cache = TokenStateCache(10_000)  # each chunk's states fit, the call's do not
    monkeypatch.setattr(skbert._cache, "_DEFAULT", cache)
    monkeypatch.setattr(skbert._encode, "CHUNK_TEXTS", 2)
    texts = [f"the cat sat on the bank {w}" for w in "abcdefgh"]
    vectorizer = BertSentenceVectorizer(model=str(tiny_bert)).fit()
    vectorizer.transform(texts)
    assert not vectorizer.transform_stats_["cache_kept"]
    assert len(cache) == 0 and not cache._tokens and not cache._pooled


def _no_warning():
    import contextlib

    return contextlib.nullcontext()


def test_a_repeated_call_is_not_tokenized_again(tiny_bert, monkeypatch):
    vectorizer = BertSentenceVectorizer(model=str(tiny_bert)).fit()
    expected = vectorizer.transform(TEXTS)

    def no_tokenizing(*args, **kwargs):
        raise AssertionError("tokenized again")

    monkeypatch.setattr(skbert._encode, "tokenize", no_tokenizing)
    for pooling in ("mean", "cls", "max"):  # whole call, then texts, from the memo
        vectorizer.set_params(pooling=pooling).fit()
        got = vectorizer.transform(TEXTS)
        assert got.shape == expected.shape
        got = vectorizer.transform(list(reversed(TEXTS)))
    with pytest.raises(AssertionError, match="tokenized again"):
        vectorizer.transform(["a text never seen"])


def _entry_bytes(directory) -> list[int]:
    return [path.stat().st_size for path in _entries(directory)]


def test_disk_cache_stays_within_its_budget(tiny_bert, tmp_path, monkeypatch):
    texts = [f"the cat sat on the bank {i}" for i in range(40)]
    BertSentenceVectorizer(
        model=str(tiny_bert), cache=tmp_path / "probe"
    ).fit_transform(texts[:1])
    size = _entry_bytes(tmp_path / "probe")[0]  # every text here has one size
    _new_process(monkeypatch)
    monkeypatch.setenv("SKBERT_DISK_CACHE_MB", str(10.5 * size / 2**20))
    vectorizer = BertSentenceVectorizer(
        model=str(tiny_bert), cache=tmp_path / "c", batch_size=4
    )
    got = vectorizer.fit_transform(texts)
    assert sum(_entry_bytes(tmp_path / "c")) <= 10.5 * size
    assert len(_entries(tmp_path / "c")) >= 9  # evicted down to 90%, not further
    expected = BertSentenceVectorizer(model=str(tiny_bert), cache=None).fit_transform(
        texts
    )
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # a later process reads back every entry that was kept, and stays in budget
    kept = len(_entries(tmp_path / "c"))
    _new_process(monkeypatch)
    later = BertSentenceVectorizer(model=str(tiny_bert), cache=tmp_path / "c").fit()
    np.testing.assert_allclose(later.transform(texts), expected, atol=1e-5)
    assert later.transform_stats_["cache_hits"] == kept
    assert sum(_entry_bytes(tmp_path / "c")) <= 10.5 * size


def test_processes_sharing_a_directory_stay_near_its_budget(tmp_path):
    # each process counts its own writes: without counting the directory
    # again, N processes together could fill N times the budget
    from skbert._cache import DiskCache

    states = torch.zeros(8, 2, 4)  # 256 bytes and a 41-byte header
    entry = 256 + 41
    budget = 20 * entry
    processes = [
        DiskCache(tmp_path, TokenStateCache(0), max_disk_bytes=budget) for _ in range(3)
    ]
    for process in processes:
        process.begin_call()
    largest = 0
    for i in range(120):  # the three write by turns
        key = i.to_bytes(16, "big")
        processes[i % 3].put(key, states + i, keep=False)
        largest = max(largest, sum(_entry_bytes(tmp_path)))
    # each may write a tenth of the budget before it counts again
    assert largest <= budget * (1 + 3 * 0.1) + entry
    assert len(_entries(tmp_path)) >= 0.9 * budget // entry - 3


@pytest.mark.parametrize("n_theirs", [195, 210])  # 97.5% and 105% of the budget
def test_entries_that_cannot_be_removed_warn_once_and_are_not_rescanned(
    tmp_path, monkeypatch, n_theirs
):
    # another user's entries in a shared directory with the sticky bit: they
    # cannot be removed, so eviction must not scan the directory at every write,
    # whether they fill the budget or only most of it
    import errno
    import pathlib

    from skbert._cache import DiskCache

    states = torch.zeros(8, 2, 4)
    entry = 256 + 41
    budget = 200 * entry  # a recount every 20 entries written
    theirs = DiskCache(tmp_path, TokenStateCache(0))
    theirs.begin_call()
    for i in range(n_theirs):
        theirs.put(i.to_bytes(16, "big"), states + i, keep=False)
    kept = set(_entries(tmp_path))
    unlink = pathlib.Path.unlink

    def not_ours(path, missing_ok=False):
        if path in kept:
            raise PermissionError(errno.EPERM, "Operation not permitted")
        return unlink(path, missing_ok)

    monkeypatch.setattr(pathlib.Path, "unlink", not_ours)
    scans = []
    entries = DiskCache._entries
    monkeypatch.setattr(
        DiskCache, "_entries", lambda self: scans.append(1) or entries(self)
    )
    cache = DiskCache(tmp_path, TokenStateCache(0), max_disk_bytes=budget)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cache.begin_call()  # counts the directory: one scan
        for i in range(1000, 1100):
            cache.put(i.to_bytes(16, "big"), states + i, keep=False)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "cannot remove" in messages[0], messages
    assert "SKBERT_DISK_CACHE_MB" in messages[0]
    # the first count, an eviction, then one recount per 20 entries written
    assert len(scans) <= 1 + 1 + 100 // 20, len(scans)
    assert kept <= set(_entries(tmp_path))
    last = (1099).to_bytes(16, "big")
    np.testing.assert_array_equal(cache.get(last, 2), states + 1099)


def test_entries_are_written_under_a_temporary_name_and_renamed(
    tiny_bert, tmp_path, monkeypatch
):
    # readers in other processes must never see a half-written entry: no
    # entry's own name is ever opened for writing
    import builtins

    from skbert._cache import _ENTRY, _TEMPORARY

    opened, modes, renamed = [], [], []

    def recording_open(file, mode="r", *args, **kwargs):
        if any(flag in mode for flag in "wxa+"):
            opened.append(os.path.basename(os.fspath(file)))
            modes.append(mode)
        return builtins.open(file, mode, *args, **kwargs)

    replace = os.replace

    def recording_replace(source, target):
        renamed.append((os.path.basename(source), os.path.basename(target)))
        return replace(source, target)

    monkeypatch.setattr(skbert._cache, "open", recording_open, raising=False)
    monkeypatch.setattr(skbert._cache.os, "replace", recording_replace)
    BertSentenceVectorizer(model=str(tiny_bert), cache=tmp_path).fit_transform(TEXTS)
    assert len(opened) == len(_entries(tmp_path)) == len(TEXTS)
    assert all(_TEMPORARY.fullmatch(name) for name in opened), opened
    assert not any(_ENTRY.fullmatch(name) for name in opened)
    # created exclusively, under a name with a random part (writers in other
    # PID namespaces share a directory too): never another writer's file
    assert all("x" in mode for mode in modes), modes
    pid_thread = rf"\.{os.getpid()}\.{threading.get_ident()}\.[0-9a-f]{{8}}\.tmp"
    assert all(re.search(pid_thread + "$", name) for name in opened), opened
    assert sorted(source for source, _ in renamed) == sorted(opened)
    assert all(_ENTRY.fullmatch(target) for _, target in renamed)


def test_an_entry_that_cannot_be_replaced_skips_that_entry_only(tmp_path, monkeypatch):
    # replacing another user's entry in a sticky directory fails; the others
    # are still written, and the warning does not call the directory unwritable
    import os

    from skbert._cache import DiskCache

    states = torch.zeros(8, 2, 4)
    cache = DiskCache(tmp_path, TokenStateCache(0))
    cache.begin_call()
    cache.put(bytes(16), states, keep=False)
    replace = os.replace
    theirs = _entries(tmp_path)[0]

    def refuse_theirs(source, target):
        if os.fspath(target) == os.fspath(theirs):
            raise PermissionError(1, "Operation not permitted")
        return replace(source, target)

    monkeypatch.setattr(os, "replace", refuse_theirs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cache.put(bytes(16), states + 1, keep=False)  # theirs: not replaced
        for i in range(1, 6):
            cache.put(i.to_bytes(16, "big"), states + i, keep=False)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "cannot be replaced" in messages[0], messages
    assert len(_entries(tmp_path)) == 6
    assert not list(tmp_path.rglob("*.tmp"))


def test_disk_cache_evicts_the_least_recently_used(tiny_bert, tmp_path, monkeypatch):
    import os
    import time

    texts = ["the cat sat", "the dog sat", "the bank sat", "the river sat"]
    directory = tmp_path / "c"
    vectorizer = BertSentenceVectorizer(model=str(tiny_bert), cache=directory).fit()
    files = []
    for text in texts:  # the file each text adds
        before = set(_entries(directory))
        vectorizer.transform([text])
        (added,) = set(_entries(directory)) - before
        files.append(added)
    sizes = {path.stat().st_size for path in files}
    assert len(sizes) == 1
    files[3].unlink()
    now = time.time()
    for age, path in zip((300, 200, 100), files[:3], strict=True):
        os.utime(path, (now - age, now - age))  # written a, b, c, long ago
    monkeypatch.setenv("SKBERT_DISK_CACHE_MB", str(3.5 * sizes.pop() / 2**20))
    _new_process(monkeypatch)
    vectorizer = BertSentenceVectorizer(model=str(tiny_bert), cache=directory).fit()
    vectorizer.transform(texts[:1])  # read from disk: a is now the most recent
    assert vectorizer.transform_stats_["cache_hits"] == 1
    vectorizer.transform(texts[3:])  # d makes 4 entries > 3.5: evict down to 3.15
    assert [path.exists() for path in files] == [True, False, True, True]


@pytest.mark.parametrize("value", ["-1", "lots", "nan"])
def test_bad_disk_budget_is_refused(tiny_bert, tmp_path, monkeypatch, value):
    monkeypatch.setenv("SKBERT_DISK_CACHE_MB", value)
    vectorizer = BertSentenceVectorizer(model=str(tiny_bert), cache=tmp_path)
    with pytest.raises(ValueError, match="SKBERT_DISK_CACHE_MB must be a number"):
        vectorizer.fit()  # at fit, before any model runs


@pytest.mark.parametrize("value", ["-5", "a lot"])
def test_bad_memory_budget_is_refused(monkeypatch, value):
    monkeypatch.setattr(skbert._cache, "_DEFAULT", None)
    monkeypatch.setenv("SKBERT_CACHE_MB", value)
    with pytest.raises(ValueError, match="SKBERT_CACHE_MB must be a number"):
        skbert._cache.default_cache()
    monkeypatch.setenv("SKBERT_CACHE_MB", "inf")  # no bound
    assert skbert._cache.default_cache().max_bytes >= 2**60


@pytest.mark.parametrize(
    "params",
    [
        dict(),
        dict(long_text="window", max_length=8, stride=2),
        dict(pairs=True),
    ],
)
def test_partly_memoised_call_equals_a_fresh_one(tiny_bert, monkeypatch, params):
    pairs = params.get("pairs", False)
    old = [("the cat sat", "a dog"), ("river bank", "the bank of the river")]
    new = [("money in the bank", "a robber"), ("a dog barked", "the cat sat")]
    if not pairs:
        old = [" ".join(pair) for pair in old]
        new = [" ".join(pair) for pair in new]
    vectorizer = BertSentenceVectorizer(model=str(tiny_bert), **params).fit()
    vectorizer.transform(old)  # memoised
    got = vectorizer.transform(new + old)  # half from the memo, half new
    expected = BertSentenceVectorizer(
        model=str(tiny_bert), cache=None, **params
    ).fit_transform(new + old)
    np.testing.assert_allclose(got, expected, atol=1e-5)

    def no_tokenizing(*args, **kwargs):
        raise AssertionError("tokenized again")

    monkeypatch.setattr(skbert._encode, "tokenize", no_tokenizing)
    monkeypatch.setattr(skbert._encode, "tokenize_pairs", no_tokenizing)
    np.testing.assert_allclose(vectorizer.transform(new), expected[:2], atol=1e-5)


def test_a_prompt_kept_in_every_window_is_part_of_the_memo_key(tiny_bert):
    # the same prompted string reads as other windows with the prompt kept in
    # each than with the same characters written into the text
    document = "query: " + " ".join(["the cat sat on the river bank"] * 8)
    params = dict(model=str(tiny_bert), long_text="window", max_length=12, stride=2)
    prompted = BertSentenceVectorizer(prompt="query: ", **params).fit()
    in_text = BertSentenceVectorizer(prompt=None, **params).fit()
    first = prompted.transform([document[len("query: ") :]])
    second = in_text.transform([document])  # after the first, in the same cache
    # only the first window is the same row both ways (its states are reused)
    assert in_text.transform_stats_["cache_hits"] == 1
    fresh = BertSentenceVectorizer(prompt=None, cache=None, **params).fit()
    np.testing.assert_allclose(second, fresh.transform([document]), atol=1e-6)
    assert not np.allclose(first, second, atol=1e-3)
    again = prompted.transform([document[len("query: ") :]])
    assert (
        prompted.transform_stats_["cache_hits"]
        == prompted.transform_stats_["n_windows"]
    )
    np.testing.assert_array_equal(again, first)


def test_a_call_not_kept_memoises_no_tokens(tiny_bert, memory_cache):
    texts = [f"the cat sat on the bank {i}" for i in range(50)]
    memory_cache.max_bytes = 10_000  # far too small for the call's states
    BertSentenceVectorizer(model=str(tiny_bert)).fit_transform(texts)
    assert memory_cache._token_bytes == 0 and len(memory_cache) == 0
    memory_cache.max_bytes = 256 * 2**20
    BertSentenceVectorizer(model=str(tiny_bert)).fit_transform(texts)
    assert memory_cache._token_bytes > 0 and len(memory_cache) == len(texts)


@pytest.mark.parametrize(
    "value", ["", " ", "none", "None", "null", "false", "Memory", "MEMORY", "memory "]
)
def test_a_cache_word_that_is_not_a_directory_is_refused_at_fit(
    tiny_bert, tmp_path, monkeypatch, value
):
    monkeypatch.chdir(tmp_path)  # nothing may be written here
    vectorizer = BertSentenceVectorizer(model=str(tiny_bert), cache=value)
    with pytest.raises(ValueError, match="'cache' parameter.*not a word such as"):
        vectorizer.fit()
    assert list(tmp_path.iterdir()) == []


def test_a_tokenizer_saved_again_never_meets_its_old_tokens(tiny_bert, tmp_path):
    # the weights stay; only the tokenizer changes (it stops lowercasing)
    import shutil

    from transformers import BertTokenizerFast

    directory = tmp_path / "model"
    shutil.copytree(tiny_bert, directory)
    texts = ["The Cat sat on the Bank", "a dog barked"]
    before = BertSentenceVectorizer(model=directory).fit_transform(texts)
    vocab = BertTokenizerFast.from_pretrained(directory).get_vocab()
    tokenizer = BertTokenizerFast(vocab=vocab, do_lower_case=False)
    tokenizer.model_max_length = 64
    tokenizer.save_pretrained(directory)
    cached = BertSentenceVectorizer(model=directory).fit()
    after = cached.transform(texts)
    uncached = BertSentenceVectorizer(model=directory, cache=None).fit_transform(texts)
    assert (after == uncached).all()
    assert abs(after[0] - before[0]).max() > 1e-3


def test_states_and_memos_together_stay_within_the_budget():
    budget = 40 * 128
    cache = TokenStateCache(max_bytes=budget)

    def total():
        return cache.n_bytes + cache._pooled_bytes + cache._token_bytes

    for i in range(20):
        cache.put(bytes([i]), torch.zeros(4, 2, 4))  # 128 bytes each: half
    rows = np.ones((20, 16), dtype=np.float32)  # 1,280 bytes: a quarter
    cache.put_pooled([bytes([i]) for i in range(20)], ("p",), rows, [b"l"] * 20)
    cache.put_tokens(("text",), ([1, 2],), n_tokens=0)  # 512 bytes: a tenth
    assert total() == 40 * 128 - 768
    for i in range(20, 30):  # 1,280 bytes more: the oldest pooled rows give way
        cache.put(bytes([i]), torch.zeros(4, 2, 4))
    assert total() <= budget and len(cache) == 30
    assert cache._pooled_bytes == 768 and cache._token_bytes == 512
    for i in range(30, 45):  # states alone over the budget: memos gone first
        cache.put(bytes([i]), torch.zeros(4, 2, 4))
    assert total() <= budget and cache._pooled_bytes == cache._token_bytes == 0
    assert len(cache) == 40 and cache.get(bytes([4]), 2) is None
    assert cache.get(bytes([5]), 2) is not None


def test_a_grid_search_keeps_states_that_fit_the_budget(
    tiny_bert, forward_calls, monkeypatch
):
    # the memos must not push out the states of a call that fits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline

    texts = [f"the cat sat on the bank {w}" for w in "abcdefghijklmnopqr"]
    sizing = TokenStateCache(2**30)
    monkeypatch.setattr(skbert._cache, "_DEFAULT", sizing)
    BertSentenceVectorizer(model=tiny_bert).fit_transform(texts)
    forward_calls.clear()
    tight = TokenStateCache(int(sizing.n_bytes * 1.2))
    monkeypatch.setattr(skbert._cache, "_DEFAULT", tight)
    pipeline = make_pipeline(
        BertSentenceVectorizer(model=tiny_bert), LogisticRegression()
    )
    poolings = ["mean", "max", "cls", "mean_max", "last", "mean_sqrt_len"]
    grid = {"bertsentencevectorizer__pooling": poolings}
    GridSearchCV(pipeline, grid, cv=2, refit=False).fit(texts, [0, 1] * 9)
    assert sum(forward_calls) == len(texts)


def test_a_call_too_big_for_memory_reads_the_disk_without_filling_memory(
    tiny_bert, tmp_path, monkeypatch
):
    BertSentenceVectorizer(model=tiny_bert, cache=tmp_path).fit_transform(TEXTS)
    _new_process(monkeypatch)
    small = TokenStateCache(4000)  # one row's states fit, the call's do not
    monkeypatch.setattr(skbert._cache, "_DEFAULT", small)
    small.put(b"older", torch.zeros(4, 2, 4))  # what another call left there
    vectorizer = BertSentenceVectorizer(model=tiny_bert, cache=tmp_path).fit()
    vectorizer.transform(TEXTS)
    assert vectorizer.transform_stats_["cache_hits"] == len(set(TEXTS))
    assert list(small._entries) == [b"older"]


def test_a_memory_entry_meets_an_inaccessible_directory_with_a_warning(
    tiny_bert, tmp_path
):
    # a path the system refuses to look at (a name over 255 bytes) makes
    # Path.exists raise instead of returning False
    expected = BertSentenceVectorizer(model=tiny_bert).fit_transform(TEXTS)  # memory
    directory = tmp_path / ("x" * 300)
    vectorizer = BertSentenceVectorizer(model=tiny_bert, cache=directory).fit()
    with pytest.warns(UserWarning, match="cannot write its token-state cache"):
        result = vectorizer.transform(TEXTS)
    np.testing.assert_array_equal(result, expected)


def test_an_interrupted_write_leaves_no_temporary_file(
    tiny_bert, tmp_path, monkeypatch
):
    def interrupted(source, target):
        raise KeyboardInterrupt

    monkeypatch.setattr(skbert._cache.os, "replace", interrupted)
    vectorizer = BertSentenceVectorizer(model=tiny_bert, cache=tmp_path).fit()
    with pytest.raises(KeyboardInterrupt):
        vectorizer.transform(TEXTS)
    assert list(tmp_path.rglob("*")) and not list(tmp_path.rglob("*.tmp"))


def test_a_killed_writer_s_temporary_file_is_removed_an_hour_later(
    tiny_bert, tmp_path, monkeypatch
):
    import os
    import time

    folder = tmp_path / "ab"
    folder.mkdir()
    stale = folder / f".ab{'c' * 30}.skbt.123.456.tmp"
    fresh = folder / f".ab{'d' * 30}.skbt.123.456.tmp"  # maybe being written now
    stale.write_bytes(b"half an entry")
    fresh.write_bytes(b"half an entry")
    hours_ago = time.time() - 2 * 3600
    os.utime(stale, (hours_ago, hours_ago))
    _new_process(monkeypatch)
    BertSentenceVectorizer(model=tiny_bert, cache=tmp_path).fit_transform(TEXTS)
    assert not stale.exists() and fresh.exists()


def test_files_skbert_did_not_write_are_never_removed(tiny_bert, tmp_path, monkeypatch):
    # cache= may name a directory that holds other files, such as "."
    import os
    import time

    foreign = [
        tmp_path / "notes" / ".draft.tmp",
        tmp_path / "notes" / f"{'a' * 32}.skbt",
        tmp_path / "ab" / ".draft.tmp",
        tmp_path / "ab" / "readme.skbt",
        tmp_path / "ab" / f".ab{'c' * 30}.skbt.tmp",
    ]
    hours_ago = time.time() - 2 * 3600
    for path in foreign:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"x" * 10_000)
        os.utime(path, (hours_ago, hours_ago))
    _new_process(monkeypatch)
    monkeypatch.setenv("SKBERT_DISK_CACHE_MB", "0.001")  # evicts at every write
    vectorizer = BertSentenceVectorizer(model=tiny_bert, cache=tmp_path)
    vectorizer.fit_transform(TEXTS)
    assert all(path.exists() for path in foreign)


def test_an_entry_in_another_entry_s_file_is_recomputed(
    tiny_bert, tmp_path, monkeypatch
):
    # a sync or a restore gone wrong: each file whole, under the wrong name
    expected = BertSentenceVectorizer(model=str(tiny_bert), cache=None).fit_transform(
        TEXTS
    )
    BertSentenceVectorizer(model=str(tiny_bert), cache=tmp_path).fit_transform(TEXTS)
    first, second = _entries(tmp_path)[:2]
    data = first.read_bytes(), second.read_bytes()
    first.write_bytes(data[1])
    second.write_bytes(data[0])
    _new_process(monkeypatch)
    vectorizer = BertSentenceVectorizer(model=str(tiny_bert), cache=tmp_path)
    np.testing.assert_allclose(vectorizer.fit_transform(TEXTS), expected, atol=1e-5)
    assert vectorizer.transform_stats_["cache_hits"] == len(TEXTS) - 2


def test_a_rerun_reads_the_disk_batch_by_batch(tiny_bert, tmp_path, monkeypatch):
    # resuming a long run is all hits: their states must not all be read at once
    texts = [f"the cat sat on the bank {i}" for i in range(30)]
    expected = BertSentenceVectorizer(model=tiny_bert, cache=None).fit_transform(texts)
    BertSentenceVectorizer(model=tiny_bert, cache=tmp_path).fit_transform(texts)
    _new_process(monkeypatch)
    monkeypatch.setattr(skbert._encode, "HIT_TOKENS", 40)  # 4 texts per batch
    n_read, read_before_batch = [0], []
    read, cached_batch = skbert._cache.DiskCache._read, skbert._encode._cached_batch

    def counted_read(self, key):
        n_read[0] += 1
        return read(self, key)

    def noted_batch(tokenized, rows, *args):
        read_before_batch.append((n_read[0], len(rows)))
        return cached_batch(tokenized, rows, *args)

    monkeypatch.setattr(skbert._cache.DiskCache, "_read", counted_read)
    monkeypatch.setattr(skbert._encode, "_cached_batch", noted_batch)
    vectorizer = BertSentenceVectorizer(model=tiny_bert, cache=tmp_path)
    np.testing.assert_allclose(vectorizer.fit_transform(texts), expected, atol=1e-5)
    assert vectorizer.transform_stats_["cache_hits"] == len(texts)
    assert len(read_before_batch) > 1
    done = 0
    for n, size in read_before_batch:  # each batch read just before it is used
        done += size
        assert n == done


def test_a_cache_directory_under_the_home_directory(tiny_bert, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    BertSentenceVectorizer(model=tiny_bert, cache="~/states").fit_transform(TEXTS)
    assert _entries(tmp_path / "states") and not (tmp_path / "~").exists()


def test_a_call_over_the_budget_keeps_none_of_the_states_it_computes(
    tiny_bert, monkeypatch
):
    first = [f"the cat sat on the bank {w}" for w in "abcdef"]
    second = [f"a dog barked at the river {w}" for w in "abcdef"]
    sizing = TokenStateCache(2**30)
    monkeypatch.setattr(skbert._cache, "_DEFAULT", sizing)
    BertSentenceVectorizer(model=tiny_bert).fit_transform(first)
    one_call = sizing.n_bytes
    tight = TokenStateCache(int(one_call * 1.5))  # one call fits, two do not
    monkeypatch.setattr(skbert._cache, "_DEFAULT", tight)
    vectorizer = BertSentenceVectorizer(model=tiny_bert).fit()
    vectorizer.transform(first)
    kept = list(tight._entries)
    assert len(kept) == len(first)
    # pooled otherwise, so the states of the first texts are read again
    other = BertSentenceVectorizer(model=tiny_bert, pooling="max").fit()
    other.transform(first + second)  # its new states alone would fit
    assert other.transform_stats_["cache_hits"] == len(first)
    assert other.transform_stats_["cache_kept"] is False
    assert list(tight._entries) == kept


def test_texts_found_pooled_in_the_cache_advance_the_progress_bar(
    tiny_bert, capsys, bar_counts
):
    texts = ["the cat sat", "a dog barked", "the cat sat", "hello world"]
    vectorizer = BertSentenceVectorizer(model=tiny_bert, progress_bar=True).fit()
    vectorizer.transform(texts)
    capsys.readouterr()
    vectorizer.transform(texts)  # every vector from the pooled memo
    assert vectorizer.transform_stats_["cache_hits"] == 3
    assert bar_counts(capsys.readouterr().err)[-1] == (4, 4)


def test_an_entry_path_taken_by_something_else_skips_that_entry_only(
    tiny_bert, tmp_path, monkeypatch
):
    texts = [f"the cat sat on the bank {i}" for i in range(40)]
    expected = BertSentenceVectorizer(model=str(tiny_bert), cache=None).fit_transform(
        texts
    )
    BertSentenceVectorizer(model=str(tiny_bert), cache=tmp_path / "a").fit_transform(
        texts
    )
    entries = [path.relative_to(tmp_path / "a") for path in _entries(tmp_path / "a")]
    assert len(entries) == len(texts)
    # in a fresh directory: a file where 3 entries' folders go (an output
    # folder's "00", "01", ...), a folder where another entry goes
    directory = tmp_path / "b"
    taken = sorted({str(entry.parent) for entry in entries})[:3]
    for name in taken:
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text("not skbert's")
    free = [entry for entry in entries if str(entry.parent) not in taken]
    (directory / free[0]).mkdir(parents=True)
    _new_process(monkeypatch)
    vectorizer = BertSentenceVectorizer(model=str(tiny_bert), cache=directory)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        np.testing.assert_allclose(vectorizer.fit_transform(texts), expected, atol=1e-5)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "something else is in its place" in messages[0]
    written = [p.relative_to(directory) for p in _entries(directory) if p.is_file()]
    assert sorted(written) == sorted(free[1:])  # every other entry
    _new_process(monkeypatch)
    with pytest.warns(UserWarning, match="something else is in its place"):
        np.testing.assert_allclose(vectorizer.transform(texts), expected, atol=1e-5)
    assert vectorizer.transform_stats_["cache_hits"] == len(free) - 1


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_named_pipe_in_an_entrys_place_is_not_read(tiny_bert, tmp_path, monkeypatch):
    texts = ["the cat sat", "a dog barked"]
    vectorizer = BertSentenceVectorizer(model=str(tiny_bert), cache=tmp_path)
    expected = vectorizer.fit_transform(texts)
    entry = _entries(tmp_path)[0]
    entry.unlink()
    os.mkfifo(entry)  # a read would wait for a writer forever
    _new_process(monkeypatch)
    result = []
    thread = threading.Thread(
        target=lambda: result.append(vectorizer.transform(texts)), daemon=True
    )
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "reading the cache hung on a named pipe"
    np.testing.assert_allclose(result[0], expected, atol=1e-5)


@pytest.mark.parametrize("cache", [None, "memory"])
def test_texts_that_tokenize_alike_run_once(tiny_bert, forward_calls, cache):
    # an uncased model reads these three texts as the same tokens
    texts = ["The cat sat", "a dog", "the  cat sat", "THE CAT SAT", "a dog barked"]
    vectorizer = BertSentenceVectorizer(model=str(tiny_bert), cache=cache).fit()
    X = vectorizer.transform(texts)
    assert sum(forward_calls) == 3
    assert vectorizer.transform_stats_["n_distinct"] == 5
    assert vectorizer.transform_stats_["n_alike"] == 2
    alone = BertSentenceVectorizer(model=str(tiny_bert), cache=None).fit()
    expected = np.concatenate([alone.transform([text]) for text in texts])
    np.testing.assert_allclose(X, expected, atol=1e-6)
    # pairs alike, and the alike windows of a long text
    forward_calls.clear()
    pairs = BertSentenceVectorizer(model=str(tiny_bert), cache=cache, pairs=True).fit()
    Y = pairs.transform([("The cat", "a dog"), ("the cat", "a DOG"), ("a dog", "x")])
    assert sum(forward_calls) == 2 and np.array_equal(Y[0], Y[1])
    forward_calls.clear()
    windows = BertSentenceVectorizer(
        model=str(tiny_bert), cache=cache, long_text="window", max_length=8, stride=0
    ).fit()
    Z = windows.transform([" ".join(["the cat sat on the bank"] * 6), "the robber"])
    assert windows.transform_stats_["n_windows"] == 7  # 6 alike
    assert windows.transform_stats_["n_alike"] == 5
    assert sum(forward_calls) == 2
    unique = BertSentenceVectorizer(model=str(tiny_bert), cache=None, max_length=8)
    np.testing.assert_allclose(
        Z, unique.fit().transform(["the cat sat on the bank", "the robber"]), atol=1e-6
    )


def test_rows_alike_follow_the_pooled_memo(tiny_bert, forward_calls):
    vectorizer = BertSentenceVectorizer(model=str(tiny_bert)).fit()
    first = vectorizer.transform(["the cat sat"])
    forward_calls.clear()
    X = vectorizer.transform(["The cat sat", "a dog", "THE CAT SAT", "A DOG"])
    assert sum(forward_calls) == 1  # "a dog" only
    assert vectorizer.transform_stats_["cache_hits"] == 2
    np.testing.assert_array_equal(X[[0, 2]], np.repeat(first, 2, axis=0))
    np.testing.assert_array_equal(X[1], X[3])


@pytest.mark.parametrize("cache", [None, "memory"])
def test_stats_count_padding_batches_and_windows_as_documented(tiny_bert, cache):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert))
    texts = ["the cat", "the cat sat on the bank"]
    lengths = [len(tokenizer(text)["input_ids"]) for text in texts]
    params = dict(model=str(tiny_bert), cache=cache, batch_size=2)
    # one batch of both, padded to the longer; a token budget of exactly that
    # still takes both, one token less splits them
    budget = 2 * max(lengths)
    vectorizer = BertSentenceVectorizer(max_batch_tokens=budget, **params).fit()
    vectorizer.transform(texts)
    stats = vectorizer.transform_stats_
    assert (stats["n_batches"], stats["n_padded_tokens"]) == (1, budget)
    skbert._cache.default_cache().clear()  # the forward pass runs again
    vectorizer.set_params(max_batch_tokens=budget - 1).transform(texts)
    stats = vectorizer.transform_stats_
    assert (stats["n_batches"], stats["n_padded_tokens"]) == (2, sum(lengths))
    # with a prompt: a long text is windowed, not truncated, and a short one
    # is neither
    long = " ".join(["the cat sat on the bank"] * 4)
    for long_text, windowed, truncated in (("window", 1, 0), ("truncate", 0, 1)):
        vectorizer = BertSentenceVectorizer(
            long_text=long_text, max_length=12, prompt="the: ", **params
        ).fit()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the truncation warning
            vectorizer.transform([long, "the cat"])
        stats = vectorizer.transform_stats_
        assert (stats["n_windowed"], stats["n_truncated"]) == (windowed, truncated)


def test_stats_of_a_call_partly_in_the_cache(tiny_bert):
    # texts whose tokenization is memoised count as what they are: a short
    # text is not windowed, a windowed one is not truncated
    vectorizer = BertSentenceVectorizer(model=str(tiny_bert)).fit()
    vectorizer.transform(["the cat"])
    vectorizer.transform(["the cat", "a dog"])
    assert vectorizer.transform_stats_["n_windowed"] == 0
    long = " ".join(["the cat sat on the bank"] * 4)
    vectorizer = BertSentenceVectorizer(
        model=str(tiny_bert), prompt="the: ", long_text="window", max_length=10
    ).fit()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no truncation warning
        vectorizer.transform([long])
        vectorizer.transform([long, "a dog"])
    stats = vectorizer.transform_stats_
    assert (stats["n_truncated"], stats["n_windowed"]) == (0, 1)
