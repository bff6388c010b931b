"""Model forwards over ragged batches and the tensor side of verification.

Every tensor of a step lives here, in :mod:`~langchain_seed.engine.speculation.sampling` and in the
KV cache; the engine sees token lists. A forward feeds every row of a contiguous row range
its own number of tokens (``n_i``, padded to ``q = max n_i``). Row ``i``'s tokens go to
slots ``len_i .. len_i + n_i - 1`` of its KV row with positions ``len_i + j`` (its padded
queries write to slot ``len_i + n_i``, never attended, so no row writes past its own
reservation); the mask lets
query ``j`` see slots ``<= len_i + j`` (and, for sliding-window layers, only the last
``window`` of them), so padding never leaks into real positions and the output of every
real position equals an unbatched forward. A padded query takes its row's last real
position, so positions never pass the model's context. Masks and positions are built on
the model's device from one small host-to-device copy of the row lengths.

Lengths are not advanced by :meth:`ModelRunner.forward`: the engine decides how many fed
tokens each row keeps (:meth:`ModelRunner.keep`); the cache owns them.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import torch

from langchain_seed.engine.execution.kv_cache import SlotCache
from langchain_seed.engine.execution.llama import Batch, LlamaForward, own_forward
from langchain_seed.engine.execution.packing import Packing, packed, supports_packing
from langchain_seed.engine.results import TokenLogprob
from langchain_seed.engine.speculation.sampling import (
    accept_matching,
    accept_rejection,
    position_noise,
    process_scores,
    sample_coupled,
)
from langchain_seed.engine.text.grammar import unpack_allowed

if TYPE_CHECKING:
    from langchain_seed.engine.sequence import Sequence
    from langchain_seed.engine.speculation.drafters.base import Draft

SUPPORTED_LAYER_TYPES = frozenset({"full_attention", "sliding_attention"})


@dataclass(frozen=True, slots=True)
class Verdict:
    """One row's verification: draft tokens kept, the emitted token, finite logits."""

    accepted: int
    next_token: int
    finite: bool
    logprobs: tuple[TokenLogprob, ...] | None = None
    """The ``accepted + 1`` emitted tokens' entries, for a row that asks for logprobs."""


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
        self, start: int, tokens: Seq[Seq[int]], *, logits: str = "all"
    ) -> torch.Tensor | None:
        """Run rows ``start .. start + len(tokens) - 1`` on their ragged ``tokens``.

        A logits forward whose rows are ragged runs packed when the model allows
        (:mod:`~langchain_seed.engine.execution.packing`): the same logits, computed on the real
        tokens only.

        Args:
            start: first row of the contiguous range.
            tokens: ``tokens[i]`` is fed to row ``start + i`` (may be empty: a padding row).
            logits: ``"all"`` returns ``[b, q, vocab]`` float32 logits, ``"none"`` skips the
                LM head (prefill).

        Returns:
            Logits ``[b, q, vocab]`` (float32, on the device) or ``None``.
        """
        if self.own is not None:
            return self._forward_own(start, tokens, logits)
        return self._forward_transformers(start, tokens, logits)

    def _forward_own(self, start: int, tokens: Seq[Seq[int]], logits: str) -> torch.Tensor | None:
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
        wanted = torch.arange(total) if logits == "all" and total else None
        flat = own.forward(batch, pools, wanted, self.deterministic)  # [T, vocab] fp32
        self.forwards += 1
        self.packed_forwards += 1
        self.tokens_processed += total
        if flat is None:
            return None if logits == "none" else torch.zeros(b, 1, self.vocab_size)
        q = max(fed)
        if min(fed) == q:
            return flat.view(b, q, -1)  # [b, q, vocab]
        # Pad each row to q positions (a padded position repeats the row's last token's
        # logits; verification never reads it).
        index = [
            (s + min(j, n - 1)) if n else 0
            for s, n in zip(batch.qstart.tolist(), fed)
            for j in range(q)
        ]
        return flat.index_select(0, torch.tensor(index)).view(b, q, -1)  # [b, q, vocab]

    def _forward_transformers(
        self, start: int, tokens: Seq[Seq[int]], logits: str
    ) -> torch.Tensor | None:
        """:meth:`forward` through the transformers model, the cache's slots masked."""
        b = len(tokens)
        q = max(1, max(len(t) for t in tokens))
        dev = self.device
        fed = [len(t) for t in tokens]
        packing = Packing.of(fed, dev) if logits == "all" and self.packing(fed) else None
        if packing is None:
            host = [list(t) + [0] * (q - len(t)) for t in tokens]
        else:
            host = [[tok for t in tokens for tok in t]]
        host_lengths = self.cache.lengths[start : start + b]
        ids = torch.tensor(host, dtype=torch.long).to(dev, non_blocking=True)  # [b, q] / [1, T]
        meta = torch.tensor([host_lengths, fed], dtype=torch.long).to(dev, non_blocking=True)
        lengths, counts = meta[0], meta[1]  # [b], [b]
        steps = torch.arange(q, device=dev)[None, :]  # [1, q]
        # A padded query (j >= fed_i) writes to the slot after its row's real tokens (never
        # attended, overwritten later) so no row writes past its own reservation, and takes
        # the position of its row's last real token: a position past the row's own would
        # index past the context of a learned-position model (GPT-2) when a neighbour
        # drafts long.
        write_slots = lengths[:, None] + torch.minimum(steps, counts[:, None])  # [b, q]
        positions = lengths[:, None] + torch.minimum(steps, (counts - 1).clamp(min=0)[:, None])
        # A row fed nothing (a draft model's row that drafts no more: its cache may stand at
        # the model's last position) must not index past the context either.
        positions = positions.clamp_(max=self.max_positions - 1)
        kv_len = max(n + min(f, q - 1) for n, f in zip(host_lengths, fed)) + 1
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
            return packing.pad(out.logits.float(), dim=1)  # [b, q, vocab]
        return out.logits.float()  # [b, q, vocab]

    def _mask(self, write_slots: torch.Tensor, kv_len: int) -> torch.Tensor | dict[str, Any]:
        """Additive ``[b, 1, q, kv_len]`` mask in the compute dtype (one per layer type)."""
        slots = torch.arange(kv_len, device=write_slots.device)  # [kv_len]
        allowed = slots[None, None, :] <= write_slots[:, :, None]  # [b, q, kv_len]
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
        return mask[:, None]  # [b, 1, q, kv_len]

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

    @torch.inference_mode()
    def verify(self, seqs: Seq[Sequence], drafts: Seq[Draft]) -> list[Verdict]:
        """One forward over ``seqs`` (contiguous rows) feeding pending token + draft; accept.

        Greedy rows accept while the draft equals the argmax, seeded rows while it equals
        the coupled sample, other sampled rows by rejection sampling; all rows in a few
        batched tensor operations. Everything the rules need from the host (drafts, row
        indices, random numbers) goes to the device before the forward is queued, and the
        verdicts come back in one device-to-host copy for the whole batch.

        Rows that ask for logprobs (``SamplingParams.logprobs``) get their emitted tokens'
        log probabilities under the distribution each row samples from (greedy rows: the
        logits at temperature 1), grammar masks included: one ``log_softmax``, gather and
        top-k over those rows' positions, in the same host copy.
        """
        feed = [[seq.last_token, *d.tokens] for seq, d in zip(seqs, drafts)]
        q = max(len(f) for f in feed)
        plan = _Plan(seqs, drafts, q, self.device, self.vocab_size)
        logits = self.forward(seqs[0].row, feed)  # [b, q, vocab]
        assert logits is not None
        b = logits.shape[0]
        finite = (torch.isfinite(logits).all(dim=-1) | ~plan.valid).all(dim=-1)  # [b]
        if plan.constrained is not None:  # grammar rows: refused tokens get -inf everywhere
            rows = plan.constrained
            assert plan.allowed is not None
            allowed = unpack_allowed(plan.allowed, logits.shape[-1])  # [c, q, vocab]
            logits[rows] = logits[rows].masked_fill(~allowed, float("-inf"))
        accepted = torch.zeros(b, dtype=torch.long, device=logits.device)
        next_token = torch.zeros(b, dtype=torch.long, device=logits.device)
        targets = logits.argmax(dim=-1)  # [b, q]: greedy rows' targets
        # Rows asking for logprobs: greedy rows score at temperature 1, sampled rows get
        # their sampler's scores below.
        scored = logits[plan.scored.rows] if plan.scored is not None else None  # [w, q, vocab]
        for group in plan.groups:
            scores = process_scores(logits[group.rows], group.params)  # [r, q, vocab]
            probs = scores.softmax(dim=-1)  # [r, q, vocab]
            if group.scored is not None:
                assert scored is not None
                scored[group.scored_at] = scores[group.scored]
            # A row whose sampling distribution is not finite fails alone (its verdict), and
            # its neighbours' sampling never depends on it.
            usable = torch.isfinite(probs).all(dim=-1) | ~plan.valid[group.rows]  # [r, q]
            finite[group.rows] &= usable.all(dim=-1)
            if group.seeded is not None:
                assert group.noise is not None
                targets[group.rows[group.seeded]] = sample_coupled(probs[group.seeded], group.noise)
            if group.rejection is not None:
                assert group.uniforms is not None
                rows = group.rows[group.rejection]
                accepted[rows], next_token[rows] = accept_rejection(
                    probs[group.rejection],
                    plan.drafted[rows],
                    plan.lengths[rows],
                    group.draft_probs,
                    group.uniforms,
                )
        if plan.matching is not None:
            rows = plan.matching
            accepted[rows], next_token[rows] = accept_matching(
                targets[rows], plan.drafted[rows], plan.lengths[rows]
            )
        verdicts = torch.stack([accepted, next_token, finite.long()])  # [3, b]
        if scored is None:
            host = verdicts.tolist()  # the one sync
            return [Verdict(a, t, bool(f)) for a, t, f in zip(*host)]
        # One host copy for verdicts and logprobs: float64 holds token ids (< 2**53) and
        # float32 logprobs exactly.
        assert plan.scored is not None
        emitted = plan.emitted(accepted, next_token)[plan.scored.rows]  # [w, q]
        flat = plan.scored.tensors(scored, emitted)  # [w * q * (1 + 2k)] float64
        values = torch.cat([verdicts.flatten().double(), flat]).tolist()  # the one sync
        host = [[int(v) for v in values[i * b : (i + 1) * b]] for i in range(3)]
        entries = plan.scored.entries(values[3 * b :], host[0], host[1], drafts)
        return [Verdict(a, t, bool(f), entries.get(i)) for i, (a, t, f) in enumerate(zip(*host))]


class _Group:
    """Sampled rows with one setting: their indices, coupled noise, uniforms, draft probs."""

    def __init__(
        self,
        rows: list[int],
        params: Any,
        seqs: Seq[Sequence],
        drafts: Seq[Draft],
        q: int,
        device: torch.device,
        vocab: int,
        scored: _Scored | None,
    ) -> None:
        self.params = params
        self.rows = _indices(rows, device)
        # Rows asking for logprobs: where they sit in this group and in ``scored``'s rows.
        asking = [(j, scored.at[i]) for j, i in enumerate(rows) if scored and i in scored.at]
        self.scored = _indices([j for j, _ in asking], device) if asking else None
        self.scored_at = _indices([w for _, w in asking], device) if asking else None
        seeded = [j for j, i in enumerate(rows) if seqs[i].params.seed is not None]
        others = [j for j, i in enumerate(rows) if seqs[i].params.seed is None]
        self.seeded = _indices(seeded, device) if seeded else None
        self.rejection = _indices(others, device) if others else None
        self.noise: torch.Tensor | None = None  # [s, q, vocab]
        if seeded:
            self.noise = torch.ones(len(seeded), q, vocab, device=device)
            for k, j in enumerate(seeded):
                _noise(seqs[rows[j]], drafts[rows[j]], self.noise[k])
        chosen = [drafts[rows[j]] for j in others]
        self.uniforms = (
            torch.stack([_uniforms(seqs[rows[j]], drafts[rows[j]], q, device) for j in others])
            if others
            else None
        )  # [r, q]
        self.draft_probs = _draft_probs(chosen, q - 1, vocab, device) if others else None


class _Plan:
    """What verification needs from the host, on the device before the forward is queued."""

    def __init__(
        self, seqs: Seq[Sequence], drafts: Seq[Draft], q: int, device: torch.device, vocab: int
    ) -> None:
        packed = [[len(d.tokens), *d.tokens, *[0] * (q - 1 - len(d.tokens))] for d in drafts]
        table = torch.tensor(packed, dtype=torch.long).to(device, non_blocking=True)
        self.lengths = table[:, 0]  # [b]
        self.drafted = table[:, 1:]  # [b, q - 1]
        self.valid = torch.arange(q, device=device)[None, :] <= self.lengths[:, None]  # [b, q]
        constrained = [i for i, d in enumerate(drafts) if d.allowed is not None]
        self.constrained = _indices(constrained, device) if constrained else None
        self.allowed = (
            torch.stack([_padded_bits(drafts[i], q) for i in constrained]).to(
                device, non_blocking=True
            )
            if constrained
            else None
        )  # [c, q, words]
        matching = [i for i, s in enumerate(seqs) if s.params.greedy or s.params.seed is not None]
        self.matching = _indices(matching, device) if matching else None
        asking = [i for i, s in enumerate(seqs) if s.params.logprobs is not None]
        self.scored = _Scored(asking, seqs, q, device, vocab) if asking else None
        """The rows that ask for logprobs, or ``None``."""
        self.groups = [
            _Group(rows, params, seqs, drafts, q, device, vocab, self.scored)
            for rows, params in _by_params(seqs)
            if not params.greedy
        ]

    def emitted(self, accepted: torch.Tensor, next_token: torch.Tensor) -> torch.Tensor:
        """``[b, q]`` each row's emitted tokens: its accepted drafts, then ``next_token``.

        Positions past a row's ``accepted`` hold padding, never read.
        """
        pad = self.drafted.new_zeros(self.drafted.shape[0], 1)
        tokens = torch.cat([self.drafted, pad], dim=1)  # [b, q]
        return tokens.scatter(1, accepted[:, None], next_token[:, None])


class _Scored:
    """Rows that ask for logprobs: their indices and how many alternatives each wants."""

    def __init__(
        self, rows: list[int], seqs: Seq[Sequence], q: int, device: torch.device, vocab: int
    ) -> None:
        self.index = rows
        self.at = {i: w for w, i in enumerate(rows)}
        """Batch row -> its row in the scored tensors."""
        self.rows = _indices(rows, device)  # [w]
        self.top = [min(cast(int, seqs[i].params.logprobs), vocab) for i in rows]
        self.k = max(self.top)
        self.q = q

    def tensors(self, scores: torch.Tensor, emitted: torch.Tensor) -> torch.Tensor:
        """What the host needs, flat float64: emitted tokens' logprobs, the top-k ids and logprobs.

        Args:
            scores: ``[w, q, vocab]`` the scored rows' sampler scores (unnormalised).
            emitted: ``[w, q]`` their emitted tokens.

        Returns:
            ``[w * q]`` chosen logprobs, then ``[w * q * k]`` top ids and ``[w * q * k]``
            top logprobs (most likely first), concatenated.
        """
        logprobs = scores.log_softmax(dim=-1)  # [w, q, vocab]
        parts = [logprobs.gather(2, emitted[:, :, None]).flatten()]  # [w * q]
        if self.k:
            top = logprobs.topk(self.k, dim=-1)  # [w, q, k]
            parts += [top.indices.flatten(), top.values.flatten()]
        return torch.cat([part.double() for part in parts])

    def entries(
        self,
        values: Seq[float],
        accepted: Seq[int],
        next_token: Seq[int],
        drafts: Seq[Draft],
    ) -> dict[int, tuple[TokenLogprob, ...]]:
        """Batch row -> its emitted tokens' :class:`TokenLogprob` from :meth:`tensors`' values."""
        w, q, k = len(self.index), self.q, self.k
        chosen = values[: w * q]  # [w, q]
        ids, tops = values[w * q : w * q * (1 + k)], values[w * q * (1 + k) :]  # [w, q, k]
        out: dict[int, tuple[TokenLogprob, ...]] = {}
        for n, i in enumerate(self.index):
            tokens = [*drafts[i].tokens[: accepted[i]], next_token[i]]
            row = []
            for j, token in enumerate(tokens):
                at = (n * q + j) * k
                top = tuple(
                    (int(ids[at + m]), tops[at + m])
                    for m in range(self.top[n])
                    if tops[at + m] != float("-inf")  # probability 0: no alternative
                )
                row.append(TokenLogprob(token, chosen[n * q + j], top))
            out[i] = tuple(row)
        return out


def _padded_bits(draft: Draft, q: int) -> torch.Tensor:
    """A constrained row's bitmasks padded to ``q`` positions (padding allows every token)."""
    assert draft.allowed is not None
    bits = draft.allowed
    if bits.shape[0] < q:
        pad = torch.full((q - bits.shape[0], bits.shape[1]), -1, dtype=bits.dtype)
        bits = torch.cat([bits, pad])
    return bits


def _indices(values: list[int], device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long).to(device, non_blocking=True)


def _by_params(seqs: Seq[Sequence]) -> list[tuple[list[int], Any]]:
    """Row indices grouped by identical sampling settings (one warper call per group)."""
    groups: dict[tuple[Any, ...], tuple[list[int], Any]] = {}
    for i, seq in enumerate(seqs):
        p = seq.params
        key = (p.greedy, p.temperature, p.top_k, p.top_p)
        groups.setdefault(key, ([], p))[0].append(i)
    return list(groups.values())


def _noise(seq: Sequence, draft: Draft, out: torch.Tensor) -> None:
    """Coupled noise of the output positions a seeded row verifies, into ``out`` ``[q, vocab]``.

    Only the row's own ``1 + len(draft)`` positions are drawn (a draw costs ~0.5 ms per
    position for a 49k vocabulary on a CPU); the padding keeps ``out``'s ones, whose
    samples are never read (acceptance stops at the row's own length).
    """
    t, seed = len(seq.output_ids), seq.params.seed
    assert seed is not None
    n = 1 + len(draft.tokens)
    position_noise(seed, range(t, t + n), out.shape[-1], out.device, out=out[:n])


def _uniforms(seq: Sequence, draft: Draft, q: int, device: torch.device) -> torch.Tensor:
    """U(0, 1) draws of one row, ``[q]``: one per draft token, the last for the emitted token.

    Exactly ``len(draft) + 1`` draws come from the row's own generator (the padding is
    zeros, never read), so a request's random stream depends on its own drafts only, not
    on how long its neighbours' drafts are.
    """
    g = len(draft.tokens)
    u = torch.rand(g + 1, generator=seq.generator, device=device)
    pad = torch.zeros(q - 1 - g, device=device)
    return torch.cat([u[:g], pad, u[g:]])


def _draft_probs(
    drafts: Seq[Draft], g: int, vocab: int, device: torch.device
) -> torch.Tensor | None:
    """``[r, g, vocab]`` draft distributions (zeros where a draft is deterministic)."""
    if all(d.probs is None for d in drafts) or g == 0:
        return None
    out = torch.zeros(len(drafts), g, vocab, device=device)
    for i, d in enumerate(drafts):
        if d.probs is not None and len(d.tokens):
            out[i, : len(d.tokens)] = d.probs[: len(d.tokens)]
    return out
