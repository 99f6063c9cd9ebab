# shell.pxi: what every kernel module's Cython shell shares: the C types of
# iq1q_common.h, the checks run on Python's buffers before any pointer is
# handed to native code, and the forward pass's float work (float_ops.h,
# attention.h), which each module compiles with its own flags. Included
# (textually) by _ref.pyx and its siblings.

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


# ---- the float work of a forward pass (kernels/float_ops.h), on the pool ----

cdef extern from "float_ops.h" nogil:
    enum:
        IQ1Q_ACT_SILU
        IQ1Q_ACT_GELU
    float iq1q_expf(float x)
    void iq1q_gated(int act, const float *g, const float *u, float *y, int64_t n)
    float iq1q_max_abs(const float *x, int64_t n)
    void iq1q_rms_norm(const float *x, const float *w, float *y, int64_t r0, int64_t r1, int64_t n,
                       double eps)
    void iq1q_rope(const float *x, const float *cs, const float *sn, float *y, int64_t r0, int64_t r1,
                   int64_t heads, int64_t d, int64_t n_rot, int neox)

# the gated activations by name, as the model's metadata names them
ACTIVATIONS = {"silu": IQ1Q_ACT_SILU, "gelu": IQ1Q_ACT_GELU}

ctypedef struct _float_job:
    int op  # 0 RMS norm, 1 gated activation, 2 RoPE
    int act, neox
    const float *x
    const float *w  # norm weights; the gate's partner u; RoPE's cos
    const float *s  # RoPE's sin
    float *y
    int64_t n, heads, d, n_rot, per_task, units
    double eps


cdef void _float_task(void *ctx, int64_t t) noexcept nogil:
    cdef _float_job *j = <_float_job *>ctx
    cdef int64_t lo = t * j.per_task
    cdef int64_t hi = min(lo + j.per_task, j.units)
    if j.op == 0:
        iq1q_rms_norm(j.x, j.w, j.y, lo, hi, j.n, j.eps)
    elif j.op == 1:
        iq1q_gated(j.act, j.x + lo, j.w + lo, j.y + lo, hi - lo)
    else:
        iq1q_rope(j.x, j.w, j.s, j.y, lo, hi, j.heads, j.d, j.n_rot, j.neox)


cdef void _run_float(_float_job *j, int64_t units, int64_t values_per_unit, int threads) noexcept nogil:
    # at least 32k values a task: below that a thread costs more than it saves
    cdef int64_t ntasks = _ntasks(units, threads, max(1, 32768 // max(1, values_per_unit)))
    j.units, j.per_task = units, (units + ntasks - 1) // ntasks
    pool_run(_float_task, j, (units + j.per_task - 1) // j.per_task, threads)


def rms_norm(const float[:, ::1] x, const float[::1] w, float[:, ::1] y, double eps, int threads):
    """y = x / sqrt(mean(x^2, row) + eps) * w for every row of x (y may be x)."""
    _check_threads(threads)
    if w.shape[0] != x.shape[1] or y.shape[0] != x.shape[0] or y.shape[1] != x.shape[1]:
        raise ValueError(f"rms_norm: x {x.shape[0]} x {x.shape[1]}, w {w.shape[0]} and y "
                         f"{y.shape[0]} x {y.shape[1]} do not match")
    if x.shape[0] == 0 or x.shape[1] == 0:
        return
    cdef _float_job j
    j.op, j.x, j.w, j.y, j.n, j.eps = 0, &x[0, 0], &w[0], &y[0, 0], x.shape[1], eps
    with nogil:
        _run_float(&j, x.shape[0], x.shape[1], threads)


def max_abs(const float[::1] x) -> float:
    """max |x|, NaN if x holds one; 0 for no values."""
    cdef float m = 0.0
    with nogil:
        m = iq1q_max_abs(&x[0], x.shape[0]) if x.shape[0] else 0.0
    return m


def gated(str activation, const float[::1] g, const float[::1] u, float[::1] y, int threads):
    """y = act(g) * u elementwise, act 'silu' or 'gelu' (ggml's tanh form); y may be g or u."""
    _check_threads(threads)
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; known: {', '.join(ACTIVATIONS)}")
    if u.shape[0] != g.shape[0] or y.shape[0] != g.shape[0]:
        raise ValueError(f"gated: g, u and y have {g.shape[0]}, {u.shape[0]} and {y.shape[0]} values")
    if g.shape[0] == 0:
        return
    cdef _float_job j
    j.op, j.act, j.x, j.w, j.y = 1, ACTIVATIONS[activation], &g[0], &u[0], &y[0]
    with nogil:
        _run_float(&j, g.shape[0], 1, threads)


def rope(const float[:, ::1] x, const float[:, ::1] cos, const float[:, ::1] sin, float[:, ::1] y,
         int64_t heads, int64_t d, int64_t n_rot, bint neox, int threads):
    """Rotary embedding: x and y (T, heads * d); the first n_rot values of each head rotated
    by cos and sin (T, n_rot / 2), NEOX pairs (i, i + n_rot / 2) or else (2i, 2i + 1); the
    rest copied. y may be x."""
    _check_threads(threads)
    if heads <= 0 or d <= 0 or n_rot < 0 or n_rot > d or n_rot % 2:
        raise ValueError(f"rope: bad heads {heads}, head size {d} or rotated size {n_rot}")
    cdef int64_t T = x.shape[0]
    if x.shape[1] != heads * d or y.shape[0] != T or y.shape[1] != heads * d:
        raise ValueError(f"rope: x {T} x {x.shape[1]} and y {y.shape[0]} x {y.shape[1]} are not "
                         f"{T} x {heads} heads of {d}")
    if cos.shape[0] != T or cos.shape[1] != n_rot // 2 or sin.shape[0] != T or sin.shape[1] != n_rot // 2:
        raise ValueError(f"rope: tables of {cos.shape[0]} x {cos.shape[1]} and {sin.shape[0]} x "
                         f"{sin.shape[1]}, expected {T} x {n_rot // 2}")
    if T == 0:
        return
    cdef _float_job j
    j.op, j.neox, j.x, j.y, j.heads, j.d, j.n_rot = 2, neox, &x[0, 0], &y[0, 0], heads, d, n_rot
    j.w = &cos[0, 0] if n_rot else NULL
    j.s = &sin[0, 0] if n_rot else NULL
    with nogil:
        _run_float(&j, T, heads * d, threads)


# ---- causal self-attention of a block (kernels/attention.h), on the pool ----

cdef extern from "attention.h" nogil:
    enum:
        IQ1Q_ATTN_ROWS
        IQ1Q_ATTN_KEYS
    ctypedef struct iq1q_attn_job:
        const float *q
        const float *kt
        const float *v
        const float *mask
        float *o
        int64_t T, Tp, n_head, n_kv, d, dv, blocks
        float scale
        int failed
    void iq1q_attn_task(void *ctx, int64_t task)

# the transposed keys' padding: attention() takes kt with a multiple of it as its last axis
ATTENTION_KEYS = IQ1Q_ATTN_KEYS


def attention(const float[:, :, ::1] q, const float[:, :, ::1] kt, const float[:, :, ::1] v,
              const float[:, ::1] mask, float[:, :, ::1] o, float scale, int threads):
    """Causal self-attention: o (T, n_head, dv) from queries q (T, n_head, d), keys
    transposed kt (n_kv, d, Tp; zeros past T, Tp a multiple of ATTENTION_KEYS), values v
    (T, n_kv, dv) and the additive mask (T, T), the scores scale * q . k + mask; query head h reads key/value head
    h // (n_head / n_kv). A query sees only keys up to its own position (and the mask's)."""
    _check_threads(threads)
    cdef int64_t T = q.shape[0], n_head = q.shape[1], d = q.shape[2]
    cdef int64_t n_kv = kt.shape[0], Tp = kt.shape[2], dv = v.shape[2]
    if n_kv <= 0 or n_head % n_kv or kt.shape[1] != d or Tp < T or Tp % IQ1Q_ATTN_KEYS:
        raise ValueError(f"attention: queries {T} x {n_head} x {d} and transposed keys {n_kv} x "
                         f"{kt.shape[1]} x {Tp} do not match (heads a multiple of key heads, "
                         f"keys padded to a multiple of {IQ1Q_ATTN_KEYS})")
    if v.shape[0] != T or v.shape[1] != n_kv or mask.shape[0] != T or mask.shape[1] != T:
        raise ValueError(f"attention: values {v.shape[0]} x {v.shape[1]} x {dv} or mask "
                         f"{mask.shape[0]} x {mask.shape[1]} do not match {T} tokens, {n_kv} key heads")
    if o.shape[0] != T or o.shape[1] != n_head or o.shape[2] != dv:
        raise ValueError(f"attention: output {o.shape[0]} x {o.shape[1]} x {o.shape[2]}, expected "
                         f"{T} x {n_head} x {dv}")
    if T == 0 or n_head == 0 or dv == 0:
        return
    if d == 0:
        raise ValueError("attention: heads of size 0")
    cdef iq1q_attn_job j
    j.q, j.kt, j.v, j.mask, j.o = &q[0, 0, 0], &kt[0, 0, 0], &v[0, 0, 0], &mask[0, 0], &o[0, 0, 0]
    j.T, j.Tp, j.n_head, j.n_kv, j.d, j.dv = T, Tp, n_head, n_kv, d, dv
    j.blocks, j.scale, j.failed = (T + IQ1Q_ATTN_ROWS - 1) // IQ1Q_ATTN_ROWS, scale, 0
    with nogil:
        pool_run(iq1q_attn_task, &j, n_head * j.blocks, threads)
    if j.failed:
        raise MemoryError("iq1q: no memory for the attention's scores")
