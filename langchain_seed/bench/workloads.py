"""The benchmark workloads (DESIGN section 9), each runnable through any backend.

| name | what it runs |
| --- | --- |
| ``batch`` | GSM8K questions through the chat template, greedy, all submitted at once |
| ``sc-n8``, ``sc-n16`` | ``SelfConsistency`` on GSM8K, temperature 0.7, one batch |
| ``tot-game24`` | ``TreeOfThoughts`` Game of 24 (BFS, propose + value), temperature 0 |
| ``tot-gsm8k`` | ``TreeOfThoughts`` GSM8K (SEED's sub-question setup), temperature 0 |
| ``prefix`` | one ToT level of Game of 24 value prompts (shared header), cache off/on |

Sizes come from :class:`WorkloadSizes`; ``quick`` sizes keep ``langchain-seed bench --quick``
under ten minutes on a 2-core CPU.
"""

from __future__ import annotations

import copy
import functools
import itertools
import json
import re
from dataclasses import dataclass, field
from typing import Any

from langchain_seed.bench.backends import GenBackend
from langchain_seed.bench.harness import DEFAULT_BASELINES, REFERENCE_METHOD, RunOutput
from langchain_seed.datasets import game24_puzzles, gsm8k_gold, gsm8k_rows, normalize_number
from langchain_seed.engine.config import SamplingParams

WORKLOADS = ("batch", "sc", "tot-game24", "tot-gsm8k", "prefix")
"""Workload names the CLI accepts (``sc`` runs n = 8 and n = 16)."""

ALL_METHODS = ("sequential", "hf_batched", "hf_assisted", "seed_fcfs", "batched_ar", "ours")


# --------------------------------------------------------------------------- data


def chat_text(tokenizer: Any, user: str) -> str:
    """``user`` as one user turn through the model's chat template, ready for the reply."""
    return str(
        tokenizer.apply_chat_template(
            [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True
        )
    )


def chat_prompt_template(tokenizer: Any, user_template: str = "{question}") -> str:
    """An f-string prompt template: the chat template around ``user_template``.

    Lets a plain-text LLM (``SeedLLM`` and the transformers baseline alike) see exactly the
    chat-formatted prompt an instruct model expects. Braces of the chat template's own text
    are escaped; ``user_template`` keeps its variables.
    """
    sentinel = "\x00SEED_SLOT\x00"
    text = chat_text(tokenizer, sentinel).replace("{", "{{").replace("}", "}}")
    return text.replace(sentinel, user_template)


# --------------------------------------------------------------------------- sizes


@dataclass(slots=True)
class WorkloadSizes:
    """How big each workload is; :meth:`quick` for the under-ten-minutes run."""

    batch_prompts: int = 32
    batch_tokens: int = 128
    sc_questions: int = 10
    sc_samples: tuple[int, ...] = (8, 16)
    sc_tokens: int = 192
    sc_temperature: float = 0.7
    tot_inputs: int = 5
    tot_overrides: dict[str, Any] = field(default_factory=dict)
    """Extra ``TreeOfThoughts.from_task`` arguments (e.g. a smaller beam for quick runs)."""
    prefix_prompts: int = 40
    prefix_tokens: int = 48
    seed: int = 0

    @classmethod
    def quick(cls) -> WorkloadSizes:
        """Tiny sizes: every workload in well under two minutes on a 2-core CPU."""
        return cls(
            batch_prompts=4,
            batch_tokens=24,
            sc_questions=1,
            sc_samples=(8,),
            sc_tokens=24,
            tot_inputs=1,
            tot_overrides={
                "breadth": 1,
                "steps": 1,
                "n_evaluate_sample": 1,
                "max_tokens": 32,
                "max_nodes": 4,
            },
            prefix_prompts=8,
            prefix_tokens=8,
        )


# --------------------------------------------------------------------------- workloads


@dataclass
class BatchWorkload:
    """``n`` GSM8K questions through the chat template, greedy, submitted at once."""

    prompts: int = 32
    max_tokens: int = 128
    name: str = "batch"
    methods: tuple[str, ...] = ALL_METHODS
    baselines: tuple[str, ...] = DEFAULT_BASELINES
    reference: str = REFERENCE_METHOD
    compare_outputs: bool = True
    offset: int = 0

    @property
    def description(self) -> str:
        """One line for the report."""
        return (
            f"{self.prompts} GSM8K questions (chat template), {self.max_tokens} new tokens, "
            "greedy, one llm.batch"
        )

    def _ids(self, backend: GenBackend, count: int) -> list[list[int]]:
        rows = gsm8k_rows(count, self.offset)
        return [backend.encode(chat_text(backend.tokenizer, r["question"])) for r in rows]

    def warmup(self, backend: GenBackend) -> None:
        """Two prompts, a few tokens."""
        backend.generate(self._ids(backend, 2), SamplingParams(max_tokens=4))

    def run(self, backend: GenBackend) -> RunOutput:
        """Every prompt at once, greedy; outputs are the generated token ids."""
        ids = self._ids(backend, self.prompts)
        params = SamplingParams(temperature=0.0, max_tokens=self.max_tokens)
        results = backend.generate(ids, params)
        outputs = [row[0].token_ids for row in results]
        return RunOutput(
            outputs=outputs,
            generated_tokens=sum(len(o) for o in outputs),
            stats=backend.stats(),
            info=dict(backend.info),
        )


@dataclass
class SelfConsistencyWorkload:
    """``SelfConsistency`` over GSM8K: ``n`` samples per question, all questions in one batch."""

    questions: int = 10
    n: int = 16
    max_tokens: int = 192
    temperature: float = 0.7
    seed: int = 0
    methods: tuple[str, ...] = ("sequential", "hf_batched", "batched_ar", "ours")
    baselines: tuple[str, ...] = DEFAULT_BASELINES
    reference: str = REFERENCE_METHOD
    compare_outputs: bool = False
    offset: int = 0

    @property
    def name(self) -> str:
        """``sc-n<n>``."""
        return f"sc-n{self.n}"

    @property
    def description(self) -> str:
        """One line for the report."""
        return (
            f"SelfConsistency on {self.questions} GSM8K questions, n = {self.n}, "
            f"temperature {self.temperature}, {self.max_tokens} new tokens"
        )

    def warmup(self, backend: GenBackend) -> None:
        """One short sampled generation and the runnable's import."""
        import langchain_seed.self_consistency  # noqa: F401

        prompt = backend.encode(chat_text(backend.tokenizer, "What is 2 + 3?"))
        backend.generate([prompt], SamplingParams(temperature=self.temperature, max_tokens=4), n=2)

    def run(self, backend: GenBackend) -> RunOutput:
        """All questions through ``SelfConsistency.batch``; accuracy against ``#### n``."""
        from langchain_seed.self_consistency import GSM8K_PROMPT, SelfConsistency

        rows = gsm8k_rows(self.questions, self.offset)
        params = SamplingParams(
            temperature=self.temperature, max_tokens=self.max_tokens, seed=self.seed
        )
        sc = SelfConsistency(
            llm=backend.llm(params),
            prompt=chat_prompt_template(backend.tokenizer, GSM8K_PROMPT),
            n=self.n,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            seed=self.seed,
        )
        results = sc.batch([{"question": r["question"]} for r in rows])
        answers = [_field(res, "answer") for res in results]
        correct = sum(
            1
            for answer, row in zip(answers, rows, strict=True)
            if answer is not None and normalize_number(str(answer)) == gsm8k_gold(row["answer"])
        )
        stats = backend.stats()
        stats["accuracy"] = correct / len(rows) if rows else None
        return RunOutput(
            outputs=[None if a is None else str(a) for a in answers],
            generated_tokens=int(stats.get("generated_tokens") or 0),
            stats=stats,
            info=dict(backend.info),
        )


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
        tot = TreeOfThoughts(llm=llm, task=task, **{"temperature": 0.0, **self.overrides})
        trees: list[str] = []
        solved = 0
        checked = 0
        for item in self._inputs():
            result = tot.invoke(item)
            trees.append(tree_signature(_field(result, "tree")))
            ok = _field(result, "solved")
            if ok is not None:
                checked += 1
                solved += bool(ok)
        stats = backend.stats()
        stats["solved"] = solved if checked else None
        stats["solve_rate"] = solved / checked if checked else None
        return RunOutput(
            outputs=trees,
            generated_tokens=int(stats.get("generated_tokens") or 0),
            stats=stats,
            info=dict(backend.info),
        )


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
        results = backend.generate(ids, SamplingParams(temperature=0.0, max_tokens=self.max_tokens))
        outputs = [row[0].token_ids for row in results]
        return RunOutput(
            outputs=outputs,
            generated_tokens=sum(len(o) for o in outputs),
            stats=backend.stats(),
            info=dict(backend.info),
        )


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


def budgeted_task(task: Any, max_tokens: int | None, steps: int | None = None) -> tuple[Any, Any]:
    """A copy of a ToT task that records its prompts, and ``prompt -> max_tokens`` from them.

    ``TreeOfThoughts`` gives Seed models each phase's token budget (``max_tokens=``) but can
    only call ``batch`` on another LLM; the baseline LLM reads the same budget from this
    function so both generate under the same limits.
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


def tree_signature(tree: Any) -> str:
    """A tree as canonical JSON of what must not change between lossless methods.

    Keeps each node's id, parent, thought, value and status; drops anything else
    (timings, notes such as ``cached``).
    """
    nodes = tree.to_list() if hasattr(tree, "to_list") else tree
    if nodes is None:
        return "null"
    keep = ("id", "parent", "depth", "thought", "value", "status", "final")
    plain = [{k: _field(n, k) for k in keep} for n in nodes]
    return json.dumps(plain, sort_keys=True, default=str)


def _field(obj: Any, name: str) -> Any:
    """``obj[name]`` for mappings, ``obj.name`` otherwise (``None`` when absent)."""
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def build_workloads(
    names: list[str], sizes: WorkloadSizes
) -> list[BatchWorkload | SelfConsistencyWorkload | TreeOfThoughtsWorkload | PrefixWorkload]:
    """The workload objects for CLI names (``sc`` expands to one per sample count)."""
    out: list[BatchWorkload | SelfConsistencyWorkload | TreeOfThoughtsWorkload | PrefixWorkload]
    out = []
    for name in names:
        if name == "batch":
            out.append(BatchWorkload(prompts=sizes.batch_prompts, max_tokens=sizes.batch_tokens))
        elif name == "sc" or re.fullmatch(r"sc-n\d+", name):
            counts = sizes.sc_samples if name == "sc" else (int(name[4:]),)
            for n in counts:
                out.append(
                    SelfConsistencyWorkload(
                        questions=sizes.sc_questions,
                        n=n,
                        max_tokens=sizes.sc_tokens,
                        temperature=sizes.sc_temperature,
                        seed=sizes.seed,
                    )
                )
        elif name in ("tot-game24", "tot-gsm8k"):
            out.append(
                TreeOfThoughtsWorkload(
                    task=name[4:], inputs=sizes.tot_inputs, overrides=dict(sizes.tot_overrides)
                )
            )
        elif name == "prefix":
            out.append(PrefixWorkload(prompts=sizes.prefix_prompts, max_tokens=sizes.prefix_tokens))
        else:
            raise ValueError(f"unknown workload {name!r}; choose from {', '.join(WORKLOADS)}")
    return out
