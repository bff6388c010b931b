"""Per-sequence KV storage carved from one pool sized from the budget.

``SlotCache`` is a transformers :class:`~transformers.Cache`. Each layer owns two flat
pools (keys, values) of exactly ``budget_tokens`` token slots, allocated on the first
forward and never grown. A *layout* views the front of each pool as a rectangle
``[rows, kv_heads, capacity, head_dim]``: one row of ``capacity`` slots per running
sequence, so a batch forward works on a slice (a view, no copy) and attention kernels get
an ordinary padded batch. The scheduler admits a sequence only when
``rows * capacity <= budget_tokens`` still holds with it (:func:`row_capacity`), so the
memory is bounded by the budget by construction: ``budget_tokens`` times the bytes of one
token's keys and values over all layers (:meth:`SlotCache.budget_bytes`), whatever runs.

Every row has its own length (the cache is the one owner of lengths); a forward writes each
row's new keys/values at that row's own slots (ragged), and rolling back rejected drafts is
only a shorter length: nothing is recomputed or copied. The runner passes an attention
mask built from the lengths, so stale slots past a row's length are never attended.

Rows of running sequences are kept contiguous (``0 .. n-1``); :meth:`move_row` fills the
hole a finished sequence leaves. :meth:`layout` changes the capacity in place, moving the
live rows inside the pool (a temporary of one row of one layer at a time).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicLayer

from langchain_seed.engine.execution.packing import Packing

CAPACITY_QUANTUM = 16
"""Row capacities are multiples of this many slots (fewer re-layouts, aligned rows)."""


def row_capacity(tokens: int, budget_tokens: int) -> int:
    """Slots per row for rows that need up to ``tokens`` slots (rounded up, within budget)."""
    rounded = -(-tokens // CAPACITY_QUANTUM) * CAPACITY_QUANTUM
    return max(tokens, min(rounded, budget_tokens))


class SlotCache(Cache):
    """Row-addressed KV cache over a fixed pool; see the module docstring.

    Before each forward the runner calls :meth:`begin` with the rows and the write
    positions; :meth:`update` (called by every attention layer) scatters the new
    keys/values there and returns the rows' keys/values up to ``kv_len``.

    Args:
        num_layers: attention layers of the model.
        max_rows: most rows (sequences) at once.
        budget_tokens: token slots of the pool, the cache's whole memory.
    """

    def __init__(self, num_layers: int, max_rows: int, budget_tokens: int) -> None:
        super().__init__(layers=[DynamicLayer() for _ in range(num_layers)])
        self.num_layers = num_layers
        self.max_rows = max_rows
        self.budget_tokens = budget_tokens
        self.capacity = min(budget_tokens, CAPACITY_QUANTUM)
        self.lengths: list[int] = [0] * max_rows
        self._pools: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * num_layers
        self._shape: tuple[int, int] | None = None  # (kv_heads, head_dim)
        self.token_bytes: int | None = None
        """Bytes of one token's keys and values over all layers (known after a forward)."""
        self._ready = [0] * num_layers  # slots of each layer's pools holding finite values
        self.zero_fill = True
        """Zero slots before a forward may read them. A forward that reads only the slots
        it or an earlier forward wrote (the own path's attention, by per-row lengths) sets
        this off: zeroing the pools cost ~0.3 s per self-consistency question."""
        self._want = 0  # slots the current forward may read
        self._rows = slice(0, 0)
        self._write_pos: torch.Tensor | None = None  # [b, s] slot of each fed token
        self._packing: Packing | None = None  # a packed forward's token layout
        self._kv_len = 0
        self._query_len = 0

    # ----- layout ------------------------------------------------------------------
    @property
    def rows(self) -> int:
        """Rows the current layout holds: ``budget_tokens // capacity`` (at most max_rows)."""
        return min(self.max_rows, self.budget_tokens // self.capacity)

    def layout(self, capacity: int, live_rows: int) -> None:
        """Give every row ``capacity`` slots, keeping rows ``0 .. live_rows - 1``.

        Raises:
            ValueError: ``live_rows`` rows of ``capacity`` slots exceed the budget, or a
                live row holds more tokens than ``capacity``.
        """
        if live_rows * capacity > self.budget_tokens or capacity > self.budget_tokens:
            raise ValueError(
                f"{live_rows} rows x {capacity} slots exceed the KV budget of "
                f"{self.budget_tokens} tokens"
            )
        if any(self.lengths[r] > capacity for r in range(live_rows)):
            raise ValueError(f"a live row holds more than {capacity} tokens")
        old = self.capacity
        if capacity == old:
            return
        if self._shape is not None:
            order = range(live_rows - 1, -1, -1) if capacity > old else range(live_rows)
            for layer, pools in enumerate(self._pools):
                assert pools is not None
                self._initialise(layer, live_rows * capacity)  # beyond the live rows' sources
                for pool in pools:
                    for r in order:  # growing: last row first; shrinking: first row first
                        self._move(pool, r, old, capacity)
        self.capacity = capacity
        for r in range(live_rows, self.max_rows):
            self.lengths[r] = 0

    def _move(self, pool: torch.Tensor, row: int, old: int, new: int) -> None:
        length = self.lengths[row]
        if not length:
            return
        heads, dim = self._shape  # type: ignore[misc]
        src = pool[row * heads * old * dim : (row + 1) * heads * old * dim].view(heads, old, dim)
        dst = pool[row * heads * new * dim : (row + 1) * heads * new * dim].view(heads, new, dim)
        dst[:, :length] = src[:, :length].clone()  # the two may overlap: copy through a temp

    def _view(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        pools = self._pools[layer]
        assert pools is not None and self._shape is not None
        heads, dim = self._shape
        n = self.rows * heads * self.capacity * dim
        k, v = (p[:n].view(self.rows, heads, self.capacity, dim) for p in pools)
        return k, v

    # ----- per forward -------------------------------------------------------------
    def begin(
        self, rows: slice, write_pos: torch.Tensor, kv_len: int, packing: Packing | None = None
    ) -> None:
        """Set where the next forward writes: ``write_pos`` is ``[b, s]`` slot indices.

        With ``packing``, the forward is packed: its layers' new keys/values come as
        ``[1, kv_heads, T, head_dim]`` and are spread to the rows before they are written.

        Raises:
            ValueError: a row would write past its capacity (the scheduler's reservation
                was exceeded), or past the rows of the layout.
        """
        if kv_len > self.capacity or rows.stop > self.rows:
            raise ValueError(
                f"KV write past the layout: rows {rows.start}..{rows.stop - 1} up to slot "
                f"{kv_len - 1}, layout {self.rows} rows x {self.capacity} slots"
            )
        self._rows = rows
        self._write_pos = write_pos
        self._packing = packing
        self._kv_len = kv_len
        self._query_len = write_pos.shape[1]
        self._want = rows.stop * self.capacity

    def update(
        self,
        key_states: torch.Tensor,
        value_states: torch.Tensor,
        layer_idx: int,
        *args: Any,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write new keys/values (``[b, kv_heads, s, head_dim]``) at the rows' slots."""
        if self._packing is not None:  # [1, kv_heads, T, head_dim] -> [b, kv_heads, s, dim]
            key_states = self._packing.pad(key_states, dim=2)
            value_states = self._packing.pad(value_states, dim=2)
        if self._pools[layer_idx] is None:
            self._allocate(layer_idx, key_states)
        self._initialise(layer_idx, self._want)
        keys, values = self._view(layer_idx)
        assert self._write_pos is not None
        b, heads, s, dim = key_states.shape
        index = self._write_pos[:, None, :, None].expand(b, heads, s, dim)
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

    def pools(
        self, rows: slice, kv_len: int, like: torch.Tensor, kv_heads: int, head_dim: int
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Every layer's (keys, values) ``[rows, kv_heads, capacity, head_dim]``, allocated.

        For a forward that writes the pools itself (the own execution path).

        Args:
            rows: the rows the forward reads and writes.
            kv_len: slots per row the forward reaches (cached + fed tokens).
            like: a tensor of the compute dtype and device.
            kv_heads: key/value heads of the model.
            head_dim: size of one head.

        Raises:
            ValueError: as :meth:`begin`: a row would pass its capacity or the layout.
        """
        if kv_len > self.capacity or rows.stop > self.rows:
            raise ValueError(
                f"KV write past the layout: rows {rows.start}..{rows.stop - 1} up to slot "
                f"{kv_len - 1}, layout {self.rows} rows x {self.capacity} slots"
            )
        probe = like.new_empty((1, kv_heads, 1, head_dim))
        want = rows.stop * self.capacity
        views = []
        for layer in range(self.num_layers):
            if self._pools[layer] is None:
                self._allocate(layer, probe)
            self._initialise(layer, want)
            views.append(self._view(layer))
        return views

    # ----- rows and lengths --------------------------------------------------------
    def set_length(self, row: int, length: int) -> None:
        """Row ``row`` holds its first ``length`` tokens (rollback, prefill, reset)."""
        if length > self.capacity:
            raise ValueError(f"row {row}: {length} tokens exceed the row capacity {self.capacity}")
        self.lengths[row] = length

    def move_row(self, src: int, dst: int) -> None:
        """Copy row ``src`` into row ``dst`` (KV and length)."""
        self.copy_prefix(src, dst, self.lengths[src])

    def copy_prefix(self, src: int, dst: int, length: int) -> None:
        """Give row ``dst`` the first ``length`` cached tokens of row ``src`` (a group fork)."""
        if length and self._shape is not None:
            for layer in range(self.num_layers):
                self._initialise(layer, (dst + 1) * self.capacity)
                for t in self._view(layer):
                    t[dst, :, :length] = t[src, :, :length]
        self.set_length(dst, length)

    def read(self, row: int, start: int, end: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-layer copies of row ``row``'s keys/values for slots ``start:end``."""
        out = []
        for layer in range(self.num_layers):
            k, v = self._view(layer)
            out.append((k[row, :, start:end].clone(), v[row, :, start:end].clone()))
        return out

    def write(self, row: int, start: int, kv: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Write per-layer ``[kv_heads, n, head_dim]`` keys/values into ``row`` at ``start``."""
        n = kv[0][0].shape[1] if kv else 0
        if start + n > self.capacity or row >= self.rows:
            raise ValueError(f"write of {n} tokens at {start} past row {row}'s capacity")
        for layer, (k, v) in enumerate(kv):
            if self._pools[layer] is None:
                self._allocate(layer, k[None])
            self._initialise(layer, (row + 1) * self.capacity)
            keys, values = self._view(layer)
            keys[row, :, start : start + n] = k
            values[row, :, start : start + n] = v

    # ----- memory ------------------------------------------------------------------
    @property
    def allocated(self) -> bool:
        """True once the first forward has allocated the pools."""
        return self._pools[0] is not None

    def nbytes(self) -> int:
        """Bytes held by the pools (at most :meth:`budget_bytes`)."""
        return sum(p.untyped_storage().nbytes() for pools in self._pools if pools for p in pools)

    def budget_bytes(self) -> int | None:
        """Bytes of ``budget_tokens`` slots over all layers, once the KV shape is known."""
        return None if self.token_bytes is None else self.budget_tokens * self.token_bytes

    def release_memory(self) -> None:
        """Drop the pools (when idle); they are allocated again at the next forward."""
        self._pools = [None] * self.num_layers
        self._shape = None
        self._ready = [0] * self.num_layers
        self.capacity = min(self.budget_tokens, CAPACITY_QUANTUM)
        self.lengths = [0] * self.max_rows

    # ----- internals ---------------------------------------------------------------
    def _allocate(self, layer_idx: int, like: torch.Tensor) -> None:
        _, heads, _, dim = like.shape
        if self._shape is None:
            self._shape = (heads, dim)
            self.token_bytes = self.num_layers * 2 * heads * dim * like.element_size()
        assert self._shape == (heads, dim), "layers of one model differ in KV shape"
        size = self.budget_tokens * heads * dim
        # Uninitialised: pages are committed as rows come into use (_initialise zeroes them).
        keys = torch.empty(size, dtype=like.dtype, device=like.device)
        values = torch.empty(size, dtype=like.dtype, device=like.device)
        self._pools[layer_idx] = (keys, values)

    def _initialise(self, layer: int, slots: int) -> None:
        """Zero slots ``_ready .. slots`` of a layer: masked-out stale slots are never NaN."""
        pools = self._pools[layer]
        ready = self._ready[layer]
        if not self.zero_fill or slots <= ready or pools is None or self._shape is None:
            return
        heads, dim = self._shape
        for pool in pools:
            pool[ready * heads * dim : slots * heads * dim].zero_()
        self._ready[layer] = slots
