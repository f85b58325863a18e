import re
import warnings

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

from skbert import BertSentenceVectorizer, BertWordVectorizer
from skbert._model import (
    forward_hidden_states,
    load_model,
    resolve_device,
    resolve_dtype,
)

CPU = torch.device("cpu")


def test_resolve_device_auto_and_cpu():
    assert resolve_device("cpu") == CPU
    # the CPU's index names the same device: one loaded model, one cache
    assert resolve_device("cpu:0") == CPU and resolve_device("cpu:0").index is None
    assert resolve_device(torch.device("cpu", 0)) == CPU
    expected = "cuda" if torch.cuda.is_available() else None
    if expected is None and not torch.backends.mps.is_available():
        assert resolve_device("auto") == CPU


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_resolve_device_unavailable_cuda_is_value_error(device):
    with pytest.raises(ValueError, match=r"torch.cuda.is_available\(\) is False"):
        resolve_device(device)


def test_resolve_device_gives_cuda_the_index_of_the_current_gpu(monkeypatch):
    # without an index the model would go to the GPU current at load and the
    # inputs to the one current at transform (another thread, set_device)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    for device in ("auto", "cuda", "cuda:1"):
        assert resolve_device(device) == torch.device("cuda", 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(ValueError, match="only 2 CUDA device"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("device", ["gpu", "tpu", "cpux"])
def test_resolve_device_rejects_unknown(device):
    with pytest.raises(ValueError, match=f"device='{device}'"):
        resolve_device(device)


def test_resolve_dtype_cpu():
    assert resolve_dtype("float32", CPU) is torch.float32
    assert resolve_dtype("bfloat16", CPU) is torch.bfloat16


def test_load_model_is_cached_per_process(tiny_bert):
    first = load_model(str(tiny_bert), CPU)
    assert load_model(tiny_bert, CPU) is first  # a Path is the same model
    assert first.n_layers == 2 and first.hidden_size == 32
    assert first.uses_token_type_ids
    assert first.st_pooling is None and first.st_max_length is None


def test_distilbert_takes_no_token_type_ids(tiny_distilbert):
    loaded = load_model(str(tiny_distilbert), CPU)
    assert not loaded.uses_token_type_ids
    assert loaded.n_layers == 2 and loaded.hidden_size == 32


def test_bundled_model_reads_sentence_transformers_config(bundled_model):
    loaded = load_model(None, CPU)
    assert loaded.n_layers == 6 and loaded.hidden_size == 384
    assert loaded.st_pooling == "mean" and loaded.st_max_length == 256
    assert load_model(str(bundled_model), CPU) is loaded


@pytest.mark.parametrize("fixture", ["tiny_bert", "tiny_distilbert"])
def test_hooks_return_the_models_own_hidden_states(request, fixture):
    path = request.getfixturevalue(fixture)
    loaded = load_model(str(path), CPU)
    inputs = loaded.tokenizer(
        ["hello world", "the cat sat on the bank"], padding=True, return_tensors="pt"
    )
    if not loaded.uses_token_type_ids:
        inputs.pop("token_type_ids", None)
    with torch.inference_mode():
        expected = loaded.model(**inputs, output_hidden_states=True).hidden_states
        for layers in ([0], [1], [2], [0, 2], [1, 2]):
            states = forward_hidden_states(loaded, dict(inputs), layers)
            assert sorted(states) == layers
            for i in layers:
                assert torch.allclose(states[i], expected[i], atol=1e-6)


def test_forward_stops_after_deepest_requested_layer(tiny_bert):
    loaded = load_model(str(tiny_bert), CPU)
    layer_list = loaded.model.encoder.layer
    calls = []
    handles = [
        layer.register_forward_pre_hook(lambda m, a, i=i: calls.append(i))
        for i, layer in enumerate(layer_list)
    ]
    try:
        inputs = loaded.tokenizer(["hello world"], return_tensors="pt")
        with torch.inference_mode():
            forward_hidden_states(loaded, dict(inputs), [1])
            assert calls == [0], "layers=1 must not compute layer 2"
            calls.clear()
            forward_hidden_states(loaded, dict(inputs), [0])
            assert calls == []
            calls.clear()
            forward_hidden_states(loaded, dict(inputs), [2])
            assert calls == [0, 1]
    finally:
        for handle in handles:
            handle.remove()
    # outside a capture the hooks do nothing: the model still runs normally
    with torch.inference_mode():
        out = loaded.model(**inputs, output_hidden_states=True)
    assert len(out.hidden_states) == 3


def test_init_loads_nothing(tiny_bert):
    vectorizer = BertSentenceVectorizer(model=str(tiny_bert), device="cuda")
    assert "_loaded_model" not in vars(vectorizer)
    assert vectorizer.get_params()["device"] == "cuda"


@pytest.mark.parametrize(
    "model, match",
    [
        ("/no/such/dir", "'/no/such/dir': no such directory"),
        ("./relative/missing", "no such directory"),
        ("no-such-org/no-such-model", "not a local directory.*HF_HUB_OFFLINE"),
    ],
)
def test_bad_model_names_it_and_explains_offline(model, match):
    with pytest.raises(ValueError, match=match) as info:
        BertSentenceVectorizer(model=model).fit()
    assert model in str(info.value)
    assert "model=None" in str(info.value)


def test_directory_without_model_is_explained(tmp_path):
    (tmp_path / "readme.txt").write_text("not a model")
    with pytest.raises(ValueError, match="Could not load model"):
        BertSentenceVectorizer(model=str(tmp_path)).fit()


def test_decoder_model_is_refused_at_fit(tiny_gpt2):
    vectorizer = BertSentenceVectorizer(model=str(tiny_gpt2))
    with pytest.raises(ValueError, match="not a text encoder"):
        vectorizer.fit()


def test_a_bert_saved_as_a_decoder_is_refused_at_fit(tiny_bert, tmp_path):
    # a BertLMHeadModel's config: its attention is causal, so its states are
    # not a text encoder's, though its model type is BERT's
    import json
    import shutil

    directory = shutil.copytree(tiny_bert, tmp_path / "decoder")
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "is_decoder": True}))
    with pytest.raises(ValueError, match="is a decoder model"):
        BertSentenceVectorizer(model=str(directory)).fit()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_device_fails_at_fit(tiny_bert):
    vectorizer = BertSentenceVectorizer(model=str(tiny_bert), device="cuda")
    with pytest.raises(ValueError, match="device='cuda' was requested"):
        vectorizer.fit()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_cuda_matches_cpu(tiny_bert, dtype):
    texts = ["hello world", "the cat sat on the new york bank", ""]
    cpu = BertSentenceVectorizer(model=str(tiny_bert), device="cpu").fit_transform(
        texts
    )
    gpu = BertSentenceVectorizer(
        model=str(tiny_bert), device="cuda", dtype=dtype
    ).fit_transform(texts)
    assert gpu.dtype == "float32"
    atol = 1e-4 if dtype == "float32" else 5e-2
    assert abs(gpu - cpu).max() < atol


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_rounding_is_not_taken_for_padding_that_changes_states(tiny_bert, dtype):
    # a false alarm would batch these models without padding: slow
    import os

    from skbert._model import bundled_model_path, load_model

    models = [tiny_bert]
    try:  # the real model, where its package is installed (gpu_check.sh's
        models.append(bundled_model_path())  # machine may have MODEL instead)
    except Exception:  # noqa: BLE001
        pass
    if os.environ.get("MODEL"):
        models.append(os.environ["MODEL"])
    for model in models:
        assert load_model(model, torch.device("cuda"), dtype).pads_safely, model


def test_weights_saved_again_are_loaded_again_in_the_same_process(tiny_bert, tmp_path):
    import shutil

    from transformers import BertModel

    directory = tmp_path / "model"
    shutil.copytree(tiny_bert, directory)
    before = BertSentenceVectorizer(model=directory).fit().transform(["the cat sat"])
    first = load_model(directory, CPU)
    model = BertModel.from_pretrained(directory)
    with torch.no_grad():
        model.embeddings.word_embeddings.weight.mul_(2)
    model.save_pretrained(directory)  # as a notebook that trains on would
    assert load_model(directory, CPU) is not first
    after = BertSentenceVectorizer(model=directory).fit().transform(["the cat sat"])
    assert abs(after - before).max() > 1e-3  # neither old weights nor old states
    expected = BertSentenceVectorizer(model=directory, cache=None).fit()
    assert (expected.transform(["the cat sat"]) == after).all()


def test_a_tokenizer_saved_again_is_loaded_again(tiny_bert, tmp_path):
    import shutil

    from transformers import AutoTokenizer

    directory = tmp_path / "model"
    shutil.copytree(tiny_bert, directory)
    assert BertSentenceVectorizer(model=directory).fit().max_length_ == 64
    tokenizer = AutoTokenizer.from_pretrained(directory)
    tokenizer.model_max_length = 32
    tokenizer.save_pretrained(directory)
    assert BertSentenceVectorizer(model=directory).fit().max_length_ == 32


def test_a_sentence_transformers_config_saved_again_is_read_again(
    tiny_bert, tmp_path, st_config
):
    import shutil

    directory = shutil.copytree(tiny_bert, tmp_path / "model")
    st_config(directory, ["pooling_mode_cls_token"], max_seq_length=16)
    first = BertSentenceVectorizer(model=directory).fit()
    assert (first.pooling_, first.max_length_) == ("cls", 16)
    st_config(directory, ["pooling_mode_mean_tokens"], max_seq_length=24)
    again = BertSentenceVectorizer(model=directory).fit()
    assert (again.pooling_, again.max_length_) == ("mean", 24)


@pytest.fixture
def hub_cache(tiny_bert, tmp_path, monkeypatch):
    """An offline Hugging Face cache holding the hub id "someone/tiny".

    Returns ``publish(revision, scale, shard=False)``, which writes the tiny
    BERT with its word embeddings scaled as that revision's snapshot (sharded
    into several files if asked) and points ``main`` at it; it returns the
    snapshot's directory.
    """
    import shutil

    import huggingface_hub.constants
    from transformers import BertModel

    from skbert._model import clear_cache

    cache = tmp_path / "hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    clear_cache()  # "someone/tiny" may be loaded from another test's cache
    repo = cache / "models--someone--tiny"
    (repo / "refs").mkdir(parents=True)

    def publish(revision, scale, shard=False):
        snapshot = repo / "snapshots" / revision
        shutil.copytree(tiny_bert, snapshot)
        for old in snapshot.glob("*.safetensors"):
            old.unlink()
        model = BertModel.from_pretrained(tiny_bert)
        with torch.no_grad():
            model.embeddings.word_embeddings.weight.mul_(scale)
        model.save_pretrained(snapshot, max_shard_size="40KB" if shard else "5GB")
        (repo / "refs" / "main").write_text(revision)
        return snapshot

    return publish


def test_a_hub_snapshot_fingerprint_names_its_revision_and_shards(hub_cache):
    from skbert._model import _fingerprint

    snapshot = hub_cache("a" * 40, 1.0, shard=True)
    shards = sorted(p.name for p in snapshot.glob("*.safetensors"))
    assert len(shards) > 1  # no model.safetensors: only the index and its shards
    first = _fingerprint("someone/tiny", CPU, torch.float32)
    assert first.startswith("someone/tiny@" + "a" * 40)
    assert all(shard in first for shard in shards)
    hub_cache("b" * 40, 2.0, shard=True)
    second = _fingerprint("someone/tiny", CPU, torch.float32)
    assert second.startswith("someone/tiny@" + "b" * 40)
    assert second != first


@pytest.fixture
def no_network(monkeypatch):
    """Online mode (HF_HUB_OFFLINE unset) on a machine without a network: every
    request fails at once, as a failed DNS lookup does. Returns the URLs asked."""
    import httpx2
    import huggingface_hub.constants

    import skbert._model

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(skbert._model, "_HUB_ANSWERS", None, raising=False)
    requests = []

    def send(self, request, **kwargs):
        requests.append(str(request.url))
        raise httpx2.ConnectError("no network in this test", request=request)

    monkeypatch.setattr(httpx2.Client, "send", send)
    return requests


def _asked(requests):
    """The requests skbert's question "does the hub answer?" made, and the
    other requests to the hub (for files or model info). huggingface_hub's own
    once-a-day fetch of its agent registry is neither."""
    from huggingface_hub import constants

    probes = [url for url in requests if url.rstrip("/") == constants.ENDPOINT]
    others = [
        url for url in requests if url not in probes and "agent-harnesses" not in url
    ]
    return len(probes), others


def test_a_cached_hub_id_loads_without_a_network(hub_cache, no_network):
    # transformers would retry each file request for about 25 s before it
    # fell back to the cache (165 s for one fit); skbert asks once whether
    # the hub answers, then reads the cache only
    hub_cache("a" * 40, 1.0, shard=True)
    vectorizer = BertSentenceVectorizer(model="someone/tiny").fit()
    assert vectorizer.transform(["a river bank"]).shape == (1, 32)
    assert _asked(no_network) == (1, [])
    assert vectorizer.model_revision_ == "a" * 40


def test_a_cached_hub_id_with_only_a_vocabulary_loads_without_a_network(
    hub_cache, no_network
):
    from transformers import BertTokenizerFast

    snapshot = hub_cache("a" * 40, 1.0)
    tokenizer = BertTokenizerFast.from_pretrained(snapshot)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (snapshot / name).unlink(missing_ok=True)
    vocabulary = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    # vocab.txt, one token per line by id: the whole tokenizer
    (snapshot / "vocab.txt").write_text("".join(f"{t}\n" for t, _ in vocabulary))
    vectorizer = BertSentenceVectorizer(model="someone/tiny").fit()
    assert len(vectorizer.tokenizer_) == len(tokenizer)
    assert vectorizer.transform(["a river bank"]).shape == (1, 32)
    assert _asked(no_network) == (1, [])


def test_whether_the_hub_answers_is_asked_at_most_once_a_minute(
    no_network, monkeypatch
):
    import skbert._model

    clock = [1000.0]
    monkeypatch.setattr(skbert._model.time, "monotonic", lambda: clock[0])
    assert skbert._model._hub_reachable() is False
    clock[0] += 59
    assert skbert._model._hub_reachable() is False
    assert _asked(no_network) == (1, [])
    clock[0] += 2
    assert skbert._model._hub_reachable() is False
    assert _asked(no_network) == (2, [])


def test_a_fitted_estimator_keeps_the_hub_revision_it_was_fitted_with(hub_cache):
    import pickle

    from skbert._model import clear_cache

    hub_cache("a" * 40, 1.0)
    texts = ["a river bank", "a bank vault"]
    fitted = BertSentenceVectorizer(model="someone/tiny").fit()
    expected = fitted.transform(texts)
    hub_cache("b" * 40, 2.0)  # the hub id's newest files change the vectors
    copy = pickle.loads(pickle.dumps(fitted))
    assert copy.model_revision_ == "a" * 40
    np.testing.assert_allclose(copy.transform(texts), expected, atol=1e-6)
    clear_cache()  # loaded again from its snapshot, not from memory
    copy = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_allclose(copy.transform(texts), expected, atol=1e-6)
    refitted = BertSentenceVectorizer(model="someone/tiny").fit()
    assert refitted.model_revision_ == "b" * 40
    assert not np.allclose(refitted.transform(texts), expected, atol=1e-3)


def test_a_revision_gone_from_the_cache_says_to_fit_again(hub_cache):
    import pickle
    import shutil

    from skbert._model import clear_cache

    snapshot = hub_cache("a" * 40, 1.0)
    fitted = BertSentenceVectorizer(model="someone/tiny").fit()
    hub_cache("b" * 40, 2.0)
    shutil.rmtree(snapshot)
    clear_cache()
    copy = pickle.loads(pickle.dumps(fitted))
    with pytest.raises(ValueError, match=r"revision 'a{40}'.*Fit the estimator again"):
        copy.transform(["a river bank"])


def test_a_hub_id_missing_from_the_cache_says_the_hub_did_not_answer(
    hub_cache, no_network
):
    snapshot = hub_cache("a" * 40, 1.0, shard=True)
    next(iter(sorted(snapshot.glob("model-*.safetensors")))).unlink()
    with pytest.raises(ValueError, match="not a local directory.*did not answer"):
        BertSentenceVectorizer(model="someone/tiny").fit()
    assert _asked(no_network) == (1, [])


def _without_safetensors(model, directory):
    """A copy of the model directory ``model`` without its safetensors weights."""
    import shutil

    directory.mkdir()
    for path in model.iterdir():
        if path.suffix != ".safetensors":
            shutil.copy(path, directory)
    return directory


def test_weights_only_in_a_bin_file_get_a_way_out(tiny_bert, tmp_path):
    import numpy as np
    from transformers import AutoModel

    directory = _without_safetensors(tiny_bert, tmp_path / "bin-only")
    torch.save(
        AutoModel.from_pretrained(tiny_bert).state_dict(),
        directory / "pytorch_model.bin",
    )
    with pytest.raises(ValueError, match="weights are in pytorch_model.bin") as info:
        BertSentenceVectorizer(model=directory).fit()
    assert "loads only safetensors weights" in str(info.value)
    # the conversion the message gives
    AutoModel.from_pretrained(directory, use_safetensors=False).save_pretrained(
        directory
    )
    X = BertSentenceVectorizer(model=directory, cache=None).fit_transform(["a cat"])
    expected = BertSentenceVectorizer(model=tiny_bert, cache=None).fit_transform(
        ["a cat"]
    )
    np.testing.assert_array_equal(X, expected)


def test_an_older_sentence_transformers_layout_names_its_encoder_folder(
    tiny_bert, tmp_path
):
    import json
    import shutil

    directory = tmp_path / "st-old"
    shutil.copytree(tiny_bert, directory / "0_Transformer")
    modules = [
        {
            "idx": 0,
            "path": "0_Transformer",
            "type": "sentence_transformers.models.Transformer",
        },
        {"idx": 1, "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    (directory / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ValueError) as info:
        BertSentenceVectorizer(model=directory).fit()
    assert "encoder is in the folder '0_Transformer'" in str(info.value)
    suggested = re.search(r"Pass model='([^']+)'", str(info.value))[1]
    BertSentenceVectorizer(model=suggested, layers=-1, cache=None).fit()


def test_a_tokenizer_with_no_fast_version_is_named(tiny_bert, tmp_path):
    import json
    import shutil

    # BertJapaneseTokenizer exists in Python only
    directory = tmp_path / "slow-only"
    directory.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_bert / name, directory)
    from transformers import AutoTokenizer

    vocab = AutoTokenizer.from_pretrained(tiny_bert).get_vocab()
    (directory / "vocab.txt").write_text("\n".join(sorted(vocab, key=vocab.get)))
    config = {
        "tokenizer_class": "BertJapaneseTokenizer",
        "word_tokenizer_type": "basic",
        "subword_tokenizer_type": "wordpiece",
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="cannot convert its BertJapaneseTokenizer"):
        BertSentenceVectorizer(model=directory).fit()


def test_tensorflow_weights_are_named_not_read(tiny_bert, tmp_path):
    directory = _without_safetensors(tiny_bert, tmp_path / "tf-only")
    (directory / "tf_model.h5").write_bytes(b"not read")
    (directory / "training_args.bin").write_bytes(b"not weights")
    with pytest.raises(ValueError, match=r"weights are in tf_model.h5 \(TensorFlow"):
        BertSentenceVectorizer(model=directory).fit()


def _reference_states(directory, text):
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModel.from_pretrained(directory).eval()
    with torch.no_grad():
        encoded = tokenizer(text, return_tensors="pt", return_token_type_ids=False)
        return model(**encoded, output_hidden_states=True).hidden_states


@pytest.mark.parametrize(
    "kind",
    [
        "modernbert",
        "deberta_conv",
        "albert",
        "mpnet",
        "fnet",
        "electra",
        "xlm_roberta",
        "camembert",
        "deberta_v3",
    ],
)
def test_other_encoders_give_the_hidden_states_the_model_returns(tiny_encoder, kind):
    # ModernBERT's last state is normed after its last layer, DeBERTa-v2 with
    # a convolution changes the first layer's output, ALBERT has no list of
    # layers, and FNet mixes padding into every token: each state must still
    # be hidden_states[i] of the text run alone
    _check_against_hidden_states(tiny_encoder(kind))


def test_a_model_that_mixes_padding_in_is_batched_without_padding(
    tiny_encoder, tiny_bert, monkeypatch
):
    import skbert._model
    from skbert._model import load_model

    fnet = load_model(tiny_encoder("fnet"), CPU)
    assert not fnet.pads_safely
    assert load_model(tiny_bert, CPU).pads_safely
    # a Python warning at the first fit of a loaded model, for either estimator;
    # not again at the next fits (a grid search's) of the same load
    samples = {
        BertSentenceVectorizer: ["a cat", "the dog", "a b c", "hello world"],
        BertWordVectorizer: ["a [cat]", "the [dog]", "[a] b c", "hello [world]"],
    }
    for estimator, X in samples.items():
        monkeypatch.setattr(skbert._model, "_CACHE", {})  # a new load
        vectorizer = estimator(model=tiny_encoder("fnet"), cache=None)
        with pytest.warns(UserWarning, match="change when a text is padded"):
            vectorizer.fit()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            vectorizer.fit()
            GridSearchCV(
                Pipeline([("v", vectorizer), ("c", LogisticRegression())]),
                {"v__cache": [None, "memory"]},
                cv=2,
            ).fit(X, [0, 1, 0, 1])
    vectorizer = BertSentenceVectorizer(model=tiny_encoder("fnet"), cache=None).fit()
    vectorizer.transform(["a cat", "the dog", "hello world " * 5, "a b c"])
    # two texts of 4 tokens share a batch; the others are alone
    assert vectorizer.transform_stats_["n_batches"] == 3
    assert (
        vectorizer.transform_stats_["n_padded_tokens"]
        == vectorizer.transform_stats_["n_tokens"]
    )


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_a_model_that_cannot_run_in_a_dtype_says_so_at_fit(tiny_encoder, dtype):
    # FNet's FFT has no half-precision kernel on the CPU
    vectorizer = BertSentenceVectorizer(
        model=tiny_encoder("fnet"), dtype=dtype, device="cpu", cache=None
    )
    with pytest.raises(ValueError, match=f"FNetModel cannot run in dtype='{dtype}' "):
        vectorizer.fit()
    assert not hasattr(vectorizer, "model_")


def test_roberta_gives_the_hidden_states_the_model_returns(tiny_roberta):
    _check_against_hidden_states(tiny_roberta)


def _check_against_hidden_states(directory):
    """Padded batches of skbert against the model run one text at a time."""
    texts = ["the bank of the river", "a cat sat", "hello world " * 5]
    references = [_reference_states(directory, text) for text in texts]
    for layers in (-1, 1, [-1, -2, 0]):
        X = BertSentenceVectorizer(
            model=directory,
            cache=None,
            layers=layers,
            layer_combine="concat",
            pooling="mean",
            batch_size=2,
        ).fit_transform(texts)
        for row, states in zip(X, references, strict=True):
            chosen = [layers] if isinstance(layers, int) else layers
            expected = torch.cat([states[i][0] for i in chosen], dim=-1).mean(0)
            np.testing.assert_allclose(row, expected.numpy(), atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_rounding_is_not_taken_for_padding_that_changes_states(dtype):
    # the bundled model's padded and unpadded states differ by 5e-4 (float16)
    # and 5e-3 (bfloat16) of their largest value: rounding, not FNet's mixing
    from skbert._model import load_model

    assert load_model(None, CPU, dtype).pads_safely


def test_states_the_hooks_cannot_give_run_the_whole_model(tiny_encoder, tiny_bert):
    from skbert._model import load_model

    modernbert = load_model(tiny_encoder("modernbert"), CPU)
    assert modernbert.hooked == frozenset({0, 1})  # not 2: the final norm
    assert load_model(tiny_encoder("deberta_conv"), CPU).hooked == {0, 2}
    assert load_model(tiny_encoder("albert"), CPU).hooked == frozenset()
    assert load_model(tiny_bert, CPU).hooked == {0, 1, 2}


def test_positions_counted_from_the_padding_id_are_not_overrun(tiny_encoder):
    # MPNet (like RoBERTa) numbers positions from its padding index (1) + 1,
    # so 64 of its 66 positions hold tokens
    directory = tiny_encoder("mpnet")
    vectorizer = BertSentenceVectorizer(model=directory, cache=None).fit()
    assert vectorizer.max_length_ == 64
    with pytest.warns(UserWarning, match="1 of 1 distinct texts were longer"):
        assert vectorizer.transform(["the cat sat " * 40]).shape == (1, 32)


def test_a_tokenizer_without_a_pad_token_loads(tiny_bert, tmp_path):
    # skbert pads its batches itself: the load-time probe must not need one
    import shutil

    from transformers import AutoTokenizer

    directory = tmp_path / "no-pad"
    shutil.copytree(tiny_bert, directory)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    tokenizer.pad_token = None
    tokenizer.save_pretrained(directory)
    assert AutoTokenizer.from_pretrained(directory).pad_token_id is None
    X = BertSentenceVectorizer(model=directory, cache=None).fit_transform(
        ["the cat sat", "a dog"]
    )
    expected = BertSentenceVectorizer(model=tiny_bert, cache=None).fit_transform(
        ["the cat sat", "a dog"]
    )
    np.testing.assert_allclose(X, expected, atol=1e-6)


def test_a_model_that_pools_tokens_between_layers_is_refused(tiny_encoder):
    with pytest.raises(ValueError, match="pools tokens between layers, such as Funnel"):
        BertSentenceVectorizer(model=tiny_encoder("funnel")).fit()


def test_big_bird_runs_with_full_attention_whatever_came_before(tiny_encoder):
    # transformers turns a BigBird's block-sparse attention (here above 14
    # tokens) into full attention for good at its first shorter input: skbert
    # sets full attention at load, with a note, so no vector depends on order
    from transformers import AutoModel, AutoTokenizer

    directory = tiny_encoder("big_bird")
    long = " ".join(["the cat sat on the bank of the river"] * 3)  # 29 tokens
    with pytest.warns(UserWarning, match=r"runs with full attention"):
        vectorizer = BertSentenceVectorizer(
            model=directory, layers=-1, normalize=False, cache=None
        ).fit()
    assert vectorizer.model_.attention_type == "original_full"
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModel.from_pretrained(directory).eval()
    model.set_attention_type("original_full")
    with torch.no_grad():
        states = model(**tokenizer(long, return_tensors="pt")).last_hidden_state
    expected = states[0].mean(0).numpy()
    np.testing.assert_allclose(vectorizer.transform([long])[0], expected, atol=1e-5)
    got = vectorizer.transform(["a", long, "the bank"])[1]
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_a_config_without_layers_or_hidden_size_is_refused(tiny_encoder):
    # a Perceiver's config names neither: it was a TypeError from int(None)
    with pytest.raises(ValueError, match=r"names no number of hidden layers or no"):
        BertSentenceVectorizer(model=tiny_encoder("perceiver")).fit()


def test_the_cache_key_names_how_states_are_computed(tiny_bert, monkeypatch):
    # raised when skbert computes other states from the same files, so that a
    # disk cache never serves states an older version computed
    from skbert import _model

    before = _model._fingerprint(str(tiny_bert), CPU, torch.float32)
    monkeypatch.setattr(_model, "STATES_VERSION", "states-next")
    assert _model._fingerprint(str(tiny_bert), CPU, torch.float32) != before


def test_a_tokenizer_without_its_vocabulary_is_refused(tiny_bert, tmp_path):
    # transformers 5 builds a tokenizer of the special tokens alone
    import shutil

    directory = tmp_path / "no-vocabulary"
    shutil.copytree(tiny_bert, directory)
    for name in ("tokenizer.json", "vocab.txt"):
        (directory / name).unlink(missing_ok=True)
    with pytest.raises(ValueError, match="no vocabulary beyond its 5 special tokens"):
        BertSentenceVectorizer(model=directory).fit()


def test_a_model_is_kept_under_the_revision_it_loaded(monkeypatch):
    # the cache's main names an older commit than the hub gives: a copy pinned
    # to the older commit must load it, not find the newer model under its name
    from pathlib import Path
    from types import SimpleNamespace

    import skbert._model

    loads = []

    def load(source, device, torch_dtype, revision=None):
        loads.append(revision)
        return SimpleNamespace(revision=revision or "b" * 40)  # the hub's newest

    older = Path("snapshots") / ("a" * 40)
    monkeypatch.setattr(skbert._model, "_load", load)
    monkeypatch.setattr(skbert._model, "_hub_snapshot", lambda *args: older)
    skbert._model.clear_cache()
    try:
        assert load_model("someone/tiny", CPU).revision == "b" * 40
        assert load_model("someone/tiny", CPU, revision="a" * 40).revision == "a" * 40
        assert load_model("someone/tiny", CPU, revision="b" * 40).revision == "b" * 40
        assert loads == [None, "a" * 40]
    finally:
        skbert._model.clear_cache()


def test_a_float16_overflow_is_warned_about_not_returned_silently(tiny_bert, tmp_path):
    import shutil

    from transformers import BertModel

    directory = shutil.copytree(tiny_bert, tmp_path / "hot")
    model = BertModel.from_pretrained(tiny_bert)
    with torch.no_grad():  # the last layer's FFN activations near 1e5 > 65504
        model.encoder.layer[-1].intermediate.dense.weight.mul_(2e5)
    model.save_pretrained(directory)
    texts = ["the cat sat on the dog", "a"]
    for dtype in ("float32", "bfloat16"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            X = BertSentenceVectorizer(
                model=directory, dtype=dtype, layers=-1, cache=None
            ).fit_transform(texts)
        assert np.isfinite(X).all()
    half = BertSentenceVectorizer(model=directory, dtype="float16", layers=-1)
    with pytest.warns(UserWarning, match=r"of 2 output rows hold NaN.*use dtype="):
        half.fit_transform(texts)
    words = BertWordVectorizer(model=directory, dtype="float16", cache=None).fit()
    with pytest.warns(UserWarning, match=r"distinct words or tokens hold NaN"):
        words.transform(["the [cat] sat"])
