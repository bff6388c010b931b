"""Tree-of-Thoughts search as a LangChain runnable, with built-in tasks.

``TreeOfThoughts`` drives a BFS / DFS :mod:`~.search` over a :class:`ToTTask`; every level's
generation calls go to the model as one submission, then every evaluation call.
"""

from langchain_seed.tree_of_thoughts.mermaid import tree_to_mermaid
from langchain_seed.tree_of_thoughts.runnable import LEVEL_EVENT, TreeOfThoughts
from langchain_seed.tree_of_thoughts.task import ToTTask
from langchain_seed.tree_of_thoughts.tasks import (
    BUILTIN_TASKS,
    TASK_NAMES,
    CreativeWritingTask,
    Game24Task,
    GSM8KTask,
    get_task,
)

__all__ = [
    "BUILTIN_TASKS",
    "CreativeWritingTask",
    "GSM8KTask",
    "Game24Task",
    "LEVEL_EVENT",
    "TASK_NAMES",
    "ToTTask",
    "TreeOfThoughts",
    "get_task",
    "tree_to_mermaid",
]
