"""Tool calling for ``ChatSeed``: tool formats, the tool-call grammar and prompt.

Calls are written in the format the model's own chat template renders them
(:func:`~langchain_seed.engine.execution.loading.template_tool_format`): Llama 3.x's JSON
``{"name": ..., "parameters": ...}``, or the Hermes / Qwen one, which many open models are
trained on and which is the fallback for any other template::

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

Tools are shown to the model through its chat template (``tools=``) when the template
renders tools, otherwise through :data:`TOOLS_PROMPT` (Hermes) added to the system message.
The engine constrains the output with a structural-tag grammar (xgrammar; a family's own
tag from ``xgrammar.get_model_structural_tag``, this module's for Hermes): in ``"auto"``
mode free text, in which every call that starts must continue as a valid call of a bound
tool; in ``"required"`` mode only tool calls; with a named tool exactly one call of it. With
a response format as well (``create_agent``'s provider strategy), ``"auto"`` allows tool
calls or one JSON answer of that schema. A call is therefore valid by construction unless
``max_tokens`` cuts it short, and the cut call is reported in ``invalid_tool_calls``.
Reading the calls back: :mod:`.tool_parsing`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel

from langchain_seed._adapters.tool_parsing import (
    CLOSE,
    HERMES,
    OPEN,
    ToolCallStream,
    ToolFormat,
    parse_tool_calls,
)
from langchain_seed.engine.config import Grammar

TOOLS_PROMPT = """# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{tools}
</tools>

For each function call, return a json object with function name and arguments within \
<tool_call></tool_call> XML tags:
<tool_call>
{{"name": <function-name>, "arguments": <args-json-object>}}
</tool_call>"""
"""How tools are described to a model whose chat template does not render tools."""

TOOL_CHOICES = ("auto", "none", "required", "any")

ToolLike = Mapping[str, Any] | type | Callable[..., Any] | BaseTool


def openai_tool(tool: ToolLike, *, strict: bool | None = None) -> dict[str, Any]:
    """``tool`` in OpenAI's format, its parameters the tool's own JSON schema where it has refs.

    ``convert_to_openai_tool`` inlines every ``$ref`` of a pydantic schema and turns a
    recursive one into ``{}`` (any value at all), so a grammar built from its output lets
    through arguments the schema forbids: a recursive model's answers then fail validation.
    Where the tool's own schema (pydantic's, with its ``$defs``) has refs it is used as it
    is; the grammar compiler resolves refs, recursive ones included. Without refs both
    schemas state the same constraints and the shorter converted one is kept.
    """
    spec = convert_to_openai_tool(tool, strict=strict)  # type: ignore[arg-type]
    own = _own_schema(tool)
    if own is not None and _has_ref(own) and isinstance(spec.get("function"), dict):
        spec["function"]["parameters"] = _rooted(own)
    return spec


def _rooted(schema: dict[str, Any]) -> dict[str, Any]:
    """A schema that is only a ref to one of its ``$defs``, with that object at its top.

    A recursive model's schema is ``{"$defs": {...}, "$ref": "#/$defs/Node"}``; templates
    and prompts show parameters as ``type`` and ``properties``, so those go to the top, and
    the ``$defs`` stay beside them, so every ref still resolves.
    """
    ref, defs = schema.get("$ref"), schema.get("$defs")
    if set(schema) == {"$ref", "$defs"} and isinstance(ref, str) and isinstance(defs, dict):
        root = defs.get(ref.removeprefix("#/$defs/"))
        if ref.startswith("#/$defs/") and isinstance(root, dict):
            return {**root, "$defs": defs}
    return schema


def _own_schema(tool: Any) -> dict[str, Any] | None:
    """The JSON schema of a pydantic class, a tool's pydantic arguments or a function's."""
    if isinstance(tool, BaseTool):
        tool = tool.tool_call_schema
    elif callable(tool) and not isinstance(tool, type):
        from langchain_core.tools.base import create_schema_from_function

        try:  # the model convert_to_openai_tool builds for a function
            tool = create_schema_from_function(
                tool.__name__,
                tool,
                filter_args=(),
                parse_docstring=True,
                error_on_invalid_docstring=False,
                include_injected=False,
            )
        except Exception:  # noqa: BLE001 - then the converted schema stands
            return None
    if isinstance(tool, type) and issubclass(tool, BaseModel):
        return tool.model_json_schema()
    return None


def _has_ref(schema: Any) -> bool:
    if isinstance(schema, dict):
        return "$ref" in schema or any(_has_ref(v) for v in schema.values())
    if isinstance(schema, list):
        return any(_has_ref(v) for v in schema)
    return False


def format_tools(tools: Sequence[ToolLike], *, strict: bool | None = None) -> list[dict[str, Any]]:
    """Tools in OpenAI's format (:func:`openai_tool`), each checked.

    A name given twice (a class and its schema dict, say) keeps its first definition.

    Raises:
        ValueError: a tool without a name or without a description.
    """
    formatted: dict[str, dict[str, Any]] = {}
    for tool in tools:
        spec = openai_tool(tool, strict=strict)
        function = spec.get("function", {})
        name = function.get("name")
        if not name:
            raise ValueError(f"every tool needs a name; this one has none: {spec}")
        if not function.get("description"):
            raise ValueError(
                f"tool {name!r} has no description: the model reads it to decide when to call "
                "the tool (add a docstring or a description)"
            )
        function.setdefault("parameters", {"type": "object", "properties": {}})
        formatted.setdefault(name, spec)
    return list(formatted.values())


def tool_names(tools: Sequence[Mapping[str, Any]]) -> list[str]:
    """Names of OpenAI-format tools."""
    return [t["function"]["name"] for t in tools]


def resolve_tool_choice(choice: Any, names: Sequence[str]) -> str:
    """``tool_choice`` -> ``"auto"``, ``"none"``, ``"required"`` or a bound tool's name.

    Accepts ``None`` / ``"auto"``, ``"none"``, ``"any"`` / ``"required"``, ``True``
    (required; the one tool when only one is bound), ``False`` (none), a tool name, or an
    OpenAI-style ``{"type": "function", "function": {"name": ...}}`` dict.

    Raises:
        ValueError: a name that is not bound (listing the bound ones) or an unknown value.
    """
    if choice is None:
        return "auto"
    if isinstance(choice, bool):
        if not choice:
            return "none"
        return names[0] if len(names) == 1 else "required"
    if isinstance(choice, Mapping):
        name = (choice.get("function") or {}).get("name") or choice.get("name")
        if not isinstance(name, str):
            raise ValueError(f"tool_choice dict needs function.name, got {dict(choice)}")
        choice = name
    if not isinstance(choice, str):
        raise ValueError(f"tool_choice must be a string, bool or dict, got {choice!r}")
    if choice == "any":
        return "required"
    if choice in TOOL_CHOICES:
        return choice
    if choice not in names:
        raise ValueError(
            f"tool_choice {choice!r} is not a bound tool; bound tools: {list(names)} "
            f"(or one of {TOOL_CHOICES})"
        )
    return choice


def tool_grammar(
    tools: Sequence[Mapping[str, Any]],
    choice: str,
    *,
    parallel: bool = True,
    fmt: ToolFormat = HERMES,
    answer: Mapping[str, Any] | None = None,
) -> Grammar | None:
    """The structural-tag grammar of ``choice`` over ``tools`` (``None`` for ``"none"``).

    Args:
        tools: OpenAI-format tools.
        choice: ``"auto"``, ``"required"`` or a tool's name (:func:`resolve_tool_choice`).
        parallel: more than one call per answer.
        fmt: the model's tool-call format.
        answer: a JSON schema the answer may follow instead of calling tools (``"auto"``
            only: a required or named call leaves no room for an answer).
    """
    if choice == "none":
        return None
    if answer is not None and choice == "auto":
        calls = _calls_format(tools, "required", parallel, fmt)
        json_answer = {"type": "json_schema", "json_schema": dict(answer)}
        either = {"type": "or", "elements": [calls, json_answer]}
        return Grammar.structural_tag({"type": "structural_tag", "format": either})
    return Grammar.structural_tag(
        {"type": "structural_tag", "format": _calls_format(tools, choice, parallel, fmt)}
    )


def _calls_format(
    tools: Sequence[Mapping[str, Any]], choice: str, parallel: bool, fmt: ToolFormat
) -> dict[str, Any]:
    """The structural-tag ``format`` of ``choice`` over ``tools`` in ``fmt``."""
    if fmt.family is not None:
        from xgrammar import get_model_structural_tag

        named = {"type": "function", "function": {"name": choice}}
        tag = get_model_structural_tag(
            fmt.family,
            tools=[dict(t) for t in tools],
            tool_choice=choice if choice in ("auto", "required") else named,  # type: ignore[arg-type]
            reasoning="disabled",
            max_whitespace_cnt=1,
            parallel_tool_calls=parallel,
        )
        return dict(json.loads(tag.model_dump_json())["format"])
    return _hermes_format(tools, choice, parallel)


def _hermes_format(
    tools: Sequence[Mapping[str, Any]], choice: str, parallel: bool
) -> dict[str, Any]:
    """The Hermes structural-tag ``format`` (this package's own; xgrammar has none)."""
    chosen = [t for t in tools if choice in ("auto", "required") or t["function"]["name"] == choice]
    tags = [
        {
            "type": "tag",
            "begin": f'{OPEN}\n{{"name": {json.dumps(t["function"]["name"])}, "arguments": ',
            "content": {
                "type": "json_schema",
                "json_schema": t["function"]["parameters"],
                # one-line JSON as the prompt shows it (a run of whitespace is one character)
                "max_whitespace_cnt": 1,
            },
            "end": f"}}\n{CLOSE}",
        }
        for t in chosen
    ]
    if choice == "auto":
        fmt: dict[str, Any] = {
            "type": "triggered_tags",
            "triggers": [OPEN],
            "tags": tags,
            "at_least_one": False,
            "stop_after_first": not parallel,
        }
    else:
        calls = {
            "type": "tags_with_separator",
            "tags": tags,
            "separator": "\n",
            "at_least_one": True,
            "stop_after_first": not parallel or choice != "required",
        }
        # A newline after the last call may end the answer: otherwise a model that ends
        # its line would be made to start another call.
        newline = {"type": "optional", "content": {"type": "const_string", "value": "\n"}}
        fmt = {"type": "sequence", "elements": [calls, newline]}
    return fmt


def tools_system_text(tools: Sequence[Mapping[str, Any]]) -> str:
    """:data:`TOOLS_PROMPT` with the tools filled in."""
    return TOOLS_PROMPT.format(tools="\n".join(json.dumps(t) for t in tools))


def active_tools(kwargs: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """The call's bound tools, unless there are none or ``tool_choice`` is ``"none"``."""
    tools = kwargs.get("tools")
    if not tools or resolve_tool_choice(kwargs.get("tool_choice"), tool_names(tools)) == "none":
        return None
    return list(tools)


def with_system_text(turns: Sequence[dict[str, str]], text: str) -> list[dict[str, str]]:
    """Chat turns with ``text`` added to the system turn (one is added first if none)."""
    out = [dict(t) for t in turns]
    if out and out[0]["role"] == "system":
        out[0]["content"] = f"{out[0]['content']}\n\n{text}" if out[0]["content"] else text
    else:
        out.insert(0, {"role": "system", "content": text})
    return out


def answer_fields(
    text: str, tools: Sequence[Mapping[str, Any]] | None, fmt: ToolFormat = HERMES
) -> dict[str, Any]:
    """``AIMessage`` fields of a completion: its content, and its tool calls when tools are on."""
    if not tools:
        return {"content": text}
    parsed = parse_tool_calls(text, tool_names(tools), fmt)
    return {
        "content": parsed.content,
        "tool_calls": parsed.tool_calls,
        "invalid_tool_calls": parsed.invalid_tool_calls,
    }


def tool_stream(
    tools: Sequence[Mapping[str, Any]] | None, fmt: ToolFormat = HERMES
) -> ToolCallStream | None:
    """A splitter for a streamed call with active ``tools``, else ``None``."""
    return ToolCallStream(tool_names(tools), fmt) if tools else None


def call_text(name: str, args: Mapping[str, Any]) -> str:
    """One tool call written in the model's format (for AI messages rendered back)."""
    return f"{OPEN}\n{json.dumps({'name': name, 'arguments': dict(args)})}\n{CLOSE}"
