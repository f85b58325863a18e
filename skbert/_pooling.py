"""Pure tensor functions: layer selection and combination, token pooling.

Nothing here touches a model, a device or a file. Inputs are never written to.
"""

from __future__ import annotations

import torch

__all__ = [
    "LAYER_COMBINES",
    "POOLINGS",
    "combine_layers",
    "pool_tokens",
    "select_layers",
]

POOLINGS = ("mean", "max", "mean_max", "cls", "last", "mean_sqrt_len")
LAYER_COMBINES = ("mean", "sum", "concat")


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
    how : {"mean", "max", "mean_max", "cls", "last", "mean_sqrt_len"}
        ``"cls"`` takes position 0 whatever the mask. ``"last"`` takes the
        last token whose mask is 1. ``"mean_max"`` concatenates mean and max.

    Returns
    -------
    pooled : Tensor of shape (batch, hidden), or (batch, 2 * hidden) for
        ``"mean_max"``. A sequence with no token in the mask pools to zeros
        (except ``"cls"``), so the result is always finite.
    """
    mask = token_mask.to(embeddings.dtype).unsqueeze(-1)
    count = mask.sum(dim=1)
    if how == "cls":
        return embeddings[:, 0]
    if how in ("mean", "mean_sqrt_len"):
        summed = (embeddings * mask).sum(dim=1)
        if how == "mean":
            return summed / count.clamp(min=1e-9)
        return summed / count.sqrt().clamp(min=1e-9)
    if how == "max":
        filled = embeddings.masked_fill(mask == 0, float("-inf"))
        pooled = filled.max(dim=1).values
        return pooled.masked_fill(count == 0, 0.0)
    if how == "mean_max":
        return torch.cat(
            (
                pool_tokens(embeddings, token_mask, "mean"),
                pool_tokens(embeddings, token_mask, "max"),
            ),
            dim=-1,
        )
    if how == "last":
        seq_len = token_mask.shape[1]
        positions = torch.arange(seq_len, device=token_mask.device)
        last = (token_mask.bool() * positions).amax(dim=1)
        pooled = embeddings[torch.arange(embeddings.shape[0]), last]
        return pooled.masked_fill(count == 0, 0.0)
    raise ValueError(f"how must be one of {POOLINGS}, got {how!r}.")
