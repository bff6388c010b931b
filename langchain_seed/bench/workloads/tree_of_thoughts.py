"""``tot-game24``, ``tot-gsm8k``: ``TreeOfThoughts`` searches, temperature 0, trees compared.

The transformers baselines get each search phase's token budget from :func:`budgeted_task`,
so every method generates under the limits ``TreeOfThoughts`` gives engine-backed models.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

from langchain_seed.bench.backends import GenBackend
from langchain_seed.bench.results import DEFAULT_BASELINES, REFERENCE_METHOD, RunOutput
from langchain_seed.bench.workloads.common import field_of, runnable_output
from langchain_seed.datasets import game24_puzzles, gsm8k_gold, gsm8k_rows
from langchain_seed.engine.config import SamplingParams


@dataclass
class TreeOfThoughtsWorkload:
    """``TreeOfThoughts`` on several inputs, one search after another, temperature 0."""

    task: str = "game24"
    inputs: int = 5
    overrides: dict[str, Any] = field(default_factory=dict)
    methods: tuple[str, ...] = ("sequential", "hf_batched", "seed_fcfs", "batched_ar", "ours")
    baselines: tuple[str, ...] = DEFAULT_BASELINES
    reference: str = REFERENCE_METHOD
    compare_outputs: bool = True
    offset: int = 0

    @property
    def name(self) -> str:
        """``tot-<task>``."""
        return f"tot-{self.task}"

    @property
    def description(self) -> str:
        """One line for the report."""
        extra = ", ".join(f"{k}={v}" for k, v in sorted(self.overrides.items()))
        return (
            f"TreeOfThoughts {self.task} on {self.inputs} inputs, temperature 0"
            + (f" ({extra})" if extra else " (task defaults)")
            + "; outputs = trees"
        )

    def _inputs(self) -> list[dict[str, Any]]:
        if self.task == "game24":
            return [{"input": p} for p in game24_puzzles(self.inputs, self.offset)]
        if self.task == "gsm8k":
            return [
                {"input": r["question"], "gold": gsm8k_gold(r["answer"])}
                for r in gsm8k_rows(self.inputs, self.offset)
            ]
        raise ValueError(f"unsupported ToT task for the benchmark: {self.task!r}")

    def warmup(self, backend: GenBackend) -> None:
        """A short greedy generation and the runnable's import."""
        import langchain_seed.tree_of_thoughts  # noqa: F401

        backend.generate([backend.encode("Input: 4 5 6 10\n")], SamplingParams(max_tokens=4))

    def run(self, backend: GenBackend) -> RunOutput:
        """One search per input; outputs are the trees (thoughts, values, statuses)."""
        from langchain_seed.tree_of_thoughts import TreeOfThoughts
        from langchain_seed.tree_of_thoughts.tasks import get_task

        task, budget = budgeted_task(
            get_task(self.task), self.overrides.get("max_tokens"), self.overrides.get("steps")
        )
        llm = backend.llm(SamplingParams(temperature=0.0), budget=budget)
        # One model call per phase, as the benchmark table was measured (and as the
        # sequential baselines need); pipelining is measured by benchmarks/tot_default.py.
        settings = {"temperature": 0.0, "pipeline": False, **self.overrides}
        tot = TreeOfThoughts(llm=llm, task=task, **settings)
        trees: list[str] = []
        solved = 0
        checked = 0
        for item in self._inputs():
            result = tot.invoke(item)
            trees.append(tree_signature(field_of(result, "tree")))
            ok = field_of(result, "solved")
            if ok is not None:
                checked += 1
                solved += bool(ok)
        stats = backend.stats()
        stats["solved"] = solved if checked else None
        stats["solve_rate"] = solved / checked if checked else None
        return runnable_output(backend, trees, stats)


def budgeted_task(task: Any, max_tokens: int | None, steps: int | None = None) -> tuple[Any, Any]:
    """A copy of a ToT task that records its prompts, and ``prompt -> max_tokens`` from them.

    ``TreeOfThoughts`` gives engine-backed models each phase's token budget
    (``max_tokens=``) but can only call ``batch`` on another LLM; the baseline LLM reads the
    same budget from this function so both generate under the same limits.
    """
    task = copy.copy(task)
    if steps is not None:
        # Set here so the runnable does not copy the task again (the copy would bypass the
        # recording below and keep the old ``steps`` in prompts that depend on it).
        task.steps = steps
    kinds: dict[str, tuple[str, int]] = {}
    generate_prompt, value_prompt = task.generate_prompt, task.value_prompt
    vote_prompt = getattr(task, "vote_prompt", None)

    def record_generate(x: str, state: str, step: int) -> str:
        prompt = str(generate_prompt(x, state, step))
        kinds[prompt] = ("generate", step)
        return prompt

    def record_value(x: str, state: str, step: int) -> str:
        prompt = str(value_prompt(x, state, step))
        kinds[prompt] = ("evaluate", step)
        return prompt

    def record_vote(x: str, states: list[str], step: int) -> str:
        prompt = str(vote_prompt(x, states, step))  # type: ignore[misc]
        kinds[prompt] = ("evaluate", step)
        return prompt

    task.generate_prompt = record_generate
    task.value_prompt = record_value
    if vote_prompt is not None:
        task.vote_prompt = record_vote

    def budget(prompt: str) -> int | None:
        if max_tokens is not None:
            return max_tokens
        kind = kinds.get(prompt)
        if kind is None:
            return None
        if kind[0] == "generate":
            return int(task.generate_limits(kind[1])[0])
        return int(task.evaluate_max_tokens)

    return task, budget


def tree_signature(tree: Any) -> str:
    """A tree as canonical JSON of what must not change between lossless methods.

    Keeps each node's id, parent, thought, value and status; drops anything else
    (timings, notes such as ``cached``).
    """
    nodes = tree.to_list() if hasattr(tree, "to_list") else tree
    if nodes is None:
        return "null"
    keep = ("id", "parent", "depth", "thought", "value", "status", "final")
    plain = [{k: field_of(n, k) for k in keep} for n in nodes]
    return json.dumps(plain, sort_keys=True, default=str)
