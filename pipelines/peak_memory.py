"""The peak resident memory of a stage (``timings.peak_rss_mb`` of its record, issue 28)."""

from __future__ import annotations

__all__ = ["PeakRss"]


class PeakRss:
    """The peak resident memory (MB) of this process while a stage runs, sampled every
    ``every`` seconds by a thread (``psutil``): the worker's whole RSS, so it includes what
    the process held before the stage (imports, caches); a spike shorter than ``every`` can
    be missed. Recorded as the stage record's ``timings.peak_rss_mb``."""

    def __init__(self, every: float = 0.05) -> None:
        import threading

        import psutil

        self._proc, self._every, self.peak = psutil.Process(), every, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while True:
            self.peak = max(self.peak, self._proc.memory_info().rss)
            if self._stop.wait(self._every):
                return

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mb(self) -> float:
        return round(self.peak / 2**20, 1)
