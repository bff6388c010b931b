"""Time from a fresh process to its first answer: the kernel build cold, then cached.

Each measurement is a new Python process that imports the package, builds a ``SeedLLM`` on
the embedded model and invokes it once (16 greedy tokens); the time counts from before the
import to the answer. ``cold``: a cache folder with the converted model but no built kernels
(the first run on a machine: the own execution path's C++ kernels compile, then the
load-time self-check); ``cached``: the same folder again (the kernels load in milliseconds).
``--from-scratch`` also leaves out the converted model (the GGUF conversion is then part of
the cold run). The user's cache is never touched: the runs use a temporary folder.

    python benchmarks/first_request.py
    python benchmarks/first_request.py --dtype float32 --cached-runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, sys, time
start = time.perf_counter()
from langchain_seed import SeedLLM
llm = SeedLLM(max_tokens=16, temperature=0, dtype=sys.argv[1])
text = llm.invoke("Question: what is 12 + 30? Answer:")
seconds = time.perf_counter() - start
engine = llm.engine
runner = engine.runner
row = {"seconds": round(seconds, 2), "text": text, "path": runner.execution}
print(json.dumps({**row, "dtype": str(runner.dtype)}))
"""


def run_child(cache: Path, dtype: str) -> dict[str, object]:
    """One fresh process against ``cache``; its JSON line."""
    env = {**os.environ, "SEED_CACHE_DIR": str(cache)}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, dtype], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"child failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def seed_cache(source: Path, target: Path, with_model: bool) -> None:
    """Link the converted models of ``source`` into ``target``, never its kernels."""
    target.mkdir(parents=True, exist_ok=True)
    if not with_model or not source.is_dir():
        return
    for entry in source.iterdir():
        if entry.name != "kernels" and not entry.name.endswith(".lock"):
            (target / entry.name).symlink_to(entry)


def main() -> None:
    """Print a table of cold and cached first-request times."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--cached-runs", type=int, default=2)
    parser.add_argument("--from-scratch", action="store_true")
    args = parser.parse_args()

    import torch

    from langchain_seed.engine.execution.loading import cache_dir

    print(f"python {platform.python_version()}, torch {torch.__version__}, dtype {args.dtype}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="seed-first-request-") as tmp:
        cache = Path(tmp) / "cache"
        if not args.from_scratch:
            run_child(cache_dir(), args.dtype)  # the user's cache holds a converted model
        seed_cache(cache_dir(), cache, with_model=not args.from_scratch)
        rows.append(("cold", run_child(cache, args.dtype)))
        for i in range(args.cached_runs):
            rows.append((f"cached {i + 1}", run_child(cache, args.dtype)))
    print("\n| run | seconds to the first answer |\n|---|---:|")
    for name, row in rows:
        print(f"| {name} | {row['seconds']} |")
    print(f"\nexecution path: {rows[-1][1]['path']}, dtype {rows[-1][1]['dtype']}")


if __name__ == "__main__":
    main()
