"""Trials -> per-method summaries: medians, speedups, output mismatches, the acceptance bound.

*Speedup* is the harness's (:mod:`~langchain_seed.bench.harness`); the *bound* is the
expected tokens per verification at the measured acceptance rate
(:func:`expected_tokens_per_verification`), reported beside the measured mean. Pure
functions over :mod:`~langchain_seed.bench.results`, tested without a model.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from langchain_seed.bench.results import (
    DEFAULT_BASELINES,
    REFERENCE_METHOD,
    MethodSummary,
    SweepResult,
    Trial,
    WorkloadResult,
)


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
