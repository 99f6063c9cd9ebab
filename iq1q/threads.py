"""Running native work over row ranges in several threads.

The native entry points release the GIL, so plain threads run them in
parallel. Each output row is computed by exactly one thread with the same
code, so results do not depend on the thread count.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

ENV_THREADS = "IQ1Q_NUM_THREADS"

_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_lock = threading.Lock()


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))  # honours taskset and cgroup CPU sets
    except AttributeError:  # not on every platform
        return os.cpu_count() or 1


# looked up once: os.cpu_count() alone costs more than a small GEMV's Python side
CPUS = _usable_cpus()


def num_threads(threads: int | None = None) -> int:
    """The thread count to use: the argument, else $IQ1Q_NUM_THREADS, else all CPUs."""
    if type(threads) is int and threads >= 1:
        return threads
    source = "threads"
    if threads is None:
        env = os.environ.get(ENV_THREADS, "").strip()
        if not env:
            return CPUS
        source = ENV_THREADS
        try:
            threads = int(env)
        except ValueError:
            raise ValueError(f"{ENV_THREADS}={env!r} is not a whole number") from None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"{source} must be a positive whole number, got {threads!r}")
    return threads


def _executor(workers: int) -> ThreadPoolExecutor:
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size < workers:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool, _pool_size = ThreadPoolExecutor(workers, thread_name_prefix="iq1q"), workers
        return _pool


def split(nrows: int, group: int, parts: int) -> list[tuple[int, int]]:
    """At most `parts` contiguous ranges of whole row groups covering [0, nrows)."""
    groups = nrows // group
    parts = max(1, min(parts, groups))
    bounds = [group * (groups * i // parts) for i in range(parts + 1)]
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a] or [(0, nrows)]


def run_rows(fn: Callable[[int, int], object], nrows: int, group: int, threads: int | None = None,
             min_rows: int = 1) -> list[object]:
    """Call fn(row0, row1) over ranges of [0, nrows) split into whole row groups,
    with at least min_rows rows per range; returns the calls' results in row order."""
    parts = min(num_threads(threads), max(1, nrows // max(min_rows, group)))
    ranges = split(nrows, group, parts)
    if len(ranges) == 1:
        return [fn(*ranges[0])]
    pool = _executor(len(ranges) - 1)
    futures = [pool.submit(fn, a, b) for a, b in ranges[1:]]
    first = fn(*ranges[0])  # the calling thread takes a share too
    return [first] + [f.result() for f in futures]
