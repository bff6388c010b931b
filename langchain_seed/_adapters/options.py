"""A LangChain call's options, parsed once: :class:`CallOptions`.

A call to ``SeedLLM`` / ``ChatSeed`` (``invoke``, ``batch``, ``generate``, ``stream``...)
brings ``stop`` and keyword arguments that override the model's fields for that call
(:data:`SAMPLING_KWARGS`), may constrain the output (:data:`GRAMMAR_KWARGS`, tools) and
may bind tools (:data:`TOOL_KWARGS`). :meth:`CallOptions.parse` turns them into the
engine's :class:`~langchain_seed.engine.config.SamplingParams`, the samples per input and
the active tools, once per call; the call hands the object down to its runs (see
:mod:`langchain_seed._adapters.model`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel

from langchain_seed._adapters.tool_parsing import HERMES, ToolFormat
from langchain_seed._adapters.tools import (
    active_tools,
    resolve_tool_choice,
    tool_grammar,
    tool_names,
)
from langchain_seed.engine.config import MAX_LOGPROBS, Grammar, SamplingParams

SAMPLING_KWARGS = frozenset(
    {
        "temperature",
        "max_tokens",
        "top_p",
        "top_k",
        "seed",
        "n",
        "stop",
        "request_timeout",
        "logprobs",
        "top_logprobs",
    }
)
"""Call-time keyword arguments that override the instance's fields for one call."""

GRAMMAR_KWARGS = frozenset({"grammar", "json_schema", "regex", "response_format"})
"""Call-time keyword arguments that constrain the output (at most one per call)."""

TOOL_KWARGS = frozenset({"tools", "tool_choice", "parallel_tool_calls"})
"""Call-time keyword arguments of tool calling (``ChatSeed`` only, set by ``bind_tools``)."""

_ROUTING_KWARGS = frozenset(
    {
        "stream",
        "ls_structured_output_format",
        "structured_output_format",
        "tags",
        "metadata",
        "run_name",
        "run_id",
    }
)
"""Keyword arguments LangChain itself threads through ``generate``; they carry no sampling."""


class CallDefaults(Protocol):
    """What a call's options default to: the model's fields (``EngineFields``)."""

    temperature: float
    max_tokens: int
    top_p: float
    top_k: int
    seed: int | None
    stop: list[str] | None
    n: int
    logprobs: bool | None
    top_logprobs: int | None
    request_timeout: float | None
    _takes_tools: ClassVar[bool]

    def tool_format(self) -> ToolFormat:
        """The format the model's chat template writes tool calls in."""
        ...


@dataclass(frozen=True)
class CallOptions:
    """One call's options: the engine's sampling parameters and what the answer needs."""

    params: SamplingParams
    """The fields overridden by the call's ``stop`` and keyword arguments, with its grammar."""
    n: int
    """Samples per input."""
    kwargs: Mapping[str, Any]
    """The call's keyword arguments as given (tools, ``response_format``, ...)."""
    tools: list[dict[str, Any]] | None
    """The call's bound tools, unless there are none or ``tool_choice`` is ``"none"``."""

    @classmethod
    def parse(
        cls, model: CallDefaults, stop: list[str] | None, kwargs: Mapping[str, Any]
    ) -> CallOptions:
        """The options of a call of ``model`` with ``stop`` and ``kwargs``.

        Raises:
            ValueError: naming the argument, for an unknown keyword or a value out of range.
        """
        takes_tools = model._takes_tools
        supported = SAMPLING_KWARGS | GRAMMAR_KWARGS | (TOOL_KWARGS if takes_tools else set())
        unknown = set(kwargs) - supported - _ROUTING_KWARGS - {"timeout"}
        if unknown:
            raise ValueError(
                f"{type(model).__name__} got unsupported call arguments {sorted(unknown)}; "
                f"supported: {sorted(supported)}"
            )
        if stop is None:
            stop = kwargs.get("stop", model.stop)
        n = kwargs.get("n", model.n)
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"n must be an integer >= 1, got {n!r}")
        timeout = kwargs.get("request_timeout", kwargs.get("timeout", model.request_timeout))
        params = SamplingParams(
            logprobs=_logprobs(
                kwargs.get("logprobs", model.logprobs),
                kwargs.get("top_logprobs", model.top_logprobs),
            ),
            temperature=kwargs.get("temperature", model.temperature),
            top_p=kwargs.get("top_p", model.top_p),
            top_k=kwargs.get("top_k", model.top_k),
            max_tokens=kwargs.get("max_tokens", model.max_tokens),
            stop=tuple(stop or ()),
            seed=kwargs.get("seed", model.seed),
            request_timeout=timeout,
            grammar=call_grammar(kwargs, model.tool_format() if kwargs.get("tools") else None),
        )
        tools = active_tools(kwargs) if takes_tools else None
        return cls(params, n, dict(kwargs), tools)

    @property
    def deterministic(self) -> bool:
        """One sample, greedy or seeded: the same call gives the same answer."""
        return self.n == 1 and (self.params.greedy or self.params.seed is not None)

    def stream_params(self) -> SamplingParams:
        """The parameters of a streamed call, which yields one sample.

        Raises:
            ValueError: ``n`` is not 1.
        """
        if self.n != 1:
            raise ValueError(f"streaming yields one sample: n must be 1, got {self.n}")
        return self.params


def _logprobs(logprobs: Any, top_logprobs: Any) -> int | None:
    """``SamplingParams.logprobs`` of a call's ``logprobs`` / ``top_logprobs``.

    Raises:
        ValueError: a value of the wrong kind, naming the argument.
    """
    if logprobs is not None and not isinstance(logprobs, bool):
        raise ValueError(f"logprobs must be True, False or None, got {logprobs!r}")
    if top_logprobs is None:
        return 0 if logprobs else None
    if isinstance(top_logprobs, bool) or not isinstance(top_logprobs, int):
        raise ValueError(f"top_logprobs must be an integer in [0, 20], got {top_logprobs!r}")
    if not 0 <= top_logprobs <= MAX_LOGPROBS:
        raise ValueError(
            f"top_logprobs must be an integer in [0, {MAX_LOGPROBS}], got {top_logprobs!r}"
        )
    if logprobs is False:
        raise ValueError("top_logprobs needs logprobs (got logprobs=False)")
    return top_logprobs


def call_grammar(kwargs: Mapping[str, Any], fmt: ToolFormat | None = None) -> Grammar | None:
    """The grammar a call's keyword arguments ask for, or ``None``.

    ``grammar`` (a :class:`Grammar`), ``json_schema`` (a JSON-schema dict or text, a pydantic
    class or a TypedDict), ``regex``, ``response_format`` (OpenAI's ``{"type":
    "json_object"}`` or ``{"type": "json_schema", "json_schema": {"schema": ...}}``), or
    ``tools`` with a ``tool_choice`` other than ``"none"``. At most one of them, except that
    tools and a ``response_format`` / ``json_schema`` go together: the answer is tool calls
    or, with ``tool_choice="auto"``, one JSON value of that schema (LangChain's
    ``create_agent`` asks for both in one call).

    Args:
        kwargs: the call's keyword arguments.
        fmt: the model's tool-call format (Hermes when not given).

    Raises:
        ValueError: two constraints in one call, or a value of the wrong kind.
    """
    given = sorted(k for k in GRAMMAR_KWARGS if kwargs.get(k) is not None)
    tools = active_tools(kwargs)  # bound tools with tool_choice "none" constrain nothing
    if tools:
        answer = None
        if given in (["json_schema"], ["response_format"]):  # tool calls or this answer
            answer = _answer_schema(kwargs[given[0]], given[0])
        elif given:
            raise ValueError(
                f"one output constraint per call, got {[*given, 'tools']} (tools combine "
                "with response_format or json_schema only)"
            )
        choice = resolve_tool_choice(kwargs.get("tool_choice"), tool_names(tools))
        parallel = kwargs.get("parallel_tool_calls") is not False
        return tool_grammar(tools, choice, parallel=parallel, fmt=fmt or HERMES, answer=answer)
    if len(given) > 1:
        raise ValueError(f"one output constraint per call, got {given}")
    if not given:
        return None
    key = given[0]
    value = kwargs[key]
    if key == "grammar":
        if not isinstance(value, Grammar):
            raise TypeError(f"grammar must be a Grammar, got {type(value).__name__}")
        return value
    if key == "json_schema":
        return Grammar.json_schema(json_schema_of(value))
    if key == "regex":
        return Grammar.regex(value)
    return _response_format_grammar(value)


def _answer_schema(value: Any, key: str) -> dict[str, Any]:
    """The JSON schema of a ``json_schema`` / ``response_format`` argument (a dict)."""
    if key == "response_format":
        grammar = _response_format_grammar(value)
    else:
        grammar = Grammar.json_schema(json_schema_of(value))
    return dict(json.loads(grammar.spec)) if grammar.spec else {"type": "object"}


def json_schema_of(schema: Any) -> dict[str, Any] | str:
    """A JSON schema (dict or text) from a dict, JSON text, pydantic class or TypedDict."""
    if isinstance(schema, (dict, str)):
        return schema
    from langchain_core.utils.function_calling import convert_to_json_schema

    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return schema.model_json_schema()
    try:
        return convert_to_json_schema(schema)
    except (ValueError, TypeError) as exc:
        raise TypeError(
            "json_schema must be a dict, JSON text, a pydantic class or a TypedDict, "
            f"got {schema!r}"
        ) from exc


def _response_format_grammar(value: Any) -> Grammar:
    if not isinstance(value, Mapping) or value.get("type") not in ("json_object", "json_schema"):
        raise ValueError(
            "response_format must be {'type': 'json_object'} or {'type': 'json_schema', "
            f"'json_schema': {{'schema': ...}}}}, got {value!r}"
        )
    if value["type"] == "json_object":
        return Grammar.json_object()
    inner = value.get("json_schema") or {}
    schema = inner.get("schema") if isinstance(inner, Mapping) else None
    if schema is None:
        raise ValueError("response_format of type json_schema needs json_schema.schema")
    return Grammar.json_schema(json_schema_of(schema))
