"""The batching engine: from texts to pooled ``float32`` arrays.

Texts are deduplicated, tokenized once with the fast tokenizer, sorted by
token length and cut into batches padded only to their own longest member.
Each batch runs under ``torch.inference_mode``, stops after the deepest
requested layer, is pooled on the device and moved to the CPU before the next
batch starts. Rows come back in the caller's order.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ._model import LoadedModel, forward_hidden_states
from ._pooling import combine_layers, pool_tokens, select_layers

__all__ = ["Batch", "Tokenized", "encode_texts", "iter_batches", "tokenize"]


@dataclass
class Tokenized:
    """Token ids of texts, at most ``max_length`` per text.

    Attributes
    ----------
    input_ids : list of list of int, one per text, special tokens included.
    special_tokens_mask : list of list of int, 1 where a token is special.
    n_truncated : int, number of texts longer than ``max_length`` tokens.
    """

    input_ids: list[list[int]]
    special_tokens_mask: list[list[int]]
    n_truncated: int


def tokenize(tokenizer, texts: list[str], max_length: int) -> Tokenized:
    """Tokenize ``texts``, keeping the head of each text that is too long."""
    if not texts:
        return Tokenized([], [], 0)
    encoded = tokenizer(
        texts,
        truncation=True,
        max_length=max_length,
        return_overflowing_tokens=True,
        return_special_tokens_mask=True,
        return_attention_mask=False,
        return_token_type_ids=False,
    )
    # Long texts overflow into extra rows; the first row of a text is its head.
    rows_per_text = np.bincount(
        encoded["overflow_to_sample_mapping"], minlength=len(texts)
    )
    heads = np.cumsum(rows_per_text) - rows_per_text
    return Tokenized(
        input_ids=[encoded["input_ids"][row] for row in heads],
        special_tokens_mask=[encoded["special_tokens_mask"][row] for row in heads],
        n_truncated=int((rows_per_text > 1).sum()),
    )


@dataclass
class Batch:
    """One padded batch, in length-sorted order.

    Attributes
    ----------
    rows : ndarray of shape (batch,), the positions of these sequences in the input.
    attention_mask : Tensor of shape (batch, seq_len), on the model's device.
    special_tokens_mask : Tensor of shape (batch, seq_len), on the model's device.
    embeddings : Tensor of shape (batch, seq_len, width), the combined layers.
    """

    rows: np.ndarray
    attention_mask: torch.Tensor
    special_tokens_mask: torch.Tensor
    embeddings: torch.Tensor


def _show_progress(progress_bar: bool | None) -> bool:
    if progress_bar is None:
        return bool(getattr(sys.stderr, "isatty", lambda: False)())
    return progress_bar


def iter_batches(
    loaded: LoadedModel,
    tokenized: Tokenized,
    *,
    layers: list[int],
    layer_combine: str,
    device: torch.device,
    batch_size: int,
    progress_bar: bool | None = None,
) -> Iterator[Batch]:
    """Run the model over length-sorted batches and yield combined token states.

    Parameters
    ----------
    loaded : LoadedModel
    tokenized : Tokenized
    layers : list of int
        Non-negative indices into ``hidden_states`` (0 = embedding output).
    layer_combine : {"mean", "sum", "concat"}
    device : torch.device
    batch_size : int
    progress_bar : bool or None
        None shows a bar only when stderr is a terminal.
    """
    ids = tokenized.input_ids
    n = len(ids)
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=n)
    order = np.argsort(-lengths, kind="stable")
    pad_id = loaded.tokenizer.pad_token_id or 0
    starts = range(0, n, batch_size)
    with (
        torch.inference_mode(),
        tqdm(
            total=n,
            disable=not _show_progress(progress_bar),
            unit="text",
            desc="skbert",
        ) as bar,
    ):
        for start in starts:
            rows = order[start : start + batch_size]
            seq_len = int(lengths[rows[0]])
            input_ids = np.full((len(rows), seq_len), pad_id, dtype=np.int64)
            attention = np.zeros((len(rows), seq_len), dtype=np.int64)
            special = np.zeros((len(rows), seq_len), dtype=np.int64)
            for j, row in enumerate(rows):
                length = lengths[row]
                input_ids[j, :length] = ids[row]
                attention[j, :length] = 1
                special[j, :length] = tokenized.special_tokens_mask[row]
            inputs = {
                "input_ids": torch.from_numpy(input_ids).to(device),
                "attention_mask": torch.from_numpy(attention).to(device),
            }
            if loaded.uses_token_type_ids:
                inputs["token_type_ids"] = torch.zeros_like(inputs["input_ids"])
            states = forward_hidden_states(loaded, inputs, layers)
            embeddings = combine_layers(select_layers(states, layers), layer_combine)
            yield Batch(
                rows=rows,
                attention_mask=inputs["attention_mask"],
                special_tokens_mask=torch.from_numpy(special).to(device),
                embeddings=embeddings,
            )
            bar.update(len(rows))


def encode_texts(
    loaded: LoadedModel,
    texts: list[str],
    *,
    layers: list[int],
    layer_combine: str,
    pool: Callable[[Batch], torch.Tensor],
    n_features: int,
    max_length: int,
    device: torch.device,
    batch_size: int,
    progress_bar: bool | None = None,
) -> tuple[np.ndarray, int]:
    """Embed ``texts`` into a ``float32`` array of shape (n_texts, n_features).

    Identical texts run through the model once. ``pool`` turns a
    :class:`Batch` into a tensor of shape (batch, n_features).

    Returns the array and the number of distinct texts that were truncated.
    """
    unique, inverse = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
    unique_texts = unique.tolist() if len(texts) else []
    tokenized = tokenize(loaded.tokenizer, unique_texts, max_length)
    out = np.empty((len(unique_texts), n_features), dtype=np.float32)
    for batch in iter_batches(
        loaded,
        tokenized,
        layers=layers,
        layer_combine=layer_combine,
        device=device,
        batch_size=batch_size,
        progress_bar=progress_bar,
    ):
        pooled = pool(batch)
        out[batch.rows] = pooled.float().cpu().numpy()
    return (out[inverse.reshape(-1)] if len(texts) else out), tokenized.n_truncated


def sentence_pooler(
    pooling: str, include_special_tokens: bool, normalize: bool
) -> Callable[[Batch], torch.Tensor]:
    """The ``pool`` callback of :func:`encode_texts` for sentence vectors."""

    def pool(batch: Batch) -> torch.Tensor:
        token_mask = batch.attention_mask
        if not include_special_tokens:
            token_mask = token_mask * (1 - batch.special_tokens_mask)
        pooled = pool_tokens(batch.embeddings, token_mask, pooling)
        if normalize:
            pooled = torch.nn.functional.normalize(pooled.float(), p=2, dim=-1)
        return pooled

    return pool
