"""What a finished request returns, the errors the engine raises, and how a future gets them."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any

from langchain_seed.engine.stats import SpecStats


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """The log probability of one generated token (``SamplingParams.logprobs``).

    ``logprob`` is the token's log probability under the distribution the sampler drew it
    from (for greedy requests: the target's distribution at temperature 1); ``top`` holds
    the ``logprobs`` most likely tokens of that distribution at the token's position as
    ``(token_id, logprob)``, most likely first, tokens of probability 0 left out.
    """

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "token_id": self.token_id,
            "logprob": self.logprob,
            "top": [list(pair) for pair in self.top],
        }


class TextDelta(str):
    """A streamed piece of text (``on_delta``'s argument) and its tokens' log probabilities.

    ``logprobs`` holds the entries of the tokens decoded since the previous piece when the
    request asks for them (``SamplingParams.logprobs``), else nothing. A ``TextDelta`` is a
    ``str``, so callbacks that take text work unchanged. Text held back (a possible stop
    string, an incomplete character) may reach a later piece than its tokens' entries;
    every entry is delivered once, in order, and ``GenerationResult.logprobs`` holds all.
    """

    logprobs: tuple[TokenLogprob, ...]

    def __new__(cls, text: str, logprobs: Sequence[TokenLogprob] = ()) -> TextDelta:
        """``text`` carrying ``logprobs``."""
        piece = super().__new__(cls, text)
        piece.logprobs = tuple(logprobs)
        return piece


@dataclass(slots=True)
class GenerationResult:
    """One finished request.

    ``token_ids`` are the generated tokens (an EOS token that ended generation is
    included, as transformers ``generate`` does; tokens after a stop string are not).
    ``logprobs`` has one :class:`TokenLogprob` per token when the request asked for them.
    ``finish_reason`` is ``"stop"`` (EOS, stop token or stop string) or ``"length"``.
    """

    text: str
    token_ids: list[int]
    finish_reason: str
    prompt_tokens: int
    stats: SpecStats = field(default_factory=SpecStats)
    request_id: int = -1
    group: str | None = None
    logprobs: list[TokenLogprob] | None = None
    """One entry per token of ``token_ids`` when the request asked for them
    (``SamplingParams.logprobs``), else ``None``."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "text": self.text,
            "token_ids": list(self.token_ids),
            "finish_reason": self.finish_reason,
            "prompt_tokens": self.prompt_tokens,
            "stats": self.stats.to_dict(),
            "request_id": self.request_id,
            "group": self.group,
            "logprobs": (None if self.logprobs is None else [lp.to_dict() for lp in self.logprobs]),
        }


class EngineError(RuntimeError):
    """Base class of engine failures delivered to callers."""


class EngineClosedError(EngineError):
    """The engine was closed before the request finished."""


class QueueFullError(EngineError):
    """The submission queue is full (``EngineConfig.max_queue``)."""


class RequestCancelledError(EngineError):
    """The request was cancelled by its caller."""


def settle(future: Future[Any] | None, outcome: Any) -> None:
    """Resolve ``future`` with ``outcome`` (an exception fails it) unless it is done already.

    A caller may cancel its future at any time, also between the check and the setting:
    such a future stays cancelled, and nothing is raised.
    """
    if future is None or future.done():
        return
    try:
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
    except InvalidStateError:  # cancelled (or resolved) concurrently
        pass
