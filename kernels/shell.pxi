# shell.pxi: what every kernel module's Cython shell shares: the C types of
# iq1q_common.h and the checks run on Python's buffers before any pointer is
# handed to native code. Included (textually) by _ref.pyx and its siblings.

from libc.stdint cimport int64_t, uint8_t, uint16_t

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
