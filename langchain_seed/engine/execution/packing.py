"""Packed verification: a ragged step's linear layers run on its real tokens only.

A padded forward feeds ``b`` rows of ``s = max n_i`` tokens, so one row's long draft makes
every other row pay for ``s`` positions in every projection, MLP and the LM head, the bulk
of a small model's work. A *packed* forward feeds the ``T = sum n_i`` real tokens as one
sequence ``[1, T]`` instead; only attention, which needs each row's own KV, sees the padded
``[b, s]`` shape:

- :class:`Packing` holds two index vectors: ``spread`` (``[b * s]``, padded position ->
  packed token; a padded position repeats its row's last real token) and ``gather``
  (``[T]``, packed token -> padded position).
- The KV cache spreads each layer's new keys/values to ``[b, kv_heads, s, head_dim]``
  before it writes them at the rows' slots (:meth:`SlotCache.update
  <langchain_seed.engine.execution.kv_cache.SlotCache.update>`).
- :func:`packed_attention` is registered with transformers' ``AttentionInterface``: it
  spreads the queries the same way, runs the model's own attention (SDPA) over the padded
  rows with the runner's ``[b, 1, s, kv_len]`` mask, and gathers the real positions back.

The real positions see exactly what they see in the padded forward (same keys, values,
positions and mask), so outputs agree up to floating-point reassociation in matrix
products of another shape, the same kind of difference a batch of another size makes.
Packing applies to models whose attention goes through transformers' attention interface
with ``sdpa`` (:func:`supports_packing`); other models keep padded forwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from collections.abc import Sequence as Seq
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import torch
from transformers import AttentionInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

PACKED_ATTENTION = "seed_packed"
"""Name of :func:`packed_attention` in transformers' ``AttentionInterface``."""
INNER_ATTENTION = "sdpa"
"""The attention implementation a packed forward runs over the padded rows."""


@dataclass(frozen=True, slots=True)
class Packing:
    """Index vectors between ``T`` packed tokens and ``b x s`` padded positions.

    Attributes:
        rows: ``b``, rows of the forward.
        width: ``s``, positions per padded row.
        spread: ``[b * s]`` packed index of each padded position.
        gather: ``[T]`` padded (flat) index of each packed token.
    """

    rows: int
    width: int
    spread: torch.Tensor
    gather: torch.Tensor

    @classmethod
    def of(cls, fed: Seq[int], device: torch.device) -> Packing:
        """The packing of rows fed ``fed[i] >= 1`` tokens each."""
        s = max(fed)
        spread: list[int] = []
        gather: list[int] = []
        offset = 0
        for i, n in enumerate(fed):
            spread.extend(offset + min(j, n - 1) for j in range(s))
            gather.extend(i * s + j for j in range(n))
            offset += n
        table = torch.tensor(spread + gather, dtype=torch.long).to(device, non_blocking=True)
        return cls(len(fed), s, table[: len(spread)], table[len(spread) :])

    def pad(self, packed: torch.Tensor, dim: int) -> torch.Tensor:
        """``[..., T, ...]`` (``T`` at ``dim``) to ``[b, ..., s, ...]`` with the rows first.

        ``packed`` has a leading batch dimension of 1, which the rows replace.
        """
        spread = packed.index_select(dim, self.spread)  # [1, ..., b * s, ...]
        shape = list(spread.shape)
        shape[dim : dim + 1] = [self.rows, self.width]
        return spread.view(shape).movedim(dim, 0).squeeze(1)

    def unpad(self, padded: torch.Tensor) -> torch.Tensor:
        """``[b, s, ...]`` to ``[1, T, ...]`` (the real positions, in packed order)."""
        flat = padded.reshape(self.rows * self.width, *padded.shape[2:])
        return flat.index_select(0, self.gather)[None]


_ACTIVE: ContextVar[Packing | None] = ContextVar("seed_packing", default=None)


def active() -> Packing | None:
    """The packing of the forward running on this thread, if it is packed."""
    return _ACTIVE.get()


def packed_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Attention of a verification forward, packed (``query`` ``[1, heads, T, d]``) or not.

    ``key`` / ``value`` are the rows' padded ``[b, kv_heads, kv_len, head_dim]`` (what the
    cache returned) and ``attention_mask`` the runner's ``[b, 1, s, kv_len]``. Returns
    ``[1, T, heads, head_dim]`` (packed) or ``[b, s, heads, head_dim]``, as transformers'
    attention functions do.

    Grouped-query attention runs on the key/value heads as they are: the ``g`` query heads
    that share a key/value head are stacked along the query axis (``[b, kv_heads, g * s,
    d]``, the mask repeated to match), the ``s > 1`` form of transformers' single-query
    ``pack_gqa``. Transformers' SDPA path instead copies every cached key and value ``g``
    times per layer whenever a mask is given and ``s > 1`` (``repeat_kv``), a copy that
    outweighed the attention itself in a 600-token verification on a CPU.
    """
    packing = _ACTIVE.get()
    if packing is not None:
        query = packing.pad(query, dim=2)  # [b, heads, s, head_dim]
    if _plain_sdpa(module, attention_mask, kwargs):
        inner = ALL_ATTENTION_FUNCTIONS[INNER_ATTENTION]
        out, _ = inner(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    else:
        assert attention_mask is not None
        b, heads, s, dim = query.shape
        groups = heads // key.shape[1]
        mask = attention_mask
        if groups > 1:
            query = query.reshape(b, key.shape[1], groups * s, dim)
            kv_len = mask.shape[-1]
            mask = mask[:, :, None].expand(b, 1, groups, s, kv_len)
            mask = mask.reshape(b, 1, groups * s, kv_len)
        out = torch.nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=mask, dropout_p=dropout, scale=scaling
        )
        out = out.view(b, heads, s, dim).transpose(1, 2)  # [b, s, heads, head_dim]
    if packing is not None:
        return packing.unpad(out), None
    return out.contiguous(), None


def _plain_sdpa(module: torch.nn.Module, mask: torch.Tensor | None, kwargs: dict[str, Any]) -> bool:
    """Whether a call needs transformers' own SDPA path (features the grouped form lacks)."""
    extras = ("position_bias", "s_aux", "softcap", "sinks")
    return (
        not isinstance(mask, torch.Tensor)
        or mask.ndim != 4
        or mask.shape[1] != 1
        or any(kwargs.get(name) is not None for name in extras)
        or getattr(module, "sinks", None) is not None
    )


AttentionInterface.register(PACKED_ATTENTION, packed_attention)


def supports_packing(model: torch.nn.Module) -> bool:
    """True when ``model``'s attention runs through the attention interface with SDPA."""
    config: Any = model.config
    return bool(getattr(model, "_supports_attention_backend", False)) and (
        getattr(config, "_attn_implementation", None) == INNER_ATTENTION
    )


@contextmanager
def packed(model: torch.nn.Module, packing: Packing | None) -> Iterator[None]:
    """Run ``model``'s forwards inside the block with :func:`packed_attention`.

    Args:
        model: a model for which :func:`supports_packing` holds.
        packing: the token layout of a packed forward, or ``None`` for a padded one.
    """
    config: Any = model.config
    token = _ACTIVE.set(packing)
    config._attn_implementation = PACKED_ATTENTION
    try:
        yield
    finally:
        config._attn_implementation = INNER_ATTENTION
        _ACTIVE.reset(token)
