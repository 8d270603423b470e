"""A stage's peak resident memory (``timings.peak_rss_mb`` of its record): an allocation made
and freed inside the measured block shows in the peak."""

from __future__ import annotations

import time

import numpy as np
import psutil

from pipelines.peak_memory import PeakRss


def test_peak_rss_sees_a_freed_allocation():
    base = psutil.Process().memory_info().rss / 2**20
    with PeakRss(every=0.01) as rss:
        a = np.ones(200 * 2**20 // 8)  # 200 MB, touched
        time.sleep(0.2)  # a few samples while it is held
        del a
    assert rss.mb >= base + 150  # the freed 200 MB still count
    assert psutil.Process().memory_info().rss / 2**20 < rss.mb  # and are gone now
