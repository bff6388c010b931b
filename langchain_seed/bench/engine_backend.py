"""The engine as a benchmark backend: an :class:`~langchain_seed.engine.Engine` per trial.

:class:`EngineBackend` runs a method's requests on a fresh engine built from its
:class:`EngineSettings` (policy, drafters, prefix cache); the vLLM methods
(:mod:`langchain_seed.bench.vllm`) reuse it over a vLLM engine.
"""

from __future__ import annotations

import itertools
import logging
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from langchain_seed.bench.backends import (
    BenchConfig,
    Completion,
    GenBackend,
    empty_stats,
    sample_seeds,
)
from langchain_seed.engine.config import EngineConfig, SamplingParams

if TYPE_CHECKING:
    from langchain_core.language_models import BaseLLM
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

_groups = itertools.count()


@dataclass(slots=True)
class EngineSettings:
    """How an engine method configures :class:`EngineConfig` on top of :class:`BenchConfig`."""

    policy: str
    drafters: tuple[str, ...]
    prefix_cache: bool
    gamma: int | None = None
    """``None``: the bench config's gamma."""
    fallback_drafters: tuple[str, ...] = ()
    """Used when the engine rejects ``drafters`` (e.g. a drafter not built yet)."""
    extra: dict[str, Any] = field(default_factory=dict)


class EngineBackend(GenBackend):
    """Our :class:`Engine` with one policy; a fresh engine per trial."""

    def __init__(self, config: BenchConfig, settings: EngineSettings, name: str) -> None:
        from langchain_seed.engine import Engine

        self.name = name
        gamma = config.gamma if settings.gamma is None else settings.gamma
        engine_config = self._engine_config(config, settings, settings.drafters, gamma)
        try:
            self.engine = Engine(engine_config)
        except (ValueError, NotImplementedError) as exc:
            if not settings.fallback_drafters:
                raise
            logger.warning(
                "%s: drafters %s rejected (%s); falling back to %s",
                name,
                settings.drafters,
                exc,
                settings.fallback_drafters,
            )
            engine_config = self._engine_config(config, settings, settings.fallback_drafters, gamma)
            self.engine = Engine(engine_config)
        self.engine.reset_stats()
        self.info = {
            "kind": "engine",
            "policy": engine_config.policy,
            "drafters": list(engine_config.drafters),
            "gamma": gamma,
            "prefix_cache_tokens": engine_config.prefix_cache_tokens,
            "max_batch_size": engine_config.max_batch_size,
            "speculates": engine_config.uses_drafts,
        }

    @staticmethod
    def _engine_config(
        config: BenchConfig, settings: EngineSettings, drafters: tuple[str, ...], gamma: int
    ) -> EngineConfig:
        kwargs: dict[str, Any] = {
            "model": config.model,
            "draft_model": config.draft_model if "model" in drafters else None,
            "policy": settings.policy,
            "drafters": drafters,
            "max_batch_size": config.max_batch_size,
            "gamma": gamma,
            "device": config.device,
            "dtype": config.dtype,
        }
        if not settings.prefix_cache:
            kwargs["prefix_cache_tokens"] = 0
        kwargs.update(settings.extra)
        return EngineConfig(**kwargs)

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The engine's tokenizer."""
        return self.engine.tokenizer

    def close(self) -> None:
        """Stop the engine thread."""
        self.engine.close()

    def generate(
        self, prompts: list[list[int]], params: SamplingParams, *, n: int = 1
    ) -> list[list[Completion]]:
        """Submit every prompt at once; the ``n`` samples of a prompt as one group."""
        futures: list[list[Future[Any]]] = []
        for prompt in prompts:
            if n == 1:
                futures.append([self.engine.submit(prompt, params)])
                continue
            group = f"bench-{next(_groups)}"
            per_sample = [replace(params, seed=s) for s in sample_seeds(params.seed, n)]
            futures.append(list(self.engine.submit_many([prompt] * n, per_sample, group=group)))
        out = []
        for row in futures:
            results = [f.result() for f in row]
            out.append(
                [
                    Completion(
                        text=r.text,
                        token_ids=list(r.token_ids),
                        finish_reason=r.finish_reason,
                        prompt_tokens=r.prompt_tokens,
                        generated=r.stats.generated_tokens,
                    )
                    for r in results
                ]
            )
        return out

    def llm(self, params: SamplingParams, budget: Any = None) -> BaseLLM:
        """``SeedLLM`` over this engine with ``params`` as its defaults.

        ``budget`` is ignored: runnables pass each phase's ``max_tokens`` to engine-backed models.
        """
        from langchain_seed.llms import SeedLLM

        return SeedLLM(
            engine=self.engine,
            temperature=params.temperature,
            max_tokens=params.max_tokens,
            top_p=params.top_p,
            top_k=params.top_k,
            seed=params.seed,
            stop=list(params.stop) or None,
        )

    def stats(self) -> dict[str, float | int | None]:
        """Engine stats since this backend was opened, under the common keys."""
        return engine_stats_dict(self.engine.stats())


def engine_stats_dict(engine_stats: Any) -> dict[str, float | int | None]:
    """Map an :class:`EngineStats` onto :data:`STAT_KEYS`."""
    stats = empty_stats()
    spec = engine_stats.spec
    generated = spec.generated_tokens
    stats.update(
        calls=engine_stats.requests_finished,
        prompt_tokens=spec.prompt_tokens,
        generated_tokens=generated,
        cached_prompt_tokens=spec.cached_prompt_tokens,
        prefix_hit_rate=spec.cached_prompt_tokens / spec.prompt_tokens
        if spec.prompt_tokens
        else None,
        target_forwards=engine_stats.target_forwards,
        target_forwards_per_token=engine_stats.target_forwards / generated if generated else None,
        draft_forwards=engine_stats.draft_forwards,
        mean_accepted_length=spec.mean_accepted_length if spec.verifications else None,
        acceptance_rate=spec.acceptance_rate if spec.drafted else None,
        mean_draft_length=spec.drafted / spec.verifications if spec.verifications else None,
        prefill_seconds=engine_stats.prefill_seconds,
        draft_seconds=engine_stats.draft_seconds,
        verify_seconds=engine_stats.verify_seconds,
        scheduler_seconds=engine_stats.scheduler_seconds,
        peak_batch_size=engine_stats.peak_batch_size,
        peak_device_memory_bytes=engine_stats.peak_memory_bytes,
    )
    step = (
        engine_stats.prefill_seconds
        + engine_stats.draft_seconds
        + engine_stats.verify_seconds
        + engine_stats.scheduler_seconds
    )
    stats["drafter_share"] = engine_stats.draft_seconds / step if step > 0 else None
    return stats
