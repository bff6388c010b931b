"""Helpers for the SeedLLM / ChatSeed tests: an engine spy, a token-recording callback and
two small tools for the tool-calling tests."""

from __future__ import annotations

from typing import Any, Literal

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.tools import tool


class SpyEngine:
    """Delegates to a real engine and records every submission (prompts, group)."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self.submissions: list[tuple[list[Any], str | None]] = []

    def submit_many(self, prompts, params=None, *, group=None, on_delta=None):
        self.submissions.append((list(prompts), group))
        return self._engine.submit_many(prompts, params, group=group, on_delta=on_delta)

    def submit(self, prompt, params=None, *, group=None, on_delta=None):
        self.submissions.append(([prompt], group))
        return self._engine.submit(prompt, params, group=group, on_delta=on_delta)

    @property
    def sizes(self) -> list[int]:
        """Number of requests in each submission, in order."""
        return [len(prompts) for prompts, _ in self.submissions]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


class Recorder(BaseCallbackHandler):
    """Records streamed tokens, run starts and run ends."""

    def __init__(self) -> None:
        self.tokens: list[str] = []
        self.starts = 0
        self.ends: list[Any] = []

    def on_llm_start(self, serialized, prompts, **kwargs):
        self.starts += 1

    def on_chat_model_start(self, serialized, messages, **kwargs):
        self.starts += 1

    def on_llm_new_token(self, token, **kwargs):
        self.tokens.append(token)

    def on_llm_end(self, response, **kwargs):
        self.ends.append(response)


@tool
def set_light(room: Literal["kitchen", "hall"], on: bool) -> str:
    """Switch the light of a room on or off."""
    return f"{room}: {'on' if on else 'off'}"


@tool
def get_mode(device: Literal["tv", "radio"]) -> str:
    """Read the mode of a device."""
    return "standby"


TOOLS = [set_light, get_mode]
NAMES = ["set_light", "get_mode"]
