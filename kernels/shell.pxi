# shell.pxi: what every kernel module's Cython shell shares: the C types of
# iq1q_common.h and the checks run on Python's buffers before any pointer is
# handed to native code. Included (textually) by _ref.pyx and its siblings.

from cpython.pycapsule cimport PyCapsule_GetPointer
from libc.stdint cimport int64_t, uint8_t, uint16_t
from libc.stdlib cimport free, malloc

cdef extern from "iq1q_common.h" nogil:
    ctypedef enum iq1q_format:
        IQ1Q_Q8_0
        IQ1Q_NUM_FORMATS
    ctypedef struct iq1q_format_info:
        const char *name
        int ggml_type, block_size, type_size, row_meta_size, rows_per_group, is_weight
    const iq1q_format_info iq1q_format_infos[]
    ctypedef void (*iq1q_weight_quantize_fn)(const float *x, uint8_t *y, int64_t nrows,
                                             int64_t n, const float *imatrix)
    ctypedef int64_t (*iq1q_act_quantize_fn)(const float *x, uint8_t *y, int64_t nrows, int64_t n)
    ctypedef void (*iq1q_dequantize_fn)(const uint8_t *x, float *y, int64_t nrows, int64_t n)
    ctypedef void (*iq1q_gemm_fn)(const uint8_t *w, const uint8_t *a, float *y, int64_t K,
                                  int64_t M, int64_t r0, int64_t r1, int64_t ldy)
    float iq1q_fp16_to_fp32(uint16_t h)
    uint16_t iq1q_fp32_to_fp16(float f)


cdef extern from "pool.h" nogil:
    ctypedef void (*iq1q_task_fn)(void *ctx, int64_t task) noexcept nogil
    ctypedef void (*iq1q_pool_run_fn)(iq1q_task_fn fn, void *ctx, int64_t ntasks,
                                      int nthreads) noexcept nogil

from iq1q import _pool

# the process-wide worker pool (kernels/pool.h), one for every kernel module
cdef iq1q_pool_run_fn pool_run = <iq1q_pool_run_fn>PyCapsule_GetPointer(_pool.RUN, b"iq1q._pool.RUN")


cdef str format_name(int fmt):
    return iq1q_format_infos[fmt].name.decode()


cdef iq1q_format_info _info(int fmt) except *:
    if fmt < 0 or fmt >= IQ1Q_NUM_FORMATS:
        raise ValueError(f"unknown format id {fmt}")
    return iq1q_format_infos[fmt]


cdef size_t _row_size(iq1q_format_info f, int64_t n):
    return f.row_meta_size + f.type_size * (n // f.block_size)


cdef int _check_row_length(int fmt, int64_t n) except -1:
    cdef iq1q_format_info f = _info(fmt)
    if n <= 0 or n % f.block_size:
        raise ValueError(f"row length {n} is not a positive multiple of {format_name(fmt)}'s "
                         f"block of {f.block_size}")
    return 0


cdef size_t _check_rows(int fmt, int64_t nrows, int64_t n, int64_t nbytes,
                        int64_t row0, int64_t row1, bint weight) except? 0:
    """Row size of fmt for rows of n values, after checking that nrows rows
    fill exactly nbytes and that [row0, row1) is a range of whole row groups."""
    cdef iq1q_format_info f = _info(fmt)
    if weight and not f.is_weight:
        raise ValueError(f"{format_name(fmt)} is not a weight format")
    _check_row_length(fmt, n)
    if nrows % f.rows_per_group:
        raise ValueError(f"{format_name(fmt)} needs a multiple of {f.rows_per_group} rows, got {nrows}")
    if not (0 <= row0 <= row1 <= nrows) or row0 % f.rows_per_group or row1 % f.rows_per_group:
        raise ValueError(f"row range [{row0}, {row1}) is not whole row groups of {nrows} rows")
    cdef size_t rs = _row_size(f, n)
    if <size_t>nbytes != <size_t>nrows * rs:
        raise ValueError(f"{format_name(fmt)} data of {nrows} x {n} must be {nrows * rs} bytes, "
                         f"got {nbytes}")
    return rs


cdef int _check_gemm(int wfmt, int afmt, int64_t wbytes, int64_t abytes, int64_t M, int64_t N,
                     int64_t K, int64_t row0, int64_t row1) except -1:
    cdef iq1q_format_info w = _info(wfmt), a = _info(afmt)
    if not w.is_weight or a.is_weight:
        raise ValueError(f"gemm takes a weight and an activation format, got "
                         f"{format_name(wfmt)} and {format_name(afmt)}")
    cdef int block = max(w.block_size, a.block_size)
    if K <= 0 or K % block:
        raise ValueError(f"K = {K} is not a positive multiple of {block}, the larger block of "
                         f"{format_name(wfmt)} x {format_name(afmt)}")
    _check_rows(wfmt, N, K, wbytes, row0, row1, True)
    _check_rows(afmt, M, K, abytes, 0, M, False)
    return 0


cdef int _check_threads(int threads) except -1:
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    return 0


cdef int64_t _ntasks(int64_t units, int threads, int64_t min_units) noexcept nogil:
    """Tasks to deal `units` of work into: a few per thread (so a busy core
    delays the call by less than its share), each of at least min_units."""
    cdef int64_t n = 1 if threads <= 1 else 4 * <int64_t>threads
    if n > units // min_units:
        n = units // min_units
    return n if n > 1 else 1


# ---- activation quantization over row ranges, on the pool ------------------

ctypedef struct _act_job:
    iq1q_act_quantize_fn fn
    const float *x
    uint8_t *y
    int64_t nrows, n, rows_per_task
    size_t rs
    int64_t *bad  # per task: first row holding NaN/Inf, or -1


cdef void _act_task(void *ctx, int64_t t) noexcept nogil:
    cdef _act_job *j = <_act_job *>ctx
    cdef int64_t r0 = t * j.rows_per_task
    cdef int64_t r1 = min(r0 + j.rows_per_task, j.nrows)
    cdef int64_t b = j.fn(j.x + r0 * j.n, j.y + r0 * j.rs, r1 - r0, j.n)
    j.bad[t] = b + r0 if b >= 0 else -1


cdef int64_t _run_act_quantizer(iq1q_act_quantize_fn fn, int fmt, const float[:, ::1] x,
                                uint8_t[::1] out, int threads) except -2:
    """Quantize all rows of x into out; the first row holding NaN/Inf, or -1."""
    cdef size_t rs = _check_rows(fmt, x.shape[0], x.shape[1], out.shape[0], 0, x.shape[0], False)
    if iq1q_format_infos[fmt].is_weight:
        raise ValueError(f"{format_name(fmt)} is not an activation format")
    _check_threads(threads)
    if x.shape[0] == 0:
        return -1
    cdef _act_job j
    j.fn, j.x, j.y, j.nrows, j.n, j.rs = fn, &x[0, 0], &out[0], x.shape[0], x.shape[1], rs
    # at least 64k values per task: below that a thread costs more than it saves
    cdef int64_t ntasks = _ntasks(j.nrows, threads, max(1, 65536 // j.n))
    j.rows_per_task = (j.nrows + ntasks - 1) // ntasks
    ntasks = (j.nrows + j.rows_per_task - 1) // j.rows_per_task
    cdef int64_t bad_one
    j.bad = &bad_one if ntasks == 1 else <int64_t *>malloc(ntasks * sizeof(int64_t))
    if j.bad == NULL:
        raise MemoryError()
    cdef int64_t t, first = -1
    with nogil:
        pool_run(_act_task, &j, ntasks, threads)
        for t in range(ntasks):
            if j.bad[t] >= 0 and first < 0:
                first = j.bad[t]
        if ntasks > 1:
            free(j.bad)
    return first
