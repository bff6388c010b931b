"""An LCEL router: puzzles go to Tree-of-Thoughts, word problems to self-consistency.

Both branches run on one shared engine (one ``SeedLLM``; ``ChatSeed`` wraps the same
object), so their calls share the batch, the prefix cache and the weights. The chain
returns the answer with its evidence: the best path of the tree, or the vote counts.

    python cookbook/reasoning_router.py "4 5 6 10" "Tom has 3 bags of 4 apples. He eats 2. Left?"
"""

from __future__ import annotations

import argparse
import re
from typing import Any

from langchain_core.runnables import RunnableBranch, RunnableLambda

from langchain_seed import ChatSeed, SeedLLM, SelfConsistency, TreeOfThoughts

DEFAULT_QUESTIONS = [
    "4 5 6 10",
    "Tom has 3 bags with 4 apples each. He eats 2 apples. How many apples are left?",
]


def is_game24(question: dict[str, Any]) -> bool:
    """Four numbers and nothing else: a Game of 24 puzzle."""
    return re.fullmatch(r"\s*(\d+\s+){3}\d+\s*", question["question"]) is not None


def build_router(llm: SeedLLM, *, quick: bool = True) -> Any:
    """question dict -> {route, answer, evidence}."""
    tot = TreeOfThoughts.from_task(
        "game24",
        llm=llm,
        breadth=2 if quick else 5,
        n_evaluate_sample=1 if quick else 3,
        max_tokens=64 if quick else None,
        temperature=0.0,
    )
    sc = SelfConsistency(llm=ChatSeed(llm=llm), n=4 if quick else 16, max_tokens=160)

    tree_branch = (
        RunnableLambda(lambda q: {"input": q["question"]})
        | tot
        | RunnableLambda(
            lambda r: {
                "route": "tree_of_thoughts",
                "answer": r["answer"],
                "evidence": {
                    "solved": r["solved"],
                    "best_path": [s["thought"].strip() for s in r["best_path"][1:]],
                    "nodes": len(r["tree"]),
                },
            }
        )
    )
    vote_branch = sc | RunnableLambda(
        lambda r: {
            "route": "self_consistency",
            "answer": r["answer"],
            "evidence": {"votes": r["votes"], "confidence": r["confidence"]},
        }
    )
    return RunnableBranch((is_game24, tree_branch), vote_branch)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("questions", nargs="*", default=DEFAULT_QUESTIONS)
    parser.add_argument("--model", default=None, help="default: embedded SmolLM2-135M-Instruct")
    parser.add_argument("--full", action="store_true", help="the papers' sizes (slow on CPU)")
    args = parser.parse_args()
    llm = SeedLLM(model=args.model, drafters=("consensus", "ngram"))  # one engine for both
    router = build_router(llm, quick=not args.full)
    # One batch: the two routes run at once and their calls share the continuous batch.
    outputs = router.batch([{"question": q} for q in args.questions])
    for question, out in zip(args.questions, outputs, strict=True):
        print(f"{question!r} -> [{out['route']}] {out['answer']!r}")
        print("    evidence:", out["evidence"])
    print("engine:", llm.engine.stats().to_dict()["target_forwards"], "target forwards in total")
