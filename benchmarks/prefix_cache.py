"""Issue 5: prefix cache on one ToT level of Game of 24 value prompts.

40 value prompts of one Game of 24 level (the same few-shot header, different states),
submitted together as Tree-of-Thoughts does, embedded model, greedy: the engine's batched
policy with the prefix cache off (``ours_nocache``) and on (``ours``), in one run. Reports
prefill time, total time, the share of prompt tokens served from the cache, and whether
outputs are identical.

    python benchmarks/prefix_cache.py            # 40 prompts, 48 new tokens
    python benchmarks/prefix_cache.py --quick    # 8 prompts, 8 new tokens
"""

from __future__ import annotations

import sys

from langchain_seed.bench.script import Goal, common_parser, run_script
from langchain_seed.bench.workloads import PrefixWorkload

METHODS = ["ours_nocache", "ours"]
GOALS = [
    Goal("prefix", "ours", "stat", at_least=0.9, stat="prefix_hit_rate"),
    Goal(
        "prefix", "ours", "stat_ratio", at_least=5.0, other="ours_nocache", stat="prefill_seconds"
    ),
]


def main(argv: list[str] | None = None) -> int:
    parser = common_parser(__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=None)
    parser.add_argument("--max-tokens", type=int, default=None)
    args = parser.parse_args(argv)
    workload = PrefixWorkload(
        prompts=args.prompts or (8 if args.quick else 40),
        max_tokens=args.max_tokens or (8 if args.quick else 48),
    )
    report, text = run_script(args, [workload], METHODS)
    print(text)
    print("\n".join(goal.line(report) for goal in GOALS))
    return 1 if any("FAILED" in w or "MISMATCH" in w for w in report.warnings) else 0


if __name__ == "__main__":
    sys.exit(main())
