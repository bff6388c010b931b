"""One process-wide thread runs the torch work of every engine (and of the HF baselines).

On a CPU every thread that runs torch operators gets its own OpenMP team. With two teams
on a small machine, libgomp counts more threads than cores and throttles its spin-waits,
so every parallel region pays a futex wake-up. Measured on this project's 2-core CPU
(embedded model, fp32, one prompt x 128 greedy tokens): an engine alone 3.9 s; the same
engine after one ``generate`` on the main thread 6.7 s; two engines in one process ~40%
slower each. Engines therefore keep their own threads for queues and futures but hand each
step to :func:`run`, which executes it on the one compute thread: one OpenMP team for the
process, and steps of several engines interleave instead of contending.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")

_jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
_thread: threading.Thread | None = None
_start_lock = threading.Lock()


def on_compute_thread() -> bool:
    """True when called from the compute thread."""
    return threading.current_thread() is _thread


def run(fn: Callable[[], T]) -> T:
    """Run ``fn()`` on the compute thread and return its result (or raise its exception).

    Called from the compute thread itself, ``fn`` runs inline (no deadlock).
    """
    if on_compute_thread():
        return fn()
    _ensure_started()
    future: Future[T] = Future()
    _jobs.put((fn, future))
    return future.result()


def _ensure_started() -> None:
    global _thread
    with _start_lock:
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_loop, name="seed-compute", daemon=True)
            _thread.start()


def _loop() -> None:
    while True:
        fn, future = _jobs.get()
        if not future.set_running_or_notify_cancel():
            continue
        try:
            future.set_result(fn())
        except BaseException as exc:  # the caller re-raises it on its own thread
            future.set_exception(exc)
