"""Public names of the Tree-of-Thoughts package."""

from __future__ import annotations

import langchain_seed
import langchain_seed.tree_of_thoughts as tot


def test_tree_of_thoughts_all_is_sorted_and_importable() -> None:
    assert tot.__all__ == sorted(tot.__all__)
    for name in tot.__all__:
        assert getattr(tot, name) is not None
    assert tot.TASK_NAMES == ("creative_writing", "game24", "gsm8k")


def test_top_level_lazy_exports_resolve_to_the_package() -> None:
    assert langchain_seed.TreeOfThoughts is tot.TreeOfThoughts
    assert langchain_seed.ToTTask is tot.ToTTask
    assert langchain_seed.tree_to_mermaid is tot.tree_to_mermaid


def test_tasks_all_is_sorted() -> None:
    import langchain_seed.tree_of_thoughts.tasks as tasks

    assert tasks.__all__ == sorted(tasks.__all__)
