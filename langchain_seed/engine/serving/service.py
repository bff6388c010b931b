"""The embedded engine as a service: its queue, its engine thread, submitters waiting for room.

:class:`EngineService` is what an :class:`~langchain_seed.engine.Engine` holds to be
reached from any thread: sequences are queued here (:meth:`EngineService.enqueue`), the
engine thread moves them into the scheduler and runs the engine's steps, each on the
process-wide compute thread (:mod:`~langchain_seed.engine.serving.compute`: one OpenMP team
for all engines). What the service drives is a :class:`Decoder`: the engine's decoding
half (:meth:`Engine.step <langchain_seed.engine.Engine.step>`).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Sequence as Seq
from typing import Protocol

import torch

from langchain_seed.engine.config import EngineConfig
from langchain_seed.engine.results import EngineClosedError, QueueFullError, settle
from langchain_seed.engine.scheduler import Scheduler, queue_part
from langchain_seed.engine.sequence import SeqStatus, SequenceState
from langchain_seed.engine.serving import compute

logger = logging.getLogger(__name__)


class Decoder(Protocol):
    """The decoding half a service drives (the embedded engine)."""

    def step(self) -> None:
        """One engine step (admit, draft, verify, accept, finish)."""

    def fail_all(
        self, exc: BaseException, include_waiting: bool, also: Seq[SequenceState] = ()
    ) -> None:
        """Fail every running (and, if asked, waiting) request with ``exc``; free all state."""

    def stopped(self) -> None:
        """The engine thread ended (closed or crashed): give back what the engine holds."""


class EngineService:
    """The queue and the engine thread of one engine (see the module docstring).

    Args:
        config: the engine's configuration (``max_queue``, ``queue_full``).
        scheduler: the engine's scheduler; the engine thread adds queued sequences to it.
        decoder: the engine whose steps the thread runs.
        device: where unseeded sampled requests get their random generator.
    """

    def __init__(
        self,
        config: EngineConfig,
        scheduler: Scheduler,
        decoder: Decoder,
        device: torch.device,
    ) -> None:
        self.config = config
        self.scheduler = scheduler
        self.decoder = decoder
        self.device = device
        self._cv = threading.Condition()
        self.inbox: list[SequenceState] = []
        """Queued sequences the engine thread has not moved into the scheduler yet."""
        self._closed = False
        self.step_lock = threading.Lock()
        """Held while a step mutates the engine's state and stats."""
        self._thread = threading.Thread(target=self._loop, name="seed-engine", daemon=True)
        self._thread.start()

    @property
    def closed(self) -> bool:
        """True once closing began (or the engine thread crashed)."""
        return self._closed

    def enqueue(self, seqs: list[SequenceState]) -> list[SequenceState]:
        """Queue ``seqs`` (one submission), waiting for room in a bounded queue.

        With ``max_queue``, a submission that does not fit waits for room
        (``queue_full="block"``) or raises (``"error"``); one larger than ``max_queue`` is
        queued in parts as room frees (a group's members stay in one part when the group
        fits in the queue). A request whose ``request_timeout`` passes while it waits
        fails with ``TimeoutError``; if the engine closes while a part waits, the requests
        not yet queued fail with :class:`EngineClosedError`.

        Returns:
            The sequences queued (the others failed while the submission waited).

        Raises:
            EngineClosedError: the engine is closed (nothing was queued).
            QueueFullError: ``queue_full="error"`` and the queue has no room, or the
                submission is larger than ``max_queue``.
        """
        limit = self.config.max_queue
        if limit is not None and len(seqs) > limit and self.config.queue_full == "error":
            raise QueueFullError(
                f"a batch of {len(seqs)} requests exceeds max_queue={limit} and can never be "
                "queued at once; submit it in parts, raise max_queue, or use queue_full='block' "
                "(which queues it in parts as room frees)"
            )
        queued: list[SequenceState] = []
        with self._cv:
            if self._closed:
                raise EngineClosedError("engine closed")
            pending = list(seqs)
            while pending:
                part = queue_part(pending, 0, self.config.max_queue)
                try:
                    room = self._wait_for_room(part, pending)
                except EngineClosedError as exc:
                    if not queued and len(pending) == len(seqs):
                        raise
                    for seq in pending:
                        _fail_sequence(seq, exc)
                    break
                if not room:  # request_timeout passed while blocked: those requests fail
                    now = time.monotonic()
                    late = [s for s in pending if s.deadline is not None and now > s.deadline]
                    for seq in late:
                        _fail_sequence(seq, seq.timeout_error(waiting=True))
                    pending = [s for s in pending if s not in late]
                    continue
                added, pending = pending[:part], pending[part:]
                self.inbox.extend(added)
                queued.extend(added)
                self._cv.notify_all()
        return queued

    def _wait_for_room(self, count: int, pending: Seq[SequenceState] = ()) -> bool:
        """Wait (holding ``_cv``) until ``count`` more requests fit in the queue.

        Returns:
            True when they fit; False as soon as the ``request_timeout`` of one of
            ``pending`` (the requests still to queue) has passed.
        """
        limit = self.config.max_queue
        if limit is None:
            return True
        deadlines = [s.deadline for s in pending if s.deadline is not None]
        while len(self.inbox) + len(self.scheduler.waiting) + count > limit:
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

    def close(self, timeout: float = 10.0) -> None:
        """Stop the engine thread; it fails what is pending and stops the decoder."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        # From a callback (on the compute thread, inside a step) or the engine thread itself,
        # joining would wait for the step that is calling: the thread ends after it.
        if threading.current_thread() is not self._thread and not compute.on_compute_thread():
            self._thread.join(timeout)

    # ----- the engine thread -------------------------------------------------------
    def _loop(self) -> None:
        crash: BaseException | None = None
        new: list[SequenceState] = []
        try:
            while True:
                with self._cv:
                    while not self._closed and not self.inbox and not self.scheduler.has_work:
                        self._cv.wait()
                    if self._closed:
                        break
                    new, self.inbox = self.inbox, []
                    # Queued under the lock: a submitter waiting for room always finds these
                    # requests in the inbox or the queue (never room that is not there).
                    for seq in new:
                        self._attach_generator(seq)
                        self.scheduler.add(seq)
                    self._cv.notify_all()
                with self.step_lock:
                    compute.run(self._guarded_step)
        except BaseException as exc:  # the thread itself broke: nothing may be left hanging
            logger.exception("engine thread crashed; failing every pending request")
            crash = exc
            with self._cv:
                self._closed = True
                self._cv.notify_all()
            for seq in new:
                if seq not in self.scheduler.waiting:
                    _fail_sequence(seq, exc)
        with self._cv:
            leftover, self.inbox = self.inbox, []
        error = crash or EngineClosedError("engine closed before the request finished")

        def fail_all() -> None:
            with torch.inference_mode():
                self.decoder.fail_all(error, include_waiting=True, also=leftover)

        with self.step_lock:
            compute.run(fail_all)
        self.decoder.stopped()

    def _guarded_step(self) -> None:
        """One step on the compute thread; a failure fails the batch, the engine goes on."""
        with torch.inference_mode():
            try:
                self.decoder.step()
            except Exception as exc:
                logger.exception("engine step failed")
                self.decoder.fail_all(exc, include_waiting=False)

    def _attach_generator(self, seq: SequenceState) -> None:
        """Give an unseeded sampled request its own random stream (rejection rule).

        Seeded requests need none: their noise is keyed by (seed, position).
        """
        if seq.params.greedy or seq.params.seed is not None:
            return
        seq.generator = torch.Generator(device=self.device)
        seq.generator.manual_seed(random.randrange(2**63))


def _fail_sequence(seq: SequenceState, exc: BaseException) -> None:
    """Fail a sequence that never reached the scheduler (its caller hears ``exc``)."""
    seq.status = SeqStatus.FINISHED
    settle(seq.future, exc)
