"""The public surface of ``langchain_seed``: exactly these names, sorted, importable, cheap."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import langchain_seed

EXPECTED_ALL = [
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
EXPECTED_MODULES = {  # name -> the module that defines it
    "ChatSeed": "langchain_seed.chat_models",
    "EngineClosedError": "langchain_seed.engine.results",
    "EngineError": "langchain_seed.engine.results",
    "ModelLoadError": "langchain_seed.engine.execution.loading",
    "QueueFullError": "langchain_seed.engine.results",
    "RequestCancelledError": "langchain_seed.engine.results",
    "SeedLLM": "langchain_seed.llms",
    "SelfConsistency": "langchain_seed.self_consistency",
    "ToTTask": "langchain_seed.tree_of_thoughts.task",
    "TreeOfThoughts": "langchain_seed.tree_of_thoughts.runnable",
    "tree_to_mermaid": "langchain_seed.tree_of_thoughts.mermaid",
}


def test_all_is_exactly_the_public_names():
    assert langchain_seed.__all__ == EXPECTED_ALL


def test_all_is_sorted():
    assert langchain_seed.__all__ == sorted(langchain_seed.__all__)


def test_every_public_name_is_the_object_defined_in_its_module():
    assert sorted(EXPECTED_MODULES) == EXPECTED_ALL
    for name, module in EXPECTED_MODULES.items():
        obj = getattr(langchain_seed, name)
        assert obj is getattr(importlib.import_module(module), name), name
        assert obj.__name__ == name
        assert obj.__module__ == module
    assert sorted(dir(langchain_seed)) == sorted(langchain_seed.__all__)


def test_public_names_are_the_expected_kinds():
    from langchain_core.language_models import BaseChatModel, BaseLLM
    from langchain_core.runnables import Runnable

    from langchain_seed import (
        ChatSeed,
        SeedLLM,
        SelfConsistency,
        ToTTask,
        TreeOfThoughts,
        tree_to_mermaid,
    )

    assert issubclass(SeedLLM, BaseLLM)
    assert issubclass(ChatSeed, BaseChatModel)
    assert not issubclass(SeedLLM, BaseChatModel) and not issubclass(ChatSeed, BaseLLM)
    assert issubclass(SelfConsistency, Runnable)
    assert issubclass(TreeOfThoughts, Runnable)
    assert inspect.isclass(ToTTask) and not issubclass(ToTTask, Runnable)  # a plain task base
    assert inspect.isfunction(tree_to_mermaid)


def test_importing_the_adapters_does_not_load_torch_or_transformers():
    code = (
        "import sys\n"
        "from langchain_seed import ChatSeed, SeedLLM\n"
        "ChatSeed(max_tokens=4); SeedLLM(max_tokens=4)\n"
        "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[2]
    )
    assert done.returncode == 0, done.stderr  # the child asserts no heavy module is loaded
