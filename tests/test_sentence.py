import json
import time
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.pipeline import Pipeline
from transformers import AutoModel, AutoTokenizer

from skbert import BertSentenceVectorizer, BertWordVectorizer

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
    vectorizer = BertSentenceVectorizer()  # the defaults: its config, Normalize too
    with pytest.warns(UserWarning, match="1 of 5 distinct texts"):
        X = vectorizer.fit_transform(texts)
    reference = SentenceTransformer(str(bundled_model_path()), device="cpu").encode(
        texts, convert_to_numpy=True
    )
    assert vectorizer.normalize_ is True
    assert np.abs(X - reference).max() <= 1e-6


def test_normalize_auto_follows_the_normalize_module_for_its_own_vectors(
    tiny_bert, tmp_path
):
    from sentence_transformers import SentenceTransformer, models

    texts = ["The cat sat.", "A longer sentence about embeddings!", ""]
    directory = _saved_by_sentence_transformers(
        tiny_bert,
        tmp_path / "st",
        models.Pooling(32, pooling_mode="mean"),
        models.Normalize(),
    )
    vectorizer = BertSentenceVectorizer(model=directory, cache=None)
    X = vectorizer.fit_transform(texts)
    assert vectorizer.normalize_ is True
    reference = SentenceTransformer(str(directory), device="cpu").encode(texts)
    np.testing.assert_allclose(np.linalg.norm(reference, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(X, reference, atol=1e-5)
    # other layers or poolings are not the config's vectors: left as pooled
    for other in (
        dict(layers=-2),
        dict(pooling="max"),
        dict(include_special_tokens=False),
        dict(normalize=False),
    ):
        pooled = BertSentenceVectorizer(model=directory, cache=None, **other)
        rows = pooled.fit_transform(texts)
        assert pooled.normalize_ is False
        assert np.abs(np.linalg.norm(rows, axis=1) - 1).max() > 1e-2
        forced = pooled.set_params(normalize=True).fit_transform(texts)
        np.testing.assert_allclose(
            forced,
            rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12),
            atol=1e-6,
        )
    # each view resolves its own "auto"
    views = BertSentenceVectorizer(
        model=directory,
        cache=None,
        views={"st": {}, "deep": {"layers": -2}, "norm": {"normalize": "auto"}},
    ).fit(texts)
    assert [v["normalize"] for v in views.views_] == [True, False, True]
    np.testing.assert_allclose(views.transform(texts)[:, :32], reference, atol=1e-5)
    # cls takes [CLS] whatever include_special_tokens says: still its vectors
    cls = _saved_by_sentence_transformers(
        tiny_bert,
        tmp_path / "cls",
        models.Pooling(32, pooling_mode="cls"),
        models.Normalize(),
    )
    with pytest.warns(UserWarning, match="'include_special_tokens' will not be used"):
        no_special = BertSentenceVectorizer(model=cls, include_special_tokens=False)
        rows = no_special.fit_transform(texts)
    assert no_special.normalize_ is True
    st_cls = SentenceTransformer(str(cls), device="cpu")
    np.testing.assert_allclose(rows, st_cls.encode(texts), atol=1e-5)
    # a module skbert leaves out: its vectors cannot be encode's, none is scaled
    dense = models.Dense(32, 8)
    left_out = _saved_by_sentence_transformers(
        tiny_bert,
        tmp_path / "left-out",
        models.Pooling(32, pooling_mode="mean"),
        dense,
        models.Normalize(),
    )
    SentenceTransformer(str(left_out), device="cpu").save(
        str(left_out), safe_serialization=False
    )
    (left_out / "2_Dense" / "model.safetensors").unlink()
    with pytest.warns(UserWarning, match="skbert does not apply: Dense"):
        partial = BertSentenceVectorizer(model=left_out)
        partial.fit()
    assert partial.normalize_ is False and partial.dense_ is False
    # a config without Normalize, and a model without a config: never scaled
    plain = _saved_by_sentence_transformers(
        tiny_bert, tmp_path / "plain", models.Pooling(32, pooling_mode="mean")
    )
    for model in (plain, tiny_bert):
        assert BertSentenceVectorizer(model=model).fit().normalize_ is False


@pytest.mark.parametrize(
    "modes, pooling",
    [
        (["pooling_mode_mean_tokens"], "mean"),
        (["pooling_mode_max_tokens"], "max"),
        (["pooling_mode_cls_token"], "cls"),
        (["pooling_mode_mean_sqrt_len_tokens"], "mean_sqrt_len"),
        (["pooling_mode_lasttoken"], "last"),
        # sentence-transformers puts max before mean
        (["pooling_mode_mean_tokens", "pooling_mode_max_tokens"], "max_mean"),
        (None, "mean"),  # a config that names no mode
    ],
)
def test_auto_equals_sentence_transformers_for_each_pooling_config(
    tiny_bert, tmp_path, st_config, modes, pooling
):
    import shutil

    from sentence_transformers import SentenceTransformer

    directory = st_config(shutil.copytree(tiny_bert, tmp_path / "st"), modes)
    texts = ["The cat sat.", "A longer sentence about embeddings!", "", "word " * 40]
    vectorizer = BertSentenceVectorizer(model=directory)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the truncation warning
        X = vectorizer.fit_transform(texts)
    assert (vectorizer.layers_, vectorizer.pooling_) == ([2], pooling)
    reference = SentenceTransformer(str(directory), device="cpu").encode(texts)
    np.testing.assert_allclose(X, reference, atol=1e-5)


def _saved_by_sentence_transformers(tiny_bert, directory, *modules, **transformer):
    """``directory``: tiny_bert saved by sentence-transformers itself, the
    encoder followed by ``modules``."""
    from sentence_transformers import SentenceTransformer, models

    encoder = models.Transformer(str(tiny_bert), **transformer)
    SentenceTransformer(modules=[encoder, *modules], device="cpu").save(str(directory))
    return directory


@pytest.mark.parametrize(
    "mode, pooling",
    [
        ("cls", "cls"),
        ("max", "max"),
        ("mean", "mean"),
        ("mean_sqrt_len_tokens", "mean_sqrt_len"),
        ("lasttoken", "last"),
        (["max", "mean"], "max_mean"),
        (["mean", "max"], "mean_max"),  # concatenated in the order given
    ],
)
def test_auto_follows_a_model_saved_by_sentence_transformers(
    tiny_bert, tmp_path, mode, pooling
):
    # sentence-transformers 6 writes "pooling_mode" (a name or a list), and
    # module types such as "...sentence_transformer.modules.pooling.Pooling"
    from sentence_transformers import SentenceTransformer, models

    directory = _saved_by_sentence_transformers(
        tiny_bert, tmp_path / "st", models.Pooling(32, pooling_mode=mode)
    )
    texts = ["The cat sat.", "A longer sentence about embeddings!", ""]
    vectorizer = BertSentenceVectorizer(model=directory, cache=None)
    X = vectorizer.fit_transform(texts)
    assert (vectorizer.layers_, vectorizer.pooling_) == ([2], pooling)
    reference = SentenceTransformer(str(directory), device="cpu").encode(texts)
    np.testing.assert_allclose(X, reference, atol=1e-5)


def test_prompts_follow_sentence_transformers(tiny_bert, tmp_path):
    from sentence_transformers import SentenceTransformer, models

    directory = _saved_by_sentence_transformers(
        tiny_bert, tmp_path / "st", models.Pooling(32, pooling_mode="mean")
    )
    st = SentenceTransformer(str(directory), device="cpu")
    st.prompts, st.default_prompt_name = {"query": "query: "}, "query"
    st.save(str(directory))
    st = SentenceTransformer(str(directory), device="cpu")
    texts = ["The cat sat.", "A longer sentence about embeddings!", ""]
    # "auto": the default prompt, as encode puts it before each text
    vectorizer = BertSentenceVectorizer(model=directory, cache=None)
    X = vectorizer.fit_transform(texts)
    assert vectorizer.prompt_ == "query: "
    np.testing.assert_allclose(X, st.encode(texts), atol=1e-5)
    tokens = vectorizer.tokenize(["The cat sat."])["token"].tolist()
    prompted = vectorizer.tokenizer_.tokenize("query: The cat sat.")
    assert tokens == ["[CLS]", *prompted, "[SEP]"] and "q" in tokens[1]
    # a prompt of one's own, or none
    own = BertSentenceVectorizer(model=directory, prompt="passage: ", cache=None)
    np.testing.assert_allclose(
        own.fit_transform(texts), st.encode(texts, prompt="passage: "), atol=1e-5
    )
    for none in (None, ""):
        plain = BertSentenceVectorizer(model=directory, prompt=none, cache=None)
        np.testing.assert_allclose(
            plain.fit_transform(texts), st.encode(texts, prompt=""), atol=1e-5
        )
        assert plain.prompt_ == ""
    # pairs take no prompt: "auto" puts none, a given one is an error
    pairs = BertSentenceVectorizer(model=directory, pairs=True, cache=None).fit()
    assert pairs.prompt_ == ""
    with pytest.raises(ValueError, match="not available with pairs=True"):
        BertSentenceVectorizer(model=directory, pairs=True, prompt="q: ").fit()
    # every long_text keeps the prompt at the head of what the model reads, so
    # texts that fit get encode's vectors under each, without a word said
    for long_text in ("truncate_tail", "truncate_head_tail", "window", "window_max"):
        auto = BertSentenceVectorizer(model=directory, long_text=long_text, cache=None)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = auto.fit_transform(texts)
        assert auto.prompt_ == "query: "
        np.testing.assert_allclose(got, st.encode(texts), atol=1e-5)


@pytest.mark.parametrize(
    "long_text",
    ["truncate", "truncate_tail", "truncate_head_tail", "window", "window_max"],
)
def test_a_prompt_heads_every_row_of_a_long_text(tiny_bert, long_text):
    document = " ".join(["the cat sat on the river bank", "a dog barked"] * 6)
    short = "a dog barked"
    vectorizer = BertSentenceVectorizer(
        model=tiny_bert,
        prompt="the bank: ",
        long_text=long_text,
        max_length=16,
        layers=-1,
        pooling="mean",
        include_special_tokens=False,
        cache=None,
    ).fit()
    tokenizer = vectorizer.tokenizer_
    prompt = tokenizer.tokenize("the bank: ")
    words = tokenizer.tokenize(document)
    assert len(prompt) == 3 and len(words) > 40
    room = 16 - 2 - len(prompt)  # for text, besides [CLS], [SEP] and the prompt
    windows = long_text.startswith("window")
    assert vectorizer.stride_ == (room // 4 if windows else vectorizer.stride_)
    tokens = vectorizer.tokenize([document, short])
    rows = [
        row for _, row in tokens.groupby(["sample", "window"] if windows else "sample")
    ]
    step = room - vectorizer.stride_
    expected = {
        "truncate": [words[:room]],
        "truncate_tail": [words[-room:]],
        "truncate_head_tail": [words[: room // 4] + words[-(room - room // 4) :]],
    }.get(long_text) or [
        words[k : k + room] for k in range(0, len(words) - room + step, step)
    ]
    expected.append(tokenizer.tokenize(short))
    assert len(rows) == len(expected)
    for row, text in zip(rows, expected, strict=True):
        assert row["token"].tolist() == ["[CLS]", *prompt, *text, "[SEP]"]
    if windows:  # the windows cover the text, and the last one ends it
        assert expected[-2][-1] == words[-1] and len(expected[-2]) <= room
    # the vectors are the model's on those rows, pooled as long_text says
    model = AutoModel.from_pretrained(tiny_bert).eval()
    pooled = []
    for row in rows:
        ids = torch.tensor([row["token_id"].tolist()])
        with torch.no_grad():
            states = model(input_ids=ids).last_hidden_state[0]
        text = ~torch.tensor(row["special"].tolist())
        pooled.append((states[text].mean(0).numpy(), int(text.sum())))
    vectors = np.stack([vector for vector, _ in pooled])
    weights = np.array([n for _, n in pooled], dtype=np.float64)
    if long_text == "window":
        long = (vectors[:-1] * weights[:-1, None]).sum(0) / weights[:-1].sum()
    else:
        long = vectors[:-1].max(0)  # one row, or window_max
    X = vectorizer.transform([document, short])
    np.testing.assert_allclose(X, np.stack([long, vectors[-1]]), atol=1e-5)
    stats = vectorizer.transform_stats_
    assert stats["n_windows"] == len(rows)
    assert stats["n_truncated"] == (0 if windows else 1)


def test_a_prompt_must_leave_room_for_text(tiny_bert):
    # "the bank: " takes 3 tokens; [CLS] and [SEP] 2 more
    with pytest.raises(
        ValueError, match=r"takes 3 tokens, which leaves no room .*max_length >= 6"
    ):
        BertSentenceVectorizer(model=tiny_bert, prompt="the bank: ", max_length=5).fit()
    BertSentenceVectorizer(model=tiny_bert, prompt="the bank: ", max_length=6).fit()
    with pytest.raises(
        ValueError, match=r"hold 5 tokens of text after the prompt's 3; use stride < 5"
    ):
        BertSentenceVectorizer(
            model=tiny_bert,
            prompt="the bank: ",
            max_length=10,
            long_text="window",
            stride=5,
        ).fit()


def test_dense_layers_of_a_sentence_transformers_model_are_applied(tiny_bert, tmp_path):
    from sentence_transformers import SentenceTransformer, models

    texts = ["The cat sat.", "A longer sentence about embeddings!", ""]
    directory = _saved_by_sentence_transformers(
        tiny_bert,
        tmp_path / "st",
        models.Pooling(32, pooling_mode="mean"),
        models.Dense(32, 8),  # Tanh
        models.Normalize(),
    )
    st = SentenceTransformer(str(directory), device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing left unapplied
        vectorizer = BertSentenceVectorizer(model=directory, cache=tmp_path / "c")
        X = vectorizer.fit_transform(texts)
    assert X.shape == (3, 8) and vectorizer.dense_ and vectorizer.normalize_
    np.testing.assert_allclose(X, st.encode(texts), atol=1e-5)
    np.testing.assert_array_equal(vectorizer.transform(texts), X)  # from the cache
    dense = st[2]
    weight, bias = dense.linear.weight.detach(), dense.linear.bias.detach()
    # dense=False: the pooled vectors, not encode's, so not normalised either;
    # other layers: not the config's vectors
    pooled = BertSentenceVectorizer(model=directory, dense=False)
    rows = pooled.fit_transform(texts)
    assert rows.shape == (3, 32) and not pooled.dense_ and not pooled.normalize_
    plain = BertSentenceVectorizer(model=tiny_bert, layers=-1, pooling="mean")
    np.testing.assert_allclose(rows, plain.fit_transform(texts), atol=1e-5)
    deep = BertSentenceVectorizer(model=directory, layers=-2, cache=None)
    assert deep.fit_transform(texts).shape == (3, 32) and not deep.dense_
    # dense=True applies them to any vectors of their input width
    forced = BertSentenceVectorizer(model=directory, layers=-2, dense=True)
    expected = torch.tanh(torch.from_numpy(deep.transform(texts)) @ weight.T + bias)
    np.testing.assert_allclose(forced.fit_transform(texts), expected, atol=1e-5)
    with pytest.raises(ValueError, match="read 32 features, to vectors of 64"):
        BertSentenceVectorizer(model=directory, pooling="mean_max", dense=True).fit()
    # views: each view as it resolves
    views = BertSentenceVectorizer(
        model=directory, views={"st": {}, "deep": {"layers": -2}}
    ).fit()
    assert [v["n_features"] for v in views.views_] == [8, 32]
    assert views.get_feature_names_out()[[7, 8]].tolist() == ["st_7", "deep_0"]
    np.testing.assert_allclose(
        views.transform(texts), np.hstack([X, deep.transform(texts)]), atol=1e-5
    )
    # a model without Dense layers: dense=True has nothing to apply
    with pytest.warns(UserWarning, match="'dense' will not be used"):
        BertSentenceVectorizer(model=tiny_bert, dense=True).fit()


def test_a_dense_layer_skbert_cannot_read_is_named(tiny_bert, tmp_path):
    from sentence_transformers import SentenceTransformer, models

    texts = ["The cat sat.", "A longer sentence about embeddings!"]
    identity = models.Dense(32, 32, bias=False, activation_function=torch.nn.Identity())
    directory = _saved_by_sentence_transformers(
        tiny_bert, tmp_path / "id", models.Pooling(32, pooling_mode="cls"), identity
    )
    X = BertSentenceVectorizer(model=directory).fit_transform(texts)
    st = SentenceTransformer(str(directory), device="cpu")
    np.testing.assert_allclose(X, st.encode(texts), atol=1e-5)
    st.save(str(tmp_path / "bin"), safe_serialization=False)  # pytorch_model.bin
    with pytest.warns(UserWarning, match=r"Dense \(2_Dense: its weights are not in"):
        X = BertSentenceVectorizer(model=tmp_path / "bin").fit_transform(texts)
    assert X.shape == (2, 32)


def test_a_dense_activation_with_weights_of_its_own_is_read(tiny_bert, tmp_path):
    from sentence_transformers import SentenceTransformer, models

    texts = ["The cat sat.", "A longer sentence about embeddings!"]
    prelu = torch.nn.PReLU()
    with torch.no_grad():
        prelu.weight.fill_(-0.7)  # not its default 0.25
    dense = models.Dense(32, 16, activation_function=prelu)
    directory = _saved_by_sentence_transformers(
        tiny_bert, tmp_path / "prelu", models.Pooling(32, pooling_mode="mean"), dense
    )
    st = SentenceTransformer(str(directory), device="cpu")
    assert st[2].activation_function.weight.item() == pytest.approx(-0.7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        X = BertSentenceVectorizer(model=directory, cache=None).fit_transform(texts)
    np.testing.assert_allclose(X, st.encode(texts), atol=1e-5)
    # under a float64 default dtype the activation's weight stays float32
    expected = st.encode(texts)
    again = _saved_by_sentence_transformers(
        tiny_bert, tmp_path / "again", models.Pooling(32, pooling_mode="mean"), dense
    )
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        X = BertSentenceVectorizer(model=again, cache=None).fit_transform(texts)
    finally:
        torch.set_default_dtype(default)
    np.testing.assert_allclose(X, expected, atol=1e-5)
    # an activation that acts otherwise in training runs as in encode, in eval mode
    dropout = models.Dense(32, 16, activation_function=torch.nn.Dropout(0.5))
    directory = _saved_by_sentence_transformers(
        tiny_bert,
        tmp_path / "dropout",
        models.Pooling(32, pooling_mode="mean"),
        dropout,
    )
    st = SentenceTransformer(str(directory), device="cpu")
    vectorizer = BertSentenceVectorizer(model=directory, cache=None).fit()
    np.testing.assert_allclose(vectorizer.transform(texts), st.encode(texts), atol=1e-5)
    np.testing.assert_allclose(vectorizer.transform(texts), st.encode(texts), atol=1e-5)
    # an activation that cannot be built without arguments is left out, named
    config = directory / "2_Dense" / "config.json"
    settings = json.loads(config.read_text())
    settings["activation_function"] = "torch.nn.modules.activation.Threshold"
    config.write_text(json.dumps(settings))
    with pytest.warns(UserWarning, match=r"its activation Threshold cannot be built"):
        BertSentenceVectorizer(model=directory, cache=None).fit()


def test_dense_layers_skbert_cannot_apply_in_order_are_left_out_with_a_warning(
    tiny_bert, tmp_path
):
    from sentence_transformers import models

    texts = ["The cat sat.", "A longer sentence about embeddings!"]
    mean = BertSentenceVectorizer(model=tiny_bert, layers=-1, pooling="mean")
    pooled = mean.fit_transform(texts)
    cases = {
        # a Normalize before the Dense: applying the Dense alone would be wrong
        "normalize-first": (
            [models.Normalize(), models.Dense(32, 8)],
            None,
            r"Dense \(3_Dense: it comes after a Normalize\)",
        ),
        # the first of two Dense layers cannot be read: neither is applied
        "first-unreadable": (
            [models.Dense(32, 16), models.Dense(16, 8)],
            "2_Dense/model.safetensors",
            r"Dense \(2_Dense: .*\), Dense \(3_Dense: a module before it is not",
        ),
        "corrupt": ([models.Dense(32, 8)], "corrupt", r"cannot be read"),
        "bad-config": ([models.Dense(32, 8)], "bad-config", "config.json cannot be"),
        "no-config": ([models.Dense(32, 8)], "2_Dense/config.json", "no config.json"),
    }
    for name, (modules, broken, says) in cases.items():
        directory = _saved_by_sentence_transformers(
            tiny_bert,
            tmp_path / name,
            models.Pooling(32, pooling_mode="mean"),
            *modules,
        )
        if broken == "corrupt":
            (directory / "2_Dense" / "model.safetensors").write_bytes(b"\xff" * 64)
        elif broken == "bad-config":
            (directory / "2_Dense" / "config.json").write_text("{not json")
        elif broken:
            (directory / broken).unlink()
        with pytest.warns(UserWarning, match=says):
            vectorizer = BertSentenceVectorizer(model=directory)
            X = vectorizer.fit_transform(texts)
        assert not vectorizer.dense_ and not vectorizer.normalize_, name
        np.testing.assert_allclose(X, pooled, atol=1e-5)


def _mean_then_dense(tiny_bert, directory, out_features=8):
    """``directory``: tiny_bert saved by sentence-transformers with mean pooling
    and a Dense layer to ``out_features``; returns it and the Dense weights."""
    from sentence_transformers import models

    _saved_by_sentence_transformers(
        tiny_bert,
        directory,
        models.Pooling(32, pooling_mode="mean"),
        models.Dense(32, out_features),
    )
    return directory, directory / "2_Dense" / "model.safetensors"


def test_dense_weights_in_bfloat16_are_applied(tiny_bert, tmp_path):
    from safetensors.torch import load_file, save_file

    texts = ["The cat sat.", "A longer sentence about embeddings!"]
    directory, weights = _mean_then_dense(tiny_bert, tmp_path / "st")
    tensors = {k: v.to(torch.bfloat16) for k, v in load_file(str(weights)).items()}
    save_file(tensors, str(weights))
    X = BertSentenceVectorizer(model=directory).fit_transform(texts)
    pooled = BertSentenceVectorizer(model=directory, dense=False).fit_transform(texts)
    w, b = (tensors[k].float() for k in ("linear.weight", "linear.bias"))
    expected = torch.tanh(torch.from_numpy(pooled) @ w.T + b).numpy()
    np.testing.assert_allclose(X, expected, atol=1e-5)


@pytest.mark.parametrize("long_text", ["window", "window_max"])
def test_with_windows_the_combined_windows_go_through_the_dense_layers(
    tiny_bert, tmp_path, long_text
):
    from safetensors.numpy import load_file

    # the text's pooled vector (its windows combined) gets the Dense layers,
    # as normalize comes after the windows too: dense=True is exactly the
    # Dense layers on what dense=False gives
    directory, _ = _mean_then_dense(tiny_bert, tmp_path / "st")
    texts = ["the bank robber was seen fishing on the river bank " * 3, "a cat"]
    settings = dict(model=directory, long_text=long_text, max_length=8, cache=None)
    dense = BertSentenceVectorizer(**settings, views={"st": {}, "deep": {"layers": 1}})
    X = dense.fit_transform(texts)
    assert dense.transform_stats_["n_windowed"] == 1
    pooled = BertSentenceVectorizer(**settings, dense=False).fit_transform(texts)
    deep = BertSentenceVectorizer(**settings, layers=1).fit_transform(texts)
    weights = load_file(str(directory / "2_Dense" / "model.safetensors"))
    expected = np.tanh(pooled @ weights["linear.weight"].T + weights["linear.bias"])
    np.testing.assert_allclose(X, np.hstack([expected, deep]), atol=1e-5)


def test_dense_weights_changed_on_disk_are_read_again(tiny_bert, tmp_path):
    import pickle

    from safetensors.numpy import load_file, save_file
    from sentence_transformers import SentenceTransformer

    texts = ["The cat sat.", "A longer sentence about embeddings!"]
    directory, weights = _mean_then_dense(tiny_bert, tmp_path / "st")
    cache = tmp_path / "cache"  # a disk cache: its entries are the model's
    fitted = BertSentenceVectorizer(model=directory, cache=cache).fit(texts)
    before = fitted.transform(texts)
    saved = pickle.dumps(fitted)
    tensors = load_file(str(weights))
    save_file({k: -v for k, v in tensors.items()}, str(weights))
    refitted = BertSentenceVectorizer(model=directory, cache=cache).fit(texts)
    again = refitted.transform(texts)
    assert refitted.transform_stats_["cache_hits"] == 0  # computed again, once
    reference = SentenceTransformer(str(directory), device="cpu").encode(texts)
    np.testing.assert_allclose(again, reference, atol=1e-5)
    assert np.abs(again - before).max() > 1e-3
    np.testing.assert_array_equal(refitted.transform(texts), again)
    assert refitted.transform_stats_["cache_hits"] == len(texts)
    # another width than at fit: fit again, never a broadcasting error
    _mean_then_dense(tiny_bert, directory, out_features=4)
    with pytest.raises(ValueError, match="Dense layers of .* have changed since"):
        pickle.loads(saved).transform(texts)


def test_prompt_name_uses_the_models_named_prompts(tiny_bert, tmp_path):
    from sentence_transformers import SentenceTransformer, models

    directory = _saved_by_sentence_transformers(
        tiny_bert, tmp_path / "st", models.Pooling(32, pooling_mode="mean")
    )
    st = SentenceTransformer(str(directory), device="cpu")
    st.prompts = {"query": "query: ", "document": "passage: "}
    st.save(str(directory))
    st = SentenceTransformer(str(directory), device="cpu")
    texts = ["The cat sat.", "A longer sentence about embeddings!", ""]
    for name in ("query", "document"):
        vectorizer = BertSentenceVectorizer(model=directory, prompt_name=name)
        X = vectorizer.fit_transform(texts)
        assert vectorizer.prompt_ == st.prompts[name]
        np.testing.assert_allclose(X, st.encode(texts, prompt_name=name), atol=1e-5)
    # no default prompt: "auto" puts none
    assert BertSentenceVectorizer(model=directory).fit().prompt_ == ""
    with pytest.raises(ValueError, match=r"'answer' is not a prompt .*'document', 'q"):
        BertSentenceVectorizer(model=directory, prompt_name="answer").fit()
    with pytest.raises(ValueError, match=r"'answer' is not a prompt .*names none"):
        BertSentenceVectorizer(model=tiny_bert, prompt_name="answer").fit()
    with pytest.raises(ValueError, match="either prompt or prompt_name, not both"):
        BertSentenceVectorizer(model=directory, prompt="q: ", prompt_name="query").fit()
    with pytest.raises(ValueError, match="prompt_name='query' is put before single"):
        BertSentenceVectorizer(model=directory, prompt_name="query", pairs=True).fit()
    windowed = BertSentenceVectorizer(
        model=directory, prompt_name="query", long_text="window", cache=None
    )
    np.testing.assert_allclose(
        windowed.fit_transform(texts), st.encode(texts, prompt_name="query"), atol=1e-5
    )
    # a name given as prompt is put as written, with a pointer to prompt_name
    literal = BertSentenceVectorizer(model=directory, prompt="query", cache=None)
    with pytest.warns(UserWarning, match="pass prompt_name='query' to use that one"):
        X = literal.fit_transform(texts)
    assert literal.prompt_ == "query"
    np.testing.assert_allclose(X, st.encode(texts, prompt="query"), atol=1e-5)


def test_the_word_vectorizer_says_it_reads_texts_without_the_default_prompt(
    tiny_bert, tmp_path
):
    from sentence_transformers import SentenceTransformer, models

    from skbert import BertWordVectorizer

    directory = _saved_by_sentence_transformers(
        tiny_bert, tmp_path / "st", models.Pooling(32, pooling_mode="mean")
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        BertWordVectorizer(model=directory).fit()  # no prompt: nothing to say
    st = SentenceTransformer(str(directory), device="cpu")
    st.prompts, st.default_prompt_name = {"query": "query: "}, "query"
    st.save(str(directory))
    with pytest.warns(UserWarning, match=r"default prompt \('query: '\)"):
        words = BertWordVectorizer(model=directory, layers=-1).fit()
    rows = words.transform_tokens(["The cat sat."])
    alone = BertWordVectorizer(model=tiny_bert, layers=-1).fit()
    np.testing.assert_allclose(
        rows.iloc[:, -32:].to_numpy(),
        alone.transform_tokens(["The cat sat."]).iloc[:, -32:].to_numpy(),
        atol=1e-6,
    )


def test_a_pooling_that_leaves_the_prompt_out_is_warned_about(tiny_bert, tmp_path):
    from sentence_transformers import SentenceTransformer, models

    pooling = models.Pooling(32, pooling_mode="mean", include_prompt=False)
    directory = _saved_by_sentence_transformers(tiny_bert, tmp_path / "st", pooling)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        BertSentenceVectorizer(model=directory, cache=None).fit()  # no prompt
    st = SentenceTransformer(str(directory), device="cpu")
    st.prompts, st.default_prompt_name = {"query": "query: "}, "query"
    st.save(str(directory))
    with pytest.warns(UserWarning, match=r"leaves the prompt's tokens out"):
        BertSentenceVectorizer(model=directory, cache=None).fit()


def test_the_bundled_model_has_no_prompt(bundled_model):
    assert BertSentenceVectorizer().fit().prompt_ == ""


def test_sentence_transformers_modules_skbert_does_not_apply_are_named(
    tiny_bert, tmp_path
):
    from sentence_transformers import models

    directory = _saved_by_sentence_transformers(
        tiny_bert,
        tmp_path / "st",
        models.Pooling(32, pooling_mode="cls"),
        models.LayerNorm(32),
    )
    vectorizer = BertSentenceVectorizer(model=directory, cache=None)
    with pytest.warns(UserWarning, match=r"does not apply: LayerNorm \(2_LayerNorm\)"):
        vectorizer.fit()
    assert vectorizer.pooling_ == "cls"
    with warnings.catch_warnings():  # once per load of the model
        warnings.simplefilter("error")
        vectorizer.fit()
    with warnings.catch_warnings():  # word vectors use no sentence pooling
        warnings.simplefilter("error")
        BertWordVectorizer(model=directory, cache=None).fit()


def test_a_sentence_transformers_config_that_lowercases_is_followed(
    tiny_bert, tmp_path, st_config
):
    # before version 6, sentence-transformers wrote do_lower_case into
    # sentence_bert_config.json and lowercased each text before a cased tokenizer
    import json
    import shutil

    from sentence_transformers import SentenceTransformer
    from transformers import BertTokenizerFast

    directory = shutil.copytree(tiny_bert, tmp_path / "st")
    cased = BertTokenizerFast.from_pretrained(tiny_bert, do_lower_case=False)
    cased.save_pretrained(directory)
    st_config(directory, ["pooling_mode_mean_tokens"])
    settings = directory / "sentence_bert_config.json"
    settings.write_text(json.dumps({"max_seq_length": 20, "do_lower_case": True}))
    texts = ["The Cat SAT.", "the cat sat."]
    X = BertSentenceVectorizer(model=directory, cache=None).fit_transform(texts)
    np.testing.assert_allclose(X[0], X[1], atol=1e-6)
    reference = SentenceTransformer(str(directory), device="cpu").encode(texts)
    np.testing.assert_allclose(X, reference, atol=1e-5)
    # the word vectorizer reads the same tokens, at the text's own offsets
    words = BertWordVectorizer(model=directory, cache=None).fit()
    table = words.transform_words(["The Cat SAT."])
    assert table["word"].tolist() == ["The", "Cat", "SAT", "."]


def test_a_sentence_transformers_max_seq_length_beyond_the_positions_is_capped(
    tiny_bert, tmp_path, st_config
):
    import shutil

    # tiny_bert has 64 positions; its config asks for 128 tokens
    directory = shutil.copytree(tiny_bert, tmp_path / "st")
    st_config(directory, ["pooling_mode_mean_tokens"], max_seq_length=128)
    vectorizer = BertSentenceVectorizer(model=directory, cache=None)
    with pytest.warns(
        UserWarning, match="max_seq_length=128, more than the model's 64"
    ):
        vectorizer.fit()
    assert vectorizer.max_length_ == 64
    with pytest.warns(UserWarning, match="truncated"):
        X = vectorizer.transform(["word " * 100])
    assert np.isfinite(X).all()


def test_an_unknown_sentence_transformers_pooling_keeps_the_last_layer(
    tiny_bert, tmp_path, st_config
):
    import shutil

    modes = ["pooling_mode_cls_token", "pooling_mode_mean_tokens"]
    directory = st_config(shutil.copytree(tiny_bert, tmp_path / "st"), modes)
    with pytest.warns(UserWarning, match="has no skbert equivalent"):
        vectorizer = BertSentenceVectorizer(model=directory).fit()
    assert (vectorizer.layers_, vectorizer.pooling_) == ([2], "mean")


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


def test_the_tutorials_own_code_gives_the_second_to_last_layer_mean():
    # the tutorial's code, step by step: its model(tokens_tensor,
    # segments_tensors) passes the segment ids (all 1) as the attention mask,
    # BertModel's second argument, so the model reads segment id 0 as skbert does
    from transformers import BertModel, BertTokenizerFast

    from skbert._model import bundled_model_path

    path = bundled_model_path()
    tokenizer = BertTokenizerFast.from_pretrained(path)
    tokenized_text = tokenizer.tokenize("[CLS] " + BANK + " [SEP]")
    indexed_tokens = tokenizer.convert_tokens_to_ids(tokenized_text)
    segments_ids = [1] * len(tokenized_text)
    tokens_tensor = torch.tensor([indexed_tokens])
    segments_tensors = torch.tensor([segments_ids])
    model = BertModel.from_pretrained(path, output_hidden_states=True).eval()
    with torch.no_grad():
        outputs = model(tokens_tensor, segments_tensors)
        hidden_states = outputs[2]
    token_vecs = hidden_states[-2][0]
    sentence_embedding = torch.mean(token_vecs, dim=0)
    X = BertSentenceVectorizer(layers=-2, pooling="mean").fit_transform([BANK])
    np.testing.assert_allclose(X[0], sentence_embedding.numpy(), atol=1e-5)


def test_the_distilbert_posts_own_code_gives_skberts_word_and_sentence_vectors():
    # the post's code: every token's last-layer vector, [CLS] and [SEP]
    # included, padded to max_length; skbert's one-liners average a word's
    # pieces and the real tokens
    from transformers import BertModel, BertTokenizerFast

    from skbert import BertWordVectorizer
    from skbert._model import bundled_model_path

    path = bundled_model_path()
    tokenizer = BertTokenizerFast.from_pretrained(path)
    model = BertModel.from_pretrained(path, output_hidden_states=True).eval()
    text = "here are the embeddings of this sentence"
    stokens = ["[CLS]"] + tokenizer.tokenize(text) + ["[SEP]"]
    max_length = 32
    token_ids = tokenizer.convert_tokens_to_ids(stokens)
    input_ids = torch.tensor([token_ids + [0] * (max_length - len(token_ids))])
    masks = [1] * len(stokens) + [0] * (max_length - len(stokens))
    with torch.no_grad():
        outputs = model(input_ids, torch.tensor([masks]))
        token_embeddings = torch.squeeze(outputs[2][1:][-1], dim=0)
    assert "##" in " ".join(stokens)  # a word of several pieces
    words = BertWordVectorizer(layers=-1).fit().transform_words([text])
    vectors = words.iloc[:, 5:].to_numpy()
    piece = 1  # after [CLS]
    for row, word in enumerate(words["word"]):
        n_pieces = len(tokenizer.tokenize(word))
        expected = token_embeddings[piece : piece + n_pieces].mean(0)
        np.testing.assert_allclose(vectors[row], expected.numpy(), atol=1e-5)
        piece += n_pieces
    assert piece == len(stokens) - 1  # every piece but [SEP] belongs to a word
    # the bundled model's config scales these vectors to unit norm, which
    # normalize="auto" follows; the post's DistilBERT has no such config
    X = BertSentenceVectorizer(layers=-1, pooling="mean", normalize=False)
    X = X.fit_transform([text])
    real = token_embeddings[: len(stokens)].mean(0)
    np.testing.assert_allclose(X[0], real.numpy(), atol=1e-5)


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
    with pytest.raises(ValueError, match="string object received"):
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


def test_warnings_name_the_callers_line_so_none_is_hidden(tiny_bert):
    # sklearn wraps transform: a warning attributed to its wrapper's line was
    # shown once for every later call, under Python's default filter
    vectorizer = BertSentenceVectorizer(model=str(tiny_bert), max_length=8).fit()
    long_text = "the cat sat on the new york bank after fishing"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        vectorizer.transform([long_text])
        vectorizer.fit_transform([long_text])
        vectorizer.set_params(pooling="cls", include_special_tokens=False).fit()
        # a Pipeline calls the steps before its last through joblib
        steps = [("bert", vectorizer.set_params(pooling="mean")), ("id", None)]
        Pipeline(steps).fit_transform([long_text])
    assert len(caught) == 4
    assert {w.filename for w in caught} == {__file__}


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
    views = {"a": {"pooling": "cls", "include_special_tokens": False}, "b": {}}
    with pytest.warns(UserWarning, match="The view 'a' sets include_special_tokens"):
        BertSentenceVectorizer(model=str(tiny_bert), views=views).fit()


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


@pytest.mark.parametrize(
    "long_text", ["truncate", "truncate_tail", "truncate_head_tail", "window"]
)
def test_tokenize_shows_the_rows_transform_reads(tiny_bert, long_text):
    from skbert._encode import tokenize

    texts = ["the cat sat on the bank " * 3 + "robber", "a dog barked"]
    stride = 2 if long_text == "window" else None
    vectorizer = BertSentenceVectorizer(
        model=str(tiny_bert), max_length=8, long_text=long_text, stride=stride
    ).fit()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the truncation warning
        tokens = vectorizer.tokenize(pd.Series(texts, index=["a", "b"]))
    expected = tokenize(vectorizer.tokenizer_, texts, 8, long_text, stride or 0)
    by_row = ["sample", "window"] if long_text == "window" else ["sample"]
    got = [group["token_id"].tolist() for _, group in tokens.groupby(by_row)]
    assert got == expected.input_ids
    assert [
        group["special"].astype(int).tolist() for _, group in tokens.groupby(by_row)
    ] == (expected.special_tokens_mask)
    assert set(tokens["sample"]) == {"a", "b"}
    words = tokens[~tokens["special"]]
    for _, row in words.iterrows():  # offsets point at the token's own text
        text = texts[0 if row["sample"] == "a" else 1]
        assert text[row["start"] : row["end"]] == row["token"].removeprefix("##")


def test_tokenize_of_pairs_shows_segments(tiny_distilbert):
    from skbert._encode import tokenize_pairs

    pairs = [("the cat sat", "on the bank"), ("a dog", "barked")]
    vectorizer = BertSentenceVectorizer(model=str(tiny_distilbert), pairs=True).fit()
    tokens = vectorizer.tokenize(pairs)
    texts_a, texts_b = [a for a, _ in pairs], [b for _, b in pairs]
    expected = tokenize_pairs(
        vectorizer.tokenizer_, texts_a, texts_b, vectorizer.max_length_
    )
    rows = [group for _, group in tokens.groupby("sample")]
    assert [row["token_id"].tolist() for row in rows] == expected.input_ids
    assert [row["segment"].tolist() for row in rows] == expected.segment_ids
    bank = tokens[tokens["token"] == "bank"].iloc[0]
    assert bank["segment"] == 1 and pairs[0][1][bank["start"] : bank["end"]] == "bank"


def test_word_vectorizer_tokenize_shows_whole_texts(tiny_bert):
    from skbert import BertWordVectorizer

    text = "the cat sat on the bank " * 20  # longer than max_length
    vectorizer = BertWordVectorizer(model=str(tiny_bert), max_length=16).fit()
    tokens = vectorizer.tokenize([text])
    assert len(tokens) == len(vectorizer.tokenizer_(text)["input_ids"]) > 16
    # pre-tokenized texts, as transform_words takes them: joined with spaces
    words = vectorizer.tokenize([["the", "bank"], ["a", "dog", "barked"]])
    assert words.groupby("sample")["token"].apply(list).tolist() == [
        ["[CLS]", "the", "bank", "[SEP]"],
        ["[CLS]", "a", "dog", "barked", "[SEP]"],
    ]


# -- long texts -------------------------------------------------------------

LONG = " ".join(["the cat sat on the bank", "a dog barked at the robber"] * 6)


def _windows_by_hand(path, text, max_length, stride):
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    encoded = tokenizer(
        text,
        truncation=True,
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
        return_special_tokens_mask=True,
    )
    vectors, weights = [], []
    for ids, special in zip(
        encoded["input_ids"], encoded["special_tokens_mask"], strict=True
    ):
        with torch.no_grad():
            hidden = model(torch.tensor([ids]), output_hidden_states=True).hidden_states
        vectors.append(hidden[-1][0].mean(0))
        weights.append(len(ids) - sum(special))
    return torch.stack(vectors), torch.tensor(weights, dtype=torch.float32)


def test_window_mean_and_max_equal_hand_computation(tiny_bert):
    vectors, weights = _windows_by_hand(tiny_bert, LONG, 12, 3)
    assert len(vectors) > 3
    common = dict(model=str(tiny_bert), layers=-1, pooling="mean", max_length=12)
    mean = BertSentenceVectorizer(**common, long_text="window", stride=3)
    X = mean.fit_transform([LONG, "hello"])
    expected = (vectors * weights[:, None]).sum(0) / weights.sum()
    np.testing.assert_allclose(X[0], expected.numpy(), atol=1e-5)
    assert mean.transform_stats_["n_windowed"] == 1
    assert mean.transform_stats_["n_windows"] == len(vectors) + 1
    assert mean.transform_stats_["n_truncated"] == 0
    top = BertSentenceVectorizer(**common, long_text="window_max", stride=3)
    np.testing.assert_allclose(
        top.fit_transform([LONG])[0], vectors.max(0).values.numpy(), atol=1e-5
    )


@pytest.mark.parametrize("long_text", ["window", "window_max", "truncate_tail"])
def test_text_that_fits_is_the_same_under_every_policy(tiny_bert, long_text):
    text = "the cat sat on the bank a dog barked at"  # 10 tokens + 2 = 12
    common = dict(model=str(tiny_bert), max_length=12, pooling="mean_max")
    exact = BertSentenceVectorizer(**common).fit_transform([text])
    other = BertSentenceVectorizer(**common, long_text=long_text).fit_transform([text])
    np.testing.assert_array_equal(exact, other)


@pytest.mark.parametrize(
    "long_text, kept",
    [
        ("truncate", "the cat sat on the bank a dog"),
        ("truncate_tail", "a dog barked at the robber the cat"),
        ("truncate_head_tail", "the cat barked at the robber the cat"),
    ],
)
def test_truncation_policies_keep_head_tail_or_both(tiny_bert, long_text, kept):
    text = "the cat sat on the bank a dog barked at the robber the cat"
    vectorizer = BertSentenceVectorizer(
        model=str(tiny_bert), max_length=10, long_text=long_text
    ).fit()
    with pytest.warns(UserWarning, match="1 of 1 distinct texts.*truncated"):
        X = vectorizer.transform([text])
    assert vectorizer.transform_stats_["n_truncated"] == 1
    np.testing.assert_allclose(X, vectorizer.transform([kept]), atol=1e-6)


def test_very_long_text_goes_through_normal_batches(tiny_bert):
    text = " ".join(["cat"] * 20_000)
    vectorizer = BertSentenceVectorizer(
        model=str(tiny_bert), long_text="window", batch_size=16
    ).fit()
    X = vectorizer.transform([text, "dog"])
    assert np.isfinite(X).all()
    stats = vectorizer.transform_stats_
    assert stats["n_windowed"] == 1 and stats["n_windows"] > 20_000 // 62
    assert stats["n_tokens"] < 1.5 * 20_000


def test_bad_stride_and_combinations_are_refused(tiny_bert):
    with pytest.raises(
        ValueError, match=r"stride=10 leaves windows no new tokens.*< 10"
    ):
        BertSentenceVectorizer(
            model=str(tiny_bert), max_length=12, long_text="window", stride=10
        ).fit()
    with pytest.raises(ValueError, match="holds only the 2 special.*max_length >= 3"):
        BertSentenceVectorizer(model=tiny_bert, max_length=2, long_text="window").fit()
    windows = BertSentenceVectorizer(model=tiny_bert, max_length=3, long_text="window")
    X = windows.fit().transform(["the cat sat", ""])  # one token per window
    stats = windows.transform_stats_  # three windows of "the cat sat", one of ""
    assert (stats["n_windowed"], stats["n_windows"]) == (1, 4)
    assert np.isfinite(X).all()
    with pytest.warns(UserWarning, match="'stride' will not be used.*'truncate_tail'"):
        BertSentenceVectorizer(
            model=tiny_bert, long_text="truncate_tail", stride=4
        ).fit()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        BertSentenceVectorizer(model=tiny_bert, long_text="window", stride=4).fit()
    with pytest.raises(ValueError, match="segment_mean' needs sentence pairs"):
        BertSentenceVectorizer(model=str(tiny_bert), pooling="segment_mean").fit()
    with pytest.raises(ValueError, match="not available with pairs=True"):
        BertSentenceVectorizer(
            model=str(tiny_bert), pairs=True, long_text="window"
        ).fit()


# -- sentence pairs ---------------------------------------------------------

PAIRS = [("the cat sat", "a dog barked at the robber"), ("bank vault", "river bank")]


@pytest.mark.parametrize("fixture", ["tiny_bert", "tiny_distilbert"])
@pytest.mark.parametrize("pooling", ["mean", "cls", "segment_mean"])
def test_pairs_equal_hand_computation(request, fixture, pooling):
    path = request.getfixturevalue(fixture)
    vectorizer = BertSentenceVectorizer(
        model=str(path), pairs=True, layers=-1, pooling=pooling
    )
    X = vectorizer.fit_transform(PAIRS)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    for i, (a, b) in enumerate(PAIRS):
        encoded = tokenizer(a, b, return_tensors="pt", return_token_type_ids=True)
        types = encoded["token_type_ids"][0]
        if fixture == "tiny_bert":
            assert types.tolist().count(1) == len(tokenizer.tokenize(b)) + 1
        else:
            encoded.pop("token_type_ids")  # DistilBERT: the [SEP] alone
        with torch.no_grad():
            tokens = model(**encoded, output_hidden_states=True).hidden_states[-1][0]
        if pooling == "mean":
            expected = tokens.mean(0)
        elif pooling == "cls":
            expected = tokens[0]
        else:
            expected = torch.cat(
                [tokens[types == 0].mean(0), tokens[types == 1].mean(0)]
            )
        np.testing.assert_allclose(X[i], expected.numpy(), atol=1e-5)
    assert X.shape[1] == (64 if pooling == "segment_mean" else 32)


def test_pairs_use_segment_ids_on_bert(tiny_bert):
    joint = BertSentenceVectorizer(model=str(tiny_bert), pairs=True).fit_transform(
        [("the cat", "the dog")]
    )
    single = BertSentenceVectorizer(model=str(tiny_bert)).fit_transform(
        ["the cat [SEP] the dog"]
    )
    assert not np.allclose(joint, single, atol=1e-4)  # token type 1 changes B


def test_pair_input_forms(tiny_bert):
    vectorizer = BertSentenceVectorizer(model=str(tiny_bert), pairs=True).fit()
    expected = vectorizer.transform(PAIRS)
    frame = pd.DataFrame(PAIRS, columns=["sentence_a", "sentence_b"])
    np.testing.assert_array_equal(vectorizer.transform(frame), expected)
    np.testing.assert_array_equal(vectorizer.transform(np.array(PAIRS)), expected)
    np.testing.assert_array_equal(
        vectorizer.transform([list(p) for p in PAIRS]), expected
    )
    with pytest.raises(ValueError, match="two text columns"):
        vectorizer.transform(frame.assign(c="x"))
    with pytest.raises(TypeError, match="Element 0 of X is str"):
        vectorizer.transform(["the cat"])
    with pytest.raises(ValueError, match=r"1 missing pair\(s\).*position\(s\) 1"):
        vectorizer.transform([("a", "b"), ("c", None)])


def test_pairs_are_never_guessed_from_shape(tiny_bert):
    vectorizer = BertSentenceVectorizer(model=str(tiny_bert)).fit()
    with pytest.raises(TypeError, match="pairs=True"):
        vectorizer.transform(PAIRS)
    with pytest.raises(ValueError, match="one column"):
        vectorizer.transform(pd.DataFrame(PAIRS))


def test_pair_truncation_takes_from_the_longer_text_first(tiny_bert):
    long_a = "the cat sat on the bank a dog barked at the robber"
    vectorizer = BertSentenceVectorizer(
        model=str(tiny_bert), pairs=True, max_length=10, layers=-1
    ).fit()
    with pytest.warns(UserWarning, match="1 of 1 distinct texts.*longer text"):
        X = vectorizer.transform([(long_a, "river bank")])
    # 10 = [CLS] + 5 of A + [SEP] + 2 of B + [SEP]: B is kept whole
    np.testing.assert_allclose(
        X, vectorizer.transform([("the cat sat on the", "river bank")]), atol=1e-6
    )


# -- views: several layer/pooling settings from one pass -----------------------

VIEWS = [
    {"layers": -1, "pooling": "mean"},
    {"layers": [0, 1, 2], "layer_combine": "sum", "pooling": "max"},
    {"layers": [2, 0], "layer_combine": "concat", "normalize": True},
    {"pooling": "mean_max", "include_special_tokens": False},
]


@pytest.mark.parametrize("long_text", ["truncate", "window"])
def test_views_equal_separate_vectorizers_side_by_side(tiny_bert, long_text):
    texts = TEXTS + ["the cat sat on the bank " * 12]
    shared = dict(model=str(tiny_bert), cache=None, long_text=long_text)
    if long_text == "window":
        shared["max_length"] = 16
    vectorizer = BertSentenceVectorizer(views=VIEWS, layers=1, **shared)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = vectorizer.fit_transform(texts)
        expected = np.hstack(
            [
                BertSentenceVectorizer(**{"layers": 1, **shared, **view}).fit_transform(
                    texts
                )
                for view in VIEWS
            ]
        )
    np.testing.assert_allclose(got, expected, atol=1e-6)
    names = vectorizer.get_feature_names_out()
    assert len(names) == got.shape[1] == 32 + 32 + 64 + 64
    assert list(names[[0, 32, 64, 128, -1]]) == [
        "l-1_mean_0",
        "l0.1.2_sum_max_0",
        "l2.0_concat_norm_0",
        "mean_max_nospecial_0",
        "mean_max_nospecial_63",
    ]
    assert [view["layers"] for view in vectorizer.views_] == [
        [2],
        [0, 1, 2],
        [2, 0],
        [1],
    ]


def test_views_run_the_model_once(tiny_bert, monkeypatch):
    import skbert._encode

    forward = skbert._encode.forward_hidden_states
    calls = []

    def counting(loaded, inputs, layers):
        calls.append((inputs["input_ids"].shape[0], sorted(layers)))
        return forward(loaded, inputs, layers)

    monkeypatch.setattr(skbert._encode, "forward_hidden_states", counting)
    vectorizer = BertSentenceVectorizer(model=str(tiny_bert), views=VIEWS, cache=None)
    vectorizer.fit_transform(TEXTS)
    # one pass over the texts, capturing the union of the views' layers
    assert calls == [(len(TEXTS), [0, 1, 2])]


def test_named_views_and_pandas_output(tiny_bert):
    vectorizer = BertSentenceVectorizer(
        model=str(tiny_bert),
        views={"last": {"layers": -1}, "cls": {"pooling": "cls"}},
    ).set_output(transform="pandas")
    frame = vectorizer.fit_transform(pd.Series(TEXTS, index=[5, 6, 7]))
    assert list(frame.index) == [5, 6, 7]
    assert list(frame.columns[[0, 31, 32, 63]]) == [
        "last_0",
        "last_31",
        "cls_0",
        "cls_31",
    ]
    # without views, the names are the estimator's own
    plain = BertSentenceVectorizer(model=str(tiny_bert)).fit()
    assert plain.get_feature_names_out()[0] == "bertsentencevectorizer0"


@pytest.mark.parametrize(
    "views, error, message",
    [
        ([], ValueError, "at least one view"),
        ([{"layers": -1}, "mean"], TypeError, r"views\[1\] must be a dict"),
        ([{"max_length": 8}], ValueError, "'max_length', which a view cannot set"),
        ([{"pooling": "avg"}], ValueError, r"views\[0\]\['pooling'\] must be a str"),
        ([{"layers": 7}], ValueError, r"views\[0\]\['layers'\]=\[7\] is out of range"),
        (
            {"deep": {"layers": -1}, "bad": {"layers": 12}},
            ValueError,
            r"views\['bad'\]\['layers'\]=\[12\] is out of range",
        ),
        ([{"layers": -1}, {"layers": -1}], ValueError, "Two views are named 'l-1'"),
        ({"": {"layers": -1}}, ValueError, "non-empty str"),
        ([{"pooling": "segment_mean"}], ValueError, "needs sentence pairs"),
        ("mean", ValueError, "'views' parameter of BertSentenceVectorizer must be"),
    ],
)
def test_bad_views_are_refused_at_fit(tiny_bert, views, error, message):
    with pytest.raises(error, match=message):
        BertSentenceVectorizer(model=str(tiny_bert), views=views).fit()


def test_grid_search_over_views(tiny_bert):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline

    texts = [f"the cat sat on the bank {w}" for w in "abcdefghijkl"]
    pipeline = Pipeline(
        [
            ("bert", BertSentenceVectorizer(model=str(tiny_bert))),
            ("clf", LogisticRegression()),
        ]
    )
    grid = {"bert__views": [None, VIEWS[:2]]}
    search = GridSearchCV(pipeline, grid, cv=2).fit(texts, [0, 1] * 6)
    assert search.best_estimator_["bert"].views in (None, VIEWS[:2])


@pytest.mark.parametrize("views", [None, [{"layers": -1, "pooling": "mean"}]])
def test_transform_stats_seconds_is_the_calls_wall_time(tiny_bert, views):
    vectorizer = BertSentenceVectorizer(model=str(tiny_bert), views=views).fit()
    before = time.perf_counter()
    vectorizer.transform(["the cat sat", "a dog barked"])
    wall = time.perf_counter() - before
    assert 0 < vectorizer.transform_stats_["seconds"] <= wall


def test_pairs_need_room_for_a_token_of_each_text(tiny_bert):
    # [CLS] A [SEP] B [SEP]: below 5 tokens every pair would be its separators
    with pytest.raises(ValueError, match=r"max_length=4 leaves no room.*>= 5"):
        BertSentenceVectorizer(model=str(tiny_bert), pairs=True, max_length=4).fit()
    vectorizer = BertSentenceVectorizer(model=str(tiny_bert), pairs=True, max_length=5)
    with pytest.warns(UserWarning, match="truncated"):
        X = vectorizer.fit_transform([("the cat sat", "a dog"), ("the bank", "money")])
    assert not np.allclose(X[0], X[1])


@pytest.mark.parametrize(
    "changed",
    [
        {"long_text": "truncate_tail"},
        {"long_text": "window"},
        {"pairs": True},
        {"pooling": "max"},
        {"normalize": True},
        {"max_length": 8},
        {"layers": -1},
        {"layers": [-1, -2], "layer_combine": "concat"},
        {"include_special_tokens": False},
        {"prompt": "the bank: "},
        {"dtype": "bfloat16"},
    ],
)
def test_set_params_changes_the_vectors_at_the_next_fit(tiny_bert, changed):
    texts = ["the cat sat", " ".join(["the cat sat on the mat"] * 20)]
    X = [(text, "a dog barked") for text in texts] if "pairs" in changed else texts
    vectorizer = BertSentenceVectorizer(model=tiny_bert)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # truncation
        before = vectorizer.fit().transform(texts)
        vectorizer.set_params(**changed)
        np.testing.assert_array_equal(vectorizer.transform(texts), before)
        after = vectorizer.fit().transform(X)
        expected = BertSentenceVectorizer(model=tiny_bert, **changed).fit_transform(X)
    np.testing.assert_array_equal(after, expected)
    assert after.shape != before.shape or np.abs(after - before).max() > 1e-4


def test_feature_names_follow_the_fitted_views(tiny_bert):
    views = {"x": {"pooling": "max"}, "y": {"pooling": "cls"}}
    plain = BertSentenceVectorizer(model=tiny_bert).set_output(transform="pandas")
    plain.fit().set_params(views=views)  # takes effect at the next fit
    columns = list(plain.transform(["the cat"]).columns)
    assert columns == [f"bertsentencevectorizer{i}" for i in range(32)]
    with_views = BertSentenceVectorizer(model=tiny_bert, views=views).fit()
    with_views.set_params(views=None)
    names = with_views.get_feature_names_out()
    assert list(names) == [f"{v}_{i}" for v in "xy" for i in range(32)]


@pytest.mark.parametrize(
    "params, X",
    [
        ({"long_text": "window"}, ["a"]),
        ({}, pd.Series(["a"], index=["x"])),
        ({"pairs": True}, [("a", "b")]),
    ],
)
def test_tokenize_of_no_texts_has_the_same_columns_and_dtypes(tiny_bert, params, X):
    vectorizer = BertSentenceVectorizer(model=tiny_bert, **params).fit()
    some, none = vectorizer.tokenize(X), vectorizer.tokenize(X[:0])
    assert len(none) == 0 and len(some) > 0
    pd.testing.assert_series_equal(none.dtypes, some.dtypes)


def test_views_that_set_their_pooling_ignore_the_estimator_s(tiny_bert):
    views = [{"pooling": "mean"}, {"pooling": "max"}]
    vectorizer = BertSentenceVectorizer(
        model=tiny_bert, pooling="segment_mean", views=views
    )
    assert vectorizer.fit_transform(["the cat sat"]).shape == (1, 64)
    inherits = BertSentenceVectorizer(
        model=tiny_bert, pooling="segment_mean", views=[{"layers": -1}]
    )
    with pytest.raises(ValueError, match="has pooling='segment_mean'"):
        inherits.fit()


def test_how_the_work_is_done_is_read_at_each_call(tiny_bert, capsys):
    # the five parameters the user guide lists as read by every call
    texts = ["the cat sat", "a dog barked", "hello world"]
    vectorizer = BertSentenceVectorizer(model=tiny_bert, progress_bar=False).fit()
    expected = vectorizer.transform(texts)
    vectorizer.set_params(batch_size=1, max_batch_tokens=None, cache=None)
    np.testing.assert_allclose(vectorizer.transform(texts), expected, atol=1e-6)
    assert vectorizer.transform_stats_["n_batches"] == 3
    vectorizer.set_params(handle_missing="empty", progress_bar=True)
    capsys.readouterr()
    assert vectorizer.transform(texts + [None]).shape == (4, 32)
    assert "skbert" in capsys.readouterr().err  # the progress bar


@pytest.mark.filterwarnings("ignore:.*truncated:UserWarning")
def test_a_left_truncating_tokenizer_still_keeps_what_long_text_says(
    tiny_bert, tmp_path
):
    # Some hub tokenizers ship truncation_side="left"; long_text="truncate"
    # keeps the head all the same, and the windows start at the head.
    import json
    import shutil

    left = tmp_path / "left"
    shutil.copytree(tiny_bert, left)
    config_file = left / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config["truncation_side"] = "left"
    config_file.write_text(json.dumps(config))
    long = "the cat sat on the mat and the dog sat on the bank of the river"
    pair = [(long, "hello world the cat sat")]
    for params, X in [
        (dict(long_text="truncate"), [long]),
        (dict(long_text="window", stride=2), [long]),
        (dict(pairs=True), pair),
    ]:
        params = dict(max_length=8, cache=None, **params)
        right = BertSentenceVectorizer(model=str(tiny_bert), **params).fit()
        vectorizer = BertSentenceVectorizer(model=str(left), **params).fit()
        assert vectorizer.tokenizer_.truncation_side == "left"
        np.testing.assert_allclose(
            vectorizer.transform(X), right.transform(X), atol=1e-6
        )
        pd.testing.assert_frame_equal(vectorizer.tokenize(X), right.tokenize(X))
        assert vectorizer.tokenizer_.truncation_side == "left"  # left as it was


def test_pairs_set_after_fit_says_to_fit_again(tiny_bert):
    vectorizer = BertSentenceVectorizer(model=str(tiny_bert), cache=None).fit()
    vectorizer.set_params(pairs=True)
    with pytest.raises(
        TypeError, match=r"fitted with pairs=False.*call fit again"
    ) as info:
        vectorizer.transform([("a cat", "a dog")])
    assert "pass pairs=True" not in str(info.value)  # it is set already
    with pytest.raises(TypeError) as info:  # not pairs either: the input's own error
        vectorizer.transform([b"bytes"])
    assert "call fit again" not in str(info.value)
    assert vectorizer.fit().transform([("a cat", "a dog")]).shape == (1, 32)


def test_without_a_token_limit_auto_rows_bound_batches_on_every_device(tiny_bert):
    vectorizer = BertSentenceVectorizer(model=tiny_bert).fit()
    vectorizer.device_ = torch.device("cuda")  # what fit sets on a GPU
    assert vectorizer._batching() == {"batch_size": None, "max_batch_tokens": 16384}
    vectorizer.set_params(max_batch_tokens=None)
    assert vectorizer._batching() == {"batch_size": 32, "max_batch_tokens": None}
    vectorizer.set_params(batch_size=8)
    assert vectorizer._batching() == {"batch_size": 8, "max_batch_tokens": None}


@pytest.mark.parametrize("long_text", ["window", "truncate_tail"])
def test_a_prompt_keeps_only_its_own_tokens_with_untrimmed_offsets(
    tiny_roberta, tmp_path, long_text
):
    # byte-level BPE without trimmed offsets puts the prompt's last space in
    # the text's first token ("Ġbank" starts inside "the cat: "): text, not prompt
    import shutil

    directory = tmp_path / "untrimmed"
    shutil.copytree(tiny_roberta, directory)
    tokenizer = AutoTokenizer.from_pretrained(directory, trim_offsets=False)
    tokenizer.save_pretrained(directory)
    prompt, text = "the cat: ", " ".join(["bank vault robber river"] * 4)
    encoded = tokenizer(
        prompt + text, add_special_tokens=False, return_offsets_mapping=True
    )
    tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"])
    n_prompt = len(tokenizer.tokenize(prompt.rstrip()))
    assert tokens[n_prompt] == "Ġbank"
    assert encoded["offset_mapping"][n_prompt][0] < len(prompt)  # untrimmed
    vectorizer = BertSentenceVectorizer(
        model=directory, prompt=prompt, long_text=long_text, max_length=10, cache=None
    ).fit()
    room = 10 - 2 - n_prompt
    rows = vectorizer.tokenize([text])
    rows = [row for _, row in rows.groupby("window")] if "window" in rows else [rows]
    body = tokens[n_prompt:]
    if long_text == "window":
        step = room - vectorizer.stride_
        expected = [body[k : k + room] for k in range(0, len(body) - room + step, step)]
    else:
        expected = [body[-room:]]
    assert [row["token"].tolist() for row in rows] == [
        ["<s>", *tokens[:n_prompt], *part, "</s>"] for part in expected
    ]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_cuda_matches_cpu_across_the_options(tiny_bert, tmp_path, dtype):
    # windows, pairs, views, a Dense layer, token rows and long words on CUDA,
    # each against the same estimator on the CPU in float32
    from sentence_transformers import models

    prelu = torch.nn.PReLU()
    with torch.no_grad():
        prelu.weight.fill_(-0.7)  # read from the file, and moved to the GPU
    dense = _saved_by_sentence_transformers(
        tiny_bert,
        tmp_path / "dense",
        models.Pooling(32, pooling_mode="mean"),
        models.Dense(32, 16, activation_function=prelu),
    )
    texts = [LONG, "the cat sat", "", LONG[:40]]
    pairs = [(LONG, "a dog barked"), ("the cat", "sat")]
    cases = [
        (BertSentenceVectorizer, {"long_text": "window", "max_length": 12}, texts),
        (BertSentenceVectorizer, {"long_text": "window_max", "max_length": 9}, texts),
        (BertSentenceVectorizer, {"long_text": "truncate_head_tail"}, texts),
        (BertSentenceVectorizer, {"pairs": True, "pooling": "segment_mean"}, pairs),
        (
            BertSentenceVectorizer,
            {"views": {"a": {"layers": [0, 1], "layer_combine": "concat"}, "b": {}}},
            texts,
        ),
        (BertSentenceVectorizer, {"model": dense, "long_text": "window"}, texts),
        (BertWordVectorizer, {"max_length": 4}, [("the embeddings", 4, 14)]),
    ]
    atol = 1e-4 if dtype == "float32" else 5e-2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for cls, params, X in cases:
            params = {"model": str(tiny_bert), "cache": None, **params}
            expected = cls(device="cpu", **params).fit_transform(X)
            got = cls(device="cuda", dtype=dtype, **params).fit_transform(X)
            np.testing.assert_allclose(got, expected, atol=atol, err_msg=str(params))
        word = {"model": str(tiny_bert), "max_length": 6, "cache": None}
        expected = BertWordVectorizer(device="cpu", **word).fit()
        got = BertWordVectorizer(device="cuda", dtype=dtype, **word).fit()
        np.testing.assert_allclose(
            got.transform_tokens([LONG]).iloc[:, 5:],
            expected.transform_tokens([LONG]).iloc[:, 5:],
            atol=atol,
        )


def test_states_computed_under_the_callers_autocast_are_not_cached(
    tiny_bert, monkeypatch
):
    from skbert import _cache

    monkeypatch.setattr(_cache, "_DEFAULT", _cache.TokenStateCache(64 * 2**20))
    texts = ["the cat sat on the bank", "a dog barked at the robber", "hello"]
    params = {"model": str(tiny_bert), "layers": -1, "normalize": False}
    exact = BertSentenceVectorizer(cache=None, **params).fit_transform(texts)
    vectorizer = BertSentenceVectorizer(**params).fit()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast = vectorizer.transform(texts)
    assert np.abs(fast - exact).max() > 1e-6  # autocast did run
    assert vectorizer.transform_stats_["cache_hits"] == 0
    # the float32 call does not meet the autocast states, and stores its own
    np.testing.assert_allclose(vectorizer.transform(texts), exact, atol=1e-6)
    assert vectorizer.transform_stats_["cache_hits"] == 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        again = vectorizer.transform(texts)
    assert vectorizer.transform_stats_["cache_hits"] == 0  # nor the other way
    np.testing.assert_allclose(again, fast, atol=1e-6)
    np.testing.assert_allclose(vectorizer.transform(texts), exact, atol=1e-6)
    assert vectorizer.transform_stats_["cache_hits"] == 3


def test_a_pair_of_exactly_max_length_tokens_is_not_truncated(tiny_bert):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert))
    n = len(tokenizer("the cat", "sat")["input_ids"])
    vectorizer = BertSentenceVectorizer(model=str(tiny_bert), pairs=True, max_length=n)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no truncation warning
        vectorizer.fit().transform([("the cat", "sat")])
    assert vectorizer.transform_stats_["n_truncated"] == 0
    with pytest.warns(UserWarning, match="1 of 1 distinct texts were longer"):
        vectorizer.set_params(max_length=n - 1).fit().transform([("the cat", "sat")])
    assert vectorizer.transform_stats_["n_truncated"] == 1


def test_pairs_with_an_empty_or_missing_second_text(tiny_bert):
    # an empty text B still has its [SEP] in segment B; a missing one is ""
    # under handle_missing="empty", in transform and in tokenize
    vectorizer = BertSentenceVectorizer(
        model=str(tiny_bert), pairs=True, pooling="segment_mean", handle_missing="empty"
    ).fit()
    X = vectorizer.transform([("the cat", ""), ("the cat", None)])
    assert np.linalg.norm(X[0, 32:]) > 0
    np.testing.assert_allclose(X[0], X[1], atol=1e-6)
    tokens = vectorizer.tokenize([("the cat", None)])
    assert tokens["token"].tolist() == ["[CLS]", "the", "cat", "[SEP]", "[SEP]"]
    assert tokens["segment"].tolist() == [0, 0, 0, 0, 1]
