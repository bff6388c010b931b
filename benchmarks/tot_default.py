"""ToT with the configuration a user gets: ``TreeOfThoughts.from_task(task, llm=SeedLLM(...))``.

``ours`` is the default ``SeedLLM(temperature=0)`` (batched policy, its default drafters),
``batched_ar`` the same engine with ``policy="autoregressive", drafters=()``, and
``sequential`` (with ``--methods``) the same search over plain transformers ``generate``,
one call at a time (what ``HuggingFacePipeline`` and a sequential ToT do), under the same
token budgets; ``ours_prefill_apart`` is ours with ``step_prefill_tokens=0`` (every prompt
prefilled in a forward of its own, no unified step). One engine is alive at a time (on this
CPU a second idle engine thread slows the first by ~40%: each thread that runs torch gets
its own OpenMP team), methods alternate order across repeats, and ``--load`` runs a
competing process (busy half of the time on one core) for the whole run, to check that
speculation does not lose on a loaded machine. Searches are pipelined (the runnable's
default) unless ``--no-pipeline``.

    python benchmarks/tot_default.py --task game24 --input "4 5 6 10" --repeats 2
    python benchmarks/tot_default.py --task game24 --load
    python benchmarks/tot_default.py --task game24 --methods batched_ar ours sequential
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
    # ours with every prompt prefilled in a forward of its own (no unified step)
    "ours_prefill_apart": {"engine": {"step_prefill_tokens": 0}},
    "vllm": {"backend": "vllm"},  # SeedLLM(backend="vllm"): run in .venv-vllm
    "sequential": {},  # transformers generate, one call at a time (not an engine)
}


def run_once(
    task: str, puzzle: str, method: str, dtype: str, pipeline: bool = False
) -> dict[str, Any]:
    """One search with a fresh engine; returns its wall time, counters and tree."""
    from langchain_seed import SeedLLM
    from langchain_seed.tree_of_thoughts import TreeOfThoughts

    if method == "sequential":
        return _run_sequential(task, puzzle, dtype, pipeline)
    spec = dict(METHODS[method])
    fields = spec.pop("engine", None)
    if fields is not None:  # an engine configured beyond SeedLLM's fields
        from langchain_seed.engine import Engine

        llm = SeedLLM(temperature=0, engine=Engine(dtype=dtype, **fields), **spec)
    else:
        llm = SeedLLM(temperature=0, dtype=dtype, **spec)
    tot = TreeOfThoughts.from_task(task, llm=llm, pipeline=pipeline)
    engine = llm.engine
    if method == "vllm":  # the engine starts (and compiles) before the clock runs
        engine.generate(["warm up"], llm_params(max_tokens=4))
    engine.reset_stats()
    result, wall = _timed(tot, puzzle)
    stats = engine.stats()
    engine.close()
    return {
        "method": method,
        "wall_s": wall,
        "steps": stats.steps,
        "generated": stats.spec.generated_tokens,
        "acc_len": round(stats.spec.mean_accepted_length, 3),
        "drafted": stats.spec.drafted,
        "accepted": stats.spec.accepted,
        "coalesced": stats.requests_coalesced,
        "phase_s": result["stats"]["seconds"],
        "tree": _tree(result["tree"]),
    }


def llm_params(**kwargs: Any) -> Any:
    from langchain_seed.engine import SamplingParams

    return SamplingParams(**kwargs)


def _run_sequential(task: str, puzzle: str, dtype: str, pipeline: bool) -> dict[str, Any]:
    """The same search over transformers ``generate``, one call at a time."""
    from langchain_seed.bench.backends import BenchConfig
    from langchain_seed.bench.hf import HFBackend
    from langchain_seed.bench.workloads.tree_of_thoughts import budgeted_task
    from langchain_seed.engine import SamplingParams
    from langchain_seed.tree_of_thoughts import TreeOfThoughts
    from langchain_seed.tree_of_thoughts.tasks import get_task

    backend = HFBackend(BenchConfig(dtype=dtype), "sequential")
    recorded, budget = budgeted_task(get_task(task), None)
    llm = backend.llm(SamplingParams(temperature=0.0), budget=budget)
    tot = TreeOfThoughts(llm=llm, task=recorded, temperature=0.0, pipeline=pipeline)
    result, wall = _timed(tot, puzzle)
    stats = backend.stats()
    backend.close()
    return {
        "method": "sequential",
        "wall_s": wall,
        "calls": stats.get("calls"),
        "generated": stats.get("generated_tokens"),
        "phase_s": result["stats"]["seconds"],
        "tree": _tree(result["tree"]),
    }


def _timed(tot: Any, puzzle: str) -> tuple[dict[str, Any], float]:
    """One search and its wall seconds."""
    t0 = time.perf_counter()
    result = tot.invoke({"input": puzzle})
    return result, round(time.perf_counter() - t0, 2)


def _tree(tree: Any) -> str:
    """A search tree as canonical JSON of what lossless methods must agree on."""
    from langchain_seed.bench.workloads.tree_of_thoughts import tree_signature

    return tree_signature(tree)


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
        default=True,
        help="TreeOfThoughts(pipeline=...) for every method (default: on, the runnable's default)",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        default=["batched_ar", "ours"],
        choices=list(METHODS),
        help="methods to run (default: batched_ar ours; sequential takes minutes)",
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
            order = list(args.methods) if repeat % 2 == 0 else list(reversed(args.methods))
            for method in order:
                row = run_once(args.task, puzzle, method, args.dtype, args.pipeline)
                row["repeat"] = repeat
                rows.append(row)
                print({k: v for k, v in row.items() if k != "tree"}, flush=True)
    finally:
        if competitor is not None:
            competitor.kill()
    print(f"\n{args.task} {puzzle!r}, dtype {args.dtype}, load: {'yes' if args.load else 'no'}")
    others = [m for m in args.methods if m != "ours"]
    head = " | ".join(f"{m} s" for m in args.methods)
    ratios = " | ".join(f"ours x {m}" for m in others)
    print(f"| repeat | {head} | {ratios} | ours acc len | same tree (our engine's methods) |")
    print("|---:|" + "---:|" * (len(args.methods) + len(others) + 1) + "---|")
    for repeat in range(args.repeats):
        pair = {r["method"]: r for r in rows if r["repeat"] == repeat}
        walls = " | ".join(f"{pair[m]['wall_s']:.1f}" for m in args.methods)
        ours = pair.get("ours")
        speedups = " | ".join(
            f"{pair[m]['wall_s'] / ours['wall_s']:.2f}" if ours else "-" for m in others
        )
        # vLLM's kernels round differently: only our engine's methods (and sequential in
        # float32) must build the same tree
        same = len({r["tree"] for m, r in pair.items() if m != "vllm"}) == 1
        acc = f"{ours['acc_len']:.2f}" if ours else "-"
        print(f"| {repeat} | {walls} | {speedups} | {acc} | {'yes' if same else 'no'} |")
    if args.json_path:
        with open(args.json_path, "w", encoding="utf-8") as fh:
            json.dump({"task": args.task, "input": puzzle, "load": args.load, "rows": rows}, fh)
    return 0


def _first_gsm8k_question() -> str:
    from langchain_seed.tree_of_thoughts.tasks.gsm8k import GSM8KTask

    return str(GSM8KTask().load_example(0)["input"])


if __name__ == "__main__":
    sys.exit(main())
