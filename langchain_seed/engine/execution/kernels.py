"""The CPU kernels of the engine's own execution path: built once per machine, then loaded.

``csrc/kernels.cpp`` holds five operations (``torch.ops.seed.*``): ``linear`` over
prepacked weights, ``add_rms_norm`` (residual add + RMSNorm), ``rope_store`` (RoPE on q
and k, k and v written into the KV pool), ``attention`` (packed queries over the pool,
per-row lengths, no mask tensor, grouped-query heads read once) and ``silu_mul``. Each
computes a row with one fixed order of arithmetic whatever runs beside it (batch
invariance, :mod:`~langchain_seed.engine.execution.llama`).

The source is compiled with the machine's C++ compiler for the CPU it runs on
(``-march=native``: AVX-512 and AVX512-BF16 where the CPU has them, AVX2 otherwise) into
``$SEED_CACHE_DIR/kernels/``, keyed by the source, the compiler, torch and the CPU's flags,
so a later process (or a later session on the same kind of CPU) loads it in milliseconds.
Building takes ~15 s on a 2-core CPU; two processes building at once each write their own
temporary file and rename it into place. Where no compiler exists, or the build fails,
:func:`load` returns ``None`` with the reason logged and the engine keeps the transformers
forward.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("csrc") / "kernels.cpp"
PACK_GROUP = 64
"""Output columns per prepacked weight group (four 16-lane fp32 vectors)."""


@dataclass(frozen=True)
class KernelLibrary:
    """A loaded kernel library and how it was obtained."""

    path: Path
    build_seconds: float
    """Seconds spent compiling in this process (0.0 when it was cached)."""
    bf16_dot: bool
    """Whether bf16 linears use the CPU's bf16 dot product (AVX512-BF16)."""


_LOCK = threading.Lock()
_LOADED: KernelLibrary | None = None
_FAILURE: str | None = None


def load() -> KernelLibrary | None:
    """The kernel library, built on first use; ``None`` (reason logged) where it cannot be.

    Set ``SEED_KERNELS=0`` to refuse the kernels (the engine then runs the transformers
    forward), e.g. to compare the two paths.
    """
    global _LOADED, _FAILURE
    with _LOCK:
        if _LOADED is not None or _FAILURE is not None:
            return _LOADED
        if os.environ.get("SEED_KERNELS", "1") == "0":
            _FAILURE = "SEED_KERNELS=0"
        else:
            try:
                _LOADED = _build_and_load()
            except Exception as exc:  # no compiler, a failed build, a library that won't load
                _FAILURE = f"{type(exc).__name__}: {exc}"
        if _FAILURE is not None:
            logger.warning(
                "own CPU kernels unavailable (%s); using the transformers forward", _FAILURE
            )
        return _LOADED


def unavailable_reason() -> str | None:
    """Why :func:`load` returned ``None`` (after it was called), else ``None``."""
    return _FAILURE


def compiler() -> str | None:
    """The C++ compiler to build with: ``$CXX``, else ``c++`` or ``g++`` on the PATH."""
    return os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")


def _cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return line.split(":", 1)[1].strip()
    return ""


def _build_command(cxx: str, source: Path, output: Path) -> list[str]:
    from torch.utils import cpp_extension

    libdir = Path(torch.__file__).parent / "lib"
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    return [
        cxx, "-O3", "-march=native", "-fopenmp", "-std=c++20", "-shared", "-fPIC", "-DNDEBUG",
        f"-D_GLIBCXX_USE_CXX11_ABI={abi}", "-w",
        *[f"-I{p}" for p in cpp_extension.include_paths()],
        str(source), "-o", str(output),
        f"-L{libdir}", "-lc10", "-ltorch_cpu", "-ltorch", f"-Wl,-rpath,{libdir}",
    ]  # fmt: skip


def _build_and_load() -> KernelLibrary:
    from langchain_seed.engine.execution.loading import cache_dir

    cxx = compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler (set CXX, or install g++)")
    version = subprocess.run(
        [cxx, "--version"], capture_output=True, text=True, timeout=30, check=True
    ).stdout.splitlines()[0]
    key = hashlib.sha256(
        "\n".join(
            [SOURCE.read_text(), version, torch.__version__, sys.version, _cpu_flags()]
        ).encode()
    ).hexdigest()[:16]
    folder = cache_dir() / "kernels"
    path = folder / f"seed_kernels-{key}.so"
    seconds = 0.0
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".build-{key}-{os.getpid()}-{threading.get_ident()}.so"
        start = time.perf_counter()
        logger.info("building the engine's CPU kernels into %s (once per machine)", path)
        done = subprocess.run(
            _build_command(cxx, SOURCE, tmp), capture_output=True, text=True, timeout=600
        )
        if done.returncode != 0:
            tmp.unlink(missing_ok=True)
            raise RuntimeError(f"kernel build failed: {done.stderr.strip()[-2000:]}")
        os.replace(tmp, path)  # atomic: a concurrent builder's file is equal, either wins
        seconds = time.perf_counter() - start
    torch.ops.load_library(str(path))
    _register_fakes()
    return KernelLibrary(path, seconds, bool(torch.ops.seed.has_avx512_bf16()))


def _register_fakes() -> None:
    """Shape functions of the ops, so traced and compiled code can call them."""

    @torch.library.register_fake("seed::linear")  # type: ignore[misc]
    def _linear(
        x: torch.Tensor, packed: torch.Tensor, n: int, bias: torch.Tensor | None, out_float: bool
    ) -> torch.Tensor:
        return x.new_empty((x.shape[0], n), dtype=torch.float32 if out_float else x.dtype)

    @torch.library.register_fake("seed::add_rms_norm")  # type: ignore[misc]
    def _norm(x: torch.Tensor, y: torch.Tensor | None, w: torch.Tensor, eps: float) -> torch.Tensor:
        return torch.empty_like(x)

    @torch.library.register_fake("seed::silu_mul")  # type: ignore[misc]
    def _silu(gu: torch.Tensor) -> torch.Tensor:
        return gu.new_empty((gu.shape[0], gu.shape[1] // 2))


def pack_weight(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` ``[N, K]`` in the layout ``seed::linear`` reads (a copy).

    Rows are padded with zeros to a multiple of 64 (``N'``) and packed in groups of 64
    output columns whose k-rows are contiguous. float32: ``[N' / 64, K, 64]``; bfloat16:
    ``[N' / 64, K / 2, 64, 2]``, pairs of consecutive k per column (the operand layout of
    the AVX512-BF16 dot product).
    """
    n, k = weight.shape
    pad = -n % PACK_GROUP
    if pad:
        weight = torch.cat([weight, weight.new_zeros(pad, k)])
    groups = (n + pad) // PACK_GROUP
    if weight.dtype == torch.float32:
        return weight.reshape(groups, PACK_GROUP, k).permute(0, 2, 1).contiguous()
    return weight.reshape(groups, PACK_GROUP, k // 2, 2).permute(0, 2, 1, 3).contiguous()


def packable(weight: torch.Tensor) -> bool:
    """Whether ``seed::linear`` can run ``weight`` (a CPU fp32 matrix, or bf16 with even K)."""
    return (
        weight.ndim == 2
        and weight.device.type == "cpu"
        and weight.dtype in (torch.float32, torch.bfloat16)
        and (weight.dtype == torch.float32 or weight.shape[1] % 2 == 0)
    )
