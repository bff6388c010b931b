"""langchain-seed: fast Tree-of-Thoughts and self-consistency on a local model.

Public names are imported lazily so that ``import langchain_seed`` stays cheap (torch and
transformers load only when a model is built). The errors a caller catches are public
too: :class:`ModelLoadError` (a model or tokenizer that cannot be loaded, with the fix in
its message) and the engine's :class:`EngineError` family.
"""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from langchain_seed.chat_models import ChatSeed
    from langchain_seed.engine.execution.loading import ModelLoadError
    from langchain_seed.engine.results import (
        EngineClosedError,
        EngineError,
        QueueFullError,
        RequestCancelledError,
    )
    from langchain_seed.llms import SeedLLM
    from langchain_seed.self_consistency import SelfConsistency
    from langchain_seed.tree_of_thoughts import ToTTask, TreeOfThoughts, tree_to_mermaid

try:
    __version__ = metadata.version("langchain-seed")
except metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "ChatSeed",
    "EngineClosedError",
    "EngineError",
    "ModelLoadError",
    "QueueFullError",
    "RequestCancelledError",
    "SeedLLM",
    "SelfConsistency",
    "ToTTask",
    "TreeOfThoughts",
    "tree_to_mermaid",
]

_LOCATIONS = {
    "ChatSeed": "langchain_seed.chat_models",
    "EngineClosedError": "langchain_seed.engine.results",
    "EngineError": "langchain_seed.engine.results",
    "ModelLoadError": "langchain_seed.engine.execution.loading",
    "QueueFullError": "langchain_seed.engine.results",
    "RequestCancelledError": "langchain_seed.engine.results",
    "SeedLLM": "langchain_seed.llms",
    "SelfConsistency": "langchain_seed.self_consistency",
    "ToTTask": "langchain_seed.tree_of_thoughts",
    "TreeOfThoughts": "langchain_seed.tree_of_thoughts",
    "tree_to_mermaid": "langchain_seed.tree_of_thoughts",
}


def __getattr__(name: str) -> Any:
    if name in _LOCATIONS:
        return getattr(importlib.import_module(_LOCATIONS[name]), name)
    raise AttributeError(f"module 'langchain_seed' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
