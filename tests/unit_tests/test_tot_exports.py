"""Public names of the Tree-of-Thoughts package: exactly these, sorted, and what they are."""

from __future__ import annotations

import inspect

from langchain_core.runnables import Runnable

import langchain_seed
import langchain_seed.tree_of_thoughts as tot
import langchain_seed.tree_of_thoughts.tasks as tasks

PACKAGE = "langchain_seed.tree_of_thoughts"
# Classes and functions exported by the package -> the module that defines them.
DEFINED_IN = {
    "CreativeWritingTask": f"{PACKAGE}.tasks.creative_writing",
    "GSM8KTask": f"{PACKAGE}.tasks.gsm8k",
    "Game24Task": f"{PACKAGE}.tasks.game24",
    "ToTTask": f"{PACKAGE}.task",
    "TreeOfThoughts": f"{PACKAGE}.runnable",
    "get_task": f"{PACKAGE}.tasks",
    "tree_to_mermaid": f"{PACKAGE}.mermaid",
}
CONSTANTS = ["BUILTIN_TASKS", "LEVEL_EVENT", "TASK_NAMES"]
TASK_CLASSES = ["CreativeWritingTask", "GSM8KTask", "Game24Task"]


def test_tree_of_thoughts_all_is_sorted_and_exactly_the_expected_names() -> None:
    assert tot.__all__ == sorted(tot.__all__)
    assert set(tot.__all__) == set(DEFINED_IN) | set(CONSTANTS)
    assert len(tot.__all__) == len(set(tot.__all__))


def test_exported_classes_and_functions_are_defined_in_their_modules() -> None:
    for name, module in DEFINED_IN.items():
        obj = getattr(tot, name)
        assert inspect.isclass(obj) or inspect.isfunction(obj), name
        assert obj.__name__ == name
        assert obj.__module__ == module, name


def test_exported_classes_are_the_expected_kinds() -> None:
    assert issubclass(tot.TreeOfThoughts, Runnable)
    assert inspect.isclass(tot.ToTTask) and not issubclass(tot.ToTTask, Runnable)
    for name in TASK_CLASSES:
        task_class = getattr(tot, name)
        assert issubclass(task_class, tot.ToTTask) and task_class is not tot.ToTTask, name
    assert inspect.isfunction(tot.get_task) and inspect.isfunction(tot.tree_to_mermaid)


def test_constants_name_the_builtin_tasks_and_the_level_event() -> None:
    assert tot.TASK_NAMES == ("creative_writing", "game24", "gsm8k")
    assert tot.BUILTIN_TASKS == {
        "creative_writing": tot.CreativeWritingTask,
        "game24": tot.Game24Task,
        "gsm8k": tot.GSM8KTask,
    }
    assert tot.LEVEL_EVENT == "tot_level"
    for name, task_class in tot.BUILTIN_TASKS.items():
        assert type(tot.get_task(name)) is task_class


def test_top_level_lazy_exports_resolve_to_the_package() -> None:
    assert langchain_seed.TreeOfThoughts is tot.TreeOfThoughts
    assert langchain_seed.ToTTask is tot.ToTTask
    assert langchain_seed.tree_to_mermaid is tot.tree_to_mermaid


def test_tasks_all_is_sorted() -> None:
    assert tasks.__all__ == sorted(tasks.__all__)


def test_tasks_all_is_reexported_unchanged_by_the_package() -> None:
    assert set(tasks.__all__) == {"BUILTIN_TASKS", "TASK_NAMES", "get_task", *TASK_CLASSES}
    for name in tasks.__all__:
        assert getattr(tot, name) is getattr(tasks, name), name
