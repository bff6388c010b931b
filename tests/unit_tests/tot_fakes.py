"""Scripted models and a tiny task for the Tree-of-Thoughts tests (deterministic, no model)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from langchain_core.language_models.chat_models import SimpleChatModel
from langchain_core.language_models.llms import LLM
from langchain_core.messages import BaseMessage

from langchain_seed.tree_of_thoughts import ToTTask


class ScriptedLLM(LLM):
    """Answers by prompt content (``respond(prompt) -> text``) and records every call."""

    respond: Callable[[str], str]
    prompts: list[str] = []
    batches: list[int] = []
    stops: list[Any] = []

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _call(
        self, prompt: str, stop: list[str] | None = None, run_manager: Any = None, **kw: Any
    ) -> str:
        self.prompts.append(prompt)
        self.stops.append(stop)
        return self.respond(prompt)

    def batch(self, inputs: list[Any], config: Any = None, **kwargs: Any) -> list[str]:  # type: ignore[override]
        self.batches.append(len(inputs))
        return super().batch(inputs, config, **kwargs)

    async def abatch(self, inputs: list[Any], config: Any = None, **kwargs: Any) -> list[str]:  # type: ignore[override]
        self.batches.append(len(inputs))
        return await super().abatch(inputs, config, **kwargs)


class ScriptedChat(SimpleChatModel):
    """Chat twin of :class:`ScriptedLLM` (answers the last message's text)."""

    respond: Callable[[str], str]
    batches: list[int] = []

    @property
    def _llm_type(self) -> str:
        return "scripted-chat"

    def _call(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> str:
        return self.respond(str(messages[-1].content))

    def batch(self, inputs: list[Any], config: Any = None, **kwargs: Any) -> list[Any]:  # type: ignore[override]
        self.batches.append(len(inputs))
        return super().batch(inputs, config, **kwargs)


def table_responder(table: dict[str, str], default: str = "") -> Callable[[str], str]:
    """Exact prompt -> answer lookup."""
    return lambda prompt: table.get(prompt, default)


@dataclass
class PathTask(ToTTask):
    """States are ``/a/b``-style paths; the script says each path's children and value.

    Generation prompt ``GEN <state>`` -> the children names, one a line; value prompt
    ``VAL <key>`` -> a number (``key`` defaults to the state; ``value_key`` can map several
    states to one prompt). A state named ``*`` at its end is final.
    """

    name: str = "path"
    steps: int = 3
    generate_mode: Any = "propose"
    evaluate_mode: Any = "value"
    breadth: int = 2
    n_generate_sample: int = 1
    n_evaluate_sample: int = 1
    value_key: dict[str, str] = field(default_factory=dict)

    def generate_prompt(self, x: str, state: str, step: int) -> str:
        return f"GEN {state or '/'}"

    def parse_thoughts(self, x: str, state: str, outputs: list[str], step: int) -> list[str]:
        names = [line.strip() for o in outputs for line in o.split("\n")]
        return [f"{state}/{n}" for n in names if n.isalnum() or n.endswith("*")]

    def value_prompt(self, x: str, state: str, step: int) -> str:
        return f"VAL {self.value_key.get(state, state)}"

    def parse_value(self, x: str, state: str, outputs: list[str]) -> float | None:
        try:
            return sum(float(o) for o in outputs)
        except ValueError:
            return None

    def is_final(self, x: str, state: str) -> bool:
        return state.endswith("*")

    def answer(self, x: str, state: str) -> str | None:
        return state or None


def path_llm(children: dict[str, str], values: dict[str, float], **kw: Any) -> ScriptedLLM:
    """A ScriptedLLM for :class:`PathTask`: ``children['/a'] = "b\\nc"``, ``values['/a/b'] = 3``."""
    table = {f"GEN {k}": v for k, v in children.items()}
    table.update({f"VAL {k}": str(v) for k, v in values.items()})
    return ScriptedLLM(
        respond=table_responder(table, "???"), prompts=[], batches=[], stops=[], **kw
    )
