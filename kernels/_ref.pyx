# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""The portable reference kernels (kernels/ref.h) behind a thin shell.

Every entry point checks the buffers Python hands it (sizes, row ranges)
before a pointer is used, then releases the GIL for the native work.
"""

include "shell.pxi"

from libc.stdint cimport int8_t, int32_t, uint64_t
from libc.string cimport memcpy

cdef extern from "ref.h" nogil:
    int iq1q_ref_quantize_init()
    const iq1q_weight_quantize_fn iq1q_ref_weight_quantizers[]
    const iq1q_act_quantize_fn iq1q_ref_act_quantizers[]
    const iq1q_dequantize_fn iq1q_ref_dequantizers[]
    const iq1q_gemm_fn iq1q_ref_gemm_table[4][4]

    ctypedef struct iq1q_fp16_site:
        int64_t row, block
        float value
    ctypedef struct iq1q_fp16_report:
        int64_t overflow_blocks, underflow_blocks
        iq1q_fp16_site first, first_overflow
        int64_t nonfinite_row
    void iq1q_ref_fp16_hazards(const float *x, int64_t nrows, int64_t n, int with_sum,
                               iq1q_fp16_report *rep)

    ctypedef struct iq1q_gptq_problem:
        int fmt
        int64_t K
        const float *H
        const float *U
        const int32_t *perm
        const float *T
        const float *A
        const float *QA
        const float *QH
        const float *imp
        int passes, sweeps, ncand
    int iq1q_gptq_init()
    const float iq1q_gq_G[2048][8]
    int iq1q_gptq_rows(const iq1q_gptq_problem *P, const float *x, uint8_t *y, int64_t r0, int64_t r1,
                       double *cost)

if iq1q_ref_quantize_init() != 0:
    raise MemoryError("iq1q: could not build the IQ1 grid neighbour lists")
cdef bint _gptq_ready = False  # ref_gptq.h's tables, built on first use


def grid_values(int8_t[:, ::1] out):
    """The IQ1 grid (docs/spec.md §3) into out (2048 x 8): values in {-1, 0, 1}."""
    if out.shape[0] != 2048 or out.shape[1] != 8:
        raise ValueError("out must be 2048 x 8")
    global _gptq_ready
    if not _gptq_ready:
        if iq1q_gptq_init() != 0:
            raise MemoryError("iq1q: could not build the grid's neighbourhood lists")
        _gptq_ready = True
    cdef int k, j
    for k in range(2048):
        for j in range(8):
            out[k, j] = <int8_t>iq1q_gq_G[k][j]


def format_table():
    """The format table of iq1q_common.h: one tuple per format, in enum order:
    (name, ggml type, block size, type size, row meta size, rows per group, is weight)."""
    cdef int i
    cdef iq1q_format_info f
    rows = []
    for i in range(IQ1Q_NUM_FORMATS):
        f = iq1q_format_infos[i]
        rows.append((format_name(i), f.ggml_type, f.block_size, f.type_size, f.row_meta_size,
                     f.rows_per_group, bool(f.is_weight)))
    return rows


def fp32_to_fp16(const float[::1] x, uint16_t[::1] out):
    """The fp16 rounding every kernel uses (for tests against numpy)."""
    if out.shape[0] != x.shape[0]:
        raise ValueError("output length differs from input length")
    cdef Py_ssize_t i
    with nogil:
        for i in range(x.shape[0]):
            out[i] = iq1q_fp32_to_fp16(x[i])


def fp16_to_fp32(const uint16_t[::1] h, float[::1] out):
    """The fp16 widening every kernel uses (for tests against numpy)."""
    if out.shape[0] != h.shape[0]:
        raise ValueError("output length differs from input length")
    cdef Py_ssize_t i
    with nogil:
        for i in range(h.shape[0]):
            out[i] = iq1q_fp16_to_fp32(h[i])


def gguf_string_spans(const uint8_t[::1] buf, int64_t offset, int64_t count, int64_t[::1] starts,
                      int64_t[::1] lengths):
    """Where the count strings of a GGUF metadata array lie (each a uint64 length in the
    host's order, then its bytes) from offset in buf: starts and lengths filled, the offset
    past the last returned. ValueError names a string that ends past the buffer. (A Python
    loop over Gemma 3's 262k-token vocabulary took 0.07 s of every run's start.)"""
    if starts.shape[0] < count or lengths.shape[0] < count:
        raise ValueError(f"room for {min(starts.shape[0], lengths.shape[0])} spans, {count} strings")
    cdef int64_t i, n = buf.shape[0], at = offset
    cdef uint64_t length
    if at < 0 or at > n:
        raise ValueError(f"strings at offset {at} start past the end of the file")
    for i in range(count):
        if n - at < 8:
            raise ValueError(f"string at offset {at} ends past the end of the file")
        memcpy(&length, &buf[at], 8)
        at += 8
        if length > <uint64_t>(n - at):
            raise ValueError(f"string of {length} bytes at offset {at - 8} ends past the end of the file")
        starts[i], lengths[i] = at, <int64_t>length
        at += <int64_t>length
    return at


ctypedef struct _rows_job:
    iq1q_weight_quantize_fn quantize  # one of the two is set
    iq1q_dequantize_fn dequantize
    const float *x  # quantize: x -> q; dequantize: q -> y
    const float *imatrix
    const uint8_t *q
    uint8_t *qout
    float *y
    int64_t nrows, n, rows_per_task
    size_t rs


cdef void _rows_task(void *ctx, int64_t t) noexcept nogil:
    cdef _rows_job *j = <_rows_job *>ctx
    cdef int64_t r0 = t * j.rows_per_task
    cdef int64_t r1 = min(r0 + j.rows_per_task, j.nrows)
    if j.quantize != NULL:
        j.quantize(j.x + r0 * j.n, j.qout + r0 * j.rs, r1 - r0, j.n, j.imatrix)
    else:
        j.dequantize(j.q + r0 * j.rs, j.y + r0 * j.n, r1 - r0, j.n)


cdef void _run_rows(_rows_job *j, int fmt, int threads, int64_t min_values) noexcept nogil:
    """Run a rows job on the pool in tasks of whole row groups, each of at least
    min_values values; every row group is the same work whatever the split."""
    cdef int64_t group = iq1q_format_infos[fmt].rows_per_group
    cdef int64_t groups = j.nrows // group
    cdef int64_t ntasks = _ntasks(groups, threads, max(1, min_values // (group * j.n)))
    j.rows_per_task = group * ((groups + ntasks - 1) // ntasks)
    pool_run(_rows_task, j, (j.nrows + j.rows_per_task - 1) // j.rows_per_task, threads)


def quantize_weights(int fmt, const float[:, ::1] x, uint8_t[::1] out, imatrix, int threads):
    """Quantize the rows of x into out (ggml bytes) on up to `threads` threads."""
    cdef const float[::1] im
    cdef size_t rs = _check_rows(fmt, x.shape[0], x.shape[1], out.shape[0], 0, x.shape[0], True)
    _check_threads(threads)
    cdef _rows_job j
    j.imatrix = NULL
    if imatrix is not None:
        im = imatrix
        if im.shape[0] != x.shape[1]:
            raise ValueError(f"imatrix has {im.shape[0]} entries, rows have {x.shape[1]}")
        j.imatrix = &im[0]
    if x.shape[0] == 0:
        return
    j.quantize, j.dequantize = iq1q_ref_weight_quantizers[fmt], NULL
    j.x, j.qout, j.nrows, j.n, j.rs = &x[0, 0], &out[0], x.shape[0], x.shape[1], rs
    with nogil:  # ~60-150 ns a weight: tasks of 64k weights are milliseconds
        _run_rows(&j, fmt, threads, 65536)


def dequantize(int fmt, const uint8_t[::1] data, float[:, ::1] out, int threads):
    """Dequantize a weight or activation tensor (all rows of out) on up to `threads` threads."""
    cdef size_t rs = _check_rows(fmt, out.shape[0], out.shape[1], data.shape[0], 0, out.shape[0], False)
    _check_threads(threads)
    if out.shape[0] == 0:
        return
    cdef _rows_job j
    j.quantize, j.dequantize = NULL, iq1q_ref_dequantizers[fmt]
    j.q, j.y, j.nrows, j.n, j.rs = &data[0], &out[0, 0], out.shape[0], out.shape[1], rs
    with nogil:  # ~1 ns a value: below a quarter million a second thread does not pay
        _run_rows(&j, fmt, threads, 262144)


def quantize_activations(int fmt, const float[:, ::1] x, uint8_t[::1] out, int threads):
    """Quantize the activation rows of x into out; returns the first row with NaN/Inf or -1."""
    _info(fmt)
    if fmt < IQ1Q_Q8_0:
        raise ValueError(f"{format_name(fmt)} is not an activation format")
    return _run_act_quantizer(iq1q_ref_act_quantizers[fmt - IQ1Q_Q8_0], fmt, x, out, threads)


ctypedef struct _gemm_job:
    iq1q_gemm_fn fn
    const uint8_t *w
    const uint8_t *a
    float *y
    int64_t K, M, N, rows_per_task


cdef void _gemm_task(void *ctx, int64_t t) noexcept nogil:
    cdef _gemm_job *j = <_gemm_job *>ctx
    cdef int64_t r0 = t * j.rows_per_task
    j.fn(j.w, j.a, j.y, j.K, j.M, r0, min(r0 + j.rows_per_task, j.N), j.N)


def gemm(int wfmt, int afmt, const uint8_t[::1] w, const uint8_t[::1] a, float[:, ::1] y,
         int64_t K, int threads):
    """y = X @ W.T for whole tensors (y is M x N), on up to `threads` threads."""
    _check_gemm(wfmt, afmt, w.shape[0], a.shape[0], y.shape[0], y.shape[1], K, 0, y.shape[1])
    _check_threads(threads)
    if y.shape[1] == 0 or y.shape[0] == 0:
        return
    cdef _gemm_job j
    j.fn, j.w, j.a, j.y = iq1q_ref_gemm_table[wfmt][afmt - IQ1Q_Q8_0], &w[0], &a[0], &y[0, 0]
    j.K, j.M, j.N = K, y.shape[0], y.shape[1]
    cdef int64_t group = iq1q_format_infos[wfmt].rows_per_group
    # tasks of whole row groups, at least 64 rows each
    cdef int64_t ntasks = _ntasks(j.N // group, threads, 64 // group)
    j.rows_per_task = group * ((j.N // group + ntasks - 1) // ntasks)
    with nogil:
        pool_run(_gemm_task, &j, (j.N + j.rows_per_task - 1) // j.rows_per_task, threads)


cdef _site(iq1q_fp16_site site):
    return (site.row, site.block, site.value) if site.row >= 0 else None


def fp16_hazards(const float[:, ::1] x, bint with_sum):
    """(overflow blocks, underflow blocks, first offending (row, block, value) or None,
    first overflowing one or None, first row holding NaN/Inf or -1) of what q8_0
    (with_sum false) or q8_1 would store for x."""
    cdef iq1q_fp16_report rep
    _check_row_length(IQ1Q_Q8_0, x.shape[1])
    with nogil:
        iq1q_ref_fp16_hazards(&x[0, 0] if x.shape[0] else NULL, x.shape[0], x.shape[1],
                              with_sum, &rep)
    return (rep.overflow_blocks, rep.underflow_blocks, _site(rep.first), _site(rep.first_overflow),
            rep.nonfinite_row)


ctypedef struct _gptq_job:
    iq1q_gptq_problem P
    const float *x
    uint8_t *y
    double *cost
    int64_t nrows, rows_per_task
    int failed


cdef void _gptq_task(void *ctx, int64_t t) noexcept nogil:
    cdef _gptq_job *j = <_gptq_job *>ctx
    cdef int64_t r0 = t * j.rows_per_task
    if iq1q_gptq_rows(&j.P, j.x, j.y, r0, min(r0 + j.rows_per_task, j.nrows), j.cost) != 0:
        j.failed = 1


def quantize_gptq(int fmt, const float[:, ::1] x, uint8_t[::1] out, const float[:, ::1] H,
                  const float[:, ::1] U, const int32_t[::1] perm, const float[:, :, ::1] T,
                  const float[:, :, ::1] A, const float[:, :, ::1] QA, const float[:, :, ::1] QH,
                  const float[::1] imp, double[:, ::1] cost, int passes, int sweeps, int ncand,
                  int threads):
    """Rewrite out (the plain quantizer's bytes of x) to lower (x - q)' H (x - q) row by row
    (kernels/ref_gptq.h; the arrays derived from H are iq1q/hessian.py's). cost[row] gets
    (objective of out as given, objective of out as written)."""
    cdef int64_t n = x.shape[1], nrows = x.shape[0], g = n // 8
    _check_rows(fmt, nrows, n, out.shape[0], 0, nrows, True)
    _check_threads(threads)
    if n % 32:
        raise ValueError(f"row length {n} is not a multiple of 32")
    if H.shape[0] != n or H.shape[1] != n or U.shape[0] != n or U.shape[1] != n or perm.shape[0] != n:
        raise ValueError(f"H, U and perm must be {n} x {n}, {n} x {n} and {n} long")
    if T.shape[0] != g or A.shape[0] != g or T.shape[1] != 8 or T.shape[2] != 8 or A.shape[1] != 8 \
            or A.shape[2] != 8:
        raise ValueError(f"T and A must be {g} x 8 x 8")
    if QA.shape[0] != g or QH.shape[0] != g or QA.shape[1] != 2 or QH.shape[1] != 2 \
            or QA.shape[2] != 2048 or QH.shape[2] != 2048:
        raise ValueError(f"QA and QH must be {g} x 2 x 2048")
    if imp.shape[0] != n or cost.shape[0] != nrows or cost.shape[1] != 2:
        raise ValueError(f"imp must be {n} long and cost {nrows} x 2")
    if passes < 0 or sweeps < 0:
        raise ValueError("passes and sweeps must be non-negative")
    cdef int64_t i, c
    for i in range(n):  # a permutation of whole 8-column groups, as the C code indexes
        if perm[i] < 0 or perm[i] >= n or (i % 8 and perm[i] != perm[i - 1] + 1):
            raise ValueError("perm is not a permutation of whole groups of columns")
    global _gptq_ready
    if not _gptq_ready:  # its tables on first use, not at import (the GIL orders callers)
        if iq1q_gptq_init() != 0:
            raise MemoryError("iq1q: could not build the grid's neighbourhood lists")
        _gptq_ready = True
    if nrows == 0:
        return
    cdef _gptq_job j
    j.P.fmt, j.P.K, j.P.H, j.P.U, j.P.perm = fmt, n, &H[0, 0], &U[0, 0], &perm[0]
    j.P.T, j.P.A, j.P.QA, j.P.QH, j.P.imp = &T[0, 0, 0], &A[0, 0, 0], &QA[0, 0, 0], &QH[0, 0, 0], &imp[0]
    j.P.passes, j.P.sweeps, j.P.ncand = passes, sweeps, ncand
    j.x, j.y, j.cost, j.nrows, j.failed = &x[0, 0], &out[0], &cost[0, 0], nrows, 0
    cdef int64_t group = iq1q_format_infos[fmt].rows_per_group
    # a few tasks per thread, whole row groups: the rows cost about the same
    cdef int64_t ntasks = _ntasks(nrows // group, threads, 1)
    j.rows_per_task = group * ((nrows // group + ntasks - 1) // ntasks)
    with nogil:
        pool_run(_gptq_task, &j, (nrows + j.rows_per_task - 1) // j.rows_per_task, threads)
    if j.failed:
        raise MemoryError("iq1q: out of memory in the Hessian-aware quantizer")
