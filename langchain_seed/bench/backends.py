"""What every benchmark backend offers the workloads: the same calls, the same stats keys.

A backend generates from token ids (``generate``), hands out a LangChain LLM over itself
(``llm``, for the Tree-of-Thoughts and self-consistency workloads), and reports plain
counters (``stats``) under the keys listed in :data:`STAT_KEYS`, ``None`` where a backend
cannot measure one (transformers' ``generate`` has no prefill/decode split, for example).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from langchain_core.language_models import BaseLLM
    from transformers import PreTrainedTokenizerBase

    from langchain_seed.engine.config import SamplingParams

STAT_KEYS = (
    "calls",
    "prompt_tokens",
    "generated_tokens",
    "cached_prompt_tokens",
    "prefix_hit_rate",
    "target_forwards",
    "target_forwards_per_token",
    "draft_forwards",
    "mean_accepted_length",
    "acceptance_rate",
    "mean_draft_length",
    "prefill_seconds",
    "draft_seconds",
    "verify_seconds",
    "scheduler_seconds",
    "drafter_share",
    "peak_batch_size",
    "peak_device_memory_bytes",
)
"""Every backend's ``stats()`` has exactly these keys. ``peak_device_memory_bytes`` is the
engine's ``peak_memory_bytes`` (RSS on CPU, peak allocated CUDA memory on a GPU) and, for
the transformers baselines, peak allocated CUDA memory (``None`` on CPU)."""


@dataclass(slots=True)
class BenchConfig:
    """Model and method settings shared by every method of one benchmark run.

    Args:
        model: target model (``None``: the embedded SmolLM2-135M-Instruct).
        draft_model: optional draft model; enables the ``model`` drafter and
            ``assistant_model`` for ``hf_assisted``.
        device: torch device.
        dtype: ``"float32"``, ``"bfloat16"``, ``"float16"``, or ``"auto"`` (resolved once
            here, as :class:`~langchain_seed.engine.EngineConfig` does, so every method of
            the run compares one dtype).
        hf_batch_size: static batch size of ``hf_batched`` (``HuggingFacePipeline(batch_size=B)``).
        max_batch_size: the engine's ``max_batch_size``.
        gamma: most draft tokens per step for the engine policies that speculate.
        prompt_lookup_num_tokens: candidate tokens per step of ``hf_assisted`` prompt lookup.
    """

    model: str | None = None
    draft_model: str | None = None
    device: str = "cpu"
    dtype: str = "float32"
    hf_batch_size: int = 16
    max_batch_size: int = 32
    gamma: int = 4
    prompt_lookup_num_tokens: int = 4
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("hf_batch_size", "max_batch_size", "prompt_lookup_num_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.gamma, int) or not 0 <= self.gamma <= 16:
            raise ValueError(f"gamma must be an integer in [0, 16], got {self.gamma!r}")
        if self.dtype == "auto":
            from langchain_seed.engine.execution.loading import auto_dtype

            self.dtype = auto_dtype(self.model, self.device)


@dataclass(slots=True)
class Completion:
    """One generated sample."""

    text: str
    token_ids: list[int]
    """Generated ids; the EOS that ended generation is included (as transformers does)."""
    finish_reason: str = "length"
    prompt_tokens: int = 0
    generated: int = 0
    """Tokens the model produced for this sample (stop-string tokens included)."""


class GenBackend(ABC):
    """A fresh model runner for one trial; see the module docstring."""

    name: str = "backend"
    info: dict[str, Any]

    @property
    @abstractmethod
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The target's tokenizer (chat template, encoding)."""

    @abstractmethod
    def generate(
        self, prompts: list[list[int]], params: SamplingParams, *, n: int = 1
    ) -> list[list[Completion]]:
        """Generate ``n`` samples for every prompt; samples of one prompt form one group."""

    @abstractmethod
    def llm(self, params: SamplingParams, budget: Any = None) -> BaseLLM:
        """A LangChain LLM over this backend whose defaults are ``params``.

        ``budget`` (``prompt -> max_tokens``) gives a plain LLM the per-call token budget
        that runnables pass to engine-backed models as ``max_tokens=``.
        """

    @abstractmethod
    def stats(self) -> dict[str, float | int | None]:
        """Counters since this backend was opened, keyed by :data:`STAT_KEYS`."""

    @abstractmethod
    def close(self) -> None:
        """Release what this trial built (engine threads, caches)."""

    def encode(self, text: str) -> list[int]:
        """Prompt text -> ids, the same way for every backend (the tokenizer's defaults)."""
        return list(self.tokenizer(text)["input_ids"])


def sample_seeds(seed: int | None, n: int) -> list[int | None]:
    """Distinct per-sample seeds (``seed + j``), or ``None`` for each when unseeded."""
    return [None if seed is None else seed + j for j in range(n)]


def empty_stats() -> dict[str, float | int | None]:
    """A stats dict with every key set to ``None``."""
    return dict.fromkeys(STAT_KEYS)
