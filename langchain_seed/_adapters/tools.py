"""Tool calling for ``ChatSeed``: tool formats, the tool-call grammar, prompt and parsing.

The tool-call format is the Hermes / Qwen one, which many open models are trained on::

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

Tools are shown to the model through its chat template (``tools=``) when the template
renders tools, otherwise through :data:`TOOLS_PROMPT` added to the system message. The
engine constrains the output with a structural-tag grammar (xgrammar): in ``"auto"`` mode
free text, in which every ``<tool_call>`` must continue as a valid call of a bound tool; in
``"required"`` mode only tool calls; with a named tool exactly one call of it. A call is
therefore valid by construction unless ``max_tokens`` cuts it short, and the cut call is
reported in ``invalid_tool_calls``.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import InvalidToolCall, ToolCall, ToolCallChunk
from langchain_core.messages.tool import invalid_tool_call, tool_call, tool_call_chunk
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool

from langchain_seed.engine.config import Grammar

OPEN, CLOSE = "<tool_call>", "</tool_call>"

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


def format_tools(tools: Sequence[ToolLike], *, strict: bool | None = None) -> list[dict[str, Any]]:
    """Tools in OpenAI's format (``convert_to_openai_tool``), each checked.

    A name given twice (a class and its schema dict, say) keeps its first definition.

    Raises:
        ValueError: a tool without a name or without a description.
    """
    formatted: dict[str, dict[str, Any]] = {}
    for tool in tools:
        spec = convert_to_openai_tool(tool, strict=strict)  # type: ignore[arg-type]
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
    tools: Sequence[Mapping[str, Any]], choice: str, *, parallel: bool = True
) -> Grammar | None:
    """The structural-tag grammar of ``choice`` over ``tools`` (``None`` for ``"none"``)."""
    if choice == "none":
        return None
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
    return Grammar.structural_tag({"type": "structural_tag", "format": fmt})


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


def answer_fields(text: str, tools: Sequence[Mapping[str, Any]] | None) -> dict[str, Any]:
    """``AIMessage`` fields of a completion: its content, and its tool calls when tools are on."""
    if not tools:
        return {"content": text}
    parsed = parse_tool_calls(text, tool_names(tools))
    return {
        "content": parsed.content,
        "tool_calls": parsed.tool_calls,
        "invalid_tool_calls": parsed.invalid_tool_calls,
    }


def tool_stream(kwargs: Mapping[str, Any]) -> ToolCallStream | None:
    """A splitter for a streamed call with active tools, else ``None``."""
    tools = active_tools(kwargs)
    return ToolCallStream(tool_names(tools)) if tools else None


def call_text(name: str, args: Mapping[str, Any]) -> str:
    """One tool call written in the model's format (for AI messages rendered back)."""
    return f"{OPEN}\n{json.dumps({'name': name, 'arguments': dict(args)})}\n{CLOSE}"


# ---------------------------------------------------------------------- parsing


_BLOCK = re.compile(re.escape(OPEN) + r"(.*?)" + re.escape(CLOSE), re.DOTALL)


@dataclass
class ParsedCalls:
    """A completion split into its text and its tool calls."""

    content: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    invalid_tool_calls: list[InvalidToolCall] = field(default_factory=list)


def _new_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def parse_block(body: str, names: Sequence[str]) -> ToolCall | InvalidToolCall:
    """One ``<tool_call>`` body -> a tool call, or an invalid tool call with the error."""
    try:
        value = json.loads(body)
    except json.JSONDecodeError as exc:
        return invalid_tool_call(name=None, args=body.strip(), id=_new_id(), error=str(exc))
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return invalid_tool_call(
            name=None, args=body.strip(), id=_new_id(), error="a tool call needs a name"
        )
    name = value["name"]
    args = value.get("arguments", value.get("parameters", {}))
    if not isinstance(args, dict):
        error = "arguments must be a JSON object"
        return invalid_tool_call(name=name, args=json.dumps(args), id=_new_id(), error=error)
    if names and name not in names:
        error = f"{name!r} is not a bound tool; bound tools: {list(names)}"
        return invalid_tool_call(name=name, args=json.dumps(args), id=_new_id(), error=error)
    return tool_call(name=name, args=args, id=_new_id())


def parse_tool_calls(text: str, names: Sequence[str]) -> ParsedCalls:
    """Split a completion into content and tool calls; an unclosed call is invalid."""
    out = ParsedCalls("")
    pieces: list[str] = []
    end = 0
    for match in _BLOCK.finditer(text):
        pieces.append(text[end : match.start()])
        _add(out, parse_block(match.group(1), names))
        end = match.end()
    rest = text[end:]
    if OPEN in rest:  # a call cut short (max_tokens)
        before, _, body = rest.partition(OPEN)
        pieces.append(before)
        error = "the tool call is incomplete (max_tokens reached?)"
        out.invalid_tool_calls.append(
            invalid_tool_call(name=None, args=body.strip(), id=_new_id(), error=error)
        )
    else:
        pieces.append(rest)
    out.content = "".join(pieces).strip() if out.tool_calls or out.invalid_tool_calls else text
    return out


def _add(out: ParsedCalls, call: ToolCall | InvalidToolCall) -> None:
    if call.get("type") == "invalid_tool_call":
        out.invalid_tool_calls.append(call)  # type: ignore[arg-type]
    else:
        out.tool_calls.append(call)  # type: ignore[arg-type]


class ToolCallStream:
    """Splits streamed text into text pieces and whole tool-call chunks.

    Text that may be the start of ``<tool_call>`` is held back until it is known; a call
    is emitted as one ``tool_call_chunk`` once its ``</tool_call>`` arrives. A call that does
    not parse, or is cut short, stays text (``invoke`` reports it in ``invalid_tool_calls``;
    LangChain's chunk merging would parse a partial call into a valid-looking one).
    """

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self._buffer = ""
        self._index = 0

    def feed(self, piece: str) -> Iterator[str | ToolCallChunk]:
        """Text pieces and tool-call chunks complete after ``piece``."""
        self._buffer += piece
        while self._buffer:
            start = self._buffer.find(OPEN)
            if start < 0:
                keep = _partial_suffix(self._buffer, OPEN)
                text, self._buffer = (
                    self._buffer[: len(self._buffer) - keep],
                    self._buffer[-keep:] if keep else "",
                )
                if text:
                    yield text
                return
            if start > 0:
                yield self._buffer[:start]
                self._buffer = self._buffer[start:]
            end = self._buffer.find(CLOSE)
            if end < 0:
                return
            block = self._buffer[: end + len(CLOSE)]
            self._buffer = self._buffer[end + len(CLOSE) :].lstrip("\n")
            call = parse_block(block[len(OPEN) : -len(CLOSE)], self.names)
            if call.get("type") == "invalid_tool_call":
                yield block  # text: LangChain would turn a chunk into a valid-looking call
            else:
                yield self._chunk(call)

    def close(self) -> Iterator[str | ToolCallChunk]:
        """What is left at the end, as text: held-back text, or an unclosed call.

        An unclosed call (cut by ``max_tokens``) stays text: LangChain would parse its
        partial JSON into a tool call when the chunks are added up.
        """
        rest, self._buffer = self._buffer, ""
        if rest:
            yield rest

    def _chunk(self, call: ToolCall | InvalidToolCall) -> ToolCallChunk:
        args = call.get("args")
        text = args if isinstance(args, str) else json.dumps(args)
        return tool_call_chunk(
            name=call.get("name"), args=text, id=call.get("id"), index=self._next()
        )

    def _next(self) -> int:
        self._index += 1
        return self._index - 1


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``marker``."""
    for size in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-size:]):
            return size
    return 0
