import itertools
import platform
import sys

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

import skbert._encode
from skbert._encode import (
    BATCH_COST_TOKENS,
    MAX_COPIES_IN_FLIGHT,
    HostCopies,
    TextCounter,
    batch_rows,
    encode_texts,
    prompt_tokens,
    rows_keeping_prompt,
    sentence_pooler,
    tokenize,
)
from skbert._model import load_model

CPU = torch.device("cpu")
TEXTS = [
    "hello world",
    "the cat sat on the new york bank after fishing in the river",
    "a",
    "",
    "the dog barked at the money robber",
    "bank vault",
    "it was seen from the city",
]


def _encode(path, texts, batch_size, max_length=64, max_batch_tokens=None, **kwargs):
    loaded = load_model(str(path), CPU)
    return encode_texts(
        loaded,
        texts,
        layers=[1, 2],
        layer_combine="concat",
        pool=sentence_pooler("mean", True),
        n_features=64,
        max_length=max_length,
        device=CPU,
        batch_size=batch_size,
        max_batch_tokens=max_batch_tokens,
        **kwargs,
    )


def test_batch_rows_respects_both_limits():
    lengths = np.array([3, 50, 10, 10, 9, 2, 1, 40])
    order = np.argsort(-lengths, kind="stable")
    batches = list(batch_rows(order, lengths, 3, 40))
    # 50 tokens > 40 runs alone; 40 fits once; then 3 rows of <= 10 tokens
    assert [b.tolist() for b in batches] == [[1], [7], [2, 3, 4], [0, 5, 6]]
    for rows, limit in ((None, 20), (2, None), (None, None), (100, 1)):
        batches = list(batch_rows(order, lengths, rows, limit))
        assert np.array_equal(np.concatenate(batches), order)
        for batch in batches:
            assert rows is None or len(batch) <= rows
            assert (
                limit is None
                or len(batch) == 1
                or (len(batch) * lengths[batch[0]] <= limit)
            )
    assert [len(b) for b in batch_rows(order, lengths, None, None)] == [8]
    assert list(batch_rows(order[:0], lengths, 4, 4)) == []


def _split_cost(lengths, batches):
    return sum(len(b) * lengths[b[0]] + BATCH_COST_TOKENS for b in batches)


def test_batch_rows_ends_a_batch_where_lengths_drop():
    lengths = np.array([100, 100] + [10] * 30)
    order = np.arange(len(lengths))
    # greedy: one batch of 32 rows padded to 100 tokens (3,200 tokens)
    assert [len(b) for b in batch_rows(order, lengths, 32, None)] == [2, 30]
    # no row limit: batches are filled greedily, up to the token limit
    assert [len(b) for b in batch_rows(order, lengths, None, None)] == [32]
    assert [len(b) for b in batch_rows(order, lengths, None, 1000)] == [10, 22]


@pytest.mark.parametrize("seed", range(20))
def test_batch_rows_finds_the_cheapest_split(seed):
    """The planned split is the cheapest of all splits within the limits."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 10))
    lengths = rng.integers(1, 200, n)
    order = np.argsort(-lengths, kind="stable")
    batch_size, max_tokens = int(rng.integers(1, 6)), [None, 300][seed % 2]
    planned = list(batch_rows(order, lengths, batch_size, max_tokens))
    assert np.array_equal(np.concatenate(planned), order)

    def allowed(batch):
        tokens = len(batch) * lengths[batch[0]]
        return len(batch) <= batch_size and (
            max_tokens is None or len(batch) == 1 or tokens <= max_tokens
        )

    assert all(allowed(b) for b in planned)
    best = min(
        _split_cost(lengths, batches)
        for cuts in itertools.product([False, True], repeat=n - 1)
        for batches in [np.split(order, [i + 1 for i, c in enumerate(cuts) if c])]
        if all(allowed(b) for b in batches)
    )
    assert _split_cost(lengths, planned) == best


@pytest.mark.parametrize("max_batch_tokens", [1, 12, 40, None])
def test_token_budget_invariance(tiny_bert, max_batch_tokens):
    expected, _ = _encode(tiny_bert, TEXTS, 1)
    got, _ = _encode(tiny_bert, TEXTS, None, max_batch_tokens=max_batch_tokens)
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("fixture", ["tiny_bert", "tiny_distilbert"])
def test_batch_size_invariance(request, fixture):
    path = request.getfixturevalue(fixture)
    one, _ = _encode(path, TEXTS, 1)
    seven, _ = _encode(path, TEXTS, 7)
    three, _ = _encode(path, TEXTS, 3)
    assert one.dtype == np.float32 and one.shape == (len(TEXTS), 64)
    np.testing.assert_allclose(one, seven, atol=1e-5)
    np.testing.assert_allclose(one, three, atol=1e-5)


def test_order_is_restored_after_length_sorting(tiny_bert):
    rng = np.random.default_rng(0)
    order = rng.permutation(len(TEXTS))
    base, _ = _encode(tiny_bert, TEXTS, 2)
    shuffled, _ = _encode(tiny_bert, [TEXTS[i] for i in order], 2)
    np.testing.assert_allclose(shuffled, base[order], atol=1e-5)


def test_padding_neighbours_do_not_change_a_text(tiny_bert):
    alone, _ = _encode(tiny_bert, ["bank vault"], 1)
    padded, _ = _encode(tiny_bert, ["bank vault", TEXTS[1] * 2], 8)
    np.testing.assert_allclose(alone[0], padded[0], atol=1e-5)


def test_identical_texts_run_once_and_fill_every_row(tiny_bert, monkeypatch):
    import skbert._encode as encode_module

    seen = []
    real = encode_module.tokenize

    def spy(tokenizer, texts, *args):
        seen.append(list(texts))
        return real(tokenizer, texts, *args)

    monkeypatch.setattr(encode_module, "tokenize", spy)
    out, _ = _encode(tiny_bert, ["b", "a", "b", "b"], 2)
    assert sorted(seen[0]) == ["a", "b"]
    np.testing.assert_array_equal(out[0], out[2])
    np.testing.assert_array_equal(out[0], out[3])
    assert not np.array_equal(out[0], out[1])


def test_empty_input(tiny_bert):
    out, stats = _encode(tiny_bert, [], 4)
    assert out.shape == (0, 64) and out.dtype == np.float32
    assert stats["n_texts"] == stats["n_truncated"] == 0


def test_tokenize_truncates_to_head_and_counts(tiny_bert):
    loaded = load_model(str(tiny_bert), CPU)
    long_text = " ".join(["cat"] * 30)
    tokenized = tokenize(loaded.tokenizer, [long_text, "dog", long_text + " a"], 10)
    assert tokenized.n_truncated == 2
    assert [len(ids) for ids in tokenized.input_ids] == [10, 3, 10]
    cls, sep = loaded.tokenizer.cls_token_id, loaded.tokenizer.sep_token_id
    first = tokenized.input_ids[0]
    assert first[0] == cls and first[-1] == sep
    assert tokenized.special_tokens_mask[0] == [1] + [0] * 8 + [1]


@pytest.mark.parametrize("fixture", ["tiny_bert", "tiny_distilbert"])
@pytest.mark.parametrize("max_length, stride", [(64, 0), (8, 2), (5, 0)])
def test_backend_encoding_equals_transformers(request, fixture, max_length, stride):
    from skbert._encode import _encode_overflowing

    tokenizer = load_model(str(request.getfixturevalue(fixture)), CPU).tokenizer
    texts = [*TEXTS, " ", "the bank " * 20]
    expected = tokenizer(
        texts,
        truncation=True,
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
        return_special_tokens_mask=True,
        return_attention_mask=False,
        return_token_type_ids=False,
    )
    got = _encode_overflowing(tokenizer, texts, max_length, stride)
    for key in ("input_ids", "special_tokens_mask", "overflow_to_sample_mapping"):
        assert list(got[key]) == list(expected[key]), key
    # the user's tokenizer keeps its own settings
    before = (
        tokenizer.backend_tokenizer.truncation,
        tokenizer.backend_tokenizer.padding,
    )
    tokenize(tokenizer, texts, 7, "window", 3)
    after = (
        tokenizer.backend_tokenizer.truncation,
        tokenizer.backend_tokenizer.padding,
    )
    assert after == before


def test_rows_keeping_no_prompt_are_the_tokenizers_overflowing_rows(tiny_bert):
    # with no prompt, rows_keeping_prompt lays windows out as the fast
    # tokenizer's overflowing rows (the path skbert takes without a prompt)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    rng = np.random.default_rng(0)
    words = "the cat sat on a river bank embeddings".split()
    for _ in range(200):
        text = " ".join(rng.choice(words, size=rng.integers(1, 40)))
        max_length = int(rng.integers(4, 20))
        stride = int(rng.integers(0, max_length - 2))
        encoded = tokenizer(
            text,
            truncation=True,
            max_length=max_length,
            stride=stride,
            return_overflowing_tokens=True,
        )
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        rows = rows_keeping_prompt(0, len(ids), max_length - 2, "window", stride)
        assert [[ids[k] for k in row] for row in rows] == [
            row[1:-1] for row in encoded["input_ids"]
        ]


def test_rows_keeping_prompt_keep_it_at_the_head_of_each_row():
    assert rows_keeping_prompt(2, 5, 5, "window") == [[0, 1, 2, 3, 4]]  # fits
    assert rows_keeping_prompt(2, 9, 5, "window", 1) == [
        [0, 1, 2, 3, 4],
        [0, 1, 4, 5, 6],
        [0, 1, 6, 7, 8],
    ]
    assert rows_keeping_prompt(2, 9, 5, "truncate") == [[0, 1, 2, 3, 4]]
    assert rows_keeping_prompt(2, 9, 5, "truncate_tail") == [[0, 1, 6, 7, 8]]
    assert rows_keeping_prompt(1, 12, 9, "truncate_head_tail") == [
        [0, 1, 2, 6, 7, 8, 9, 10, 11]
    ]
    # a prompt that fills the room is read as text from there on
    assert rows_keeping_prompt(5, 7, 5, "window", 0) == [
        [0, 1, 2, 3, 4],
        [0, 1, 2, 3, 5],
        [0, 1, 2, 3, 6],
    ]
    assert prompt_tokens([(0, 5), (5, 6), (7, 10)], 7) == 2
    assert prompt_tokens([(0, 5), (5, 6), (6, 11)], 7) == 2  # "Ġbank": the text's
    # a prompt with no space at its end ("query:"): its last token ends with it
    assert prompt_tokens([(0, 5), (5, 6), (6, 9)], 6) == 2
    # the special tokens alone fill the rows: no token of text, none past them
    assert rows_keeping_prompt(0, 3, 0, "truncate_tail") == [[]]
    assert rows_keeping_prompt(2, 3, 0, "truncate_head_tail") == [[]]
    assert prompt_tokens([(0, 5), (5, 6), (7, 10)], 0) == 0


@pytest.mark.parametrize(
    "settings",
    [
        {"truncation_side": "left"},
        {"split_special_tokens": True},
        {"split_special_tokens": True, "truncation_side": "left"},
    ],
)
def test_tokenizer_settings_go_through_transformers(tiny_bert, settings):
    # split_special_tokens is transformers' to apply; truncation_side is not:
    # long_text says which end a long text keeps, so it is always the right
    from skbert._encode import _encode_overflowing

    tokenizer = load_model(str(tiny_bert), CPU).tokenizer
    saved = {name: getattr(tokenizer, name) for name in settings}
    texts = ["the cat sat on the [SEP] bank", "[CLS] hello world"]
    try:
        for name, value in settings.items():
            setattr(tokenizer, name, value)
        got = _encode_overflowing(tokenizer, texts, 5, 0)
        assert tokenizer.truncation_side == settings.get("truncation_side", "right")
        tokenizer.truncation_side = "right"
        expected = tokenizer(
            texts,
            truncation=True,
            max_length=5,
            return_overflowing_tokens=True,
            return_special_tokens_mask=True,
        )
        assert got["input_ids"] == expected["input_ids"]
    finally:
        for name, value in saved.items():
            setattr(tokenizer, name, value)


def test_a_call_of_several_chunks_gives_freed_memory_back_after_each(
    tiny_bert, monkeypatch
):
    import skbert._encode as encode

    released = []
    monkeypatch.setattr(encode, "CHUNK_TEXTS", 3)
    monkeypatch.setattr(encode, "release_freed_memory", lambda: released.append(1))
    expected, _ = _encode(tiny_bert, TEXTS, batch_size=2)  # 7 texts: 3 chunks
    assert len(released) == 3
    released.clear()
    got, _ = _encode(tiny_bert, TEXTS[:3], batch_size=2)  # one chunk: no trim
    assert not released
    np.testing.assert_allclose(got, expected[:3], atol=1e-5)


@pytest.mark.parametrize("long_text", ["truncate", "window"])
def test_one_progress_bar_counts_every_text_of_a_call(
    tiny_bert, monkeypatch, capsys, bar_counts, long_text
):
    import skbert._encode as encode

    monkeypatch.setattr(encode, "CHUNK_TEXTS", 3)
    texts = TEXTS + TEXTS[:2]  # 9 texts, 7 distinct: 3 chunks
    capsys.readouterr()
    _, stats = _encode(
        tiny_bert,
        texts,
        batch_size=2,
        max_length=8,
        long_text=long_text,
        stride=2,
        progress_bar=True,
    )
    windowed = long_text == "window"
    assert stats["n_windows"] > 7 if windowed else stats["n_windows"] == 7
    counts = bar_counts(capsys.readouterr().err)
    # one bar over the 9 texts, not one per chunk of 3 or per window
    assert {total for _, total in counts} == {9}
    assert counts[-1] == (9, 9)
    assert [done for done, _ in counts] == sorted(done for done, _ in counts)


def test_a_chunk_gives_freed_memory_back_every_trim_batches(tiny_bert, monkeypatch):
    import skbert._encode as encode

    released = []
    monkeypatch.setattr(encode, "TRIM_BATCHES", 2)
    monkeypatch.setattr(encode, "release_freed_memory", lambda: released.append(1))
    _encode(tiny_bert, TEXTS, batch_size=1)  # 7 batches: after the 2nd, 4th, 6th
    assert len(released) == 3


def test_release_freed_memory_runs_here():
    from skbert._encode import _malloc_trim, release_freed_memory

    release_freed_memory()  # never raises, with or without glibc
    if sys.platform.startswith("linux") and "glibc" in platform.libc_ver()[0]:
        assert _malloc_trim() is not None


class _OnFakeGpu(torch.Tensor):
    @property
    def is_cuda(self):
        return True


def _fake_cuda_copies(monkeypatch) -> list:
    """CUDA events that complete only when the test says so, and pinned
    memory from the CPU: HostCopies runs its CUDA path without a GPU."""
    events = []

    class Event:
        def __init__(self):
            self.done = False
            events.append(self)

        def record(self, stream=None):
            pass

        def query(self):
            return self.done

        def synchronize(self):
            self.done = True

    empty = torch.empty
    monkeypatch.setattr(torch, "empty", lambda *a, pin_memory, **k: empty(*a, **k))
    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: None)
    return events


def test_host_copies_deliver_in_order_and_bound_the_copies_in_flight(monkeypatch):
    events = _fake_cuda_copies(monkeypatch)
    delivered = []
    copies = HostCopies(lambda key, host: delivered.append((key, host.tolist())))
    n = MAX_COPIES_IN_FLIGHT + 2
    for key in range(n):
        copies.put(key, torch.full((2,), float(key)).as_subclass(_OnFakeGpu))
        assert len(copies.pending) <= MAX_COPIES_IN_FLIGHT
    # no copy completed by itself: the last two puts waited for the oldest two
    assert [key for key, _ in delivered] == [0, 1]
    events[3].done = True  # completed before copy 2
    copies.put(n, torch.zeros(2).as_subclass(_OnFakeGpu))  # waits for 2, then 3
    assert [key for key, _ in delivered] == [0, 1, 2, 3]
    events[5].done = True  # completed, but 4 has not: kept, in order
    copies.put(n + 1, torch.zeros(2).as_subclass(_OnFakeGpu))
    assert [key for key, _ in delivered] == [0, 1, 2, 3]
    copies.finish()
    assert [key for key, _ in delivered] == list(range(n + 2))
    assert delivered[:n] == [(key, [float(key)] * 2) for key in range(n)]
    # a tensor already on the host is delivered at once, with no event
    copies.put("cpu", torch.ones(1))
    assert delivered[-1] == ("cpu", [1.0]) and len(events) == n + 2


def test_host_copies_bound_the_pinned_bytes_in_flight(monkeypatch):
    _fake_cuda_copies(monkeypatch)
    monkeypatch.setattr(skbert._encode, "MAX_BYTES_IN_FLIGHT", 100)
    delivered = []
    copies = HostCopies(lambda key, host: delivered.append(key))
    for key in range(4):  # 64 bytes each: two would pass the bound
        copies.put(key, torch.full((16,), float(key)).as_subclass(_OnFakeGpu))
        assert len(copies.pending) == 1 and copies.pending_bytes == 64
    assert delivered == [0, 1, 2]
    # a copy larger than the bound alone is let through, not waited for at once
    copies.put("big", torch.zeros(64).as_subclass(_OnFakeGpu))
    assert delivered == [0, 1, 2, 3] and copies.pending_bytes == 256
    copies.finish()
    assert delivered == [0, 1, 2, 3, "big"] and copies.pending_bytes == 0


class _Bar:
    def __init__(self):
        self.n = 0

    def update(self, step):
        self.n += step


def test_a_text_counts_when_its_last_window_is_done():
    # texts 0 and 1 in two windows each; text 1 was given twice
    bar = _Bar()
    counter = TextCounter(bar, np.array([1, 2]), np.array([0, 0, 1, 1]))
    counter.rows_done(np.array([0, 2]))  # the first window of each
    assert bar.n == 0
    counter.rows_done(np.array([1]))
    assert bar.n == 1
    counter.rows_done(np.array([3]))
    assert bar.n == 3
    plain = TextCounter(bar := _Bar(), np.array([1, 3, 1]))
    plain.rows_done(np.array([1, 2]))
    assert bar.n == 4


def test_threads_tokenizing_with_other_settings_keep_their_own(tiny_bert):
    # transformers sets truncation on the shared Rust backend at each call:
    # without a lock, a thread could encode with another's max_length
    import threading

    from skbert._encode import tokenize_pairs

    tokenizer = load_model(str(tiny_bert), CPU).tokenizer
    a = ["the bank of the river was seen by the cat " * 6] * 100
    b = ["a dog barked at the money robber " * 5] * 100
    too_long = []

    def work(max_length):
        for _ in range(20):
            tokenized = tokenize_pairs(tokenizer, a, b, max_length)
            longest = max(len(ids) for ids in tokenized.input_ids)
            if longest > max_length:
                too_long.append((max_length, longest))

    threads = [threading.Thread(target=work, args=(n,)) for n in (16, 40, 64)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert too_long == []
