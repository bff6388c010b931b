"""Issue 6: self-consistency on GSM8K with consensus drafting across the samples.

20 GSM8K questions, n = 16, temperature 0.7, max 192 new tokens, embedded model:
``sequential``, ``hf_batched`` (``num_return_sequences=16``, ``do_sample=True``),
``batched_ar`` and ``ours`` (batched + consensus + ngram), all through the
``SelfConsistency`` runnable. Reports wall-time ratios, mean accepted length, drafter
share of step time and accuracy of each method.

    python benchmarks/self_consistency.py              # full run
    python benchmarks/self_consistency.py --n 16 32    # also the n = 32 drafter-share check
    python benchmarks/self_consistency.py --quick      # 1 question, n = 8, 24 tokens
"""

from __future__ import annotations

import sys

from langchain_seed.bench.script import Goal, common_parser, run_script
from langchain_seed.bench.workloads import SelfConsistencyWorkload

METHODS = ["sequential", "hf_batched", "batched_ar", "ours"]


def goals(ns: list[int]) -> list[Goal]:
    out = []
    for n in ns:
        w = f"sc-n{n}"
        out += [
            Goal(w, "ours", "speedup", at_least=8.0, other="sequential"),
            Goal(w, "ours", "speedup", at_least=1.3, other="hf_batched"),
            Goal(w, "ours", "speedup", at_least=1.3, other="batched_ar"),
            Goal(w, "ours", "stat", at_least=1.8, stat="mean_accepted_length"),
        ]
        if n >= 32:
            out.append(Goal(w, "ours", "stat", at_most=0.1, stat="drafter_share"))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = common_parser(__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=None)
    parser.add_argument("--n", type=int, nargs="+", default=None, help="samples per question")
    parser.add_argument("--max-tokens", type=int, default=None)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    ns = args.n or ([8] if args.quick else [16])
    workloads = [
        SelfConsistencyWorkload(
            questions=args.questions or (1 if args.quick else 20),
            n=n,
            max_tokens=args.max_tokens or (24 if args.quick else 192),
            temperature=args.temperature,
            seed=args.seed,
            baselines=("sequential", "hf_batched", "batched_ar"),
        )
        for n in ns
    ]
    report, text = run_script(args, workloads, METHODS)
    print(text)
    print("\n".join(goal.line(report) for goal in goals(ns)))
    return 1 if any("FAILED" in w for w in report.warnings) else 0


if __name__ == "__main__":
    sys.exit(main())
