"""The benchmark's vLLM methods: ``vllm`` (no speculation) and ``vllm_spec`` (n-gram).

Both run :class:`~langchain_seed.backends.vllm.VLLMEngine` on the run's model and dtype,
and take the workloads exactly as the engine methods do (the same prompts, groups of ``n``
with seeds ``seed + j``, the same LangChain ``SeedLLM`` over the engine for ToT and SC).
vLLM takes 20-110 s to start, so one engine per method serves every trial of a run; each
trial starts with an empty prefix cache and fresh counters, as a fresh engine would.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from langchain_seed.bench.backends import BenchConfig
from langchain_seed.bench.engine_backend import EngineBackend

if TYPE_CHECKING:
    from langchain_seed.backends.vllm import VLLMEngine

VLLM_METHODS = ("vllm", "vllm_spec")

_ENGINES: dict[tuple[Any, ...], VLLMEngine] = {}
_LOCK = threading.Lock()


def vllm_engine_kwargs(config: BenchConfig, spec: bool) -> dict[str, Any]:
    """``backend_kwargs`` of a vLLM method.

    ``vllm_spec`` drafts ``config.gamma`` n-gram tokens (prompt lookup, as the engine's
    ``ngram`` drafter); ``config.extra["vllm"]`` adds vLLM arguments of the run's own (e.g.
    ``{"vllm": {"tensor_parallel_size": 2}}``).
    """
    kwargs: dict[str, Any] = {"max_num_seqs": config.max_batch_size}
    kwargs.update(config.extra.get("vllm", {}))
    if spec:
        kwargs["speculative_config"] = {
            "method": "ngram",
            "num_speculative_tokens": max(config.gamma, 1),
            "prompt_lookup_max": 4,
            "prompt_lookup_min": 2,
        }
    return kwargs


class VLLMBackend(EngineBackend):
    """A vLLM method's backend: the engine API of :class:`EngineBackend`, over vLLM."""

    def __init__(self, config: BenchConfig, *, spec: bool, name: str) -> None:  # noqa: D107
        from langchain_seed.backends.vllm import VLLMEngine

        self.name = name
        kwargs = vllm_engine_kwargs(config, spec)
        key = (config.model, config.dtype, repr(sorted(kwargs.items())))
        with _LOCK:
            engine = _ENGINES.get(key)
            if engine is None or engine.closed:
                engine = VLLMEngine(config.model, dtype=config.dtype, backend_kwargs=kwargs)
                _ENGINES[key] = engine
        self.engine = engine  # type: ignore[assignment]
        engine.reset_prefix_cache()
        engine.reset_stats()
        self.info = {
            "kind": "vllm",
            "backend_kwargs": kwargs,
            "speculates": spec,
            "start_seconds": round(engine.start_seconds, 1),
        }

    def close(self) -> None:
        """Keep the engine for the run's next trial (closed at exit)."""

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer."""
        return self.engine.tokenizer

    def stats(self) -> dict[str, float | int | None]:
        """The engine stats vLLM reports; ``None`` for what it does not.

        Not reported: forwards, phase times and memory (vLLM's workers are other processes;
        the benchmark's RSS column counts this process only).
        """
        stats = super().stats()
        for key in _NOT_REPORTED:
            stats[key] = None
        return stats


_NOT_REPORTED = (
    "target_forwards", "target_forwards_per_token", "draft_forwards", "prefill_seconds",
    "draft_seconds", "verify_seconds", "scheduler_seconds", "drafter_share",
    "peak_batch_size", "peak_device_memory_bytes",
)  # fmt: skip
