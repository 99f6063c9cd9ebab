/* x86.h: the x86 SIMD kernels, for every (weight, activation) pair.
 *
 * Compiled twice, into two modules with their own flags: iq1q._avx2
 * (-mavx2 -mfma -mf16c) and iq1q._avx512 (adds AVX-512 F/BW/VL/DQ/VNNI). The
 * only difference is the int8 dot-product step: vpdpbusd/vpdpwssd on 256-bit
 * registers with VNNI (on Zen 4 a 512-bit vpdpbusd retires at half the rate,
 * so 256 bits lose nothing and keep 32 registers free for blocking), and
 * vpmaddubsw + vpmaddwd without.
 *
 * Weights are read in the tile layout of tiles.h (repacked once per tensor),
 * so all four weight formats share one kernel. Per activation block (32, 128
 * or 256 columns, scale d_a) and tile row r, the exact integer
 *   I = 8 * sum_k (ls*u)_k q_k + sum_g ls_g (s_g - 8) B_g      (B_g = sum of q over group g of 8)
 * equals sum_k ls (8u - 8 + s) q = 8 * sum_k (w_k / (d/8)) q_k (SPEC 7.1, with u = g + 1 unsigned
 * as the instructions need), and y += (d/8) * d_a * I in float. ls*u <= 30 fits the unsigned
 * byte operand (and 8*ls*u <= 240 for VNNI, which does not saturate); |I| < 2^23 stays exact.
 *
 * iq1_s_r4 x q8_1 is the historical kernel (SPEC 7.4, 9.7): its correction is
 * the stored fp16 s = d_a * B times ls (s - 8) in float, so an infinite s gives
 * the seed's NaNs. No other pair reads s, q8_k's float sum, or any stored bsum.
 *
 * Structure: the rows are split into tiles of 8 over the threads; per tile a
 * chunk of up to 1024 columns is expanded into int8 operands in an L1-sized
 * scratch (once per 64 activation rows), then up to 8 (VNNI) or 4 activation
 * rows at a time run over it with one 32-bit lane per weight row. So each
 * weight is decoded once per call for M <= 64, each activation quad is one
 * broadcast, and no horizontal sums are needed. Results do not depend on the
 * thread count: every output is computed by the same lane arithmetic.
 */
#ifndef IQ1Q_X86_H
#define IQ1Q_X86_H

#include <immintrin.h>
#include <stdlib.h>

#include "iq1q_common.h"
#include "pool.h"
#include "tiles.h"
#include "x86_activations.h"

#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
#define IQ1Q_X86_VNNI 1
enum { IQ1Q_X86_NM = 8 }; /* activation rows per pass: 32 ymm registers */
#else
#define IQ1Q_X86_VNNI 0
enum { IQ1Q_X86_NM = 4 }; /* 16 ymm registers */
#endif

#define IQ1Q_X86_INLINE static inline __attribute__((always_inline))

enum {
    IQ1Q_X86_KCH = 32, /* chunks of 32 columns expanded at a time: 10 KiB of scratch */
    IQ1Q_X86_MC = 64,  /* activation rows per expansion */
};

/* ---- activations: what the kernel reads besides the quants ---------------- */

typedef struct {
    int ablk;                  /* values per block */
    size_t atype, aqoff, asoff; /* block bytes, offset of the quants, of q8_1's s */
    int fp16_scale;
} iq1q_x86_act_format;

static const iq1q_x86_act_format iq1q_x86_act_formats[IQ1Q_NUM_ACTIVATION_FORMATS] = {
    {IQ1Q_BLOCK_Q8_0, IQ1Q_TYPE_SIZE_Q8_0, offsetof(iq1q_block_q8_0, qs), 0, 1},
    {IQ1Q_BLOCK_Q8_1, IQ1Q_TYPE_SIZE_Q8_1, offsetof(iq1q_block_q8_1, qs), offsetof(iq1q_block_q8_1, s), 1},
    {IQ1Q_BLOCK_Q8_K, IQ1Q_TYPE_SIZE_Q8_K, offsetof(iq1q_block_q8_k, qs), 0, 0},
    {IQ1Q_BLOCK_Q8_K128, IQ1Q_TYPE_SIZE_Q8_K128, offsetof(iq1q_block_q8_k128, qs), 0, 0},
};

typedef struct {
    iq1q_x86_act_format f;
    const uint8_t *a;
    size_t arow;     /* bytes per activation row */
    int64_t K, nblk; /* nblk: blocks per row */
    int16_t *b8;     /* [M][K/8] sums of the quants over groups of 8 */
    float *da;       /* [M][nblk] block scales */
    float *s;        /* [M][nblk] q8_1's stored s, for the historical kernel only */
} iq1q_x86_acts;

static void iq1q_x86_prepare_row(const iq1q_x86_acts *A, int64_t m) {
    const uint8_t *row = A->a + (size_t)m * A->arow;
    int16_t *b8 = A->b8 + m * (A->K / 8);
    float *da = A->da + m * A->nblk;
    for (int64_t i = 0; i < A->nblk; ++i) {
        const uint8_t *blk = row + (size_t)i * A->f.atype;
        uint32_t bits;
        memcpy(&bits, blk, 4);
        da[i] = A->f.fp16_scale ? iq1q_fp16_to_fp32((uint16_t)bits) : iq1q_bits_to_f32(bits);
        if (A->s) {
            uint16_t s;
            memcpy(&s, blk + A->f.asoff, 2);
            A->s[m * A->nblk + i] = iq1q_fp16_to_fp32(s);
        }
        const int8_t *q = (const int8_t *)(blk + A->f.aqoff);
        for (int g = 0; g < A->f.ablk / 8; ++g) {
            int sum = 0;
            for (int j = 0; j < 8; ++j) sum += q[8 * g + j];
            b8[i * (A->f.ablk / 8) + g] = (int16_t)sum;
        }
    }
}

/* ---- weights: expand chunks [c0, c1) of a tile into dot-product operands ---
 * tq[4 * (2 * (c - c0) + h) + p]: bytes ls*u (VNNI: 8*ls*u) of columns
 *     32c + 16h + 4p .. +3, row r in 32-bit lane r;
 * cq[2 * (c - c0) + h]: int16 ls * (s - 8) of row r, group 4c + 2h + i in lane 2r + i. */
static inline void iq1q_x86_expand(const uint8_t *tile, const iq1q_tile_layout *L, int64_t c0,
                                   int64_t c1, __m256i *tq, __m256i *cq) {
    const __m256i three = _mm256_set1_epi8(3);
    const __m256i bit = _mm256_setr_epi16(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096,
                                          8192, 16384, (short)32768);
    const __m256i minus7 = _mm256_set1_epi16(-7), minus2 = _mm256_set1_epi16(-2);
    for (int64_t c = c0; c < c1; ++c) {
        for (int h = 0; h < 2; ++h) {
            const int64_t k = 2 * (c - c0) + h;
            const __m256i raw = _mm256_loadu_si256((const __m256i *)(tile + c * IQ1Q_TILE_CODES + 32 * h));
            const __m256i ls32 = _mm256_cvtepu8_epi32(
                _mm_loadl_epi64((const __m128i *)(tile + L->ls + c * IQ1Q_TILE_LS + 8 * h)));
            const __m256i ls16 = _mm256_or_si256(ls32, _mm256_slli_epi32(ls32, 16));
            /* u <= 2 per byte, so a 16-bit multiply scales both bytes without carries */
            const __m256i mul = IQ1Q_X86_VNNI ? _mm256_slli_epi16(ls16, 3) : ls16;
            tq[4 * k + 0] = _mm256_mullo_epi16(_mm256_and_si256(raw, three), mul);
            tq[4 * k + 1] = _mm256_mullo_epi16(_mm256_and_si256(_mm256_srli_epi16(raw, 2), three), mul);
            tq[4 * k + 2] = _mm256_mullo_epi16(_mm256_and_si256(_mm256_srli_epi16(raw, 4), three), mul);
            tq[4 * k + 3] = _mm256_mullo_epi16(_mm256_and_si256(_mm256_srli_epi16(raw, 6), three), mul);
            uint16_t sb;
            memcpy(&sb, tile + L->sneg + c * IQ1Q_TILE_SNEG + 2 * h, 2);
            const __m256i neg = _mm256_cmpeq_epi16(_mm256_and_si256(_mm256_set1_epi16((short)sb), bit), bit);
            cq[k] = _mm256_mullo_epi16(ls16, _mm256_add_epi16(minus7, _mm256_and_si256(neg, minus2)));
        }
    }
}

/* ---- the integer steps ------------------------------------------------------ */

static inline __m256i iq1q_x86_bcast32(const void *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

/* The steps on activation row i of a pass (acc[i], and acc16[i] without VNNI). */
#if IQ1Q_X86_VNNI
/* acc += 4 columns of 8*ls*u times the activation quad, per row lane */
#define IQ1Q_X86_DOT4(i, t, q) (acc[i] = _mm256_dpbusd_epi32(acc[i], (t), (q)))
#define IQ1Q_X86_HALF_BEGIN(i) ((void)0)
#define IQ1Q_X86_HALF_END(i) ((void)0)
#define IQ1Q_X86_CORR(i, c, b) (acc[i] = _mm256_dpwssd_epi32(acc[i], (c), (b)))
#else
/* maddubs pairs are <= 2*30*127; four of them still fit int16 (30480), so a
 * half (16 columns) is summed in int16 and widened once, times 8 */
#define IQ1Q_X86_DOT4(i, t, q) (acc16[i] = _mm256_add_epi16(acc16[i], _mm256_maddubs_epi16((t), (q))))
#define IQ1Q_X86_HALF_BEGIN(i) (acc16[i] = _mm256_setzero_si256())
#define IQ1Q_X86_HALF_END(i) \
    (acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(acc16[i], _mm256_set1_epi16(8))))
#define IQ1Q_X86_CORR(i, c, b) (acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16((c), (b))))
#endif

/* NM activation rows m..m+NM-1 over expanded chunks [c0, c1) (whole
 * activation blocks); f holds their float accumulators, 8 rows each. */
IQ1Q_X86_INLINE void iq1q_x86_rows(const __m256i *tq, const __m256i *cq, const float *dtile,
                                   const iq1q_x86_acts *A, int64_t m, int64_t c0, int64_t c1,
                                   float *fio, const int NM, const int HIST) {
    const int nb = A->f.ablk / IQ1Q_TILE_CHUNK; /* chunks per activation block */
    __m256 f[IQ1Q_X86_NM];
    const uint8_t *qrow[IQ1Q_X86_NM];
    for (int i = 0; i < NM; ++i) {
        f[i] = _mm256_loadu_ps(fio + 8 * i);
        qrow[i] = A->a + (size_t)(m + i) * A->arow + A->f.aqoff;
    }
    for (int64_t cb = c0; cb < c1; cb += nb) {
        const int64_t blk = cb / nb;
        __m256i acc[IQ1Q_X86_NM];
#if !IQ1Q_X86_VNNI
        __m256i acc16[IQ1Q_X86_NM];
#endif
        for (int i = 0; i < NM; ++i) acc[i] = _mm256_setzero_si256();
        for (int64_t c = cb; c < cb + nb; ++c) {
            const size_t qoff = (size_t)blk * A->f.atype + (size_t)(c - cb) * IQ1Q_TILE_CHUNK;
            for (int h = 0; h < 2; ++h) {
                const __m256i *t = tq + 4 * (2 * (c - c0) + h);
#pragma GCC unroll 8
                for (int i = 0; i < NM; ++i) {
                    const uint8_t *q = qrow[i] + qoff + 16 * h;
                    IQ1Q_X86_HALF_BEGIN(i);
                    IQ1Q_X86_DOT4(i, t[0], iq1q_x86_bcast32(q));
                    IQ1Q_X86_DOT4(i, t[1], iq1q_x86_bcast32(q + 4));
                    IQ1Q_X86_DOT4(i, t[2], iq1q_x86_bcast32(q + 8));
                    IQ1Q_X86_DOT4(i, t[3], iq1q_x86_bcast32(q + 12));
                    IQ1Q_X86_HALF_END(i);
                    if (!HIST)
                        IQ1Q_X86_CORR(i, cq[2 * (c - c0) + h],
                                      iq1q_x86_bcast32(A->b8 + (m + i) * (A->K / 8) + 4 * c + 2 * h));
                }
            }
        }
        const __m256 dw = _mm256_loadu_ps(dtile + (cb / (IQ1Q_TILE_SPAN / IQ1Q_TILE_CHUNK)) * IQ1Q_TILE_ROWS);
#pragma GCC unroll 8
        for (int i = 0; i < NM; ++i)
            f[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[i]),
                                   _mm256_mul_ps(dw, _mm256_set1_ps(A->da[(m + i) * A->nblk + blk])), f[i]);
        if (HIST) { /* historical: + s * ls (s - 8), with ls (s - 8) of group 0 of the block */
            const __m256i c0v = cq[2 * (cb - c0)];
            const __m256 fk = _mm256_cvtepi32_ps(_mm256_srai_epi32(_mm256_slli_epi32(c0v, 16), 16));
            for (int i = 0; i < NM; ++i)
                f[i] = _mm256_fmadd_ps(fk, _mm256_mul_ps(dw, _mm256_set1_ps(A->s[(m + i) * A->nblk + blk])), f[i]);
        }
    }
    for (int i = 0; i < NM; ++i) _mm256_storeu_ps(fio + 8 * i, f[i]);
}

/* ---- the GEMM ----------------------------------------------------------------- */

typedef struct {
    const uint8_t *packed;
    iq1q_tile_layout L;
    int64_t N, M, ntiles, tiles_per_task;
    float *y; /* (M, N) row-major */
    iq1q_x86_acts A;
} iq1q_x86_job;

static void iq1q_x86_gemm_task(void *ctx, int64_t task) {
    const iq1q_x86_job *J = (const iq1q_x86_job *)ctx;
    const iq1q_x86_acts *A = &J->A;
    __m256i tq[IQ1Q_X86_KCH * 8], cq[IQ1Q_X86_KCH * 2];
    float fbuf[IQ1Q_X86_MC * 8];
    const int64_t t0 = task * J->tiles_per_task;
    const int64_t t1 = t0 + J->tiles_per_task < J->ntiles ? t0 + J->tiles_per_task : J->ntiles;
    for (int64_t t = t0; t < t1; ++t) {
        const uint8_t *tile = J->packed + (size_t)t * J->L.bytes;
        const float *dtile = (const float *)(tile + J->L.d);
        for (int64_t m0 = 0; m0 < J->M; m0 += IQ1Q_X86_MC) {
            const int64_t mc = J->M - m0 < IQ1Q_X86_MC ? J->M - m0 : IQ1Q_X86_MC;
            memset(fbuf, 0, sizeof(float) * 8 * (size_t)mc);
            for (int64_t c0 = 0; c0 < J->L.nchunks; c0 += IQ1Q_X86_KCH) {
                const int64_t c1 = c0 + IQ1Q_X86_KCH < J->L.nchunks ? c0 + IQ1Q_X86_KCH : J->L.nchunks;
                iq1q_x86_expand(tile, &J->L, c0, c1, tq, cq);
                int64_t m = 0;
                if (A->s) { /* the historical kernel: its own instantiation */
                    for (; m + IQ1Q_X86_NM <= mc; m += IQ1Q_X86_NM)
                        iq1q_x86_rows(tq, cq, dtile, A, m0 + m, c0, c1, fbuf + 8 * m, IQ1Q_X86_NM, 1);
                    for (; m < mc; ++m) iq1q_x86_rows(tq, cq, dtile, A, m0 + m, c0, c1, fbuf + 8 * m, 1, 1);
                } else {
                    for (; m + IQ1Q_X86_NM <= mc; m += IQ1Q_X86_NM)
                        iq1q_x86_rows(tq, cq, dtile, A, m0 + m, c0, c1, fbuf + 8 * m, IQ1Q_X86_NM, 0);
                    for (; m < mc; ++m) iq1q_x86_rows(tq, cq, dtile, A, m0 + m, c0, c1, fbuf + 8 * m, 1, 0);
                }
            }
            const int64_t row0 = t * IQ1Q_TILE_ROWS;
            const int nr = J->N - row0 < IQ1Q_TILE_ROWS ? (int)(J->N - row0) : IQ1Q_TILE_ROWS;
            for (int64_t m = 0; m < mc; ++m) memcpy(J->y + (m0 + m) * J->N + row0, fbuf + 8 * m, sizeof(float) * nr);
        }
    }
}

typedef struct {
    const iq1q_x86_acts *A;
    int64_t rows_per_task, M;
} iq1q_x86_prep_job;

static void iq1q_x86_prep_task(void *ctx, int64_t task) {
    const iq1q_x86_prep_job *P = (const iq1q_x86_prep_job *)ctx;
    const int64_t m1 = (task + 1) * P->rows_per_task < P->M ? (task + 1) * P->rows_per_task : P->M;
    for (int64_t m = task * P->rows_per_task; m < m1; ++m) iq1q_x86_prepare_row(P->A, m);
}

/* How many tasks to deal n units of work into: a few per thread, so a busy
 * core slows the call by less than its share, and at least min_units each. */
static inline int64_t iq1q_x86_tasks(int64_t n, int nthreads, int64_t min_units) {
    int64_t t = nthreads <= 1 ? 1 : 4 * (int64_t)nthreads;
    if (t > n / min_units) t = n / min_units;
    return t < 1 ? 1 : t;
}

/* y (M x N) = X @ W.T for tiles `packed` of an N x K weight tensor and
 * activations a (M rows of format afmt). Returns 0, or -1 when out of memory. */
static int iq1q_x86_gemm(int afmt, int hist, const uint8_t *packed, int64_t N, int64_t K,
                         const uint8_t *a, int64_t M, float *y, int nthreads, iq1q_pool_run_fn run) {
    iq1q_x86_job J;
    J.packed = packed;
    J.L = iq1q_tile_layout_for(K);
    J.N = N;
    J.M = M;
    J.y = y;
    J.ntiles = iq1q_tile_count(N);
    iq1q_x86_acts *A = &J.A;
    A->f = iq1q_x86_act_formats[afmt - IQ1Q_Q8_0];
    A->a = a;
    A->arow = A->f.atype * (size_t)(K / A->f.ablk);
    A->K = K;
    A->nblk = K / A->f.ablk;
    const size_t nb8 = (size_t)M * (size_t)(K / 8), nda = (size_t)M * (size_t)A->nblk;
    char *scratch = malloc(nb8 * sizeof(int16_t) + (hist ? 2 : 1) * nda * sizeof(float) + 64);
    if (!scratch) return -1;
    A->da = (float *)scratch;
    A->s = hist ? A->da + nda : NULL;
    A->b8 = (int16_t *)(A->da + (hist ? 2 : 1) * nda);
    iq1q_x86_prep_job P = {A, 0, M};
    const int64_t ptasks = iq1q_x86_tasks(M, nthreads, 16);
    P.rows_per_task = (M + ptasks - 1) / ptasks;
    run(iq1q_x86_prep_task, &P, ptasks, nthreads);
    /* at least 4 tiles (32 rows) per task at M = 1, fewer as M grows */
    const int64_t min_tiles = M >= 8 ? 1 : 4;
    const int64_t ntasks = iq1q_x86_tasks(J.ntiles, nthreads, min_tiles);
    J.tiles_per_task = (J.ntiles + ntasks - 1) / ntasks;
    run(iq1q_x86_gemm_task, &J, (J.ntiles + J.tiles_per_task - 1) / J.tiles_per_task, nthreads);
    free(scratch);
    return 0;
}

#endif /* IQ1Q_X86_H */
