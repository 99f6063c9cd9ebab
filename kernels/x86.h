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
 * Structure: the rows are split into tiles of 8 over the threads, one 32-bit
 * lane per weight row, so each activation quad is one broadcast and no
 * horizontal sums are needed. Up to 8 (VNNI) or 4 activation rows run
 * together: with no more rows than that, each 16-column operand is made in
 * registers where it is used (the GEMV path); with more, a chunk of up to 1024
 * columns of the tile is expanded once into an L1-sized scratch (ls folded
 * into the bytes) and every activation row runs over it (the GEMM path).
 * Each tile prefetches the bytes of the tile after next. Results do not depend
 * on the thread count or on the path: every output is the same exact integer
 * per block and the same float steps.
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
#define IQ1Q_X86_NM 4 /* 16 ymm registers */
#endif

#define IQ1Q_X86_INLINE static inline __attribute__((always_inline))

enum {
    IQ1Q_X86_KCH = 32, /* chunks of 32 columns expanded at a time: 12 KiB of scratch */
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

/* ---- weights: the operands of one half chunk (16 columns of the 8 rows) -----
 * t[p]: the bytes of columns 16h + 4p .. +3, row r in 32-bit lane r: u, or with FOLD
 *       ls*u (VNNI: 8*ls*u, 8*15*2 = 240 still fits the unsigned byte);
 * ls:   int16 8*ls of row r in lanes 2r, 2r+1, applied by vpmaddwd (with FOLD: 8);
 * c:    int16 ls * (s - 8) of row r, group 2h + i in lane 2r + i. */
typedef struct {
    __m256i t[4], ls, c;
} iq1q_x86_half;

IQ1Q_X86_INLINE void iq1q_x86_operands(const uint8_t *tile, const iq1q_tile_layout *L, int64_t c,
                                       int h, iq1q_x86_half *o, const int FOLD) {
    const __m256i three = _mm256_set1_epi8(3);
    const __m256i bit = _mm256_setr_epi16(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096,
                                          8192, 16384, (short)32768);
    const __m256i raw = _mm256_loadu_si256((const __m256i *)(tile + c * IQ1Q_TILE_CODES + 32 * h));
    if (h == 0) { /* the tile after next, to arrive in time; a prefetch past the end never faults */
        _mm_prefetch((const char *)(tile + 2 * L->bytes + c * IQ1Q_TILE_CODES), _MM_HINT_T0);
        if (c % 8 == 0) _mm_prefetch((const char *)(tile + 2 * L->bytes + L->ls + c * IQ1Q_TILE_LS), _MM_HINT_T0);
        if (c % 16 == 0) _mm_prefetch((const char *)(tile + 2 * L->bytes + L->sneg + c * IQ1Q_TILE_SNEG), _MM_HINT_T0);
    }
    const __m256i nib =
        _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(tile + L->ls + c * IQ1Q_TILE_LS)));
    const __m256i ls32 = h ? _mm256_srli_epi32(nib, 4) : _mm256_and_si256(nib, _mm256_set1_epi32(15));
    const __m256i ls16 = _mm256_or_si256(ls32, _mm256_slli_epi32(ls32, 16));
    const __m256i ls8 = _mm256_slli_epi16(ls16, 3);
    /* folding costs a multiply per operand, paid once for many activation rows; without it
     * vpmaddwd applies ls per row, and the row's operands need one more register */
    const __m256i mul = IQ1Q_X86_VNNI ? ls8 : ls16;
    o->ls = FOLD && !IQ1Q_X86_VNNI ? _mm256_set1_epi16(8) : ls8;
    for (int p = 0; p < 4; ++p) {
        const __m256i u = _mm256_and_si256(_mm256_srli_epi16(raw, 2 * p), three);
        /* u <= 2 per byte, so a 16-bit multiply scales both bytes without carries */
        o->t[p] = FOLD || IQ1Q_X86_VNNI ? _mm256_mullo_epi16(u, mul) : u;
    }
    uint16_t sb;
    memcpy(&sb, tile + L->sneg + c * IQ1Q_TILE_SNEG + 2 * h, 2);
    const __m256i neg = _mm256_cmpeq_epi16(_mm256_and_si256(_mm256_set1_epi16((short)sb), bit), bit);
    o->c = _mm256_mullo_epi16(ls16, _mm256_add_epi16(_mm256_set1_epi16(-7),
                                                     _mm256_and_si256(neg, _mm256_set1_epi16(-2))));
}

/* ---- the integer steps ------------------------------------------------------ */

static inline __m256i iq1q_x86_bcast32(const void *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

/* acc (8 rows' int32 lanes) += 8 * ls * sum u q over the half; q: its 16 activation bytes.
 * The operands come by value: kept in registers across the rows of a pass. */
IQ1Q_X86_INLINE __m256i iq1q_x86_half_dot(__m256i acc, const __m256i t0, const __m256i t1,
                                          const __m256i t2, const __m256i t3, const __m256i ls,
                                          const uint8_t *q) {
#if IQ1Q_X86_VNNI
    (void)ls;
    acc = IQ1Q_X86_DPBUSD(acc, t0, iq1q_x86_bcast32(q));
    acc = IQ1Q_X86_DPBUSD(acc, t1, iq1q_x86_bcast32(q + 4));
    acc = IQ1Q_X86_DPBUSD(acc, t2, iq1q_x86_bcast32(q + 8));
    return IQ1Q_X86_DPBUSD(acc, t3, iq1q_x86_bcast32(q + 12));
#else
    /* maddubs pairs are <= 2*30*127 (ls folded in), their sum over the half <= 30480: int16
     * is exact */
    __m256i s = _mm256_maddubs_epi16(t0, iq1q_x86_bcast32(q));
    s = _mm256_add_epi16(s, _mm256_maddubs_epi16(t1, iq1q_x86_bcast32(q + 4)));
    s = _mm256_add_epi16(s, _mm256_maddubs_epi16(t2, iq1q_x86_bcast32(q + 8)));
    s = _mm256_add_epi16(s, _mm256_maddubs_epi16(t3, iq1q_x86_bcast32(q + 12)));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(s, ls));
#endif
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
IQ1Q_X86_INLINE void iq1q_x86_rows(const iq1q_x86_half *ops, const uint8_t *tile,
                                   const iq1q_tile_layout *L, const iq1q_x86_acts *A, int64_t m,
                                   int64_t c0, int64_t c1, float *f, const int NM, const int HIST,
                                   const int FUSED) {
    const int nb = A->f.ablk / IQ1Q_TILE_CHUNK; /* chunks per activation block */
    const float *dtile = (const float *)(tile + L->d);
    const uint8_t *qrow[IQ1Q_X86_NM];
    for (int i = 0; i < NM; ++i) qrow[i] = A->a + (size_t)(m + i) * A->arow + A->f.aqoff;
    for (int64_t cb = c0; cb < c1; cb += nb) {
        const int64_t blk = cb / nb;
        __m256i acc[IQ1Q_X86_NM], cfirst = _mm256_setzero_si256();
        for (int i = 0; i < NM; ++i) acc[i] = _mm256_setzero_si256();
        for (int64_t c = cb; c < cb + nb; ++c) {
            const size_t qoff = (size_t)blk * A->f.atype + (size_t)(c - cb) * IQ1Q_TILE_CHUNK;
            for (int h = 0; h < 2; ++h) {
                iq1q_x86_half here;
                const iq1q_x86_half *o = ops + 2 * (c - c0) + h;
                if (FUSED) {
                    iq1q_x86_operands(tile, L, c, h, &here, 0);
                    o = &here;
                }
                if (HIST && c == cb && h == 0) cfirst = o->c;
                const __m256i t0 = o->t[0], t1 = o->t[1], t2 = o->t[2], t3 = o->t[3];
                /* expanded operands have ls folded in: a constant here, one register fewer */
                const __m256i ls = FUSED ? o->ls : _mm256_set1_epi16(8), cv = o->c;
#pragma GCC unroll 8
                for (int i = 0; i < NM; ++i) {
                    acc[i] = iq1q_x86_half_dot(acc[i], t0, t1, t2, t3, ls, qrow[i] + qoff + 16 * h);
                    if (!HIST) acc[i] = iq1q_x86_half_corr(acc[i], cv, A->b8 + (m + i) * (A->K / 8) + 4 * c + 2 * h);
                }
            }
        }
        /* the float accumulators live in memory (L1): registers are for the integer steps */
        const __m256 dw = _mm256_loadu_ps(dtile + (cb / (IQ1Q_TILE_SPAN / IQ1Q_TILE_CHUNK)) * IQ1Q_TILE_ROWS);
#pragma GCC unroll 8
        for (int i = 0; i < NM; ++i) {
            __m256 fi = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[i]),
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

/* iq1q_x86_rows for nm (1..IQ1Q_X86_NM) rows, each count its own instantiation */
static void iq1q_x86_rows_n(int nm, const iq1q_x86_half *ops, const uint8_t *tile,
                            const iq1q_tile_layout *L, const iq1q_x86_acts *A, int64_t m, int64_t c0,
                            int64_t c1, float *f, int hist, int fused) {
#define IQ1Q_X86_CASE(n)                                                                \
    case n:                                                                             \
        if (fused) {                                                                    \
            if (hist) iq1q_x86_rows(ops, tile, L, A, m, c0, c1, f, n, 1, 1);            \
            else iq1q_x86_rows(ops, tile, L, A, m, c0, c1, f, n, 0, 1);                 \
        } else {                                                                        \
            if (hist) iq1q_x86_rows(ops, tile, L, A, m, c0, c1, f, n, 1, 0);            \
            else iq1q_x86_rows(ops, tile, L, A, m, c0, c1, f, n, 0, 0);                 \
        }                                                                               \
        break;
    /* a macro, not an enum: the preprocessor must see it */
    _Static_assert(IQ1Q_X86_NM == 4 || IQ1Q_X86_NM == 8, "rows per pass: 4 or 8");
    switch (nm) {
        IQ1Q_X86_CASE(1)
        IQ1Q_X86_CASE(2)
        IQ1Q_X86_CASE(3)
        IQ1Q_X86_CASE(4)
#if IQ1Q_X86_NM > 4
        IQ1Q_X86_CASE(5)
        IQ1Q_X86_CASE(6)
        IQ1Q_X86_CASE(7)
        IQ1Q_X86_CASE(8)
#endif
    }
#undef IQ1Q_X86_CASE
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
    const int hist = A->s != NULL;
    iq1q_x86_half ops[2 * IQ1Q_X86_KCH];
    float fbuf[IQ1Q_X86_MC * 8];
    const int64_t t0 = task * J->tiles_per_task;
    const int64_t t1 = t0 + J->tiles_per_task < J->ntiles ? t0 + J->tiles_per_task : J->ntiles;
    for (int64_t t = t0; t < t1; ++t) {
        const uint8_t *tile = J->packed + (size_t)t * J->L.bytes;
        for (int64_t m0 = 0; m0 < J->M; m0 += IQ1Q_X86_MC) {
            const int64_t mc = J->M - m0 < IQ1Q_X86_MC ? J->M - m0 : IQ1Q_X86_MC;
            memset(fbuf, 0, sizeof(float) * 8 * (size_t)mc);
            if (mc <= IQ1Q_X86_NM) { /* one pass: make each operand where it is used */
                iq1q_x86_rows_n((int)mc, ops, tile, &J->L, A, m0, 0, J->L.nchunks, fbuf, hist, 1);
            } else { /* expand a chunk of columns once, then run every row over it */
                for (int64_t c0 = 0; c0 < J->L.nchunks; c0 += IQ1Q_X86_KCH) {
                    const int64_t c1 = c0 + IQ1Q_X86_KCH < J->L.nchunks ? c0 + IQ1Q_X86_KCH : J->L.nchunks;
                    for (int64_t c = c0; c < c1; ++c)
                        for (int h = 0; h < 2; ++h) iq1q_x86_operands(tile, &J->L, c, h, ops + 2 * (c - c0) + h, 1);
                    for (int64_t m = 0; m < mc; m += IQ1Q_X86_NM) {
                        const int nm = mc - m < IQ1Q_X86_NM ? (int)(mc - m) : IQ1Q_X86_NM;
                        iq1q_x86_rows_n(nm, ops, tile, &J->L, A, m0 + m, c0, c1, fbuf + 8 * m, hist, 0);
                    }
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
