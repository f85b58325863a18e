import pytest
import torch

from skbert._pooling import (
    combine_layers,
    pool_pieces,
    pool_subwords,
    pool_tokens,
    select_layers,
)


@pytest.fixture
def embeddings():
    # batch 2, seq_len 3, hidden 2; the second sequence has one padding token
    return torch.tensor(
        [
            [[1.0, 2.0], [3.0, -4.0], [5.0, 0.0]],
            [[-1.0, 1.0], [2.0, 3.0], [100.0, 100.0]],
        ]
    )


@pytest.fixture
def mask():
    return torch.tensor([[1, 1, 1], [1, 1, 0]])


def test_select_layers_stacks_requested_indices_in_order():
    hidden_states = tuple(torch.full((1, 2, 3), float(i)) for i in range(4))
    stacked = select_layers(hidden_states, [3, 1])
    assert stacked.shape == (2, 1, 2, 3)
    assert stacked[0].eq(3).all() and stacked[1].eq(1).all()
    # a dict holding only some layers works the same way
    assert torch.equal(select_layers({1: hidden_states[1]}, [1])[0], hidden_states[1])


@pytest.mark.parametrize(
    "how, expected",
    [
        ("mean", [[2.0, 3.0]]),
        ("sum", [[4.0, 6.0]]),
        ("concat", [[1.0, 2.0, 3.0, 4.0]]),
    ],
)
def test_combine_layers(how, expected):
    stacked = torch.tensor([[[[1.0, 2.0]]], [[[3.0, 4.0]]]])  # (2 layers, 1, 1, 2)
    before = stacked.clone()
    combined = combine_layers(stacked, how)
    assert torch.equal(combined[0], torch.tensor(expected))
    assert torch.equal(stacked, before)


def test_combine_layers_rejects_unknown():
    with pytest.raises(ValueError, match="how must be one of"):
        combine_layers(torch.zeros(1, 1, 1, 1), "avg")


@pytest.mark.parametrize(
    "how, expected",
    [
        ("mean", [[3.0, -2 / 3], [0.5, 2.0]]),
        ("max", [[5.0, 2.0], [2.0, 3.0]]),
        ("mean_max", [[3.0, -2 / 3, 5.0, 2.0], [0.5, 2.0, 2.0, 3.0]]),
        ("max_mean", [[5.0, 2.0, 3.0, -2 / 3], [2.0, 3.0, 0.5, 2.0]]),
        ("cls", [[1.0, 2.0], [-1.0, 1.0]]),
        ("last", [[5.0, 0.0], [2.0, 3.0]]),
        (
            "mean_sqrt_len",
            [[9 / 3**0.5, -2 / 3**0.5], [1 / 2**0.5, 4 / 2**0.5]],
        ),
    ],
)
def test_pool_tokens_hand_computed(embeddings, mask, how, expected):
    before = embeddings.clone()
    pooled = pool_tokens(embeddings, mask, how)
    assert torch.allclose(pooled, torch.tensor(expected), atol=1e-6)
    assert torch.equal(embeddings, before), "input was modified"


@pytest.mark.parametrize(
    "how", ["mean", "max", "mean_max", "max_mean", "last", "mean_sqrt_len"]
)
def test_pool_tokens_padding_never_counts(embeddings, mask, how):
    changed = embeddings.clone()
    changed[1, 2] = torch.tensor([-7.0, 1e6])  # the padding position
    assert torch.equal(
        pool_tokens(embeddings, mask, how), pool_tokens(changed, mask, how)
    )


@pytest.mark.parametrize(
    "how", ["mean", "max", "mean_max", "max_mean", "last", "mean_sqrt_len"]
)
def test_pool_tokens_empty_mask_gives_finite_zeros(embeddings, how):
    mask = torch.tensor([[0, 0, 0], [1, 1, 0]])
    pooled = pool_tokens(embeddings, mask, how)
    assert torch.isfinite(pooled).all()
    assert pooled[0].eq(0).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    "how", ["mean", "max", "mean_max", "max_mean", "last", "mean_sqrt_len"]
)
def test_pool_tokens_empty_mask_gives_zeros_in_half_precision(embeddings, how, dtype):
    mask = torch.tensor([[0, 0, 0], [1, 1, 0]])
    pooled = pool_tokens(embeddings.to(dtype), mask, how)
    assert pooled.dtype == dtype
    assert pooled[0].eq(0).all()  # 1e-9 underflows in float16: 0 / 0 was NaN
    expected = pool_tokens(embeddings, mask, how)[1]
    torch.testing.assert_close(pooled[1].float(), expected, atol=1e-2, rtol=1e-2)


def test_pool_tokens_rejects_unknown(embeddings, mask):
    with pytest.raises(ValueError, match="how must be one of"):
        pool_tokens(embeddings, mask, "avg")


@pytest.mark.parametrize("how", ["mean", "first", "last", "sum", "max", "first_last"])
@pytest.mark.parametrize("sign", [1, -1])
def test_pool_pieces_equals_pooling_every_token_at_once(how, sign):
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randn(11, 4, generator=generator)
    if sign < 0:  # all below 0: a piece of no token must not add a max of 0
        tokens = -tokens.abs() - 0.1
    # word 0: tokens 0-4 in pieces of 2, 0 (a piece of no word's token) and 3;
    # word 1: tokens 5-6 in one piece; word 2: none; word 3: 7-10 in pieces of 1, 3
    word_of_token = torch.tensor([0, 0, 0, 0, 0, 1, 1, 3, 3, 3, 3])
    bounds = [(0, 2, 0), (2, 2, 0), (2, 5, 0), (5, 7, 1), (7, 8, 3), (8, 11, 3)]
    pooled = torch.cat(
        [
            pool_subwords(tokens[a:b], torch.zeros(b - a, dtype=torch.long), how, 1)
            for a, b, _ in bounds
        ]
    )
    joined = pool_pieces(
        pooled,
        torch.tensor([word for _, _, word in bounds]),
        torch.tensor([b - a for a, b, _ in bounds]),
        how,
        n_words=4,
    )
    expected = pool_subwords(tokens, word_of_token, how, n_words=4)
    torch.testing.assert_close(joined, expected)
    assert joined[2].eq(0).all()
