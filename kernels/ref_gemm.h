/* ref_gemm.h: the portable reference GEMM kernels, one per (weight, activation)
 * pair (docs/spec.md §7), plain C without intrinsics.
 *
 *   y[m*ldy + r] = sum_k W[r,k] * X[m,k],  r in [r0, r1), m in [0, M)
 *
 * Numerics. Per 32 columns a weight row is the int8 vector v = 8*g + sigma
 * (g in {-1,0,1} from the grid, sigma = +-1 the delta sign, so v in {+-1, +-7,
 * +-9}) times an integer multiplier per 16 columns (IQ1_S / IQ1_S_R4: 2l+1 per
 * 32; IQ1_M: 2l+1 per 16; IQ1_M_R4: the 4-bit scale as is) times a float scale
 * d_w / 8 (d_w per 256-block for plain rows, per row for _r4). So
 *
 *   sum_k W[r,k] X[m,k] = (1/8) * sum_{runs of constant d_w} d_w * sum_{activation blocks} d_a * I,
 *   I = sum_j (ls_j * v_j) * q_j,
 *
 * where I is an exact int32 (|I| <= 15*9*127*256 < 2^23). Activation blocks
 * (32/128/256) never straddle a 256-block, so d_w is constant over each. Every
 * d_a * I is exact in double (24-bit times 23-bit), sums are kept in double,
 * and the result is rounded to float once per decoded chunk of columns (one
 * chunk unless K > IQ1Q_REF_KC): far inside the 1e-5 tolerance.
 *
 * Structure. A decoder per weight format turns a row (or a 4-row group) and a
 * chunk of columns into int16 values ls*(8g+sigma) (|.| <= 135) in a stack
 * scratch buffer, plus one float d_w per 32 columns. Weight rows are taken 4
 * at a time (an _r4 group, or 4 plain rows decoded side by side); each chunk is
 * decoded once and reused for all M activation rows, and per activation block
 * one int16 x int8 -> int32 loop of compile-time length computes the 4 rows'
 * sums (gcc auto-vectorises it at baseline x86-64 flags), so an activation
 * block is loaded and its scale converted once per 4 weight rows.
 * iq1q_ref_gemm_impl is force-inlined into 15 thin wrappers, so every pair is
 * specialised; the 16th pair, iq1_s_r4 x q8_1, is the historical kernel.
 *
 * The exception (docs/spec.md §7.4, §9.7): iq1_s_r4 x q8_1 uses q8_1's stored fp16 s:
 *   y = d_r * sum_k ls_k * (d_y,k * U_k + s_k * (sigma_k - 8) / 8),
 *   U_k = sum_{32} (g+1) q,
 * so an infinite s (|sum x| >~ 65504 over a block) yields +-inf and, with
 * blocks of both signs, NaN in all four rows of the group (docs/spec.md §11.4). No other
 * pair reads q8_1's s or q8_k's float sum (nor any bsums: all sums come from d
 * and the quants).
 *
 * Thread safety: no global mutable state; all scratch is on the stack
 * (about 36 KiB per call). Calls on disjoint row ranges may run concurrently.
 * Results do not depend on how rows are split between calls.
 */
#ifndef IQ1Q_REF_GEMM_H
#define IQ1Q_REF_GEMM_H

#include <stddef.h>
#include <stdint.h>

#include "iq1q_common.h"
#include "iq1q_grid.h"

#if defined(__GNUC__) || defined(__clang__)
#define IQ1Q_REF_INLINE static inline __attribute__((always_inline))
#elif defined(_MSC_VER)
#define IQ1Q_REF_INLINE static __forceinline
#else
#define IQ1Q_REF_INLINE static inline
#endif

/* gcc -O3 would fully unroll the 8-element decode loop into scalar code
 * before the vectoriser sees it; keep it a loop so it becomes one vector op. */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 8
#define IQ1Q_REF_NO_UNROLL _Pragma("GCC unroll 1")
#else
#define IQ1Q_REF_NO_UNROLL
#endif

/* Columns decoded per pass: a multiple of 256 (so chunks hold whole blocks of
 * every format). Scratch: 4 rows * KC int16 + 4 * KC/32 floats. */
#define IQ1Q_REF_KC 4096
_Static_assert(IQ1Q_REF_KC % 256 == 0, "a decode chunk must hold whole blocks of every format");

/* ---- little-endian field readers (no alignment or aliasing assumptions) -- */

static inline uint16_t iq1q_ref_u16(const uint8_t *p) {
    return (uint16_t)(p[0] | ((unsigned)p[1] << 8));
}
static inline float iq1q_ref_f32(const uint8_t *p) {
    return iq1q_bits_to_f32((uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
                            ((uint32_t)p[3] << 24));
}

/* dst[j] = c * g[j] + b for the 8 signed grid values g of entry idx:
 * c = 8 * ls, b = ls * sigma gives ls * (8g + sigma). */
static inline void iq1q_ref_put8(int16_t *dst, unsigned idx, int c, int b) {
#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    /* byte j of the little-endian word is element j; reading an object through
     * a character type is allowed, and avoids a store-to-load round trip */
    const int8_t *g = (const int8_t *)&iq1q_grid_i8[idx];
    IQ1Q_REF_NO_UNROLL
    for (int j = 0; j < 8; ++j) dst[j] = (int16_t)(c * g[j] + b);
#else
    const uint64_t gw = iq1q_grid_i8[idx];
    for (int j = 0; j < 8; ++j) dst[j] = (int16_t)(c * (int8_t)(uint8_t)(gw >> (8 * j)) + b);
#endif
}

/* ---- weight decoders -------------------------------------------------------
 * unit: start of the row (plain) or of the 4-row group (_r4).
 * Decode columns [c0, c0 + nc) (c0 a multiple of IQ1Q_REF_KC, nc of the weight
 * block) into
 *   w16[rr * IQ1Q_REF_KC + j] = ls * (8g + sigma)      (j = column - c0)
 *   ws[rr * (IQ1Q_REF_KC/32) + j/32] = d_w of those 32 columns (float)
 * for the group's rows rr = 0..3, or rr = 0 only for a plain row.
 */

static inline void iq1q_ref_decode_iq1_s(const uint8_t *unit, int64_t c0, int64_t nc,
                                         int16_t *w16, float *ws) {
    for (int64_t jb = 0; jb < nc; jb += IQ1Q_BLOCK_IQ1_S) {
        const uint8_t *blk = unit + (size_t)((c0 + jb) / IQ1Q_BLOCK_IQ1_S) * IQ1Q_TYPE_SIZE_IQ1_S;
        const float d = iq1q_fp16_to_fp32(iq1q_ref_u16(blk + offsetof(iq1q_block_iq1_s, d)));
        const uint8_t *qs = blk + offsetof(iq1q_block_iq1_s, qs);
        const uint8_t *qhp = blk + offsetof(iq1q_block_iq1_s, qh);
        for (int b = 0; b < 8; ++b) {
            const unsigned qh = iq1q_ref_u16(qhp + 2 * b);
            const int ls = 2 * (int)((qh >> 12) & 7) + 1;
            const int lss = (qh & 0x8000u) ? -ls : ls;
            int16_t *dst = w16 + jb + 32 * b;
            for (int l = 0; l < 4; ++l)
                iq1q_ref_put8(dst + 8 * l, qs[4 * b + l] | (((qh >> (3 * l)) & 7u) << 8), 8 * ls, lss);
            ws[(jb >> 5) + b] = d;
        }
    }
}

static inline void iq1q_ref_decode_iq1_m(const uint8_t *unit, int64_t c0, int64_t nc,
                                         int16_t *w16, float *ws) {
    for (int64_t jb = 0; jb < nc; jb += IQ1Q_BLOCK_IQ1_M) {
        const uint8_t *blk = unit + (size_t)((c0 + jb) / IQ1Q_BLOCK_IQ1_M) * IQ1Q_TYPE_SIZE_IQ1_M;
        const uint8_t *qs = blk + offsetof(iq1q_block_iq1_m, qs);
        const uint8_t *qh = blk + offsetof(iq1q_block_iq1_m, qh);
        const uint8_t *scp = blk + offsetof(iq1q_block_iq1_m, scales);
        unsigned sc[4];
        for (int w = 0; w < 4; ++w) sc[w] = iq1q_ref_u16(scp + 2 * w);
        const float d = iq1q_fp16_to_fp32(
            (uint16_t)((sc[0] >> 12) | ((sc[1] >> 12) << 4) | ((sc[2] >> 12) << 8) | ((sc[3] >> 12) << 12)));
        for (int m = 0; m < 32; ++m) {
            const int s = m >> 1;
            const unsigned nib = (qh[s] >> (4 * (m & 1))) & 15u;
            const int ls = 2 * (int)((sc[s >> 2] >> (3 * (s & 3))) & 7) + 1;
            iq1q_ref_put8(w16 + jb + 8 * m, qs[m] | ((nib & 7u) << 8), 8 * ls, (nib & 8u) ? -ls : ls);
        }
        for (int b = 0; b < 8; ++b) ws[(jb >> 5) + b] = d;
    }
}

static inline void iq1q_ref_decode_iq1_s_r4(const uint8_t *unit, int64_t c0, int64_t nc,
                                            int16_t *w16, float *ws) {
    float d[4];
    for (int r = 0; r < 4; ++r) d[r] = iq1q_fp16_to_fp32(iq1q_ref_u16(unit + 2 * r));
    const uint8_t *blocks = unit + 4 * IQ1Q_ROW_META_IQ1_S_R4;
    for (int64_t jb = 0; jb < nc; jb += 32) {
        const uint8_t *blk = blocks + (size_t)((c0 + jb) / 32) * sizeof(iq1q_block_iq1_s_r4);
        const uint8_t *qs = blk + offsetof(iq1q_block_iq1_s_r4, qs);
        const uint8_t *qhp = blk + offsetof(iq1q_block_iq1_s_r4, qh);
        for (int r = 0; r < 4; ++r) {
            const unsigned qh = iq1q_ref_u16(qhp + 2 * r);
            const int ls = 2 * (int)((qh >> 12) & 7) + 1;
            const int lss = (qh & 0x8000u) ? -ls : ls;
            int16_t *dst = w16 + r * IQ1Q_REF_KC + jb;
            for (int i = 0; i < 4; ++i)
                iq1q_ref_put8(dst + 8 * i, qs[4 * i + r] | (((qh >> (3 * i)) & 7u) << 8), 8 * ls, lss);
            ws[r * (IQ1Q_REF_KC / 32) + (jb >> 5)] = d[r];
        }
    }
}

static inline void iq1q_ref_decode_iq1_m_r4(const uint8_t *unit, int64_t c0, int64_t nc,
                                            int16_t *w16, float *ws) {
    float d[4];
    for (int r = 0; r < 4; ++r) d[r] = iq1q_fp16_to_fp32(iq1q_ref_u16(unit + 2 * r));
    const uint8_t *blocks = unit + 4 * IQ1Q_ROW_META_IQ1_M_R4;
    for (int64_t jb = 0; jb < nc; jb += 32) {
        const uint8_t *blk = blocks + (size_t)((c0 + jb) / 32) * sizeof(iq1q_block_iq1_m_r4);
        const uint8_t *qs = blk + offsetof(iq1q_block_iq1_m_r4, qs);
        const uint8_t *qh = blk + offsetof(iq1q_block_iq1_m_r4, qh);
        const uint8_t *sc = blk + offsetof(iq1q_block_iq1_m_r4, scales);
        for (int r = 0; r < 4; ++r) {
            int16_t *dst = w16 + r * IQ1Q_REF_KC + jb;
            for (int m = 0; m < 4; ++m) {
                const unsigned nib = (qh[4 * (m >> 1) + r] >> (4 * (m & 1))) & 15u;
                const int ls = m < 2 ? (sc[r] & 15) : (sc[r] >> 4);
                iq1q_ref_put8(dst + 8 * m, qs[4 * m + r] | ((nib & 7u) << 8), 8 * ls, (nib & 8u) ? -ls : ls);
            }
            ws[r * (IQ1Q_REF_KC / 32) + (jb >> 5)] = d[r];
        }
    }
}

typedef void (*iq1q_ref_decode_fn)(const uint8_t *unit, int64_t c0, int64_t nc,
                                   int16_t *w16, float *ws);

/* ---- activation block scales ---------------------------------------------- */

static inline float iq1q_ref_scale_q8_0(const uint8_t *blk) {
    return iq1q_fp16_to_fp32(iq1q_ref_u16(blk + offsetof(iq1q_block_q8_0, d)));
}
static inline float iq1q_ref_scale_q8_1(const uint8_t *blk) {
    return iq1q_fp16_to_fp32(iq1q_ref_u16(blk + offsetof(iq1q_block_q8_1, d)));
}
static inline float iq1q_ref_scale_q8_k(const uint8_t *blk) {
    return iq1q_ref_f32(blk + offsetof(iq1q_block_q8_k, d));
}
static inline float iq1q_ref_scale_q8_k128(const uint8_t *blk) {
    return iq1q_ref_f32(blk + offsetof(iq1q_block_q8_k128, d));
}

typedef float (*iq1q_ref_scale_fn)(const uint8_t *blk);

/* ---- the shared kernel body ----------------------------------------------- */

/* sum_j w[j] * q[j]; n is a compile-time constant after inlining. */
IQ1Q_REF_INLINE int32_t iq1q_ref_dot(const int16_t *w, const int8_t *q, int n) {
    int32_t s = 0;
    for (int j = 0; j < n; ++j) s += (int32_t)w[j] * (int32_t)q[j];
    return s;
}

/* The 4 rows of a group (IQ1Q_REF_KC apart in w) against one q: q loaded once. */
IQ1Q_REF_INLINE void iq1q_ref_dot_4w(const int16_t *w, const int8_t *q, int n, int32_t *out) {
    int32_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (int j = 0; j < n; ++j) {
        const int32_t qj = q[j];
        s0 += (int32_t)w[j] * qj;
        s1 += (int32_t)w[IQ1Q_REF_KC + j] * qj;
        s2 += (int32_t)w[2 * IQ1Q_REF_KC + j] * qj;
        s3 += (int32_t)w[3 * IQ1Q_REF_KC + j] * qj;
    }
    out[0] = s0, out[1] = s1, out[2] = s2, out[3] = s3;
}

/* Store (first chunk) or add (later chunks) one float result. */
IQ1Q_REF_INLINE void iq1q_ref_put(float *yp, double v, int first) {
    if (first) *yp = (float)v;
    else *yp += (float)v;
}

/* The body of every kernel but iq1_s_r4 x q8_1. All parameters after ldy are
 * compile-time constants in each instantiation; wblk is the run of columns
 * with one weight scale (256 for plain rows, the whole chunk for _r4).
 * Weight rows are taken 4 at a time (an _r4 group, or 4 consecutive plain
 * rows decoded into the same [4][KC] layout); per activation row one pass over
 * the chunk gives the 4 rows' integer sums per activation block (dot_4w), so
 * each activation block is loaded and its scale converted once per 4 rows.
 * Plain rows left over (r1 - r0 not a multiple of 4) go one at a time. */
IQ1Q_REF_INLINE void iq1q_ref_gemm_impl(const uint8_t *w, const uint8_t *a, float *y, int64_t K,
                                        int64_t M, int64_t r0, int64_t r1, int64_t ldy,
                                        const int nrows, const size_t row_size, const int wblk,
                                        const iq1q_ref_decode_fn decode, const int ablk,
                                        const size_t atype, const size_t aqoff,
                                        const iq1q_ref_scale_fn ascale) {
    int16_t w16[4 * IQ1Q_REF_KC];
    float ws[4 * (IQ1Q_REF_KC / 32)];
    const size_t arow_size = atype * (size_t)(K / ablk);
    if (K <= 0) {
        for (int64_t m = 0; m < M; ++m)
            for (int64_t r = r0; r < r1; ++r) y[m * ldy + r] = 0.0f;
        return;
    }
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4) {
        for (int64_t c0 = 0; c0 < K; c0 += IQ1Q_REF_KC) {
            const int64_t nc = K - c0 < IQ1Q_REF_KC ? K - c0 : IQ1Q_REF_KC;
            const int first = c0 == 0;
            const size_t aoff = (size_t)(c0 / ablk) * atype; /* first block of the chunk */
            if (nrows == 4)
                decode(w + (size_t)r * row_size, c0, nc, w16, ws);
            else
                for (int rr = 0; rr < 4; ++rr)
                    decode(w + (size_t)(r + rr) * row_size, c0, nc, w16 + rr * IQ1Q_REF_KC,
                           ws + rr * (IQ1Q_REF_KC / 32));
            for (int64_t m = 0; m < M; ++m) {
                const uint8_t *ablock = a + (size_t)m * arow_size + aoff;
                double acc[4] = {0.0, 0.0, 0.0, 0.0};
                for (int64_t jp = 0; jp < nc; jp += wblk) { /* weight scale constant over [jp, je) */
                    const int64_t je = jp + wblk < nc ? jp + wblk : nc;
                    double t[4] = {0.0, 0.0, 0.0, 0.0};
                    for (int64_t j = jp; j < je; j += ablk, ablock += atype) {
                        const double da = (double)ascale(ablock);
                        int32_t isum[4];
                        iq1q_ref_dot_4w(w16 + j, (const int8_t *)(ablock + aqoff), ablk, isum);
                        for (int rr = 0; rr < 4; ++rr) t[rr] += da * (double)isum[rr];
                    }
                    for (int rr = 0; rr < 4; ++rr) acc[rr] += (double)ws[rr * (IQ1Q_REF_KC / 32) + (jp >> 5)] * t[rr];
                }
                for (int rr = 0; rr < 4; ++rr) iq1q_ref_put(y + m * ldy + r + rr, 0.125 * acc[rr], first);
            }
        }
    }
    if (nrows == 1) {
        for (; r < r1; ++r) {
            for (int64_t c0 = 0; c0 < K; c0 += IQ1Q_REF_KC) {
                const int64_t nc = K - c0 < IQ1Q_REF_KC ? K - c0 : IQ1Q_REF_KC;
                const size_t aoff = (size_t)(c0 / ablk) * atype;
                decode(w + (size_t)r * row_size, c0, nc, w16, ws);
                for (int64_t m = 0; m < M; ++m) {
                    const uint8_t *ablock = a + (size_t)m * arow_size + aoff;
                    double acc = 0.0;
                    for (int64_t jp = 0; jp < nc; jp += wblk) {
                        const int64_t je = jp + wblk < nc ? jp + wblk : nc;
                        double t = 0.0;
                        for (int64_t j = jp; j < je; j += ablk, ablock += atype)
                            t += (double)ascale(ablock) *
                                 (double)iq1q_ref_dot(w16 + j, (const int8_t *)(ablock + aqoff), ablk);
                        acc += (double)ws[jp >> 5] * t;
                    }
                    iq1q_ref_put(y + m * ldy + r, 0.125 * acc, c0 == 0);
                }
            }
        }
    }
}

#define IQ1Q_REF_GEMM_DEFINE(WID, wname, AID, aname)                                             \
    static void iq1q_ref_gemm_##wname##_##aname(const uint8_t *w, const uint8_t *a, float *y,     \
                                                int64_t K, int64_t M, int64_t r0, int64_t r1,     \
                                                int64_t ldy) {                                    \
        iq1q_ref_gemm_impl(w, a, y, K, M, r0, r1, ldy, IQ1Q_ROWS_##WID, IQ1Q_ROW_SIZE(WID, K),    \
                           IQ1Q_ROWS_##WID == 4 ? IQ1Q_REF_KC : IQ1Q_BLOCK_##WID,                 \
                           iq1q_ref_decode_##wname, IQ1Q_BLOCK_##AID, IQ1Q_TYPE_SIZE_##AID,       \
                           offsetof(iq1q_block_##aname, qs), iq1q_ref_scale_##aname);             \
    }

IQ1Q_REF_GEMM_DEFINE(IQ1_S, iq1_s, Q8_0, q8_0)
IQ1Q_REF_GEMM_DEFINE(IQ1_S, iq1_s, Q8_1, q8_1)
IQ1Q_REF_GEMM_DEFINE(IQ1_S, iq1_s, Q8_K, q8_k)
IQ1Q_REF_GEMM_DEFINE(IQ1_S, iq1_s, Q8_K128, q8_k128)
IQ1Q_REF_GEMM_DEFINE(IQ1_M, iq1_m, Q8_0, q8_0)
IQ1Q_REF_GEMM_DEFINE(IQ1_M, iq1_m, Q8_1, q8_1)
IQ1Q_REF_GEMM_DEFINE(IQ1_M, iq1_m, Q8_K, q8_k)
IQ1Q_REF_GEMM_DEFINE(IQ1_M, iq1_m, Q8_K128, q8_k128)
IQ1Q_REF_GEMM_DEFINE(IQ1_S_R4, iq1_s_r4, Q8_0, q8_0)
/* iq1_s_r4 x q8_1: the historical kernel below */
IQ1Q_REF_GEMM_DEFINE(IQ1_S_R4, iq1_s_r4, Q8_K, q8_k)
IQ1Q_REF_GEMM_DEFINE(IQ1_S_R4, iq1_s_r4, Q8_K128, q8_k128)
IQ1Q_REF_GEMM_DEFINE(IQ1_M_R4, iq1_m_r4, Q8_0, q8_0)
IQ1Q_REF_GEMM_DEFINE(IQ1_M_R4, iq1_m_r4, Q8_1, q8_1)
IQ1Q_REF_GEMM_DEFINE(IQ1_M_R4, iq1_m_r4, Q8_K, q8_k)
IQ1Q_REF_GEMM_DEFINE(IQ1_M_R4, iq1_m_r4, Q8_K128, q8_k128)

#undef IQ1Q_REF_GEMM_DEFINE

/* ---- iq1_s_r4 x q8_1: the pre-PR-#194 kernel (docs/spec.md §7.4, §9.7) --------------
 * docs/spec.md §7.4: y_r = d_r * sum_k ls_k * (d_y,k * U_k + s_k * (sigma_k - 8) / 8),
 * U_k = sum_{32} (g+1) q, with q8_1's stored fp16 s_k.
 * Per row and 32-block k, with I_k = sum ls*(8g+sigma)*q (the shared decode),
 * B_k = sum q and f_k = ls*(sigma - 8) (never 0):
 *   8 * ls * U_k = I_k - f_k * B_k      (exact integers), so
 *   y_r = (d_r / 8) * sum_k (d_y,k * (I_k - f_k * B_k) + s_k * f_k).
 * An infinite s_k makes its term infinite; infinities of both signs give NaN. */
static void iq1q_ref_gemm_iq1_s_r4_q8_1(const uint8_t *w, const uint8_t *a, float *y, int64_t K,
                                        int64_t M, int64_t r0, int64_t r1, int64_t ldy) {
    enum { NB = IQ1Q_REF_KC / 32 };
    int16_t w16[4 * IQ1Q_REF_KC];
    float ws[4 * NB];
    int32_t fk[4 * NB]; /* ls * (sigma - 8) per (row, 32-block) */
    const size_t row_size = IQ1Q_ROW_SIZE(IQ1_S_R4, K);
    const size_t arow_size = IQ1Q_ROW_SIZE(Q8_1, K);
    if (K <= 0) {
        for (int64_t m = 0; m < M; ++m)
            for (int64_t r = r0; r < r1; ++r) y[m * ldy + r] = 0.0f;
        return;
    }
    for (int64_t r = r0; r < r1; r += 4) {
        const uint8_t *unit = w + (size_t)r * row_size;
        const uint8_t *blocks = unit + 4 * IQ1Q_ROW_META_IQ1_S_R4;
        for (int64_t c0 = 0; c0 < K; c0 += IQ1Q_REF_KC) {
            const int64_t nc = K - c0 < IQ1Q_REF_KC ? K - c0 : IQ1Q_REF_KC;
            iq1q_ref_decode_iq1_s_r4(unit, c0, nc, w16, ws);
            for (int64_t jb = 0; jb < nc; jb += 32) {
                const uint8_t *qhp = blocks + (size_t)((c0 + jb) / 32) * sizeof(iq1q_block_iq1_s_r4) +
                                     offsetof(iq1q_block_iq1_s_r4, qh);
                for (int rr = 0; rr < 4; ++rr) {
                    const unsigned qh = iq1q_ref_u16(qhp + 2 * rr);
                    const int32_t ls = 2 * (int32_t)((qh >> 12) & 7) + 1;
                    fk[rr * NB + (jb >> 5)] = ls * ((qh & 0x8000u) ? -9 : -7);
                }
            }
            for (int64_t m = 0; m < M; ++m) {
                const uint8_t *ablock = a + (size_t)m * arow_size + (size_t)(c0 / 32) * IQ1Q_TYPE_SIZE_Q8_1;
                double acc[4] = {0.0, 0.0, 0.0, 0.0};
                for (int64_t j = 0; j < nc; j += 32, ablock += IQ1Q_TYPE_SIZE_Q8_1) {
                    const double dy = (double)iq1q_fp16_to_fp32(iq1q_ref_u16(ablock + offsetof(iq1q_block_q8_1, d)));
                    const double s = (double)iq1q_fp16_to_fp32(iq1q_ref_u16(ablock + offsetof(iq1q_block_q8_1, s)));
                    const int8_t *q = (const int8_t *)(ablock + offsetof(iq1q_block_q8_1, qs));
                    const int16_t *wj = w16 + j;
                    int32_t i0 = 0, i1 = 0, i2 = 0, i3 = 0, bsum = 0;
                    for (int t = 0; t < 32; ++t) {
                        const int32_t qt = q[t];
                        i0 += (int32_t)wj[t] * qt;
                        i1 += (int32_t)wj[IQ1Q_REF_KC + t] * qt;
                        i2 += (int32_t)wj[2 * IQ1Q_REF_KC + t] * qt;
                        i3 += (int32_t)wj[3 * IQ1Q_REF_KC + t] * qt;
                        bsum += qt;
                    }
                    const int32_t isum[4] = {i0, i1, i2, i3};
                    for (int rr = 0; rr < 4; ++rr) {
                        const int32_t f = fk[rr * NB + (j >> 5)];
                        acc[rr] += dy * (double)(isum[rr] - f * bsum) + s * (double)f;
                    }
                }
                for (int rr = 0; rr < 4; ++rr) /* ws[rr * NB] = d_r */
                    iq1q_ref_put(y + m * ldy + r + rr, 0.125 * (double)ws[rr * NB] * acc[rr], c0 == 0);
            }
        }
    }
}

/* [weight format][activation format - IQ1Q_Q8_0], enum order of iq1q_common.h */
static const iq1q_gemm_fn iq1q_ref_gemm_table[4][4] = {
    {iq1q_ref_gemm_iq1_s_q8_0, iq1q_ref_gemm_iq1_s_q8_1, iq1q_ref_gemm_iq1_s_q8_k,
     iq1q_ref_gemm_iq1_s_q8_k128},
    {iq1q_ref_gemm_iq1_m_q8_0, iq1q_ref_gemm_iq1_m_q8_1, iq1q_ref_gemm_iq1_m_q8_k,
     iq1q_ref_gemm_iq1_m_q8_k128},
    {iq1q_ref_gemm_iq1_s_r4_q8_0, iq1q_ref_gemm_iq1_s_r4_q8_1, iq1q_ref_gemm_iq1_s_r4_q8_k,
     iq1q_ref_gemm_iq1_s_r4_q8_k128},
    {iq1q_ref_gemm_iq1_m_r4_q8_0, iq1q_ref_gemm_iq1_m_r4_q8_1, iq1q_ref_gemm_iq1_m_r4_q8_k,
     iq1q_ref_gemm_iq1_m_r4_q8_k128},
};

#endif /* IQ1Q_REF_GEMM_H */
