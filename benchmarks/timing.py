"""Timing helpers shared by the benchmark scripts."""

from __future__ import annotations

import gc
import itertools
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


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


@dataclass(frozen=True)
class Timing:
    """Wall times of one timed configuration, in seconds."""

    median: float
    min: float
    max: float
    reps: int
    others_cpu: float | None = None  # CPUs' worth of other processes' work during the window


def _busy_seconds() -> float | None:
    """CPU seconds all CPUs have spent not idle since boot (/proc/stat), None if unknown."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def others_cpu(busy0: float | None, own0: float, wall0: float) -> float | None:
    """CPUs' worth of work by other processes (and the host's steal) since the marks
    busy0 = _busy_seconds(), own0 = time.process_time(), wall0 = time.perf_counter()."""
    busy1, own1, wall1 = _busy_seconds(), time.process_time(), time.perf_counter()
    if busy0 is None or busy1 is None or wall1 <= wall0:
        return None
    return max(0.0, (busy1 - busy0) - (own1 - own0)) / (wall1 - wall0)


def median_time(fn: Callable[[], object], min_reps: int = 20, min_seconds: float = 0.25,
                max_seconds: float = 10.0, warmup: int = 2) -> Timing:
    """Median wall time of fn, timed the way ikbench times ik_llama.cpp.

    After `warmup` untimed calls, fn runs until it has been timed at least min_reps times
    and the timed calls add up to at least min_seconds; a slow fn stops once the timed
    calls pass max_seconds (with at least 3 reps). The garbage collector is off meanwhile.
    Timing.others_cpu tells how busy the rest of the machine was (1/100 s resolution).
    """
    for _ in range(warmup):
        fn()
    times: list[float] = []
    total = 0.0
    enabled = gc.isenabled()
    gc.disable()
    marks = _busy_seconds(), time.process_time(), time.perf_counter()
    try:
        while (len(times) < min_reps or total < min_seconds) and not (
                total >= max_seconds and len(times) >= 3):
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            times.append(dt)
            total += dt
    finally:
        if enabled:
            gc.enable()
    return Timing(statistics.median(times), min(times), max(times), len(times), others_cpu(*marks))


def rotating(items: Sequence[T], fn: Callable[[T], object]) -> Callable[[], object]:
    """A zero-argument callable that calls fn on the next item of items on every call
    (round robin): with enough copies of the data, each call reads it from DRAM."""
    it = itertools.cycle(items)
    return lambda: fn(next(it))


# Forks and waits for the command and prints its rusage's peak: a child's ru_maxrss starts
# at its parent's resident size at fork, so the command must not be forked from the
# benchmark's process (which may hold large arrays) but from a bare interpreter.
_LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(usage.ru_maxrss, file=sys.stderr)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_measured(cmd: list[str], env: dict | None = None, cwd: str | os.PathLike | None = None
                 ) -> tuple[float, float, str, str]:
    """(wall seconds, peak RSS in MiB, stdout, stderr) of one command, a process of its own;
    SystemExit with its output when it fails."""
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-S", "-c", _LAUNCHER, *cmd], capture_output=True, text=True, env=env,
                       cwd=cwd)
    wall = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    err, _, peak_kib = r.stderr.rstrip("\n").rpartition("\n")
    return wall, int(peak_kib) / 1024, r.stdout, err
