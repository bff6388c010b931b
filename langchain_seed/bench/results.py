"""Plain-data results of a benchmark run: trials, per-method summaries, sweeps, the report.

Nothing here computes; :mod:`~langchain_seed.bench.summary` turns trials into summaries,
:mod:`~langchain_seed.bench.report` turns the report into Markdown, JSON and a chart.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

REFERENCE_METHOD = "sequential"
"""Outputs of every method are compared with this method's (at temperature 0)."""
DEFAULT_BASELINES = ("sequential", "batched_ar")
"""Methods every other method's wall time is divided by."""


@dataclass(slots=True)
class RunOutput:
    """What one trial produced.

    ``outputs`` are the comparable results (texts, token-id lists, serialized trees) in a
    fixed order; ``stats`` are numeric counters (engine or backend stats, accuracy, calls);
    ``info`` describes the configuration (policy, drafters, gamma) and is not averaged.
    """

    outputs: list[Any]
    generated_tokens: int
    stats: dict[str, float | int | None] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Trial:
    """One timed run of one method."""

    method: str
    repeat: int
    wall_seconds: float
    peak_rss_bytes: int
    output: RunOutput


@dataclass(slots=True)
class MethodSummary:
    """Medians over the trials of one method, and how it compares with the baselines."""

    method: str
    trials: int
    wall_seconds: float
    """Median wall time."""
    wall_all: list[float]
    generated_tokens: int
    tokens_per_second: float
    peak_rss_bytes: int
    """Highest resident set size of the process seen during any of this method's trials."""
    speedup: dict[str, float] = field(default_factory=dict)
    """Baseline name -> median wall(baseline) / median wall(this method)."""
    outputs_equal: bool | None = None
    """Every trial's outputs equal the reference's; ``None`` when not compared."""
    mismatches: list[int] = field(default_factory=list)
    """Indices of outputs that differ from the reference (first differing trial)."""
    stats: dict[str, float | int | None] = field(default_factory=dict)
    """Median of each numeric stat over the trials."""
    info: dict[str, Any] = field(default_factory=dict)
    bound: float | None = None
    """Expected tokens per verification (1 - a^(g+1)) / (1 - a) for the measured acceptance
    a and the method's gamma g; compare with ``stats['mean_accepted_length']``."""
    bound_mean_draft: float | None = None
    """The same bound at the measured mean draft length (adaptive gamma drafts less)."""
    error: str | None = None


@dataclass(slots=True)
class WorkloadResult:
    """Every method's summary on one workload, plus the loud warnings."""

    workload: str
    description: str
    methods: list[MethodSummary]
    warnings: list[str] = field(default_factory=list)
    repeats: int = 1
    reference: str = REFERENCE_METHOD
    """The method the others' outputs were compared with."""

    def summary(self, method: str) -> MethodSummary | None:
        """The summary of ``method``, or ``None`` when it did not run."""
        return next((m for m in self.methods if m.method == method), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


@dataclass(slots=True)
class SweepResult:
    """Speedup over a baseline as one variable grows (concurrent calls, gamma)."""

    name: str
    variable: str
    xs: list[float]
    baseline: str
    speedup: dict[str, list[float | None]]
    """Method -> speedup over ``baseline`` at each x (``None`` where it failed)."""
    wall_seconds: dict[str, list[float | None]]
    notes: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


@dataclass(slots=True)
class BenchReport:
    """Everything one ``langchain-seed bench`` run measured."""

    workloads: list[WorkloadResult] = field(default_factory=list)
    sweeps: list[SweepResult] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def warnings(self) -> list[str]:
        """All warnings of all workloads."""
        return [w for result in self.workloads for w in result.warnings]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "meta": self.meta,
            "workloads": [w.to_dict() for w in self.workloads],
            "sweeps": [s.to_dict() for s in self.sweeps],
            "warnings": self.warnings,
        }
