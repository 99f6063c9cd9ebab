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
 * Defines IQ1Q_HAVE_Q8_0_GEMM when the target has the instructions (AVX-512 BW + VNNI);
 * elsewhere the runner keeps its float path.
 */
#ifndef IQ1Q_Q8_0_GEMM_H
#define IQ1Q_Q8_0_GEMM_H

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
};

typedef struct {
    int64_t N, K, M, nblk, ntiles;
    const uint8_t *w;  /* N rows of ggml Q8_0 */
    const uint8_t *a;  /* M rows of q8_0 */
    float *y;          /* M x N */
    uint8_t *tiles;    /* [tile][block][8 quads][16 rows][4 bytes] */
    float *wscale;     /* [tile][block][16] */
    int32_t *wsum;     /* [tile][block][16]: -128 * sum of the block's weights */
    uint8_t *au;       /* [M][K] activation quants + 128 */
    float *ascale;     /* [M][nblk] */
} iq1q_q8_job;

/* Tile t of the weights into the scratch (rows past N are zeros). */
static void iq1q_q8_pack_tile(const iq1q_q8_job *j, int64_t t) {
    const size_t row_bytes = (size_t)j->nblk * IQ1Q_TYPE_SIZE_Q8_0;
    uint8_t *dst = j->tiles + (size_t)t * j->nblk * IQ1Q_Q8_TILE * IQ1Q_BLOCK_Q8_0;
    float *sc = j->wscale + (size_t)t * j->nblk * IQ1Q_Q8_TILE;
    int32_t *sum = j->wsum + (size_t)t * j->nblk * IQ1Q_Q8_TILE;
    for (int r = 0; r < IQ1Q_Q8_TILE; ++r) {
        const int64_t n = t * IQ1Q_Q8_TILE + r;
        for (int64_t b = 0; b < j->nblk; ++b) {
            uint8_t *blk = dst + (size_t)b * IQ1Q_Q8_TILE * IQ1Q_BLOCK_Q8_0;
            if (n >= j->N) {
                for (int q = 0; q < IQ1Q_BLOCK_Q8_0 / 4; ++q) memset(blk + (q * IQ1Q_Q8_TILE + r) * 4, 0, 4);
                sc[b * IQ1Q_Q8_TILE + r] = 0.0f;
                sum[b * IQ1Q_Q8_TILE + r] = 0;
                continue;
            }
            const iq1q_block_q8_0 *src = (const iq1q_block_q8_0 *)(j->w + (size_t)n * row_bytes) + b;
            int32_t s = 0;
            for (int q = 0; q < IQ1Q_BLOCK_Q8_0 / 4; ++q) {
                memcpy(blk + (q * IQ1Q_Q8_TILE + r) * 4, src->qs + 4 * q, 4);
                for (int i = 0; i < 4; ++i) s += src->qs[4 * q + i];
            }
            sc[b * IQ1Q_Q8_TILE + r] = iq1q_fp16_to_fp32(src->d);
            sum[b * IQ1Q_Q8_TILE + r] = -128 * s;
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

/* Rows m0 .. m0 + mr - 1 of y over the IQ1Q_Q8_TILE columns of tile t (mr <= IQ1Q_Q8_MR, a constant
 * where it is called, so that the accumulators stay in registers). */
static inline __attribute__((always_inline)) void iq1q_q8_pass(const iq1q_q8_job *j, int64_t t, int64_t m0,
                                                                const int mr) {
    const uint8_t *tile = j->tiles + (size_t)t * j->nblk * IQ1Q_Q8_TILE * IQ1Q_BLOCK_Q8_0;
    const float *wsc = j->wscale + (size_t)t * j->nblk * IQ1Q_Q8_TILE;
    const int32_t *wsum = j->wsum + (size_t)t * j->nblk * IQ1Q_Q8_TILE;
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
    for (int v = 0; v < IQ1Q_Q8_NV; ++v) {
        const int64_t n0 = t * IQ1Q_Q8_TILE + 16 * v;
        if (n0 >= j->N) break;
        const __mmask16 keep = j->N - n0 >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (j->N - n0)) - 1);
        for (int m = 0; m < mr; ++m) _mm512_mask_storeu_ps(j->y + (size_t)(m0 + m) * j->N + n0, keep, acc[m][v]);
    }
}

static void iq1q_q8_task(void *ctx, int64_t t) {
    const iq1q_q8_job *j = (const iq1q_q8_job *)ctx;
    iq1q_q8_pack_tile(j, t);
    int64_t m0 = 0;
    for (; m0 + IQ1Q_Q8_MR <= j->M; m0 += IQ1Q_Q8_MR) iq1q_q8_pass(j, t, m0, IQ1Q_Q8_MR);
    switch (j->M - m0) { /* the last rows, each count its own unrolled pass */
    case 3: iq1q_q8_pass(j, t, m0, 3); break;
    case 2: iq1q_q8_pass(j, t, m0, 2); break;
    case 1: iq1q_q8_pass(j, t, m0, 1); break;
    default: break;
    }
}

/* y (M x N, row-major) = X @ W.T for W: N rows of K values in ggml Q8_0, X: M rows in q8_0.
 * K a positive multiple of 32, M and N positive; the caller checked the buffer sizes.
 * Returns 0, or -1 when the scratch cannot be allocated. */
static int iq1q_q8_0_gemm(const uint8_t *w, int64_t N, int64_t K, const uint8_t *a, int64_t M, float *y,
                          int nthreads, iq1q_pool_run_fn run) {
    iq1q_q8_job j = {N, K, M, K / IQ1Q_BLOCK_Q8_0, (N + IQ1Q_Q8_TILE - 1) / IQ1Q_Q8_TILE, w, a, y};
    const size_t tiles = (size_t)j.ntiles * IQ1Q_Q8_TILE * K;
    const size_t scales = (size_t)j.ntiles * j.nblk * IQ1Q_Q8_TILE;
    j.tiles = malloc(tiles);
    j.wscale = malloc(scales * sizeof(float));
    j.wsum = malloc(scales * sizeof(int32_t));
    j.au = malloc((size_t)M * K);
    j.ascale = malloc((size_t)M * j.nblk * sizeof(float));
    int err = !(j.tiles && j.wscale && j.wsum && j.au && j.ascale);
    if (!err) {
        for (int64_t m = 0; m < M; ++m) iq1q_q8_pack_row(&j, m);
        run(iq1q_q8_task, &j, j.ntiles, nthreads); /* each task packs its own tile */
    }
    free(j.tiles);
    free(j.wscale);
    free(j.wsum);
    free(j.au);
    free(j.ascale);
    return err ? -1 : 0;
}

#else
#define IQ1Q_HAVE_Q8_0_GEMM 0
static inline int iq1q_q8_0_gemm(const uint8_t *w, int64_t N, int64_t K, const uint8_t *a, int64_t M, float *y,
                                 int nthreads, iq1q_pool_run_fn run) {
    (void)w, (void)N, (void)K, (void)a, (void)M, (void)y, (void)nthreads, (void)run;
    return -2; /* not built for this target: the shell never calls it */
}
#endif /* AVX-512 BW + VNNI */
#endif /* IQ1Q_Q8_0_GEMM_H */
