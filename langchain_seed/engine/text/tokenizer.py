"""The tokenizer face of an engine: prompts, chat templates and token bytes, under one lock.

Both backends (the embedded engine and vLLM) serve the LangChain classes through a
:class:`ChatTokenizer`: encode a prompt, render chat messages through the model's chat
template (tools included), tell how the template writes tool calls, give the bytes of
tokens (for logprobs). Fast tokenizers are not safe to share across threads, and the
embedded engine's thread decodes with the same tokenizer, so every use takes the lock the
engine shares with its detokenizer.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from collections.abc import Sequence as Seq
from typing import Any

from langchain_seed.engine.sequence import check_text

logger = logging.getLogger(__name__)


class ChatTokenizer:
    """A Hugging Face tokenizer behind a lock, with the chat-template helpers an engine offers.

    Args:
        tokenizer: the model's tokenizer (with its chat template, if any).
        lock: the lock every use of ``tokenizer`` takes (shared with the detokenizer).
    """

    def __init__(self, tokenizer: Any, lock: threading.Lock | None = None) -> None:
        self.tokenizer = tokenizer
        self.lock = lock or threading.Lock()

    def encode(self, text: str) -> list[int]:
        """Token ids of a prompt text (special tokens as the tokenizer adds them).

        Raises:
            ValueError: ``text`` has a lone surrogate (it is not valid Unicode text).
        """
        check_text("text", text)
        with self.lock:
            return list(self.tokenizer.encode(text))

    def encode_text(self, text: str) -> list[int]:
        """Token ids of a piece of output text (no special tokens)."""
        with self.lock:
            return list(self.tokenizer.encode(text, add_special_tokens=False))

    @functools.cached_property
    def tool_call_format(self) -> str:
        """How the chat template writes tool calls: ``"hermes"``, ``"llama"`` or ``"none"``."""
        with self.lock:
            return template_tool_format(self.tokenizer)

    @property
    def renders_tools(self) -> bool:
        """Whether the chat template takes ``tools`` (renders tool schemas)."""
        return template_renders_tools(self.tokenizer)

    def token_bytes(self, ids: Seq[int]) -> list[bytes]:
        """The bytes each token of ``ids`` stands for (part of a character, at times)."""
        with self.lock:
            return token_bytes(self.tokenizer, list(ids))

    def render_chat(self, messages: Seq[dict[str, Any]], **template_kwargs: Any) -> list[int]:
        """Prompt token ids of chat ``messages`` through the chat template.

        Args:
            messages: ``{"role": ..., "content": ...}`` turns.
            **template_kwargs: passed to ``apply_chat_template`` (e.g. ``tools``).

        Raises:
            ValueError: a text in ``messages`` has a lone surrogate (naming where).
        """
        for i, message in enumerate(messages):
            _check_texts(f"messages[{i}]", message)
        with self.lock:
            return chat_prompt_ids(self.tokenizer, messages, **template_kwargs)


def _check_texts(where: str, value: Any) -> None:
    """Raise ``ValueError`` naming ``where`` for a string in ``value`` that is not valid text."""
    if isinstance(value, str):
        check_text(where, value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_texts(f"{where}[{key!r}]", item)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_texts(f"{where}[{i}]", item)


def template_renders_tools(tokenizer: Any) -> bool:
    """Whether ``tokenizer``'s chat template takes ``tools`` (renders tool schemas)."""
    template = getattr(tokenizer, "chat_template", None) or ""
    return "tools" in (template if isinstance(template, str) else str(template))


TOOL_CALL_FORMATS = ("hermes", "llama", "none")
"""How a chat template writes an assistant's tool calls: ``hermes`` (``<tool_call>{"name":
..., "arguments": ...}</tool_call>``, Hermes / Qwen), ``llama`` (``{"name": ..., "parameters":
...}``, Llama 3.1 / 3.2 / 3.3), or ``none``: it renders no calls (or in a format not listed),
so the adapters write them as Hermes text themselves."""

_PROBE_TOOL = {
    "type": "function",
    "function": {
        "name": "probe_tool",
        "description": "A probe.",
        "parameters": {"type": "object", "properties": {"probe_arg": {"type": "string"}}},
    },
}
_PROBE_CALL = {
    "type": "function",
    "function": {"name": "probe_tool", "arguments": {"probe_arg": "probe_value"}},
}


def template_tool_format(tokenizer: Any) -> str:
    """The tool-call format ``tokenizer``'s chat template writes (:data:`TOOL_CALL_FORMATS`).

    The template renders a conversation in which the assistant called a probe tool; the
    format is read off how the call comes out.
    """
    if not template_renders_tools(tokenizer):
        return "none"
    messages: list[Any] = [
        {"role": "user", "content": "probe"},
        {"role": "assistant", "content": "", "tool_calls": [_PROBE_CALL]},
    ]
    try:
        text = str(tokenizer.apply_chat_template(messages, tools=[_PROBE_TOOL], tokenize=False))
    except Exception:  # noqa: BLE001 - a template that cannot render calls: the fallback
        logger.debug("chat template cannot render a tool call", exc_info=True)
        return "none"
    if re.search(r'<tool_call>\s*\{\s*"name"\s*:\s*"probe_tool"\s*,\s*"arguments"\s*:', text):
        return "hermes"
    if re.search(r'\{\s*"name"\s*:\s*"probe_tool"\s*,\s*"parameters"\s*:', text):
        return "llama"
    return "none"


def chat_prompt_ids(
    tokenizer: Any, messages: Seq[dict[str, Any]], **template_kwargs: Any
) -> list[int]:
    """Prompt token ids of chat ``messages`` through ``tokenizer``'s chat template.

    The generation prompt is added. The caller holds whatever lock guards ``tokenizer``
    (fast tokenizers are not safe to share across threads).

    Args:
        tokenizer: a tokenizer with a chat template.
        messages: ``{"role": ..., "content": ...}`` turns.
        **template_kwargs: passed to ``apply_chat_template`` (e.g. ``tools``).
    """
    ids = tokenizer.apply_chat_template(
        list(messages), add_generation_prompt=True, tokenize=True, return_dict=False,
        **template_kwargs,
    )  # fmt: skip
    return [int(i) for i in ids]  # type: ignore[union-attr, arg-type]


def token_bytes(tokenizer: Any, ids: list[int]) -> list[bytes]:
    """The bytes each token of ``ids`` stands for (a token may hold part of a character).

    Byte-level BPE vocabularies (GPT-2, Llama 3, Qwen, SmolLM) spell each byte as one
    printable character: the token's characters map back through that alphabet.
    SentencePiece byte tokens (``<0x0A>``) are their byte. Any other token is its decoded
    text in UTF-8.
    """
    from tokenizers import decoders

    backend = getattr(tokenizer, "backend_tokenizer", None)
    byte_level = isinstance(getattr(backend, "decoder", None), decoders.ByteLevel)
    alphabet = _byte_alphabet() if byte_level else {}
    special = set(getattr(tokenizer, "all_special_ids", ()))
    out = []
    for token_id, piece in zip(ids, tokenizer.convert_ids_to_tokens(ids)):
        if isinstance(piece, str) and token_id not in special:
            if byte_level and all(char in alphabet for char in piece):
                out.append(bytes(alphabet[char] for char in piece))
                continue
            if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
                try:
                    out.append(bytes([int(piece[3:5], 16)]))
                    continue
                except ValueError:
                    pass
        out.append(tokenizer.decode([token_id]).encode("utf-8"))
    return out


def _byte_alphabet() -> dict[str, int]:
    """Byte-level BPE's character for each byte, inverted: character -> byte."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return {char: byte for byte, char in bytes_to_unicode().items()}
