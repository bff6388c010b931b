"""``ChatSeed.with_structured_output``: a constrained call followed by a parser.

- ``"json_schema"``: the answer is constrained to the schema (a JSON-schema grammar);
- ``"function_calling"``: the answer is one forced call of a tool whose parameters are the
  schema (the tool-call grammar);
- ``"json_mode"``: the answer is constrained to some JSON object and parsed against the
  schema afterwards.

The bound call carries ``ls_structured_output_format`` the way LangChain traces it. The
schema (or "one JSON object") is also stated in the system message (:data:`SCHEMA_PROMPT`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from operator import itemgetter
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.output_parsers.openai_tools import (
    JsonOutputKeyToolsParser,
    PydanticToolsParser,
)
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from pydantic import BaseModel

from langchain_seed._adapters.options import json_schema_of
from langchain_seed._adapters.tools import openai_tool

METHODS = ("json_schema", "function_calling", "json_mode")

SCHEMA_PROMPT = "Answer with one JSON object that follows this JSON schema:\n{schema}"
"""What ``ChatSeed`` adds to the system message of a call constrained to a JSON schema (the
grammar enforces the schema; a small model writes better values when it is told it)."""

JSON_PROMPT = "Answer with one JSON object."
"""What ``ChatSeed`` adds to the system message of a JSON-mode call."""


def answer_format_text(kwargs: Mapping[str, Any]) -> str | None:
    """The system text for a call with a ``json_schema`` or ``response_format``, else None."""
    fmt = kwargs.get("response_format")
    schema = kwargs.get("json_schema")
    if schema is None and isinstance(fmt, Mapping) and fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
    if schema is not None:
        value = json_schema_of(schema)
        return SCHEMA_PROMPT.format(schema=value if isinstance(value, str) else json.dumps(value))
    if isinstance(fmt, Mapping) and fmt.get("type") == "json_object":
        return JSON_PROMPT
    return None


def structured_output(
    model: BaseChatModel,
    schema: dict[str, Any] | type,
    *,
    include_raw: bool,
    method: Literal["json_schema", "function_calling", "json_mode"],
    strict: bool | None,
    **kwargs: Any,
) -> Runnable[Any, Any]:
    """The runnable ``ChatSeed.with_structured_output`` returns (see its docstring).

    ``model`` is the ``ChatSeed`` (its ``bind`` and ``bind_tools``).

    Raises:
        ValueError: an unknown ``method``, or a schema the converters do not accept.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    pydantic = isinstance(schema, type) and issubclass(schema, BaseModel)
    trace = {"kwargs": {"method": method, "strict": strict}, "schema": schema}
    parser: Runnable[Any, Any]
    if method == "function_calling":
        tool = openai_tool(schema)  # parameters: the schema's own JSON schema (recursion kept)
        tool["function"].setdefault("description", "Return the answer in this structure.")
        name = tool["function"]["name"]
        bound = model.bind_tools(
            [tool], tool_choice=name, ls_structured_output_format=trace, **kwargs
        )
        parser = (
            PydanticToolsParser(tools=[schema], first_tool_only=True)  # type: ignore[list-item]
            if pydantic
            else JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
        )
    else:
        constraint = (
            {"json_schema": schema}
            if method == "json_schema"
            else {"response_format": {"type": "json_object"}}
        )
        bound = model.bind(**constraint, ls_structured_output_format=trace, **kwargs)
        parser = (
            PydanticOutputParser(pydantic_object=schema)  # type: ignore[arg-type]
            if pydantic
            else JsonOutputParser()
        )
    if not include_raw:
        return bound | parser
    parsed = RunnablePassthrough.assign(
        parsed=itemgetter("raw") | parser, parsing_error=lambda _: None
    )
    unparsed = RunnablePassthrough.assign(parsed=lambda _: None)
    return RunnableMap(raw=bound) | parsed.with_fallbacks([unparsed], exception_key="parsing_error")
