"""Reading tool calls out of a completion, whole (``invoke``) or streamed.

A call is written as the grammar of :mod:`.tools` makes the model write it, in the model's
:class:`ToolFormat`: Hermes / Qwen (the fallback) or Llama 3.x::

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

    {"name": "get_weather", "parameters": {"city": "Paris"}}

A Hermes call ends at the ``</tool_call>`` that follows its complete JSON value, not at the
first ``</tool_call>`` in the text: a string argument may hold that marker, and the grammar
allows it; a Llama call ends with its JSON value. The value's end is found by one pass that
tracks strings and nesting (:class:`_ValueEnd`), so parsing is linear in the text and
streamed text is never read twice; the value is then decoded with raw control characters
allowed inside strings, as the grammar allows them. What the grammar lets through parses.
"""

from __future__ import annotations

import itertools
import json
import re
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from langchain_core.messages import InvalidToolCall, ToolCall, ToolCallChunk
from langchain_core.messages.tool import invalid_tool_call, tool_call, tool_call_chunk

OPEN, CLOSE = "<tool_call>", "</tool_call>"


@dataclass(frozen=True)
class ToolFormat:
    """How a model family writes a tool call: where it starts and ends, what grammar fits.

    Attributes:
        name: ``"hermes"`` or ``"llama"``.
        open: the text that starts a call.
        close: the text that ends it after its JSON value (``""``: the value ends it).
        open_in_value: ``open`` is the beginning of the call's JSON value itself.
        family: xgrammar's structural-tag key for the format
            (``xgrammar.get_model_structural_tag``); ``None``: this package's Hermes tag.
    """

    name: str
    open: str
    close: str
    open_in_value: bool = False
    family: str | None = None


HERMES = ToolFormat("hermes", OPEN, CLOSE)
LLAMA = ToolFormat("llama", '{"name": ', "", open_in_value=True, family="llama")
TOOL_FORMATS = {"hermes": HERMES, "llama": LLAMA, "none": HERMES}
"""``EngineClient.tool_call_format`` -> the format calls are constrained and read in (a
template that renders no calls gets Hermes, written into the message text)."""

_DECODER = json.JSONDecoder(strict=False)
"""Decodes a call's JSON. Not strict: raw control characters (a newline, a tab) inside a
string are JSON the grammar allows, so they must parse."""

_OUTSIDE_STRING = re.compile(r'["{}\[\]]')
"""What changes the state outside a string: a string starts, a nesting opens or closes."""
_INSIDE_STRING = re.compile(r'["\\]')
"""What changes the state inside a string: it ends, or an escape starts."""

_NOT_JSON = -1


class _ValueEnd:
    """Finds where the JSON value after ``<tool_call>`` ends, reading text piece by piece.

    Tracks whether it is inside a string (and escapes) and how deep in objects and arrays,
    so brackets and markers inside strings do not count. Each character is read once.
    """

    def __init__(self) -> None:
        self.started = False
        self.depth = 0
        self.in_string = False
        self.escaped = False  # the previous piece ended inside a string on a backslash

    def feed(self, piece: str) -> int | None:
        """Index in ``piece`` just past the value, ``None`` if it goes on, or ``_NOT_JSON``.

        ``_NOT_JSON``: the first non-space character cannot start an object, array or string.
        """
        pos = 0
        if not self.started:
            stripped = piece.lstrip()
            if not stripped:
                return None
            pos = len(piece) - len(stripped)
            if stripped[0] not in '{["':
                return _NOT_JSON
            self.started = True
        while True:
            if self.in_string:
                if self.escaped:
                    if pos >= len(piece):
                        return None
                    self.escaped, pos = False, pos + 1
                    continue
                match = _INSIDE_STRING.search(piece, pos)
                if match is None:
                    return None
                pos = match.end()
                if match.group() == "\\":
                    self.escaped = True
                    continue
                self.in_string = False
                if self.depth == 0:  # a string was the whole value
                    return pos
                continue
            match = _OUTSIDE_STRING.search(piece, pos)
            if match is None:
                return None
            pos, char = match.end(), match.group()
            if char == '"':
                self.in_string = True
            elif char in "{[":
                self.depth += 1
            else:
                self.depth -= 1
                if self.depth <= 0:
                    return pos


@dataclass
class _Block:
    """One tool-call block of a completion, markers included."""

    text: str
    body: str
    """The call's JSON value (and any whitespace around it), markers left out."""
    closed: bool
    """False: the text ended inside the call (``max_tokens``)."""


class _Splitter:
    """Splits text, fed piece by piece, into plain text and tool-call blocks.

    States: ``text`` (looking for the format's opening marker; a partial marker is held
    back), ``value`` (reading the call's JSON value), ``close`` (after the value:
    whitespace, then the closing marker is expected) and ``skip`` (the call is not well
    formed: it ends at the next closing marker, as it reads). A format whose value ends
    the call (Llama) ends the block with the value.
    """

    def __init__(self, fmt: ToolFormat = HERMES) -> None:
        self._fmt = fmt
        self._state = "text"
        self._held = ""  # text state: a possible start of OPEN; close / skip: a possible CLOSE
        self._block: list[str] = []
        self._value = _ValueEnd()

    def feed(self, piece: str) -> Iterator[str | _Block]:
        """Text pieces and closed blocks complete after ``piece``."""
        fmt = self._fmt
        while piece:
            if self._state == "text":
                text, self._held = self._held + piece, ""
                start = text.find(fmt.open)
                if start < 0:
                    keep = _partial_suffix(text, fmt.open)
                    if len(text) > keep:
                        yield text[: len(text) - keep]
                    self._held = text[len(text) - keep :]
                    return
                if start:
                    yield text[:start]
                self._state, self._block, self._value = "value", [], _ValueEnd()
                if fmt.open_in_value:  # the marker is the value's start: the reader reads it
                    piece = text[start:]
                else:
                    self._block.append(fmt.open)
                    piece = text[start + len(fmt.open) :]
            elif self._state == "value":
                end = self._value.feed(piece)
                if end is None:
                    self._block.append(piece)
                    return
                if end == _NOT_JSON:
                    self._state = "skip"
                    continue
                self._block.append(piece[:end])
                self._state, piece = "close", piece[end:]
                if not fmt.close:  # the value ends the call
                    yield self._end("")
            elif self._state == "close":
                text = self._held + piece
                rest = text.lstrip()
                self._block.append(text[: len(text) - len(rest)])
                self._held = ""
                if rest.startswith(fmt.close):
                    yield self._end(fmt.close)
                    piece = rest[len(fmt.close) :]
                elif fmt.close.startswith(rest):  # nothing but whitespace, or a part of CLOSE
                    self._held = rest
                    return
                else:  # something else follows the value: not a well formed call
                    self._state, piece = "skip", rest
            else:  # skip
                text, self._held = self._held + piece, ""
                end = text.find(fmt.close)
                if end < 0:
                    keep = _partial_suffix(text, fmt.close)
                    self._block.append(text[: len(text) - keep])
                    self._held = text[len(text) - keep :]
                    return
                self._block.append(text[:end])
                yield self._end(fmt.close)
                piece = text[end + len(fmt.close) :]

    def close(self) -> Iterator[str | _Block]:
        """What is left at the end: held-back text, or a call the text ended inside."""
        held, self._held = self._held, ""
        if self._state == "text":
            if held:
                yield held
        else:
            self._block.append(held)
            self._state = "text"
            text = "".join(self._block)
            yield _Block(text, text[len(self._prefix) :], closed=False)

    @property
    def _prefix(self) -> str:
        """What a block's text holds before its JSON value (the marker, unless in the value)."""
        return "" if self._fmt.open_in_value else self._fmt.open

    def _end(self, marker: str) -> _Block:
        self._block.append(marker)
        block, self._block, self._state = "".join(self._block), [], "text"
        return _Block(block, block[len(self._prefix) : len(block) - len(marker)], closed=True)


@dataclass
class ParsedCalls:
    """A completion split into its text and its tool calls."""

    content: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    invalid_tool_calls: list[InvalidToolCall] = field(default_factory=list)


def _new_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def parse_block(body: str, names: Sequence[str]) -> ToolCall | InvalidToolCall:
    """One ``<tool_call>`` body -> a tool call, or an invalid tool call with the error.

    The body is one JSON object (raw control characters allowed inside strings, as the
    grammar allows them) with nothing but whitespace around it.
    """
    text = body.strip()
    try:
        value, end = _DECODER.raw_decode(text)
        if end != len(text):
            raise json.JSONDecodeError("Extra data", text, end)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deeply
        return invalid_tool_call(name=None, args=text, id=_new_id(), error=str(exc))
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return invalid_tool_call(
            name=None, args=text, id=_new_id(), error="a tool call needs a name"
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


def parse_tool_calls(text: str, names: Sequence[str], fmt: ToolFormat = HERMES) -> ParsedCalls:
    """Split a completion into content and tool calls; an unclosed call is invalid."""
    out = ParsedCalls("")
    pieces: list[str] = []
    splitter = _Splitter(fmt)
    for part in itertools.chain(splitter.feed(text), splitter.close()):
        if isinstance(part, str):
            pieces.append(part)
        elif part.closed:
            _add(out, parse_block(part.body, names))
        else:  # a call cut short (max_tokens)
            error = "the tool call is incomplete (max_tokens reached?)"
            out.invalid_tool_calls.append(
                invalid_tool_call(name=None, args=part.body.strip(), id=_new_id(), error=error)
            )
    out.content = "".join(pieces).strip() if out.tool_calls or out.invalid_tool_calls else text
    return out


def _add(out: ParsedCalls, call: ToolCall | InvalidToolCall) -> None:
    if call.get("type") == "invalid_tool_call":
        out.invalid_tool_calls.append(call)  # type: ignore[arg-type]
    else:
        out.tool_calls.append(call)  # type: ignore[arg-type]


class ToolCallStream:
    """Splits streamed text into text pieces and whole tool-call chunks.

    Text that may be the start of a call (``<tool_call>``) is held back until it is known; a
    call is emitted as one ``tool_call_chunk`` once it is complete (the ``</tool_call>``
    after its JSON value, or in the Llama format the value's end). A call that does not
    parse, or is cut short, stays text (``invoke`` reports it in ``invalid_tool_calls``;
    LangChain's chunk merging would parse a partial call into a valid-looking one). Each
    piece is read once: streaming a long call costs linear time.
    """

    def __init__(self, names: Sequence[str], fmt: ToolFormat = HERMES) -> None:
        self.names = list(names)
        self._splitter = _Splitter(fmt)
        self._after_call = False  # newlines right after a call are dropped
        self._index = 0

    def feed(self, piece: str) -> Iterator[str | ToolCallChunk]:
        """Text pieces and tool-call chunks complete after ``piece``."""
        yield from self._parts(self._splitter.feed(piece))

    def close(self) -> Iterator[str | ToolCallChunk]:
        """What is left at the end, as text: held-back text, or an unclosed call.

        An unclosed call (cut by ``max_tokens``) stays text: LangChain would parse its
        partial JSON into a tool call when the chunks are added up.
        """
        yield from self._parts(self._splitter.close())

    def _parts(self, parts: Iterable[str | _Block]) -> Iterator[str | ToolCallChunk]:
        for part in parts:
            if isinstance(part, str):
                if self._after_call:
                    part = part.lstrip("\n")
                    if not part:
                        continue
                    self._after_call = False
                yield part
                continue
            self._after_call = part.closed
            call = parse_block(part.body, self.names) if part.closed else None
            if call is None or call.get("type") == "invalid_tool_call":
                yield part.text  # text: LangChain would turn a chunk into a valid-looking call
            else:
                yield self._chunk(call)

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
