"""The benchmark harness: what a method and a workload are, and the interleaved run loop.

Vocabulary (used the same way in the report):
- *method*: one way of running the model (``sequential``, ``hf_batched``, ``ours``, ...).
  :meth:`Method.open` builds a fresh backend (untimed: models loaded, caches empty, stats
  zero); the backend is closed after the trial.
- *workload*: what is run (``batch``, ``sc``, ``tot-game24``, ...). :meth:`Workload.run`
  drives one backend through the whole workload and returns a :class:`RunOutput`.
- *trial*: one timed ``Workload.run`` of one method. Trials are interleaved: repeat ``r``
  runs every method once, in an order rotated by ``r``, so drift of the machine (other
  processes, thermal state) spreads over all methods instead of landing on one.
- *speedup vs B*: ``median wall(B) / median wall(method)`` (> 1 means faster than B),
  computed in :mod:`~langchain_seed.bench.summary`.

Results are the plain data of :mod:`~langchain_seed.bench.results`. Nothing here imports
torch; the harness is tested with fake methods.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from langchain_seed.bench.memory import PeakRSS
from langchain_seed.bench.results import RunOutput, Trial, WorkloadResult
from langchain_seed.bench.summary import summarize

logger = logging.getLogger(__name__)


class Backend(Protocol):
    """What :meth:`Method.open` returns; a workload knows which richer interface it needs."""

    def close(self) -> None:
        """Release models, threads and caches of this trial."""


class Method(Protocol):
    """A named way to run the model; builds a fresh backend per trial."""

    @property
    def name(self) -> str:
        """Unique name in the report."""

    def open(self) -> Backend:
        """Build the backend for one trial (untimed)."""


class Workload(Protocol):
    """Something to run the same way through every method."""

    @property
    def name(self) -> str:
        """Unique name in the report."""

    @property
    def description(self) -> str:
        """One line for the report."""

    @property
    def compare_outputs(self) -> bool:
        """True when outputs must equal the reference method's (temperature 0)."""

    @property
    def reference(self) -> str:
        """The method whose outputs are the truth (usually ``sequential``)."""

    @property
    def baselines(self) -> tuple[str, ...]:
        """Methods to compute speedups against."""

    @property
    def methods(self) -> tuple[str, ...]:
        """Default methods of this workload."""

    def warmup(self, backend: Any) -> None:
        """A short untimed run through the same code path (kernels, allocator, caches)."""

    def run(self, backend: Any) -> RunOutput:
        """The timed run."""


ProgressHook = Callable[[str], None]
"""Called with a short description before each warm-up and trial (for a progress bar)."""


def run_workload(
    workload: Workload,
    methods: Sequence[Method],
    *,
    repeats: int = 3,
    warmup: bool = True,
    on_step: ProgressHook | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> WorkloadResult:
    """Run every method on one workload, interleaved, and summarize.

    Args:
        workload: what to run.
        methods: how to run it; names must be unique.
        repeats: timed trials per method (>= 1).
        warmup: one untimed :meth:`Workload.warmup` per method first.
        on_step: progress hook, called before each warm-up and trial.
        clock: time source (tests pass a fake).

    Returns:
        Summaries in the order of ``methods``; a method that raises is reported as failed
        and skipped from then on, the others continue.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise ValueError(f"method names must be unique, got {names}")
    trials: dict[str, list[Trial]] = {m.name: [] for m in methods}
    errors: dict[str, str] = {}

    def attempt(method: Method, action: Callable[[Any], Any]) -> Any:
        try:
            backend = method.open()
        except Exception as exc:
            _fail(method.name, exc)
            return None
        try:
            return action(backend)
        except Exception as exc:
            _fail(method.name, exc)
            return None
        finally:
            try:
                backend.close()
            except Exception:
                logger.exception("closing backend of %s failed", method.name)

    def _fail(name: str, exc: Exception) -> None:
        logger.error("%s failed on %s: %r", name, workload.name, exc, exc_info=exc)
        errors[name] = f"{type(exc).__name__}: {exc}"

    if warmup:
        for method in methods:
            if on_step is not None:
                on_step(f"{workload.name}: warm-up {method.name}")
            attempt(method, workload.warmup)
    for repeat in range(repeats):
        shift = repeat % len(methods)
        for method in list(methods[shift:]) + list(methods[:shift]):
            if method.name in errors:
                continue
            if on_step is not None:
                on_step(f"{workload.name}: {method.name} ({repeat + 1}/{repeats})")

            def timed(backend: Any, repeat: int = repeat, name: str = method.name) -> None:
                with PeakRSS() as rss:
                    start = clock()
                    output = workload.run(backend)
                    wall = clock() - start
                trials[name].append(Trial(name, repeat, wall, rss.peak, output))

            attempt(method, timed)
    ordered_errors = {m.name: errors[m.name] for m in methods if m.name in errors}
    # A method that failed mid-way keeps no partial trials: its numbers would not be comparable.
    kept = {name: ts for name, ts in trials.items() if name not in errors}
    summaries, warnings = summarize(
        kept,
        ordered_errors,
        baselines=workload.baselines,
        compare_outputs=workload.compare_outputs,
        reference=workload.reference,
    )
    for message in warnings:
        logger.warning("%s: %s", workload.name, message)
    return WorkloadResult(
        workload=workload.name,
        description=workload.description,
        methods=summaries,
        warnings=[f"{workload.name}: {w}" for w in warnings],
        repeats=repeats,
        reference=workload.reference,
    )
