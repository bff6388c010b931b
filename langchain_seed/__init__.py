"""langchain-seed: fast Tree-of-Thoughts and self-consistency on a local model.

Public names are imported lazily so that ``import langchain_seed`` stays cheap (torch and
transformers load only when a model is built).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from langchain_seed.chat_models import ChatSeed
    from langchain_seed.llms import SeedLLM
    from langchain_seed.self_consistency import SelfConsistency
    from langchain_seed.tree_of_thoughts import ToTTask, TreeOfThoughts, tree_to_mermaid

__all__ = [
    "ChatSeed",
    "SeedLLM",
    "SelfConsistency",
    "ToTTask",
    "TreeOfThoughts",
    "tree_to_mermaid",
]

_LOCATIONS = {
    "ChatSeed": "langchain_seed.chat_models",
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
