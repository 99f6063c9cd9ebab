/* q8_0_gemm.h: y = X @ W.T for weights stored as ggml's Q8_0 (a model's token embedding
 * and tied output head, often), with X quantized to q8_0 like ggml does for them.
 *
 *   y[m][n] = sum over blocks b of  d_w[n][b] * d_x[m][b] * (sum of 32 products w * x)
 *
 * in int32 per block, scaled and summed in float32 (docs/spec.md §4.1: q8_0 blocks are the
 * same bytes as weights or activations).
 *
 * Why a kernel of its own: the model runner read such a head as float32 slices for numpy,
 * and that product was half of a perplexity run's time (Gemma 3 270M: 262144 x 640, 1.4 s
 * a chunk on one Zen 4 core). Integer dot products do 64 multiply-adds an instruction
 * where float FMAs do 8 or 16.
 *
 * Layout: a call repacks its rows into tiles of IQ1Q_Q8_TILE rows interleaved four bytes
 * at a time (so one 512-bit load holds 4 columns of 16 rows, and one vpdpbusd adds their
 * products with 4 broadcast activation bytes; a broadcast serves the tile's IQ1Q_Q8_NV
 * vectors), beside each tile's block scales and the
 * block sums the unsigned trick needs (below). The scratch is freed when the call returns:
 * nothing is kept beside the ggml bytes.
 *
 * vpdpbusd multiplies unsigned by signed bytes. The activations go in as x + 128 (x ^ 0x80),
 * and each block's sum starts at -128 * sum(w), so it ends at sum(w * x) exactly.
 *
 * iq1q_q8_0_nll does the same products for a model's output head and keeps none of them:
 * each row's log-sum-exp over the vocabulary and the logit of its target are made as the
 * tiles come out of the registers (per slice of IQ1Q_Q8_SLICE tiles a running maximum and
 * a sum of exps, the slices combined in a fixed order in float64), so that a perplexity run
 * never writes, reads back and exponentiates M x n_vocab logits (Gemma 3 270M: 67 million
 * a chunk, 0.06 s of numpy on one Zen 4 core).
 *
 * Work is dealt in slices of IQ1Q_Q8_SLICE tiles; each task packs one tile at a time into
 * a scratch of its own.
 *
 * Defines IQ1Q_HAVE_Q8_0_GEMM when the target has the instructions (AVX-512 BW + VNNI);
 * elsewhere the runner keeps its float path.
 */
#ifndef IQ1Q_Q8_0_GEMM_H
#define IQ1Q_Q8_0_GEMM_H

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "iq1q_common.h"
#include "pool.h"

#if defined(__AVX512BW__) && defined(__AVX512VNNI__)
#define IQ1Q_HAVE_Q8_0_GEMM 1
#include <immintrin.h>

enum {
    IQ1Q_Q8_NV = 2,                 /* 512-bit vectors of weight rows per tile */
    IQ1Q_Q8_TILE = 16 * IQ1Q_Q8_NV, /* weight rows per tile: one int32 lane each */
    /* activation rows per pass: NV int and NV float accumulators each (Zen 4, 1024 x 640 x 256:
     * NV 2 / MR 4 146 GMAC/s; 1 / 8 127; 2 / 5 130; 2 / 6 128; 4 / 2 111; 3 / 3 97) */
    IQ1Q_Q8_MR = 4,
    IQ1Q_Q8_SLICE = 32, /* tiles per task (1024 weight rows) */
};

typedef struct {
    int64_t N, K, M, nblk, ntiles, nslices;
    const uint8_t *w;  /* N rows of ggml Q8_0 */
    const uint8_t *a;  /* M rows of q8_0 */
    float *y;          /* M x N; NULL: the log-sum-exp instead (below) */
    uint8_t *au;       /* [M][K] activation quants + 128 */
    float *ascale;     /* [M][nblk] */
    /* log-sum-exp: per slice and row the largest logit and the sum of exp(logit - largest);
     * per row the logit of its target column */
    const int64_t *target;
    float *top, *sum;  /* [nslices][M] */
    float *picked;     /* [M] */
    int failed;        /* a task found no memory for its scratch */
} iq1q_q8_job;

/* A task's scratch: one tile, and the log-sum-exp's running state of every activation row */
typedef struct {
    uint8_t *tile;     /* [block][8 quads][IQ1Q_Q8_TILE rows][4 bytes] */
    float *wscale;     /* [block][IQ1Q_Q8_TILE] */
    int32_t *wsum;     /* [block][IQ1Q_Q8_TILE]: -128 * sum of the block's weights */
    float *top;        /* [M] */
    float *sum;        /* [M][16]: 16 lanes of partial sums */
} iq1q_q8_scratch;

/* The 8 x 8 transpose of 32-bit lanes: v[i] holds row i's 8 dwords; after it, v[q] holds
 * dword q of the 8 rows. */
static inline __attribute__((always_inline)) void iq1q_q8_transpose8(__m256i v[8]) {
    __m256i t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_epi32(v[i], v[i + 1]);
        t[i + 1] = _mm256_unpackhi_epi32(v[i], v[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_unpacklo_epi64(t[i], t[i + 2]);
        u[i + 1] = _mm256_unpackhi_epi64(t[i], t[i + 2]);
        u[i + 2] = _mm256_unpacklo_epi64(t[i + 1], t[i + 3]);
        u[i + 3] = _mm256_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    for (int q = 0; q < 4; ++q) {
        v[q] = _mm256_permute2x128_si256(u[q], u[q + 4], 0x20);
        v[q + 4] = _mm256_permute2x128_si256(u[q], u[q + 4], 0x31);
    }
}

/* Tile t of the weights into the scratch (rows past N are zeros): per block, 8 rows at a time,
 * their quants transposed to [quad][row] and summed by vpdpbusd against ones. (A byte loop
 * took 17 % of the head's time, Gemma 3 270M on Zen 4.) */
static void iq1q_q8_pack_tile(const iq1q_q8_job *j, int64_t t, const iq1q_q8_scratch *sc) {
    const size_t row_bytes = (size_t)j->nblk * IQ1Q_TYPE_SIZE_Q8_0;
    const uint8_t *rows[IQ1Q_Q8_TILE]; /* NULL past N */
    for (int r = 0; r < IQ1Q_Q8_TILE; ++r) {
        const int64_t n = t * IQ1Q_Q8_TILE + r;
        rows[r] = n < j->N ? j->w + (size_t)n * row_bytes : NULL;
    }
    const __m256i ones = _mm256_set1_epi8(1);
    for (int64_t b = 0; b < j->nblk; ++b) {
        uint8_t *blk = sc->tile + (size_t)b * IQ1Q_Q8_TILE * IQ1Q_BLOCK_Q8_0;
        const size_t at = (size_t)b * IQ1Q_TYPE_SIZE_Q8_0;
        for (int r0 = 0; r0 < IQ1Q_Q8_TILE; r0 += 8) {
            __m256i v[8];
            for (int i = 0; i < 8; ++i) {
                const uint8_t *row = rows[r0 + i];
                v[i] = row ? _mm256_loadu_si256((const __m256i *)(row + at + offsetof(iq1q_block_q8_0, qs)))
                           : _mm256_setzero_si256();
            }
            iq1q_q8_transpose8(v);
            __m256i sum = _mm256_setzero_si256();
            for (int q = 0; q < IQ1Q_BLOCK_Q8_0 / 4; ++q) {
                _mm256_storeu_si256((__m256i *)(blk + (q * IQ1Q_Q8_TILE + r0) * 4), v[q]);
                sum = _mm256_dpbusd_epi32(sum, ones, v[q]);
            }
            _mm256_storeu_si256((__m256i *)(sc->wsum + b * IQ1Q_Q8_TILE + r0),
                                _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(sum, 7)));
        }
        for (int r = 0; r < IQ1Q_Q8_TILE; ++r) {
            uint16_t d = 0;
            if (rows[r]) memcpy(&d, rows[r] + at + offsetof(iq1q_block_q8_0, d), 2);
            sc->wscale[b * IQ1Q_Q8_TILE + r] = rows[r] ? iq1q_fp16_to_fp32(d) : 0.0f;
        }
    }
}

/* Activation row m: its quants + 128 and its block scales. */
static void iq1q_q8_pack_row(const iq1q_q8_job *j, int64_t m) {
    const iq1q_block_q8_0 *src = (const iq1q_block_q8_0 *)(j->a + (size_t)m * j->nblk * IQ1Q_TYPE_SIZE_Q8_0);
    uint8_t *dst = j->au + (size_t)m * j->K;
    for (int64_t b = 0; b < j->nblk; ++b) {
        for (int i = 0; i < IQ1Q_BLOCK_Q8_0; ++i) dst[b * IQ1Q_BLOCK_Q8_0 + i] = (uint8_t)src[b].qs[i] ^ 0x80;
        j->ascale[m * j->nblk + b] = iq1q_fp16_to_fp32(src[b].d);
    }
}

/* exp(x) of 16 lanes for x <= 0, the log-sum-exp's: x clamped at -87.3, x = n ln2 + r
 * (Cody-Waite), Cephes' polynomial for exp(r) in fused multiply-adds, 2^n by vscalefps;
 * within 2 ulp (float_ops.h has the portable form, in plain multiplies and adds). */
static inline __attribute__((always_inline)) __m512 iq1q_q8_exp(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.3f));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(1.9875691500e-4f), r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

/* Row m's log-sum-exp state meets its logits z0, z1 (columns n0 .. n0 + 31; k0, k1: those
 * before N): the running maximum moves when a logit passes it (rarely, after a slice's
 * first tile), and the 16 lane sums add exp(z - maximum). */
static inline __attribute__((always_inline)) void iq1q_q8_lse(const iq1q_q8_job *j, const iq1q_q8_scratch *sc,
                                                             int64_t m, int64_t n0, __m512 z0, __m512 z1,
                                                             __mmask16 k0, __mmask16 k1) {
    const __m512 none = _mm512_set1_ps(-INFINITY);
    const __m512 big = _mm512_max_ps(_mm512_mask_blend_ps(k0, none, z0), _mm512_mask_blend_ps(k1, none, z1));
    float top = sc->top[m];
    __m512 sum = _mm512_loadu_ps(sc->sum + 16 * m);
    if (_mm512_cmp_ps_mask(big, _mm512_set1_ps(top), _CMP_GT_OQ)) {
        const float now = _mm512_reduce_max_ps(big);
        /* the sums so far times exp(top - now): 0 times ~1e-38 on a slice's first tile */
        sum = _mm512_mul_ps(sum, iq1q_q8_exp(_mm512_set1_ps(top - now)));
        sc->top[m] = top = now;
    }
    const __m512 shift = _mm512_set1_ps(top);
    sum = _mm512_mask_add_ps(sum, k0, sum, iq1q_q8_exp(_mm512_sub_ps(z0, shift)));
    sum = _mm512_mask_add_ps(sum, k1, sum, iq1q_q8_exp(_mm512_sub_ps(z1, shift)));
    _mm512_storeu_ps(sc->sum + 16 * m, sum);
    const int64_t c = j->target[m] - n0;
    if (c >= 0 && c < IQ1Q_Q8_TILE) {
        float z[IQ1Q_Q8_TILE];
        _mm512_storeu_ps(z, z0);
        _mm512_storeu_ps(z + 16, z1);
        j->picked[m] = z[c];
    }
}

/* Rows m0 .. m0 + mr - 1 over the IQ1Q_Q8_TILE columns of tile t (mr <= IQ1Q_Q8_MR, a constant
 * where it is called, so that the accumulators stay in registers): into y, or into the
 * log-sum-exp state when j->y is NULL. */
static inline __attribute__((always_inline)) void iq1q_q8_pass(const iq1q_q8_job *j, const iq1q_q8_scratch *sc,
                                                                int64_t t, int64_t m0, const int mr) {
    const uint8_t *tile = sc->tile;
    const float *wsc = sc->wscale;
    const int32_t *wsum = sc->wsum;
    __m512 acc[IQ1Q_Q8_MR][IQ1Q_Q8_NV];
    for (int m = 0; m < mr; ++m)
        for (int v = 0; v < IQ1Q_Q8_NV; ++v) acc[m][v] = _mm512_setzero_ps();
    for (int64_t b = 0; b < j->nblk; ++b) {
        __m512i dot[IQ1Q_Q8_MR][IQ1Q_Q8_NV];
        for (int v = 0; v < IQ1Q_Q8_NV; ++v) {
            const __m512i start = _mm512_loadu_si512(wsum + b * IQ1Q_Q8_TILE + 16 * v);
            for (int m = 0; m < mr; ++m) dot[m][v] = start;
        }
        const uint8_t *wq = tile + (size_t)b * IQ1Q_Q8_TILE * IQ1Q_BLOCK_Q8_0;
        for (int q = 0; q < IQ1Q_BLOCK_Q8_0 / 4; ++q) {
            __m512i w[IQ1Q_Q8_NV];
            for (int v = 0; v < IQ1Q_Q8_NV; ++v) w[v] = _mm512_loadu_si512(wq + (q * IQ1Q_Q8_TILE + 16 * v) * 4);
            for (int m = 0; m < mr; ++m) {
                int32_t x4;
                memcpy(&x4, j->au + (size_t)(m0 + m) * j->K + b * IQ1Q_BLOCK_Q8_0 + 4 * q, 4);
                const __m512i x = _mm512_set1_epi32(x4); /* one broadcast for NV products */
                for (int v = 0; v < IQ1Q_Q8_NV; ++v) dot[m][v] = _mm512_dpbusd_epi32(dot[m][v], x, w[v]);
            }
        }
        for (int v = 0; v < IQ1Q_Q8_NV; ++v) {
            const __m512 ws = _mm512_loadu_ps(wsc + b * IQ1Q_Q8_TILE + 16 * v);
            for (int m = 0; m < mr; ++m) {
                const __m512 s = _mm512_mul_ps(ws, _mm512_set1_ps(j->ascale[(m0 + m) * j->nblk + b]));
                acc[m][v] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[m][v]), s, acc[m][v]);
            }
        }
    }
    const int64_t n0 = t * IQ1Q_Q8_TILE;
    if (j->y == NULL) {
        /* columns past N (the last tile's) must not count */
        const __mmask16 k0 = j->N - n0 >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (j->N - n0)) - 1);
        const __mmask16 k1 = j->N - n0 >= 32 ? (__mmask16)0xffff
                           : j->N - n0 <= 16 ? (__mmask16)0 : (__mmask16)((1u << (j->N - n0 - 16)) - 1);
        for (int m = 0; m < mr; ++m) iq1q_q8_lse(j, sc, m0 + m, n0, acc[m][0], acc[m][1], k0, k1);
        return;
    }
    for (int v = 0; v < IQ1Q_Q8_NV; ++v) {
        const int64_t c0 = n0 + 16 * v;
        if (c0 >= j->N) break;
        const __mmask16 keep = j->N - c0 >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (j->N - c0)) - 1);
        for (int m = 0; m < mr; ++m) _mm512_mask_storeu_ps(j->y + (size_t)(m0 + m) * j->N + c0, keep, acc[m][v]);
    }
}

/* Task: the tiles of slice s, one after another through the task's own scratch. */
static void iq1q_q8_task(void *ctx, int64_t s) {
    iq1q_q8_job *j = (iq1q_q8_job *)ctx;
    iq1q_q8_scratch sc;
    sc.tile = malloc((size_t)IQ1Q_Q8_TILE * j->K);
    sc.wscale = malloc((size_t)j->nblk * IQ1Q_Q8_TILE * sizeof(float));
    sc.wsum = malloc((size_t)j->nblk * IQ1Q_Q8_TILE * sizeof(int32_t));
    sc.top = j->y ? NULL : malloc((size_t)j->M * sizeof(float));
    sc.sum = j->y ? NULL : malloc((size_t)j->M * 16 * sizeof(float));
    if (sc.tile && sc.wscale && sc.wsum && (j->y || (sc.top && sc.sum))) {
        for (int64_t m = 0; !j->y && m < j->M; ++m) {
            sc.top[m] = -INFINITY;
            for (int k = 0; k < 16; ++k) sc.sum[16 * m + k] = 0.0f;
        }
        const int64_t t1 = (s + 1) * IQ1Q_Q8_SLICE < j->ntiles ? (s + 1) * IQ1Q_Q8_SLICE : j->ntiles;
        for (int64_t t = s * IQ1Q_Q8_SLICE; t < t1; ++t) {
            iq1q_q8_pack_tile(j, t, &sc);
            int64_t m0 = 0;
            for (; m0 + IQ1Q_Q8_MR <= j->M; m0 += IQ1Q_Q8_MR) iq1q_q8_pass(j, &sc, t, m0, IQ1Q_Q8_MR);
            switch (j->M - m0) { /* the last rows, each count its own unrolled pass */
            case 3: iq1q_q8_pass(j, &sc, t, m0, 3); break;
            case 2: iq1q_q8_pass(j, &sc, t, m0, 2); break;
            case 1: iq1q_q8_pass(j, &sc, t, m0, 1); break;
            default: break;
            }
        }
        for (int64_t m = 0; !j->y && m < j->M; ++m) {
            float total = 0.0f;
            for (int k = 0; k < 16; ++k) total += sc.sum[16 * m + k];
            j->top[s * j->M + m] = sc.top[m];
            j->sum[s * j->M + m] = total;
        }
    } else {
        j->failed = 1;
    }
    free(sc.tile);
    free(sc.wscale);
    free(sc.wsum);
    free(sc.top);
    free(sc.sum);
}

/* The activations' quants + 128 and scales, then the slices on the pool. */
static int iq1q_q8_run(iq1q_q8_job *j, int nthreads, iq1q_pool_run_fn run) {
    j->nblk = j->K / IQ1Q_BLOCK_Q8_0;
    j->ntiles = (j->N + IQ1Q_Q8_TILE - 1) / IQ1Q_Q8_TILE;
    j->nslices = (j->ntiles + IQ1Q_Q8_SLICE - 1) / IQ1Q_Q8_SLICE;
    j->failed = 0;
    j->au = malloc((size_t)j->M * j->K);
    j->ascale = malloc((size_t)j->M * j->nblk * sizeof(float));
    if (j->au && j->ascale) {
        for (int64_t m = 0; m < j->M; ++m) iq1q_q8_pack_row(j, m);
        run(iq1q_q8_task, j, j->nslices, nthreads);
    } else {
        j->failed = 1;
    }
    free(j->au);
    free(j->ascale);
    return j->failed ? -1 : 0;
}

/* y (M x N, row-major) = X @ W.T for W: N rows of K values in ggml Q8_0, X: M rows in q8_0.
 * K a positive multiple of 32, M and N positive; the caller checked the buffer sizes.
 * Returns 0, or -1 when the scratch cannot be allocated. */
static int iq1q_q8_0_gemm(const uint8_t *w, int64_t N, int64_t K, const uint8_t *a, int64_t M, float *y,
                          int nthreads, iq1q_pool_run_fn run) {
    iq1q_q8_job j = {.N = N, .K = K, .M = M, .w = w, .a = a, .y = y};
    return iq1q_q8_run(&j, nthreads, run);
}

/* nll[m] = log(sum over n of exp(z[m][n])) - z[m][target[m]] for the logits z = X @ W.T (W,
 * X as iq1q_q8_0_gemm's; targets in [0, N)), without keeping z. Returns 0, or -1 when the
 * scratch cannot be allocated. */
static int iq1q_q8_0_nll(const uint8_t *w, int64_t N, int64_t K, const uint8_t *a, int64_t M,
                         const int64_t *target, double *nll, int nthreads, iq1q_pool_run_fn run) {
    const int64_t nslices = ((N + IQ1Q_Q8_TILE - 1) / IQ1Q_Q8_TILE + IQ1Q_Q8_SLICE - 1) / IQ1Q_Q8_SLICE;
    iq1q_q8_job j = {.N = N, .K = K, .M = M, .w = w, .a = a, .y = NULL, .target = target};
    j.top = malloc((size_t)nslices * M * sizeof(float));
    j.sum = malloc((size_t)nslices * M * sizeof(float));
    j.picked = malloc((size_t)M * sizeof(float));
    int err = !(j.top && j.sum && j.picked) || iq1q_q8_run(&j, nthreads, run);
    for (int64_t m = 0; !err && m < M; ++m) { /* the slices in order: the same bits at any thread count */
        double top = -INFINITY, total = 0.0;
        for (int64_t s = 0; s < nslices; ++s) top = j.top[s * M + m] > top ? j.top[s * M + m] : top;
        for (int64_t s = 0; s < nslices; ++s) total += j.sum[s * M + m] * exp(j.top[s * M + m] - top);
        nll[m] = log(total) + top - j.picked[m];
    }
    free(j.top);
    free(j.sum);
    free(j.picked);
    return err ? -1 : 0;
}

#else
#define IQ1Q_HAVE_Q8_0_GEMM 0
static inline int iq1q_q8_0_gemm(const uint8_t *w, int64_t N, int64_t K, const uint8_t *a, int64_t M, float *y,
                                 int nthreads, iq1q_pool_run_fn run) {
    (void)w, (void)N, (void)K, (void)a, (void)M, (void)y, (void)nthreads, (void)run;
    return -2; /* not built for this target: the shell never calls it */
}

static inline int iq1q_q8_0_nll(const uint8_t *w, int64_t N, int64_t K, const uint8_t *a, int64_t M,
                                const int64_t *target, double *nll, int nthreads, iq1q_pool_run_fn run) {
    (void)w, (void)N, (void)K, (void)a, (void)M, (void)target, (void)nll, (void)nthreads, (void)run;
    return -2;
}
#endif /* AVX-512 BW + VNNI */
#endif /* IQ1Q_Q8_0_GEMM_H */
