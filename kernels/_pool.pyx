# cython: language_level=3
"""The process-wide native worker pool (kernels/pool.h).

Kernel modules take the address of iq1q_pool_run from RUN, a capsule, so the
process has one pool however many kernel modules are loaded.
"""

from cpython.pycapsule cimport PyCapsule_New
from libc.stdint cimport int64_t

cdef extern from *:
    """
    #define IQ1Q_POOL_IMPLEMENTATION
    #include "pool.h"
    """
    ctypedef void (*iq1q_task_fn)(void *ctx, int64_t task) noexcept nogil
    void iq1q_pool_run(iq1q_task_fn fn, void *ctx, int64_t ntasks, int nthreads) noexcept nogil
    int iq1q_pool_init()

if iq1q_pool_init() != 0:
    raise OSError("iq1q: could not install the worker pool's fork handlers")

RUN = PyCapsule_New(<void *>iq1q_pool_run, b"iq1q._pool.RUN", NULL)
