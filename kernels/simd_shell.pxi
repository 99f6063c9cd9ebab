# simd_shell.pxi: the Cython shell of the SIMD kernels (kernels/simd.h), shared by
# iq1q._avx2 and iq1q._avx512 on x86-64 and iq1q._neon and iq1q._neon_dotprod on
# AArch64, which differ only in compile flags.
# Every entry point checks the buffers before a pointer is used, then
# releases the GIL for the native work.

include "shell.pxi"

cdef extern from "simd.h" nogil:
    ctypedef struct iq1q_tile_layout:
        size_t bytes
    iq1q_tile_layout iq1q_tile_layout_for(int64_t K)
    int64_t iq1q_tile_count(int64_t N)
    void iq1q_tile_pack(int wfmt, const uint8_t *w, int64_t N, int64_t K, uint8_t *out, int64_t t0,
                        int64_t t1)
    int iq1q_simd_gemm(int wfmt, int afmt, int hist, const uint8_t *w, const uint8_t *tiles, int64_t N,
                       int64_t K, const uint8_t *a, int64_t M, float *y, int nthreads, iq1q_pool_run_fn run)
    const iq1q_act_quantize_fn iq1q_simd_act_quantizers[]
    enum:
        IQ1Q_IQ1_S_R4
        IQ1Q_Q8_1
        IQ1Q_TILE_CHUNK

cdef extern from "q8_0_gemm.h" nogil:
    enum:
        IQ1Q_HAVE_Q8_0_GEMM
    int iq1q_q8_0_gemm(const uint8_t *w, int64_t N, int64_t K, const uint8_t *a, int64_t M, float *y,
                       int nthreads, iq1q_pool_run_fn run)
    int iq1q_q8_0_nll(const uint8_t *w, int64_t N, int64_t K, const uint8_t *a, int64_t M,
                      const int64_t *target, double *nll, int nthreads, iq1q_pool_run_fn run)

# whether this module multiplies weights stored as ggml Q8_0 (kernels/q8_0_gemm.h)
HAS_Q8_0_GEMM = bool(IQ1Q_HAVE_Q8_0_GEMM)


cdef int64_t _packed_size(int64_t N, int64_t K) except -1:
    if N < 0 or K <= 0 or K % IQ1Q_TILE_CHUNK:
        raise ValueError(f"tiles need N >= 0 and K a positive multiple of {IQ1Q_TILE_CHUNK}, "
                         f"got {N} x {K}")
    return iq1q_tile_count(N) * iq1q_tile_layout_for(K).bytes


def packed_size(int64_t N, int64_t K):
    """Bytes of the tiles (kernels/tiles.h) of an N x K weight tensor, as pack() makes them."""
    return _packed_size(N, K)


ctypedef struct _pack_job:
    int wfmt
    const uint8_t *w
    uint8_t *out
    int64_t N, K, tiles_per_task, ntiles


cdef void _pack_task(void *ctx, int64_t t) noexcept nogil:
    cdef _pack_job *j = <_pack_job *>ctx
    cdef int64_t t0 = t * j.tiles_per_task
    iq1q_tile_pack(j.wfmt, j.w, j.N, j.K, j.out, t0, min(t0 + j.tiles_per_task, j.ntiles))


def pack(int wfmt, const uint8_t[::1] w, int64_t N, int64_t K, uint8_t[::1] out, int threads):
    """Decode a whole N x K weight tensor (ggml bytes w) into tiles, for gemm(tiles=...)."""
    _check_rows(wfmt, N, K, w.shape[0], 0, N, True)
    _check_threads(threads)
    cdef int64_t size = _packed_size(N, K)
    if out.shape[0] != size:
        raise ValueError(f"tiles of {N} x {K} take {size} bytes, the buffer has {out.shape[0]}")
    if N == 0:
        return
    cdef _pack_job j
    j.wfmt, j.w, j.out, j.N, j.K, j.ntiles = wfmt, &w[0], &out[0], N, K, iq1q_tile_count(N)
    cdef int64_t ntasks = _ntasks(j.ntiles, threads, 8)
    j.tiles_per_task = (j.ntiles + ntasks - 1) // ntasks
    with nogil:
        pool_run(_pack_task, &j, (j.ntiles + j.tiles_per_task - 1) // j.tiles_per_task, threads)


def gemm(int wfmt, int afmt, const uint8_t[::1] w, const uint8_t[::1] a, float[:, ::1] y,
         int64_t K, int threads, const uint8_t[::1] tiles=None):
    """y = X @ W.T (y is M x N) for W in its ggml bytes, decoded as the work goes, or, when
    given, from its tiles made beforehand by pack()."""
    cdef int64_t M = y.shape[0], N = y.shape[1]
    _check_gemm(wfmt, afmt, w.shape[0], a.shape[0], M, N, K, 0, N)
    _check_threads(threads)
    cdef const uint8_t *tp = NULL
    if tiles is not None:
        if tiles.shape[0] != _packed_size(N, K):
            raise ValueError(f"tiles of {N} x {K} take {_packed_size(N, K)} bytes, got {tiles.shape[0]}")
        if N:
            tp = &tiles[0]
    if M == 0 or N == 0:
        return
    cdef int err
    cdef int hist = wfmt == IQ1Q_IQ1_S_R4 and afmt == IQ1Q_Q8_1
    with nogil:
        err = iq1q_simd_gemm(wfmt, afmt, hist, &w[0], tp, N, K, &a[0], M, &y[0, 0], threads, pool_run)
    if err:
        raise MemoryError("iq1q: no memory for the kernel's scratch")


def quantize_activations(int fmt, const float[:, ::1] x, uint8_t[::1] out, int threads):
    """Quantize the activation rows of x into out; returns the first row with NaN/Inf or -1."""
    _info(fmt)
    if fmt < IQ1Q_Q8_0:
        raise ValueError(f"{format_name(fmt)} is not an activation format")
    return _run_act_quantizer(iq1q_simd_act_quantizers[fmt - IQ1Q_Q8_0], fmt, x, out, threads)


def q8_0_gemm(const uint8_t[::1] w, const uint8_t[::1] a, float[:, ::1] y, int64_t K, int threads):
    """y = X @ W.T (y is M x N) for W: N rows of ggml Q8_0 bytes, X: M rows of q8_0."""
    if not HAS_Q8_0_GEMM:
        raise NotImplementedError("this kernel module has no Q8_0 weight product (HAS_Q8_0_GEMM)")
    cdef int64_t M = y.shape[0], N = y.shape[1]
    _check_rows(IQ1Q_Q8_0, N, K, w.shape[0], 0, N, False)
    _check_rows(IQ1Q_Q8_0, M, K, a.shape[0], 0, M, False)
    _check_threads(threads)
    if M == 0 or N == 0:
        return
    cdef int err
    with nogil:
        err = iq1q_q8_0_gemm(&w[0], N, K, &a[0], M, &y[0, 0], threads, pool_run)
    if err:
        raise MemoryError("iq1q: no memory for the Q8_0 product's scratch")


def q8_0_nll(const uint8_t[::1] w, const uint8_t[::1] a, const int64_t[::1] targets, double[::1] nll,
             int64_t K, int threads):
    """nll[m] = logsumexp(z[m]) - z[m, targets[m]] for the logits z = X @ W.T (W: ggml Q8_0
    rows, X: len(targets) rows of q8_0), without keeping z."""
    if not HAS_Q8_0_GEMM:
        raise NotImplementedError("this kernel module has no Q8_0 weight product (HAS_Q8_0_GEMM)")
    cdef int64_t M = targets.shape[0]
    _check_row_length(IQ1Q_Q8_0, K)
    cdef size_t rs = _row_size(_info(IQ1Q_Q8_0), K)
    if w.shape[0] % rs:
        raise ValueError(f"Q8_0 weights of {w.shape[0]} bytes are not whole rows of {K} values")
    cdef int64_t N = w.shape[0] // rs
    _check_rows(IQ1Q_Q8_0, N, K, w.shape[0], 0, N, False)
    _check_rows(IQ1Q_Q8_0, M, K, a.shape[0], 0, M, False)
    _check_threads(threads)
    if nll.shape[0] != M:
        raise ValueError(f"{M} targets but room for {nll.shape[0]} results")
    if N == 0:
        raise ValueError("a log-sum-exp over no weight rows")
    cdef int64_t m
    for m in range(M):
        if not 0 <= targets[m] < N:
            raise ValueError(f"target {targets[m]} of row {m} is not in [0, {N})")
    if M == 0:
        return
    cdef int err
    with nogil:
        err = iq1q_q8_0_nll(&w[0], N, K, &a[0], M, &targets[0], &nll[0], threads, pool_run)
    if err:
        raise MemoryError("iq1q: no memory for the Q8_0 log-sum-exp's scratch")
