"""What one target forward feeds its rows: prompt chunks, pending tokens, drafts.

Drafts are cut where a request's grammar refuses them (:func:`constrain`).

The *unified step* (on the own execution path): admission leaves a new prompt's uncached
tokens in ``SequenceState.unfed_prompt``, and the step's one forward feeds them ahead of
the row's pending token and draft, beside every other row's decode and draft tokens. The
weights are read once for prefill and decode together, and a row never waits for a
prefill forward of its own. At most ``EngineConfig.step_prefill_tokens`` prompt tokens
go into one step (rows in order take what they still lack); a row whose prompt is not
cached whole after the forward is fed its chunk only and is not verified in that step.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence as Seq
from typing import TYPE_CHECKING

import torch

from langchain_seed.engine.speculation.drafters.base import Draft
from langchain_seed.engine.speculation.verification import Verdict, Verification

if TYPE_CHECKING:
    from langchain_seed.engine.execution.runner import ModelRunner
    from langchain_seed.engine.sequence import SequenceState


def prompt_chunks(running: Seq[SequenceState], allowance: int) -> list[list[int]]:
    """The uncached prompt tokens each row feeds this step, ``allowance`` in all."""
    chunks: list[list[int]] = []
    for seq in running:
        take = min(allowance, len(seq.unfed_prompt))
        chunks.append(seq.unfed_prompt[:take])
        allowance -= take
    return chunks


def verifies(seq: SequenceState, chunk: Seq[int]) -> bool:
    """Whether ``seq``'s prompt is cached once ``chunk`` is fed, so it is verified this step."""
    return len(chunk) == len(seq.unfed_prompt)


def whole(running: Seq[SequenceState], chunks: Seq[Seq[int]]) -> bool:
    """Whether every row's prompt is cached after this step (so every row verifies)."""
    return all(verifies(s, c) for s, c in zip(running, chunks))


def constrain(running: Seq[SequenceState], drafts: Seq[Draft]) -> list[Draft]:
    """Grammars: cut each constrained draft at its first refused token, with masks.

    Every constrained row gets a token bitmask per verified position, drafted or not
    (see :mod:`~langchain_seed.engine.text.grammar` for where a draft is cut and why). A
    grammar that raises fails its request, which then feeds an empty draft.
    """
    out = []
    for seq, draft in zip(running, drafts):
        if seq.grammar is None:
            out.append(draft)
            continue
        rejection = not seq.params.greedy and seq.params.seed is None
        try:
            out.append(
                seq.grammar.constrain(draft, keep_refused=rejection and draft.probs is not None)
            )
        except Exception as exc:
            seq.fail(exc)
            out.append(Draft())
    return out


class StepFeed:
    """One target forward's tokens for ``seqs`` (contiguous rows), staged before it runs.

    Args:
        seqs: the rows of the forward.
        drafts: one draft per row.
        chunks: the prompt tokens each row is fed ahead of its pending token
            (:func:`prompt_chunks`; empty lists when no prompt is pending).
        runner: the target's runner.
    """

    def __init__(
        self,
        seqs: Seq[SequenceState],
        drafts: Seq[Draft],
        chunks: Seq[list[int]],
        runner: ModelRunner,
    ) -> None:
        self.seqs, self.chunks = seqs, chunks
        self.verifying = [i for i, (seq, c) in enumerate(zip(seqs, chunks)) if verifies(seq, c)]
        """Rows verified by this forward: their prompt is cached once it ran."""
        self.staged = (
            Verification(
                [seqs[i] for i in self.verifying], [drafts[i] for i in self.verifying],
                runner.device, runner.vocab_size,
            )
            if self.verifying
            else None
        )  # fmt: skip
        self.feeds: list[list[int]] = [[] for _ in seqs]
        """Each row's pending token and draft (empty for a row still prefilling)."""
        for i, feed in zip(self.verifying, self.staged.feed if self.staged is not None else []):
            self.feeds[i] = feed
        self.prefilling = any(chunks)

    @property
    def empty(self) -> bool:
        """Nothing to feed (``fcfs_rounds``: a row waiting for its prompt's turn)."""
        return not self.verifying and not self.prefilling

    def forward(self, runner: ModelRunner) -> torch.Tensor:
        """Run the forward: ``[b, s, vocab]`` logits of the pending and draft positions."""
        logits = runner.forward(
            self.seqs[0].row,
            [c + f for c, f in zip(self.chunks, self.feeds)],
            skip=[len(c) for c in self.chunks] if self.prefilling else None,
        )
        assert logits is not None
        return logits

    def fed_prompts(self, runner: ModelRunner, complete: Callable[[SequenceState], None]) -> None:
        """The forward ran: rows keep their prompt chunks; ``complete`` each cached prompt."""
        for seq, chunk in zip(self.seqs, self.chunks):
            if chunk:
                runner.keep(seq.row, runner.lengths[seq.row] + len(chunk))
                del seq.unfed_prompt[: len(chunk)]
                if not seq.unfed_prompt:
                    complete(seq)

    def verdicts(self, logits: torch.Tensor) -> list[Verdict | None]:
        """One verdict per row (``None``: a row still prefilling), one host copy in all."""
        out: list[Verdict | None] = [None] * len(self.seqs)
        if self.staged is None:
            return out
        if len(self.verifying) < len(self.seqs):
            logits = logits[torch.tensor(self.verifying, device=logits.device)]
        for i, verdict in zip(self.verifying, self.staged.verify(logits)):
            out[i] = verdict
        return out
