import pickle
import shutil

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.compose import ColumnTransformer
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.utils import estimator_checks
from sklearn.utils.validation import check_is_fitted, validate_data

from skbert import BertSentenceVectorizer, BertWordVectorizer

TEXTS = [
    "the cat sat",
    "a cat sat on the bank",
    "the cat was seen",
    "cat and dog",
    "the money vault",
    "bank robber money",
    "stealing money from the bank",
    "money money",
    "the cat and the city",
    "a vault of money",
    "cat cat",
    "the robber was seen with money",
]
LABELS = [0, 0, 0, 0, 1, 1, 1, 1, 0, 1, 0, 1]

DATA_FREE_CHECKS = [
    "check_no_attributes_set_in_init",
    "check_do_not_raise_errors_in_init_or_set_params",
    "check_parameters_default_constructible",
    "check_get_params_invariance",
    "check_set_params",
    "check_estimator_repr",
    "check_mixin_order",
    "check_estimator_cloneable",
]


@pytest.mark.parametrize("check", DATA_FREE_CHECKS)
@pytest.mark.parametrize(
    "estimator_class", [BertSentenceVectorizer, BertWordVectorizer]
)
def test_data_free_sklearn_checks(check, estimator_class):
    estimator = estimator_class()
    getattr(estimator_checks, check)(type(estimator).__name__, estimator)


class _NumericAdapter(TransformerMixin, BaseEstimator):
    """Test-only: writes each numeric row as a text so check_estimator can run."""

    def __init__(self, vectorizer=None):
        self.vectorizer = vectorizer

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = []  # the output is always float32
        return tags

    def fit(self, X, y=None):
        validate_data(self, X)
        self.vectorizer_ = clone(self.vectorizer).fit()
        return self

    def transform(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, reset=False)
        return self.vectorizer_.transform([" ".join(f"{v:.2f}" for v in r) for r in X])


def test_check_estimator_through_adapter(tiny_bert):
    adapter = _NumericAdapter(BertSentenceVectorizer(model=str(tiny_bert)))
    estimator_checks.check_estimator(adapter)


def test_not_fitted_error():
    with pytest.raises(NotFittedError):
        BertSentenceVectorizer().transform(["a"])
    with pytest.raises(NotFittedError):
        BertSentenceVectorizer().tokenize(["a"])


def test_clone_keeps_params_and_drops_fit(tiny_bert):
    vectorizer = BertSentenceVectorizer(model=str(tiny_bert), layers=[-1, -2]).fit()
    copy = clone(vectorizer)
    assert copy.get_params() == vectorizer.get_params()
    with pytest.raises(NotFittedError):
        check_is_fitted(copy)
    copy.set_params(pooling="max")
    assert copy.pooling == "max" and vectorizer.pooling == "auto"


def test_clones_share_the_loaded_model(tiny_bert):
    first = BertSentenceVectorizer(model=str(tiny_bert)).fit()
    second = clone(first).set_params(pooling="cls").fit()
    assert first.model_ is second.model_


def test_refit_starts_from_scratch(tiny_bert):
    vectorizer = BertSentenceVectorizer(model=str(tiny_bert), pooling="max").fit()
    vectorizer.set_params(pooling="mean_max").fit()
    assert vectorizer.pooling_ == "mean_max"
    assert vectorizer.transform(["a"]).shape == (1, 64)


def test_feature_names_out(tiny_bert):
    vectorizer = BertSentenceVectorizer(model=str(tiny_bert)).fit()
    names = vectorizer.get_feature_names_out()
    assert names[0] == "bertsentencevectorizer0" and len(names) == 32


@pytest.mark.parametrize(
    ("estimator_class", "samples"),
    [
        (BertSentenceVectorizer, TEXTS[:3]),
        (BertWordVectorizer, ["the [cat] sat", "a [bank] vault", "[money] money"]),
    ],
)
def test_fit_transform_reads_a_generator_once(tiny_bert, estimator_class, samples):
    vectorizer = estimator_class(model=str(tiny_bert))
    expected = vectorizer.fit_transform(list(samples))
    got = vectorizer.fit_transform(sample for sample in samples)
    assert got.shape == (3, expected.shape[1])
    np.testing.assert_array_equal(got, expected)
    # in a Pipeline too: its fit_transform goes through the vectorizer's
    piped = Pipeline([("bert", clone(vectorizer))]).fit_transform(iter(samples))
    np.testing.assert_array_equal(piped, expected)


def test_set_output_pandas_keeps_series_index(tiny_bert):
    vectorizer = BertSentenceVectorizer(model=str(tiny_bert)).set_output(
        transform="pandas"
    )
    X = pd.Series(["a cat", "a dog", "money"], index=["x", "y", "z"])
    out = vectorizer.fit_transform(X)
    assert isinstance(out, pd.DataFrame)
    assert list(out.index) == ["x", "y", "z"]
    assert list(out.columns) == list(vectorizer.get_feature_names_out())


@pytest.mark.parametrize("dump", ["pickle", "joblib"])
def test_round_trip_after_transform_is_bitwise_equal(tiny_bert, tmp_path, dump):
    vectorizer = BertSentenceVectorizer(model=str(tiny_bert)).fit()
    before = vectorizer.transform(TEXTS)
    if dump == "pickle":
        restored = pickle.loads(pickle.dumps(vectorizer))
    else:
        joblib.dump(vectorizer, tmp_path / "v.joblib")
        restored = joblib.load(tmp_path / "v.joblib")
    assert "_loaded_model" not in vars(restored)
    np.testing.assert_array_equal(restored.transform(TEXTS), before)


def test_round_trip_of_bundled_model_after_transform():
    vectorizer = BertSentenceVectorizer().fit()
    before = vectorizer.transform(TEXTS[:3])
    restored = pickle.loads(pickle.dumps(vectorizer))
    np.testing.assert_array_equal(restored.transform(TEXTS[:3]), before)


def test_unpickle_on_machine_without_fitted_device(tiny_bert):
    import torch

    vectorizer = BertSentenceVectorizer(model=str(tiny_bert)).fit()
    expected = vectorizer.transform(TEXTS[:2])
    state = vectorizer.__getstate__()
    state["device_"] = torch.device("cuda" if not torch.cuda.is_available() else "mps")
    restored = BertSentenceVectorizer.__new__(BertSentenceVectorizer)
    restored.__setstate__(state)
    with pytest.warns(UserWarning, match="cannot be used here"):
        out = restored.transform(TEXTS[:2])
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_pipeline_with_logistic_regression(tiny_bert):
    pipeline = Pipeline(
        [
            ("bert", BertSentenceVectorizer(model=str(tiny_bert))),
            ("clf", LogisticRegression(max_iter=1000)),
        ]
    )
    pipeline.fit(TEXTS, LABELS)
    assert pipeline.predict(TEXTS).shape == (12,)
    assert pipeline.score(TEXTS, LABELS) > 0.5


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_grid_search_over_layers_and_pooling(tiny_bert, n_jobs):
    pipeline = Pipeline(
        [
            ("bert", BertSentenceVectorizer(model=str(tiny_bert))),
            ("clf", LogisticRegression(max_iter=1000)),
        ]
    )
    search = GridSearchCV(
        pipeline,
        {"bert__layers": [-1, [1, 2]], "bert__pooling": ["mean", "cls"]},
        cv=2,
        n_jobs=n_jobs,
        error_score="raise",
    )
    search.fit(TEXTS, LABELS)
    assert len(search.cv_results_["params"]) == 4
    assert search.best_estimator_.named_steps["bert"].pooling_ in ("mean", "cls")


@pytest.mark.parametrize("column", ["text", ["text"]])
def test_column_transformer(tiny_bert, column):
    frame = pd.DataFrame({"text": TEXTS, "length": [len(t) for t in TEXTS]})
    transformer = ColumnTransformer(
        [
            ("bert", BertSentenceVectorizer(model=str(tiny_bert)), column),
            ("num", "passthrough", ["length"]),
        ]
    )
    out = transformer.fit_transform(frame)
    assert out.shape == (12, 33)
    direct = BertSentenceVectorizer(model=str(tiny_bert)).fit_transform(TEXTS)
    np.testing.assert_allclose(out[:, :32], direct, atol=1e-6)
    names = transformer.get_feature_names_out()
    assert names[0] == "bert__bertsentencevectorizer0" and names[-1] == "num__length"


def test_tags_declare_text_input():
    tags = BertSentenceVectorizer().__sklearn_tags__()
    assert tags.input_tags.string and not tags.input_tags.two_d_array


def _model_copy(source, directory, **config):
    """A copy of ``source`` at ``directory``, its weights doubled or, with
    ``config``, replaced by a random model of that other shape."""
    import shutil

    import torch
    from transformers import BertConfig, BertModel

    if directory != source:
        shutil.copytree(source, directory, dirs_exist_ok=True)
    if config:
        old = BertConfig.from_pretrained(source)
        model = BertModel(BertConfig(**{**old.to_dict(), **config}))
    else:
        model = BertModel.from_pretrained(source)
        with torch.no_grad():
            model.embeddings.word_embeddings.weight.mul_(2)
    for stale in directory.glob("*.safetensors"):
        stale.unlink()
    model.eval().save_pretrained(directory)
    return directory


@pytest.mark.parametrize("estimator", ["sentence", "word"])
def test_copies_use_the_model_they_were_fitted_with(
    tiny_bert, tiny_distilbert, estimator
):
    # set_params(model=...) without a refit changes no fitted estimator, nor
    # its pickled or deep copies
    import copy

    if estimator == "sentence":
        vectorizer, X = BertSentenceVectorizer(model=tiny_bert), ["the cat sat"]
    else:
        vectorizer, X = BertWordVectorizer(model=tiny_bert), ["the [cat] sat"]
    expected = vectorizer.fit(X).transform(X)
    vectorizer.set_params(model=tiny_distilbert)
    for copied in (
        vectorizer,
        pickle.loads(pickle.dumps(vectorizer)),
        copy.deepcopy(vectorizer),
    ):
        np.testing.assert_array_equal(copied.transform(X), expected)
        assert copied.model_name_or_path_ == str(tiny_bert)
    other = clone(vectorizer).fit(X).transform(X)
    assert np.abs(other - expected).max() > 1e-3


def test_pickling_keeps_the_original_s_loaded_model(tiny_bert, tmp_path):
    directory = _model_copy(tiny_bert, tmp_path / "model")
    vectorizer = BertSentenceVectorizer(model=directory, cache=None).fit()
    before = vectorizer.transform(["the cat sat"])
    pickle.dumps(vectorizer)  # took nothing from the original
    _model_copy(directory, directory)  # saved again: new weights, same shape
    np.testing.assert_array_equal(vectorizer.transform(["the cat sat"]), before)


def test_a_deep_copy_keeps_the_weights_a_pickle_reloads(tiny_bert, tmp_path):
    import copy

    directory = _model_copy(tiny_bert, tmp_path / "model")
    vectorizer = BertSentenceVectorizer(model=directory, cache=None).fit()
    before = vectorizer.transform(["the cat sat"])
    _model_copy(directory, directory)  # saved again: new weights, same shape
    np.testing.assert_array_equal(vectorizer.transform(["the cat sat"]), before)
    deep = copy.deepcopy(vectorizer)
    np.testing.assert_array_equal(deep.transform(["the cat sat"]), before)
    # a pickle carries no weights: it loads the directory as it is now
    unpickled = pickle.loads(pickle.dumps(vectorizer))
    assert np.abs(unpickled.transform(["the cat sat"]) - before).max() > 1e-3


@pytest.mark.parametrize("estimator", [BertSentenceVectorizer, BertWordVectorizer])
def test_a_pickle_of_a_relative_model_path_loads_in_another_directory(
    tiny_bert, tmp_path, monkeypatch, estimator
):
    _model_copy(tiny_bert, tmp_path / "models" / "tiny")
    monkeypatch.chdir(tmp_path)
    vectorizer = estimator(model="models/tiny", cache=None).fit()
    assert vectorizer.model == "models/tiny"  # the parameter stays as given
    assert vectorizer.model_name_or_path_ == str(tmp_path / "models" / "tiny")
    X = ["the [cat] sat"]
    expected = vectorizer.transform(X)
    data = pickle.dumps(vectorizer)
    monkeypatch.chdir(tmp_path / "models")  # where "models/tiny" is not
    np.testing.assert_array_equal(pickle.loads(data).transform(X), expected)


def test_a_symlinked_model_directory_is_followed_again_when_unpickled(
    tiny_bert, tmp_path
):
    # models/current -> v1, then re-pointed to v2 (a deployment): the pickle
    # loads what the link names now, not the v1 it named at fit
    v1 = _model_copy(tiny_bert, tmp_path / "v1")
    current = tmp_path / "current"
    current.symlink_to(v1)
    vectorizer = BertSentenceVectorizer(model=current, cache=None).fit()
    assert vectorizer.model_name_or_path_ == str(current)
    data = pickle.dumps(vectorizer)
    _model_copy(tiny_bert, tmp_path / "v2")
    shutil.rmtree(v1)
    current.unlink()
    current.symlink_to(tmp_path / "v2")
    assert pickle.loads(data).transform(["the cat"]).shape == (1, 32)


def test_a_pickle_refuses_a_model_of_another_shape(tiny_bert, tmp_path):
    directory = _model_copy(tiny_bert, tmp_path / "model")
    vectorizer = BertSentenceVectorizer(model=directory, cache=None).fit()
    data = pickle.dumps(vectorizer)
    _model_copy(tiny_bert, directory, hidden_size=48, num_hidden_layers=3)
    unpickled = pickle.loads(data)
    with pytest.raises(ValueError, match="now has 3 layers of size 48.*fit it again"):
        unpickled.transform(["the cat sat"])


def test_a_pickle_whose_model_is_gone_says_how_to_point_it_elsewhere(
    tiny_bert, tmp_path
):
    directory = _model_copy(tiny_bert, tmp_path / "model")
    data = pickle.dumps(BertSentenceVectorizer(model=directory, cache=None).fit())
    shutil.rmtree(directory)
    with pytest.raises(
        ValueError,
        match=r"fitted with model '.*model', which cannot be loaded here: .*no such "
        r"directory.*set_params\(model=\.\.\.\) and fit again",
    ):
        pickle.loads(data).transform(["the cat sat"])


def test_pairs_in_one_column_of_a_dataframe(tiny_bert):
    pairs = pd.Series([("the cat sat", "a dog"), ("hello", "world")], index=[7, 9])
    vectorizer = BertSentenceVectorizer(model=tiny_bert, pairs=True, cache=None)
    expected = vectorizer.fit_transform(pairs)
    framed = vectorizer.set_output(transform="pandas").transform(pairs.to_frame("p"))
    np.testing.assert_array_equal(framed.to_numpy(), expected)
    assert framed.index.tolist() == [7, 9]
    # a missing pair first: the same message as for the Series
    gapped = pd.DataFrame({"p": [None, ("the cat", "a dog")]})
    with pytest.raises(TypeError, match=r"Element 0 of X is NoneType \(None\)"):
        vectorizer.transform(gapped)


@pytest.mark.parametrize("estimator", ["sentence", "word"])
def test_a_failed_refit_leaves_the_estimator_as_it_was(tiny_bert, tmp_path, estimator):
    directory = _model_copy(tiny_bert, tmp_path / "other", num_hidden_layers=3)
    if estimator == "sentence":
        vectorizer, X = BertSentenceVectorizer(model=tiny_bert), ["the cat sat"]
    else:
        vectorizer, X = BertWordVectorizer(model=tiny_bert), ["the [cat] sat"]
    expected = vectorizer.fit(X).transform(X)
    fitted = {k: v for k, v in vars(vectorizer).items() if k.endswith("_")}
    # the other model loads, then a check that needs it fails
    vectorizer.set_params(model=directory, max_length=1000)
    with pytest.raises(ValueError, match="max_length=1000 is more than"):
        vectorizer.fit(X)
    assert {k: v for k, v in vars(vectorizer).items() if k.endswith("_")} == fitted
    np.testing.assert_array_equal(vectorizer.transform(X), expected)
    # a first fit that fails leaves it unfitted
    fresh = clone(vectorizer)
    with pytest.raises(ValueError, match="max_length=1000"):
        fresh.fit(X)
    with pytest.raises(NotFittedError):
        fresh.transform(X)


def _threads_around_a_transform(model: str) -> tuple[int, int, str | None]:
    import os

    import torch

    before = torch.get_num_threads()
    BertSentenceVectorizer(model=model, cache=None).fit_transform(["the cat sat"])
    return before, torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")


def test_the_callers_thread_settings_are_kept(tiny_bert):
    # skbert never sets torch's thread count: in joblib's workers (GridSearchCV
    # with n_jobs) each keeps the share of the cores that joblib gives it
    import os

    import torch

    threads = torch.get_num_threads()
    _threads_around_a_transform(str(tiny_bert))
    assert torch.get_num_threads() == threads
    results = joblib.Parallel(n_jobs=2)(
        joblib.delayed(_threads_around_a_transform)(str(tiny_bert)) for _ in range(2)
    )
    share = max(1, (os.cpu_count() or 1) // 2)
    for before, after, omp in results:
        assert before == after == share
        assert omp == str(share)


def test_the_package_loads_its_estimators_at_first_use():
    import skbert

    assert set(skbert.__all__) <= set(dir(skbert))
    assert skbert.BertSentenceVectorizer is BertSentenceVectorizer
    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        skbert.Nope  # noqa: B018


def test_parameter_errors_are_sklearns_invalid_parameter_error(tiny_bert):
    from sklearn.utils._param_validation import InvalidParameterError

    bad = [
        {"batch_size": "x"},
        {"views": {"a": 1}},
        {"views": []},
        {"views": [{"bogus": 1}]},
    ]
    for estimator_class in (BertSentenceVectorizer, BertWordVectorizer):
        for params in bad:
            with pytest.raises(InvalidParameterError) as raised:
                estimator_class(model=tiny_bert, **params).fit()
            # it crosses process boundaries (a ProcessPoolExecutor pickles it)
            error = pickle.loads(pickle.dumps(raised.value))
            assert type(error) is type(raised.value)
            assert type(error).__name__ == "InvalidParameterError"
            assert str(error) == str(raised.value)


@pytest.mark.parametrize(
    "params",
    [
        {"cache": "none"},  # would be a disk cache directory named "none"
        {"handle_missing": "bogus"},  # would embed None as ""
        {"batch_size": 0},
        {"batch_size": "x"},
        {"max_batch_tokens": -5},
        {"progress_bar": "yes"},
    ],
)
def test_parameters_read_at_each_call_are_checked_at_each_call(
    tiny_bert, tmp_path, monkeypatch, params
):
    from sklearn.utils._param_validation import InvalidParameterError

    monkeypatch.chdir(tmp_path)
    sentence = BertSentenceVectorizer(model=tiny_bert).fit()
    word = BertWordVectorizer(model=tiny_bert).fit()
    sentence.set_params(**params)
    word.set_params(**params)
    calls = [
        lambda: sentence.transform(["a cat", None]),
        lambda: sentence.tokenize(["a cat"]),
        lambda: word.transform([("a cat", 2, 5)]),
        lambda: word.transform_words(["a cat"]),
        lambda: word.tokenize([("a cat", 2, 5)]),
    ]
    (param,) = params
    for call in calls:
        with pytest.raises(InvalidParameterError, match=f"'{param}' parameter"):
            call()
    assert list(tmp_path.iterdir()) == []


def test_a_bare_string_is_a_value_error_as_in_countvectorizer(tiny_bert):
    from sklearn.feature_extraction.text import CountVectorizer

    with pytest.raises(ValueError, match="string object received"):
        CountVectorizer().fit("a cat")
    pairs = BertSentenceVectorizer(model=tiny_bert, pairs=True).fit()
    word = BertWordVectorizer(model=tiny_bert).fit()
    calls = [
        lambda: BertSentenceVectorizer(model=tiny_bert).fit("a cat"),
        lambda: pairs.transform("a cat"),
        lambda: word.transform("the [cat]"),
        lambda: word.transform_words("a cat"),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="string object received"):
            call()


def test_transform_changes_only_its_statistics(tiny_bert):
    # scikit-learn's check_dict_unchanged asks that transform change nothing
    # (the adapter above cannot see it); the statistics of the last call,
    # which the estimators document, are the one exception
    calls = [
        (BertSentenceVectorizer(model=tiny_bert), "transform", ["a cat", "a dog"]),
        (BertWordVectorizer(model=tiny_bert), "transform", [("a cat", 2, 5)]),
        (BertWordVectorizer(model=tiny_bert), "transform_words", ["a cat"]),
    ]
    for estimator, method, X in calls:
        estimator.fit()
        getattr(estimator, method)(X)  # the first call may load lazily
        before = dict(estimator.__dict__)
        getattr(estimator, method)(X)
        after = estimator.__dict__
        changed = {
            key for key in after if key not in before or after[key] is not before[key]
        }
        assert changed == {"transform_stats_"}, (method, changed)


def test_a_pickle_from_before_a_parameter_existed_unpickles(tiny_bert):
    # normalize=False: the default before "auto"
    vectorizer = BertSentenceVectorizer(model=tiny_bert, normalize=False, cache=None)
    expected = vectorizer.fit(["x"]).transform(["the cat sat"])
    state = vectorizer.__getstate__()
    # as an older skbert pickled it
    for name in ("prompt", "prompt_", "prompt_name", "dense", "dense_", "normalize_"):
        del state[name]
    state["views_"] = [
        {k: v for k, v in view.items() if k not in ("dense", "pooled_features")}
        for view in state["views_"]
    ]
    old = BertSentenceVectorizer.__new__(BertSentenceVectorizer)
    old.__setstate__(state)
    np.testing.assert_array_equal(old.transform(["the cat sat"]), expected)
    params = old.get_params()
    assert (params["prompt"], params["prompt_name"], params["dense"]) == (
        "auto",
        None,
        "auto",
    )
    assert params["normalize"] is False  # kept as it was made
    assert clone(old).get_params() == vectorizer.get_params()


def test_a_pickle_whose_model_cannot_be_read_keeps_the_reason(tiny_bert, tmp_path):
    directory = _model_copy(tiny_bert, tmp_path / "model")
    (directory / "modules.json").write_text("[]")
    data = pickle.dumps(BertSentenceVectorizer(model=directory, cache=None).fit())
    (directory / "modules.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"fitted with model .*Expecting property"):
        pickle.loads(data).transform(["the cat sat"])


def test_pairs_in_one_column_of_strings_keep_the_two_columns_message(tiny_bert):
    vectorizer = BertSentenceVectorizer(model=tiny_bert, pairs=True).fit()
    with pytest.raises(ValueError, match="expects two text columns, got a DataFrame"):
        vectorizer.transform(pd.DataFrame({"text": ["the bank", "a cat"]}))


def test_showing_a_fitted_estimator_never_loads_its_model(tiny_bert, tmp_path):
    directory = tmp_path / "model"
    shutil.copytree(tiny_bert, directory)
    fitted = pickle.dumps(BertSentenceVectorizer(model=directory, cache=None).fit())
    vectorizer = pickle.loads(fitted)
    html = vectorizer._repr_html_()  # what a notebook calls to show it
    assert "n_layers_" in html and "_loaded_model" not in vectorizer.__dict__
    assert vectorizer.model_ is not None  # loads when asked for
    assert "model_" in dir(vectorizer)
    shutil.rmtree(directory)  # unpickled where the model is not
    pipeline = Pipeline([("bert", pickle.loads(fitted)), ("clf", LogisticRegression())])
    assert "BertSentenceVectorizer" in pipeline._repr_html_()


def test_polars_input_reads_as_pandas_does(tiny_bert):
    pl = pytest.importorskip("polars")  # in the test extra
    texts = ["the cat sat", "a dog barked", None]
    frame = pl.DataFrame({"text": texts, "n": [1, 2, 3]})
    vectorizer = BertSentenceVectorizer(
        model=tiny_bert, handle_missing="empty", cache=None
    ).fit()
    expected = vectorizer.transform(["the cat sat", "a dog barked", ""])
    for X in (frame["text"], frame.select("text")):
        np.testing.assert_array_equal(vectorizer.transform(X), expected)
    with pytest.raises(ValueError, match=r"2 columns \['text', 'n'\]; select the"):
        vectorizer.transform(frame)
    # a ColumnTransformer hands over a polars table of the columns it names
    features = ColumnTransformer(
        [("bert", clone(vectorizer), ["text"]), ("n", "passthrough", ["n"])]
    ).fit_transform(frame)
    np.testing.assert_array_equal(features[:, :-1], expected)
    out = clone(vectorizer).set_output(transform="polars").fit_transform(frame["text"])
    assert isinstance(out, pl.DataFrame) and out.columns[0] == "bertsentencevectorizer0"
    pairs = BertSentenceVectorizer(model=tiny_bert, pairs=True, cache=None).fit()
    np.testing.assert_array_equal(
        pairs.transform(pl.DataFrame({"a": ["the cat"], "b": ["a dog"]})),
        pairs.transform([("the cat", "a dog")]),
    )
    # a polars column of pairs, or of pre-tokenized texts, holds its rows as Series
    pair_column = pl.DataFrame({"pair": [["the cat", "a dog"]]})["pair"]
    np.testing.assert_array_equal(
        pairs.transform(pair_column), pairs.transform([("the cat", "a dog")])
    )
    words = BertWordVectorizer(model=tiny_bert, cache=None).fit()
    np.testing.assert_array_equal(
        words.transform(
            pl.DataFrame({"tokens": [["the", "river", "bank"]], "index": [2]})
        ),
        words.transform([(["the", "river", "bank"], 2)]),
    )
    tokens = pl.DataFrame({"tokens": [["the", "river", "bank"]]})["tokens"]
    pd.testing.assert_frame_equal(
        words.transform_words(tokens), words.transform_words([["the", "river", "bank"]])
    )
    spans = pl.DataFrame({"text": ["the river bank"], "start": [10], "end": [14]})
    np.testing.assert_array_equal(
        words.transform(spans), words.transform([("the river bank", 10, 14)])
    )
    pd.testing.assert_frame_equal(
        words.transform_words(pl.DataFrame({"text": ["the river bank"]})),
        words.transform_words(["the river bank"]),
    )
