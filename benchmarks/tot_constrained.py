"""ToT Game of 24 with and without constrained evaluations: malformed-evaluation rate.

``TreeOfThoughts.from_task("game24", llm=SeedLLM(temperature=0))`` on the puzzles given,
once with the task's free-text evaluations and once with ``constrain_evaluations=True``
(up to two short lines, then sure / likely / impossible). Prints, per puzzle and setting,
the evaluation prompts, the states whose evaluation did not parse, and the wall time.

    python benchmarks/tot_constrained.py --puzzles "4 5 6 10" "1 1 4 6"
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--puzzles", nargs="+", default=["4 5 6 10"])
    parser.add_argument("--json", default=None, help="write the rows here")
    args = parser.parse_args()

    from langchain_seed import SeedLLM
    from langchain_seed.tree_of_thoughts import TreeOfThoughts

    llm = SeedLLM(temperature=0)
    rows = []
    for puzzle in args.puzzles:
        for constrained in (False, True):
            tot = TreeOfThoughts.from_task("game24", llm=llm, constrain_evaluations=constrained)
            t0 = time.perf_counter()
            result = tot.invoke({"input": puzzle})
            stats = result["stats"]
            row = {
                "puzzle": puzzle,
                "constrained": constrained,
                "evaluation_prompts": stats["evaluation_prompts"],
                "evaluated_states": stats["evaluation_prompts"] + stats["value_cache_hits"],
                "malformed_evaluations": stats["malformed_evaluations"],
                "solved": result["solved"],
                "seconds": round(time.perf_counter() - t0, 1),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    for constrained in (False, True):
        mine = [r for r in rows if r["constrained"] == constrained]
        bad = sum(r["malformed_evaluations"] for r in mine)
        total = sum(r["evaluated_states"] for r in mine)
        print(f"constrained={constrained}: {bad} of {total} evaluated states unparseable")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
