"""Per-sequence KV storage with cheap rollback: one slot row per running sequence.

``SlotCache`` is a transformers :class:`~transformers.Cache` whose layers are
preallocated tensors ``[rows, kv_heads, capacity, head_dim]``. Every row has its own
length; a forward writes each row's new keys/values at that row's own positions
(ragged), and rolling back rejected drafts is only ``lengths[row] = kept`` — nothing is
recomputed and nothing is copied. The runner passes a 4D attention mask built from the
lengths, so stale slots past a row's length are never attended.

Rows of running sequences are kept contiguous (``0 .. n-1``) so a batch forward works
on a slice (a view, no copy); :meth:`move_row` fills the hole a finished sequence
leaves.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicLayer


class SlotCache(Cache):
    """Row-addressed KV cache; see the module docstring.

    Before each forward the runner calls :meth:`begin` with the rows and the write
    positions; :meth:`update` (called by every attention layer) scatters the new
    keys/values there and returns the rows' keys/values up to ``kv_len``.
    """

    def __init__(self, num_layers: int, max_rows: int, capacity: int = 256) -> None:
        super().__init__(layers=[DynamicLayer() for _ in range(num_layers)])
        self.num_layers = num_layers
        self.max_rows = max_rows
        self.capacity = capacity
        self.keys: list[torch.Tensor | None] = [
            None
        ] * num_layers  # [rows, kv_heads, cap, head_dim]
        self.values: list[torch.Tensor | None] = [None] * num_layers
        self.lengths: list[int] = [0] * max_rows
        self._rows = slice(0, 0)
        self._write_pos: torch.Tensor | None = None  # [b, q] slot of each fed token
        self._kv_len = 0
        self._query_len = 0

    # ----- per forward -------------------------------------------------------------
    def begin(self, rows: slice, write_pos: torch.Tensor, kv_len: int) -> None:
        """Set where the next forward writes: ``write_pos`` is ``[b, q]`` slot indices."""
        self._rows = rows
        self._write_pos = write_pos
        self._kv_len = kv_len
        self._query_len = write_pos.shape[1]
        if kv_len > self.capacity:
            self._grow(kv_len)

    def update(
        self,
        key_states: torch.Tensor,
        value_states: torch.Tensor,
        layer_idx: int,
        *args: Any,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write new keys/values (``[b, kv_heads, q, head_dim]``) at the rows' slots."""
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        if keys is None or values is None:
            keys, values = self._allocate(layer_idx, key_states)
        assert self._write_pos is not None
        b, heads, q, dim = key_states.shape
        index = self._write_pos[:, None, :, None].expand(b, heads, q, dim)
        row_keys = keys[self._rows]  # view [b, kv_heads, cap, head_dim]
        row_values = values[self._rows]
        row_keys.scatter_(2, index, key_states)
        row_values.scatter_(2, index, value_states)
        return row_keys[:, :, : self._kv_len], row_values[:, :, : self._kv_len]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Longest cached prefix among the rows of the current forward (informational)."""
        return max(0, self._kv_len - self._query_len)

    def get_mask_sizes(self, query_length: int, layer_idx: int = 0) -> tuple[int, int]:
        """Key length and offset for mask creation (unused: the runner passes a 4D mask)."""
        return self._kv_len, 0

    # ----- row management ----------------------------------------------------------
    def move_row(self, src: int, dst: int) -> None:
        """Copy row ``src`` into row ``dst`` (KV and length)."""
        length = self.lengths[src]
        for tensors in (self.keys, self.values):
            for t in tensors:
                if t is not None and length:
                    t[dst, :, :length] = t[src, :, :length]
        self.lengths[dst] = length

    def copy_prefix(self, src: int, dst: int, length: int) -> None:
        """Give row ``dst`` the first ``length`` cached tokens of row ``src`` (a group fork)."""
        for tensors in (self.keys, self.values):
            for t in tensors:
                if t is not None and length:
                    t[dst, :, :length] = t[src, :, :length]
        self.lengths[dst] = length

    def read(self, row: int, start: int, end: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-layer copies of row ``row``'s keys/values for slots ``start:end``."""
        out = []
        for k, v in zip(self.keys, self.values):
            assert k is not None and v is not None
            out.append((k[row, :, start:end].clone(), v[row, :, start:end].clone()))
        return out

    def write(self, row: int, start: int, kv: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Write per-layer ``[kv_heads, n, head_dim]`` keys/values into ``row`` at ``start``."""
        n = kv[0][0].shape[1] if kv else 0
        if start + n > self.capacity:
            self._grow(start + n)
        for layer, (k, v) in enumerate(kv):
            keys, values = self.keys[layer], self.values[layer]
            if keys is None or values is None:
                keys, values = self._allocate(layer, k[None])
            keys[row, :, start : start + n] = k
            values[row, :, start : start + n] = v

    @property
    def allocated(self) -> bool:
        """True once the first forward has shaped the buffers."""
        return self.keys[0] is not None

    def nbytes(self) -> int:
        """Bytes held by the preallocated buffers."""
        return sum(
            t.numel() * t.element_size() for t in (*self.keys, *self.values) if t is not None
        )

    def release_memory(self, capacity: int = 256) -> None:
        """Drop the buffers (when idle); they are reallocated at the next forward."""
        self.keys = [None] * self.num_layers
        self.values = [None] * self.num_layers
        self.capacity = capacity
        self.lengths = [0] * self.max_rows

    # ----- internals ---------------------------------------------------------------
    def _allocate(self, layer_idx: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, heads, _, dim = like.shape
        shape = (self.max_rows, heads, self.capacity, dim)
        keys = torch.zeros(shape, dtype=like.dtype, device=like.device)
        values = torch.zeros(shape, dtype=like.dtype, device=like.device)
        self.keys[layer_idx], self.values[layer_idx] = keys, values
        return keys, values

    def _grow(self, needed: int) -> None:
        new_cap = self.capacity
        while new_cap < needed:
            new_cap *= 2
        for tensors in (self.keys, self.values):
            for i, t in enumerate(tensors):
                if t is None:
                    continue
                pad = t.new_zeros(t.shape[0], t.shape[1], new_cap - t.shape[2], t.shape[3])
                tensors[i] = torch.cat([t, pad], dim=2)
        self.capacity = new_cap
