"""What a finished request returns, and the errors the engine raises."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from langchain_seed.engine.stats import SpecStats


@dataclass(slots=True)
class GenerationResult:
    """One finished request.

    ``token_ids`` are the generated tokens (an EOS token that ended generation is
    included, as transformers ``generate`` does; tokens after a stop string are not).
    ``finish_reason`` is ``"stop"`` (EOS, stop token or stop string) or ``"length"``.
    """

    text: str
    token_ids: list[int]
    finish_reason: str
    prompt_tokens: int
    stats: SpecStats = field(default_factory=SpecStats)
    request_id: int = -1
    group: str | None = None

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
        }


class EngineError(RuntimeError):
    """Base class of engine failures delivered to callers."""


class EngineClosedError(EngineError):
    """The engine was closed before the request finished."""


class QueueFullError(EngineError):
    """The submission queue is full (``EngineConfig.max_queue``)."""


class RequestCancelledError(EngineError):
    """The request was cancelled by its caller."""
