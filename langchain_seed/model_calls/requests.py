"""One :class:`~langchain_seed.model_calls.call.ModelCall` as requests to a LangChain model.

- an engine-backed model (:class:`~langchain_seed.SeedLLM`,
  :class:`~langchain_seed.ChatSeed`) gets one ``generate(prompts, n=k, ...)``: the engine
  batches every prompt, and the ``k`` samples of a prompt form one engine group (shared
  prefix, consensus drafting);
- a model that takes ``n`` per call (an OpenAI-compatible client such as
  ``langchain_openai.ChatOpenAI`` pointed at a vLLM server) gets one
  ``generate([prompt], n=k, ...)`` per prompt, all in flight at once within the run's
  ``max_concurrency``: the server prefills each prompt once and fans its ``k`` samples out;
- any other LangChain model gets one ``batch`` with every prompt repeated ``k`` times.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from langchain_core.language_models import BaseChatModel, BaseLanguageModel
from langchain_core.messages import BaseMessage
from langchain_core.outputs import Generation, LLMResult
from langchain_core.prompt_values import PromptValue, StringPromptValue
from langchain_core.runnables import RunnableConfig

from langchain_seed._adapters.messages import message_text
from langchain_seed._adapters.results import spec_stats_of
from langchain_seed.model_calls.call import CallResult, ModelCall, Sample


def engine_backed(llm: Any) -> bool:
    """Whether ``llm`` is served by a langchain-seed engine (one grouped call per phase)."""
    from langchain_seed._adapters.fields import EngineFields

    return isinstance(llm, EngineFields)


def takes_n(llm: Any) -> bool:
    """Whether ``llm`` draws ``n`` samples in one request (an ``n`` field, as OpenAI has).

    Then a prompt's samples go to the server together: one prefill, server-side fan-out.
    """
    return not engine_backed(llm) and "n" in getattr(type(llm), "model_fields", {})


def _each_prompt(
    llm: BaseLanguageModel, call: ModelCall, config: RunnableConfig
) -> list[LLMResult]:
    """One ``generate(n=k)`` per prompt, on threads, within ``max_concurrency``."""

    def one(i: int) -> LLMResult:
        inputs, kwargs = _native_args(llm, single(call, i), config)
        result = llm.generate(inputs, **kwargs)  # type: ignore[attr-defined]
        return _replicated(result, call.n) if kwargs["n"] != call.n else result

    with ThreadPoolExecutor(max_workers=concurrency(call, config)) as pool:
        futures = [
            pool.submit(contextvars.copy_context().run, one, i) for i in range(len(call.prompts))
        ]
        return [f.result() for f in futures]


async def _aeach_prompt(
    llm: BaseLanguageModel, call: ModelCall, config: RunnableConfig
) -> list[LLMResult]:
    """Async :func:`_each_prompt`: one ``agenerate(n=k)`` task per prompt."""
    limit = asyncio.Semaphore(concurrency(call, config))

    async def one(i: int) -> LLMResult:
        inputs, kwargs = _native_args(llm, single(call, i), config)
        async with limit:
            result = await llm.agenerate(inputs, **kwargs)  # type: ignore[attr-defined]
        return _replicated(result, call.n) if kwargs["n"] != call.n else result

    return list(await asyncio.gather(*(one(i) for i in range(len(call.prompts)))))


def _native_args(
    llm: BaseLanguageModel, call: ModelCall, config: RunnableConfig
) -> tuple[list[Any], dict[str, Any]]:
    """``generate`` arguments for a model that takes ``n``.

    The call's sampling settings go where the model has that field (an OpenAI-compatible
    client sends them to the server); a grammar is dropped (engine-backed models only).
    """
    inputs, kwargs = _generate_args(llm, call, config)
    kwargs.pop("grammar", None)
    fields = getattr(type(llm), "model_fields", {})
    for key in ("max_tokens", "temperature", "seed"):
        if key not in fields:
            kwargs.pop(key, None)
    if _greedy(llm, call):
        kwargs["n"] = 1  # greedy samples are one sample n times (vLLM refuses greedy n > 1)
    return inputs, kwargs


def _greedy(llm: BaseLanguageModel, call: ModelCall) -> bool:
    temperature = call.temperature
    if temperature is None:
        temperature = getattr(llm, "temperature", None)
    return temperature == 0


def _replicated(result: LLMResult, n: int) -> LLMResult:
    """A greedy request sent with ``n=1``: its one sample as the ``n`` the call asked for."""
    gens = result.generations
    if len(gens) == 1 and len(gens[0]) == 1:
        return LLMResult(generations=[gens[0] * n], llm_output=result.llm_output)
    return result


def _from_llm_results(results: list[LLMResult], call: ModelCall) -> CallResult:
    """The per-prompt results of :func:`_each_prompt` as one call's samples."""
    generations = [gens for result in results for gens in result.generations]
    merged = _from_llm_result(LLMResult(generations=generations), call)
    for sample in (s for row in merged.samples for s in row):
        sample.text = _cut_at_stop(sample.text, call.stop)
    return merged


def request(llm: BaseLanguageModel, call: ModelCall, config: RunnableConfig) -> CallResult:
    """Send every prompt of ``call`` to ``llm`` (as its kind takes them) and wait."""
    if engine_backed(llm):
        inputs, kwargs = _generate_args(llm, call, config)
        return _from_llm_result(llm.generate(inputs, **kwargs), call)  # type: ignore[attr-defined]
    if takes_n(llm):
        return _from_llm_results(_each_prompt(llm, call, config), call)
    inputs, configs, kwargs = _batch_args(call, config)
    return _from_batch(llm.batch(inputs, config=configs, **kwargs), call)


async def arequest(llm: BaseLanguageModel, call: ModelCall, config: RunnableConfig) -> CallResult:
    """Async :func:`request` (``agenerate`` / ``abatch``)."""
    if engine_backed(llm):
        inputs, kwargs = _generate_args(llm, call, config)
        result = await llm.agenerate(inputs, **kwargs)  # type: ignore[attr-defined]
        return _from_llm_result(result, call)
    if takes_n(llm):
        return _from_llm_results(await _aeach_prompt(llm, call, config), call)
    inputs, configs, kwargs = _batch_args(call, config)
    return _from_batch(await llm.abatch(inputs, config=configs, **kwargs), call)


def single(call: ModelCall, i: int) -> ModelCall:
    """Prompt ``i`` of ``call`` as a call of its own."""
    configs = [call.configs[i]] if call.configs is not None else None
    return replace(call, prompts=[call.prompts[i]], configs=configs, then=None, done=None)


def concurrency(call: ModelCall, config: RunnableConfig) -> int:
    """Prompts of a call in flight at once: all, or the config's max_concurrency."""
    limit = config.get("max_concurrency")
    return max(1, min(len(call.prompts), limit)) if limit else len(call.prompts)


def _prompt_values(call: ModelCall) -> list[PromptValue]:
    return [StringPromptValue(text=p) if isinstance(p, str) else p for p in call.prompts]


def _configs(call: ModelCall, config: RunnableConfig) -> list[RunnableConfig]:
    configs = list(call.configs) if call.configs is not None else [config] * len(call.prompts)
    if len(configs) != len(call.prompts):
        raise ValueError(f"{len(configs)} configs for {len(call.prompts)} prompts")
    return configs


def _generate_args(
    llm: BaseLanguageModel, call: ModelCall, config: RunnableConfig
) -> tuple[list[Any], dict[str, Any]]:
    """``generate`` inputs and keyword arguments of one engine-backed call."""
    values, configs = _prompt_values(call), _configs(call, config)
    kwargs: dict[str, Any] = {"n": call.n, "stop": call.stop}
    for key, value in (
        ("max_tokens", call.max_tokens),
        ("temperature", call.temperature),
        ("seed", call.seed),
        ("grammar", call.grammar),
    ):
        if value is not None:
            kwargs[key] = value
    if isinstance(llm, BaseChatModel):
        # A chat model's generate takes one callbacks / tags / metadata for the call.
        first = configs[0]
        shared = all(c.get("callbacks") is first.get("callbacks") for c in configs)
        for key in ("callbacks", "tags", "metadata"):
            kwargs[key] = first.get(key) if shared else None
        return [v.to_messages() for v in values], kwargs
    # An LLM's generate takes them per prompt.
    kwargs["callbacks"] = [c.get("callbacks") for c in configs]
    kwargs["tags"] = [c.get("tags") or [] for c in configs]
    kwargs["metadata"] = [c.get("metadata") or {} for c in configs]
    return [v.to_string() for v in values], kwargs


def _from_llm_result(result: LLMResult, call: ModelCall) -> CallResult:
    shape = [len(gens) for gens in result.generations]
    if len(shape) != len(call.prompts) or any(k != call.n for k in shape):
        raise RuntimeError(
            f"the model returned {shape} generations for {len(call.prompts)} prompts x n={call.n}"
        )
    samples = [[_sample(gen) for gen in gens] for gens in result.generations]
    return CallResult(samples, engine_stats=(result.llm_output or {}).get("engine_stats"))


def _sample(generation: Generation) -> Sample:
    """A generation as a sample, with the engine's counters when an engine made it."""
    spec = spec_stats_of(generation)
    if spec is None:
        return Sample(generation.text)
    return Sample(generation.text, spec.prompt_tokens, spec.generated_tokens, spec)


def _batch_args(
    call: ModelCall, config: RunnableConfig
) -> tuple[list[Any], list[RunnableConfig], dict[str, Any]]:
    """``batch`` inputs (each prompt ``n`` times), configs and keyword arguments."""
    n, configs = call.n, _configs(call, config)
    inputs = [p for p in call.prompts for _ in range(n)]
    return inputs, [c for c in configs for _ in range(n)], {"stop": call.stop} if call.stop else {}


def _from_batch(raw: Sequence[Any], call: ModelCall) -> CallResult:
    flat: list[Sample] = []
    for item in raw:
        if isinstance(item, BaseMessage):
            usage = getattr(item, "usage_metadata", None) or {}
            tokens = usage.get("input_tokens"), usage.get("output_tokens")
            flat.append(Sample(message_text(item), *tokens))
        else:
            flat.append(Sample(item if isinstance(item, str) else str(item)))
    for sample in flat:  # for models that ignore ``stop``
        sample.text = _cut_at_stop(sample.text, call.stop)
    n = call.n
    return CallResult([flat[i * n : (i + 1) * n] for i in range(len(call.prompts))])


def _cut_at_stop(text: str, stop: Sequence[str] | None) -> str:
    for s in stop or ():
        index = text.find(s)
        if index >= 0:
            text = text[:index]
    return text
