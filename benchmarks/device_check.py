"""The GPU check (issue 28): the lossless suite on CUDA, then the step time of a ~1B model.

Prepared to run in one call of at most 8 minutes on a lent GPU machine (``make
device-check``), with nothing to download:

1. the greedy lossless suite (``tests/unit_tests/test_engine_lossless.py``: every policy x
   drafter and every architecture family equals transformers ``generate`` token for token)
   with ``SEED_TEST_DEVICE=cuda``;
2. a random-initialised Llama of TinyLlama-1.1B's shape (hidden 2048, 22 layers, 32 heads,
   4 key/value heads, vocabulary 32,000) built on the device and saved with a word-level
   tokenizer of the same vocabulary, then ``step_time.py``'s engine step at b = 1, 4, 16 and
   q = 1, 5 (context 570) in bfloat16, against the device's memory floor;
3. one table of both.

On a CUDA device the engine runs the transformers forward (the own execution path is for
CPUs), so this checks that the engine and its speculation are correct and what a step costs
there. ``--device cpu --quick`` runs the same flow on a CPU with a small model (what the
test suite checks).

    make device-check
    python benchmarks/device_check.py --device cpu --quick
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).parent))

SHAPES = {
    "1b": {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22,
           "num_attention_heads": 32, "num_key_value_heads": 4, "vocab_size": 32000},
    "small": {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 4,
              "num_attention_heads": 8, "num_key_value_heads": 2, "vocab_size": 2048},
}  # fmt: skip


def lossless_suite(device: str, quick: bool) -> tuple[bool, str]:
    """Run the greedy lossless suite on ``device``; (passed, pytest's last line)."""
    args = [sys.executable, "-m", "pytest", "tests/unit_tests/test_engine_lossless.py",
            "-q", "-p", "no:cacheprovider"]  # fmt: skip
    if quick:
        args += ["-k", "three_waves and (none or ngram) and batched"]
    env = {**os.environ, "SEED_TEST_DEVICE": device, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    return done.returncode == 0, lines[-1] if lines else done.stderr[-500:]


def random_llama(folder: Path, shape: str, device: str) -> Path:
    """A random-initialised Llama of ``shape`` built on ``device``, saved with a tokenizer."""
    import torch
    from tiny_models import word_tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    sizes = SHAPES[shape]
    torch.manual_seed(0)
    config = LlamaConfig(**sizes, max_position_embeddings=4096, tie_word_embeddings=False)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    path = folder / f"llama-{shape}"
    model.save_pretrained(path)
    word_tokenizer(sizes["vocab_size"]).save_pretrained(path)
    return path


def main() -> int:
    """Run both checks and print one table; exit 1 if the lossless suite failed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="a small model, fewer shapes")
    args = parser.parse_args()

    import torch
    import transformers
    from step_time import bandwidth_gbs, cpu_summary, engine_step_ms

    start = time.perf_counter()
    gpu = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "-"
    print(f"device {args.device} ({gpu}); CPU {cpu_summary()}")
    print(f"torch {torch.__version__}, transformers {transformers.__version__}", flush=True)
    passed, summary = lossless_suite(args.device, args.quick)
    print(f"lossless suite on {args.device}: {'PASSED' if passed else 'FAILED'} ({summary})")
    shape = "small" if args.quick else "1b"
    batches, positions = ((1, 4), (1, 3)) if args.quick else ((1, 4, 16), (1, 5))
    context, steps = (64, 6) if args.quick else (570, 16)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        model = str(random_llama(Path(tmp), shape, args.device))
        gbs = bandwidth_gbs(args.device)
        for b in batches:
            for q in positions:
                ms, weights, path = engine_step_ms(
                    "bfloat16", "auto", b, q, context, steps, model, args.device
                )
                sizes = SHAPES[shape]
                head_dim = sizes["hidden_size"] // sizes["num_attention_heads"]
                kv = (b * (context + q) * sizes["num_hidden_layers"] * 2
                      * sizes["num_key_value_heads"] * head_dim * 2)  # fmt: skip
                floor = (weights + kv) / (gbs * 1e9) * 1000
                rows.append({"b": b, "q": q, "ms": ms, "floor": floor, "path": path})
                print(rows[-1], flush=True)
    params = weights / 2 / 1e9  # bfloat16 weights
    print(f"\nrandom Llama {params:.3f}B params, bfloat16, context {context}, "
          f"read bandwidth {gbs:.0f} GB/s, path {rows[0]['path']}")  # fmt: skip
    print("| check | b | q | step ms | floor ms | x floor |\n|---|---|---|---|---|---|")
    print(f"| lossless suite ({summary}) | | | {'passed' if passed else 'FAILED'} | | |")
    for r in rows:
        print(f"| engine step | {r['b']} | {r['q']} | {r['ms']:.2f} | {r['floor']:.2f} | "
              f"{r['ms'] / r['floor']:.1f}x |")  # fmt: skip
    print(f"(whole check: {time.perf_counter() - start:.0f} s)")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
