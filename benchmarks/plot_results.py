"""Draw one speedup chart from the JSON files of several benchmark runs.

Each benchmark script writes ``--json``; this reads any number of them and draws, per
workload, each method's speedup over the workload's reference (``sequential``, or
``ours_nocache`` for the prefix workload), as the README's chart.

    python benchmarks/plot_results.py bench_out/throughput.json bench_out/sc.json \\
        bench_out/tot.json bench_out/prefix.json --out docs/benchmarks.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def reference(workload: dict[str, Any]) -> str | None:
    """The method the workload's speedups are read against."""
    names = [m["method"] for m in workload["methods"] if m.get("error") is None]
    for name in ("sequential", "ours_nocache"):
        if name in names:
            return name
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json_files", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("bench_out/results.png"))
    args = parser.parse_args(argv)
    workloads = [w for f in args.json_files for w in json.loads(f.read_text())["workloads"]]
    if not workloads:
        print("no workloads in the given files", file=sys.stderr)
        return 2

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from langchain_seed.bench.report import speedup_bars

    methods: list[str] = []
    for w in workloads:
        methods += [m["method"] for m in w["methods"] if m["method"] not in methods]
    fig, ax = plt.subplots(figsize=(2.2 * len(workloads) + 3, 4.5))
    series = {}
    for method in methods:
        values = []
        for w in workloads:
            base = reference(w)
            row = next((m for m in w["methods"] if m["method"] == method), None)
            ok = row is not None and row.get("error") is None and base is not None
            values.append(row["speedup"].get(base, 0.0) if ok else 0.0)  # type: ignore[index]
        series[method] = values
    labels = [f"{w['workload']}\n(vs {reference(w)})" for w in workloads]
    title = "langchain-seed: speedup per workload (one run each, same prompts)"
    speedup_bars(ax, labels, series, title)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
