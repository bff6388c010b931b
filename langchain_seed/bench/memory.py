"""Peak resident memory of this process during one trial, sampled in a background thread."""

from __future__ import annotations

import os
import threading


class PeakRSS:
    """Context manager sampling this process's resident set size in a background thread.

    ``ru_maxrss`` is a process-lifetime maximum and cannot be attributed to one of several
    interleaved methods, so the peak is sampled (every ``interval`` seconds) instead.
    """

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakRSS:
        self.peak = current_rss()
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, name="bench-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, current_rss())

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, current_rss())


def current_rss() -> int:
    """Resident set size of this process in bytes (0 where it cannot be read)."""
    try:
        import psutil

        return int(psutil.Process(os.getpid()).memory_info().rss)
    except Exception:  # psutil missing or not permitted: fall back to the lifetime peak
        try:
            import resource

            return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
        except Exception:
            return 0
