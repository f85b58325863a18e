"""Pure tensor functions: layer selection and combination, token pooling.

Nothing here touches a model, a device or a file. Inputs are never written to.
"""

from __future__ import annotations

import torch

# the names live where the command line reads them without importing torch
from ._validation import LAYER_COMBINES, POOLINGS, SUBWORD_POOLINGS

__all__ = [
    "LAYER_COMBINES",
    "POOLINGS",
    "SUBWORD_POOLINGS",
    "combine_layers",
    "pool_pieces",
    "pool_subwords",
    "pool_segments",
    "pool_tokens",
    "select_layers",
]


def pool_segments(
    embeddings: torch.Tensor, token_mask: torch.Tensor, segment_ids: torch.Tensor
) -> torch.Tensor:
    """Mean over each segment of a sentence pair, concatenated.

    Parameters
    ----------
    embeddings : Tensor of shape (batch, seq_len, hidden)
    token_mask : Tensor of shape (batch, seq_len), 1 for tokens that count.
    segment_ids : Tensor of shape (batch, seq_len), 0 for text A, 1 for text B.

    Returns
    -------
    pooled : Tensor of shape (batch, 2 * hidden): mean of A, then mean of B.
        A segment with no token in the mask pools to zeros.
    """
    first = token_mask * (segment_ids == 0)
    second = token_mask * (segment_ids == 1)
    return torch.cat(
        (
            pool_tokens(embeddings, first, "mean"),
            pool_tokens(embeddings, second, "mean"),
        ),
        dim=-1,
    )


def select_layers(
    hidden_states: dict[int, torch.Tensor] | tuple[torch.Tensor, ...],
    layers: list[int],
) -> torch.Tensor:
    """Stack the requested hidden states.

    Parameters
    ----------
    hidden_states : tuple of Tensor of shape (batch, seq_len, hidden), or dict
        ``num_layers + 1`` entries: index 0 is the embedding output, index ``i``
        the output of encoder layer ``i``. A dict holds only some indices.
    layers : list of int
        Non-negative indices into ``hidden_states``.

    Returns
    -------
    stacked : Tensor of shape (n_layers, batch, seq_len, hidden)
    """
    return torch.stack([hidden_states[i] for i in layers], dim=0)


def combine_layers(stacked: torch.Tensor, how: str) -> torch.Tensor:
    """Combine stacked layers into one tensor per token.

    Parameters
    ----------
    stacked : Tensor of shape (n_layers, batch, seq_len, hidden)
    how : {"mean", "sum", "concat"}
        ``"concat"`` joins the layers in the order given, so the width is
        ``n_layers * hidden``.

    Returns
    -------
    combined : Tensor of shape (batch, seq_len, hidden) or
        (batch, seq_len, n_layers * hidden) for ``"concat"``.
    """
    if how == "mean":
        return stacked.mean(dim=0)
    if how == "sum":
        return stacked.sum(dim=0)
    if how == "concat":
        return torch.cat(tuple(stacked), dim=-1)
    raise ValueError(f"how must be one of {LAYER_COMBINES}, got {how!r}.")


def pool_tokens(
    embeddings: torch.Tensor, token_mask: torch.Tensor, how: str
) -> torch.Tensor:
    """Pool token vectors into one vector per sequence, ignoring masked tokens.

    Parameters
    ----------
    embeddings : Tensor of shape (batch, seq_len, hidden)
    token_mask : Tensor of shape (batch, seq_len)
        1 (or True) for the tokens that take part, 0 for padding and for
        tokens left out (e.g. [CLS]/[SEP] when special tokens are excluded).
    how : {"mean", "max", "mean_max", "max_mean", "cls", "last", "mean_sqrt_len"}
        ``"cls"`` takes position 0 whatever the mask. ``"last"`` takes the
        last token whose mask is 1. ``"mean_max"`` concatenates mean and max,
        ``"max_mean"`` max and mean (sentence-transformers' order).

    Returns
    -------
    pooled : Tensor of shape (batch, hidden), or (batch, 2 * hidden) for
        ``"mean_max"`` and ``"max_mean"``. A sequence with no token in the
        mask pools to zeros (except ``"cls"``), so the result is always finite.
    """
    mask = token_mask.to(embeddings.dtype).unsqueeze(-1)
    count = mask.sum(dim=1)
    if how == "cls":
        return embeddings[:, 0]
    if how in ("mean", "mean_sqrt_len"):
        summed = (embeddings * mask).sum(dim=1)
        if how == "mean":
            # counts are whole: clamping at 1 only spares an empty sequence's
            # 0 / 0 (a clamp at 1e-9 would underflow to 0 in float16)
            return summed / count.clamp(min=1.0)
        return summed / count.sqrt().clamp(min=1.0)
    if how == "max":
        filled = embeddings.masked_fill(mask == 0, float("-inf"))
        pooled = filled.max(dim=1).values
        return pooled.masked_fill(count == 0, 0.0)
    if how in ("mean_max", "max_mean"):
        first, second = how.split("_")
        return torch.cat(
            (
                pool_tokens(embeddings, token_mask, first),
                pool_tokens(embeddings, token_mask, second),
            ),
            dim=-1,
        )
    if how == "last":
        seq_len = token_mask.shape[1]
        positions = torch.arange(seq_len, device=token_mask.device)
        last = (token_mask.bool() * positions).amax(dim=1)
        batch = torch.arange(embeddings.shape[0], device=embeddings.device)
        pooled = embeddings[batch, last]
        return pooled.masked_fill(count == 0, 0.0)
    raise ValueError(f"how must be one of {POOLINGS}, got {how!r}.")


def pool_subwords(
    embeddings: torch.Tensor,
    word_ids: torch.Tensor,
    how: str,
    n_words: int | None = None,
) -> torch.Tensor:
    """Pool the sub-word pieces of each word into one vector per word.

    Vectorised with ``index_add``/``scatter_reduce`` over all tokens at once.

    Parameters
    ----------
    embeddings : Tensor of shape (..., hidden)
        Token vectors, e.g. (batch, seq_len, hidden) or (n_tokens, hidden).
        Leading dimensions are flattened in row-major order, which defines
        which piece of a word is "first" and "last".
    word_ids : Tensor of int of shape (...)
        The word each token belongs to, in ``[0, n_words)``, the same leading
        shape as ``embeddings``; -1 (any negative value) for tokens that
        belong to no word ([CLS], [SEP], padding).
    how : {"mean", "first", "last", "sum", "max", "first_last"}
        ``"first_last"`` concatenates the first and the last piece.
    n_words : int, default=None
        Number of words; None uses ``word_ids.max() + 1``.

    Returns
    -------
    pooled : Tensor of shape (n_words, hidden), or (n_words, 2 * hidden) for
        ``"first_last"``, in the dtype of ``embeddings``. A word with no token
        pools to zeros, so the result is always finite.
    """
    if how not in SUBWORD_POOLINGS:
        raise ValueError(f"how must be one of {SUBWORD_POOLINGS}, got {how!r}.")
    hidden = embeddings.shape[-1]
    flat = embeddings.reshape(-1, hidden)
    ids = word_ids.reshape(-1).to(device=flat.device, dtype=torch.long)
    if ids.shape[0] != flat.shape[0]:
        raise ValueError(
            f"word_ids has {ids.shape[0]} entries but embeddings has "
            f"{flat.shape[0]} token vectors."
        )
    if n_words is None:
        n_words = int(ids.max().item()) + 1 if ids.numel() else 0
    if how == "first_last":
        return torch.cat(
            (
                pool_subwords(embeddings, word_ids, "first", n_words),
                pool_subwords(embeddings, word_ids, "last", n_words),
            ),
            dim=-1,
        )
    # tokens of no word go to bucket 0, word w to bucket w + 1, and bucket 0
    # is dropped at the end: selecting them out by a boolean mask would wait
    # for a GPU to count them. An id >= n_words stays out of range: an error.
    ids = torch.where(ids >= 0, ids + 1, 0)
    buckets = n_words + 1
    count = torch.zeros(buckets, dtype=torch.long, device=flat.device)
    count = count.index_add_(0, ids, torch.ones_like(ids))[1:]
    empty = (count == 0).unsqueeze(-1)
    if how in ("mean", "sum"):
        summed = torch.zeros((buckets, hidden), dtype=flat.dtype, device=flat.device)
        summed = summed.index_add_(0, ids, flat)[1:]
        if how == "sum":
            return summed
        return summed / count.unsqueeze(-1).clamp(min=1).to(flat.dtype)
    if how == "max":
        pooled = torch.full(
            (buckets, hidden), float("-inf"), dtype=flat.dtype, device=flat.device
        )
        pooled.scatter_reduce_(
            0, ids.unsqueeze(-1).expand(-1, hidden), flat, reduce="amax"
        )
        return pooled[1:].masked_fill(empty, 0.0)
    # "first" or "last": the position of the word's first or last piece
    n_tokens = ids.shape[0]
    positions = torch.arange(n_tokens, device=flat.device)
    if how == "first":
        pick = torch.full((buckets,), n_tokens, device=flat.device)
        pick.scatter_reduce_(0, ids, positions, reduce="amin")
    else:
        pick = torch.full((buckets,), -1, device=flat.device)
        pick.scatter_reduce_(0, ids, positions, reduce="amax")
    # a word with no piece picks token 0, then zeros (no token at all: zeros)
    pick = pick[1:].clamp(0, max(n_tokens - 1, 0))
    picked = flat[pick] if n_tokens else flat.new_zeros((n_words, hidden))
    return picked.masked_fill(empty, 0.0)


def pool_pieces(
    pooled: torch.Tensor,
    piece_word: torch.Tensor,
    n_tokens: torch.Tensor,
    how: str,
    n_words: int,
) -> torch.Tensor:
    """Join the pooled pieces of words into one vector per word.

    A word too long for one window is read in consecutive pieces, each pooled
    alone by :func:`pool_subwords` with ``how``. This joins them into what
    ``pool_subwords`` gives for all the word's tokens at once: the mean
    weighted by each piece's token count, the sum, the max, the first
    piece's first token, the last piece's last, or both for "first_last".

    Parameters
    ----------
    pooled : Tensor of shape (n_pieces, width)
        Each piece pooled alone, pieces of a word in order.
    piece_word : Tensor of int of shape (n_pieces,)
        The word of each piece, in ``[0, n_words)``.
    n_tokens : Tensor of int of shape (n_pieces,)
        The tokens each piece pooled; a piece with none is left out.
    how : {"mean", "first", "last", "sum", "max", "first_last"}
    n_words : int

    Returns
    -------
    joined : Tensor of shape (n_words, width), in the dtype of ``pooled``.
        A word with no token in any piece is zeros.
    """
    if how not in SUBWORD_POOLINGS:
        raise ValueError(f"how must be one of {SUBWORD_POOLINGS}, got {how!r}.")
    keep = n_tokens > 0
    pooled, piece_word, n_tokens = pooled[keep], piece_word[keep], n_tokens[keep]
    if how == "first_last":
        half = pooled.shape[-1] // 2
        return torch.cat(
            (
                pool_pieces(pooled[:, :half], piece_word, n_tokens, "first", n_words),
                pool_pieces(pooled[:, half:], piece_word, n_tokens, "last", n_words),
            ),
            dim=-1,
        )
    if how != "mean":  # the sum of sums, max of maxes, first of firsts...
        return pool_subwords(pooled, piece_word, how, n_words)
    weights = n_tokens.to(pooled.dtype)
    summed = pool_subwords(pooled * weights.unsqueeze(-1), piece_word, "sum", n_words)
    total = torch.zeros(n_words, dtype=pooled.dtype, device=pooled.device)
    total = total.index_add_(0, piece_word.to(torch.long), weights)
    return summed / total.clamp(min=1).unsqueeze(-1)
