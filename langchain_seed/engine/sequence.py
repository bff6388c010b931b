"""Request and sequence state: plain data the scheduler and drafters read.

A *request* is what a caller submitted; a *sequence* is its decoding state in the
engine (one request, one sequence). Requests with the same ``group`` id are siblings:
they share a prompt prefix (ToT children of one node, the N samples of self-consistency).
"""

from __future__ import annotations

import enum
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from langchain_seed.engine.config import SamplingParams
from langchain_seed.engine.results import GenerationResult, TokenLogprob
from langchain_seed.engine.stats import SpecStats

_ids = itertools.count()

DRAFT_SLACK = 17
"""Cache room a sequence keeps beyond ``max_tokens``: one verify step's drafts (gamma <= 16)."""


class SeqStatus(enum.Enum):
    """Where a sequence is in its life."""

    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)
class SequenceState:
    """One request's decoding state.

    ``token_ids`` is ``prompt_ids + output_ids``. The target's KV cache holds every token
    but the last one (the *pending* token, fed at the next verification), except the
    ``unfed_prompt`` tokens of a sequence admitted into a unified step, which the next
    forwards feed first.
    """

    prompt_ids: list[int]
    params: SamplingParams
    group: str | None = None
    seq_id: int = field(default_factory=lambda: next(_ids))
    output_ids: list[int] = field(default_factory=list)
    status: SeqStatus = SeqStatus.WAITING
    finish_reason: str | None = None
    stats: SpecStats = field(default_factory=SpecStats)
    arrival: float = field(default_factory=time.monotonic)
    deadline: float | None = None
    on_delta: Callable[[str], None] | None = None
    """Called on the engine thread with each new piece of text (streaming)."""
    text: str = ""
    """Detokenized output so far, already cut at a stop string."""
    emitted_chars: int = 0
    """Characters of ``text`` already streamed."""
    row: int = -1
    """KV-cache row while running (rows of running sequences are contiguous)."""
    unfed_prompt: list[int] = field(default_factory=list)
    """Prompt tokens (before the pending one) the target's cache still lacks: admission
    leaves them to the next steps' forwards, which feed them ahead of the pending token
    (the unified step, :meth:`Engine.step`). Empty once the prompt is cached."""
    generator: Any = None
    """The request's ``torch.Generator`` (sampling only), owned by the engine."""
    drafters_off: set[str] = field(default_factory=set)
    """Drafters that no longer draft for this sequence (one raised while proposing for it)."""
    draft_counts: dict[str, tuple[float, float, float, float]] = field(default_factory=dict)
    """Per kind of draft: accepted and rejected first tokens, accepted and rejected next
    tokens of this sequence's verifications (the draft policy's
    :class:`~langchain_seed.engine.speculation.draft_policy.Acceptance`)."""
    detok: Any = None
    """Incremental detokenization state, owned by the engine's ``TextTracker``."""
    prefix_handle: Any = None
    """Prefix-cache nodes this sequence holds a reference on while it runs."""
    future: Any = None
    """The caller's ``concurrent.futures.Future``."""
    grammar: Any = None
    """The request's :class:`~langchain_seed.engine.text.grammar.RowGrammar` (constrained only)."""
    logprobs: list[TokenLogprob] | None = None
    """One entry per token of ``output_ids`` when ``params.logprobs`` asks for them."""
    streamed_logprobs: int = 0
    """Entries of ``logprobs`` already handed to ``on_delta`` (with a :class:`TextDelta`)."""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.params.logprobs is not None and self.logprobs is None:
            self.logprobs = []

    @property
    def token_ids(self) -> list[int]:
        """Prompt followed by the generated tokens."""
        return self.prompt_ids + self.output_ids

    @property
    def num_tokens(self) -> int:
        """Prompt plus generated tokens."""
        return len(self.prompt_ids) + len(self.output_ids)

    @property
    def last_token(self) -> int:
        """The pending token: the newest token, whose KV is not yet cached."""
        return self.output_ids[-1] if self.output_ids else self.prompt_ids[-1]

    @property
    def remaining(self) -> int:
        """Tokens this sequence may still generate."""
        return self.params.max_tokens - len(self.output_ids)

    @property
    def reserved_tokens(self) -> int:
        """Cache tokens this sequence may need at most (prompt + max_tokens + slack)."""
        return len(self.prompt_ids) + self.params.max_tokens + DRAFT_SLACK

    @property
    def finished(self) -> bool:
        """True once the sequence has stopped for any reason."""
        return self.status is SeqStatus.FINISHED

    def fail(self, exc: BaseException) -> None:
        """Finish this sequence with the error ``exc`` (a cause recorded earlier is kept)."""
        self.status = SeqStatus.FINISHED
        self.finish_reason = "error"
        self.meta.setdefault("error", exc)

    def timeout_error(self, waiting: bool = False) -> TimeoutError:
        """The error of this request once its ``request_timeout`` passed."""
        where = " while its submission waited for room in the queue" if waiting else ""
        return TimeoutError(
            f"request {self.seq_id} exceeded request_timeout={self.params.request_timeout}s{where}"
        )

    def result(self) -> GenerationResult:
        """What the request of this finished sequence returns."""
        return GenerationResult(
            text=self.text,
            token_ids=list(self.output_ids),
            finish_reason=self.finish_reason or "stop",
            prompt_tokens=len(self.prompt_ids),
            stats=self.stats,
            request_id=self.seq_id,
            group=self.group,
            logprobs=None if self.logprobs is None else list(self.logprobs),
        )


def check_prompt_ids(
    ids: list[int], params: SamplingParams, *, max_context: int, max_cache_tokens: int | None
) -> list[int]:
    """``ids`` if a request of that prompt and ``params`` fits the context and the KV budget.

    ``max_cache_tokens=None``: no KV budget of its own (a backend that manages it).

    Raises:
        ValueError: the prompt is empty, or it does not fit the context (or
            ``max_cache_tokens``) with ``max_tokens``.
    """
    if not ids:
        raise ValueError("prompt is empty (no tokens)")
    if params.max_tokens >= max_context:
        raise ValueError(
            f"max_tokens={params.max_tokens} leaves no room for a prompt: the model's context "
            f"is {max_context} tokens, so max_tokens must be at most {max_context - 1} "
            "(prompt + max_tokens <= context)"
        )
    limit = max_context - params.max_tokens
    if len(ids) > limit:
        raise ValueError(
            f"prompt is {len(ids)} tokens; the model's context is {max_context} tokens "
            f"and max_tokens is {params.max_tokens}, so prompts may have at most {limit}"
        )
    if (
        max_cache_tokens is not None
        and len(ids) + params.max_tokens + DRAFT_SLACK > max_cache_tokens
    ):
        raise ValueError(
            f"prompt ({len(ids)} tokens) + max_tokens ({params.max_tokens}) + "
            f"{DRAFT_SLACK} draft slots exceeds max_cache_tokens={max_cache_tokens}"
        )
    return ids


def check_text(name: str, text: str) -> None:
    """Raise ``ValueError`` when ``text`` cannot be encoded as UTF-8 (a lone surrogate).

    A tokenizer fails on such text with an error that names neither the field nor the
    character (``TextEncodeInput must be Union[...]``).
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{name} has a lone surrogate {text[exc.start]!r} at index {exc.start}, which is "
            "not valid Unicode text; text must be encodable as UTF-8 (decode bytes with "
            "errors='replace', or pair the surrogates)"
        ) from None
