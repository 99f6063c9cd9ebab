/* x86.h: the x86 SIMD kernels, for every (weight, activation) pair.
 *
 * Compiled twice, into two modules with their own flags: iq1q._avx2
 * (-mavx2 -mfma -mf16c) and iq1q._avx512 (adds AVX-512 F/BW/VL/DQ/VNNI). They
 * differ in the int8 dot-product step, vpdpbusd/vpdpwssd with VNNI and
 * vpmaddubsw + vpmaddwd without, and in the register width of the passes: with
 * AVX-512 a pass covers two tiles in 512-bit registers (on Zen 4 a 512-bit
 * vpdpbusd retires at half the rate of a 256-bit one, so the multiplies cost the
 * same, but each broadcast and load serves twice the weight rows).
 *
 * Weights are read in the tile layout of tiles.h, decoded from the ggml bytes
 * as the work goes, so all four weight formats share one kernel. Per activation block (32, 128
 * or 256 columns, scale d_a) and tile row r, the exact integer
 *   I = 8 * sum_k (ls*u)_k q_k + sum_g ls_g (s_g - 8) B_g      (B_g = sum of q over group g of 8)
 * equals sum_k ls (8u - 8 + s) q = 8 * sum_k (w_k / (d/8)) q_k (docs/spec.md §7.1, with u = g + 1 unsigned
 * as the instructions need), and y += (d/8) * d_a * I in float. ls*u <= 30 fits the unsigned
 * byte operand (and 8*ls*u <= 240 for VNNI, which does not saturate); |I| < 2^23 stays exact.
 *
 * iq1_s_r4 x q8_1 is the historical kernel (docs/spec.md §7.4, §9.7): its correction is
 * the stored fp16 s = d_a * B times ls (s - 8) in float, so an infinite s gives the NaNs
 * of ik_llama.cpp before PR #194. No other pair reads s, q8_k's float sum, or any stored bsum.
 *
 * Structure (the driver is simd_gemm.h): one 32-bit lane per weight row of a
 * tile, so each activation quad is one broadcast and no horizontal sums are
 * needed. Up to 8 activation rows run together, over operands made in registers
 * (the GEMV path) or expanded once (the GEMM path): with VNNI with 8*ls folded
 * into the bytes (but a lone row, see DP in iq1q_x86_rows); on AVX2, from 5 rows,
 * as signed bytes 8u - 8 + s against the quants biased to unsigned, which saves
 * each activation row the correction's multiply and a register
 * (iq1q_x86_biased_operands). With AVX-512, two tiles run side by side in 512-bit
 * registers (iq1q_x86_pair_rows): each broadcast then feeds 16 weight rows
 * (measured on Zen 4 against one tile in 256-bit registers: M = 8 1.47 -> 1.09 ms,
 * M = 32 4.8 -> 3.8, M = 256 42 -> 32, 4096 x 4096 hot). Its 8 rows are 8 chains of
 * vpdpbusd (latency 4), which keep the two pipes ~85 % busy (Zen 5, independent
 * chains alone: 1.69 per cycle, 1.94 from 12 chains on); 16 rows per pass, or two
 * chains per row, made gcc 12 spill accumulators and were no faster.
 */
#ifndef IQ1Q_X86_H
#define IQ1Q_X86_H

#include <immintrin.h>

#include "tiles.h"
#include "x86_ggml.h"

#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
#define IQ1Q_X86_VNNI 1
#define IQ1Q_X86_NM 8 /* activation rows per pass: 32 ymm registers */
#define IQ1Q_X86_DPBUSD _mm256_dpbusd_epi32
#define IQ1Q_X86_DPWSSD _mm256_dpwssd_epi32
#elif defined(IQ1Q_X86_EMULATE_VNNI)
/* The VNNI code path on an AVX2 machine, with the two instructions emulated
 * exactly (tests/c/test_x86_gemm.c): how its logic is tested where no CPU has them. */
#define IQ1Q_X86_VNNI 1
#define IQ1Q_X86_NM 8
static inline __m256i IQ1Q_X86_DPBUSD(__m256i acc, __m256i u8, __m256i s8) {
    const __m256i lo = _mm256_set1_epi16(0xff);
    const __m256i even = _mm256_madd_epi16(_mm256_and_si256(u8, lo),
                                           _mm256_srai_epi16(_mm256_slli_epi16(s8, 8), 8));
    const __m256i odd = _mm256_madd_epi16(_mm256_srli_epi16(u8, 8), _mm256_srai_epi16(s8, 8));
    return _mm256_add_epi32(acc, _mm256_add_epi32(even, odd));
}
static inline __m256i IQ1Q_X86_DPWSSD(__m256i acc, __m256i a, __m256i b) {
    return _mm256_add_epi32(acc, _mm256_madd_epi16(a, b));
}
#else
#define IQ1Q_X86_VNNI 0
/* 8 rows per pass with 16 ymm registers too: their accumulators live in L1, which costs
 * less than making the fused operands twice or loading the expanded ones twice (C, hot,
 * 4096 x 4096 s_r4 against 4 rows per pass: M = 8 2.0 -> 1.8 ms, M = 32 6.0 -> 5.8,
 * M = 256 48.8 -> 45.9) */
#define IQ1Q_X86_NM 8
#endif

#define IQ1Q_X86_INLINE static inline __attribute__((always_inline))

/* With AVX-512 the expanded path runs a pair of tiles per pass in 512-bit registers (tile 1
 * in lanes 0-7, tile 2 in 8-15): one broadcast of activations feeds 16 weight rows, which
 * halves the loads per multiply. (The emulated VNNI of the tests has no 512-bit registers.) */
#if IQ1Q_X86_VNNI && defined(__AVX512F__)
#define IQ1Q_X86_PAIR 1
#else
#define IQ1Q_X86_PAIR 0
#endif

/* ---- weights: the operands of one half chunk (16 columns of the 8 rows) -----
 * t[p]: the bytes of columns 16h + 4p .. +3, row r in 32-bit lane r: u, or with FOLD
 *       ls*u (VNNI: 8*ls*u, 8*15*2 = 240 still fits the unsigned byte);
 * ls:   int16 8*ls of row r in lanes 2r, 2r+1, applied by vpmaddwd (with FOLD: 8);
 * c:    int16 ls * (s - 8) of row r, group 2h + i in lane 2r + i. */
typedef struct {
    __m256i t[4], ls, c;
} iq1q_x86_half;

#if IQ1Q_X86_PAIR
typedef struct {
    __m512i t[4], c; /* a pair's folded t and c, as in iq1q_x86_half (ls is 8) */
} iq1q_simd_half;
#else
typedef iq1q_x86_half iq1q_simd_half;
#endif

#define IQ1Q_SIMD_NM IQ1Q_X86_NM
#define IQ1Q_SIMD_GROUP_SUMS 1 /* the correction sum_g ls_g (s_g - 8) B_g */
/* AVX2 from 5 rows: see iq1q_x86_biased_operands. Below that the operands of the plain
 * kernel cost fewer steps than the rows' corrections they would save. */
#define IQ1Q_SIMD_BIASED_ROWS (IQ1Q_X86_VNNI ? 0 : 5)
#define IQ1Q_SIMD_PAIR IQ1Q_X86_PAIR
#define IQ1Q_SIMD_READS_GGML 1 /* grid lookups where the operands are made (x86_ggml.h) */
#include "simd_gemm.h"

/* int16 ls of row r, half h of chunk c, in lanes 2r and 2r + 1 */
IQ1Q_X86_INLINE __m256i iq1q_x86_ls16(const uint8_t *tile, const iq1q_tile_layout *L, int64_t c, int h) {
    const __m256i nib =
        _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(tile + L->ls + c * IQ1Q_TILE_LS)));
    const __m256i ls32 = h ? _mm256_srli_epi32(nib, 4) : _mm256_and_si256(nib, _mm256_set1_epi32(15));
    return _mm256_or_si256(ls32, _mm256_slli_epi32(ls32, 16));
}

/* The operands of a half from its levels u[p] (columns 16h + 4p .. +3, row r in lane r),
 * the rows' int16 ls (lanes 2r, 2r + 1) and signs (neg16: -1 where s = -1, group 2h of
 * row r in lane 2r, 2h + 1 in 2r + 1). DP: for vpdpbusd (VNNI only), which takes 8*ls
 * folded into the bytes; else for vpmaddubsw, with ls folded (FOLD) or applied by vpmaddwd */
IQ1Q_X86_INLINE void iq1q_x86_operands_u(const __m256i u[4], __m256i ls16, __m256i neg16, iq1q_x86_half *o,
                                         const int FOLD, const int DP) {
    const __m256i ls8 = _mm256_slli_epi16(ls16, 3);
    /* folding costs a multiply per operand, paid once for many activation rows; without it
     * vpmaddwd applies ls per row, and the row's operands need one more register */
    const __m256i mul = DP ? ls8 : ls16;
    o->ls = FOLD && !DP ? _mm256_set1_epi16(8) : ls8;
    /* u <= 2 per byte, so a 16-bit multiply scales both bytes without carries */
    for (int p = 0; p < 4; ++p) o->t[p] = FOLD || DP ? _mm256_mullo_epi16(u[p], mul) : u[p];
    o->c = _mm256_mullo_epi16(ls16, _mm256_add_epi16(_mm256_set1_epi16(-7), _mm256_add_epi16(neg16, neg16)));
}

/* AVX2's expanded operands, for many activation rows: signed bytes w' = 8u - 8 + s (-9..9)
 * against the quants biased to q + 128 (unsigned, in A->qp), so that no activation row pays
 * the per-group correction: sum ls w' (q + 128) - 128 sum ls w' = sum ls w' q, the same
 * exact integer I as the fused path's, so the results are bitwise the same.
 * t[p]: w' of columns 16h + 4p .. +3, row r in lane r; ls: int16 ls of row r in lanes 2r,
 * 2r + 1 (not folded: ls w' may exceed a byte); c: sum over the half of ls w' per row, int32
 * in lane r (the bias is -128 times its sum over a block: it depends on the weights alone).
 * Each step is counted: this runs once per half chunk for only M rows, and at M = 8 it was
 * a third of the time. */
IQ1Q_X86_INLINE void iq1q_x86_biased_u(const __m256i u[4], __m256i ls16, __m256i neg16, iq1q_x86_half *o) {
    o->ls = ls16;
    /* per row lane r: -7, or -9 where s = -1 (group 2h: the lane's low int16, 2h + 1: high) */
    const __m256i n0 = _mm256_srai_epi32(_mm256_slli_epi32(neg16, 16), 31), n1 = _mm256_srai_epi32(neg16, 31);
    const __m256i k0 = _mm256_add_epi8(_mm256_set1_epi8(-7), _mm256_add_epi8(n0, n0));
    const __m256i k1 = _mm256_add_epi8(_mm256_set1_epi8(-7), _mm256_add_epi8(n1, n1));
    /* 8u <= 16: the 16-bit shift carries nothing across bytes */
    o->t[0] = _mm256_add_epi8(_mm256_slli_epi16(u[0], 3), k0);
    o->t[1] = _mm256_add_epi8(_mm256_slli_epi16(u[1], 3), k0);
    o->t[2] = _mm256_add_epi8(_mm256_slli_epi16(u[2], 3), k1);
    o->t[3] = _mm256_add_epi8(_mm256_slli_epi16(u[3], 3), k1);
    /* |w'| <= 9, so the sum of four stays inside a signed byte */
    const __m256i sum8 = _mm256_add_epi8(_mm256_add_epi8(o->t[0], o->t[1]), _mm256_add_epi8(o->t[2], o->t[3]));
    o->c = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), sum8), o->ls);
}

/* The levels, ls and signs of half h of chunk c of a decoded tile (a prepared tensor's) */
IQ1Q_X86_INLINE void iq1q_x86_tile_half(const uint8_t *tile, const iq1q_tile_layout *L, int64_t c, int h,
                                        __m256i u[4], __m256i *ls16, __m256i *neg16) {
    const __m256i bit = _mm256_setr_epi16(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096,
                                          8192, 16384, (short)32768);
    const __m256i raw = _mm256_loadu_si256((const __m256i *)(tile + c * IQ1Q_TILE_CODES + 32 * h));
    for (int p = 0; p < 4; ++p) u[p] = _mm256_and_si256(_mm256_srli_epi16(raw, 2 * p), _mm256_set1_epi8(3));
    *ls16 = iq1q_x86_ls16(tile, L, c, h);
    uint16_t sb;
    memcpy(&sb, tile + L->sneg + c * IQ1Q_TILE_SNEG + 2 * h, 2);
    *neg16 = _mm256_cmpeq_epi16(_mm256_and_si256(_mm256_set1_epi16((short)sb), bit), bit);
}

/* Half h of chunk c of a pass's 8 rows: from their decoded tile, or from the ggml bytes,
 * whose chunk c g holds (iq1q_x86_ggml_chunk) */
IQ1Q_X86_INLINE void iq1q_x86_half_ops(const iq1q_simd_tile *T, const iq1q_tile_layout *L, const iq1q_x86_ggml *g,
                                       int64_t c, int h, iq1q_x86_half *o, const int FOLD, const int DP,
                                       const int BIASED) {
    __m256i u[4], ls16, neg16;
    if (T->tile) {
        iq1q_x86_tile_half(T->tile, L, c, h, u, &ls16, &neg16);
    } else {
        iq1q_x86_ggml_levels(g->ix[2 * h], &u[0], &u[1]);
        iq1q_x86_ggml_levels(g->ix[2 * h + 1], &u[2], &u[3]);
        ls16 = g->ls16[h];
        neg16 = g->neg16[h];
    }
    if (BIASED) iq1q_x86_biased_u(u, ls16, neg16, o);
    else iq1q_x86_operands_u(u, ls16, neg16, o, FOLD, DP);
}

/* what chunk c of the ggml bytes holds for the operands (nothing to do for a decoded tile) */
IQ1Q_X86_INLINE void iq1q_x86_chunk_begin(const iq1q_simd_tile *T, int64_t c, iq1q_x86_ggml *g) {
    if (!T->tile) iq1q_x86_ggml_chunk(T->wfmt, T->w, T->offs, c, g);
}

/* d / 8 of the 8 rows for span s */
IQ1Q_X86_INLINE __m256 iq1q_x86_d(const iq1q_simd_tile *T, const iq1q_tile_layout *L, int64_t s) {
    if (T->tile) return _mm256_loadu_ps((const float *)(T->tile + L->d) + s * IQ1Q_TILE_ROWS);
    return iq1q_x86_ggml_d(T->wfmt, T->w, T->offs, s);
}

/* ---- the integer steps ------------------------------------------------------ */

static inline __m256i iq1q_x86_bcast32(const void *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

/* acc (8 rows' int32 lanes) += 8 * ls * sum u q over the half; q: its 16 activation bytes.
 * The operands come by value: kept in registers across the rows of a pass. DP as in
 * iq1q_x86_operands. */
IQ1Q_X86_INLINE __m256i iq1q_x86_half_dot(__m256i acc, const __m256i t0, const __m256i t1,
                                          const __m256i t2, const __m256i t3, const __m256i ls,
                                          const uint8_t *q, const int DP) {
#if IQ1Q_X86_VNNI
    if (DP) {
        acc = IQ1Q_X86_DPBUSD(acc, t0, iq1q_x86_bcast32(q));
        acc = IQ1Q_X86_DPBUSD(acc, t1, iq1q_x86_bcast32(q + 4));
        acc = IQ1Q_X86_DPBUSD(acc, t2, iq1q_x86_bcast32(q + 8));
        return IQ1Q_X86_DPBUSD(acc, t3, iq1q_x86_bcast32(q + 12));
    }
#else
    (void)DP;
#endif
    /* maddubs pairs are <= 2*30*127 (ls folded in), their sum over the half <= 30480: int16
     * is exact */
    __m256i s = _mm256_maddubs_epi16(t0, iq1q_x86_bcast32(q));
    s = _mm256_add_epi16(s, _mm256_maddubs_epi16(t1, iq1q_x86_bcast32(q + 4)));
    s = _mm256_add_epi16(s, _mm256_maddubs_epi16(t2, iq1q_x86_bcast32(q + 8)));
    s = _mm256_add_epi16(s, _mm256_maddubs_epi16(t3, iq1q_x86_bcast32(q + 12)));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(s, ls));
}

/* acc (8 rows' int32 lanes) += sum over the half of ls w' (q + 128), with the biased operands;
 * qb: the half's 16 biased activation bytes. maddubs pairs are <= 2 * 255 * 9, their sum
 * over the half <= 18360: int16 is exact. */
IQ1Q_X86_INLINE __m256i iq1q_x86_biased_dot(__m256i acc, const __m256i t0, const __m256i t1,
                                            const __m256i t2, const __m256i t3, const __m256i ls,
                                            const uint8_t *qb) {
    __m256i s = _mm256_maddubs_epi16(iq1q_x86_bcast32(qb), t0);
    s = _mm256_add_epi16(s, _mm256_maddubs_epi16(iq1q_x86_bcast32(qb + 4), t1));
    s = _mm256_add_epi16(s, _mm256_maddubs_epi16(iq1q_x86_bcast32(qb + 8), t2));
    s = _mm256_add_epi16(s, _mm256_maddubs_epi16(iq1q_x86_bcast32(qb + 12), t3));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(s, ls));
}

/* acc += sum over the half's two groups of ls (s - 8) B; b: the two int16 group sums */
IQ1Q_X86_INLINE __m256i iq1q_x86_half_corr(__m256i acc, const __m256i c, const int16_t *b) {
#if IQ1Q_X86_VNNI
    return IQ1Q_X86_DPWSSD(acc, c, iq1q_x86_bcast32(b));
#else
    return _mm256_add_epi32(acc, _mm256_madd_epi16(iq1q_x86_bcast32(b), c));
#endif
}

/* NM activation rows m..m+NM-1 over chunks [c0, c1) (whole activation blocks) of a tile;
 * f holds their float accumulators (8 rows each). The half-chunk operands come from ops
 * (expanded once for many activation rows), or, FUSED, are made on the spot (few rows). */
IQ1Q_X86_INLINE void iq1q_x86_rows(const iq1q_x86_half *ops, const iq1q_simd_tile *T,
                                   const iq1q_tile_layout *L, const iq1q_simd_acts *A, int64_t m,
                                   int64_t c0, int64_t c1, float *f, const int NM, const int HIST,
                                   const int FUSED) {
    /* AVX2's biased operands: expanded by iq1q_simd_expand, or made here for 5 to 8 rows */
    const int BIASED = IQ1Q_SIMD_BIASED_ROWS && !HIST && (!FUSED || NM >= IQ1Q_SIMD_BIASED_ROWS);
    /* vpdpbusd takes 4 cycles: one or two rows alone would wait on their own sums, so
     * each row keeps two, one per half chunk */
    /* one row with VNNI still takes vpmaddubsw's operands: folding ls costs a multiply per
     * operand, which vpdpbusd does not win back for a single row (Zen 5, hot, 4096 x 4096
     * GEMV: iq1_s 0.289 -> 0.266 ms, iq1_s_r4 0.294 -> 0.278) */
    const int DP = IQ1Q_X86_VNNI && !(FUSED && NM == 1);
    const int SPLIT = DP && NM <= 2;
    const int nb = A->f.ablk / IQ1Q_TILE_CHUNK; /* chunks per activation block */
    const int per_span = IQ1Q_TILE_SPAN / IQ1Q_TILE_CHUNK;
    __m256 dw = _mm256_setzero_ps();
    iq1q_x86_ggml g[2];
    if (FUSED) iq1q_x86_chunk_begin(T, c0, &g[0]);
    const size_t first = iq1q_simd_slot(m, 0, L->nchunks), step = IQ1Q_SIMD_NM; /* slots per chunk */
    const uint8_t *q = A->qp + IQ1Q_TILE_CHUNK * first;
    const int16_t *b8 = A->b8 ? A->b8 + 4 * first : NULL;
    /* blk counts the activation blocks (a division per block showed in the profile) */
    for (int64_t cb = c0, blk = c0 / nb; cb < c1; cb += nb, ++blk) {
        __m256i acc[2][IQ1Q_X86_NM], cfirst = _mm256_setzero_si256(), bias = _mm256_setzero_si256();
        /* the bias is -128 sum ls w' over the block: summed from the expanded operands, or as
         * the fused ones are made */
        if (BIASED && !FUSED)
            for (int64_t c = cb; c < cb + nb; ++c)
                bias = _mm256_add_epi32(bias, _mm256_add_epi32(ops[2 * (c - c0)].c, ops[2 * (c - c0) + 1].c));
        for (int i = 0; i < NM; ++i) acc[0][i] = acc[1][i] = _mm256_setzero_si256();
        for (int64_t c = cb; c < cb + nb; ++c) {
            const uint8_t *qc = q + IQ1Q_TILE_CHUNK * step * (size_t)c; /* row i at + 32 i */
            const int16_t *bc = b8 ? b8 + 4 * step * (size_t)c : NULL;
            /* the next chunk's indices are stored a chunk ahead of their lookups */
            if (FUSED && c + 1 < c1) iq1q_x86_chunk_begin(T, c + 1, &g[(c + 1 - c0) & 1]);
            for (int h = 0; h < 2; ++h) {
                iq1q_x86_half here;
                const iq1q_x86_half *o = ops + 2 * (c - c0) + h;
                if (FUSED) {
                    iq1q_x86_half_ops(T, L, &g[(c - c0) & 1], c, h, &here, 0, DP, BIASED);
                    if (BIASED) bias = _mm256_add_epi32(bias, here.c);
                    o = &here;
                }
                if (HIST && c == cb && h == 0) cfirst = o->c;
                const __m256i t0 = o->t[0], t1 = o->t[1], t2 = o->t[2], t3 = o->t[3];
                /* expanded operands have ls folded in: a constant here, one register fewer */
                const __m256i ls = FUSED || BIASED ? o->ls : _mm256_set1_epi16(8), cv = o->c;
                __m256i *a = acc[SPLIT ? h : 0];
#pragma GCC unroll 8
                for (int i = 0; i < NM; ++i) {
                    const uint8_t *qi = qc + IQ1Q_TILE_CHUNK * i + 16 * h;
                    if (BIASED) {
                        a[i] = iq1q_x86_biased_dot(a[i], t0, t1, t2, t3, ls, qi);
                    } else {
                        a[i] = iq1q_x86_half_dot(a[i], t0, t1, t2, t3, ls, qi, DP);
                        if (!HIST) a[i] = iq1q_x86_half_corr(a[i], cv, bc + 4 * i + 2 * h);
                    }
                }
            }
        }
        if (BIASED) bias = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(bias, 7));
        /* the float accumulators live in memory (L1): registers are for the integer steps */
        if (cb == c0 || cb % per_span == 0) dw = iq1q_x86_d(T, L, cb / per_span);
#pragma GCC unroll 8
        for (int i = 0; i < NM; ++i) {
            const __m256i sum = _mm256_add_epi32(acc[0][i], acc[1][i]);
            __m256 fi = _mm256_fmadd_ps(_mm256_cvtepi32_ps(BIASED ? _mm256_add_epi32(sum, bias) : sum),
                                        _mm256_mul_ps(dw, _mm256_set1_ps(A->da[(m + i) * A->nblk + blk])),
                                        _mm256_loadu_ps(f + 8 * i));
            if (HIST) { /* historical: + s * ls (s - 8), with ls (s - 8) of group 0 of the block */
                const __m256 fk = _mm256_cvtepi32_ps(_mm256_srai_epi32(_mm256_slli_epi32(cfirst, 16), 16));
                fi = _mm256_fmadd_ps(fk, _mm256_mul_ps(dw, _mm256_set1_ps(A->s[(m + i) * A->nblk + blk])), fi);
            }
            _mm256_storeu_ps(f + 8 * i, fi);
        }
    }
}

#if IQ1Q_X86_PAIR
static inline __m512i iq1q_x86_bcast32x16(const void *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

/* A pair's operands: both tiles' folded operands side by side. The historical kernel
 * reads the same ones, and of c only its first group. */
IQ1Q_X86_INLINE void iq1q_x86_pair_operands(const iq1q_simd_tile *T, const iq1q_simd_tile *T2,
                                            const iq1q_tile_layout *L, const iq1q_x86_ggml *g,
                                            const iq1q_x86_ggml *g2, int64_t c, int h, iq1q_simd_half *o) {
    iq1q_x86_half a, b;
    iq1q_x86_half_ops(T, L, g, c, h, &a, 1, 1, 0);
    iq1q_x86_half_ops(T2, L, g2, c, h, &b, 1, 1, 0);
    for (int p = 0; p < 4; ++p) o->t[p] = _mm512_inserti64x4(_mm512_castsi256_si512(a.t[p]), b.t[p], 1);
    o->c = _mm512_inserti64x4(_mm512_castsi256_si512(a.c), b.c, 1);
}

/* iq1q_x86_rows over a pair of tiles, both tiles' 16 rows in the lanes of 512-bit
 * registers: the same integers and the same float steps per lane. */
IQ1Q_X86_INLINE void iq1q_x86_pair_rows(const iq1q_simd_half *ops, const iq1q_simd_tile *T,
                                        const iq1q_simd_tile *T2, const iq1q_tile_layout *L,
                                        const iq1q_simd_acts *A, int64_t m, int64_t c0, int64_t c1,
                                        float *f, const int NM, const int HIST, const int FUSED) {
    const int SPLIT = NM <= 2; /* as in iq1q_x86_rows */
    const int nb = A->f.ablk / IQ1Q_TILE_CHUNK, per_span = IQ1Q_TILE_SPAN / IQ1Q_TILE_CHUNK;
    __m512 dw = _mm512_setzero_ps();
    iq1q_x86_ggml g[2], g2[2];
    if (FUSED) {
        iq1q_x86_chunk_begin(T, c0, &g[0]);
        iq1q_x86_chunk_begin(T2, c0, &g2[0]);
    }
    const size_t first = iq1q_simd_slot(m, 0, L->nchunks), step = IQ1Q_SIMD_NM;
    const uint8_t *q = A->qp + IQ1Q_TILE_CHUNK * first;
    const int16_t *b8 = A->b8 ? A->b8 + 4 * first : NULL;
    /* blk counts the activation blocks (a division per block showed in the profile) */
    for (int64_t cb = c0, blk = c0 / nb; cb < c1; cb += nb, ++blk) {
        __m512i acc[2][IQ1Q_X86_NM], cfirst = _mm512_setzero_si512();
        for (int i = 0; i < NM; ++i) acc[0][i] = acc[1][i] = _mm512_setzero_si512();
        for (int64_t c = cb; c < cb + nb; ++c) {
            const uint8_t *qc = q + IQ1Q_TILE_CHUNK * step * (size_t)c;
            const int16_t *bc = b8 ? b8 + 4 * step * (size_t)c : NULL;
            if (FUSED && c + 1 < c1) { /* a chunk ahead, as in iq1q_x86_rows */
                iq1q_x86_chunk_begin(T, c + 1, &g[(c + 1 - c0) & 1]);
                iq1q_x86_chunk_begin(T2, c + 1, &g2[(c + 1 - c0) & 1]);
            }
            for (int h = 0; h < 2; ++h) {
                iq1q_simd_half here;
                const iq1q_simd_half *o = ops + 2 * (c - c0) + h;
                if (FUSED) {
                    iq1q_x86_pair_operands(T, T2, L, &g[(c - c0) & 1], &g2[(c - c0) & 1], c, h, &here);
                    o = &here;
                }
                if (HIST && c == cb && h == 0) cfirst = o->c;
                const __m512i t0 = o->t[0], t1 = o->t[1], t2 = o->t[2], t3 = o->t[3], cv = o->c;
                __m512i *a = acc[SPLIT ? h : 0];
#pragma GCC unroll 8
                for (int i = 0; i < NM; ++i) {
                    const uint8_t *qi = qc + IQ1Q_TILE_CHUNK * i + 16 * h;
                    a[i] = _mm512_dpbusd_epi32(a[i], t0, iq1q_x86_bcast32x16(qi));
                    a[i] = _mm512_dpbusd_epi32(a[i], t1, iq1q_x86_bcast32x16(qi + 4));
                    a[i] = _mm512_dpbusd_epi32(a[i], t2, iq1q_x86_bcast32x16(qi + 8));
                    a[i] = _mm512_dpbusd_epi32(a[i], t3, iq1q_x86_bcast32x16(qi + 12));
                    if (!HIST) a[i] = _mm512_dpwssd_epi32(a[i], cv, iq1q_x86_bcast32x16(bc + 4 * i + 2 * h));
                }
            }
        }
        if (cb == c0 || cb % per_span == 0)
            dw = _mm512_insertf32x8(_mm512_castps256_ps512(iq1q_x86_d(T, L, cb / per_span)),
                                    iq1q_x86_d(T2, L, cb / per_span), 1);
#pragma GCC unroll 8
        for (int i = 0; i < NM; ++i) {
            __m512 fi = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(acc[0][i], acc[1][i])),
                                        _mm512_mul_ps(dw, _mm512_set1_ps(A->da[(m + i) * A->nblk + blk])),
                                        _mm512_loadu_ps(f + 16 * i));
            if (HIST) {
                const __m512 fk = _mm512_cvtepi32_ps(_mm512_srai_epi32(_mm512_slli_epi32(cfirst, 16), 16));
                fi = _mm512_fmadd_ps(fk, _mm512_mul_ps(dw, _mm512_set1_ps(A->s[(m + i) * A->nblk + blk])), fi);
            }
            _mm512_storeu_ps(f + 16 * i, fi);
        }
    }
}

#endif

#if IQ1Q_X86_VNNI && defined(__AVX512F__)
#define IQ1Q_X86_GGML_GEMV 1
/* The GEMV path over the ggml bytes (AVX-512, at most IQ1Q_X86_NM activation rows): the
 * levels of one group of 8 columns of the 8 rows are one 512-bit register as the lookups
 * give them, row r in 64-bit lane r, so no shuffle moves them to a lane per row; scaled
 * by 8 ls, vpdpbusd takes them against the group's 8 activation bytes broadcast to every
 * lane and sums 4 columns in each 32-bit half; the two halves of a row are added once
 * per activation block. The same exact integer I as iq1q_x86_rows (its correction too),
 * then the same float steps: the same results. Hot 4096 x 4096 iq1_s_r4 GEMV, one thread,
 * Zen 4: ~1.4 ms through iq1q_x86_rows' operands made from the same lookups, ~1.0 ms here
 * (with the accumulators indexed by a constant: a chain index that varied per chunk put
 * them in memory, 1.3 ms). f: the rows' float accumulators, fw floats apart. */
IQ1Q_X86_INLINE void iq1q_x86_ggml_rows(const iq1q_simd_tile *T, const iq1q_tile_layout *L,
                                        const iq1q_simd_acts *A, int64_t m, int64_t c0, int64_t c1, float *f,
                                        const int fw, const int NM, const int HIST) {
    /* vpdpbusd takes 4 cycles: one or two rows keep 4 or 2 chains, over the groups */
    const int CH = NM == 1 ? 4 : NM == 2 ? 2 : 1;
    const int nb = A->f.ablk / IQ1Q_TILE_CHUNK, per_span = IQ1Q_TILE_SPAN / IQ1Q_TILE_CHUNK;
    const size_t first = iq1q_simd_slot(m, 0, L->nchunks), step = IQ1Q_SIMD_NM;
    const uint8_t *q = A->qp + IQ1Q_TILE_CHUNK * first;
    const int16_t *b8 = A->b8 ? A->b8 + 4 * first : NULL;
    __m256 dw = _mm256_setzero_ps();
    iq1q_x86_ggml g[2];
    iq1q_x86_chunk_begin(T, c0, &g[0]);
    for (int64_t cb = c0, blk = c0 / nb; cb < c1; cb += nb, ++blk) {
        __m512i acc[4][IQ1Q_X86_NM];
        __m256i corr[IQ1Q_X86_NM], cfirst = _mm256_setzero_si256();
        for (int i = 0; i < NM; ++i) {
            for (int k = 0; k < CH; ++k) acc[k][i] = _mm512_setzero_si512();
            corr[i] = _mm256_setzero_si256();
        }
        for (int64_t c = cb; c < cb + nb; ++c) {
            const uint8_t *qc = q + IQ1Q_TILE_CHUNK * step * (size_t)c; /* row i at + 32 i */
            const int16_t *bc = b8 ? b8 + 4 * step * (size_t)c : NULL;
            /* the next chunk's indices a chunk ahead, as in iq1q_x86_rows */
            if (c + 1 < c1) iq1q_x86_chunk_begin(T, c + 1, &g[(c + 1 - c0) & 1]);
            const iq1q_x86_ggml *gc = &g[(c - c0) & 1];
#pragma GCC unroll 2
            for (int h = 0; h < 2; ++h) {
                /* 8 ls of row r in every int16 of lane r */
                const __m512i l2 = _mm512_cvtepu32_epi64(gc->ls16[h]);
                const __m512i ls8 = _mm512_slli_epi16(_mm512_or_si512(l2, _mm512_slli_epi64(l2, 32)), 3);
                const __m256i cv = _mm256_mullo_epi16(
                    gc->ls16[h], _mm256_add_epi16(_mm256_set1_epi16(-7), _mm256_add_epi16(gc->neg16[h], gc->neg16[h])));
                if (HIST && c == cb && h == 0) cfirst = cv;
#pragma GCC unroll 2
                for (int j = 0; j < 2; ++j) {
                    const __m512i lv = iq1q_x86_ggml_levels8(gc->ix[2 * h + j]);
                    /* 8 ls u <= 240 fits the unsigned byte; u <= 2 per byte, so the 16-bit
                     * multiply carries nothing across bytes */
                    const __m512i t = _mm512_mullo_epi16(lv, ls8);
                    const int k = (2 * h + j) % CH; /* a constant: the accumulators stay in registers */
#pragma GCC unroll 8
                    for (int i = 0; i < NM; ++i) {
                        int64_t qv;
                        memcpy(&qv, qc + IQ1Q_TILE_CHUNK * i + 8 * (2 * h + j), 8);
                        acc[k][i] = _mm512_dpbusd_epi32(acc[k][i], t, _mm512_set1_epi64(qv));
                    }
                }
                if (!HIST)
#pragma GCC unroll 8
                    for (int i = 0; i < NM; ++i) corr[i] = IQ1Q_X86_DPWSSD(corr[i], cv, iq1q_x86_bcast32(bc + 4 * i + 2 * h));
            }
        }
        if (cb == c0 || cb % per_span == 0) dw = iq1q_x86_d(T, L, cb / per_span);
#pragma GCC unroll 8
        for (int i = 0; i < NM; ++i) {
            __m512i s = acc[0][i];
            for (int k = 1; k < CH; ++k) s = _mm512_add_epi32(s, acc[k][i]);
            /* the two halves of row r's lane, as iq1q_x86_rows has them in lane r */
            const __m256i sum = _mm256_add_epi32(_mm512_cvtepi64_epi32(_mm512_add_epi64(s, _mm512_srli_epi64(s, 32))), corr[i]);
            __m256 fi = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), _mm256_mul_ps(dw, _mm256_set1_ps(A->da[(m + i) * A->nblk + blk])),
                                        _mm256_loadu_ps(f + fw * i));
            if (HIST) { /* as in iq1q_x86_rows */
                const __m256 fk = _mm256_cvtepi32_ps(_mm256_srai_epi32(_mm256_slli_epi32(cfirst, 16), 16));
                fi = _mm256_fmadd_ps(fk, _mm256_mul_ps(dw, _mm256_set1_ps(A->s[(m + i) * A->nblk + blk])), fi);
            }
            _mm256_storeu_ps(f + fw * i, fi);
        }
    }
}
#else
#define IQ1Q_X86_GGML_GEMV 0
#endif

/* A pass: over a pair of tiles, or one (tile2 NULL: without pairs, or for one or two
 * rows, which always run fused). */
IQ1Q_X86_INLINE void iq1q_x86_pass(const iq1q_simd_half *ops, const iq1q_simd_tile *tile,
                                   const iq1q_simd_tile *tile2, const iq1q_tile_layout *L,
                                   const iq1q_simd_acts *A, int64_t m, int64_t c0, int64_t c1, float *f,
                                   const int NM, const int HIST, const int FUSED) {
#if IQ1Q_X86_GGML_GEMV
    if (FUSED && !tile->tile) { /* the ggml bytes: one tile at a time, a pair's second beside */
        iq1q_x86_ggml_rows(tile, L, A, m, c0, c1, f, tile2 ? 16 : 8, NM, HIST);
        if (tile2) iq1q_x86_ggml_rows(tile2, L, A, m, c0, c1, f + 8, 16, NM, HIST);
        return;
    }
#endif
#if IQ1Q_X86_PAIR
    if (FUSED && NM <= 2 && !tile2) {
        iq1q_x86_rows(NULL, tile, L, A, m, c0, c1, f, NM, HIST, 1);
        return;
    }
    iq1q_x86_pair_rows(ops, tile, tile2, L, A, m, c0, c1, f, NM, HIST, FUSED);
#else
    (void)tile2;
    iq1q_x86_rows(ops, tile, L, A, m, c0, c1, f, NM, HIST, FUSED);
#endif
}

IQ1Q_SIMD_DEFINE_ROWS_N(iq1q_x86_pass)

static void iq1q_simd_expand(const iq1q_simd_tile *tile, const iq1q_simd_tile *tile2, const iq1q_tile_layout *L,
                             int64_t c0, int64_t c1, int hist, iq1q_simd_half *ops) {
    /* each chunk's indices a chunk ahead, as in iq1q_x86_rows */
    iq1q_x86_ggml g[2];
    iq1q_x86_chunk_begin(tile, c0, &g[0]);
#if IQ1Q_X86_PAIR
    (void)hist;
    iq1q_x86_ggml g2[2];
    iq1q_x86_chunk_begin(tile2, c0, &g2[0]);
#else
    (void)tile2;
    /* the historical kernel reads the folded operands and ignores their c */
    const int biased = IQ1Q_SIMD_BIASED_ROWS && !hist;
#endif
    for (int64_t c = c0; c < c1; ++c) {
        const int k = (int)((c - c0) & 1);
        iq1q_simd_half *o = ops + 2 * (c - c0);
        if (c + 1 < c1) iq1q_x86_chunk_begin(tile, c + 1, &g[k ^ 1]);
#if IQ1Q_X86_PAIR
        if (c + 1 < c1) iq1q_x86_chunk_begin(tile2, c + 1, &g2[k ^ 1]);
        for (int h = 0; h < 2; ++h) iq1q_x86_pair_operands(tile, tile2, L, &g[k], &g2[k], c, h, o + h);
#else
        for (int h = 0; h < 2; ++h) {
            if (biased) iq1q_x86_half_ops(tile, L, &g[k], c, h, o + h, 0, 0, 1);
            else iq1q_x86_half_ops(tile, L, &g[k], c, h, o + h, 1, IQ1Q_X86_VNNI, 0);
        }
#endif
    }
}

#endif /* IQ1Q_X86_H */
