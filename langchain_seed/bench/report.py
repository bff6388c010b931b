"""Report writers: a Markdown table, a JSON file and a matplotlib chart.

These functions return strings or write files; the CLI prints them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from langchain_seed.bench.results import BenchReport, MethodSummary, SweepResult, WorkloadResult
from langchain_seed.bench.summary import median


def _num(value: Any, digits: int = 2, scale: float = 1.0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value * scale:.{digits}f}"


def _spread(walls: list[float]) -> str:
    """(max - min) / median of the repeats, ``-`` for a single repeat."""
    if len(walls) < 2:
        return "-"
    middle = median(walls)
    return f"{(max(walls) - min(walls)) / middle * 100:.0f}%" if middle > 0 else "-"


def _pct(value: Any) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def _equal(summary: MethodSummary, reference: bool) -> str:
    if reference:
        return "ref"
    if summary.outputs_equal is None:
        return "-"
    return "yes" if summary.outputs_equal else f"**NO** ({len(summary.mismatches)})"


def _split(stats: dict[str, Any]) -> str:
    keys = ("prefill_seconds", "draft_seconds", "verify_seconds", "scheduler_seconds")
    if all(stats.get(k) is None for k in keys):
        return "-"
    return "/".join(_num(stats.get(k), 1) for k in keys)


def _quality(stats: dict[str, Any]) -> str:
    if stats.get("accuracy") is not None:
        return f"acc {_num(stats['accuracy'], 2)}"
    if stats.get("solve_rate") is not None:
        return f"solved {_num(stats['solve_rate'], 2)}"
    return "-"


def workload_table(result: WorkloadResult) -> str:
    """One workload as a Markdown table (medians over the repeats)."""
    baselines: list[str] = []
    for summary in result.methods:
        baselines.extend(b for b in summary.speedup if b not in baselines)
    reference = result.reference
    header = [
        "method",
        "wall s",
        "spread",
        *[f"x {b}" for b in baselines],
        "prompt tok",
        "gen tok",
        "tok/s",
        "fwd/tok",
        "acc len",
        "bound g / mean",
        "prefill/draft/verify/sched s",
        "prefix hit",
        "draft %",
        "calls",
        "peak RSS MB",
        f"= {reference}",
        "quality",
    ]
    lines = [
        f"### {result.workload}",
        "",
        f"{result.description}; median of {result.repeats} repeat(s).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    for s in result.methods:
        if s.error is not None:
            cells = [s.method, "FAILED", *["-"] * (len(header) - 3), s.error[:80]]
            lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
            continue
        st = s.stats
        bound = "-" if s.bound is None else f"{_num(s.bound)} / {_num(s.bound_mean_draft)}"
        cells = [
            s.method,
            _num(s.wall_seconds),
            _spread(s.wall_all),
            *[_num(s.speedup.get(b)) for b in baselines],
            _num(st.get("prompt_tokens"), 0),
            str(s.generated_tokens),
            _num(s.tokens_per_second, 1),
            _num(st.get("target_forwards_per_token"), 3),
            _num(st.get("mean_accepted_length")),
            bound,
            _split(st),
            _pct(st.get("prefix_hit_rate")),
            _pct(st.get("drafter_share")),
            _num(st.get("calls"), 0),
            _num(s.peak_rss_bytes, 0, 1 / 2**20),
            _equal(s, s.method == reference),
            _quality(st),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sweep_table(sweep: SweepResult) -> str:
    """A sweep as a Markdown table of speedups over its baseline."""
    methods = list(sweep.speedup)
    lines = [
        f"### sweep: {sweep.name}",
        "",
        f"Speedup over `{sweep.baseline}` by {sweep.variable}. {sweep.notes}",
        "",
        "| " + " | ".join([sweep.variable, *methods]) + " |",
        "|" + "|".join("---" for _ in range(len(methods) + 1)) + "|",
    ]
    for i, x in enumerate(sweep.xs):
        cells = [f"{x:g}", *[_num(sweep.speedup[m][i]) for m in methods]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(report: BenchReport) -> str:
    """The whole report as Markdown: command, machine, one table per workload and sweep."""
    meta = report.meta
    parts = ["## langchain-seed benchmark", ""]
    if meta.get("command"):
        parts += [f"Command: `{meta['command']}`", ""]
    machine = meta.get("machine") or {}
    if machine:
        parts += ["Machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()), ""]
    parts += [
        "Columns: `spread` = (max - min) / median wall over the repeats; "
        "`x B` = median wall(B) / median wall(method); `fwd/tok` = target forwards per "
        "generated token; `acc len` = mean tokens per verification; `bound g / mean` = "
        "(1 - a^(g+1)) / (1 - a) at the configured gamma and at the measured mean draft length, "
        "from the measured acceptance a.",
        "",
    ]
    for result in report.workloads:
        parts += [workload_table(result), ""]
    for sweep in report.sweeps:
        parts += [sweep_table(sweep), ""]
    if report.warnings:
        parts += ["### Warnings", ""] + [f"- **{w}**" for w in report.warnings] + [""]
    return "\n".join(parts)


def write_json(report: BenchReport, path: str | Path) -> Path:
    """Write the report as strict JSON (NaN becomes ``null``; parents created)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    data = _clean(report.to_dict())
    out.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
    return out


def _clean(value: Any) -> Any:
    """Plain JSON values: NaN/inf -> ``None``, tuples -> lists, unknown objects -> ``str``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_clean(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def write_plot(report: BenchReport, path: str | Path) -> Path:
    """Speedup bars per workload (over ``sequential``) and the sweep curves, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 1 + len(report.sweeps)
    fig, axes = plt.subplots(1, panels, figsize=(7 + 4.5 * (panels - 1), 4.5), squeeze=False)
    _bars(axes[0][0], report.workloads)
    for ax, sweep in zip(axes[0][1:], report.sweeps, strict=True):
        _curve(ax, sweep)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def _bars(ax: Any, workloads: list[WorkloadResult]) -> None:
    methods: list[str] = []
    for result in workloads:
        methods.extend(s.method for s in result.methods if s.method not in methods)
    series = {}
    for method in methods:
        values = []
        for result in workloads:
            s = result.summary(method)
            base = _bar_baseline(result)
            values.append(s.speedup.get(base, 0.0) if s and s.error is None and base else 0.0)
        series[method] = values
    labels = [f"{r.workload}\n(vs {_bar_baseline(r) or '-'})" for r in workloads]
    speedup_bars(ax, labels, series, "speedup per workload")


def speedup_bars(ax: Any, labels: list[str], series: dict[str, list[float]], title: str) -> None:
    """Grouped bars: one group per label, one bar per method (``series[method][group]``)."""
    width = 0.8 / max(len(series), 1)
    for i, (method, values) in enumerate(series.items()):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(labels))]
        ax.bar(xs, values, width, label=method)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels)
    ax.set_ylabel("speedup (x)")
    ax.set_title(title)
    ax.legend(fontsize=8)


def _bar_baseline(result: WorkloadResult) -> str | None:
    for name in ("sequential", *[b for s in result.methods for b in s.speedup]):
        if result.summary(name) is not None and result.summary(name).error is None:  # type: ignore[union-attr]
            return name
    return None


def _curve(ax: Any, sweep: SweepResult) -> None:
    for method, values in sweep.speedup.items():
        points = [(x, v) for x, v in zip(sweep.xs, values, strict=True) if v is not None]
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=method)
    if sweep.name == "concurrency":
        ax.set_xscale("log", base=2)
    ax.set_xticks(sweep.xs)
    ax.set_xticklabels([f"{x:g}" for x in sweep.xs])
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel(sweep.variable)
    ax.set_ylabel(f"speedup over {sweep.baseline} (x)")
    ax.set_title(f"scaling: {sweep.name}")
    ax.legend(fontsize=8)
