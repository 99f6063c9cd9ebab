"""How many threads native work may use: the argument, $IQ1Q_NUM_THREADS or all CPUs.

The threads themselves are native: one process-wide pool (kernels/pool.h) runs the
kernels, the activation and weight quantizers and the dequantizers. Each output row is
computed by one task with the same code, so results do not depend on the thread count.
"""

from __future__ import annotations

import os

ENV_THREADS = "IQ1Q_NUM_THREADS"


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
