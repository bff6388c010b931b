"""``langchain-seed bench``: every method side by side on the same workloads, one process.

Examples::

    langchain-seed bench --quick --json bench_out/bench.json --plot bench_out/bench.png
    langchain-seed bench --workloads batch sc --methods sequential hf_batched ours --repeats 3
    langchain-seed bench --sweep --workloads batch
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

from langchain_seed.bench.methods import METHODS
from langchain_seed.bench.workloads import WORKLOADS

QUICK_WORKLOADS = ["batch", "sc", "tot-game24", "tot-gsm8k", "prefix"]


def register(subparsers: Any) -> None:
    """Add the ``bench`` subcommand."""
    parser = subparsers.add_parser(
        "bench",
        help="benchmark every method side by side (table, JSON, PNG)",
        description=(
            "Run the same workloads through transformers baselines and the engine's policies, "
            "interleaved in one process after a warm-up; print medians and speedups."
        ),
    )
    parser.add_argument(
        "--workloads",
        nargs="+",
        default=None,
        metavar="NAME",
        help=f"from {', '.join(WORKLOADS)} (sc runs n = 8 and 16, only n = 8 with --quick; "
        "sc-n32 picks one n). Default: all.",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        default=None,
        choices=METHODS,
        metavar="NAME",
        help=f"from {', '.join(METHODS)}. Default: each workload's own list.",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, under ~10 min on CPU")
    parser.add_argument("--repeats", type=int, default=None, help="timed trials per method")
    parser.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up")
    parser.add_argument("--json", dest="json_path", default=None, help="write results as JSON")
    parser.add_argument("--plot", dest="plot_path", default=None, help="write a PNG chart")
    parser.add_argument("--markdown", dest="md_path", default=None, help="write the table")
    parser.add_argument(
        "--sweep", action="store_true", help="speedup vs concurrent calls and vs gamma"
    )
    parser.add_argument("--model", default=None, help="target model (default: embedded)")
    parser.add_argument("--draft-model", default=None, help="draft model for 'model' drafting")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--dtype", default="float32", choices=("auto", "float32", "bfloat16", "float16")
    )
    parser.add_argument("--gamma", type=int, default=4, help="max draft tokens per step")
    parser.add_argument("--hf-batch-size", type=int, default=16, help="hf_batched batch size")
    parser.add_argument("--max-batch-size", type=int, default=32, help="engine max_batch_size")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and print the Markdown report; returns 1 on a mismatch or failure."""
    from langchain_seed.bench.backends import BenchConfig
    from langchain_seed.bench.report import markdown, write_json, write_plot
    from langchain_seed.bench.suite import BenchOptions, run_benchmark
    from langchain_seed.bench.workloads import WorkloadSizes

    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    workloads = args.workloads or list(QUICK_WORKLOADS)
    sizes = WorkloadSizes.quick() if args.quick else WorkloadSizes()
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    options = BenchOptions(
        workloads=workloads,
        methods=args.methods,
        repeats=repeats,
        warmup=not args.no_warmup,
        quick=args.quick,
        sweep=args.sweep,
        sizes=sizes,
        config=BenchConfig(
            model=args.model,
            draft_model=args.draft_model,
            device=args.device,
            dtype=args.dtype,
            gamma=args.gamma,
            hf_batch_size=args.hf_batch_size,
            max_batch_size=args.max_batch_size,
        ),
        progress=not args.no_progress,
        command="langchain-seed bench " + shlex.join(_argv_after("bench")),
    )
    if args.quick:
        options.concurrency = (1, 2, 4)
        options.gammas = (0, 2, 4)
        options.sweep_prompts = 4
        options.sweep_tokens = 16
    report = run_benchmark(options)
    text = markdown(report)
    print(text)
    if args.md_path:
        from pathlib import Path

        Path(args.md_path).parent.mkdir(parents=True, exist_ok=True)
        Path(args.md_path).write_text(text + "\n")
        print(f"wrote {args.md_path}", file=sys.stderr)
    if args.json_path:
        print(f"wrote {write_json(report, args.json_path)}", file=sys.stderr)
    if args.plot_path:
        print(f"wrote {write_plot(report, args.plot_path)}", file=sys.stderr)
    for warning in report.warnings:
        print(f"WARNING: {warning}", file=sys.stderr)
    return 1 if _failed(report) else 0


def _failed(report: Any) -> bool:
    """A method failed, or an engine method's outputs differ from the reference.

    A baseline's own mismatch (left padding can flip a float32 argmax in ``hf_batched``)
    is printed loudly but does not fail the command; the engine promises losslessness.
    """
    for result in report.workloads:
        for s in result.methods:
            if s.error is not None:
                return True
            if s.outputs_equal is False and s.info.get("kind") == "engine":
                return True
    return False


def _argv_after(name: str) -> list[str]:
    argv = sys.argv[1:]
    return argv[argv.index(name) + 1 :] if name in argv else argv
