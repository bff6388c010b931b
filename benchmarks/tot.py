"""Issue 7: Tree-of-Thoughts searches (Game of 24 and GSM8K) through every method.

5 Game of 24 puzzles and 5 GSM8K problems from ../shared/data, temperature 0, embedded
model: ``sequential`` (one call at a time), ``hf_batched`` (each phase's calls as static
batches), ``seed_fcfs`` (SEED as published), ``batched_ar`` and ``ours``. Reports wall-time
ratios, calls, prompt and generated tokens, prefix-cache hit rate, mean accepted length,
peak RSS and whether every tree equals the sequential one.

    python benchmarks/tot.py              # full run (task defaults: b = 5, 4 steps for game24)
    python benchmarks/tot.py --quick      # 1 input per task, beam 1, one level
"""

from __future__ import annotations

import sys

from langchain_seed.bench.script import Goal, common_parser, run_script
from langchain_seed.bench.workloads import TreeOfThoughtsWorkload, WorkloadSizes

METHODS = ["sequential", "hf_batched", "seed_fcfs", "batched_ar", "ours"]
GOALS = [
    Goal(w, "ours", "speedup", at_least=x, other=b)
    for w in ("tot-game24", "tot-gsm8k")
    for b, x in (
        ("sequential", 10.0),
        ("hf_batched", 2.0),
        ("seed_fcfs", 2.0),
        ("batched_ar", 1.15),
    )
]


def main(argv: list[str] | None = None) -> int:
    parser = common_parser(__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=None, help="puzzles / problems per task")
    parser.add_argument("--tasks", nargs="+", default=["game24", "gsm8k"])
    args = parser.parse_args(argv)
    overrides = WorkloadSizes.quick().tot_overrides if args.quick else {}
    workloads = [
        TreeOfThoughtsWorkload(
            task=task,
            inputs=args.inputs or (1 if args.quick else 5),
            overrides=dict(overrides),
            baselines=("sequential", "hf_batched", "seed_fcfs", "batched_ar"),
        )
        for task in args.tasks
    ]
    report, text = run_script(args, workloads, METHODS)
    print(text)
    print("\n".join(goal.line(report) for goal in GOALS))
    return 1 if any("FAILED" in w or "MISMATCH" in w for w in report.warnings) else 0


if __name__ == "__main__":
    sys.exit(main())
