/* ref_quantize.h: the IQ1 weight quantizers (docs/spec.md §8), portable C, no intrinsics.
 *
 * Byte-exact with ik_llama.cpp built with -ffp-contract=off: every float
 * expression below is evaluated in float32 in the order docs/spec.md §8 writes it, so
 * this file must be compiled without FMA contraction and without -ffast-math.
 *
 * Re-entrant: the only mutable global state is the neighbour table built once
 * by iq1q_ref_quantize_init(); the quantizers only read it. Everything else
 * lives on the caller's stack (plus one heap buffer per call for very long
 * _r4 rows). The tables are `static`, i.e. private to the translation unit
 * that includes this header: call init from that same unit.
 *
 * API (all static):
 *   int  iq1q_ref_quantize_init(void);   docs/spec.md §8.1 tables; idempotent; 0 or -1
 *                                        (allocation failure). Must have
 *                                        succeeded before any quantizer runs.
 *   void iq1q_ref_quantize_iq1_s   (x, y, nrows, n, imatrix);   n % 256 == 0
 *   void iq1q_ref_quantize_iq1_m   (x, y, nrows, n, imatrix);   n % 256 == 0
 *   void iq1q_ref_quantize_iq1_s_r4(x, y, nrows, n, imatrix);   n % 32 == 0, nrows % 4 == 0
 *   void iq1q_ref_quantize_iq1_m_r4(x, y, nrows, n, imatrix);   n % 32 == 0, nrows % 4 == 0
 * x: nrows rows of n finite floats, row-major. y: row r at y + r*row_size
 * (plain) or group g of 4 rows at y + 4*g*row_size (_r4). imatrix: NULL or
 * n non-negative floats shared by all rows.
 *
 * Deliberate differences from ik_llama, all in cases where ik aborts, reads
 * an uninitialised value or produces a meaningless block:
 *   - IQ1_M_R4: the carried sign pairs start at 0 in every 4-row group.
 *   - plain IQ1_M: a skipped (near-zero) 16-sub-block gets sign pair 0, not a
 *     stale one.
 *   - plain IQ1_S: a 32-block whose imatrix is zero on all its non-zero
 *     weights is quantized as without imatrix (ik asserts or emits scale 0).
 *   - a block search that finds no admissible split (only possible with
 *     degenerate weights) yields scale 0 instead of an assertion failure.
 */
#ifndef IQ1Q_REF_QUANTIZE_H
#define IQ1Q_REF_QUANTIZE_H

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "iq1q_common.h"
#include "iq1q_grid.h"

/* The public entry points are static (header-only); the attribute keeps
 * -Wunused-function quiet in units that use only some of them. */
#if defined(__GNUC__) || defined(__clang__)
#define IQ1Q_Q_API static __attribute__((unused))
#else
#define IQ1Q_Q_API static
#endif

/* ======================================================================== */
/* Neighbour tables (docs/spec.md §8.1)                                              */
/* ======================================================================== */

/* Codes 0 .. 0xAAAA + 1: every code the quantizers can form (levels <= 2). */
#define IQ1Q_KMAP_SIZE 43692

/* kmap[u] >= 0: u is grid entry kmap[u]. kmap[u] < 0: the neighbour list of u
 * starts at neigh[-kmap[u] - 1] (count, then that many grid indices). */
static int32_t *iq1q_q_kmap = NULL;
static uint16_t *iq1q_q_neigh = NULL;
/* levels of positions 0..3 of grid entry k as one base-3 number
 * l0 + 3 l1 + 9 l2 + 27 l3 (used by the neighbour search) */
static uint8_t iq1q_q_lo3[IQ1Q_GRID_SIZE];

/* Sum over 4 fields of (2a+1 - (2b+1))^2 = 4 (a-b)^2, for bytes a, b whose
 * 2-bit fields are all <= 2 (given as base-3 numbers 0..80). */
static void iq1q_q_partial_dist(uint8_t pd[81][81]) {
    for (int a = 0; a < 81; ++a) {
        for (int b = 0; b < 81; ++b) {
            int s = 0, ta = a, tb = b;
            for (int j = 0; j < 4; ++j) {
                const int d = ta % 3 - tb % 3;
                s += 4 * d * d;
                ta /= 3;
                tb /= 3;
            }
            pd[a][b] = (uint8_t)s;
        }
    }
}

IQ1Q_Q_API int iq1q_ref_quantize_init(void) {
    if (iq1q_q_kmap && iq1q_q_neigh) return 0;

    /* byte -> its four 2-bit fields as one base-3 number (field 0 lowest),
     * -1 if a field is 3 */
    int b3[256];
    for (int v = 0; v < 256; ++v) {
        int t = 0, ok = 1;
        for (int j = 3; j >= 0; --j) {
            const int f = (v >> (2 * j)) & 3;
            if (f == 3) ok = 0;
            t = 3 * t + f;
        }
        b3[v] = ok ? t : -1;
    }

    uint8_t pd[81][81];
    iq1q_q_partial_dist(pd);

    uint8_t glo[IQ1Q_GRID_SIZE], ghi[IQ1Q_GRID_SIZE];
    for (int k = 0; k < IQ1Q_GRID_SIZE; ++k) {
        glo[k] = (uint8_t)b3[iq1q_grid_codes[k] & 0xff];
        ghi[k] = (uint8_t)b3[iq1q_grid_codes[k] >> 8];
        iq1q_q_lo3[k] = glo[k];
    }

    int32_t *kmap = (int32_t *)malloc(IQ1Q_KMAP_SIZE * sizeof(int32_t));
    size_t cap = 1u << 19, len = 0;
    uint16_t *neigh = (uint16_t *)malloc(cap * sizeof(uint16_t));
    if (!kmap || !neigh) goto fail;

    /* -1 = "list at offset 0": codes containing a 3 are never looked up,
     * but if one were, it still lands on a valid list. */
    for (int u = 0; u < IQ1Q_KMAP_SIZE; ++u) kmap[u] = -1;
    for (int k = 0; k < IQ1Q_GRID_SIZE; ++k) kmap[iq1q_grid_codes[k]] = k;

    uint8_t d2[IQ1Q_GRID_SIZE];
    for (int u = 0; u < IQ1Q_KMAP_SIZE; ++u) {
        if (kmap[u] >= 0) continue;
        const int lo = b3[u & 0xff], hi = b3[(u >> 8) & 0xff];
        if (lo < 0 || hi < 0) continue;
        /* d2 takes the values 0, 4, ..., 128: count them per value (bin d2/4),
         * then place the entries of the 3 smallest values by counting sort,
         * which yields (d2, k) ascending without comparing pairs. */
        const uint8_t *rlo = pd[lo], *rhi = pd[hi];
        int hist[33] = {0};
        for (int k = 0; k < IQ1Q_GRID_SIZE; ++k) {
            const uint8_t d = (uint8_t)((rlo[glo[k]] + rhi[ghi[k]]) >> 2);
            d2[k] = d;
            hist[d]++;
        }
        int slot[33], pos[3], nbins = 0, count = 0;
        for (int b = 0; b < 33; ++b) slot[b] = -1;
        for (int b = 0; b < 33 && nbins < 3; ++b) {
            if (!hist[b]) continue;
            slot[b] = nbins;
            pos[nbins++] = count;
            count += hist[b];
        }
        if (len + 1 + (size_t)count > cap) {
            while (len + 1 + (size_t)count > cap) cap *= 2;
            uint16_t *t = (uint16_t *)realloc(neigh, cap * sizeof(uint16_t));
            if (!t) goto fail;
            neigh = t;
        }
        kmap[u] = -(int32_t)(len + 1);
        neigh[len] = (uint16_t)count;
        uint16_t *list = neigh + len + 1;
        for (int k = 0; k < IQ1Q_GRID_SIZE; ++k) {
            const int s = slot[d2[k]];
            if (s >= 0) list[pos[s]++] = (uint16_t)k;
        }
        len += 1 + (size_t)count;
    }
    /* publish only complete tables */
    iq1q_q_neigh = neigh;
    iq1q_q_kmap = kmap;
    return 0;
fail:
    free(kmap);
    free(neigh);
    return -1;
}

/* ======================================================================== */
/* Shared helpers                                                           */
/* ======================================================================== */

static inline void iq1q_q_put16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)(v & 0xff);
    p[1] = (uint8_t)(v >> 8);
}
static inline uint16_t iq1q_q_get16(const uint8_t *p) {
    return (uint16_t)(p[0] | (p[1] << 8));
}
static inline float iq1q_q_max(float a, float b) { return a > b ? a : b; }
static inline int iq1q_q_clamp(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* Level tables of docs/spec.md §8.2: P = positive delta, M = negative delta. */
static const float iq1q_q_P[3] = {-1.0f + IQ1Q_DELTA, IQ1Q_DELTA, 1.0f + IQ1Q_DELTA};
static const float iq1q_q_M[3] = {-1.0f - IQ1Q_DELTA, -IQ1Q_DELTA, 1.0f - IQ1Q_DELTA};

/* Stable ascending sort of n (16 or 32) values: position i goes to rank
 * #{j : x_j < x_i} + #{j < i : x_j == x_i}, i.e. ties keep their original
 * order, which is the order glibc's (merge sort) qsort gave ik (docs/spec.md §8.7.1).
 * Branch-free and vectorizable, unlike an insertion sort. ord[rank] = i. */
static inline void iq1q_q_sort(const float *x, int n, int *ord) {
    for (int i = 0; i < n; ++i) {
        const float xi = x[i];
        int r = 0;
        for (int j = 0; j < n; ++j) r += (x[j] < xi) | ((x[j] == xi) & (j < i));
        ord[r] = i;
    }
}

/* Grid index for the 8 levels L[0..7] (docs/spec.md §8.2 step 6). Off the grid, pick
 * the listed neighbour with the smallest weighted error (first one on ties)
 * and overwrite L with its levels; *snapped is set. Always returns a valid
 * index: if every error is Inf/NaN the first neighbour is taken. */
static inline int iq1q_q_snap(uint8_t *L, const float *x, const float *w, float scale,
                              const float *V, int *snapped) {
    int u = 0;
    for (int j = 0; j < 8; ++j) u |= L[j] << (2 * j);
    const int32_t m = iq1q_q_kmap[u];
    if (m >= 0) return m;
    *snapped = 1;
    const uint16_t *nb = iq1q_q_neigh + (-m - 1);
    const int cnt = nb[0];
    /* T[j][l] is the error term of position j at level l, (w*diff)*diff with
     * diff = scale*V[l] - x[j], exactly what a per-candidate loop computes.
     * The running sums over positions 0..3 take only 81 values: tabulate
     * them (S4, built in the same addition order), so a candidate costs one
     * lookup plus the 4 additions of positions 4..7, in j order as in ik. */
    float T[8][4];
    for (int j = 0; j < 8; ++j) {
        for (int l = 0; l < 3; ++l) {
            const float diff = scale * V[l] - x[j];
            T[j][l] = w[j] * diff * diff;
        }
        T[j][3] = 0.0f; /* level 3 never occurs on the grid */
    }
    float S1[3], S2[9], S3[27], S4[81];
    for (int a = 0; a < 3; ++a) S1[a] = 0.0f + T[0][a];
    for (int b = 0; b < 3; ++b)
        for (int a = 0; a < 3; ++a) S2[a + 3 * b] = S1[a] + T[1][b];
    for (int b = 0; b < 3; ++b)
        for (int a = 0; a < 9; ++a) S3[a + 9 * b] = S2[a] + T[2][b];
    for (int b = 0; b < 3; ++b)
        for (int a = 0; a < 27; ++a) S4[a + 27 * b] = S3[a] + T[3][b];
    float best = FLT_MAX;
    int bi = -1;
    for (int c = 1; c <= cnt; ++c) {
        const int k = nb[c];
        const unsigned g = iq1q_grid_codes[k];
        const float e = S4[iq1q_q_lo3[k]] + T[4][(g >> 8) & 3] + T[5][(g >> 10) & 3] + T[6][(g >> 12) & 3] +
                        T[7][(g >> 14) & 3];
        if (e < best) {
            best = e;
            bi = k;
        }
    }
    if (bi < 0) bi = nb[1];
    const unsigned g = iq1q_grid_codes[bi];
    for (int j = 0; j < 8; ++j) L[j] = (uint8_t)((g >> (2 * j)) & 3);
    return bi;
}

/* ======================================================================== */
/* docs/spec.md §8.2: one block of 32 (IQ1_S, IQ1_S_R4)                              */
/* ======================================================================== */

/* Returns the block scale (>= 0); idx[4] grid indices; *shift = +1 / -1. */
static float iq1q_q_block32(const float *x, const float *w, uint16_t idx[4], int *shift) {
    float mx = fabsf(x[0]);
    for (int i = 1; i < 32; ++i) mx = iq1q_q_max(mx, fabsf(x[i]));
    if (mx < 1e-12f) goto none;

    int ord[32];
    iq1q_q_sort(x, 32, ord);
    /* prefix sums, padded to 36 so that chunks of 4 splits never leave the
     * arrays (the lanes past i2 = 32 are masked out) */
    float SX[36], SW[36];
    SX[0] = SW[0] = 0.0f;
    for (int t = 0; t < 32; ++t) {
        const int i = ord[t];
        SX[t + 1] = SX[t] + w[i] * x[i];
        SW[t + 1] = SW[t] + w[i];
    }
    for (int t = 33; t < 36; ++t) SX[t] = SW[t] = 0.0f;

    const float P0 = iq1q_q_P[0], P2 = iq1q_q_P[2], M0 = iq1q_q_M[0], M2 = iq1q_q_M[2];
    const float V1 = IQ1Q_DELTA;
    /* Terms that depend on i2 only: (S[32]-S[i2])*V2 and ((W[32]-W[i2])*V2)*V2. */
    float cxP[36], cxM[36], cwP[36], cwM[36];
    for (int i2 = 0; i2 < 36; ++i2) {
        const float dx = SX[32] - SX[i2], dw = SW[32] - SW[i2];
        cxP[i2] = dx * P2;
        cxM[i2] = dx * M2;
        cwP[i2] = dw * P2 * P2;
        cwM[i2] = dw * M2 * M2;
    }

    float best = -FLT_MIN, scale = mx;
    int b1 = -1, b2 = -1, bshift = 0;
    for (int i1 = 0; i1 <= 32; ++i1) {
        /* SX[0] = SW[0] = 0, so (S[i1]-S[0]) is S[i1] exactly */
        const float axP = SX[i1] * P0, axM = SX[i1] * M0;
        const float awP = SW[i1] * P0 * P0, awM = SW[i1] * M0 * M0;
        const float sx1 = SX[i1], sw1 = SW[i1];
        /* Chunks of 4 splits. A split can only update best if it beats the
         * current best, so the exact sequential scan only has to start at the
         * first lane that beats the best the chunk started with: the lanes
         * before it fail the same test in sequence too. */
        for (int c0 = i1; c0 <= 32; c0 += 4) {
            const int nl = 33 - c0 < 4 ? 33 - c0 : 4;
            float qxP[4], q2P[4], qxM[4], q2M[4];
            int ok[4];
            for (int l = 0; l < 4; ++l) { /* fixed trip count: vectorizable */
                const int i2 = c0 + l;
                /* middle level: V1 = +-0.125 for P / M. Rounding is sign
                 * symmetric, so the M terms are exactly -tx and +tw. */
                const float tx = (SX[i2] - sx1) * V1;
                const float tw = (SW[i2] - sw1) * V1 * V1;
                qxP[l] = axP + tx + cxP[i2];
                q2P[l] = awP + tw + cwP[i2];
                qxM[l] = axM - tx + cxM[i2];
                q2M[l] = awM + tw + cwM[i2];
                ok[l] = ((q2P[l] > 0) & (qxP[l] * qxP[l] > best * q2P[l])) |
                        ((q2M[l] > 0) & (qxM[l] * qxM[l] > best * q2M[l]));
            }
            int l = 0;
            while (l < nl && !ok[l]) ++l;
            for (; l < nl; ++l) {
                if (q2P[l] > 0 && qxP[l] * qxP[l] > best * q2P[l]) {
                    scale = qxP[l] / q2P[l];
                    best = scale * qxP[l];
                    b1 = i1; b2 = c0 + l; bshift = 1;
                }
                if (q2M[l] > 0 && qxM[l] * qxM[l] > best * q2M[l]) {
                    scale = qxM[l] / q2M[l];
                    best = scale * qxM[l];
                    b1 = i1; b2 = c0 + l; bshift = -1;
                }
            }
        }
    }
    /* ik asserts here; with all-zero (or non-finite) weights nothing
     * qualifies: return the tiny-block result instead. */
    if (b1 < 0) goto none;

    uint8_t L[32];
    for (int t = 0; t < 32; ++t) L[ord[t]] = (uint8_t)(t < b1 ? 0 : t < b2 ? 1 : 2);
    if (scale < 0) {
        /* P with a negative scale is M mirrored */
        for (int j = 0; j < 32; ++j) L[j] = (uint8_t)(2 - L[j]);
        scale = -scale;
        bshift = -bshift;
    }
    const float *V = bshift == 1 ? iq1q_q_P : iq1q_q_M;
    int snapped = 0;
    for (int k = 0; k < 4; ++k)
        idx[k] = (uint16_t)iq1q_q_snap(L + 8 * k, x + 8 * k, w + 8 * k, scale, V, &snapped);
    if (snapped) {
        /* the snapped levels deserve their own least-squares scale */
        float sqx = 0.0f, sq2 = 0.0f;
        for (int j = 0; j < 32; ++j) {
            const float q = V[L[j]];
            sqx += w[j] * q * x[j];
            sq2 += w[j] * q * q;
        }
        if (sqx > 0 && sq2 > 0) scale = sqx / sq2;
    }
    *shift = bshift;
    return scale;
none:
    idx[0] = idx[1] = idx[2] = idx[3] = 0;
    *shift = 1;
    return 0.0f;
}

/* ======================================================================== */
/* docs/spec.md §8.3: one block of 16 = two groups of 8 with their own delta sign    */
/* ======================================================================== */

/* Returns 1 and sets *scale (>= 0), idx[2], *kk (0..3: (+,+) (+,-) (-,+) (-,-))
 * or returns 0 if no split qualifies (ik asserts; only with degenerate weights). */
static int iq1q_q_block16(const float *x, const float *w, float *scale_out, uint16_t idx[2], int *kk) {
    int ord[16];
    iq1q_q_sort(x, 16, ord);
    /* padded to 20 for chunks of 4 splits (lanes past i2 = 16 masked out) */
    float SX1[20], SW1[20], SX2[20], SW2[20];
    SX1[0] = SW1[0] = SX2[0] = SW2[0] = 0.0f;
    for (int t = 0; t < 16; ++t) {
        const int i = ord[t];
        if (i < 8) {
            SX1[t + 1] = SX1[t] + w[i] * x[i];
            SW1[t + 1] = SW1[t] + w[i];
            SX2[t + 1] = SX2[t];
            SW2[t + 1] = SW2[t];
        } else {
            SX2[t + 1] = SX2[t] + w[i] * x[i];
            SW2[t + 1] = SW2[t] + w[i];
            SX1[t + 1] = SX1[t];
            SW1[t + 1] = SW1[t];
        }
    }
    for (int t = 17; t < 20; ++t) SX1[t] = SW1[t] = SX2[t] = SW2[t] = 0.0f;
    const float P0 = iq1q_q_P[0], P2 = iq1q_q_P[2], M0 = iq1q_q_M[0], M2 = iq1q_q_M[2];
    const float V1 = IQ1Q_DELTA;
    /* i2-only terms: A3/B3 of docs/spec.md §8.3 for both level tables */
    float a3xP[20], a3xM[20], a3wP[20], a3wM[20], b3xP[20], b3xM[20], b3wP[20], b3wM[20];
    for (int i2 = 0; i2 < 20; ++i2) {
        const float d1x = SX1[16] - SX1[i2], d1w = SW1[16] - SW1[i2];
        const float d2x = SX2[16] - SX2[i2], d2w = SW2[16] - SW2[i2];
        a3xP[i2] = d1x * P2; a3xM[i2] = d1x * M2;
        a3wP[i2] = d1w * P2 * P2; a3wM[i2] = d1w * M2 * M2;
        b3xP[i2] = d2x * P2; b3xM[i2] = d2x * M2;
        b3wP[i2] = d2w * P2 * P2; b3wM[i2] = d2w * M2 * M2;
    }

    float best = 0.0f, scale = 0.0f;
    int b1 = -1, b2 = -1, bk = -1;
    for (int i1 = 0; i1 <= 16; ++i1) {
        const float a1xP = SX1[i1] * P0, a1xM = SX1[i1] * M0;
        const float a1wP = SW1[i1] * P0 * P0, a1wM = SW1[i1] * M0 * M0;
        const float b1xP = SX2[i1] * P0, b1xM = SX2[i1] * M0;
        const float b1wP = SW2[i1] * P0 * P0, b1wM = SW2[i1] * M0 * M0;
        /* same chunked exact scan as in iq1q_q_block32 */
        for (int c0 = i1; c0 <= 16; c0 += 4) {
            const int nl = 17 - c0 < 4 ? 17 - c0 : 4;
            float qx[4][4], q2[4][4];
            for (int l = 0; l < 4; ++l) { /* fixed trip count: vectorizable */
                const int i2 = c0 + l;
                /* middle terms; for M they are exactly -t?x and +t?w */
                const float t1x = (SX1[i2] - SX1[i1]) * V1, t1w = (SW1[i2] - SW1[i1]) * V1 * V1;
                const float t2x = (SX2[i2] - SX2[i1]) * V1, t2w = (SW2[i2] - SW2[i1]) * V1 * V1;
                /* A1 + A2 + A3 of the first group with P / M, then + B1 + B2 + B3 */
                const float AxP = a1xP + t1x + a3xP[i2], AxM = a1xM - t1x + a3xM[i2];
                const float AwP = a1wP + t1w + a3wP[i2], AwM = a1wM + t1w + a3wM[i2];
                qx[0][l] = AxP + b1xP + t2x + b3xP[i2];
                qx[1][l] = AxP + b1xM - t2x + b3xM[i2];
                qx[2][l] = AxM + b1xP + t2x + b3xP[i2];
                qx[3][l] = AxM + b1xM - t2x + b3xM[i2];
                q2[0][l] = AwP + b1wP + t2w + b3wP[i2];
                q2[1][l] = AwP + b1wM + t2w + b3wM[i2];
                q2[2][l] = AwM + b1wP + t2w + b3wP[i2];
                q2[3][l] = AwM + b1wM + t2w + b3wM[i2];
            }
            int ok[4];
            for (int l = 0; l < 4; ++l) {
                ok[l] = 0;
                for (int k = 0; k < 4; ++k) ok[l] |= (q2[k][l] > 0) & (qx[k][l] * qx[k][l] > best * q2[k][l]);
            }
            int l = 0;
            while (l < nl && !ok[l]) ++l;
            for (; l < nl; ++l) {
                for (int k = 0; k < 4; ++k) {
                    if (q2[k][l] > 0 && qx[k][l] * qx[k][l] > best * q2[k][l]) {
                        scale = qx[k][l] / q2[k][l];
                        best = scale * qx[k][l];
                        b1 = i1; b2 = c0 + l; bk = k;
                    }
                }
            }
        }
    }
    if (b1 < 0) return 0;

    uint8_t L[16];
    for (int t = 0; t < 16; ++t) L[ord[t]] = (uint8_t)(t < b1 ? 0 : t < b2 ? 1 : 2);
    if (scale < 0) {
        for (int j = 0; j < 16; ++j) L[j] = (uint8_t)(2 - L[j]);
        scale = -scale;
        bk = 3 - bk;
    }
    int snapped = 0;
    idx[0] = (uint16_t)iq1q_q_snap(L, x, w, scale, bk < 2 ? iq1q_q_P : iq1q_q_M, &snapped);
    idx[1] = (uint16_t)iq1q_q_snap(L + 8, x + 8, w + 8, scale, bk % 2 == 0 ? iq1q_q_P : iq1q_q_M, &snapped);
    if (snapped) {
        /* refit: best scale and sign pair for the final levels (k may change) */
        float sqx[4] = {0, 0, 0, 0}, sq2[4] = {0, 0, 0, 0};
        for (int j = 0; j < 16; ++j) {
            const float qp = iq1q_q_P[L[j]], qm = iq1q_q_M[L[j]];
            const float wx = w[j] * x[j];
            sqx[0] += wx * qp;
            sq2[0] += w[j] * qp * qp;
            sqx[3] += wx * qm;
            sq2[3] += w[j] * qm * qm;
            if (j < 8) {
                sqx[1] += wx * qp;
                sq2[1] += w[j] * qp * qp;
                sqx[2] += wx * qm;
                sq2[2] += w[j] * qm * qm;
            } else {
                sqx[2] += wx * qp;
                sq2[2] += w[j] * qp * qp;
                sqx[1] += wx * qm;
                sq2[1] += w[j] * qm * qm;
            }
        }
        float b = 0.0f;
        for (int k = 0; k < 4; ++k) {
            if (sqx[k] > 0 && sq2[k] > 0 && sqx[k] * sqx[k] > b * sq2[k]) {
                scale = sqx[k] / sq2[k];
                b = scale * sqx[k];
                bk = k;
            }
        }
    }
    *scale_out = scale;
    *kk = bk;
    return 1;
}

/* sign masks of IQ1_M / IQ1_M_R4 qh nibbles for k = 0..3 */
static const uint8_t iq1q_q_mmask[4] = {0x00, 0x80, 0x08, 0x88};

/* ======================================================================== */
/* IQ1_S_R4 (docs/spec.md §8.4)                                                      */
/* ======================================================================== */

/* One row r of 32-block `blk` (24 bytes); writes qs and qh (without the
 * scale bits) and returns the block scale. */
static float iq1q_q_s_r4_row(const float *xb, const float *im, uint8_t *blk, int r) {
    float s2 = 0.0f;
    for (int j = 0; j < 32; ++j) s2 += xb[j] * xb[j];
    if (s2 < 1e-14f) {
        /* all-zero block: the zero grid entry, scale 0, positive delta */
        for (int i = 0; i < 4; ++i) blk[4 * i + r] = IQ1Q_GRID_ZERO & 0xff;
        iq1q_q_put16(blk + 16 + 2 * r, 0x0924);
        return 0.0f;
    }
    const float sigma2 = 1.5f * s2 / 32;
    float w[32];
    int plain = 1;
    if (im) {
        float swx = 0.0f;
        for (int j = 0; j < 32; ++j) w[j] = im[j] * sqrtf(sigma2 + xb[j] * xb[j]);
        for (int j = 0; j < 32; ++j) swx += w[j] * fabsf(xb[j]);
        plain = swx < 1e-14f; /* imatrix blind to this block: ignore it */
    }
    if (plain)
        for (int j = 0; j < 32; ++j) w[j] = sqrtf(sigma2 + xb[j] * xb[j]);
    uint16_t idx[4];
    int shift;
    const float scale = iq1q_q_block32(xb, w, idx, &shift);
    uint16_t h = 0;
    for (int i = 0; i < 4; ++i) {
        blk[4 * i + r] = (uint8_t)(idx[i] & 0xff);
        h |= (uint16_t)((idx[i] >> 8) << (3 * i));
    }
    if (shift == -1) h |= 0x8000;
    iq1q_q_put16(blk + 16 + 2 * r, h);
    return scale;
}

/* One group of 4 rows. sc: 4*nb floats of scratch, or NULL to recompute the
 * block scales in a second pass (identical results, only slower). */
static void iq1q_q_s_r4_group(const float *x, uint8_t *y, int64_t n, const float *imatrix, float *sc) {
    const int64_t nb = n / 32;
    float mx[4] = {0, 0, 0, 0};
    for (int64_t b = 0; b < nb; ++b) {
        uint8_t *blk = y + 8 + 24 * b;
        for (int r = 0; r < 4; ++r) {
            const float s = iq1q_q_s_r4_row(x + r * n + 32 * b, imatrix ? imatrix + 32 * b : NULL, blk, r);
            if (sc) sc[4 * b + r] = s;
            mx[r] = iq1q_q_max(mx[r], s);
        }
    }
    float inv[4];
    for (int r = 0; r < 4; ++r) {
        /* 1.0625: ik's empirical fudge factor for the row scale */
        iq1q_q_put16(y + 2 * r, iq1q_fp32_to_fp16(1.0625f * mx[r] / 15));
        inv[r] = mx[r] > 0 ? 15 / mx[r] : 0.0f;
    }
    for (int64_t b = 0; b < nb; ++b) {
        uint8_t *blk = y + 8 + 24 * b;
        for (int r = 0; r < 4; ++r) {
            const float s = sc ? sc[4 * b + r]
                               : iq1q_q_s_r4_row(x + r * n + 32 * b, imatrix ? imatrix + 32 * b : NULL, blk, r);
            const int l = iq1q_q_clamp(iq1q_nearest_int(0.5f * (s * inv[r] - 1)), 0, 7);
            iq1q_q_put16(blk + 16 + 2 * r, (uint16_t)(iq1q_q_get16(blk + 16 + 2 * r) | (l << 12)));
        }
    }
}

/* Scratch for the per-block scales of one 4-row group: stack for rows up to
 * 8192 columns, else one heap buffer per call (NULL = two-pass fallback). */
#define IQ1Q_Q_STACK_BLOCKS 256

IQ1Q_Q_API void iq1q_ref_quantize_iq1_s_r4(const float *x, uint8_t *y, int64_t nrows, int64_t n, const float *imatrix) {
    const int64_t nb = n / 32;
    const size_t row_size = IQ1Q_ROW_SIZE(IQ1_S_R4, n);
    float stack_sc[4 * IQ1Q_Q_STACK_BLOCKS];
    float *sc = nb <= IQ1Q_Q_STACK_BLOCKS ? stack_sc : (float *)malloc((size_t)nb * 4 * sizeof(float));
    for (int64_t g = 0; g < nrows / 4; ++g)
        iq1q_q_s_r4_group(x + 4 * g * n, y + 4 * (size_t)g * row_size, n, imatrix, sc);
    if (sc != stack_sc) free(sc);
}

/* ======================================================================== */
/* IQ1_M_R4 (docs/spec.md §8.5)                                                      */
/* ======================================================================== */

/* One row r of 32-block `blk` (28 bytes): qs, qh; returns the two half scales.
 * shift[0..1] carry the last sign pair of each half across blocks and rows of
 * the group (docs/spec.md §8.7.3): a half with (almost) no energy reuses it. */
static void iq1q_q_m_r4_row(const float *xb, const float *im, uint8_t *blk, int r, int shift[2], float s[2]) {
    float sl = 0.0f, sh = 0.0f;
    for (int j = 0; j < 16; ++j) sl += xb[j] * xb[j];
    for (int j = 16; j < 32; ++j) sh += xb[j] * xb[j];
    const float s2 = sl + sh;
    s[0] = s[1] = 0.0f;
    if (s2 < 1e-14f) {
        for (int i = 0; i < 4; ++i) blk[4 * i + r] = IQ1Q_GRID_ZERO & 0xff;
        blk[16 + r] = blk[20 + r] = 0x44; /* high bits 4 | 4 << 4, no signs */
        return;
    }
    const float sigma2 = 1.5f * s2 / 32;
    float beta[32], w[32];
    for (int j = 0; j < 32; ++j) beta[j] = sqrtf(sigma2 + xb[j] * xb[j]);
    if (im) {
        for (int j = 0; j < 32; ++j) w[j] = im[j] * beta[j];
        float swx = 0.0f;
        for (int j = 0; j < 16; ++j) swx += w[j] * fabsf(xb[j]);
        if (swx < 1e-14f) memcpy(w, beta, 16 * sizeof(float));
        swx = 0.0f;
        for (int j = 16; j < 32; ++j) swx += w[j] * fabsf(xb[j]);
        if ((double)swx < 1e-14) memcpy(w + 16, beta + 16, 16 * sizeof(float)); /* ik: double literal */
    } else {
        memcpy(w, beta, sizeof(w));
    }
    uint16_t idx[4] = {IQ1Q_GRID_ZERO, IQ1Q_GRID_ZERO, IQ1Q_GRID_ZERO, IQ1Q_GRID_ZERO};
    const float e[2] = {sl, sh};
    for (int hf = 0; hf < 2; ++hf) {
        int k;
        if (e[hf] > 1e-14f && iq1q_q_block16(xb + 16 * hf, w + 16 * hf, &s[hf], idx + 2 * hf, &k)) {
            shift[hf] = k;
        } else {
            /* no energy (or no usable weights): scale 0 zeroes this half */
            s[hf] = 0.0f;
            idx[2 * hf] = idx[2 * hf + 1] = IQ1Q_GRID_ZERO;
        }
    }
    for (int i = 0; i < 4; ++i) blk[4 * i + r] = (uint8_t)(idx[i] & 0xff);
    blk[16 + r] = (uint8_t)(((idx[0] >> 8) | ((idx[1] >> 8) << 4)) | iq1q_q_mmask[shift[0]]);
    blk[20 + r] = (uint8_t)(((idx[2] >> 8) | ((idx[3] >> 8) << 4)) | iq1q_q_mmask[shift[1]]);
}

static void iq1q_q_m_r4_group(const float *x, uint8_t *y, int64_t n, const float *imatrix, float *sc) {
    const int64_t nb = n / 32;
    float mx[4] = {0, 0, 0, 0};
    /* Reset per group so the bytes do not depend on how rows are split
     * across calls/threads (ik leaves the first value uninitialised). */
    int shift[2] = {0, 0};
    for (int64_t b = 0; b < nb; ++b) {
        uint8_t *blk = y + 8 + 28 * b;
        for (int r = 0; r < 4; ++r) {
            float s[2];
            iq1q_q_m_r4_row(x + r * n + 32 * b, imatrix ? imatrix + 32 * b : NULL, blk, r, shift, s);
            if (sc) {
                sc[8 * b + 2 * r] = s[0];
                sc[8 * b + 2 * r + 1] = s[1];
            }
            mx[r] = iq1q_q_max(iq1q_q_max(mx[r], s[0]), s[1]);
        }
    }
    float inv[4];
    for (int r = 0; r < 4; ++r) {
        iq1q_q_put16(y + 2 * r, iq1q_fp32_to_fp16(1.0625f * mx[r] / 15));
        inv[r] = mx[r] > 0 ? 15 / mx[r] : 0.0f;
    }
    shift[0] = shift[1] = 0; /* second pass (sc == NULL) replays the carry */
    for (int64_t b = 0; b < nb; ++b) {
        uint8_t *blk = y + 8 + 28 * b;
        for (int r = 0; r < 4; ++r) {
            float s[2];
            if (sc) {
                s[0] = sc[8 * b + 2 * r];
                s[1] = sc[8 * b + 2 * r + 1];
            } else {
                iq1q_q_m_r4_row(x + r * n + 32 * b, imatrix ? imatrix + 32 * b : NULL, blk, r, shift, s);
            }
            const int l1 = iq1q_q_clamp(iq1q_nearest_int(s[0] * inv[r]), 0, 15);
            const int l2 = iq1q_q_clamp(iq1q_nearest_int(s[1] * inv[r]), 0, 15);
            blk[24 + r] = (uint8_t)(l1 | (l2 << 4));
        }
    }
}

IQ1Q_Q_API void iq1q_ref_quantize_iq1_m_r4(const float *x, uint8_t *y, int64_t nrows, int64_t n, const float *imatrix) {
    const int64_t nb = n / 32;
    const size_t row_size = IQ1Q_ROW_SIZE(IQ1_M_R4, n);
    float stack_sc[8 * IQ1Q_Q_STACK_BLOCKS];
    float *sc = nb <= IQ1Q_Q_STACK_BLOCKS ? stack_sc : (float *)malloc((size_t)nb * 8 * sizeof(float));
    for (int64_t g = 0; g < nrows / 4; ++g)
        iq1q_q_m_r4_group(x + 4 * g * n, y + 4 * (size_t)g * row_size, n, imatrix, sc);
    if (sc != stack_sc) free(sc);
}

/* ======================================================================== */
/* Plain IQ1_S (docs/spec.md §8.6; ik's quantize_row_iq1_s_impl)                     */
/* ======================================================================== */

/* One 256-block: d f16 @0, qs[32] @2, qh[8] u16 @34. */
static void iq1q_q_s_superblock(const float *xbl, const float *im, uint8_t *blk) {
    memset(blk, 0, IQ1Q_TYPE_SIZE_IQ1_S);
    float sumx2 = 0.0f;
    for (int i = 0; i < 256; ++i) sumx2 += xbl[i] * xbl[i];
    const float sigma2 = 2 * sumx2 / 256;
    float scales[8], max_scale = 0.0f;
    int shifts[8];
    for (int ib = 0; ib < 8; ++ib) {
        const float *xb = xbl + 32 * ib;
        const float *qw = im ? im + 32 * ib : NULL;
        float w[32];
        /* no imatrix = all-ones importance (ik's reference entry point) */
        for (int i = 0; i < 32; ++i) w[i] = (qw ? qw[i] : 1.0f) * sqrtf(sigma2 + xb[i] * xb[i]);
        if (qw) {
            /* ik aborts when the imatrix is zero on every non-zero weight of
             * the block; treat such an imatrix as absent for this block. */
            float swx = 0.0f;
            for (int i = 0; i < 32; ++i) swx += w[i] * fabsf(xb[i]);
            if (swx == 0.0f)
                for (int i = 0; i < 32; ++i) w[i] = sqrtf(sigma2 + xb[i] * xb[i]);
        }
        uint16_t idx[4];
        scales[ib] = iq1q_q_block32(xb, w, idx, &shifts[ib]);
        uint16_t h = 0;
        for (int k = 0; k < 4; ++k) {
            blk[2 + 4 * ib + k] = (uint8_t)(idx[k] & 0xff);
            h |= (uint16_t)((idx[k] >> 8) << (3 * k));
        }
        iq1q_q_put16(blk + 34 + 2 * ib, h);
        max_scale = iq1q_q_max(max_scale, scales[ib]);
    }
    if (!(max_scale > 0)) return; /* d stays 0 */
    const float d = max_scale / 15;
    iq1q_q_put16(blk, iq1q_fp32_to_fp16(d * 1.125f)); /* 1.125: ik's fudge factor */
    const float id = 1 / d;
    for (int ib = 0; ib < 8; ++ib) {
        int l = iq1q_q_clamp(iq1q_nearest_int(0.5f * (id * scales[ib] - 1)), 0, 7);
        if (shifts[ib] == -1) l |= 8;
        iq1q_q_put16(blk + 34 + 2 * ib, (uint16_t)(iq1q_q_get16(blk + 34 + 2 * ib) | (l << 12)));
    }
}

IQ1Q_Q_API void iq1q_ref_quantize_iq1_s(const float *x, uint8_t *y, int64_t nrows, int64_t n, const float *imatrix) {
    const int64_t nbl = n / 256;
    const size_t row_size = IQ1Q_ROW_SIZE(IQ1_S, n);
    for (int64_t row = 0; row < nrows; ++row)
        for (int64_t ibl = 0; ibl < nbl; ++ibl)
            iq1q_q_s_superblock(x + row * n + 256 * ibl, imatrix ? imatrix + 256 * ibl : NULL,
                                y + (size_t)row * row_size + IQ1Q_TYPE_SIZE_IQ1_S * ibl);
}

/* ======================================================================== */
/* Plain IQ1_M (docs/spec.md §8.6; ik's quantize_row_iq1_m_impl)                     */
/* ======================================================================== */

/* Importance of a 16-sub-block: imatrix * sqrt(sigma2 + x^2), or x^2. */
static inline void iq1q_q_m_weights(const float *xb, const float *qw, float sigma2, float *w) {
    if (qw)
        for (int i = 0; i < 16; ++i) w[i] = qw[i] * sqrtf(sigma2 + xb[i] * xb[i]);
    else
        for (int i = 0; i < 16; ++i) w[i] = xb[i] * xb[i];
}

/* One 256-block: qs[32] @0, qh[16] @32, scales u16[4] @48 (d in the top nibbles). */
static void iq1q_q_m_superblock(const float *xbl, const float *im, uint8_t *blk) {
    memset(blk, 0, IQ1Q_TYPE_SIZE_IQ1_M);
    float sig2[8];
    for (int ib = 0; ib < 8; ++ib) {
        float s = 0.0f;
        for (int i = 0; i < 32; ++i) s += xbl[32 * ib + i] * xbl[32 * ib + i];
        sig2[ib] = 1.5f * s / 32;
    }
    float scales[16], max_scale = 0.0f;
    int shifts[16];
    for (int ib = 0; ib < 16; ++ib) {
        const float *xb = xbl + 16 * ib;
        float w[16];
        iq1q_q_m_weights(xb, im ? im + 16 * ib : NULL, sig2[ib / 2], w);
        /* ik's test skips element 0 in the weighted sum; kept as is */
        float mx = fabsf(xb[0]), swx = 0.0f;
        for (int i = 1; i < 16; ++i) {
            const float ax = fabsf(xb[i]);
            mx = iq1q_q_max(mx, ax);
            swx += w[i] * ax;
        }
        /* skipped sub-blocks: scale 0, indices 0 and (unlike ik, which
         * leaves a stale value) sign pair 0 */
        scales[ib] = 0.0f;
        shifts[ib] = 0;
        if (mx < 1e-7f) continue;
        if (swx == 0) /* imatrix zero wherever x is not: ignore it */
            for (int i = 0; i < 16; ++i) w[i] = xb[i] * xb[i];
        uint16_t idx[2];
        int k;
        if (!iq1q_q_block16(xb, w, &scales[ib], idx, &k)) continue;
        blk[2 * ib] = (uint8_t)(idx[0] & 0xff);
        blk[2 * ib + 1] = (uint8_t)(idx[1] & 0xff);
        blk[32 + ib] = (uint8_t)((idx[0] >> 8) | ((idx[1] >> 8) << 4));
        shifts[ib] = k;
        max_scale = iq1q_q_max(max_scale, scales[ib]);
    }
    if (!(max_scale > 0)) return;

    float d = max_scale / 15;
    const float id = 1 / d;
    uint16_t sc[4] = {0, 0, 0, 0};
    float sqx = 0.0f, sq2 = 0.0f;
    for (int ib = 0; ib < 16; ++ib) {
        const int l = iq1q_q_clamp(iq1q_nearest_int(0.5f * (id * scales[ib] - 1)), 0, 7);
        sc[ib / 4] |= (uint16_t)(l << (3 * (ib % 4)));
        blk[32 + ib] |= iq1q_q_mmask[shifts[ib]];
        /* least-squares refit of the super-block scale over all 256 weights
         * with the final integer multipliers (raw imatrix weights, as ik) */
        const float *xb = xbl + 16 * ib;
        float w[16];
        iq1q_q_m_weights(xb, im ? im + 16 * ib : NULL, sig2[ib / 2], w);
        const int qh = blk[32 + ib];
        for (int k = 0; k < 2; ++k) {
            const float *V = (k == 0 ? shifts[ib] < 2 : shifts[ib] % 2 == 0) ? iq1q_q_P : iq1q_q_M;
            const uint64_t g = iq1q_grid_u8[blk[2 * ib + k] | ((qh << (8 - 4 * k)) & 0x700)];
            for (int j = 0; j < 8; ++j) {
                const float q = V[(g >> (8 * j)) & 0xff] * (2 * l + 1);
                sqx += w[8 * k + j] * q * xb[8 * k + j];
                sq2 += w[8 * k + j] * q * q;
            }
        }
    }
    if (sq2 > 0) d = sqx / sq2;
    const uint16_t h = iq1q_fp32_to_fp16(d * 1.085f); /* 1.085: ik's fudge factor */
    sc[0] |= (uint16_t)((h & 0x000f) << 12);
    sc[1] |= (uint16_t)((h & 0x00f0) << 8);
    sc[2] |= (uint16_t)((h & 0x0f00) << 4);
    sc[3] |= (uint16_t)(h & 0xf000);
    for (int i = 0; i < 4; ++i) iq1q_q_put16(blk + 48 + 2 * i, sc[i]);
}

IQ1Q_Q_API void iq1q_ref_quantize_iq1_m(const float *x, uint8_t *y, int64_t nrows, int64_t n, const float *imatrix) {
    const int64_t nbl = n / 256;
    const size_t row_size = IQ1Q_ROW_SIZE(IQ1_M, n);
    for (int64_t row = 0; row < nrows; ++row)
        for (int64_t ibl = 0; ibl < nbl; ++ibl)
            iq1q_q_m_superblock(x + row * n + 256 * ibl, imatrix ? imatrix + 256 * ibl : NULL,
                                y + (size_t)row * row_size + IQ1Q_TYPE_SIZE_IQ1_M * ibl);
}

#endif /* IQ1Q_REF_QUANTIZE_H */
