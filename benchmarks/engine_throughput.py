"""Issue 3: engine throughput on a plain batch of GSM8K prompts.

32 GSM8K questions through the chat template, 128 new tokens, greedy, embedded model:
``sequential`` (a loop of transformers ``generate``), ``hf_batched`` (static batches of 16,
what ``HuggingFacePipeline(batch_size=16)`` does) and every engine policy, interleaved in
one process. Outputs must equal ``sequential``'s token for token.

    python benchmarks/engine_throughput.py            # full run
    python benchmarks/engine_throughput.py --quick    # 4 prompts x 24 tokens
"""

from __future__ import annotations

import sys

from langchain_seed.bench.script import Goal, common_parser, run_script
from langchain_seed.bench.workloads import BatchWorkload

METHODS = ["sequential", "hf_batched", "seed_fcfs", "batched_ar", "ours"]
GOALS = [
    Goal("batch", "batched_ar", "speedup", at_least=1.0, other="hf_batched"),
    Goal("batch", "ours", "speedup", at_least=1.1, other="hf_batched"),
]


def main(argv: list[str] | None = None) -> int:
    parser = common_parser(__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=None)
    parser.add_argument("--max-tokens", type=int, default=None)
    args = parser.parse_args(argv)
    workload = BatchWorkload(
        prompts=args.prompts or (4 if args.quick else 32),
        max_tokens=args.max_tokens or (24 if args.quick else 128),
        baselines=("sequential", "hf_batched", "batched_ar"),
    )
    report, text = run_script(args, [workload], METHODS)
    print(text)
    print("\n".join(goal.line(report) for goal in GOALS))
    return 1 if any("FAILED" in w or "MISMATCH" in w for w in report.warnings) else 0


if __name__ == "__main__":
    sys.exit(main())
