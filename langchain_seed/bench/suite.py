"""The benchmark suite: workloads x methods, optional scaling sweeps, one :class:`BenchReport`.

``langchain-seed bench`` runs :func:`run_benchmark`; the ``benchmarks/*.py`` scripts run
:func:`run_simple`.
"""

from __future__ import annotations

import copy
import datetime as _dt
import logging
import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from langchain_seed.bench.backends import BenchConfig
from langchain_seed.bench.harness import Method, Workload, run_workload
from langchain_seed.bench.methods import METHODS, make_method
from langchain_seed.bench.results import BenchReport, MethodSummary, SweepResult, WorkloadResult
from langchain_seed.bench.summary import sweep_from_results
from langchain_seed.bench.workloads import BatchWorkload, WorkloadSizes, build_workloads

logger = logging.getLogger(__name__)

CONCURRENCY = (1, 2, 4, 8, 16, 32)
GAMMAS = tuple(range(9))
SWEEP_METHODS = ("ours", "seed_fcfs")


@dataclass(slots=True)
class BenchOptions:
    """What ``langchain-seed bench`` was asked to run."""

    workloads: list[str]
    methods: list[str] | None = None
    """``None``: each workload's own method list."""
    repeats: int = 3
    warmup: bool = True
    quick: bool = False
    sweep: bool = False
    concurrency: tuple[int, ...] = CONCURRENCY
    gammas: tuple[int, ...] = GAMMAS
    sweep_prompts: int = 8
    """Concurrent calls of the gamma sweep."""
    sweep_tokens: int = 64
    sizes: WorkloadSizes = field(default_factory=WorkloadSizes)
    config: BenchConfig = field(default_factory=BenchConfig)
    progress: bool = True
    command: str = ""

    def __post_init__(self) -> None:
        if self.repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {self.repeats}")
        unknown = [m for m in self.methods or [] if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")


def machine_info() -> dict[str, Any]:
    """Where the numbers were measured."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
    }
    try:
        import torch
        import transformers

        info["torch"] = torch.__version__
        info["transformers"] = transformers.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return info


class _Progress:
    """A tqdm bar advanced once per warm-up and trial."""

    def __init__(self, total: int, enabled: bool) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, disable=not enabled, unit="run", dynamic_ncols=True)
        self._started = False

    def __call__(self, description: str) -> None:
        if self._started:
            self.bar.update(1)
        self._started = True
        self.bar.set_description_str(description)

    def close(self) -> None:
        if self._started:
            self.bar.update(1)
        self.bar.close()


def _steps(methods: int, repeats: int, warmup: bool) -> int:
    return methods * (repeats + (1 if warmup else 0))


def run_benchmark(options: BenchOptions) -> BenchReport:
    """Run every requested workload (and the sweeps) and return the report."""
    workloads: list[Workload] = list(build_workloads(options.workloads, options.sizes))
    plans: list[tuple[Workload, list[Method]]] = []
    for workload in workloads:
        names = [m for m in workload.methods if options.methods is None or m in options.methods]
        if options.methods is not None:
            names += [m for m in options.methods if m not in names and m in _allowed(workload)]
        plans.append((workload, [make_method(m, options.config) for m in names]))
    sweep_points = _sweep_plans(options) if options.sweep else []
    total = sum(_steps(len(ms), options.repeats, options.warmup) for _, ms in plans)
    total += sum(_steps(len(ms), options.repeats, options.warmup) for _, _, _, ms in sweep_points)
    progress = _Progress(total, options.progress)
    report = BenchReport(meta=_meta(options))
    try:
        for workload, methods in plans:
            if not methods:
                continue
            report.workloads.append(
                run_workload(
                    workload,
                    methods,
                    repeats=options.repeats,
                    warmup=options.warmup,
                    on_step=progress,
                )
            )
        results: dict[str, list[tuple[float, WorkloadResult]]] = {}
        for sweep, x, sweep_workload, sweep_methods in sweep_points:
            result = run_workload(
                sweep_workload,
                sweep_methods,
                repeats=options.repeats,
                warmup=options.warmup,
                on_step=progress,
            )
            results.setdefault(sweep, []).append((x, result))
    finally:
        progress.close()
    if options.sweep:
        report.sweeps.extend(_collect_sweeps(options, results))
    return report


def _allowed(workload: Workload) -> tuple[str, ...]:
    """Methods that make sense on a workload when the user names them explicitly."""
    if workload.name == "prefix":
        return ("ours_nocache", "ours", "batched_ar", "seed_fcfs", "vllm", "vllm_spec")
    return tuple(m for m in METHODS if m != "ours_nocache")


def _sweep_plans(options: BenchOptions) -> list[tuple[str, float, Workload, list[Method]]]:
    cfg = options.config
    tokens = options.sweep_tokens
    plans: list[tuple[str, float, Workload, list[Method]]] = []
    for k in options.concurrency:
        workload = BatchWorkload(prompts=k, max_tokens=tokens, name=f"sweep-concurrency-{k}")
        point: list[Method] = [make_method(m, cfg) for m in ("sequential", *SWEEP_METHODS)]
        plans.append(("concurrency", float(k), workload, point))
    workload = BatchWorkload(prompts=options.sweep_prompts, max_tokens=tokens, name="sweep-gamma")
    methods: list[Method] = [make_method("sequential", cfg)]
    for g in options.gammas:
        methods.extend(make_method(m, cfg, gamma=g) for m in SWEEP_METHODS)
    plans.append(("gamma", -1.0, workload, methods))
    return plans


def _collect_sweeps(
    options: BenchOptions, results: dict[str, list[tuple[float, WorkloadResult]]]
) -> list[SweepResult]:
    sweeps = []
    if results.get("concurrency"):
        sweeps.append(
            sweep_from_results(
                "concurrency",
                "concurrent calls",
                results["concurrency"],
                SWEEP_METHODS,
                notes=(
                    f"batch workload with k GSM8K prompts, {options.sweep_tokens} new tokens, "
                    "greedy; sequential runs the same k prompts one at a time"
                ),
            )
        )
    if results.get("gamma"):
        ((_, result),) = results["gamma"]
        # One workload run holds every gamma: re-key it into one point per gamma value.
        points = []
        for g in options.gammas:
            renamed = WorkloadResult(
                workload=result.workload,
                description=result.description,
                methods=[
                    _renamed(s, f"[g={g}]") for s in result.methods if s.method.endswith(f"[g={g}]")
                ]
                + [s for s in result.methods if s.method == "sequential"],
            )
            points.append((float(g), renamed))
        sweeps.append(
            sweep_from_results(
                "gamma",
                "gamma (max draft tokens per step)",
                points,
                SWEEP_METHODS,
                notes=(
                    f"batch workload, {options.sweep_prompts} GSM8K prompts at once, "
                    f"{options.sweep_tokens} new tokens, greedy"
                ),
            )
        )
    return sweeps


def _renamed(summary: MethodSummary, suffix: str) -> MethodSummary:
    out = copy.copy(summary)
    out.method = summary.method[: -len(suffix)]
    return out


def _meta(options: BenchOptions) -> dict[str, Any]:
    return {
        "command": options.command,
        "started_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "quick": options.quick,
        "repeats": options.repeats,
        "warmup": options.warmup,
        "config": asdict(options.config),
        "sizes": asdict(options.sizes),
        "machine": machine_info(),
    }


def run_simple(
    workloads: Sequence[Workload],
    methods: Sequence[str],
    *,
    config: BenchConfig | None = None,
    repeats: int = 1,
    warmup: bool = True,
    progress: bool = True,
    command: str = "",
) -> BenchReport:
    """Run explicit workload objects with named methods (for the ``benchmarks/`` scripts)."""
    cfg = config or BenchConfig()
    bar = _Progress(_steps(len(methods), repeats, warmup) * len(workloads), progress)
    report = BenchReport(
        meta={
            "command": command,
            "started_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "repeats": repeats,
            "config": asdict(cfg),
            "machine": machine_info(),
        }
    )
    try:
        for workload in workloads:
            built = [make_method(m, cfg) for m in methods]
            report.workloads.append(
                run_workload(workload, built, repeats=repeats, warmup=warmup, on_step=bar)
            )
    finally:
        bar.close()
    return report
