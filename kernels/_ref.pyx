# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""The portable reference kernels (kernels/ref.h) behind a thin shell.

Every entry point checks the buffers Python hands it (sizes, row ranges)
before a pointer is used, then releases the GIL for the native work.
"""

include "shell.pxi"

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

if iq1q_ref_quantize_init() != 0:
    raise MemoryError("iq1q: could not build the IQ1 grid neighbour lists")


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
