"""The benchmark harness: interleaved methods over one workload, medians and ratios.

Vocabulary (used the same way in the report):
- *method*: one way of running the model (``sequential``, ``hf_batched``, ``ours``, ...).
  :meth:`Method.open` builds a fresh backend (untimed: models loaded, caches empty, stats
  zero); the backend is closed after the trial.
- *workload*: what is run (``batch``, ``sc``, ``tot-game24``, ...). :meth:`Workload.run`
  drives one backend through the whole workload and returns a :class:`RunOutput`.
- *trial*: one timed ``Workload.run`` of one method. Trials are interleaved: repeat ``r``
  runs every method once, in an order rotated by ``r``, so drift of the machine (other
  processes, thermal state) spreads over all methods instead of landing on one.
- *speedup vs B*: ``median wall(B) / median wall(method)`` (> 1 means faster than B).

Nothing here imports torch; the harness is tested with fake methods.
"""

from __future__ import annotations

import logging
import os
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

logger = logging.getLogger(__name__)

REFERENCE_METHOD = "sequential"
"""Outputs of every method are compared with this method's (at temperature 0)."""
DEFAULT_BASELINES = ("sequential", "batched_ar")
"""Methods every other method's wall time is divided by."""


class Backend(Protocol):
    """What :meth:`Method.open` returns; a workload knows which richer interface it needs."""

    def close(self) -> None:
        """Release models, threads and caches of this trial."""


class Method(Protocol):
    """A named way to run the model; builds a fresh backend per trial."""

    @property
    def name(self) -> str:
        """Unique name in the report."""

    def open(self) -> Backend:
        """Build the backend for one trial (untimed)."""


class Workload(Protocol):
    """Something to run the same way through every method."""

    @property
    def name(self) -> str:
        """Unique name in the report."""

    @property
    def description(self) -> str:
        """One line for the report."""

    @property
    def compare_outputs(self) -> bool:
        """True when outputs must equal the reference method's (temperature 0)."""

    @property
    def reference(self) -> str:
        """The method whose outputs are the truth (usually ``sequential``)."""

    @property
    def baselines(self) -> tuple[str, ...]:
        """Methods to compute speedups against."""

    @property
    def methods(self) -> tuple[str, ...]:
        """Default methods of this workload."""

    def warmup(self, backend: Any) -> None:
        """A short untimed run through the same code path (kernels, allocator, caches)."""

    def run(self, backend: Any) -> RunOutput:
        """The timed run."""


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


# --------------------------------------------------------------------------- maths


def median(values: Sequence[float]) -> float:
    """Median of a non-empty sequence."""
    if not values:
        raise ValueError("median of an empty sequence")
    return float(statistics.median(values))


def speedup(baseline_seconds: float, method_seconds: float) -> float:
    """How many times faster the method is than the baseline (> 1 is faster)."""
    if method_seconds <= 0:
        raise ValueError(f"method_seconds must be > 0, got {method_seconds}")
    return baseline_seconds / method_seconds


def expected_tokens_per_verification(acceptance: float, gamma: float) -> float:
    """Tokens one verification emits with i.i.d. per-token acceptance ``a`` and ``gamma`` drafts.

    E = sum_{k=0..g} a^k = (1 - a^(g+1)) / (1 - a): the accepted prefix plus the one
    corrected or bonus token (Leviathan et al. 2023, eq. 1). ``a = 1`` gives g + 1.
    """
    if not 0.0 <= acceptance <= 1.0:
        raise ValueError(f"acceptance must be in [0, 1], got {acceptance}")
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    if acceptance >= 1.0:
        return gamma + 1.0
    return (1.0 - acceptance ** (gamma + 1)) / (1.0 - acceptance)


def find_mismatches(reference: Sequence[Any], outputs: Sequence[Any]) -> list[int]:
    """Indices where ``outputs`` differs from ``reference`` (extra or missing items count)."""
    bad = [i for i, (a, b) in enumerate(zip(reference, outputs, strict=False)) if a != b]
    longer = max(len(reference), len(outputs))
    bad.extend(range(min(len(reference), len(outputs)), longer))
    return bad


def median_stats(trials: Sequence[Trial]) -> dict[str, float | int | None]:
    """Median of every numeric stat present in the trials (``None`` values are skipped)."""
    keys: list[str] = []
    for trial in trials:
        keys.extend(k for k in trial.output.stats if k not in keys)
    merged: dict[str, float | int | None] = {}
    for key in keys:
        values = [
            v
            for t in trials
            if isinstance(v := t.output.stats.get(key), (int, float)) and not isinstance(v, bool)
        ]
        merged[key] = median(values) if values else None
    return merged


def summarize(
    trials_by_method: dict[str, list[Trial]],
    errors: dict[str, str],
    *,
    baselines: Sequence[str] = DEFAULT_BASELINES,
    compare_outputs: bool = False,
    reference: str = REFERENCE_METHOD,
) -> tuple[list[MethodSummary], list[str]]:
    """Turn trials into per-method summaries and warnings (mismatches, failures).

    Args:
        trials_by_method: method name -> its trials, in the order methods should appear.
        errors: method name -> error message of a method that failed.
        baselines: methods to compute speedups against (those that ran).
        compare_outputs: compare every trial's outputs with the reference's first trial.
        reference: the method whose outputs are the truth.

    Returns:
        The summaries (failed methods included, with ``error`` set) and the warnings.
    """
    warnings: list[str] = []
    walls = {m: median([t.wall_seconds for t in ts]) for m, ts in trials_by_method.items() if ts}
    ref_trials = trials_by_method.get(reference) or []
    ref_outputs = ref_trials[0].output.outputs if ref_trials else None
    if compare_outputs and ref_outputs is None:
        warnings.append(
            f"outputs not compared: the reference method '{reference}' did not run or failed"
        )
    summaries: list[MethodSummary] = []
    for method, trials in trials_by_method.items():
        if not trials:
            continue
        wall = walls[method]
        tokens = int(median([t.output.generated_tokens for t in trials]))
        summary = MethodSummary(
            method=method,
            trials=len(trials),
            wall_seconds=wall,
            wall_all=[t.wall_seconds for t in trials],
            generated_tokens=tokens,
            tokens_per_second=tokens / wall if wall > 0 else 0.0,
            peak_rss_bytes=max(t.peak_rss_bytes for t in trials),
            speedup={b: speedup(walls[b], wall) for b in baselines if b in walls and wall > 0},
            stats=median_stats(trials),
            info=dict(trials[0].output.info),
        )
        if compare_outputs and ref_outputs is not None:
            summary.outputs_equal = True
            for trial in trials:
                bad = find_mismatches(ref_outputs, trial.output.outputs)
                if bad:
                    summary.outputs_equal = False
                    summary.mismatches = bad
                    warnings.append(
                        f"MISMATCH: {method} (repeat {trial.repeat}) differs from {reference} "
                        f"on {len(bad)} of {len(ref_outputs)} outputs (first at index {bad[0]})"
                    )
                    break
        summary.bound = _bound(summary, summary.info.get("gamma"))
        summary.bound_mean_draft = _bound(summary, summary.stats.get("mean_draft_length"))
        summaries.append(summary)
    for method, message in errors.items():
        warnings.append(f"FAILED: {method}: {message}")
        summaries.append(
            MethodSummary(
                method=method,
                trials=0,
                wall_seconds=float("nan"),
                wall_all=[],
                generated_tokens=0,
                tokens_per_second=0.0,
                peak_rss_bytes=0,
                error=message,
            )
        )
    return summaries, warnings


def _bound(summary: MethodSummary, gamma: Any) -> float | None:
    """The theoretical tokens per verification for a speculating method, else ``None``."""
    acceptance = summary.stats.get("acceptance_rate")
    if not summary.info.get("speculates") or acceptance is None or gamma is None:
        return None
    return expected_tokens_per_verification(min(max(float(acceptance), 0.0), 1.0), float(gamma))


# --------------------------------------------------------------------------- running


class PeakRSS:
    """Context manager sampling this process's resident set size in a background thread.

    ``ru_maxrss`` is a process-lifetime maximum and cannot be attributed to one of several
    interleaved methods, so the peak is sampled (every ``interval`` seconds) instead.
    """

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakRSS:
        self.peak = current_rss()
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, name="bench-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, current_rss())

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, current_rss())


def current_rss() -> int:
    """Resident set size of this process in bytes (0 where it cannot be read)."""
    try:
        import psutil

        return int(psutil.Process(os.getpid()).memory_info().rss)
    except Exception:  # psutil missing or not permitted: fall back to the lifetime peak
        try:
            import resource

            return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
        except Exception:
            return 0


ProgressHook = Callable[[str], None]
"""Called with a short description before each warm-up and trial (for a progress bar)."""


def run_workload(
    workload: Workload,
    methods: Sequence[Method],
    *,
    repeats: int = 3,
    warmup: bool = True,
    on_step: ProgressHook | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> WorkloadResult:
    """Run every method on one workload, interleaved, and summarize.

    Args:
        workload: what to run.
        methods: how to run it; names must be unique.
        repeats: timed trials per method (>= 1).
        warmup: one untimed :meth:`Workload.warmup` per method first.
        on_step: progress hook, called before each warm-up and trial.
        clock: time source (tests pass a fake).

    Returns:
        Summaries in the order of ``methods``; a method that raises is reported as failed
        and skipped from then on, the others continue.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise ValueError(f"method names must be unique, got {names}")
    trials: dict[str, list[Trial]] = {m.name: [] for m in methods}
    errors: dict[str, str] = {}

    def attempt(method: Method, action: Callable[[Any], Any]) -> Any:
        try:
            backend = method.open()
        except Exception as exc:
            _fail(method.name, exc)
            return None
        try:
            return action(backend)
        except Exception as exc:
            _fail(method.name, exc)
            return None
        finally:
            try:
                backend.close()
            except Exception:
                logger.exception("closing backend of %s failed", method.name)

    def _fail(name: str, exc: Exception) -> None:
        logger.error("%s failed on %s: %r", name, workload.name, exc, exc_info=exc)
        errors[name] = f"{type(exc).__name__}: {exc}"

    if warmup:
        for method in methods:
            if on_step is not None:
                on_step(f"{workload.name}: warm-up {method.name}")
            attempt(method, workload.warmup)
    for repeat in range(repeats):
        shift = repeat % len(methods)
        for method in list(methods[shift:]) + list(methods[:shift]):
            if method.name in errors:
                continue
            if on_step is not None:
                on_step(f"{workload.name}: {method.name} ({repeat + 1}/{repeats})")

            def timed(backend: Any, repeat: int = repeat, name: str = method.name) -> None:
                with PeakRSS() as rss:
                    start = clock()
                    output = workload.run(backend)
                    wall = clock() - start
                trials[name].append(Trial(name, repeat, wall, rss.peak, output))

            attempt(method, timed)
    ordered_errors = {m.name: errors[m.name] for m in methods if m.name in errors}
    # A method that failed mid-way keeps no partial trials: its numbers would not be comparable.
    kept = {name: ts for name, ts in trials.items() if name not in errors}
    summaries, warnings = summarize(
        kept,
        ordered_errors,
        baselines=workload.baselines,
        compare_outputs=workload.compare_outputs,
        reference=workload.reference,
    )
    for message in warnings:
        logger.warning("%s: %s", workload.name, message)
    return WorkloadResult(
        workload=workload.name,
        description=workload.description,
        methods=summaries,
        warnings=[f"{workload.name}: {w}" for w in warnings],
        repeats=repeats,
        reference=workload.reference,
    )


def sweep_from_results(
    name: str,
    variable: str,
    points: Sequence[tuple[float, WorkloadResult]],
    methods: Sequence[str],
    *,
    baseline: str = REFERENCE_METHOD,
    notes: str = "",
) -> SweepResult:
    """Collect the speedup of ``methods`` over ``baseline`` at every sweep point.

    Args:
        name: sweep name (``concurrency``, ``gamma``).
        variable: axis label.
        points: (x, result of the workload run at x).
        methods: methods to plot.
        baseline: the method every speedup is relative to.
        notes: how the sweep was run (for the report).
    """
    speed: dict[str, list[float | None]] = {m: [] for m in methods}
    walls: dict[str, list[float | None]] = {m: [] for m in [baseline, *methods]}
    for _, result in points:
        base = result.summary(baseline)
        base_ok = base is not None and base.error is None
        walls[baseline].append(base.wall_seconds if base_ok and base else None)
        for method in methods:
            summary = result.summary(method)
            ok = summary is not None and summary.error is None
            walls[method].append(summary.wall_seconds if ok and summary else None)
            if ok and base_ok and summary and base:
                speed[method].append(speedup(base.wall_seconds, summary.wall_seconds))
            else:
                speed[method].append(None)
    return SweepResult(
        name=name,
        variable=variable,
        xs=[x for x, _ in points],
        baseline=baseline,
        speedup=speed,
        wall_seconds=walls,
        notes=notes,
    )
