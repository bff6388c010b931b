"""Engine step time by (rows, positions, context) against the memory floor and vLLM's step.

For each dtype and each shape (``b`` rows, ``q`` positions a row, ``--context`` cached
tokens) it times the median :meth:`Engine.step` of ``b`` running requests that each feed
``q`` tokens a step (one pending token and ``q - 1`` drafts from a fixed drafter), through
the public API, steps that admitted requests left out, on:

- ``own``: the engine's own execution path (``execution="auto"``), batch invariant;
- ``own_fast`` (with ``--executions own,own_fast``): the own path with
  ``deterministic=False``, where linear layers may take library kernels that measured
  faster: ``own / own_fast`` is the cost of determinism;
- ``transformers``: the same engine on the transformers forward (``execution="transformers"``);
- ``vllm`` (``--vllm``, ``q = 1`` only): vLLM's decode step on the same shapes in a
  subprocess of ``.venv-vllm`` (one engine alive at a time), through the ``backend="vllm"``
  engine (its CPU defaults): ``(t(N tokens) - t(1 token)) / (N - 1)`` of one ``generate``
  of ``b`` prompts at temperature 0, ``ignore_eos``.

The floor is what a step must read, (weight bytes + the KV bytes its rows attend to) /
the memory read bandwidth measured in the same run (the best of five sums over 1 GiB).
Every table names the CPU flags, dtype, torch and transformers versions.

    python benchmarks/step_time.py                       # b 1,4,16, q 1,5, both dtypes
    python benchmarks/step_time.py --vllm --positions 1  # + vLLM's step (needs .venv-vllm)
    python benchmarks/step_time.py --quick
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"


def cpu_summary() -> str:
    """CPU model and the flags that decide kernels (avx2, avx512f, avx512_bf16, amx)."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"model name\s*:\s*(.*)", text)
    flags = set(re.search(r"flags\s*:\s*(.*)", text).group(1).split()) if "flags" in text else set()
    wanted = ["avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"]
    shown = " ".join(f for f in wanted if f in flags) or "none of " + ",".join(wanted)
    cores = len(re.findall(r"^processor", text, re.M))
    return f"{model.group(1).strip() if model else platform.processor()}, {cores} cores, {shown}"


def bandwidth_gbs(device: str = "cpu") -> float:
    """Memory read bandwidth: the best of five ``sum`` over 1 GiB of fp32, in GB/s."""
    import torch

    x = torch.ones(256 * 1024 * 1024, device=device)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        x.sum().item()  # .item() waits for the device
        best = min(best, time.perf_counter() - t0)
    return x.numel() * 4 / best / 1e9


class FixedDrafter:
    """Drafts ``q - 1`` copies of the pending token for every row: ``q`` positions a step."""

    name = "fixed"

    def __init__(self, length: int) -> None:
        self.length = length

    def propose(self, sequences: Any, max_lens: Any) -> list[Any]:
        from langchain_seed.engine.speculation.drafters.base import Draft

        return [Draft([s.last_token] * min(self.length, g), None, self.name)
                for s, g in zip(sequences, max_lens)]  # fmt: skip

    def release(self, seq: Any) -> None:
        """Nothing kept per sequence."""


def engine_step_ms(dtype: str, execution: str, b: int, q: int, context: int, steps: int,
                   model: str | None, device: str = "cpu",
                   deterministic: bool | None = None) -> tuple[float, int, str]:  # fmt: skip
    """Median step of ``b`` rows feeding ``q`` tokens over ``context`` cached tokens."""
    import torch

    from langchain_seed.engine import Engine, EngineConfig, SamplingParams

    config = EngineConfig(
        model=model,
        policy="batched" if q > 1 else "autoregressive",
        drafters=(),
        gamma=max(q - 1, 0),
        adaptive_gamma=False,
        dtype=dtype,
        device=device,
        execution=execution,
        deterministic=deterministic,
        max_batch_size=b,
        max_cache_tokens=b * (context + 2 * steps * q + 64),
        prefix_cache_tokens=0,
    )
    extra = [FixedDrafter(q - 1)] if q > 1 else []
    gen = torch.Generator().manual_seed(b * 100 + q)
    with Engine(config, extra_drafters=extra) as engine:
        vocab = engine.vocab_size
        prompts = [
            torch.randint(3, vocab, (context + 1,), generator=gen).tolist() for _ in range(b)
        ]
        times: list[float] = []
        step = engine.step

        def timed() -> None:
            admitting = bool(engine.scheduler.waiting)
            t0 = time.perf_counter()
            step()  # ends with the step's one device-to-host copy
            if not admitting and len(engine.scheduler.running) == b:
                times.append(time.perf_counter() - t0)

        engine.step = timed  # type: ignore[method-assign]
        try:
            engine.generate(prompts, SamplingParams(max_tokens=steps * q + 4, ignore_eos=True))
        finally:
            engine.step = step  # type: ignore[method-assign]
        weights = sum(p.numel() * p.element_size() for p in engine.target.model.parameters())
        path = engine.runner.execution
    skip = min(2, len(times) // 4)
    return 1000 * statistics.median(times[skip:]), weights, path


VLLM_SCRIPT = r"""
import json, random, sys, time
from langchain_seed.backends.vllm import VLLMEngine
from langchain_seed.engine import SamplingParams
spec = json.loads(sys.argv[1])
engine = VLLMEngine(spec["model"], dtype=spec["dtype"],
                    backend_kwargs={"max_num_seqs": max(spec["batches"])})
random.seed(0)
out = {}
for b in spec["batches"]:
    prompts = [[random.randrange(3, 40000) for _ in range(spec["context"] + 1)] for _ in range(b)]
    def run(n):
        t = time.perf_counter()
        engine.generate(prompts, SamplingParams(max_tokens=n, ignore_eos=True))
        return time.perf_counter() - t
    run(2)
    n = spec["steps"]
    short = min(run(1) for _ in range(2))
    long = min(run(n) for _ in range(2))
    out[b] = 1000 * (long - short) / (n - 1)
engine.close()
print("RESULT " + json.dumps(out))
"""


def vllm_step_ms(model_dir: str, dtype: str, batches: list[int], context: int,
                 steps: int) -> dict[int, float]:  # fmt: skip
    """vLLM's decode step per batch size (a subprocess of ``.venv-vllm``)."""
    spec = {"model": model_dir, "dtype": dtype, "batches": batches, "context": context,
            "steps": steps}  # fmt: skip
    done = subprocess.run(
        [str(VLLM_PYTHON), "-c", VLLM_SCRIPT, json.dumps(spec)],
        capture_output=True, text=True, timeout=3600,
    )  # fmt: skip
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return {int(k): v for k, v in json.loads(line[7:]).items()}
    raise RuntimeError(f"vLLM step run failed: {done.stderr[-3000:]}")


def main() -> None:
    """Run every shape in both dtypes; print a markdown table and one JSON line per row."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="target model (default: embedded)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batches", default="1,4,16")
    parser.add_argument("--positions", default="1,5")
    parser.add_argument("--context", type=int, default=570)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--dtypes", default="bfloat16,float32")
    parser.add_argument(
        "--executions", default="own,transformers", help="of own, own_fast, transformers"
    )
    parser.add_argument("--vllm", action="store_true", help="also vLLM's step (q = 1)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", default=None, help="write the rows here")
    args = parser.parse_args()
    if args.quick:
        args.batches, args.positions, args.steps, args.context = "1,4", "1,3", 8, 128

    import torch
    import transformers

    from langchain_seed.engine.execution.loading import model_source

    batches = [int(b) for b in args.batches.split(",")]
    positions = [int(q) for q in args.positions.split(",")]
    from langchain_seed.engine.serving import compute

    # On the compute thread: a second OpenMP team (this thread's) would slow every step.
    gbs = compute.run(lambda: bandwidth_gbs(args.device))
    print(f"CPU: {cpu_summary()}")
    if args.device.startswith("cuda"):
        print(f"GPU: {torch.cuda.get_device_name(args.device)}")
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
          f"read bandwidth {gbs:.1f} GB/s, context {args.context}")  # fmt: skip
    from transformers import AutoConfig

    config: Any = AutoConfig.from_pretrained(model_source(args.model).location)
    rows: list[dict[str, Any]] = []
    for dtype in args.dtypes.split(","):
        vllm = {}
        if args.vllm:
            folder = model_source(args.model).location
            vllm = vllm_step_ms(folder, dtype, batches, args.context, args.steps)
        for b in batches:
            for q in positions:
                row: dict[str, Any] = {"dtype": dtype, "b": b, "q": q, "context": args.context}
                for name in args.executions.split(","):
                    ms, weights, path = engine_step_ms(
                        dtype, "transformers" if name == "transformers" else "auto", b, q,
                        args.context, args.steps, args.model, args.device,
                        False if name == "own_fast" else None,
                    )  # fmt: skip
                    row[f"{name}_ms"] = round(ms, 2)
                    if name == "own":
                        row["path"] = path
                    row["weight_bytes"] = weights
                elem = 2 if dtype in ("bfloat16", "float16") else 4
                heads = config.num_key_value_heads
                dim = (
                    getattr(config, "head_dim", None)
                    or config.hidden_size // config.num_attention_heads
                )
                kv = b * (args.context + q) * config.num_hidden_layers * 2 * heads * dim * elem
                floor = (row["weight_bytes"] + kv) / (gbs * 1e9) * 1000
                row["floor_ms"] = round(floor, 2)
                if q == 1 and b in vllm:
                    row["vllm_ms"] = round(vllm[b], 2)
                rows.append(row)
                print(json.dumps(row), flush=True)
    header = (
        "| dtype | b | q | own ms (x floor) | own, deterministic=False ms | transformers ms "
        "| vLLM ms | vLLM / own | floor ms |"
    )
    print("\n" + header + "\n|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        own = r.get("own_ms")
        ratio = f"{own / r['floor_ms']:.1f}x" if own else ""
        vl = r.get("vllm_ms")
        vs = f"{vl / own:.2f}x" if own and vl else ""
        cells = [r["dtype"], r["b"], r["q"], f"{own} ({ratio})", r.get("own_fast_ms", ""),
                 r.get("transformers_ms", ""), vl or "", vs, r["floor_ms"]]  # fmt: skip
        print("| " + " | ".join(str(c) for c in cells) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    sys.exit(main())
