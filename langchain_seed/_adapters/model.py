"""What ``SeedLLM`` and ``ChatSeed`` do alike: one call's options, batches, the cache policy.

:class:`EngineModel` sits before LangChain's ``BaseLLM`` / ``BaseChatModel`` in each class's
bases. Every call parses its options once (:class:`~._adapters.options.CallOptions`) and
hands them to its runs; a ``batch`` or a ``generate`` of several inputs renders and submits
every input to the engine before LangChain starts the per-input runs, and hands each run its
own requests (:mod:`langchain_seed._adapters.submission`). It turns the LangChain cache off
for calls the cache must not serve, and splits a batch by ``max_concurrency``. Each class
adds only its own translation: how an input becomes an engine prompt, and how results
become LangChain outputs.
"""

from __future__ import annotations

import abc
import asyncio
import inspect
import logging
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar, cast

from langchain_core.language_models import LanguageModelInput
from langchain_core.outputs import LLMResult
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import get_config_list
from typing_extensions import Self

from langchain_seed._adapters.fields import EngineFields
from langchain_seed._adapters.options import CallOptions
from langchain_seed._adapters.streaming import DeltaStream, open_stream
from langchain_seed._adapters.submission import (
    Futures,
    Handoff,
    handed_over,
    handing_over,
    submit_call,
)
from langchain_seed.engine.serving.client import Prompt

if TYPE_CHECKING:
    from langchain_seed.engine import GenerationResult

logger = logging.getLogger(__name__)


class EngineModel(EngineFields):
    """Batch submission and cache policy shared by the engine-backed LangChain models."""

    _kwargs_in_cache_key: ClassVar[bool] = True
    """Whether LangChain's cache key holds a call's keyword arguments (not for ``BaseLLM``)."""
    _runs_per_input: ClassVar[bool] = True
    """Whether LangChain's ``batch`` runs each input on its own (not ``BaseLLM.batch``)."""

    @abc.abstractmethod
    def _engine_prompt(self, input: LanguageModelInput, options: CallOptions) -> Prompt:
        """One LangChain input (and its call's options) -> the engine prompt its run submits.

        Raises ``ValueError`` / ``TypeError`` for an input the engine cannot run.
        """

    @staticmethod
    @abc.abstractmethod
    def _run_key(input: Any) -> Hashable:
        """What names a run's input in a ``generate`` call's hand-off.

        Computed on the inputs ``generate`` receives and on what LangChain hands each run
        (``_generate`` / ``_stream``): the same objects, so no prompt is rendered again.
        """

    @property
    def _identifying_params(self) -> Mapping[str, Any]:
        return self.identifying_params()

    def _run_options(self, stop: list[str] | None, kwargs: Mapping[str, Any]) -> CallOptions:
        """A run's options: its call's (handed over), or parsed here for a run on its own."""
        handoff = handed_over(self)
        return handoff.options if handoff is not None else self.call_options(stop, kwargs)

    def _run_futures(self, inputs: Sequence[Any], options: CallOptions) -> Futures:
        """Futures of a run's inputs: those its call submitted, the others submitted now.

        If submitting the others fails, the taken requests are cancelled too.
        """
        handoff = handed_over(self)
        rows = [handoff.take(self._run_key(i)) if handoff else None for i in inputs]
        missing = [i for i, row in enumerate(rows) if row is None]
        if missing:
            try:
                prompts = [self._engine_prompt(inputs[i], options) for i in missing]
                fresh = submit_call(self.engine, prompts, options)
            except BaseException:
                for row in rows:
                    for future in row or ():
                        future.cancel()
                raise
            for i, row in zip(missing, fresh, strict=True):
                rows[i] = row
        return [row for row in rows if row is not None]

    def _submitted_ahead(
        self, inputs: Sequence[Any], options: CallOptions, key: Callable[[Any], Hashable]
    ) -> list[tuple[Hashable, list[Future[GenerationResult]]]]:
        """Render and submit every input at once, before LangChain's per-input runs start.

        Inputs the engine would refuse are left to their own runs, which raise the error in
        their own place; if the submission itself fails, nothing is submitted ahead.
        """
        engine, keys, prompts = self.engine, [], []
        for input_ in inputs:
            try:
                prompt = self._engine_prompt(input_, options)
                engine.check_prompt(prompt, options.params)
            except (ValueError, TypeError):
                continue
            keys.append(key(input_))
            prompts.append(prompt)
        try:
            rows = submit_call(engine, prompts, options)
        except Exception:  # each run then submits on its own and reports its own error
            logger.debug("submission ahead of the runs skipped", exc_info=True)
            return []
        return list(zip(keys, rows, strict=True))

    def _open_stream(
        self,
        input: Any,
        options: CallOptions,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> DeltaStream:
        """A streamed run's request: its call's, if submitted ahead (text comes whole), or new."""
        params = options.stream_params()
        handoff = handed_over(self)
        taken = handoff.take(self._run_key(input)) if handoff is not None else None
        if taken is not None:
            return DeltaStream.of_future(taken[0], loop)
        return open_stream(self.engine, self._engine_prompt(input, options), params, loop=loop)

    @contextmanager
    def _batch_scope(
        self, inputs: list[Any], kwargs: Mapping[str, Any], *, per_input: bool
    ) -> Iterator[None]:
        """One chunk of a batch: every input rendered and submitted before the runs start.

        Only where LangChain runs the chunk as one run per input (``ChatSeed``, and
        ``return_exceptions=True``; ``SeedLLM.batch`` is one ``generate``), with two inputs
        or more, and when the LangChain cache may not serve the call (a cache hit must not
        cost a generation). Calls with bad arguments are left to their runs, which raise the
        error in their own place.
        """
        if not (per_input or self._runs_per_input) or len(inputs) < 2:
            yield
            return
        try:
            options = self.call_options(None, kwargs)
        except ValueError:
            yield
            return
        if self.cache_may_serve(options):
            yield
            return
        rows = self._submitted_ahead(inputs, options, id)
        with handing_over(Handoff(self, options, rows), batch=True):
            yield

    def _check_one_output(self, method: str, kwargs: Mapping[str, Any]) -> None:
        """Refuse ``n > 1`` where LangChain returns one output per input.

        ``invoke`` and ``batch`` return each input's first generation: the other samples
        would be decoded and thrown away.

        Raises:
            ValueError: ``n`` (the call's, else the field's) is not 1.
        """
        n = kwargs.get("n", self.n)
        if n != 1:
            raise ValueError(
                f"{method} returns one output per input, so n must be 1 (got n={n!r}); for "
                f"{n!r} samples per input use generate(inputs, n={n!r}) (every sample in "
                "generations[i]) or SelfConsistency"
            )

    def invoke(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Any:
        """LangChain's ``invoke``: one output (``n`` must be 1, see :meth:`generate`)."""
        self._check_one_output("invoke", kwargs)
        with self._batch_run(input):
            return cast(Any, super()).invoke(input, config, **kwargs)

    async def ainvoke(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Any:
        """Async :meth:`invoke`."""
        self._check_one_output("ainvoke", kwargs)
        with self._batch_run(input):
            return await cast(Any, super()).ainvoke(input, config, **kwargs)

    def generate(self, *args: Any, **kwargs: Any) -> LLMResult:
        """LangChain's ``generate`` (same arguments); every input goes to the engine at once.

        A call the LangChain cache must not serve runs on a copy with the cache off (see
        :meth:`EngineFields.for_call`).
        """
        with self._one_call(args, kwargs) as target:
            return cast(LLMResult, cast(Any, super(EngineModel, target)).generate(*args, **kwargs))

    async def agenerate(self, *args: Any, **kwargs: Any) -> LLMResult:
        """Async :meth:`generate`: awaits the engine's futures on the running loop."""
        with self._one_call(args, kwargs) as target:
            base = cast(Any, super(EngineModel, target))
            return cast(LLMResult, await base.agenerate(*args, **kwargs))

    @contextmanager
    def _batch_run(self, input: Any) -> Iterator[None]:
        """One input's run of a batch: the batch's options and this input's requests."""
        batch = handed_over(self, batch=True)
        row = batch.take(id(input)) if batch is not None else None
        if batch is None or row is None:
            yield
            return
        with handing_over(Handoff(self, batch.options, only=row)):
            yield

    @contextmanager
    def _one_call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Iterator[Self]:
        """Scope of one ``generate``: options parsed once, cache policy, inputs submitted.

        With several inputs every input is rendered and submitted at once, and each run
        takes its own requests (:meth:`_run_futures`). Yields the model the call runs on:
        ``self``, or a copy with the LangChain cache off.
        """
        base_generate = cast(Any, super()).generate
        call = inspect.signature(base_generate).bind(*args, **kwargs).arguments
        inputs, stop = next(iter(call.values())), call.get("stop")
        given = handed_over(self)  # a batch's run: the batch parsed the options
        options = given.options if given else self.call_options(stop, call.get("kwargs", {}))
        target = self.for_call(options, kwargs_in_key=self._kwargs_in_cache_key)
        if given is not None:
            handoff = Handoff(target, options, only=given.take(None))
        elif len(inputs) > 1 and not self.cache_may_serve(options):
            rows = target._submitted_ahead(inputs, options, self._run_key)
            handoff = Handoff(target, options, rows)
        else:  # one input (a streamed run must submit its own), or a call the cache serves
            handoff = Handoff(target, options)
        with handing_over(handoff):
            yield target

    def batch(  # type: ignore[override]
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        """Run every input; each chunk of ``max_concurrency`` inputs is one engine submission.

        All inputs form one chunk when ``max_concurrency`` is unset. Callbacks, tags and
        metadata stay per input. With ``return_exceptions=True`` an input the engine cannot
        run (empty, too long) gets its own error in its place and the others still run.
        """
        self._check_one_output("batch", kwargs)
        # Runnable.batch runs each input on its own, so one input's error stays its own.
        run = (
            partial(Runnable.batch, cast(Any, self))
            if return_exceptions
            else cast(Any, super()).batch
        )
        outputs: list[Any] = []
        for chunk, configs in _chunks(inputs, config):
            with self._batch_scope(chunk, kwargs, per_input=return_exceptions):
                outputs.extend(run(chunk, configs, return_exceptions=return_exceptions, **kwargs))
        return outputs

    async def abatch(  # type: ignore[override]
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        """Async :meth:`batch`."""
        self._check_one_output("abatch", kwargs)
        run = (
            partial(Runnable.abatch, cast(Any, self))
            if return_exceptions
            else cast(Any, super()).abatch
        )
        outputs: list[Any] = []
        for chunk, configs in _chunks(inputs, config):
            with self._batch_scope(chunk, kwargs, per_input=return_exceptions):
                outputs.extend(
                    await run(chunk, configs, return_exceptions=return_exceptions, **kwargs)
                )
        return outputs


def _chunks(
    inputs: list[LanguageModelInput], config: RunnableConfig | list[RunnableConfig] | None
) -> Iterator[tuple[list[LanguageModelInput], list[RunnableConfig]]]:
    """Split a batch into chunks of ``max_concurrency`` inputs, as ``BaseLLM.batch`` does.

    One chunk when ``max_concurrency`` is unset; each chunk's configs get it cleared.
    """
    if not inputs:
        return
    configs = get_config_list(config, len(inputs))
    size = configs[0].get("max_concurrency") or len(inputs)
    for start in range(0, len(inputs), size):
        chunk_configs = [
            RunnableConfig(**{**c, "max_concurrency": None})  # type: ignore[typeddict-item]
            for c in configs[start : start + size]
        ]
        yield inputs[start : start + size], chunk_configs
