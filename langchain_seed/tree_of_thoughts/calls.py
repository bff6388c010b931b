"""One phase of a search -> one model submission.

With a :class:`~langchain_seed.llms.SeedLLM` or :class:`~langchain_seed.chat_models.ChatSeed`
that is a single ``generate(prompts, n=k, ...)`` call: the engine batches every prompt and
treats the k samples of one prompt as a group (shared prefix, consensus drafting). Any other
LangChain model gets one ``batch`` call with every prompt repeated k times.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from langchain_core.language_models import BaseLanguageModel
from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.outputs import LLMResult
from langchain_core.runnables import RunnableConfig

from langchain_seed.tree_of_thoughts.search import Phase, PhaseOutputs

SPEC_KEYS = ("cached_prompt_tokens", "drafted", "accepted", "verifications", "target_tokens")
"""Per-request engine counters summed over a search (besides prompt / generated tokens)."""


@dataclass
class PhaseResult:
    """Outputs of one phase plus what the model reported about them."""

    outputs: PhaseOutputs
    prompt_tokens: int | None = None
    generated_tokens: int | None = None
    spec: dict[str, float] = field(default_factory=dict)
    engine_stats: dict[str, Any] | None = None


def seed_kind(llm: Any) -> str | None:
    """``"llm"`` for a SeedLLM, ``"chat"`` for a ChatSeed, else ``None`` (lazy imports)."""
    try:
        from langchain_seed.llms import SeedLLM

        if isinstance(llm, SeedLLM):
            return "llm"
    except ImportError:
        pass
    try:
        from langchain_seed.chat_models import ChatSeed

        if isinstance(llm, ChatSeed):
            return "chat"
    except ImportError:
        pass
    return None


def _seed_args(
    llm: Any, phase: Phase, temperature: float | None, config: RunnableConfig
) -> tuple[list[Any], dict[str, Any]]:
    kind = seed_kind(llm)
    inputs: list[Any] = (
        list(phase.prompts) if kind == "llm" else [[HumanMessage(p)] for p in phase.prompts]
    )
    kwargs: dict[str, Any] = {
        "stop": phase.stop,
        "callbacks": config.get("callbacks"),
        "tags": config.get("tags"),
        "metadata": config.get("metadata"),
        "n": phase.n,
        "max_tokens": phase.max_tokens,
    }
    if temperature is not None:
        kwargs["temperature"] = temperature
    return inputs, kwargs


def _from_llm_result(result: LLMResult, phase: Phase) -> PhaseResult:
    outputs = [[g.text for g in gens] for gens in result.generations]
    if len(outputs) != len(phase.prompts) or any(len(o) != phase.n for o in outputs):
        raise RuntimeError(
            f"the model returned {[len(o) for o in outputs]} generations for "
            f"{len(phase.prompts)} prompts x n={phase.n}"
        )
    out = PhaseResult(outputs, prompt_tokens=0, generated_tokens=0)
    for gens in result.generations:
        for gen in gens:
            info = dict(gen.generation_info or {})
            message = getattr(gen, "message", None)
            if not info.get("spec_stats") and message is not None:
                info = dict(message.response_metadata or {})
            spec = info.get("spec_stats") or {}
            out.prompt_tokens = _add(out.prompt_tokens, spec.get("prompt_tokens"))
            out.generated_tokens = _add(out.generated_tokens, spec.get("generated_tokens"))
            for key in SPEC_KEYS:
                if isinstance(spec.get(key), (int, float)):
                    out.spec[key] = out.spec.get(key, 0) + spec[key]
    out.engine_stats = (result.llm_output or {}).get("engine_stats")
    return out


def _batch_inputs(phase: Phase) -> list[Any]:
    return [p for p in phase.prompts for _ in range(phase.n)]


def _from_batch(raw: list[Any], phase: Phase) -> PhaseResult:
    texts: list[str] = []
    out = PhaseResult([], prompt_tokens=0, generated_tokens=0)
    for item in raw:
        if isinstance(item, BaseMessage):
            texts.append(_message_text(item))
            usage = getattr(item, "usage_metadata", None) or {}
            out.prompt_tokens = _add(out.prompt_tokens, usage.get("input_tokens"))
            out.generated_tokens = _add(out.generated_tokens, usage.get("output_tokens"))
        else:
            texts.append(str(item))
            out.prompt_tokens = out.generated_tokens = None
    texts = [_apply_stop(t, phase.stop) for t in texts]  # for models that ignore ``stop``
    n = phase.n
    out.outputs = [texts[i * n : (i + 1) * n] for i in range(len(phase.prompts))]
    return out


def run_phase(
    llm: BaseLanguageModel, phase: Phase, temperature: float | None, config: RunnableConfig
) -> PhaseResult:
    """Submit every call of ``phase`` at once and wait for the outputs.

    Args:
        llm: any LangChain LLM or chat model.
        phase: the prompts, samples per prompt, token budget and stop strings.
        temperature: passed to SeedLLM / ChatSeed (other models use their own setting).
        config: the runnable config of the search (callbacks, tags, metadata).

    Returns:
        The outputs (``phase.n`` per prompt) and what the model reported.
    """
    if seed_kind(llm):
        inputs, kwargs = _seed_args(llm, phase, temperature, config)
        return _from_llm_result(cast(Any, llm).generate(inputs, **kwargs), phase)
    kwargs = {"stop": phase.stop} if phase.stop else {}
    return _from_batch(llm.batch(_batch_inputs(phase), config=config, **kwargs), phase)


async def arun_phase(
    llm: BaseLanguageModel, phase: Phase, temperature: float | None, config: RunnableConfig
) -> PhaseResult:
    """Async :func:`run_phase` (``agenerate`` / ``abatch``)."""
    if seed_kind(llm):
        inputs, kwargs = _seed_args(llm, phase, temperature, config)
        return _from_llm_result(await cast(Any, llm).agenerate(inputs, **kwargs), phase)
    kwargs = {"stop": phase.stop} if phase.stop else {}
    raw = await llm.abatch(_batch_inputs(phase), config=config, **kwargs)
    return _from_batch(raw, phase)


def _message_text(message: BaseMessage) -> str:
    if isinstance(message.content, str):
        return message.content
    text = message.text
    return text() if callable(text) else str(text)


def _apply_stop(text: str, stop: list[str] | None) -> str:
    for s in stop or ():
        index = text.find(s)
        if index >= 0:
            text = text[:index]
    return text


def _add(total: int | None, value: Any) -> int | None:
    if total is None or not isinstance(value, int):
        return None
    return total + value
