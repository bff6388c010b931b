"""``prefix``: one ToT level of Game of 24 value prompts (shared header), cache off vs on."""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

from langchain_seed.bench.backends import GenBackend
from langchain_seed.bench.results import RunOutput
from langchain_seed.bench.workloads.common import run_greedy
from langchain_seed.datasets import game24_puzzles
from langchain_seed.engine.config import SamplingParams


@dataclass
class PrefixWorkload:
    """One ToT level of Game of 24 value prompts (shared few-shot header), submitted at once.

    Run with the prefix cache off (``ours_nocache``) and on (``ours``); the report shows
    prefill seconds and the share of prompt tokens served from the cache.
    """

    prompts: int = 40
    max_tokens: int = 48
    name: str = "prefix"
    methods: tuple[str, ...] = ("ours_nocache", "ours")
    baselines: tuple[str, ...] = ("ours_nocache",)
    reference: str = "ours_nocache"
    compare_outputs: bool = True

    @property
    def description(self) -> str:
        """One line for the report."""
        return (
            f"{self.prompts} Game of 24 value prompts of one ToT level (same few-shot header), "
            f"{self.max_tokens} new tokens, greedy, prefix cache off vs on"
        )

    def texts(self, count: int) -> list[str]:
        """Value prompts for ``count`` distinct first-step states of several puzzles."""
        return list(_value_prompts(count))

    def warmup(self, backend: GenBackend) -> None:
        """Two of the prompts, a few tokens (on a throw-away engine: the cache starts empty)."""
        ids = [backend.encode(t) for t in self.texts(2)]
        backend.generate(ids, SamplingParams(max_tokens=4))

    def run(self, backend: GenBackend) -> RunOutput:
        """Every prompt at once, greedy; outputs are the generated token ids."""
        ids = [backend.encode(t) for t in self.texts(self.prompts)]
        return run_greedy(backend, ids, self.max_tokens)


@functools.lru_cache(maxsize=8)
def _value_prompts(count: int) -> tuple[str, ...]:
    """Game of 24 value prompts of ``count`` distinct first-step states (built once)."""
    from langchain_seed.tree_of_thoughts.tasks.game24 import Game24Task

    task = Game24Task()
    prompts: list[str] = []
    for puzzle in game24_puzzles(200, offset=400):
        for state in first_steps(puzzle):
            prompt = task.value_prompt(puzzle, state, 1)
            if prompt not in prompts:
                prompts.append(prompt)
            if len(prompts) == count:
                return tuple(prompts)
    return tuple(prompts)


def first_steps(puzzle: str) -> list[str]:
    """Every first step ``a op b = c (left: ...)`` with a whole, non-negative result."""
    numbers = [int(t) for t in puzzle.split()]
    states: list[str] = []
    for i, j in itertools.permutations(range(len(numbers)), 2):
        a, b = numbers[i], numbers[j]
        rest = [numbers[k] for k in range(len(numbers)) if k not in (i, j)]
        for op, value in (("+", a + b), ("-", a - b), ("*", a * b), ("/", a // b if b else -1)):
            if value < 0 or (op == "/" and (b == 0 or a % b)):
                continue
            left = " ".join(str(v) for v in sorted([*rest, value]))
            states.append(f"{a} {op} {b} = {value} (left: {left})\n")
    return states
