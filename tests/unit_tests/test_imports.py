"""The public surface of ``langchain_seed``: exactly these names, sorted, importable, cheap."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import langchain_seed

EXPECTED_ALL = [
    "ChatSeed",
    "SeedLLM",
    "SelfConsistency",
    "ToTTask",
    "TreeOfThoughts",
    "tree_to_mermaid",
]


def test_all_is_exactly_the_public_names():
    assert langchain_seed.__all__ == EXPECTED_ALL


def test_all_is_sorted():
    assert langchain_seed.__all__ == sorted(langchain_seed.__all__)


def test_every_public_name_resolves():
    for name in langchain_seed.__all__:
        assert getattr(langchain_seed, name) is not None, name
    assert sorted(dir(langchain_seed)) == sorted(langchain_seed.__all__)


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
