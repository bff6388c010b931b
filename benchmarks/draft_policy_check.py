"""Does the draft policy choose well on this machine's step costs? Self-consistency.

Self-consistency samples (temperature 0.7, seeded) of GSM8K questions through the chat
template, every question's samples one engine group (so consensus drafts exist), all
questions submitted together. Four engines: no drafts (``policy="autoregressive"``), ours
(the adaptive policy with consensus and n-gram drafts), and the same drafters forced to
draft up to ``gamma`` = 2 and 4 (``adaptive_gamma=False``). Where verifying a draft token
costs nearly as much as decoding one (a compute-bound CPU), forced drafting loses; a
policy that chooses well loses little or nothing. Methods alternate order across repeats.

    python benchmarks/draft_policy_check.py                      # 2 questions x 16, 192 tokens
    python benchmarks/draft_policy_check.py --dtype float32 --repeats 3
    python benchmarks/draft_policy_check.py --quick              # a smoke run
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from step_time import cpu_summary  # noqa: E402

CONFIGS: dict[str, dict[str, Any]] = {
    "no drafts": {"policy": "autoregressive", "drafters": ()},
    "ours (adaptive)": {"drafters": ("consensus", "ngram")},
    "forced gamma=2": {"drafters": ("consensus", "ngram"), "adaptive_gamma": False, "gamma": 2},
    "forced gamma=4": {"drafters": ("consensus", "ngram"), "adaptive_gamma": False, "gamma": 4},
}


def run_once(name: str, args: argparse.Namespace, questions: list[str]) -> dict[str, Any]:
    """One engine, every question's samples at once; tokens per second and draft counters."""
    from langchain_seed.engine import Engine, EngineConfig, SamplingParams

    engine = Engine(EngineConfig(dtype=args.dtype, **CONFIGS[name]))
    try:
        template = engine.tokenizer.apply_chat_template
        prompts = [
            template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
            for q in questions
        ]
        engine.generate(["warm up"], SamplingParams(max_tokens=4))
        engine.reset_stats()
        started = time.perf_counter()
        futures = []
        for i, prompt in enumerate(prompts):
            params = [
                SamplingParams(
                    max_tokens=args.max_tokens, temperature=args.temperature, seed=1000 * i + j
                )
                for j in range(args.n)
            ]
            futures += engine.submit_many([prompt] * args.n, params, group=f"q{i}")
        results = [f.result() for f in futures]
        wall = time.perf_counter() - started
        stats = engine.stats()
        return {
            "wall_s": wall,
            "tokens": sum(len(r.token_ids) for r in results),
            "acc_len": stats.spec.mean_accepted_length,
            "drafted": stats.spec.drafted,
            "accepted": stats.spec.accepted,
            "steps": stats.steps,
            "dtype": engine.config.dtype,
        }
    finally:
        engine.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=2)
    parser.add_argument("--n", type=int, default=16, help="samples per question")
    parser.add_argument("--max-tokens", type=int, default=192)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"))
    parser.add_argument("--quick", action="store_true", help="1 question x 4, 16 tokens, once")
    args = parser.parse_args(argv)
    if args.quick:
        args.questions, args.n, args.max_tokens, args.repeats = 1, 4, 16, 1
    import torch
    import transformers

    from langchain_seed.datasets import gsm8k_rows

    questions = [row["question"] for row in gsm8k_rows(count=args.questions)]
    names = list(CONFIGS)
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for repeat in range(args.repeats):
        for name in names if repeat % 2 == 0 else names[::-1]:
            run = run_once(name, args, questions)
            rows[name].append(run)
            print(f"{name}: {run}", flush=True)
    dtype = rows[names[0]][0]["dtype"]
    print(
        f"\n{cpu_summary()}; dtype {dtype}; torch {torch.__version__}, transformers "
        f"{transformers.__version__}; {args.questions} questions x {args.n} samples, "
        f"{args.max_tokens} tokens, temperature {args.temperature}"
    )
    print("| engine | tokens/s per repeat | mean x no drafts | acc len | drafted | accepted |")
    print("|---|---|---:|---:|---:|---:|")
    base = sum(r["tokens"] / r["wall_s"] for r in rows[names[0]]) / args.repeats
    for name in names:
        speeds = [r["tokens"] / r["wall_s"] for r in rows[name]]
        last = rows[name][-1]
        print(
            f"| {name} | {' / '.join(f'{s:.1f}' for s in speeds)} | "
            f"{sum(speeds) / len(speeds) / base:.2f} | {last['acc_len']:.2f} | "
            f"{last['drafted']} | {last['accepted']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
