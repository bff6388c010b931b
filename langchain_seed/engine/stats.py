"""Counters and histograms, plain data returned with every result and engine-wide.

Vocabulary (used the same way everywhere):
- *drafted*: draft tokens sent to verification.
- *accepted*: draft tokens the target kept.
- *verification*: one sequence checked by one target forward (a sequence with gamma 0
  counts too: it is verified with no drafts and yields one token).
- *mean accepted length*: tokens emitted per verification = 1 + accepted / verifications.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass(slots=True)
class SpecStats:
    """Speculative-decoding counters of one request, or summed over many."""

    prompt_tokens: int = 0
    generated_tokens: int = 0
    cached_prompt_tokens: int = 0
    """Prompt tokens whose KV came from the prefix cache or a group sibling."""
    target_tokens: int = 0
    """Positions processed by target forwards for this request (prefill + verification)."""
    verifications: int = 0
    drafted: int = 0
    accepted: int = 0
    accepted_by_position: list[int] = field(default_factory=list)
    """accepted_by_position[k]: how often the draft token at position k was accepted."""
    drafted_by_position: list[int] = field(default_factory=list)
    drafted_by_drafter: dict[str, int] = field(default_factory=dict)
    accepted_by_drafter: dict[str, int] = field(default_factory=dict)

    @property
    def mean_accepted_length(self) -> float:
        """Tokens emitted per verification: 1 + accepted / verifications."""
        return 1.0 + self.accepted / self.verifications if self.verifications else 0.0

    @property
    def acceptance_rate(self) -> float:
        """Accepted draft tokens / drafted tokens."""
        return self.accepted / self.drafted if self.drafted else 0.0

    def record(self, drafter: str, drafted: int, accepted: int) -> None:
        """Count one verification that checked ``drafted`` tokens and accepted ``accepted``."""
        self.verifications += 1
        self.drafted += drafted
        self.accepted += accepted
        if drafted:
            self.drafted_by_drafter[drafter] = self.drafted_by_drafter.get(drafter, 0) + drafted
            self.accepted_by_drafter[drafter] = self.accepted_by_drafter.get(drafter, 0) + accepted
        _grow(self.drafted_by_position, drafted)
        _grow(self.accepted_by_position, accepted)
        for k in range(drafted):
            self.drafted_by_position[k] += 1
        for k in range(accepted):
            self.accepted_by_position[k] += 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict including the derived rates."""
        data = asdict(self)
        data["mean_accepted_length"] = round(self.mean_accepted_length, 4)
        data["acceptance_rate"] = round(self.acceptance_rate, 4)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SpecStats:
        """The counters of a :meth:`to_dict` dict (the derived rates are left out)."""
        return cls(**{f.name: copy.deepcopy(data[f.name]) for f in fields(cls) if f.name in data})


def _grow(values: list[int], size: int) -> None:
    if len(values) < size:
        values.extend([0] * (size - len(values)))


@dataclass(slots=True)
class EngineStats:
    """Engine-wide counters since start (or the last :meth:`Engine.reset_stats`)."""

    spec: SpecStats = field(default_factory=SpecStats)
    requests_finished: int = 0
    requests_failed: int = 0
    requests_cancelled: int = 0
    requests_coalesced: int = 0
    """Requests answered by an identical deterministic request of their group, decoded once
    (counted when queued; the one decoded counts as finished, failed or cancelled)."""
    steps: int = 0
    target_forwards: int = 0
    draft_forwards: int = 0
    peak_batch_size: int = 0
    peak_memory_bytes: int = 0
    """Peak RSS on CPU, peak allocated CUDA memory on a GPU."""
    kv_pool_bytes: int = 0
    """Bytes held by the KV pools of every model (at most ``kv_budget_bytes``)."""
    kv_budget_bytes: int = 0
    """Bytes of ``max_cache_tokens`` slots in every model's pool (0 before the first step)."""
    prefill_seconds: float = 0.0
    draft_seconds: float = 0.0
    verify_seconds: float = 0.0
    scheduler_seconds: float = 0.0
    prefix_cache: dict[str, Any] = field(default_factory=dict)
    drafter_failures: dict[str, int] = field(default_factory=dict)
    """Proposals that raised, by drafter: drafting by that drafter stopped for the rows it
    was asked for (their requests go on without its drafts)."""

    def phase_seconds(self) -> float:
        """Seconds in prefill, drafting and verification so far."""
        return self.prefill_seconds + self.draft_seconds + self.verify_seconds

    @property
    def generated_tokens(self) -> int:
        """Tokens emitted by all requests."""
        return self.spec.generated_tokens

    @property
    def target_forwards_per_token(self) -> float:
        """Target forwards / generated tokens (lower is better; 1.0 for one sequence AR)."""
        return (
            self.target_forwards / self.spec.generated_tokens if self.spec.generated_tokens else 0.0
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict including the derived rates."""
        data = asdict(self)
        data["spec"] = self.spec.to_dict()
        data["mean_accepted_length"] = round(self.spec.mean_accepted_length, 4)
        data["target_forwards_per_token"] = round(self.target_forwards_per_token, 4)
        return data


def peak_memory(device: str) -> int:
    """Peak allocated bytes of a CUDA ``device``; peak RSS of the process on a CPU."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated(torch.device(device)))
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    except ImportError:  # pragma: no cover - Windows
        return 0
