"""Decode attention over the KV pool: torch's flex_attention (compiled) against seed::attention.

One layer's attention for ``b`` rows of one query each over ``context`` cached keys, the
embedded model's shape (9 query heads on 3 key/value heads of 64), pool capacity 656, the
rows' lengths as flex_attention's block mask and as seed::attention's per-row lengths.
Median of 50 calls after warm-up; the compile time is printed apart.

    python benchmarks/flex_attention.py
    python benchmarks/flex_attention.py --dtype float32 --rows 1 4 16
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any


def median_ms(fn: Callable[[], Any], n: int = 50) -> float:
    """Median wall time of ``fn`` in ms, after 3 untimed calls."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * sorted(times)[n // 2]


def main() -> None:
    """Print one row per batch size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--context", type=int, default=570)
    args = parser.parse_args()

    import torch
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    from langchain_seed.engine.execution import kernels

    if kernels.load() is None:
        raise SystemExit(f"no kernels: {kernels.unavailable_reason()}")
    dtype = getattr(torch, args.dtype)
    heads, kv_heads, dim, capacity = 9, 3, 64, 656
    scale = dim**-0.5
    compiled = torch.compile(flex_attention, dynamic=False)
    print(f"torch {torch.__version__}, {args.dtype}, context {args.context}")
    print("\n| rows | flex_attention ms | seed::attention ms | max diff | compile s |")
    print("|---:|---:|---:|---:|---:|")
    for b in args.rows:
        gen = torch.Generator().manual_seed(b)
        q = torch.randn(b, heads, 1, dim, generator=gen).to(dtype)
        keys = torch.randn(b, kv_heads, capacity, dim, generator=gen).to(dtype)
        values = torch.randn(b, kv_heads, capacity, dim, generator=gen).to(dtype)
        lengths = torch.full((b,), args.context + 1)

        def visible(batch: Any, head: Any, q_idx: Any, kv_idx: Any, n: Any = lengths) -> Any:
            return kv_idx < n[batch]

        mask = create_block_mask(visible, b, None, 1, capacity, device="cpu")

        def flex(q: Any = q, k: Any = keys, v: Any = values, m: Any = mask) -> Any:
            return compiled(q, k, v, block_mask=m, enable_gqa=True, scale=scale)

        start = time.perf_counter()
        reference = flex()[:, :, 0, :].float()
        compile_s = time.perf_counter() - start
        rows = torch.arange(b)  # row i's one query is packed token i
        packed = q[:, :, 0, :].contiguous()
        layout = (rows, rows, torch.ones(b, dtype=torch.long), torch.full((b,), args.context))

        def ours(p: Any = packed, k: Any = keys, v: Any = values, at: Any = layout) -> Any:
            return torch.ops.seed.attention(p, k, v, *at, 0, scale)

        diff = (reference - ours().float()).abs().max().item()
        print(
            f"| {b} | {median_ms(flex):.3f} | {median_ms(ours):.3f} | {diff:.2g} | "
            f"{compile_s:.1f} |"
        )


if __name__ == "__main__":
    main()
