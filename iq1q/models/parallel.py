"""How a forward pass uses its threads.

The IQ1 products run on iq1q's native pool. The float work around them (attention, the
output head over a large vocabulary, float weights) is split by the runner into pieces
that numpy computes on Python threads, the GIL released, with BLAS held to one thread per
caller. Letting OpenBLAS thread the float products instead costs more than it gives: its
workers spin for milliseconds after every call and take the cores the native pool needs
next (Gemma 3 270M, 2 threads: the IQ1 products of a chunk took 0.46 s beside spinning
BLAS workers and 0.26 s without them).

    with one_blas_thread():            # a forward pass: no BLAS worker ever spins
        parts = pmap(fn, items, threads)   # fn(item) for every item, in order, on threads
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from threading import Lock, local
from typing import Any, TypeVar

from ..threads import num_threads

T = TypeVar("T")
R = TypeVar("R")

_controller: Any = None      # threadpoolctl's controller, found once (a fresh lookup costs ~0.3 ms)
_executors: dict[int, ThreadPoolExecutor] = {}
_lock = Lock()
_inside = local()  # set in a pmap worker: a nested pmap runs serially (no deadlock)


def _forget_executors() -> None:
    """In a forked child: the executors' threads are not there, so they would wait forever."""
    global _lock
    _executors.clear()
    _lock = Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_executors)


def _blas_limit(threads: int):
    """A context holding BLAS to `threads` (no-op without the threadpoolctl package)."""
    global _controller
    if _controller is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # the gguf extra brings it; without it BLAS keeps its own count
            _controller = False
        else:
            _controller = ThreadpoolController()
    return _controller.limit(limits=threads, user_api="blas") if _controller else nullcontext()


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """BLAS held to one thread inside the block (Model.hidden and Model.logit_map hold it):
    the float products there are small or split by pmap, and a BLAS call of many threads
    anywhere in a pass (a MoE router's) leaves workers spinning beside the native pool."""
    with _blas_limit(1):
        yield


def _executor(threads: int) -> ThreadPoolExecutor:
    with _lock:
        ex = _executors.get(threads)
        if ex is None:
            ex = _executors[threads] = ThreadPoolExecutor(threads, thread_name_prefix="iq1q-float")
        return ex


def _run(fn: Callable[[T], R]) -> Callable[[T], R]:
    def marked(item: T) -> R:
        _inside.active = True
        return fn(item)
    return marked


def pmap(fn: Callable[[T], R], items: Sequence[T], threads: int | None) -> list[R]:
    """[fn(item) for item in items] on `threads` threads (default: iq1q's thread count),
    numpy's BLAS one thread in each. fn must only read shared arrays or write disjoint parts."""
    n = num_threads(threads)
    if getattr(_inside, "active", False):  # already on a pmap worker
        return [fn(item) for item in items]
    with one_blas_thread():
        if n <= 1 or len(items) <= 1:
            return [fn(item) for item in items]
        return list(_executor(n).map(_run(fn), items))

