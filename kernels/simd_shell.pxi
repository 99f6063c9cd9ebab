# simd_shell.pxi: the Cython shell of the SIMD kernels (kernels/simd.h), shared by
# iq1q._avx2 and iq1q._avx512 on x86-64 and iq1q._neon and iq1q._neon_dotprod on
# AArch64, which differ only in compile flags.
# Every entry point checks the buffers before a pointer is used, then
# releases the GIL for the native work.

include "shell.pxi"

cdef extern from "simd.h" nogil:
    int iq1q_simd_gemm(int wfmt, int afmt, int hist, const uint8_t *w, int64_t N, int64_t K,
                       const uint8_t *a, int64_t M, float *y, int nthreads, iq1q_pool_run_fn run)
    const iq1q_act_quantize_fn iq1q_simd_act_quantizers[]
    enum:
        IQ1Q_IQ1_S_R4
        IQ1Q_Q8_1


def gemm(int wfmt, int afmt, const uint8_t[::1] w, const uint8_t[::1] a, float[:, ::1] y,
         int64_t K, int threads):
    """y = X @ W.T (y is M x N) for W in its ggml bytes, decoded as the work goes."""
    cdef int64_t M = y.shape[0], N = y.shape[1]
    _check_gemm(wfmt, afmt, w.shape[0], a.shape[0], M, N, K, 0, N)
    _check_threads(threads)
    if M == 0 or N == 0:
        return
    cdef int err
    cdef int hist = wfmt == IQ1Q_IQ1_S_R4 and afmt == IQ1Q_Q8_1
    with nogil:
        err = iq1q_simd_gemm(wfmt, afmt, hist, &w[0], N, K, &a[0], M, &y[0, 0], threads, pool_run)
    if err:
        raise MemoryError("iq1q: no memory for the kernel's scratch")


def quantize_activations(int fmt, const float[:, ::1] x, uint8_t[::1] out, int threads):
    """Quantize the activation rows of x into out; returns the first row with NaN/Inf or -1."""
    _info(fmt)
    if fmt < IQ1Q_Q8_0:
        raise ValueError(f"{format_name(fmt)} is not an activation format")
    return _run_act_quantizer(iq1q_simd_act_quantizers[fmt - IQ1Q_Q8_0], fmt, x, out, threads)
