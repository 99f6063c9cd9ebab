/* neon.h: the AArch64 NEON kernels, for every (weight, activation) pair.
 *
 * Compiled twice, into two modules with their own flags: iq1q._neon_dotprod
 * (-march=armv8.2-a+dotprod: the lane-indexed sdot) and iq1q._neon (plain
 * ARMv8.0 NEON, e.g. Cortex-A72/A53, where the same step is made of widening
 * multiplies and pairwise adds, exactly). The driver is simd_gemm.h.
 *
 * Weights are read in the tile layout of tiles.h, decoded as the work goes. sdot multiplies signed bytes,
 * so unlike x86's unsigned maddubs it can take each weight's integer value
 * itself: the operand byte is 8u - 8 + s in [-9, 9] (u, s of tiles.h), one
 * sdot sums 4 columns of 4 rows, and per 16 columns (one half chunk) the sum is
 * multiplied by ls. So per activation block and tile row the exact integer
 *   I = sum_halves ls * sum_k (8u - 8 + s)_k q_k
 * is the one x86.h computes in its two parts (docs/spec.md §7.1); no group sums of the
 * activations are needed, and y += (d/8) * d_a * I in float. |I| < 2^23.
 *
 * iq1_s_r4 x q8_1 is the historical kernel (docs/spec.md §7.4, §9.7): the operand is 8u
 * alone, and the correction is the stored fp16 s times ls (s - 8) in float, so
 * an infinite s gives ik_llama.cpp's NaNs before PR #194 on ARM too.
 *
 * Registers: a tile's 8 rows are two int32x4 (rows 0-3, 4-7), so 4 activation
 * rows per pass keep 8 accumulators, 8 operands and 2 ls vectors in 32 registers.
 */
#ifndef IQ1Q_NEON_H
#define IQ1Q_NEON_H

#include <arm_neon.h>

#include "tiles.h"

#define IQ1Q_NEON_INLINE static inline __attribute__((always_inline))

#if defined(__ARM_FEATURE_DOTPROD)
#define IQ1Q_NEON_DOTPROD 1
/* acc[r] += sum_j w[4r + j] * q[4 lane + j] */
#define IQ1Q_NEON_DOT(acc, w, q, lane) vdotq_laneq_s32((acc), (w), (q), (lane))
#else
#define IQ1Q_NEON_DOTPROD 0
/* The same on ARMv8.0. Exact: |w| <= 16 and |q| <= 128, so the products and
 * their pair sums fit int16. q4: the 4 bytes of the lane in every lane. */
IQ1Q_NEON_INLINE int32x4_t iq1q_neon_dot4(int32x4_t acc, int8x16_t w, int8x16_t q4) {
    const int16x8_t lo = vmull_s8(vget_low_s8(w), vget_low_s8(q4));
    const int16x8_t hi = vmull_high_s8(w, q4);
    return vpadalq_s16(acc, vpaddq_s16(lo, hi));
}
#define IQ1Q_NEON_DOT(acc, w, q, lane) \
    iq1q_neon_dot4((acc), (w), vreinterpretq_s8_s32(vdupq_laneq_s32(vreinterpretq_s32_s8(q), (lane))))
#endif

/* ---- weights: the operands of one half chunk (16 columns of the 8 rows) -----
 * t[j][p]: bytes of columns 16h + 4p .. +3 of rows 4j..4j+3 (row 4j + r in 32-bit
 *          lane r): 8u - 8 + s, or for the historical kernel 8u;
 * ls[j]:   int32 ls of rows 4j..4j+3. */
typedef struct {
    int8x16_t t[2][4];
    int32x4_t ls[2];
} iq1q_simd_half;

#define IQ1Q_SIMD_NM 4
#define IQ1Q_SIMD_GROUP_SUMS 0
#define IQ1Q_SIMD_BIASED_ROWS 0 /* never: sdot takes signed operands on both sides */
#define IQ1Q_SIMD_PAIR 0   /* one tile per pass: 4 rows x 2 halves of accumulators fill the registers */
#define IQ1Q_SIMD_READS_GGML 0 /* the driver decodes tiles: NEON has no gather, and tbl tables are 64 bytes */
#include "simd_gemm.h"

/* int32 lanes, all ones where s = -1 for rows 4j..4j+3, group i of half h */
IQ1Q_NEON_INLINE uint32x4_t iq1q_neon_sneg(const uint8_t *tile, const iq1q_tile_layout *L, int64_t c,
                                           int h, int j, int i) {
    /* sneg bit 2r + i of the half's uint16 belongs to row r (tiles.h) */
    static const uint32_t bits[2][4] = {{1u, 4u, 16u, 64u}, {256u, 1024u, 4096u, 16384u}};
    uint16_t sb;
    memcpy(&sb, tile + L->sneg + c * IQ1Q_TILE_SNEG + 2 * h, 2);
    return vtstq_u32(vdupq_n_u32((uint32_t)sb >> i), vld1q_u32(bits[j]));
}

/* ls of rows 4j..4j+3 for half h of chunk c */
IQ1Q_NEON_INLINE int32x4_t iq1q_neon_ls(const uint8_t *tile, const iq1q_tile_layout *L, int64_t c,
                                        int h, int j) {
    const uint16x8_t b = vmovl_u8(vld1_u8(tile + L->ls + c * IQ1Q_TILE_LS));
    const uint32x4_t v = j ? vmovl_high_u16(b) : vmovl_u16(vget_low_u16(b));
    return vreinterpretq_s32_u32(h ? vshrq_n_u32(v, 4) : vandq_u32(v, vdupq_n_u32(15)));
}

IQ1Q_NEON_INLINE void iq1q_neon_operands(const uint8_t *tile, const iq1q_tile_layout *L, int64_t c,
                                         int h, iq1q_simd_half *o, const int HIST) {
    const uint8_t *codes = tile + c * IQ1Q_TILE_CODES + 32 * h;
    const uint8x16_t mask = vdupq_n_u8(3 << 3);
    for (int j = 0; j < 2; ++j) {
        const uint8x16_t raw = vld1q_u8(codes + 16 * j);
        /* 8u for p = 0..3: u sits in bits 2p, 2p + 1 */
        const uint8x16_t u8[4] = {vandq_u8(vshlq_n_u8(raw, 3), mask), vandq_u8(vshlq_n_u8(raw, 1), mask),
                                  vandq_u8(vshrq_n_u8(raw, 1), mask), vandq_u8(vshrq_n_u8(raw, 3), mask)};
        for (int p = 0; p < 4; ++p) {
            int8x16_t t = vreinterpretq_s8_u8(u8[p]);
            if (!HIST) { /* + s - 8: -7, or -9 where the bit of group p / 2 says s = -1 */
                const int8x16_t neg = vreinterpretq_s8_u32(iq1q_neon_sneg(tile, L, c, h, j, p / 2));
                t = vaddq_s8(t, vaddq_s8(vdupq_n_s8(-7), vandq_s8(neg, vdupq_n_s8(-2))));
            }
            o->t[j][p] = t;
        }
        o->ls[j] = iq1q_neon_ls(tile, L, c, h, j);
    }
}

/* The historical correction's integer: ls (s - 8) of group 0 of chunk c, rows 4j..4j+3 */
IQ1Q_NEON_INLINE int32x4_t iq1q_neon_hist_c(const uint8_t *tile, const iq1q_tile_layout *L, int64_t c,
                                            int j) {
    const int32x4_t neg = vreinterpretq_s32_u32(iq1q_neon_sneg(tile, L, c, 0, j, 0));
    const int32x4_t s8 = vaddq_s32(vdupq_n_s32(-7), vandq_s32(neg, vdupq_n_s32(-2)));
    return vmulq_s32(iq1q_neon_ls(tile, L, c, 0, j), s8);
}

/* NM activation rows m..m+NM-1 over chunks [c0, c1) of a tile (see simd_gemm.h) */
IQ1Q_NEON_INLINE void iq1q_neon_rows(const iq1q_simd_half *ops, const iq1q_simd_tile *T,
                                     const iq1q_simd_tile *T2, const iq1q_tile_layout *L, const iq1q_simd_acts *A, int64_t m,
                                     int64_t c0, int64_t c1, float *f, const int NM, const int HIST,
                                     const int FUSED) {
    (void)T2; /* no pairs here */
    const uint8_t *tile = T->tile;
    const int nb = A->f.ablk / IQ1Q_TILE_CHUNK; /* chunks per activation block */
    const float *dtile = (const float *)(tile + L->d);
    /* the quants in pass order (simd_gemm.h): chunk c of row m + i at q + 32 (c NM + i) */
    const int8_t *q = (const int8_t *)A->qp + IQ1Q_TILE_CHUNK * iq1q_simd_slot(m, 0, L->nchunks);
    /* blk counts the activation blocks (a division per block showed in the profile) */
    for (int64_t cb = c0, blk = c0 / nb; cb < c1; cb += nb, ++blk) {
        int32x4_t acc[IQ1Q_SIMD_NM][2];
        for (int i = 0; i < NM; ++i) acc[i][0] = acc[i][1] = vdupq_n_s32(0);
        for (int64_t c = cb; c < cb + nb; ++c) {
            const int8_t *qc = q + IQ1Q_TILE_CHUNK * IQ1Q_SIMD_NM * (size_t)c;
            for (int h = 0; h < 2; ++h) {
                iq1q_simd_half here;
                const iq1q_simd_half *o = ops + 2 * (c - c0) + h;
                if (FUSED) {
                    iq1q_neon_operands(tile, L, c, h, &here, HIST);
                    o = &here;
                }
#pragma GCC unroll 4
                for (int i = 0; i < NM; ++i) {
                    const int8x16_t qv = vld1q_s8(qc + IQ1Q_TILE_CHUNK * i + 16 * h);
                    for (int j = 0; j < 2; ++j) {
                        int32x4_t s = vdupq_n_s32(0);
                        s = IQ1Q_NEON_DOT(s, o->t[j][0], qv, 0);
                        s = IQ1Q_NEON_DOT(s, o->t[j][1], qv, 1);
                        s = IQ1Q_NEON_DOT(s, o->t[j][2], qv, 2);
                        s = IQ1Q_NEON_DOT(s, o->t[j][3], qv, 3);
                        acc[i][j] = vmlaq_s32(acc[i][j], s, o->ls[j]);
                    }
                }
            }
        }
        const float *dw = dtile + (cb / (IQ1Q_TILE_SPAN / IQ1Q_TILE_CHUNK)) * IQ1Q_TILE_ROWS;
        for (int j = 0; j < 2; ++j) {
            const float32x4_t dwj = vld1q_f32(dw + 4 * j);
            const float32x4_t hc = HIST ? vcvtq_f32_s32(iq1q_neon_hist_c(tile, L, cb, j)) : vdupq_n_f32(0);
#pragma GCC unroll 4
            for (int i = 0; i < NM; ++i) {
                /* the float steps of x86.h, in the same order: the same results */
                float32x4_t fi = vfmaq_f32(vld1q_f32(f + 8 * i + 4 * j), vcvtq_f32_s32(acc[i][j]),
                                           vmulq_n_f32(dwj, A->da[(m + i) * A->nblk + blk]));
                if (HIST) fi = vfmaq_f32(fi, hc, vmulq_n_f32(dwj, A->s[(m + i) * A->nblk + blk]));
                vst1q_f32(f + 8 * i + 4 * j, fi);
            }
        }
    }
}

IQ1Q_SIMD_DEFINE_ROWS_N(iq1q_neon_rows)

/* table lookups per group of 8, as the portable decode does them (NEON has no gather) */
static void iq1q_simd_decode(int wfmt, const uint8_t *w, int64_t N, int64_t K, int64_t t, int64_t c0,
                             int64_t c1, const iq1q_tile_layout *L, uint8_t *tile) {
    iq1q_tile_decode_portable(wfmt, w, N, K, t, c0, c1, L, tile);
}

static void iq1q_simd_expand(const iq1q_simd_tile *tile, const iq1q_simd_tile *tile2, const iq1q_tile_layout *L,
                             int64_t c0, int64_t c1, int hist, iq1q_simd_half *ops) {
    (void)tile2;
    for (int64_t c = c0; c < c1; ++c)
        for (int h = 0; h < 2; ++h) {
            if (hist) iq1q_neon_operands(tile->tile, L, c, h, ops + 2 * (c - c0) + h, 1);
            else iq1q_neon_operands(tile->tile, L, c, h, ops + 2 * (c - c0) + h, 0);
        }
}

#endif /* IQ1Q_NEON_H */
