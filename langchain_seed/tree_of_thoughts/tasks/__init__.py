"""Built-in Tree-of-Thoughts tasks, by name."""

from __future__ import annotations

from collections.abc import Callable

from langchain_seed.tree_of_thoughts.task import ToTTask
from langchain_seed.tree_of_thoughts.tasks.creative_writing import CreativeWritingTask
from langchain_seed.tree_of_thoughts.tasks.game24 import Game24Task
from langchain_seed.tree_of_thoughts.tasks.gsm8k import GSM8KTask

BUILTIN_TASKS: dict[str, Callable[[], ToTTask]] = {
    "creative_writing": CreativeWritingTask,
    "game24": Game24Task,
    "gsm8k": GSM8KTask,
}
"""Built-in task name -> task class."""

TASK_NAMES = tuple(sorted(BUILTIN_TASKS))
"""The names ``TreeOfThoughts(task=...)`` and ``from_task`` accept."""


def get_task(name: str) -> ToTTask:
    """A fresh built-in task.

    Args:
        name: one of :data:`TASK_NAMES`.

    Returns:
        The task object.

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    if name not in BUILTIN_TASKS:
        raise ValueError(f"unknown Tree-of-Thoughts task {name!r}; built-in tasks: {TASK_NAMES}")
    return BUILTIN_TASKS[name]()


__all__ = [
    "BUILTIN_TASKS",
    "CreativeWritingTask",
    "GSM8KTask",
    "Game24Task",
    "TASK_NAMES",
    "get_task",
]
