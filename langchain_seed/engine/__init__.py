"""The local inference engine: continuous batching with scheduled speculative decoding.

This package imports no LangChain. Public names: :class:`Engine`, :class:`EngineConfig`,
:class:`SamplingParams`, :class:`GenerationResult` (with :class:`TokenLogprob`),
:class:`TextDelta` (a streamed piece) and the error types.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from langchain_seed.engine.config import EngineConfig, SamplingParams
from langchain_seed.engine.results import (
    EngineClosedError,
    EngineError,
    GenerationResult,
    QueueFullError,
    RequestCancelledError,
    TextDelta,
    TokenLogprob,
)
from langchain_seed.engine.stats import EngineStats, SpecStats

if TYPE_CHECKING:
    from langchain_seed.engine.engine import Engine

__all__ = [
    "Engine",
    "EngineClosedError",
    "EngineConfig",
    "EngineError",
    "EngineStats",
    "GenerationResult",
    "QueueFullError",
    "RequestCancelledError",
    "SamplingParams",
    "SpecStats",
    "TextDelta",
    "TokenLogprob",
]


def __getattr__(name: str) -> Any:
    if name == "Engine":
        return importlib.import_module("langchain_seed.engine.engine").Engine
    raise AttributeError(f"module 'langchain_seed.engine' has no attribute {name!r}")
