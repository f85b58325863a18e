import numpy as np
import pandas as pd
import pytest

from skbert._validation import (
    check_pairs,
    check_params,
    check_texts,
    normalize_layers,
)


@pytest.mark.parametrize(
    "X",
    [
        ["a", "b"],
        ("a", "b"),
        np.array(["a", "b"], dtype=object),
        np.array(["a", "b"]),
        np.array([["a"], ["b"]], dtype=object),
        pd.Series(["a", "b"], index=[10, 20]),
        pd.DataFrame({"text": ["a", "b"]}),
        [["a"], ["b"]],
    ],
)
def test_check_texts_accepts_containers(X):
    texts, _ = check_texts(X)
    assert texts == ["a", "b"]


def test_check_texts_accepts_generators():
    texts, _ = check_texts(t for t in ["a", "b", "c"])
    assert texts == ["a", "b", "c"]


def test_check_texts_keeps_pandas_index():
    _, index = check_texts(pd.Series(["a", "b"], index=["x", "y"]))
    assert list(index) == ["x", "y"]


@pytest.mark.parametrize("X", ["a text", b"bytes"])
def test_check_texts_rejects_bare_string(X):
    with pytest.raises(ValueError, match="string object received"):
        check_texts(X)


def test_check_texts_rejects_several_columns():
    with pytest.raises(ValueError, match="one column of texts.*2 columns"):
        check_texts(pd.DataFrame({"a": ["x"], "b": ["y"]}))
    with pytest.raises(ValueError, match=r"shape \(1, 2\)"):
        check_texts(np.array([["x", "y"]]))


@pytest.mark.parametrize("missing", [None, np.nan, pd.NA, float("nan")])
def test_check_texts_missing_values_name_count_and_positions(missing):
    X = ["a", missing, "b", missing]
    with pytest.raises(ValueError, match=r"2 missing text\(s\).*position\(s\) 1, 3"):
        check_texts(X)


@pytest.mark.parametrize("wrap", [list, tuple, lambda x: np.array(x, dtype=object)])
@pytest.mark.parametrize("missing", [None, float("nan"), pd.NA])
def test_check_texts_missing_values_in_one_column_rows(wrap, missing):
    # a list of one-item rows, as a one-column table's rows come
    X = [wrap(["a"]), wrap([missing])]
    with pytest.raises(ValueError, match=r"1 missing text\(s\).*position\(s\) 1"):
        check_texts(X)
    assert check_texts(X, handle_missing="empty")[0] == ["a", ""]


def test_check_texts_missing_values_many_positions_are_elided():
    with pytest.raises(ValueError, match=r"7 missing.*0, 1, 2, 3, 4, \.\.\."):
        check_texts([None] * 7)


def test_check_texts_missing_as_empty_opt_in():
    texts, _ = check_texts(pd.Series(["a", None, np.nan]), handle_missing="empty")
    assert texts == ["a", "", ""]


@pytest.mark.parametrize(
    "item, name", [(3, "int"), (2.5, "float"), (["a", 2], "list"), (b"a", "bytes")]
)
def test_check_texts_non_str_names_position(item, name):
    with pytest.raises(TypeError, match=f"Element 1 of X is {name}"):
        check_texts(["a", item])


@pytest.mark.parametrize("pair", [("a", "b"), ["a", "b"]])
def test_check_texts_points_pairs_to_the_pairs_option(pair):
    with pytest.raises(TypeError, match="Element 1 of X is a pair.*pairs=True"):
        check_texts(["a", pair])


@pytest.mark.parametrize("check", [check_texts, check_pairs])
def test_a_dict_of_texts_is_refused_not_read_by_its_keys(check):
    texts = {"id-1": "the river bank", "id-2": "the bank vault"}
    with pytest.raises(TypeError, match=r"X is a dict; .*keys.*list\(X.values\(\)\)"):
        check(texts)
    assert check_texts(list(texts.values()))[0] == list(texts.values())
    assert list(check_texts(pd.Series(texts))[1]) == ["id-1", "id-2"]


def test_check_texts_rejects_non_iterable():
    with pytest.raises(TypeError, match="Iterable over raw text documents expected"):
        check_texts(3)


@pytest.mark.parametrize(
    "layers, expected",
    [
        (-1, [12]),
        (0, [0]),
        ([-4, -3, -2, -1], [9, 10, 11, 12]),
        (-13, [0]),  # the embeddings, as hidden_states[-13]
        (12, [12]),
    ],
)
def test_normalize_layers(layers, expected):
    assert normalize_layers(layers, 13) == expected


@pytest.mark.parametrize("layers", [13, -14, [0, 20]])
def test_normalize_layers_out_of_range_gives_valid_range(layers):
    with pytest.raises(ValueError, match=r"13 hidden-state outputs.*\[-13, 12\]"):
        normalize_layers(layers, 13)


def test_check_params_lists_allowed_values():
    from skbert import BertSentenceVectorizer

    estimator = BertSentenceVectorizer(pooling="avg")
    with pytest.raises(ValueError) as info:
        check_params(estimator, estimator._parameter_constraints)
    message = str(info.value)
    assert "The 'pooling' parameter of BertSentenceVectorizer" in message
    assert "'mean'" in message and "'cls'" in message and "Got 'avg' instead" in message


@pytest.mark.parametrize("batch_size", ["8", 0, 2.0, True])
def test_check_params_error_is_value_and_type_error(batch_size):
    from skbert import BertSentenceVectorizer

    estimator = BertSentenceVectorizer(batch_size=batch_size)
    for error in (ValueError, TypeError):
        with pytest.raises(error, match=r"'batch_size'.*\[1, inf\].*Got"):
            check_params(estimator, estimator._parameter_constraints)


@pytest.mark.parametrize("value", ["8", 0, 2.0, True, "none"])
def test_bad_max_batch_tokens_names_its_options(value):
    from skbert import BertSentenceVectorizer, BertWordVectorizer

    for cls in (BertSentenceVectorizer, BertWordVectorizer):
        with pytest.raises(ValueError, match=r"'max_batch_tokens'.*\[1, inf\] or None"):
            cls(max_batch_tokens=value).fit()


@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_model_name_is_refused(tmp_path, monkeypatch, value):
    # "" would load whatever model the current directory holds
    from skbert import BertSentenceVectorizer, BertWordVectorizer

    monkeypatch.chdir(tmp_path)
    for cls in (BertSentenceVectorizer, BertWordVectorizer):
        with pytest.raises(ValueError, match=r"'model' parameter.*non-empty str"):
            cls(model=value).fit()


@pytest.mark.parametrize("param", ["progress_bar", "normalize", "pairs"])
def test_numpy_booleans_are_booleans(param):
    # what a bool read from an array or a DataFrame cell is
    from skbert import BertSentenceVectorizer

    estimator = BertSentenceVectorizer(**{param: np.bool_(False)})
    check_params(estimator, estimator._parameter_constraints)


def test_a_lone_surrogate_is_named_before_the_tokenizer_sees_it(tiny_bert):
    # the tokenizer refuses it with "TextEncodeInput must be Union[...]"
    from skbert import BertSentenceVectorizer, BertWordVectorizer

    bad = "a bad \ud83d text"
    sentence = BertSentenceVectorizer(model=tiny_bert).fit()
    pairs = BertSentenceVectorizer(model=tiny_bert, pairs=True).fit()
    word = BertWordVectorizer(model=tiny_bert).fit()
    cases = [
        (lambda: sentence.transform(["fine", bad]), "Element 1 of X"),
        (lambda: sentence.tokenize([bad]), "Element 0 of X"),
        (lambda: pairs.transform([("fine", bad)]), "second text of element 0 of X"),
        (lambda: word.transform([("fine", 0, 4), (bad, 0, 1)]), "sample 1 of X"),
        (lambda: word.transform([(["bad", "\udcff"], 0)]), "sample 0 of X"),
        (lambda: word.transform_words(["fine", bad]), "Text 1"),
    ]
    with pytest.raises(
        ValueError, match=r"character 6 is the lone surrogate '\\ud83d'"
    ):
        sentence.transform([bad])
    for call, where in cases:
        with pytest.raises(
            ValueError, match=f"{where} is not valid Unicode.*surrogate"
        ):
            call()
    # a whole emoji (a surrogate pair in JSON) is valid and gets a vector
    assert np.isfinite(sentence.transform(["\U0001f99c"])).all()


def test_a_view_that_is_not_a_dict_is_shown_one_of_its_own_class(tiny_bert):
    from skbert import BertWordVectorizer

    with pytest.raises(ValueError, match="such as {'layers': -1, 'subword_pooling'"):
        BertWordVectorizer(model=tiny_bert, views=["last"]).fit()


def test_check_texts_reads_a_pyarrow_array():
    pa = pytest.importorskip("pyarrow")
    assert check_texts(pa.array(["a", "b"]))[0] == ["a", "b"]
    assert check_texts(pa.chunked_array([["a"], ["b", "c"]]))[0] == ["a", "b", "c"]
    with pytest.raises(ValueError, match="1 missing"):
        check_texts(pa.array(["a", None]))


@pytest.mark.parametrize(
    "item, advice",
    [
        (b"the cat", r"decode it first, e\.g\. item\.decode\('utf-8'\)"),
        (["the", "cat", "sat"], r"a list of 3 words.*' '\.join\(words\)"),
        (("hello", "world"), r"a pair of texts or a list of two words.*pairs=True"),
    ],
)
def test_check_texts_gives_advice_that_works(item, advice):
    with pytest.raises(TypeError, match=advice):
        check_texts(["a", item])


def test_layers_and_device_take_the_types_users_have(tiny_bert):
    import torch

    from skbert import BertSentenceVectorizer

    texts = ["the bank of the river", "a cat"]
    expected = BertSentenceVectorizer(
        model=tiny_bert, layers=[-2, -1], layer_combine="concat", cache=None
    ).fit_transform(texts)
    for layers in (range(-2, 0), np.arange(-2, 0), (-2, -1)):
        vectorizer = BertSentenceVectorizer(
            model=tiny_bert, layers=layers, layer_combine="concat", cache=None
        )
        np.testing.assert_array_equal(vectorizer.fit_transform(texts), expected)
        assert vectorizer.layers_ == [1, 2]
    views = [{"layers": np.arange(-2, 0)}, {"layers": range(1, 2)}]
    names = BertSentenceVectorizer(model=tiny_bert, views=views).fit()
    assert names.get_feature_names_out()[[0, 32]].tolist() == ["l-2.-1_0", "l1_0"]
    for bad in (np.array([[1]]), np.array([1.0]), range(0)):
        with pytest.raises(ValueError, match="'layers' parameter"):
            BertSentenceVectorizer(model=tiny_bert, layers=bad).fit()
    fitted = BertSentenceVectorizer(model=tiny_bert, device=torch.device("cpu")).fit()
    assert fitted.device_ == torch.device("cpu")
    again = BertSentenceVectorizer(model=tiny_bert, device=fitted.device_).fit()
    assert again.device_ == fitted.device_


def test_a_pyarrow_table_is_pointed_to_its_column():
    pa = pytest.importorskip("pyarrow")
    table = pa.table({"text": ["a", "b"], "label": [0, 1]})
    with pytest.raises(ValueError, match=r"pyarrow Table.*X.column\('text'\)"):
        check_texts(table)


def test_numpy_layer_indices_are_shown_as_ints():
    with pytest.raises(ValueError, match=r"layers=\[99\] is out of range"):
        normalize_layers(np.array([99]), 7)


def test_a_layer_named_twice_is_an_error():
    with pytest.raises(
        ValueError, match=r"layers=\[-1, 6\] names hidden state 6 twice \(-1 and 6 "
    ):
        normalize_layers([-1, 6], 7)
    with pytest.raises(ValueError, match=r"\[2, 2\] names hidden state 2 twice; list"):
        normalize_layers([2, 2], 7)
    assert normalize_layers([-1, 5], 7) == [6, 5]


def test_layers_all_is_every_hidden_state(tiny_bert):
    import torch
    from transformers import AutoModel, AutoTokenizer

    from skbert import BertSentenceVectorizer

    vectorizer = BertSentenceVectorizer(
        model=tiny_bert, layers="all", layer_combine="concat", pooling="cls"
    )
    X = vectorizer.fit_transform(["The cat sat."])
    assert vectorizer.layers_ == [0, 1, 2]
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    model = AutoModel.from_pretrained(tiny_bert).eval()
    with torch.no_grad():
        states = model(
            **tokenizer(["The cat sat."], return_tensors="pt"),
            output_hidden_states=True,
        ).hidden_states
    expected = torch.cat([state[0, 0] for state in states]).numpy()
    np.testing.assert_allclose(X[0], expected, atol=1e-5)
    views = BertSentenceVectorizer(
        model=tiny_bert, views={"every": {"layers": "all"}}
    ).fit()
    assert views.views_[0]["layers"] == [0, 1, 2]
    with pytest.raises(ValueError, match="names hidden state 2 twice"):
        BertSentenceVectorizer(model=tiny_bert, layers=[-1, 2]).fit()


def test_check_pairs_shapes_and_missing_texts():
    with pytest.raises(ValueError, match="Element 0 of X has 3 items"):
        check_pairs([("a", "b", "c")])
    with pytest.raises(ValueError, match="Element 1 of X has 1 items"):
        check_pairs([("a", "b"), ("a",)])
    # a pair missing both texts counts once; "empty" embeds them as ""
    with pytest.raises(
        ValueError, match=r"X contains 1 missing pair\(s\) .* position\(s\) 1;"
    ):
        check_pairs([("a", "b"), (None, np.nan)])
    firsts, seconds, _ = check_pairs([("a", None), (None, "b")], handle_missing="empty")
    assert (firsts, seconds) == (["a", ""], ["", "b"])


def test_max_length_runs_from_2_to_what_the_model_accepts(tiny_bert):
    from skbert import BertSentenceVectorizer

    for max_length in (2, 64):  # tiny_bert has 64 positions
        vectorizer = BertSentenceVectorizer(model=str(tiny_bert), max_length=max_length)
        assert vectorizer.fit().max_length_ == max_length
    for max_length, said in ((1, "no room for the special tokens"), (65, "accepts")):
        with pytest.raises(ValueError, match=said):
            BertSentenceVectorizer(model=str(tiny_bert), max_length=max_length).fit()
