"""The one drafter protocol: ``propose(sequences, max_lens) -> drafts``, plus optional hooks.

A drafter may also define any of these; the engine calls them when present:

- ``verified(sequence, new_tokens)``: after verification, with the tokens the sequence
  kept (accepted draft tokens and the emitted one);
- ``runner``: a :class:`~langchain_seed.engine.execution.runner.ModelRunner` whose KV
  cache follows the batch's rows (filled at admission and moved with the rows by the
  engine);
- ``costly = True``: drafting costs a forward per position, so the draft policy sizes
  ``max_lens`` before asking
  (:meth:`~langchain_seed.engine.speculation.draft_policy.DraftPolicy.draft`) and times
  it through ``forwards`` (forwards so far).
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch

    from langchain_seed.engine.sequence import SequenceState


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
    allowed: torch.Tensor | None = None
    """Grammar-constrained requests: ``[len(tokens) + 1, words]`` int32 token bitmasks,
    what the grammar allows at each verified position (set by the engine, not drafters)."""
    kind: str = ""
    """The evidence behind the draft, when a drafter's drafts differ in quality by kind
    (``"ngram/3"``: a 3-token suffix match). The draft policy measures acceptance per kind
    (:attr:`policy_key`); statistics count per ``drafter``."""

    @property
    def policy_key(self) -> str:
        """What the draft policy measures acceptance by: ``kind``, else ``drafter``."""
        return self.kind or self.drafter


class Drafter(Protocol):
    """Proposes up to ``max_lens[i]`` draft tokens for ``sequences[i]``.

    A drafter returns one :class:`Draft` per sequence (empty when it has nothing useful).
    It must never look at the target model: drafts are cheap guesses, the verifier makes
    the output exact.
    """

    name: str

    def propose(self, sequences: Seq[SequenceState], max_lens: Seq[int]) -> list[Draft]:
        """Drafts for every sequence, at most ``max_lens[i]`` tokens for sequence ``i``."""
        ...

    def release(self, sequence: SequenceState) -> None:
        """Forget state held for a sequence that finished or was cancelled."""
        ...


def call_hook(drafters: Iterable[Any], hook: str, *args: Any) -> None:
    """Call the optional ``hook`` of every drafter that defines it."""
    for drafter in drafters:
        method = getattr(drafter, hook, None)
        if method is not None:
            method(*args)
