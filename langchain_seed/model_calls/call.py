"""The one request shape of the reasoning runs, and what comes back.

A run yields a :class:`ModelCall` (every prompt of one phase, ``n`` samples each) and is
sent a :class:`CallResult` (one :class:`Sample` per prompt and sample); it yields a
:class:`Progress` event and is sent ``None``.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import RunnableConfig

from langchain_seed.engine.config import Grammar
from langchain_seed.engine.stats import SpecStats

T = TypeVar("T")

SPEC_COUNTERS = ("cached_prompt_tokens", "drafted", "accepted", "verifications", "target_tokens")
"""The speculative-decoding counters a run's statistics sum over its samples."""


@dataclass
class ModelCall:
    """Every prompt of one phase, submitted to the model together."""

    prompts: Sequence[str | PromptValue]
    """One prompt per call (a string is a plain prompt, a chat model gets it as a human
    message)."""
    n: int = 1
    """Samples per prompt (one engine group each)."""
    max_tokens: int | None = None
    """Most new tokens per sample (engine-backed models and models that take ``n``, see
    :func:`~langchain_seed.model_calls.requests.takes_n`; others use their own setting)."""
    temperature: float | None = None
    """Sampling temperature (engine-backed models, models that take ``n``); ``None`` keeps
    the model's own."""
    seed: int | None = None
    """Sampling seed (engine-backed models: sample ``j`` of a prompt uses ``seed + j``; models
    that take ``n`` send it with the request)."""
    stop: list[str] | None = None
    """Stop strings; applied to the text of models that ignore them."""
    configs: Sequence[RunnableConfig] | None = None
    """One runnable config per prompt (callbacks, tags, metadata); ``None``: the run's."""
    grammar: Grammar | None = None
    """A grammar every output follows (engine-backed models; other models ignore it)."""
    then: Callable[[int, list[Sample]], ModelCall | None] | None = None
    """Pipelining: called as soon as prompt ``i``'s samples arrive; a call it returns is
    submitted at once, while the other prompts still decode, and its result goes to that
    call's ``done``. Each prompt then goes to the model as a call of its own (the engine
    batches them as they arrive); the result comes back when every follow-up is done."""
    done: Callable[[CallResult], None] | None = None
    """Receives this call's result when it is a follow-up of a pipelined call."""
    phase: str | None = None
    """What the call is in its run, for the run's statistics (Tree of Thoughts:
    ``"generate"`` or ``"evaluate"``)."""
    level: int | None = None
    """The level of the search the call belongs to (Tree of Thoughts)."""


@dataclass
class Progress:
    """A custom event the driver dispatches (``astream_events``, callbacks)."""

    name: str
    data: dict[str, Any]
    config: RunnableConfig | None = None
    """The config to dispatch it under; ``None``: the run's."""


@dataclass
class Sample:
    """One completion and what the model reported about it."""

    text: str
    prompt_tokens: int | None = None
    """Prompt tokens (engine-backed models, and others that report usage)."""
    generated_tokens: int | None = None
    """Generated tokens (engine-backed models, and others that report usage)."""
    spec: SpecStats | None = None
    """The request's speculative-decoding counters (engine-backed models)."""


@dataclass
class CallResult:
    """The samples of one :class:`ModelCall`: ``samples[i]`` holds prompt i's ``n``."""

    samples: list[list[Sample]]
    engine_stats: dict[str, Any] | None = None
    """The engine's cumulative stats after the call (engine-backed models)."""
    seconds: float = 0.0
    """Wall time of the call."""
    follow_ups: list[tuple[ModelCall, CallResult]] = field(default_factory=list)
    """A pipelined call's follow-up calls and their results, in the order they ended."""

    @property
    def texts(self) -> list[list[str]]:
        """The completions only, in the same shape."""
        return [[s.text for s in row] for row in self.samples]


@dataclass
class Totals:
    """Counts summed over samples."""

    prompt_tokens: int | None
    """``None`` when some sample did not report it."""
    generated_tokens: int | None
    """``None`` when some sample did not report it."""
    spec: SpecStats | None
    """The :data:`SPEC_COUNTERS` summed, when every sample reported them (else ``None``)."""

    @classmethod
    def of(cls, samples: Iterable[Sample]) -> Totals:
        """The totals of ``samples``."""
        rows = list(samples)

        def total(values: list[int | None]) -> int | None:
            known = [v for v in values if v is not None]
            return sum(known) if known and len(known) == len(values) else None

        specs = [s.spec for s in rows]
        spec = None
        if rows and all(s is not None for s in specs):
            spec = SpecStats(**{k: sum(getattr(s, k) for s in specs) for k in SPEC_COUNTERS})
        return cls(
            total([s.prompt_tokens for s in rows]),
            total([s.generated_tokens for s in rows]),
            spec,
        )


Step = ModelCall | Progress
"""What a reasoning run yields to its driver."""
Run = Generator[Step, "CallResult | None", T]
"""A reasoning run: drive it with :func:`~langchain_seed.model_calls.drivers.drive` or
:func:`~langchain_seed.model_calls.drivers.adrive`."""
