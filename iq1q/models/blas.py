"""numpy's BLAS held to the run's thread count, so that --threads holds for the float
products of a model (attention, the output head) as it does for the IQ1 kernels."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ..threads import num_threads


@contextmanager
def blas_threads(threads: int | None) -> Iterator[None]:
    """BLAS limited to `threads` (default: iq1q's thread count) inside the block. Without the
    threadpoolctl package (the gguf extra brings it) BLAS keeps its own count."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=num_threads(threads), user_api="blas"):
        yield
