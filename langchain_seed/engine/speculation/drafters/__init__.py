"""Drafters: cheap proposals of the next tokens, verified losslessly by the target.

The protocol is :class:`~.base.Drafter` (``propose``, ``release`` and optional hooks);
:func:`build_drafters` makes the configured ones (``EngineConfig.drafters``).
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence as Seq

from langchain_seed.engine.execution.runner import ModelRunner
from langchain_seed.engine.speculation.drafters.base import Draft, Drafter
from langchain_seed.engine.speculation.drafters.consensus import ConsensusDrafter
from langchain_seed.engine.speculation.drafters.grammar import GrammarDrafter
from langchain_seed.engine.speculation.drafters.model import ModelDrafter
from langchain_seed.engine.speculation.drafters.ngram import NgramDrafter

__all__ = ["Draft", "Drafter", "build_drafters"]


def build_drafters(
    names: Seq[str],
    *,
    encode_text: Callable[[str], list[int]],
    draft_runner: Callable[[], ModelRunner] | None,
    extra: Seq[Drafter] = (),
) -> list[Drafter]:
    """The drafters ``names`` asks for, in that order, then ``extra``.

    Args:
        names: drafter names from ``EngineConfig.drafters``.
        encode_text: output text -> token ids (the grammar drafter tokenizes forced text).
        draft_runner: builds the draft model's runner (``"model"``); ``None``: no draft
            model is configured and ``"model"`` is skipped.
        extra: custom drafters asked next to the configured ones.

    Raises:
        ValueError: two drafters share a name.
    """
    drafters: list[Drafter] = []
    for name in names:
        if name == "ngram":
            drafters.append(NgramDrafter())
        elif name == "consensus":
            drafters.append(ConsensusDrafter())
        elif name == "grammar":
            drafters.append(GrammarDrafter(encode_text))
        elif name == "model" and draft_runner is not None:
            drafters.append(ModelDrafter(draft_runner()))
    drafters.extend(extra)
    unique = [d.name for d in drafters]
    if len(set(unique)) != len(unique):
        raise ValueError(f"drafter names must be unique, got {unique}")
    return drafters
