"""What ``SeedLLM`` and ``ChatSeed`` do alike: batches, cache policy and submission.

:class:`EngineModel` sits before LangChain's ``BaseLLM`` / ``BaseChatModel`` in each class's
bases. It submits every input of a ``batch`` / ``generate`` call to the engine before
LangChain starts the per-input runs (see :mod:`langchain_seed._adapters.submission`), turns
the LangChain cache off for calls it must not serve, and splits a batch by
``max_concurrency``. Each class adds only its own translation: how an input becomes an engine
prompt, and how results become LangChain outputs.
"""

from __future__ import annotations

import abc
import inspect
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any, ClassVar, cast

from langchain_core.language_models import LanguageModelInput
from langchain_core.outputs import LLMResult
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import get_config_list
from typing_extensions import Self

from langchain_seed._adapters.fields import EngineFields
from langchain_seed._adapters.submission import Futures, Prompt, submit_all, submitted_together


class EngineModel(EngineFields):
    """Batch submission and cache policy shared by the engine-backed LangChain models."""

    _kwargs_in_cache_key: ClassVar[bool] = True
    """Whether LangChain's cache key holds a call's keyword arguments (not for ``BaseLLM``)."""

    @abc.abstractmethod
    def _engine_prompt(self, input: LanguageModelInput, kwargs: Mapping[str, Any]) -> Prompt:
        """One LangChain input (and its call's options) -> the engine prompt its run submits.

        Raises ``ValueError`` / ``TypeError`` for an input the engine cannot run.
        """

    @property
    def _identifying_params(self) -> Mapping[str, Any]:
        return self.identifying_params()

    def _submit(self, prompts: Sequence[Prompt], stop: list[str] | None, kwargs: Any) -> Futures:
        """Futures of one run's prompts: taken from its batch's pre-submission, or new."""
        params, n = self.sampling_params(stop, kwargs)
        return submit_all(self.engine, prompts, params, n)

    @contextmanager
    def _submitted_together(
        self, inputs: Sequence[Any], stop: list[str] | None, kwargs: Mapping[str, Any]
    ) -> Iterator[None]:
        """Submit every input at once; the runs started inside take their futures.

        A no-op for a single input, or when the LangChain cache may serve the call (a cache
        hit must not cost a generation). Inputs the engine would refuse, and calls with bad
        arguments, are left to their own runs, which raise the error in their own place.
        """
        if not isinstance(inputs, list) or len(inputs) < 2 or self.cache_may_serve(stop, kwargs):
            yield
            return
        try:
            params, n = self.sampling_params(stop, kwargs)
        except ValueError:
            yield
            return
        engine, prompts = self.engine, []
        for input_ in inputs:
            try:
                prompt = self._engine_prompt(input_, kwargs)
                engine.check_prompt(prompt, params)
            except (ValueError, TypeError):
                continue
            prompts.append(prompt)
        with submitted_together(engine, prompts, params, n):
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
        return cast(Any, super()).invoke(input, config, **kwargs)

    async def ainvoke(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Any:
        """Async :meth:`invoke`."""
        self._check_one_output("ainvoke", kwargs)
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
    def _one_call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Iterator[Self]:
        """Scope of one ``generate``: the cache policy applied, every input submitted at once.

        Yields the model the call runs on: ``self``, or a copy with the LangChain cache off.
        """
        base_generate = cast(Any, super()).generate
        call = inspect.signature(base_generate).bind(*args, **kwargs).arguments
        inputs, stop = next(iter(call.values())), call.get("stop")
        options = call.get("kwargs", {})
        target = self.for_call(stop, options, kwargs_in_key=self._kwargs_in_cache_key)
        with target._submitted_together(inputs, stop, options):
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
            with self._submitted_together(chunk, None, kwargs):
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
            with self._submitted_together(chunk, None, kwargs):
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
