"""The engine as a service: submission, the queue, futures, streaming, the engine thread.

:class:`EngineService` is the half of :class:`~langchain_seed.engine.engine.Engine` that
callers talk to; the other half, :meth:`Engine.step`, decodes. One engine thread owns the
queue and the batch; each step runs on the process-wide compute thread
(:mod:`langchain_seed.engine.serving.compute`: one OpenMP team for all engines). Callers on any
thread or event loop submit requests and get a :class:`concurrent.futures.Future` (or await
/ iterate); ``on_delta`` callbacks run on the compute thread. Loaded models and shared
engines are process-wide registries here.
"""

from __future__ import annotations

import abc
import atexit
import copy
import logging
import random
import threading
import time
import weakref
from collections.abc import Callable
from collections.abc import Sequence as Seq
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, cast

import torch

from langchain_seed.engine.coalescing import COALESCED, coalesce
from langchain_seed.engine.config import EngineConfig, SamplingParams
from langchain_seed.engine.results import EngineClosedError, GenerationResult, QueueFullError
from langchain_seed.engine.scheduler import queue_part
from langchain_seed.engine.sequence import SeqStatus, Sequence
from langchain_seed.engine.serving import compute
from langchain_seed.engine.serving.client import EngineClient, Prompt, SharedEngines
from langchain_seed.engine.stats import EngineStats, peak_memory

if TYPE_CHECKING:
    from langchain_seed.engine.engine import Engine

logger = logging.getLogger(__name__)

SHARED: SharedEngines[Engine] = SharedEngines()
"""The process's shared embedded engines (:meth:`EngineService.shared`)."""
_ALL_ENGINES: weakref.WeakSet[Engine] = weakref.WeakSet()


class EngineService(EngineClient):
    """Submission, streaming and the engine thread around :meth:`step` (see the module docstring).

    Subclasses build ``config``, ``scheduler``, ``runner``, ``prefix_cache``, the draft
    state and ``_stats``, then call :meth:`_start_service`; they implement the abstract
    methods (the step, failing everything, encoding and the counters).
    """

    config: EngineConfig
    scheduler: Any
    runner: Any
    prefix_cache: Any
    _stats: EngineStats

    def _start_service(self) -> None:
        self._cv = threading.Condition()
        self._inbox: list[Sequence] = []
        self._closed = False
        self._step_lock = threading.Lock()  # held while a step mutates state and stats
        self._thread = threading.Thread(target=self._loop, name="seed-engine", daemon=True)
        self._thread.start()
        _ALL_ENGINES.add(self)  # type: ignore[arg-type]

    @abc.abstractmethod
    def step(self) -> None:
        """One engine step."""

    @abc.abstractmethod
    def _fail_all(
        self, exc: BaseException, include_waiting: bool, also: Seq[Sequence] = ()
    ) -> None:
        """Fail every running (and, if asked, waiting) request with ``exc``; free all state."""

    @abc.abstractmethod
    def _forward_counts(self) -> tuple[int, int]:
        """(target forwards, draft-model forwards) so far."""

    @abc.abstractmethod
    def _reset_forward_counts(self) -> None:
        """Start the forward counters afresh."""

    @abc.abstractmethod
    def _kv_bytes(self) -> tuple[int, int]:
        """(bytes the KV pools hold now, bytes of their budget) over every model."""

    @classmethod
    def shared(cls, config: EngineConfig | None = None, **kwargs: Any) -> Engine:
        """The process-wide engine for this configuration (created on first use).

        ``kwargs`` are :class:`EngineConfig` fields: they build the configuration, or
        override those of ``config`` (an unknown one raises ``ValueError``).
        """
        build = cast("Callable[[EngineConfig], Engine]", cls)
        cfg = EngineConfig.of(config, **kwargs)
        key = (
            cfg.model, cfg.draft_model, cfg.policy, cfg.drafters, cfg.max_batch_size,
            cfg.max_cache_tokens, cfg.gamma, cfg.device, cfg.dtype,
            cfg.prefix_cache_tokens, cfg.adaptive_gamma, cfg.max_queue, cfg.queue_full,
            cfg.execution, cfg.deterministic,
        )  # fmt: skip
        return SHARED.get(key, lambda: build(cfg))

    @staticmethod
    def close_shared() -> int:
        """Close every shared engine of this process; returns how many were closed.

        Each shared engine keeps its thread, its KV buffers, its prefix cache and its models
        until it is closed: close the engines of a finished job to give that memory back (a
        model's weights are freed when the last engine using it closes).
        """
        return SHARED.close_all()

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    # ----- submission --------------------------------------------------------------
    def submit_many(
        self,
        prompts: Seq[Prompt],
        params: SamplingParams | Seq[SamplingParams] | None = None,
        *,
        group: str | Seq[str | None] | None = None,
        on_delta: Callable[[str], None] | None = None,
    ) -> list[Future[GenerationResult]]:
        """Queue several requests together (they are admitted together when they fit).

        ``group`` is one group id for all prompts, or one (or ``None``) per prompt.

        Requests of the batch in one group with the same prompt and the same deterministic
        parameters (greedy, or one seed), say the ``n`` greedy samples of a prompt, are
        decoded once and each gets its own result (:mod:`~langchain_seed.engine.coalescing`;
        not when streaming with ``on_delta``). They count once against ``max_queue``.

        With a bounded queue (``max_queue``), a batch that does not fit waits for room
        (``queue_full="block"``) or raises (``"error"``). A batch larger than ``max_queue``
        itself can never fit at once: in ``"block"`` mode it is queued in parts as room
        frees (a group's members stay in one part when the group fits in the queue); in
        ``"error"`` mode it raises at once. If the engine closes while a blocked batch
        waits, its requests not yet queued fail with :class:`EngineClosedError`.

        Raises:
            ValueError: an empty or over-long prompt, or a params list of the wrong length.
            EngineClosedError: the engine is closed.
            QueueFullError: ``queue_full="error"`` and the queue has no room for the batch,
                or the batch is larger than ``max_queue``.
        """
        plist, groups = self._per_prompt(prompts, params, group)
        made = [self._make_sequence(p, sp, g, on_delta) for p, sp, g in zip(prompts, plist, groups)]
        futures = [s.future for s in made]
        seqs = coalesce(made)  # identical deterministic requests decode once
        limit = self.config.max_queue
        if limit is not None and len(seqs) > limit and self.config.queue_full == "error":
            raise QueueFullError(
                f"a batch of {len(seqs)} requests exceeds max_queue={limit} and can never be "
                "queued at once; submit it in parts, raise max_queue, or use queue_full='block' "
                "(which queues it in parts as room frees)"
            )
        with self._cv:
            if self._closed:
                raise EngineClosedError("engine closed")
            pending, settled = list(seqs), 0  # settled: queued, or failed while blocked
            while pending:
                part = queue_part(pending, 0, self.config.max_queue)
                try:
                    room = self._wait_for_room(part, pending)
                except EngineClosedError as exc:
                    if settled == 0:
                        raise
                    for seq in pending:
                        _resolve_error(seq, exc)
                    break
                if not room:  # request_timeout passed while blocked: those requests fail
                    now = time.monotonic()
                    late = [s for s in pending if s.deadline is not None and now > s.deadline]
                    for seq in late:
                        _resolve_error(seq, _timeout_error(seq, waiting=True))
                    pending = [s for s in pending if s not in late]
                    settled += len(late)
                    continue
                added, pending = pending[:part], pending[part:]
                self._inbox.extend(added)
                self._stats.requests_coalesced += sum(s.meta.get(COALESCED, 0) for s in added)
                settled += part
                self._cv.notify_all()
        return futures

    def _cache_token_limit(self) -> int | None:
        return self.config.max_cache_tokens

    def _make_sequence(
        self,
        prompt: Prompt,
        params: SamplingParams,
        group: str | None,
        on_delta: Callable[[str], None] | None,
    ) -> Sequence:
        ids = self.check_prompt(prompt, params)
        seq = Sequence(prompt_ids=ids, params=params, group=group, on_delta=on_delta)
        if params.request_timeout is not None:
            seq.deadline = time.monotonic() + params.request_timeout
        seq.future = Future()
        seq.stats.prompt_tokens = len(ids)
        self._prepare(seq)
        return seq

    @abc.abstractmethod
    def _prepare(self, seq: Sequence) -> None:
        """Per-request state besides the sequence, built on the caller's thread.

        Its errors (a grammar that does not compile) raise at submission.
        """

    def _wait_for_room(self, count: int, pending: Seq[Sequence] = ()) -> bool:
        """Wait (holding ``_cv``) until ``count`` more requests fit in the queue.

        Returns:
            True when they fit; False as soon as the ``request_timeout`` of one of
            ``pending`` (the requests still to queue) has passed.
        """
        limit = self.config.max_queue
        if limit is None:
            return True
        deadlines = [s.deadline for s in pending if s.deadline is not None]
        while len(self._inbox) + len(self.scheduler.waiting) + count > limit:
            if self.config.queue_full == "error":
                raise QueueFullError(
                    f"submission queue is full (max_queue={limit}); retry later or use "
                    "queue_full='block'"
                )
            left = min(deadlines) - time.monotonic() if deadlines else 0.1
            if left <= 0:
                return False
            self._cv.wait(timeout=min(0.1, left))
            if self._closed:
                raise EngineClosedError("engine closed")
        return True

    def stats(self) -> EngineStats:
        """A snapshot of the engine-wide counters (safe to keep).

        Taken on the compute thread, so between steps of every engine; from an ``on_delta``
        callback (which runs inside a step on that thread) it is taken at once, with the
        counters as far as the step has come. Never waits on a step lock: a callback that
        asks would otherwise wait for the step that is calling it.
        """

        def snapshot() -> EngineStats:
            stats = copy.deepcopy(self._stats)
            stats.target_forwards, stats.draft_forwards = self._forward_counts()
            stats.kv_pool_bytes, stats.kv_budget_bytes = self._kv_bytes()
            stats.prefix_cache = self.prefix_cache.stats()
            return stats

        stats = compute.run(snapshot)
        stats.peak_memory_bytes = peak_memory(self.config.device)
        return stats

    def reset_stats(self) -> None:
        """Start counting afresh (forward counters included).

        Runs on the compute thread like :meth:`stats` (from a callback: at once).
        """

        def reset() -> None:
            self._stats = EngineStats()
            self._reset_forward_counts()

        compute.run(reset)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the engine thread and free its memory.

        Pending requests fail with :class:`EngineClosedError`; the KV buffers and the
        prefix cache are released, the models are given back (their weights are freed
        when no other engine uses them), and a shared engine leaves the registry, so the
        next :meth:`shared` call builds a fresh one.
        """
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._unregister()
        # From a callback (on the compute thread, inside a step) or the engine thread itself,
        # joining would wait for the step that is calling: the thread ends after it.
        if threading.current_thread() is not self._thread and not compute.on_compute_thread():
            self._thread.join(timeout)

    def _unregister(self) -> None:
        SHARED.remove(self)

    # ----- the engine thread -------------------------------------------------------
    def _loop(self) -> None:
        crash: BaseException | None = None
        new: list[Sequence] = []
        try:
            while True:
                with self._cv:
                    while not self._closed and not self._inbox and not self.scheduler.has_work:
                        self._cv.wait()
                    if self._closed:
                        break
                    new, self._inbox = self._inbox, []
                    # Queued under the lock: a submitter waiting for room always finds these
                    # requests in the inbox or the queue (never room that is not there).
                    for seq in new:
                        self._attach_generator(seq)
                        self.scheduler.add(seq)
                    self._cv.notify_all()
                with self._step_lock:
                    compute.run(self._guarded_step)
        except BaseException as exc:  # the thread itself broke: nothing may be left hanging
            logger.exception("engine thread crashed; failing every pending request")
            crash = exc
            with self._cv:
                self._closed = True
                self._cv.notify_all()
            for seq in new:
                if seq not in self.scheduler.waiting:
                    _resolve_error(seq, exc)
        self._unregister()
        with self._cv:
            leftover, self._inbox = self._inbox, []
        error = crash or EngineClosedError("engine closed before the request finished")

        def fail_all() -> None:
            with torch.inference_mode():
                self._fail_all(error, include_waiting=True, also=leftover)

        with self._step_lock:
            compute.run(fail_all)
        self._release_models()

    def _release_models(self) -> None:
        """Give back the models this engine holds (after its thread's last step)."""

    def _guarded_step(self) -> None:
        """One step on the compute thread; a failure fails the batch, the engine goes on."""
        with torch.inference_mode():
            try:
                self.step()
            except Exception as exc:
                logger.exception("engine step failed")
                self._fail_all(exc, include_waiting=False)

    def _attach_generator(self, seq: Sequence) -> None:
        """Give an unseeded sampled request its own random stream (rejection rule).

        Seeded requests need none: their noise is keyed by (seed, position).
        """
        if seq.params.greedy or seq.params.seed is not None:
            return
        seq.generator = torch.Generator(device=self.runner.device)
        seq.generator.manual_seed(random.randrange(2**63))


def _timeout_error(seq: Sequence, waiting: bool = False) -> TimeoutError:
    """The error of a request whose ``request_timeout`` passed."""
    where = " while its submission waited for room in the queue" if waiting else ""
    return TimeoutError(
        f"request {seq.seq_id} exceeded request_timeout={seq.params.request_timeout}s{where}"
    )


def _resolve_error(seq: Sequence, exc: BaseException) -> None:
    seq.status = SeqStatus.FINISHED
    future = seq.future
    if future is None or future.done():
        return
    try:
        future.set_exception(exc)
    except Exception:  # cancelled concurrently
        pass


@atexit.register
def _close_all() -> None:
    # A step in flight must end before the interpreter tears torch down (an abort
    # otherwise); steps are short, so waiting for it is cheap.
    for engine in list(_ALL_ENGINES):
        engine.close(timeout=60.0)
