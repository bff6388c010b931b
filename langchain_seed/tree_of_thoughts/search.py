"""BFS and DFS over thoughts, written as generators so one search drives sync and async runs.

A search never calls the model itself. It yields a
:class:`~langchain_seed.model_calls.ModelCall` (every prompt of one generation or
evaluation phase, all at once; ``phase`` and ``level`` say which) and is sent back its
:class:`~langchain_seed.model_calls.CallResult`; it yields a :class:`LevelEvent` after
every level and is sent ``None``. The runnable hands each call to the model as it is (one
``generate`` / ``batch`` per call, :mod:`langchain_seed.model_calls`), so the search logic
is plain Python that tests drive with scripted outputs.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_seed.engine.config import Grammar
from langchain_seed.model_calls import CallResult, ModelCall, Sample
from langchain_seed.tree_of_thoughts.task import ToTTask
from langchain_seed.tree_of_thoughts.tree import Node, Tree

logger = logging.getLogger(__name__)


@dataclass
class LevelEvent:
    """Emitted after a level (BFS) or a node expansion (DFS) is evaluated and selected."""

    level: int
    data: dict[str, Any]


Request = ModelCall | LevelEvent
"""What a search yields to its driver."""
SearchGenerator = Generator[Request, "CallResult | None", "SearchOutcome"]
"""The whole search: drive it with ``send`` until ``StopIteration.value``."""
NodesGenerator = Generator[Request, "CallResult | None", "list[Node]"]
NoneGenerator = Generator[Request, "CallResult | None", None]
BestGenerator = Generator[Request, "CallResult | None", "Node | None"]


@dataclass
class SearchConfig:
    """Validated search knobs (the runnable resolves ``None`` fields from the task)."""

    search: Literal["bfs", "dfs"] = "bfs"
    breadth: int = 5
    n_generate_sample: int = 1
    n_evaluate_sample: int = 3
    steps: int = 4
    selection: Literal["greedy", "sample"] = "greedy"
    value_threshold: float = 0.0
    max_nodes: int | None = None
    generate_max_tokens: int | None = None
    """Overrides the task's generation budget (``None``: the task's, per level)."""
    evaluate_max_tokens: int | None = None
    """Overrides the task's evaluation budget."""
    seed: int | None = None
    temperature: float | None = None
    """Sampling temperature of every call; ``None`` leaves the model's own."""
    pipeline: bool = False
    """BFS, value evaluation, no node budget: evaluate a parent's children as soon as that
    parent's generation ends, while the other parents still generate (same tree)."""


@dataclass
class SearchOutcome:
    """What a finished search hands back to the runnable."""

    tree: Tree
    best: Node | None
    stopped: str
    """Why the search ended: ``steps``, ``all_final``, ``solved`` (DFS found a final
    state), ``exhausted`` (DFS ran out of branches), ``no_children`` or ``max_nodes``."""
    counters: dict[str, int] = field(default_factory=dict)


class Search:
    """One search over one input; ``run()`` returns the generator the runnable drives."""

    def __init__(self, task: ToTTask, x: str, cfg: SearchConfig) -> None:
        self.task = task
        self.x = x
        self.cfg = cfg
        self.tree = Tree.with_root()
        self.value_cache: dict[str, list[str]] = {}
        """Evaluation prompt -> its outputs, for the whole search (the ToT value cache)."""
        self.prefetched: set[str] = set()
        """Evaluation prompts of this level already computed by the pipeline."""
        self.rng = random.Random(cfg.seed)
        self.stopped = ""
        self.counters = {
            "generation_prompts": 0,
            "evaluation_prompts": 0,
            "value_cache_hits": 0,
            "duplicate_states": 0,
            "malformed_generations": 0,
            "malformed_evaluations": 0,
        }

    # -- budget -----------------------------------------------------------------------

    def budget_left(self) -> int | None:
        """Nodes that may still be created (``None``: unlimited)."""
        if self.cfg.max_nodes is None:
            return None
        return max(self.cfg.max_nodes - (len(self.tree.nodes) - 1), 0)

    # -- phases -----------------------------------------------------------------------

    def expand(self, parents: list[Node], step: int) -> NodesGenerator:
        """Generation phase: every parent's prompt at once; returns the new children."""
        task, x = self.task, self.x
        prompts = [task.generate_prompt(x, p.state, step) for p in parents]
        n = task.generate_samples(self.cfg.n_generate_sample)
        self.counters["generation_prompts"] += len(prompts)
        max_tokens, stop = task.generate_limits(step)
        if self.cfg.generate_max_tokens is not None:
            max_tokens = self.cfg.generate_max_tokens
        then = self._prefetch(parents, step) if self._pipelined() else None
        result = yield ModelCall(
            prompts, n=n, max_tokens=max_tokens, temperature=self.cfg.temperature, stop=stop,
            then=then, phase="generate", level=step,
        )  # fmt: skip
        assert result is not None
        children: list[Node] = []
        for parent, outs in zip(parents, result.texts, strict=True):
            try:
                states = task.parse_thoughts(x, parent.state, list(outs), step)
            except Exception:  # a task parser must not end the search
                logger.warning("parse_thoughts failed on %r", outs, exc_info=True)
                states = []
            if not states:
                self.counters["malformed_generations"] += 1
            for state in states:
                left = self.budget_left()
                if left is not None and left <= 0:
                    self.stopped = "max_nodes"
                    break
                children.append(self.tree.add(parent, state))
        return children

    def _pipelined(self) -> bool:
        cfg = self.cfg
        return cfg.pipeline and self.task.evaluate_mode == "value" and cfg.max_nodes is None

    def _prefetch(
        self, parents: list[Node], step: int
    ) -> Callable[[int, list[Sample]], ModelCall | None]:
        """``then`` of a pipelined generation call: the value call of one parent's children.

        It asks for the same prompts :meth:`_evaluate_value` would (states the task values
        by prompt, not yet cached or asked for), so the level's tree is the same; only the
        time the evaluations start changes.
        """
        task, x = self.task, self.x

        def then(i: int, samples: list[Sample]) -> ModelCall | None:
            outs = [sample.text for sample in samples]
            try:
                states = task.parse_thoughts(x, parents[i].state, outs, step)
            except Exception:  # expand reports it
                return None
            todo: list[str] = []
            for state in states:
                if task.static_value(x, state, step) is not None:
                    continue
                prompt = task.value_prompt(x, state, step)
                if prompt not in self.value_cache and prompt not in self.prefetched:
                    if prompt not in todo:
                        todo.append(prompt)
            if not todo:
                return None
            self.prefetched.update(todo)

            def done(result: CallResult) -> None:
                for prompt, outs in zip(todo, result.texts, strict=True):
                    self.value_cache[prompt] = list(outs)

            return self._value_call(step, todo, done)

        return then

    def _value_call(
        self, step: int, prompts: list[str], done: Callable[[CallResult], None] | None = None
    ) -> ModelCall:
        """The evaluation call of ``prompts`` (value prompts) at level ``step``."""
        return self._evaluation(step, prompts, self.task.evaluation_grammar(step), done)

    def _evaluation(
        self,
        step: int,
        prompts: list[str],
        grammar: Grammar | None = None,
        done: Callable[[CallResult], None] | None = None,
    ) -> ModelCall:
        return ModelCall(
            prompts,
            n=self.cfg.n_evaluate_sample,
            max_tokens=self.cfg.evaluate_max_tokens or self.task.evaluate_max_tokens,
            temperature=self.cfg.temperature,
            stop=_stops(self.task.evaluate_stop),
            grammar=grammar,
            done=done,
            phase="evaluate",
            level=step,
        )

    def evaluate(self, nodes: list[Node], step: int) -> NoneGenerator:
        """Evaluation phase: every uncached evaluation prompt at once; sets ``node.value``."""
        if not nodes:
            return None
        if self.task.evaluate_mode == "vote":
            yield from self._evaluate_vote(nodes, step)
        else:
            yield from self._evaluate_value(nodes, step)
        for node in nodes:
            node.final = bool(self.task.is_final(self.x, node.state))
        return None

    def _evaluate_value(self, nodes: list[Node], step: int) -> NoneGenerator:
        task, x = self.task, self.x
        seen_states: set[str] = set()
        prompt_of: dict[int, str] = {}
        todo: list[str] = []
        for node in nodes:
            if node.state in seen_states:  # the ToT paper scores a repeated candidate 0
                node.value, node.note = 0.0, "duplicate"
                self.counters["duplicate_states"] += 1
                continue
            seen_states.add(node.state)
            static = task.static_value(x, node.state, step)
            if static is not None:
                node.value, node.note = float(static), "static"
                continue
            prompt = task.value_prompt(x, node.state, step)
            prompt_of[node.id] = prompt
            if prompt in self.prefetched:  # computed during this level's generation
                self.prefetched.discard(prompt)
                self.counters["evaluation_prompts"] += 1
            elif prompt in self.value_cache or prompt in todo:
                self.counters["value_cache_hits"] += 1
            else:
                todo.append(prompt)
        if todo:
            self.counters["evaluation_prompts"] += len(todo)
            result = yield self._value_call(step, todo)
            assert result is not None
            for prompt, outs in zip(todo, result.texts, strict=True):
                self.value_cache[prompt] = list(outs)
        self.prefetched.clear()
        for node in nodes:
            if node.id not in prompt_of:
                continue
            outs = self.value_cache[prompt_of[node.id]]
            try:
                value = task.parse_value(x, node.state, outs)
                new_state = task.update_state(x, node.state, outs)
            except Exception:  # a task parser must not end the search
                logger.warning("parse_value failed on %r", outs, exc_info=True)
                value, new_state = None, node.state
            if value is None:  # nothing parsable: the state is worth nothing
                self.counters["malformed_evaluations"] += 1
                node.note = "unparsable evaluation"
            node.value = float(value or 0.0)
            if new_state != node.state:
                parent_state = self.tree.nodes[node.parent].state if node.parent is not None else ""
                node.state = new_state
                node.thought = new_state[len(parent_state) :]
        return None

    def _evaluate_vote(self, nodes: list[Node], step: int) -> NoneGenerator:
        task, x = self.task, self.x
        prompt = task.vote_prompt(x, [n.state for n in nodes], step)
        if prompt in self.value_cache:
            self.counters["value_cache_hits"] += 1
        else:
            self.counters["evaluation_prompts"] += 1
            result = yield self._evaluation(step, [prompt])
            assert result is not None
            self.value_cache[prompt] = list(result.texts[0])
        try:
            votes = [float(v) for v in task.parse_votes(self.value_cache[prompt], len(nodes))]
        except Exception:
            logger.warning("parse_votes failed", exc_info=True)
            votes = []
        if len(votes) != len(nodes):
            self.counters["malformed_evaluations"] += 1
            votes = (votes + [0.0] * len(nodes))[: len(nodes)]
        for node, vote in zip(nodes, votes, strict=True):
            node.value, node.note = vote, "votes"
        return None

    # -- selection --------------------------------------------------------------------

    def select(self, candidates: list[Node]) -> list[Node]:
        """The beam: top-b by value (``greedy``) or b draws weighted by value (``sample``)."""
        b = self.cfg.breadth
        if self.cfg.selection == "sample":
            weights = [max(c.value or 0.0, 0.0) for c in candidates]
            if sum(weights) <= 0:
                weights = [1.0] * len(candidates)
            picks = self.rng.choices(range(len(candidates)), weights=weights, k=b)
            return [candidates[i] for i in dict.fromkeys(picks)]  # draws with replacement
        # sorted() is stable: ties keep generation order, so greedy runs repeat exactly.
        return sorted(candidates, key=lambda c: c.value or 0.0, reverse=True)[:b]

    def best_of(self, nodes: list[Node]) -> Node | None:
        """Final states first, then the highest value, then the deepest."""
        if not nodes:
            return None
        return max(nodes, key=lambda n: (n.final, n.value or 0.0, n.depth, -n.id))

    # -- strategies -------------------------------------------------------------------

    def run(self) -> SearchGenerator:
        """The search as a generator (see the module docstring)."""
        if self.cfg.search == "dfs":
            best = yield from self._dfs(self.tree.root, 0)
            if best is None:
                kept = [n for n in self.tree.nodes if n.status == "kept"]
                best = self.best_of(kept)
            self.stopped = self.stopped or "exhausted"
        else:
            best = yield from self._bfs()
        self.tree.close()
        return SearchOutcome(self.tree, best, self.stopped, dict(self.counters))

    def _bfs(self) -> BestGenerator:
        beam = [self.tree.root]
        for step in range(self.cfg.steps):
            expandable = [n for n in beam if not n.final]
            carried = [n for n in beam if n.final]
            if not expandable:
                self.stopped = "all_final"
                break
            left = self.budget_left()
            if left is not None and left <= 0:
                self.stopped = "max_nodes"
                break
            children = yield from self.expand(expandable, step)
            yield from self.evaluate(children, step)
            candidates = children + carried
            if not candidates:
                self.stopped = "no_children"
                break
            selected = self.select(candidates)
            chosen = {n.id for n in selected}
            for child in children:
                child.status = "kept" if child.id in chosen else "pruned"
            beam = selected
            yield LevelEvent(step, self._level_data(step, children, beam))
            if self.stopped == "max_nodes":
                break
        else:
            self.stopped = "steps"
        return self.best_of(beam if beam[0].id != 0 else [])

    def _dfs(self, node: Node, step: int) -> BestGenerator:
        if node.final:
            self.stopped = "solved"
            return node
        if step >= self.cfg.steps:
            return None
        left = self.budget_left()
        if left is not None and left <= 0:
            self.stopped = "max_nodes"
            return None
        children = yield from self.expand([node], step)
        yield from self.evaluate(children, step)
        ranked = sorted(children, key=lambda c: c.value or 0.0, reverse=True)
        for rank, child in enumerate(ranked):
            if (child.value or 0.0) < self.cfg.value_threshold:
                child.status, child.note = "pruned", child.note or "below threshold"
            elif rank >= self.cfg.breadth:
                child.status, child.note = "pruned", child.note or "beyond breadth"
        kept = [c for c in ranked if c.status == "open"]
        yield LevelEvent(step, self._level_data(step, children, kept))
        for child in kept:
            if self.stopped == "max_nodes":
                break
            child.status = "kept"
            found = yield from self._dfs(child, step + 1)
            if found is not None:
                return found
        return None

    def _level_data(self, step: int, children: list[Node], kept: list[Node]) -> dict[str, Any]:
        best = self.best_of(kept)
        return {
            "level": step,
            "search": self.cfg.search,
            "new_nodes": [c.to_dict() for c in children],
            "kept": [n.id for n in kept],
            "best_value": best.value if best else None,
            "nodes_total": len(self.tree.nodes),
        }


def _stops(stop: Any) -> list[str] | None:
    return list(stop) if stop else None
