"""The CPU kernels of the engine's own execution path: built once per machine, then loaded.

``csrc/`` holds five operations (``torch.ops.seed.*``, one file a kind, registered in
``ops.cpp``): ``linear`` over
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

SOURCES = Path(__file__).with_name("csrc")
"""The kernels' C++ sources (``*.cpp``, ``common.h``)."""
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


def _compile_flags() -> list[str]:
    from torch.utils import cpp_extension

    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    return [
        "-O3", "-march=native", "-fopenmp", "-std=c++20", "-fPIC", "-DNDEBUG", "-w",
        f"-D_GLIBCXX_USE_CXX11_ABI={abi}", *[f"-I{p}" for p in cpp_extension.include_paths()],
    ]  # fmt: skip


def _sources() -> list[Path]:
    return sorted(SOURCES.glob("*.cpp"))


def _build_and_load() -> KernelLibrary:
    from langchain_seed.engine.execution.loading import cache_dir

    cxx = compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler (set CXX, or install g++)")
    version = subprocess.run(
        [cxx, "--version"], capture_output=True, text=True, timeout=30, check=True
    ).stdout.splitlines()[0]
    texts = [p.read_text() for p in sorted(SOURCES.glob("*")) if p.suffix in (".cpp", ".h")]
    key = hashlib.sha256(
        "\n".join([*texts, version, torch.__version__, sys.version, _cpu_flags()]).encode()
    ).hexdigest()[:16]
    folder = cache_dir() / "kernels"
    path = folder / f"seed_kernels-{key}.so"
    seconds = 0.0
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        logger.info("building the engine's CPU kernels into %s (once per machine)", path)
        _build(cxx, folder, path, f"{key}-{os.getpid()}-{threading.get_ident()}")
        seconds = time.perf_counter() - start
    torch.ops.load_library(str(path))
    return KernelLibrary(path, seconds, bool(torch.ops.seed.has_avx512_bf16()))


def _build(cxx: str, folder: Path, path: Path, tag: str) -> None:
    """Compile the sources side by side (one process each), link, rename into place.

    Every file of a build carries ``tag`` (key, process, thread), so concurrent builders
    never share a file; the rename is atomic and a concurrent builder's library is equal.
    """
    objects = [folder / f".{tag}-{src.stem}.o" for src in _sources()]
    tmp = folder / f".{tag}.so"
    try:
        jobs = [
            subprocess.Popen(
                [cxx, *_compile_flags(), "-c", str(src), "-o", str(obj)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            for src, obj in zip(_sources(), objects)
        ]
        errors = [
            err for job in jobs for _, err in [job.communicate(timeout=600)] if job.returncode
        ]
        if errors:
            raise RuntimeError(f"kernel build failed: {errors[0].strip()[-2000:]}")
        libdir = Path(torch.__file__).parent / "lib"
        done = subprocess.run(
            [cxx, "-shared", "-fopenmp", *map(str, objects), "-o", str(tmp), f"-L{libdir}",
             "-lc10", "-ltorch_cpu", "-ltorch", f"-Wl,-rpath,{libdir}"],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"kernel link failed: {done.stderr.strip()[-2000:]}")
        os.replace(tmp, path)
    finally:
        for leftover in [*objects, tmp]:
            leftover.unlink(missing_ok=True)


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
