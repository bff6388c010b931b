"""The local inference engine: continuous batching with scheduled speculative decoding.

This package imports no LangChain. Public names: :class:`Engine`, :class:`EngineConfig`,
:class:`SamplingParams`, :class:`GenerationResult` (with :class:`TokenLogprob`),
:class:`TextDelta` (a streamed piece), the stats (:class:`EngineStats`, :class:`SpecStats`)
and the error types.

The folders are the engine's parts, cut by what changes together:

- here, the step and its bookkeeping (ids and counts, no tensors): :mod:`.engine`
  (:class:`Engine`; :meth:`Engine.step` is the five steps admit, draft, verify, accept,
  finish), :mod:`.scheduler`, :mod:`.admission`, :mod:`.sequence`, :mod:`.coalescing`,
  :mod:`.finishing`, with :mod:`.config`, :mod:`.results` and :mod:`.stats`;
- :mod:`.execution`: model execution, where the tensors live: the runner (forwards in,
  logits out), the engine's own Llama forward and CPU kernels, the KV pool, packing, the
  prefix cache, model loading;
- :mod:`.speculation`: drafts and their lossless acceptance: the drafters, the draft policy,
  verification, sampling;
- :mod:`.serving`: how callers reach an engine: the interface both backends implement
  (:class:`~.serving.client.EngineClient`), the queue and the engine thread, the
  process-wide compute thread;
- :mod:`.text`: text in and out: the tokenizer face (chat templates), the detokenizer, grammars.
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
