"""Timing helpers shared by the benchmark scripts."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_time(fn: Callable[[], object], min_seconds: float = 0.3, min_runs: int = 3) -> float:
    """Best wall time of fn over at least min_runs calls and min_seconds in total."""
    fn()  # warm up: pools, caches, lazy imports
    best, total, runs = float("inf"), 0.0, 0
    while runs < min_runs or total < min_seconds:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best, total, runs = min(best, dt), total + dt, runs + 1
    return best
