"""ToT with the configuration a user gets: ``TreeOfThoughts.from_task(task, llm=SeedLLM(...))``.

``ours`` is the default ``SeedLLM(temperature=0)`` (batched policy, its default drafters),
``batched_ar`` the same engine with ``policy="autoregressive", drafters=()``. One engine is
alive at a time (on this CPU a second idle engine thread slows the first by ~40%: each
thread that runs torch gets its own OpenMP team), methods alternate order across repeats,
and ``--load`` runs a competing process (busy half of the time on one core) for the whole
run, to check that speculation does not lose on a loaded machine.

    python benchmarks/tot_default.py --task game24 --input "4 5 6 10" --repeats 2
    python benchmarks/tot_default.py --task game24 --load
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any

COMPETITOR = """
import time
while True:
    t = time.perf_counter()
    while time.perf_counter() - t < 0.01:
        pass
    time.sleep(0.01)
"""

METHODS: dict[str, dict[str, Any]] = {
    "batched_ar": {"policy": "autoregressive", "drafters": ()},
    "ours": {},
}


def run_once(
    task: str, puzzle: str, method: str, dtype: str, pipeline: bool = False
) -> dict[str, Any]:
    """One search with a fresh engine; returns its wall time, counters and tree."""
    from langchain_seed import SeedLLM
    from langchain_seed.tree_of_thoughts import TreeOfThoughts

    llm = SeedLLM(temperature=0, dtype=dtype, **METHODS[method])
    tot = TreeOfThoughts.from_task(task, llm=llm, pipeline=pipeline)
    engine = llm.engine
    engine.reset_stats()
    t0 = time.perf_counter()
    result = tot.invoke({"input": puzzle})
    wall = time.perf_counter() - t0
    stats = engine.stats()
    engine.close()
    return {
        "method": method,
        "wall_s": round(wall, 2),
        "steps": stats.steps,
        "generated": stats.spec.generated_tokens,
        "acc_len": round(stats.spec.mean_accepted_length, 3),
        "drafted": stats.spec.drafted,
        "accepted": stats.spec.accepted,
        "phase_s": result["stats"]["seconds"],
        "tree": json.dumps(result["tree"], sort_keys=True, default=str),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="game24", choices=("game24", "gsm8k"))
    parser.add_argument("--input", default=None, help="puzzle / question (default: task's)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--dtype", default="float32", choices=("auto", "float32", "bfloat16"))
    parser.add_argument("--load", action="store_true", help="run a competing busy process")
    parser.add_argument(
        "--pipeline",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="TreeOfThoughts(pipeline=...) for both methods (default: off, as measured before)",
    )
    parser.add_argument("--json", dest="json_path", default=None)
    args = parser.parse_args(argv)
    puzzle = args.input
    if puzzle is None:
        puzzle = "4 5 6 10" if args.task == "game24" else _first_gsm8k_question()
    competitor = subprocess.Popen([sys.executable, "-c", COMPETITOR]) if args.load else None
    rows: list[dict[str, Any]] = []
    try:
        for repeat in range(args.repeats):
            order = list(METHODS) if repeat % 2 == 0 else list(reversed(METHODS))
            for method in order:
                row = run_once(args.task, puzzle, method, args.dtype, args.pipeline)
                row["repeat"] = repeat
                rows.append(row)
                print({k: v for k, v in row.items() if k != "tree"}, flush=True)
    finally:
        if competitor is not None:
            competitor.kill()
    print(f"\n{args.task} {puzzle!r}, dtype {args.dtype}, load: {'yes' if args.load else 'no'}")
    print("| repeat | batched_ar s | ours s | x batched_ar | ours acc len | same tree |")
    print("|---:|---:|---:|---:|---:|---|")
    for repeat in range(args.repeats):
        pair = {r["method"]: r for r in rows if r["repeat"] == repeat}
        ar, ours = pair["batched_ar"], pair["ours"]
        print(
            f"| {repeat} | {ar['wall_s']:.1f} | {ours['wall_s']:.1f} | "
            f"{ar['wall_s'] / ours['wall_s']:.2f} | {ours['acc_len']:.2f} | "
            f"{'yes' if ar['tree'] == ours['tree'] else 'no'} |"
        )
    if args.json_path:
        with open(args.json_path, "w", encoding="utf-8") as fh:
            json.dump({"task": args.task, "input": puzzle, "load": args.load, "rows": rows}, fh)
    return 0


def _first_gsm8k_question() -> str:
    from langchain_seed.tree_of_thoughts.tasks.gsm8k import GSM8KTask

    return str(GSM8KTask().load_example(0)["input"])


if __name__ == "__main__":
    sys.exit(main())
