"""Model forwards over ragged batches: token ids in, logits out.

Every tensor of a forward lives here and in the KV cache; the engine sees token lists, and
verification (:mod:`~langchain_seed.engine.speculation.verification`) turns the logits
into verdicts. A forward feeds every row of a contiguous row range its own number of
tokens (``n_i``, padded to ``s = max n_i`` positions). Row ``i``'s tokens go to slots
``len_i .. len_i + n_i - 1`` of its KV row with positions ``len_i + j`` (its padded
queries write to slot ``len_i + n_i``, never attended, so no row writes past its own
reservation); the mask lets query ``j`` see slots ``<= len_i + j`` (and, for
sliding-window layers, only the last ``window`` of them), so padding never leaks into real
positions and the output of every real position equals an unbatched forward. A padded
query takes its row's last real position, so positions never pass the model's context.
Masks and positions are built on the model's device from one small host-to-device copy
of the row lengths.

Lengths are not advanced by :meth:`ModelRunner.forward`: the engine decides how many fed
tokens each row keeps (:meth:`ModelRunner.keep`); the cache owns them.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq
from contextlib import nullcontext
from typing import Any

import torch

from langchain_seed.engine.execution.kv_cache import SlotCache
from langchain_seed.engine.execution.llama import Batch, LlamaForward
from langchain_seed.engine.execution.own_path import own_forward
from langchain_seed.engine.execution.packing import Packing, packed, supports_packing

SUPPORTED_LAYER_TYPES = frozenset({"full_attention", "sliding_attention"})


def attention_windows(model: torch.nn.Module, name: str = "") -> tuple[int | None, bool]:
    """The model's sliding window and whether it applies per layer type.

    Returns:
        ``(window, per_layer_type)``: ``(None, False)`` for full attention everywhere;
        ``(w, False)`` when every layer attends to the last ``w`` tokens (Mistral);
        ``(w, True)`` when ``config.layer_types`` mixes full and sliding layers (Gemma 2/3,
        Qwen2 with ``use_sliding_window``): the runner then passes one mask per type.

    Raises:
        ValueError: the model uses an attention pattern the runner cannot mask (chunked
            or linear attention layers), naming the model and the setting.
    """
    config: Any = model.config
    text = getattr(config, "get_text_config", lambda: config)()
    label = name or getattr(config, "_name_or_path", "") or type(model).__name__
    if getattr(text, "attention_chunk_size", None):
        raise ValueError(
            f"model {label!r} uses chunked attention (attention_chunk_size="
            f"{text.attention_chunk_size}), which this engine cannot mask"
        )
    window = getattr(text, "sliding_window", None)
    layer_types = getattr(text, "layer_types", None)
    if layer_types:
        unknown = sorted(set(layer_types) - SUPPORTED_LAYER_TYPES)
        if unknown:
            raise ValueError(
                f"model {label!r} has layer_types {unknown}; this engine supports "
                f"{sorted(SUPPORTED_LAYER_TYPES)}"
            )
        if "sliding_attention" in layer_types and window:
            return int(window), True
        return None, False
    return (int(window), False) if window else (None, False)


def context_length(model: torch.nn.Module) -> int:
    """Positions ``model`` embeds: ``max_position_embeddings`` (``n_positions``), else 2048."""
    config: Any = model.config
    text = getattr(config, "get_text_config", lambda: config)()
    return int(getattr(text, "max_position_embeddings", 0) or 2048)


class ReleasedModel(torch.nn.Module):
    """Stands in for a model whose weights were released (its engine closed)."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Raise: nothing runs on a released model."""
        raise RuntimeError("this model's weights were released: its engine is closed")


class ModelRunner:
    """Owns one model and its :class:`SlotCache`.

    Forwards run on the engine's own execution path
    (:mod:`~langchain_seed.engine.execution.llama`: packed tokens, attention over the pool
    from per-row lengths, CPU kernels) where the model allows it, else through the
    transformers model with a slot mask (this module's :meth:`_forward_transformers`).

    Args:
        model: a transformers causal LM.
        max_rows: most rows at once.
        device: the model's device.
        budget_tokens: KV slots of the cache's pool (its whole memory).
        execution: ``"auto"``, ``"own"`` or ``"transformers"`` (:class:`EngineConfig`).
        deterministic: ``None``, ``True`` or ``False`` (:class:`EngineConfig`).

    Raises:
        ValueError: ``execution="own"`` or ``deterministic=True`` for a model the own path
            cannot run (the reason).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        max_rows: int,
        device: str | torch.device,
        budget_tokens: int,
        execution: str = "auto",
        deterministic: bool | None = None,
    ) -> None:
        self.model = model
        self.device = torch.device(device)
        config: Any = model.config
        text_config = getattr(config, "get_text_config", lambda: config)()
        self.num_layers = int(text_config.num_hidden_layers)
        self.vocab_size = int(model.get_output_embeddings().weight.shape[0])  # type: ignore[operator]
        self.dtype: torch.dtype = getattr(model, "dtype", None) or torch.float32
        self.window, self.window_per_type = attention_windows(model)
        self.max_positions = context_length(model)
        """Positions the model has (``max_position_embeddings``): none is fed past it."""
        self.cache = SlotCache(self.num_layers, max_rows, budget_tokens)
        self.own: LlamaForward | None = None
        """The own forward, or ``None`` (the transformers forward runs)."""
        self.execution = "transformers"
        """``"own"``, or why the transformers forward runs (for stats and logs)."""
        if execution != "transformers":
            self.own, self.execution = own_forward(model, min(budget_tokens, self.max_positions))
            if self.own is None and execution == "own":
                raise ValueError(f"execution='own' is not possible: {self.execution}")
        self.cache.zero_fill = self.own is None  # the own attention reads written slots only
        if deterministic and self.own is None:
            raise ValueError(
                "deterministic=True needs the own execution path (its kernels keep a row's "
                "arithmetic whatever runs beside it); this model runs the transformers "
                f"forward: {self.execution}"
            )
        self.deterministic = self.own is not None and deterministic is not False
        """Whether a row's logits are independent of the rest of the batch (bit for bit)."""
        self.packs = self.own is not None or supports_packing(model)
        """Ragged logits forwards run packed (:mod:`~langchain_seed.engine.execution.packing`)."""
        self.forwards = 0
        self.packed_forwards = 0
        self.tokens_processed = 0

    def release_model(self) -> None:
        """Drop this runner's pointer to the weights (its engine closed) and its KV memory."""
        self.model = ReleasedModel()
        self.own = None
        self.cache.release_memory()

    @property
    def lengths(self) -> list[int]:
        """Cached tokens per row (owned by the cache)."""
        return self.cache.lengths

    def keep(self, row: int, length: int) -> None:
        """Set row ``row`` to hold its first ``length`` tokens (rollback of rejected drafts)."""
        self.cache.set_length(row, length)

    def synchronize(self) -> None:
        """Wait for the device's queued work (so a host clock times what ran)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def computed_tokens(self, fed: Seq[int]) -> int:
        """Token positions a forward over rows fed ``fed`` computes (packed or padded)."""
        if self.packing(fed):
            return sum(fed)
        return len(fed) * max(1, max(fed, default=0))

    def packing(self, fed: Seq[int]) -> bool:
        """Whether a logits forward of rows fed ``fed`` runs packed (the own path always)."""
        if self.own is not None:
            return True
        return self.packs and min(fed, default=0) > 0 and max(fed) * len(fed) > sum(fed)

    @torch.inference_mode()
    def forward(
        self,
        start: int,
        tokens: Seq[Seq[int]],
        *,
        logits: str = "all",
        skip: Seq[int] | None = None,
    ) -> torch.Tensor | None:
        """Run rows ``start .. start + len(tokens) - 1`` on their ragged ``tokens``.

        A logits forward whose rows are ragged runs packed when the model allows
        (:mod:`~langchain_seed.engine.execution.packing`): the same logits, computed on the real
        tokens only.

        Args:
            start: first row of the contiguous range.
            tokens: ``tokens[i]`` is fed to row ``start + i`` (may be empty: a padding row).
            logits: ``"all"`` returns ``[b, s, vocab]`` float32 logits, ``"none"`` skips the
                LM head (prefill).
            skip: own path only: ``skip[i]`` leading tokens of ``tokens[i]`` get no logits
                (prompt tokens fed ahead of a row's pending token: the unified step); ``s``
                and the logits then cover the other tokens only. A row of skipped tokens
                only gets padding logits.

        Returns:
            Logits ``[b, s, vocab]`` (float32, on the device) or ``None``.
        """
        if self.own is not None:
            return self._forward_own(start, tokens, logits, skip or [0] * len(tokens))
        if skip is not None and any(skip):
            raise ValueError("skip needs the own execution path")
        return self._forward_transformers(start, tokens, logits)

    def _forward_own(
        self, start: int, tokens: Seq[Seq[int]], logits: str, skip: Seq[int]
    ) -> torch.Tensor | None:
        """:meth:`forward` on the own path: one packed forward, the pools written in place."""
        own = self.own
        assert own is not None
        b = len(tokens)
        fed = [len(t) for t in tokens]
        lengths = self.cache.lengths[start : start + b]
        kv_len = max(n + f for n, f in zip(lengths, fed))
        batch = Batch.of(start, tokens, lengths)
        total = int(batch.ids.shape[0])
        pools = self.cache.pools(
            slice(start, start + b), kv_len, own.embed, own.kv_heads, own.head_dim
        )
        scored = [f - k for f, k in zip(fed, skip)]  # positions with logits, per row
        first = [q + k for q, k in zip(batch.qstart.tolist(), skip)]
        wanted: torch.Tensor | None = None
        if logits == "all" and max(scored, default=0) > 0:
            wanted = (
                torch.arange(total)
                if not any(skip)
                else torch.tensor([f + j for f, n in zip(first, scored) for j in range(n)])
            )
        flat = own.forward(batch, pools, wanted, self.deterministic)  # [W, vocab] fp32
        self.forwards += 1
        self.packed_forwards += 1
        self.tokens_processed += total
        if flat is None:
            return None if logits == "none" else torch.zeros(b, 1, self.vocab_size)
        s = max(scored)
        if min(scored) == s:
            return flat.view(b, s, -1)  # [b, s, vocab]
        # Pad each row to s positions (a padded position repeats the row's last token's
        # logits; verification never reads it). ``flat`` holds the scored positions only.
        offsets = [0]
        for n in scored:
            offsets.append(offsets[-1] + n)
        index = [(o + min(j, n - 1)) if n else 0 for o, n in zip(offsets, scored) for j in range(s)]
        return flat.index_select(0, torch.tensor(index)).view(b, s, -1)  # [b, s, vocab]

    def _forward_transformers(
        self, start: int, tokens: Seq[Seq[int]], logits: str
    ) -> torch.Tensor | None:
        """:meth:`forward` through the transformers model, the cache's slots masked."""
        b = len(tokens)
        s = max(1, max(len(t) for t in tokens))
        dev = self.device
        fed = [len(t) for t in tokens]
        packing = Packing.of(fed, dev) if logits == "all" and self.packing(fed) else None
        if packing is None:
            host = [list(t) + [0] * (s - len(t)) for t in tokens]
        else:
            host = [[tok for t in tokens for tok in t]]
        host_lengths = self.cache.lengths[start : start + b]
        ids = torch.tensor(host, dtype=torch.long).to(dev, non_blocking=True)  # [b, s] / [1, T]
        meta = torch.tensor([host_lengths, fed], dtype=torch.long).to(dev, non_blocking=True)
        lengths, counts = meta[0], meta[1]  # [b], [b]
        steps = torch.arange(s, device=dev)[None, :]  # [1, s]
        # A padded query (j >= fed_i) writes to the slot after its row's real tokens (never
        # attended, overwritten later) so no row writes past its own reservation, and takes
        # the position of its row's last real token: a position past the row's own would
        # index past the context of a learned-position model (GPT-2) when a neighbour
        # drafts long.
        write_slots = lengths[:, None] + torch.minimum(steps, counts[:, None])  # [b, s]
        positions = lengths[:, None] + torch.minimum(steps, (counts - 1).clamp(min=0)[:, None])
        # A row fed nothing (a draft model's row that drafts no more: its cache may stand at
        # the model's last position) must not index past the context either.
        positions = positions.clamp_(max=self.max_positions - 1)
        kv_len = max(n + min(f, s - 1) for n, f in zip(host_lengths, fed)) + 1
        mask: torch.Tensor | dict[str, torch.Tensor] | None = None
        if max(host_lengths) > 0 or packing is not None:
            mask = self._mask(write_slots, kv_len)
        # else: every row starts empty, so the slot mask is plain causal (sliding too);
        # letting the model build it keeps SDPA's is_causal fast path (~1.5x faster prefill).
        self.cache.begin(slice(start, start + b), write_slots, kv_len, packing)
        if packing is not None:
            positions = packing.unpad(positions[:, :, None])[..., 0]  # [1, T]
        with packed(self.model, packing) if self.packs and logits == "all" else nullcontext():
            out = self.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                past_key_values=self.cache,
                use_cache=True,
                logits_to_keep=0 if logits == "all" else 1,
            )
        self.forwards += 1
        self.packed_forwards += packing is not None
        self.tokens_processed += sum(fed)
        if logits == "none":
            return None
        if packing is not None:
            return packing.pad(out.logits.float(), dim=1)  # [b, s, vocab]
        return out.logits.float()  # [b, s, vocab]

    def _mask(self, write_slots: torch.Tensor, kv_len: int) -> torch.Tensor | dict[str, Any]:
        """Additive ``[b, 1, s, kv_len]`` mask in the compute dtype (one per layer type)."""
        slots = torch.arange(kv_len, device=write_slots.device)  # [kv_len]
        allowed = slots[None, None, :] <= write_slots[:, :, None]  # [b, s, kv_len]
        full = self._additive(allowed)
        if self.window is None:
            return full
        in_window = slots[None, None, :] > write_slots[:, :, None] - self.window
        sliding = self._additive(allowed & in_window)
        if self.window_per_type:
            return {"full_attention": full, "sliding_attention": sliding}
        return sliding

    def _additive(self, allowed: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros(allowed.shape, dtype=self.dtype, device=allowed.device)
        mask.masked_fill_(~allowed, torch.finfo(self.dtype).min)
        return mask[:, None]  # [b, 1, s, kv_len]

    def prefill(self, start: int, tokens: Seq[Seq[int]], chunk: int = 2048) -> None:
        """Append ``tokens[i]`` to row ``start + i`` in chunks (no logits), advancing lengths."""
        offset = 0
        longest = max((len(t) for t in tokens), default=0)
        while offset < longest:
            piece = [list(t[offset : offset + chunk]) for t in tokens]
            self.forward(start, piece, logits="none")
            for i, p in enumerate(piece):
                self.keep(start + i, self.lengths[start + i] + len(p))
            offset += chunk
