"""The model-call layer of the reasoning runnables (Tree of Thoughts, self-consistency).

A reasoning run is written once, as a generator: it yields a :class:`ModelCall` (every
prompt of one phase, ``n`` samples each) and is sent back the :class:`CallResult`; it
yields a :class:`Progress` event and is sent ``None``; its return value is the run's
output. :func:`drive` runs such a generator synchronously and :func:`adrive` on an event
loop, so each runnable has one body for ``invoke`` and ``ainvoke``.

One model call is one submission:

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
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar, cast

from langchain_core.callbacks.manager import adispatch_custom_event, dispatch_custom_event
from langchain_core.language_models import BaseChatModel, BaseLanguageModel
from langchain_core.messages import BaseMessage
from langchain_core.outputs import LLMResult
from langchain_core.prompt_values import PromptValue, StringPromptValue
from langchain_core.runnables import RunnableConfig

from langchain_seed._adapters.messages import message_text
from langchain_seed.engine.config import Grammar

TOKEN_COUNTERS = ("prompt_tokens", "generated_tokens")
"""Token counts of a sample (engine-backed models, and others that report usage)."""
SPEC_COUNTERS = ("cached_prompt_tokens", "drafted", "accepted", "verifications", "target_tokens")
"""Speculative-decoding counters an engine-backed model reports for every sample."""
ENGINE_COUNTERS = TOKEN_COUNTERS + SPEC_COUNTERS
"""Every per-sample counter an engine-backed model reports."""

T = TypeVar("T")


@dataclass
class ModelCall:
    """Every prompt of one phase, submitted to the model together."""

    prompts: Sequence[str | PromptValue]
    """One prompt per call (a string is a plain prompt, a chat model gets it as a human
    message)."""
    n: int = 1
    """Samples per prompt (one engine group each)."""
    max_tokens: int | None = None
    """Most new tokens per sample (engine-backed models and models that take ``n``, see
    :func:`takes_n`; others use their own setting)."""
    temperature: float | None = None
    """Sampling temperature (engine-backed models, models that take ``n``); ``None`` keeps
    the model's own."""
    seed: int | None = None
    """Sampling seed (engine-backed models: sample ``j`` of a prompt uses ``seed + j``; models
    that take ``n`` send it with the request)."""
    stop: list[str] | None = None
    """Stop strings; applied to the text of models that ignore them."""
    configs: Sequence[RunnableConfig] | None = None
    """One runnable config per prompt (callbacks, tags, metadata); ``None``: the run's."""
    grammar: Grammar | None = None
    """A grammar every output follows (engine-backed models; other models ignore it)."""
    then: Callable[[int, list[Sample]], ModelCall | None] | None = None
    """Pipelining: called as soon as prompt ``i``'s samples arrive; a call it returns is
    submitted at once, while the other prompts still decode, and its result goes to that
    call's ``done``. Each prompt then goes to the model as a call of its own (the engine
    batches them as they arrive); the result comes back when every follow-up is done."""
    done: Callable[[CallResult], None] | None = None
    """Receives this call's result when it is a follow-up of a pipelined call."""


@dataclass
class Progress:
    """A custom event the driver dispatches (``astream_events``, callbacks)."""

    name: str
    data: dict[str, Any]
    config: RunnableConfig | None = None
    """The config to dispatch it under; ``None``: the run's."""


@dataclass
class Sample:
    """One completion and what the model reported about it."""

    text: str
    counters: dict[str, float] = field(default_factory=dict)
    """Token and speculation counters (:data:`ENGINE_COUNTERS` for engine-backed models,
    ``prompt_tokens`` / ``generated_tokens`` for models that report usage, else empty)."""


@dataclass
class CallResult:
    """The samples of one :class:`ModelCall`: ``samples[i]`` holds prompt i's ``n``."""

    samples: list[list[Sample]]
    engine_stats: dict[str, Any] | None = None
    """The engine's cumulative stats after the call (engine-backed models)."""
    seconds: float = 0.0
    """Wall time of the call."""

    @property
    def texts(self) -> list[list[str]]:
        """The completions only, in the same shape."""
        return [[s.text for s in row] for row in self.samples]


Step = ModelCall | Progress
"""What a reasoning run yields to its driver."""
Run = Generator[Step, "CallResult | None", T]
"""A reasoning run: drive it with :func:`drive` or :func:`adrive`."""


def totals(samples: Iterable[Sample]) -> dict[str, int | None]:
    """Counters summed over ``samples``; a counter some sample lacks is ``None``."""
    out: dict[str, int | None] = {}
    rows = list(samples)
    for key in ENGINE_COUNTERS:
        values = [s.counters.get(key) for s in rows]
        known = [v for v in values if isinstance(v, (int, float))]
        if known:
            out[key] = int(sum(known)) if len(known) == len(values) else None
    return out


def engine_backed(llm: Any) -> bool:
    """Whether ``llm`` is served by a langchain-seed engine (one grouped call per phase)."""
    from langchain_seed._adapters.fields import EngineFields

    return isinstance(llm, EngineFields)


def takes_n(llm: Any) -> bool:
    """Whether ``llm`` draws ``n`` samples in one request (an ``n`` field, as OpenAI has).

    Then a prompt's samples go to the server together: one prefill, server-side fan-out.
    """
    return not engine_backed(llm) and "n" in getattr(type(llm), "model_fields", {})


# ---------------------------------------------------------------------- drivers


def drive(run: Run[T], llm: BaseLanguageModel, config: RunnableConfig) -> T:
    """Run a reasoning generator to its end, calling ``llm`` synchronously.

    Args:
        run: the generator (see the module docstring).
        llm: any LangChain LLM or chat model.
        config: the run's config (callbacks, tags, metadata), for calls and events that
            bring none of their own.

    Returns:
        The generator's return value.
    """
    steps = _Steps(run)
    for step in steps:
        if isinstance(step, ModelCall):
            steps.reply = call_model(llm, step, config)
        else:
            dispatch_custom_event(step.name, step.data, config=step.config or config)
    return steps.value


async def adrive(run: Run[T], llm: BaseLanguageModel, config: RunnableConfig) -> T:
    """Async :func:`drive` (``agenerate`` / ``abatch``, events dispatched on the loop).

    The run's own code (building prompts, parsing every sample with a parser that may be
    the user's, a task's checks) runs on a worker thread, one step at a time, never on the
    event loop: a slow or pathological parse must not stall the other coroutines of the
    loop. A thread hop per step costs ~0.1 ms against model calls of seconds.
    """
    steps = _Steps(run)
    step_iter = iter(steps)
    while (step := await asyncio.to_thread(next, step_iter, None)) is not None:
        if not isinstance(step, ModelCall):
            await adispatch_custom_event(step.name, step.data, config=step.config or config)
        else:
            steps.reply = await acall_model(llm, step, config)
    return steps.value


class _Steps(Generic[T]):
    """Iterates a run's steps; set ``reply`` to answer a model call, ``value`` is the end."""

    def __init__(self, run: Run[T]) -> None:
        self._run = run
        self.reply: CallResult | None = None
        self.value: T

    def __iter__(self) -> Iterator[Step]:
        while True:
            reply, self.reply = self.reply, None
            try:
                yield self._run.send(reply)
            except StopIteration as done:
                self.value = done.value
                return


# ---------------------------------------------------------------------- one call


def call_model(llm: BaseLanguageModel, call: ModelCall, config: RunnableConfig) -> CallResult:
    """Submit every prompt of ``call`` at once and wait for the samples.

    Args:
        llm: any LangChain LLM or chat model.
        call: the prompts, samples per prompt and sampling settings.
        config: the run's config, for a call without configs of its own.

    Returns:
        ``call.n`` samples per prompt.

    Raises:
        RuntimeError: when the model returns another number of samples.
    """
    if call.then is not None:
        return _pipelined(llm, call, config)
    start = time.perf_counter()
    if engine_backed(llm):
        inputs, kwargs = _generate_args(llm, call, config)
        result = _from_llm_result(cast(Any, llm).generate(inputs, **kwargs), call)
    elif takes_n(llm):
        result = _from_llm_results(_each_prompt(llm, call, config), call)
    else:
        inputs, configs, kwargs = _batch_args(call, config)
        result = _from_batch(llm.batch(inputs, config=configs, **kwargs), call)
    result.seconds = time.perf_counter() - start
    return result


async def acall_model(
    llm: BaseLanguageModel, call: ModelCall, config: RunnableConfig
) -> CallResult:
    """Async :func:`call_model` (``agenerate`` / ``abatch``)."""
    if call.then is not None:
        return await _apipelined(llm, call, config)
    start = time.perf_counter()
    if engine_backed(llm):
        inputs, kwargs = _generate_args(llm, call, config)
        result = _from_llm_result(await cast(Any, llm).agenerate(inputs, **kwargs), call)
    elif takes_n(llm):
        result = _from_llm_results(await _aeach_prompt(llm, call, config), call)
    else:
        inputs, configs, kwargs = _batch_args(call, config)
        result = _from_batch(await llm.abatch(inputs, config=configs, **kwargs), call)
    result.seconds = time.perf_counter() - start
    return result


def _single(call: ModelCall, i: int) -> ModelCall:
    """Prompt ``i`` of ``call`` as a call of its own."""
    configs = [call.configs[i]] if call.configs is not None else None
    return replace(call, prompts=[call.prompts[i]], configs=configs, then=None, done=None)


def _joined(call: ModelCall, rows: list[CallResult], start: float) -> CallResult:
    engine_stats = next((r.engine_stats for r in reversed(rows) if r.engine_stats), None)
    samples = [r.samples[0] for r in rows]
    return CallResult(samples, engine_stats=engine_stats, seconds=time.perf_counter() - start)


def _pipelined(llm: BaseLanguageModel, call: ModelCall, config: RunnableConfig) -> CallResult:
    """Every prompt on a thread of its own; each prompt's follow-up submitted when it ends."""
    assert call.then is not None
    then, start, lock = call.then, time.perf_counter(), threading.Lock()

    def one(i: int) -> CallResult:
        row = call_model(llm, _single(call, i), config)
        with lock:  # the search's callbacks run one at a time
            follow = then(i, row.samples[0])
        if follow is not None:
            result = call_model(llm, follow, config)
            with lock:
                if follow.done is not None:
                    follow.done(result)
        return row

    with ThreadPoolExecutor(max_workers=_concurrency(call, config)) as pool:
        futures = [
            pool.submit(contextvars.copy_context().run, one, i) for i in range(len(call.prompts))
        ]
        rows = [f.result() for f in futures]
    return _joined(call, rows, start)


async def _apipelined(
    llm: BaseLanguageModel, call: ModelCall, config: RunnableConfig
) -> CallResult:
    """Async :func:`_pipelined`: one task per prompt."""
    assert call.then is not None
    then, start, lock = call.then, time.perf_counter(), asyncio.Lock()

    async def one(i: int) -> CallResult:
        row = await acall_model(llm, _single(call, i), config)
        async with lock:  # the search's callbacks run one at a time, off the loop (adrive)
            follow = await asyncio.to_thread(then, i, row.samples[0])
        if follow is not None:
            result = await acall_model(llm, follow, config)
            if follow.done is not None:
                async with lock:  # storing outputs: cheap, but not while a callback runs
                    follow.done(result)
        return row

    limit = asyncio.Semaphore(_concurrency(call, config))

    async def limited(i: int) -> CallResult:
        async with limit:
            return await one(i)

    rows = await asyncio.gather(*(limited(i) for i in range(len(call.prompts))))
    return _joined(call, list(rows), start)


def _each_prompt(
    llm: BaseLanguageModel, call: ModelCall, config: RunnableConfig
) -> list[LLMResult]:
    """One ``generate(n=k)`` per prompt, on threads, within ``max_concurrency``."""

    def one(i: int) -> LLMResult:
        inputs, kwargs = _native_args(llm, _single(call, i), config)
        result = llm.generate(inputs, **kwargs)  # type: ignore[attr-defined]
        return _replicated(result, call.n) if kwargs["n"] != call.n else result

    with ThreadPoolExecutor(max_workers=_concurrency(call, config)) as pool:
        futures = [
            pool.submit(contextvars.copy_context().run, one, i) for i in range(len(call.prompts))
        ]
        return [f.result() for f in futures]


async def _aeach_prompt(
    llm: BaseLanguageModel, call: ModelCall, config: RunnableConfig
) -> list[LLMResult]:
    """Async :func:`_each_prompt`: one ``agenerate(n=k)`` task per prompt."""
    limit = asyncio.Semaphore(_concurrency(call, config))

    async def one(i: int) -> LLMResult:
        inputs, kwargs = _native_args(llm, _single(call, i), config)
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


def _concurrency(call: ModelCall, config: RunnableConfig) -> int:
    """Prompts of a pipelined call in flight at once: all, or the config's max_concurrency."""
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
    samples = []
    for gens in result.generations:
        row = []
        for gen in gens:
            info = dict(gen.generation_info or {})
            message = getattr(gen, "message", None)
            if not info.get("spec_stats") and message is not None:
                info = dict(message.response_metadata or {})
            counters = info.get("spec_stats") or {}
            row.append(Sample(gen.text, {k: counters[k] for k in ENGINE_COUNTERS if k in counters}))
        samples.append(row)
    return CallResult(samples, engine_stats=(result.llm_output or {}).get("engine_stats"))


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
            counters = {
                "prompt_tokens": usage.get("input_tokens"),
                "generated_tokens": usage.get("output_tokens"),
            }
            text = message_text(item)
            flat.append(Sample(text, {k: v for k, v in counters.items() if v is not None}))
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
