"""Linear layers of the own execution path on ``seed::linear`` (prepacked weights).

:class:`Linear` holds one weight prepacked once (:func:`~langchain_seed.engine.execution.
kernels.pack_weight`) and an optional fp32 bias; :func:`fused` puts several projections
side by side (q/k/v, gate/up) so one call computes them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from collections.abc import Sequence as Seq
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F

from langchain_seed.engine.execution import kernels

TUNED_ROWS = (1, 4, 16, 64, 256, 1024)
"""Row counts at which :func:`tune` compares kernels."""


class Linear:
    """A linear layer on ``seed::linear``: weight prepacked once, optional fp32 bias.

    ``seed::linear`` computes every output row with one fixed order of arithmetic whatever
    the row count (batch invariant). Where determinism is not asked for, :func:`tune`
    may pick, per row count, a library kernel that measured faster (oneDNN's prepacked
    bf16 GEMM, ``F.linear``); those choose their blocking by shape, so a row's result then
    depends on how many rows run with it.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        self.out_features = int(weight.shape[0])
        self.in_features = int(weight.shape[1])
        self.packed = kernels.pack_weight(weight.detach())
        self.bias = None if bias is None else bias.detach().float().contiguous()
        self.choices: list[tuple[int, Callable[[torch.Tensor], torch.Tensor] | None]] = []
        """(row count, kernel): from that many rows on, the library kernel that measured
        faster, or ``None`` for ``seed::linear`` (:func:`tune`; empty: never tuned)."""
        self._library: Callable[[torch.Tensor], torch.Tensor] | None = None

    def __call__(
        self, x: torch.Tensor, out_float: bool = False, deterministic: bool = True
    ) -> torch.Tensor:
        """``x @ W.T + b``: ``[M, K]`` -> ``[M, N]`` (fp32 accumulation, x's dtype out)."""
        if not deterministic and not out_float:
            kernel = None
            for least, choice in self.choices:
                if x.shape[0] >= least:
                    kernel = choice
            if kernel is not None:
                return kernel(x)
        return torch.ops.seed.linear(x, self.packed, self.out_features, self.bias, out_float)

    def library(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The library kernel of this weight (oneDNN prepacked bf16, else ``F.linear``)."""
        if self._library is None:
            weight = self._unpacked()
            if weight.dtype == torch.bfloat16:
                packed = torch.ops.mkldnn._reorder_linear_weight(weight, None)
                bias = None if self.bias is None else self.bias.to(weight.dtype)

                def run(x: torch.Tensor) -> torch.Tensor:
                    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")
            else:
                bias32 = self.bias

                def run(x: torch.Tensor) -> torch.Tensor:
                    return F.linear(x, weight, bias32)

            self._library = run
        return self._library

    def _unpacked(self) -> torch.Tensor:
        """The ``[N, K]`` weight back from the packed layout (a copy)."""
        packed, n, k = self.packed, self.out_features, self.in_features
        if packed.dtype == torch.float32:
            full = packed.permute(0, 2, 1).reshape(-1, k)
        else:
            full = packed.permute(0, 2, 1, 3).reshape(-1, k)
        return full[:n].contiguous()


def tune(linears: Seq[Linear], rows: Seq[int] = TUNED_ROWS) -> None:
    """Choose, per row count, between ``seed::linear`` and the library kernel.

    ``linears`` share one shape (every layer's q/k/v, say): each kernel is timed over all of
    them in turn, so their weights stream from memory as in a forward (timing one weight
    again and again would time it in cache), and the library kernel is chosen where it
    measured at least 3% faster.
    """
    dtype = linears[0].packed.dtype
    library = [linear.library() for linear in linears]

    def ours(x: torch.Tensor) -> None:
        for linear in linears:
            linear(x)

    def theirs(x: torch.Tensor) -> None:
        for kernel in library:
            kernel(x)

    choices: list[tuple[int, Any]] = []
    for m in rows:
        x = torch.randn(m, linears[0].in_features).to(dtype)
        faster = _median_seconds(partial(theirs, x)) < 0.97 * _median_seconds(partial(ours, x))
        choices.append((m, "library" if faster else None))
    for i, linear in enumerate(linears):
        linear.choices = [(m, library[i] if c else None) for m, c in choices]


def _median_seconds(fn: Callable[[], Any], repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[repeats // 2]


def fused(modules: Seq[Any]) -> Linear:
    """One :class:`Linear` computing ``modules`` side by side (q/k/v, or gate/up)."""
    weight = torch.cat([m.weight for m in modules])
    biases = [m.bias for m in modules]
    if all(b is None for b in biases):
        return Linear(weight)
    bias = torch.cat(
        [
            b if b is not None else m.weight.new_zeros(m.weight.shape[0])
            for m, b in zip(modules, biases)
        ]
    )
    return Linear(weight, bias)
