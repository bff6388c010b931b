"""Self-consistency on GSM8K with the embedded model: N samples per question, majority vote.

Run from the project root (CPU, a few minutes for the defaults)::

    python cookbook/self_consistency_gsm8k.py --questions 3 -n 8
    python cookbook/self_consistency_gsm8k.py --questions 5 -n 16 --early-stop

What it shows:

1. ``SelfConsistency`` over ``ChatSeed``: the n samples of a question go to the engine as
   one group (prompt prefilled once, consensus drafting across the samples), all questions
   of a ``batch`` in one engine submission.
2. Progress from ``astream_events`` (custom ``self_consistency_progress`` events).
3. Accuracy against the gold answers and the speculative-decoding stats.

Data: ``$SEED_DATA_DIR`` or ``../shared/data`` next to the project root.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from langchain_core.prompts import ChatPromptTemplate

from langchain_seed import ChatSeed, SelfConsistency
from langchain_seed.datasets import gsm8k_gold, gsm8k_rows
from langchain_seed.self_consistency import PROGRESS_EVENT, gsm8k_answer

PROMPT = ChatPromptTemplate.from_messages(
    [
        ("system", "You are a careful math tutor. Solve the problem step by step."),
        (
            "human",
            '{question}\nThink step by step. End with "The answer is N." where N is a number.',
        ),
    ]
)


def load_gsm8k(count: int) -> list[dict]:
    """The first ``count`` GSM8K test problems with their normalised gold answers."""
    try:
        rows = gsm8k_rows(count)
    except FileNotFoundError as exc:
        raise SystemExit(str(exc)) from exc
    return [{"question": r["question"], "gold": gsm8k_gold(r["answer"])} for r in rows]


async def watch_one(sc: SelfConsistency, question: str) -> dict:
    """Answer one question while printing the running vote after every round."""
    result = None
    async for event in sc.astream_events({"question": question}, version="v2"):
        if event["event"] == "on_custom_event" and event["name"] == PROGRESS_EVENT:
            data = event["data"]
            print(
                f"  drawn {data['drawn']}/{data['n']}: "
                f"leader {data['leader']} votes {data['votes']}"
            )
        elif event["event"] == "on_chain_end" and event["name"] == "SelfConsistency":
            result = event["data"]["output"]
    assert result is not None
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=3)
    parser.add_argument("-n", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--early-stop", action="store_true")
    args = parser.parse_args()

    problems = load_gsm8k(args.questions)
    chat = ChatSeed(drafters=("consensus", "ngram"))  # embedded SmolLM2-135M-Instruct
    sc = SelfConsistency(
        llm=chat,
        prompt=PROMPT,
        n=args.n,
        temperature=args.temperature,
        max_tokens=args.max_tokens,
        parser=gsm8k_answer,
        early_stop=args.early_stop,
        seed=0,
    )

    print("1) one question, with live progress:")
    first = asyncio.run(watch_one(sc, problems[0]["question"]))
    print(
        f"  answer {first['answer']} (gold {problems[0]['gold']}), "
        f"confidence {first['confidence']:.2f}"
    )

    print(f"\n2) all {len(problems)} questions in one batch (one engine submission per round):")
    chat.engine.reset_stats()
    start = time.perf_counter()
    outs = sc.batch([{"question": p["question"]} for p in problems])
    wall = time.perf_counter() - start
    correct = 0
    for problem, out in zip(problems, outs, strict=True):
        ok = out["answer"] == problem["gold"]
        correct += ok
        print(
            f"  {'OK ' if ok else 'BAD'} answer {out['answer']!s:>8} "
            f"gold {problem['gold']!s:>8} votes {out['votes']}"
        )
    spec = chat.engine.stats().spec
    tokens = sum(o["stats"].get("generated_tokens", 0) for o in outs)
    print(
        f"\naccuracy {correct}/{len(problems)} | {tokens} tokens in {wall:.1f} s "
        f"({tokens / wall:.1f} tokens/s) | mean accepted length {spec.mean_accepted_length:.2f} | "
        f"accepted by drafter {spec.accepted_by_drafter}"
    )


if __name__ == "__main__":
    main()
