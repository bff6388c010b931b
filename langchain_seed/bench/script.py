"""Shared plumbing of the ``benchmarks/*.py`` entry points: arguments, run, goal checks.

The scripts print; this module only builds parsers, runs the harness and returns strings.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from langchain_seed.bench.backends import BenchConfig
from langchain_seed.bench.harness import Workload
from langchain_seed.bench.report import markdown, write_json, write_plot
from langchain_seed.bench.results import BenchReport, MethodSummary
from langchain_seed.bench.suite import run_simple


def common_parser(description: str) -> argparse.ArgumentParser:
    """``--quick``, ``--repeats``, ``--methods``, outputs and model options."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="tiny sizes for a smoke run")
    parser.add_argument("--repeats", type=int, default=1, help="timed trials per method")
    parser.add_argument("--methods", nargs="+", default=None, help="override the method list")
    parser.add_argument("--json", dest="json_path", default=None)
    parser.add_argument("--plot", dest="plot_path", default=None)
    parser.add_argument("--markdown", dest="md_path", default=None)
    parser.add_argument("--model", default=None)
    parser.add_argument("--draft-model", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--gamma", type=int, default=4)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--hf-batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """The :class:`BenchConfig` the common arguments describe."""
    return BenchConfig(
        model=args.model,
        draft_model=args.draft_model,
        device=args.device,
        dtype=args.dtype,
        gamma=args.gamma,
        max_batch_size=args.max_batch_size,
        hf_batch_size=args.hf_batch_size,
    )


def run_script(
    args: argparse.Namespace, workloads: Sequence[Workload], methods: Sequence[str]
) -> tuple[BenchReport, str]:
    """Run the workloads, write the requested files; returns the report and its Markdown."""
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    report = run_simple(
        workloads,
        list(args.methods or methods),
        config=config_from_args(args),
        repeats=args.repeats,
        progress=not args.no_progress,
        command=shlex.join(["python", *sys.argv]),
    )
    text = markdown(report)
    if args.md_path:
        from pathlib import Path

        Path(args.md_path).parent.mkdir(parents=True, exist_ok=True)
        Path(args.md_path).write_text(text + "\n")
    if args.json_path:
        write_json(report, args.json_path)
    if args.plot_path:
        write_plot(report, args.plot_path)
    return report, text


@dataclass(frozen=True, slots=True)
class Goal:
    """A target from an issue, checked against a report.

    ``kind`` is ``"speedup"`` (method over ``other``), ``"stat"`` (a stat of ``method``) or
    ``"stat_ratio"`` (stat of ``other`` / stat of ``method``, e.g. prefill time saved).
    """

    workload: str
    method: str
    kind: str
    at_least: float | None = None
    at_most: float | None = None
    other: str = ""
    stat: str = ""

    def measure(self, report: BenchReport) -> float | None:
        """The measured value, or ``None`` when the methods did not run."""
        result = next((w for w in report.workloads if w.workload == self.workload), None)
        if result is None:
            return None
        mine = _ok(result.summary(self.method))
        other = _ok(result.summary(self.other)) if self.other else None
        if mine is None:
            return None
        if self.kind == "speedup":
            return mine.speedup.get(self.other)
        value = mine.stats.get(self.stat)
        if self.kind == "stat":
            return None if value is None else float(value)
        if other is None or value is None or other.stats.get(self.stat) is None or not value:
            return None
        return float(other.stats[self.stat] or 0.0) / float(value)

    def line(self, report: BenchReport) -> str:
        """``goal: ... measured ... MET | MISSED | not measured``."""
        value = self.measure(report)
        if self.kind == "speedup":
            what = f"{self.method} vs {self.other}"
        elif self.kind == "stat":
            what = f"{self.method} {self.stat}"
        else:
            what = f"{self.stat} {self.other} / {self.method}"
        bound = (f">= {self.at_least:g}" if self.at_least is not None else "") + (
            f" <= {self.at_most:g}" if self.at_most is not None else ""
        )
        if value is None:
            return f"[{self.workload}] {what} (goal {bound.strip()}): not measured"
        ok = (self.at_least is None or value >= self.at_least) and (
            self.at_most is None or value <= self.at_most
        )
        verdict = "MET" if ok else "MISSED"
        return f"[{self.workload}] {what} = {value:.3g} (goal {bound.strip()}): {verdict}"


def _ok(summary: MethodSummary | None) -> MethodSummary | None:
    return summary if summary is not None and summary.error is None else None
