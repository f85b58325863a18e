"""Tests of the performance paths: streamed CLI output, the copy-free return
of distinct texts, and the asynchronous CUDA copy-back."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from skbert import BertSentenceVectorizer, cli

TEXTS = [
    "The cat sat.",
    "A dog barked at the bank robber after fishing in the river.",
    "hello world",
    "",
    "new york city, here i want to e mail the sentence",
    "the bank",
    "a cat and a dog",
]


@pytest.mark.parametrize("suffix", [".npy", ".parquet"])
@pytest.mark.parametrize("source", [".txt", ".csv"])
def test_cli_streams_in_chunks(tiny_bert, tmp_path, monkeypatch, suffix, source):
    if source == ".txt":
        path = tmp_path / "texts.txt"
        path.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    else:  # a pandas Series, sliced with iloc
        path = tmp_path / "texts.csv"
        pd.DataFrame({"text": TEXTS}).to_csv(path, index=False)
    monkeypatch.setattr(cli, "CHUNK_SIZE", 3)
    out = tmp_path / f"vectors{suffix}"
    assert (
        cli.main(["embed", str(path), "-o", str(out), "--model", str(tiny_bert)]) == 0
    )
    expected = BertSentenceVectorizer(model=str(tiny_bert)).fit_transform(TEXTS)
    got = np.load(out) if suffix == ".npy" else pd.read_parquet(out).to_numpy()
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_vector_writer_checks_the_row_count(tmp_path):
    out = tmp_path / "v.npy"
    with pytest.raises(ValueError, match="1 rows written, 2 announced"):
        with cli.VectorWriter(out, 2, ["a", "b"]) as writer:
            writer.write(np.ones((1, 2), dtype=np.float32))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="width 2"):
        with cli.VectorWriter(out, 1, ["a", "b"]) as writer:
            writer.write(np.ones((1, 3), dtype=np.float32))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", [".npy", ".parquet"])
def test_vector_writer_empty_output(tmp_path, suffix):
    out = tmp_path / f"v{suffix}"
    with cli.VectorWriter(out, 0, ["a", "b"]):
        pass
    got = np.load(out) if suffix == ".npy" else pd.read_parquet(out)
    assert got.shape == (0, 2)


def test_distinct_and_duplicated_texts_give_identical_rows(tiny_bert):
    vectorizer = BertSentenceVectorizer(model=str(tiny_bert), batch_size=2).fit()
    distinct = vectorizer.transform(TEXTS)
    doubled = vectorizer.transform(TEXTS + TEXTS[::-1])
    assert np.array_equal(doubled[: len(TEXTS)], distinct)
    assert np.array_equal(doubled[len(TEXTS) :], distinct[::-1])


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fast_dtype_close_to_float32(tiny_bert, dtype):
    exact = BertSentenceVectorizer(model=str(tiny_bert)).fit_transform(TEXTS)
    fast = BertSentenceVectorizer(model=str(tiny_bert), dtype=dtype).fit_transform(
        TEXTS
    )
    cosine = np.sum(exact * fast, axis=1) / (
        np.linalg.norm(exact, axis=1) * np.linalg.norm(fast, axis=1)
    )
    assert cosine.min() > (1 - 1e-6 if dtype == "float32" else 0.99)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_cuda_async_copy_back_matches_cpu(tiny_bert, dtype):
    cpu = BertSentenceVectorizer(model=str(tiny_bert), device="cpu", batch_size=2)
    gpu = BertSentenceVectorizer(
        model=str(tiny_bert), device="cuda", dtype=dtype, batch_size=2
    )
    texts = TEXTS * 5 + [f"item {i}" for i in range(40)]
    expected = cpu.fit_transform(texts)
    got = gpu.fit_transform(texts)
    atol = 1e-4 if dtype == "float32" else 5e-2
    assert got.dtype == np.float32
    assert np.abs(got - expected).max() < atol


def _record_batches(monkeypatch):
    """Record the (rows, padded length) of every model batch."""
    from skbert import _encode

    shapes = []
    forward = _encode.forward_hidden_states

    def recording(loaded, inputs, layers):
        shapes.append(tuple(inputs["input_ids"].shape))
        return forward(loaded, inputs, layers)

    monkeypatch.setattr(_encode, "forward_hidden_states", recording)
    return shapes


def test_auto_batching_on_cpu_caps_texts_and_tokens(bundled_model, monkeypatch):
    shapes = _record_batches(monkeypatch)
    short = [f"short text number {i}" for i in range(70)]
    long = [f"{i} " + " ".join(["word"] * 300) for i in range(20)]  # distinct heads
    vectorizer = BertSentenceVectorizer(device="cpu", cache=None).fit()
    auto = vectorizer.transform(short + long)
    # long texts: at most 4,096 padded tokens; short ones: at most 32 texts
    assert max(rows * length for rows, length in shapes) <= 4096
    assert max(rows for rows, _ in shapes) == 32
    assert sum(rows for rows, _ in shapes) == 90
    stats = vectorizer.transform_stats_
    assert stats["n_batches"] == len(shapes)
    assert stats["n_padded_tokens"] == sum(rows * length for rows, length in shapes)
    assert stats["n_tokens"] <= stats["n_padded_tokens"]
    shapes.clear()
    unlimited = vectorizer.set_params(batch_size=64, max_batch_tokens=None)
    np.testing.assert_allclose(unlimited.transform(short + long), auto, atol=1e-5)
    # the planned split keeps the 20 long texts apart from the 70 short ones
    assert [rows for rows, _ in shapes][0] == 20
    assert sum(rows for rows, _ in shapes) == 90
    assert all(rows <= 64 and length < 20 for rows, length in shapes[1:])


def test_word_vectorizer_honours_max_batch_tokens(tiny_bert, monkeypatch):
    from skbert import BertWordVectorizer

    samples = [("the cat sat on the bank " * 4, 8, 11), (["a", "dog", "bank"], 2)]
    samples = samples * 5 + [(f"item {i} of the bank", 0, 4) for i in range(6)]
    expected = BertWordVectorizer(model=str(tiny_bert), batch_size=1).fit_transform(
        samples
    )
    shapes = _record_batches(monkeypatch)
    vectorizer = BertWordVectorizer(
        model=str(tiny_bert), batch_size="auto", max_batch_tokens=30
    )
    got = vectorizer.fit_transform(samples)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert all(rows == 1 or rows * length <= 30 for rows, length in shapes)
    stats = vectorizer.transform_stats_
    assert stats["n_batches"] == len(shapes) > 1
    assert stats["n_padded_tokens"] == sum(rows * length for rows, length in shapes)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_auto_batches_by_tokens(tiny_bert, monkeypatch):
    shapes = _record_batches(monkeypatch)
    texts = [f"item {i} of the list" for i in range(100)]
    expected = BertSentenceVectorizer(
        model=str(tiny_bert), device="cpu", cache=None
    ).fit_transform(texts)
    shapes.clear()
    got = BertSentenceVectorizer(
        model=str(tiny_bert), device="cuda", cache=None
    ).fit_transform(texts)
    assert [rows for rows, _ in shapes] == [100]  # one batch: no 32-text limit
    np.testing.assert_allclose(got, expected, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_cuda_cache_matches_uncached(tiny_bert, tmp_path, monkeypatch, dtype):
    from skbert import BertWordVectorizer, _cache

    monkeypatch.setattr(_cache, "_DEFAULT", _cache.TokenStateCache(256 * 2**20))
    texts = TEXTS * 3 + [f"item {i}" for i in range(40)]
    params = {"model": str(tiny_bert), "device": "cuda", "dtype": dtype}
    tol = 1e-5 if dtype == "float32" else 1e-2
    uncached = BertSentenceVectorizer(cache=None, batch_size=3, **params)
    expected = uncached.fit_transform(texts)
    for cache in ("memory", tmp_path / "states"):
        first = BertSentenceVectorizer(cache=cache, batch_size=3, **params)
        # stored states are float32: pooled from them, half-precision
        # results can differ from the uncached ones by their rounding
        np.testing.assert_allclose(
            first.fit_transform(texts), expected, rtol=tol, atol=tol
        )
        # other layers and pooling from the stored states, no model run
        other = BertSentenceVectorizer(
            cache=cache, layers=[0, 1], pooling="max", **params
        ).fit()
        reference = BertSentenceVectorizer(
            cache=None, layers=[0, 1], pooling="max", **params
        ).fit()
        np.testing.assert_allclose(
            other.transform(texts), reference.transform(texts), rtol=tol, atol=tol
        )
        assert (
            other.transform_stats_["cache_hits"] == other.transform_stats_["n_distinct"]
        )
    words = [("the cat sat on the bank", 19, 23), (["a", "dog"], 1)]
    word_expected = BertWordVectorizer(cache=None, **params).fit_transform(words)
    cached = BertWordVectorizer(cache="memory", **params).fit()
    for _ in range(2):
        np.testing.assert_allclose(
            cached.transform(words), word_expected, rtol=tol, atol=tol
        )
    assert cached.transform_stats_["cache_hits"] == 2
