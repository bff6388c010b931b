"""The one drafter protocol: ``propose(sequences, max_lens) -> drafts``."""

from __future__ import annotations

from collections.abc import Sequence as Seq
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import torch

    from langchain_seed.engine.sequence import Sequence


@dataclass(slots=True)
class Draft:
    """Draft tokens for one sequence.

    ``probs`` holds the drafter's processed distribution q at each draft position
    (``[len(tokens), vocab]``); ``None`` means a deterministic draft, verified as a point
    mass (accept x with probability p(x)).
    """

    tokens: list[int] = field(default_factory=list)
    probs: torch.Tensor | None = None  # [len(tokens), vocab] or None
    drafter: str = ""


class Drafter(Protocol):
    """Proposes up to ``max_lens[i]`` draft tokens for ``sequences[i]``.

    A drafter returns one :class:`Draft` per sequence (empty when it has nothing useful).
    It must never look at the target model: drafts are cheap guesses, the verifier makes
    the output exact.
    """

    name: str

    def propose(self, sequences: Seq[Sequence], max_lens: Seq[int]) -> list[Draft]:
        """Drafts for every sequence, at most ``max_lens[i]`` tokens for sequence ``i``."""
        ...

    def release(self, sequence: Sequence) -> None:
        """Forget state held for a sequence that finished or was cancelled."""
        ...
