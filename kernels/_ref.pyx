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


def quantize_weights(int fmt, const float[:, ::1] x, uint8_t[::1] out, imatrix,
                     int64_t row0, int64_t row1):
    """Quantize rows [row0, row1) of x into out (the whole tensor's bytes)."""
    cdef const float[::1] im
    cdef const float *im_ptr = NULL
    cdef size_t rs = _check_rows(fmt, x.shape[0], x.shape[1], out.shape[0], row0, row1, True)
    if imatrix is not None:
        im = imatrix
        if im.shape[0] != x.shape[1]:
            raise ValueError(f"imatrix has {im.shape[0]} entries, rows have {x.shape[1]}")
        im_ptr = &im[0]
    if row1 == row0:
        return
    cdef iq1q_weight_quantize_fn fn = iq1q_ref_weight_quantizers[fmt]
    with nogil:
        fn(&x[row0, 0], &out[row0 * rs], row1 - row0, x.shape[1], im_ptr)


def dequantize(int fmt, const uint8_t[::1] data, float[:, ::1] out, int64_t row0, int64_t row1):
    """Dequantize rows [row0, row1) of a weight or activation tensor."""
    cdef size_t rs = _check_rows(fmt, out.shape[0], out.shape[1], data.shape[0], row0, row1, False)
    if row1 == row0:
        return
    cdef iq1q_dequantize_fn fn = iq1q_ref_dequantizers[fmt]
    with nogil:
        fn(&data[row0 * rs], &out[row0, 0], row1 - row0, out.shape[1])


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
