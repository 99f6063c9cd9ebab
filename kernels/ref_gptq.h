/* ref_gptq.h: Hessian-aware IQ1 quantization (issue 24, docs/quantizer.md).
 *
 * Chooses the bytes of one of the four IQ1 formats that (locally) minimise the
 * output error of a linear layer, (w - q)' H (w - q) per row w, where H is the
 * (damped) Hessian X'X of the layer's inputs. ik_llama.cpp's quantizer (ref_quantize.h)
 * weighs each block's squared error by the diagonal of H only; here the
 * correlations between columns count too:
 *
 *   1. GPTQ pass: columns are visited in a block order fixed by the caller (the
 *      permutation perm, whole blocks); each group of 8 columns (one grid index)
 *      is quantized in turn, and its error is fed into the columns not yet
 *      quantized through U, the upper Cholesky factor of the inverse of the
 *      permuted H (GPTQ's update, OBQ's optimal compensation). A block's
 *      integer multiplier and (IQ1_S) delta sign are chosen with the feedback:
 *      every candidate runs the block's groups and the one with the smallest
 *      GPTQ error ||U_gg^-T (x_g - q_g)||^2 summed over the groups wins. The
 *      fp16 scales d stay fixed during a pass.
 *   2. Polish: coordinate descent on the exact objective with everything else
 *      fixed: each group's grid index (and sign), each block's multiplier (and
 *      sign), each fp16 scale by least squares. r = H (w - q) is kept up to date
 *      so that each move costs O(K * columns moved).
 *   3. The pass is repeated from the polished scales; the best row (smallest
 *      objective, ik's own solution included) is written.
 *
 * Rows are independent (every format's scales belong to one row), so the caller
 * splits rows over threads; results do not depend on the split.
 *
 * Everything derived from H alone (U, the 8x8 metrics and the per-group tables
 * of e'Me over the 2048 grid entries) is computed once per matrix by the caller
 * (iq1q/hessian.py, numpy) and shared by all rows.
 */
#ifndef IQ1Q_REF_GPTQ_H
#define IQ1Q_REF_GPTQ_H

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "iq1q_common.h"
#include "iq1q_grid.h"

/* The hot loops here are long axpy loops of unknown length, which GCC's -O2 cost model
 * leaves scalar; vectorizing them does not change a single result (no reassociation). */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("tree-vectorize", "vect-cost-model=dynamic")
#endif

/* What the caller computed from H: see iq1q/hessian.py for each array. */
typedef struct {
    int fmt;             /* a weight format id */
    int64_t K;           /* row length */
    const float *H;      /* K x K damped Hessian, in the weights' column order */
    const float *U;      /* K x K upper Cholesky factor of inverse(P' H P), P = perm */
    const int32_t *perm; /* K: the weight column at each processing position (whole blocks) */
    const float *T;      /* K/8 x 8 x 8: U_gg^-T (lower triangular) per processing group */
    const float *A;      /* K/8 x 8 x 8: the search metric per processing group */
    const float *QA;     /* K/8 x 2 x 2048: e'Ae, e = grid entry + sign * delta, sign +1 then -1 */
    const float *QH;     /* K/8 x 2 x 2048: the same under H's 8x8 diagonal block, per weight group */
    const float *imp;    /* K: importance per processing position (for the block's first guess) */
    int passes;          /* GPTQ passes (>= 1) */
    int sweeps;          /* polish sweeps after each pass (>= 0) */
    int ncand;           /* multipliers tried per block around the first guess (0: all) */
} iq1q_gptq_problem;

/* How a format's scales are laid out (docs/spec.md §6.5): w = d * mult * (g + sign * delta). */
typedef struct {
    int bs;     /* columns per multiplier: 32 (IQ1_S*) or 16 (IQ1_M*) */
    int sgroup; /* 1: a delta sign per group of 8 (IQ1_M*); 0: per block */
    int nmult;  /* multiplier codes 0 .. nmult-1 */
    int mult0;  /* multiplier of code l: mult0 + mstep * l */
    int mstep;
    int span;   /* columns per fp16 scale d: 256, or 0 for one per row (_r4) */
} iq1q_gq_layout;

static iq1q_gq_layout iq1q_gq_layout_of(int fmt) {
    switch (fmt) {
    case IQ1Q_IQ1_S: return (iq1q_gq_layout){32, 0, 8, 1, 2, 256};
    case IQ1Q_IQ1_M: return (iq1q_gq_layout){16, 1, 8, 1, 2, 256};
    case IQ1Q_IQ1_S_R4: return (iq1q_gq_layout){32, 0, 8, 1, 2, 0};
    default: return (iq1q_gq_layout){16, 1, 16, 0, 1, 0}; /* IQ1_M_R4: 4-bit multipliers 0..15 */
    }
}

/* One row's parameters. */
typedef struct {
    float *d;      /* per span: fp16 values as float */
    uint8_t *l;    /* multiplier code per block */
    int8_t *sg;    /* delta sign (+1 / -1) per group of 8 */
    uint16_t *idx; /* grid index per group of 8 */
} iq1q_gq_row;

/* Grid tables: the values g in {-1, 0, 1} by entry and, transposed, by position; and
 * per entry the entries whose levels differ from its own in at most two positions
 * (itself first): the neighbourhood a polishing step searches. */
#define IQ1Q_GQ_NEAR_MAX (IQ1Q_GRID_SIZE * 129)
static float iq1q_gq_G[IQ1Q_GRID_SIZE][8];
static float iq1q_gq_Gt[8][IQ1Q_GRID_SIZE];
static int32_t iq1q_gq_near_start[IQ1Q_GRID_SIZE + 1];
static uint16_t iq1q_gq_near[IQ1Q_GQ_NEAR_MAX];

static int iq1q_gptq_init(void) {
    for (int k = 0; k < IQ1Q_GRID_SIZE; ++k) {
        const unsigned c = iq1q_grid_codes[k];
        for (int j = 0; j < 8; ++j) {
            iq1q_gq_G[k][j] = (float)((int)((c >> (2 * j)) & 3) - 1);
            iq1q_gq_Gt[j][k] = iq1q_gq_G[k][j];
        }
    }
    /* the codes at most two level changes away, looked up in the quantizer's code map
     * (iq1q_ref_quantize_init must have run) */
    int32_t n = 0;
    for (int k = 0; k < IQ1Q_GRID_SIZE; ++k) {
        const unsigned c = iq1q_grid_codes[k];
        iq1q_gq_near_start[k] = n;
        iq1q_gq_near[n++] = (uint16_t)k;
        for (int j1 = 0; j1 < 8; ++j1)
            for (int a = 1; a < 3; ++a) {
                const unsigned l1 = (((c >> (2 * j1)) & 3) + (unsigned)a) % 3;
                const unsigned c1 = (c & ~(3u << (2 * j1))) | (l1 << (2 * j1));
                for (int j2 = j1; j2 < 8; ++j2)
                    for (int b = (j2 == j1 ? 0 : 1); b < (j2 == j1 ? 1 : 3); ++b) {
                        /* j2 == j1: the single change c1 itself */
                        const unsigned l2 = (((c1 >> (2 * j2)) & 3) + (unsigned)b) % 3;
                        const unsigned c2 = (c1 & ~(3u << (2 * j2))) | (l2 << (2 * j2));
                        const int32_t m = iq1q_q_kmap[c2];
                        if (m < 0) continue;
                        if (n >= IQ1Q_GQ_NEAR_MAX) return -1;
                        iq1q_gq_near[n++] = (uint16_t)m;
                    }
            }
    }
    iq1q_gq_near_start[IQ1Q_GRID_SIZE] = n;
    return 0;
}

static inline int iq1q_gq_mult(const iq1q_gq_layout *L, int l) { return L->mult0 + L->mstep * l; }
static inline float iq1q_gq_fp16_round(float v) { return iq1q_fp16_to_fp32(iq1q_fp32_to_fp16(v)); }

/* ======================================================================== */
/* Bytes <-> row parameters                                                  */
/* ======================================================================== */

static inline uint16_t iq1q_gq_rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline void iq1q_gq_wr16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

/* Row r's parameters from its bytes: y is the row (plain) or its 4-row group (_r4). */
static void iq1q_gq_unpack(int fmt, int64_t K, const uint8_t *y, int r, iq1q_gq_row *s) {
    switch (fmt) {
    case IQ1Q_IQ1_S:
        for (int64_t sb = 0; sb < K / 256; ++sb) {
            const uint8_t *b = y + IQ1Q_TYPE_SIZE_IQ1_S * sb;
            s->d[sb] = iq1q_fp16_to_fp32(iq1q_gq_rd16(b));
            for (int ib = 0; ib < 8; ++ib) {
                const unsigned qh = iq1q_gq_rd16(b + 34 + 2 * ib);
                const int64_t blk = 8 * sb + ib;
                s->l[blk] = (uint8_t)((qh >> 12) & 7);
                for (int i = 0; i < 4; ++i) {
                    s->idx[4 * blk + i] = (uint16_t)(b[2 + 4 * ib + i] | (((qh >> (3 * i)) & 7) << 8));
                    s->sg[4 * blk + i] = (qh & 0x8000) ? -1 : 1;
                }
            }
        }
        break;
    case IQ1Q_IQ1_M:
        for (int64_t sb = 0; sb < K / 256; ++sb) {
            const uint8_t *b = y + IQ1Q_TYPE_SIZE_IQ1_M * sb;
            uint16_t sc[4];
            for (int i = 0; i < 4; ++i) sc[i] = iq1q_gq_rd16(b + 48 + 2 * i);
            s->d[sb] = iq1q_fp16_to_fp32((uint16_t)((sc[0] >> 12) | ((sc[1] >> 12) << 4) | ((sc[2] >> 12) << 8) |
                                                    ((sc[3] >> 12) << 12)));
            for (int m = 0; m < 32; ++m) {
                const int nib = (b[32 + m / 2] >> (4 * (m % 2))) & 15;
                s->idx[32 * sb + m] = (uint16_t)(b[m] | ((nib & 7) << 8));
                s->sg[32 * sb + m] = (nib & 8) ? -1 : 1;
            }
            for (int j = 0; j < 16; ++j) s->l[16 * sb + j] = (uint8_t)((sc[j / 4] >> (3 * (j % 4))) & 7);
        }
        break;
    case IQ1Q_IQ1_S_R4:
        s->d[0] = iq1q_fp16_to_fp32(iq1q_gq_rd16(y + 2 * r));
        for (int64_t blk = 0; blk < K / 32; ++blk) {
            const uint8_t *b = y + 8 + 24 * blk;
            const unsigned qh = iq1q_gq_rd16(b + 16 + 2 * r);
            s->l[blk] = (uint8_t)((qh >> 12) & 7);
            for (int i = 0; i < 4; ++i) {
                s->idx[4 * blk + i] = (uint16_t)(b[4 * i + r] | (((qh >> (3 * i)) & 7) << 8));
                s->sg[4 * blk + i] = (qh & 0x8000) ? -1 : 1;
            }
        }
        break;
    default: /* IQ1_M_R4 */
        s->d[0] = iq1q_fp16_to_fp32(iq1q_gq_rd16(y + 2 * r));
        for (int64_t blk = 0; blk < K / 32; ++blk) {
            const uint8_t *b = y + 8 + 28 * blk;
            for (int m = 0; m < 4; ++m) {
                const int nib = (b[16 + 4 * (m / 2) + r] >> (4 * (m % 2))) & 15;
                s->idx[4 * blk + m] = (uint16_t)(b[4 * m + r] | ((nib & 7) << 8));
                s->sg[4 * blk + m] = (nib & 8) ? -1 : 1;
            }
            s->l[2 * blk] = (uint8_t)(b[24 + r] & 15);
            s->l[2 * blk + 1] = (uint8_t)(b[24 + r] >> 4);
        }
        break;
    }
}

/* The inverse of iq1q_gq_unpack: writes row r's bytes (the _r4 group's other rows untouched). */
static void iq1q_gq_pack(int fmt, int64_t K, uint8_t *y, int r, const iq1q_gq_row *s) {
    switch (fmt) {
    case IQ1Q_IQ1_S:
        for (int64_t sb = 0; sb < K / 256; ++sb) {
            uint8_t *b = y + IQ1Q_TYPE_SIZE_IQ1_S * sb;
            iq1q_gq_wr16(b, iq1q_fp32_to_fp16(s->d[sb]));
            for (int ib = 0; ib < 8; ++ib) {
                const int64_t blk = 8 * sb + ib;
                unsigned qh = (unsigned)s->l[blk] << 12 | (s->sg[4 * blk] < 0 ? 0x8000u : 0u);
                for (int i = 0; i < 4; ++i) {
                    b[2 + 4 * ib + i] = (uint8_t)(s->idx[4 * blk + i] & 255);
                    qh |= (unsigned)(s->idx[4 * blk + i] >> 8) << (3 * i);
                }
                iq1q_gq_wr16(b + 34 + 2 * ib, (uint16_t)qh);
            }
        }
        break;
    case IQ1Q_IQ1_M:
        for (int64_t sb = 0; sb < K / 256; ++sb) {
            uint8_t *b = y + IQ1Q_TYPE_SIZE_IQ1_M * sb;
            const uint16_t h = iq1q_fp32_to_fp16(s->d[sb]);
            uint16_t sc[4] = {(uint16_t)((h & 0x000f) << 12), (uint16_t)((h & 0x00f0) << 8),
                              (uint16_t)((h & 0x0f00) << 4), (uint16_t)(h & 0xf000)};
            for (int j = 0; j < 16; ++j) sc[j / 4] |= (uint16_t)(s->l[16 * sb + j] << (3 * (j % 4)));
            memset(b + 32, 0, 16);
            for (int m = 0; m < 32; ++m) {
                const int64_t g = 32 * sb + m;
                b[m] = (uint8_t)(s->idx[g] & 255);
                b[32 + m / 2] |= (uint8_t)(((s->idx[g] >> 8) | (s->sg[g] < 0 ? 8 : 0)) << (4 * (m % 2)));
            }
            for (int i = 0; i < 4; ++i) iq1q_gq_wr16(b + 48 + 2 * i, sc[i]);
        }
        break;
    case IQ1Q_IQ1_S_R4:
        iq1q_gq_wr16(y + 2 * r, iq1q_fp32_to_fp16(s->d[0]));
        for (int64_t blk = 0; blk < K / 32; ++blk) {
            uint8_t *b = y + 8 + 24 * blk;
            unsigned qh = (unsigned)s->l[blk] << 12 | (s->sg[4 * blk] < 0 ? 0x8000u : 0u);
            for (int i = 0; i < 4; ++i) {
                b[4 * i + r] = (uint8_t)(s->idx[4 * blk + i] & 255);
                qh |= (unsigned)(s->idx[4 * blk + i] >> 8) << (3 * i);
            }
            iq1q_gq_wr16(b + 16 + 2 * r, (uint16_t)qh);
        }
        break;
    default: /* IQ1_M_R4 */
        iq1q_gq_wr16(y + 2 * r, iq1q_fp32_to_fp16(s->d[0]));
        for (int64_t blk = 0; blk < K / 32; ++blk) {
            uint8_t *b = y + 8 + 28 * blk;
            for (int h = 0; h < 2; ++h) {
                uint8_t q = 0;
                for (int m = 2 * h; m < 2 * h + 2; ++m) {
                    const int64_t g = 4 * blk + m;
                    b[4 * m + r] = (uint8_t)(s->idx[g] & 255);
                    q |= (uint8_t)(((s->idx[g] >> 8) | (s->sg[g] < 0 ? 8 : 0)) << (4 * (m % 2)));
                }
                b[16 + 4 * h + r] = q;
            }
            b[24 + r] = (uint8_t)(s->l[2 * blk] | (s->l[2 * blk + 1] << 4));
        }
        break;
    }
}

/* g + sign * delta of group entry idx, position j */
static inline float iq1q_gq_e(int idx, int sg, int j) { return iq1q_gq_G[idx][j] + (float)sg * IQ1Q_DELTA; }

/* The dequantized row, in the dequantizer's float order ((d * mult) * (g + shift)). */
static void iq1q_gq_values(const iq1q_gq_layout *L, int64_t K, const iq1q_gq_row *s, float *w) {
    for (int64_t g = 0; g < K / 8; ++g) {
        const int64_t c = 8 * g, blk = c / L->bs;
        const float dl = s->d[L->span ? c / L->span : 0] * (float)iq1q_gq_mult(L, s->l[blk]);
        for (int j = 0; j < 8; ++j) w[c + j] = dl * iq1q_gq_e(s->idx[g], s->sg[g], j);
    }
}

static void iq1q_gq_copy(const iq1q_gq_layout *L, int64_t K, iq1q_gq_row *dst, const iq1q_gq_row *src) {
    const int64_t nspan = L->span ? K / L->span : 1;
    memcpy(dst->d, src->d, (size_t)nspan * sizeof(float));
    memcpy(dst->l, src->l, (size_t)(K / L->bs));
    memcpy(dst->sg, src->sg, (size_t)(K / 8));
    memcpy(dst->idx, src->idx, (size_t)(K / 8) * sizeof(uint16_t));
}

/* ======================================================================== */
/* The grid search                                                           */
/* ======================================================================== */

/* Over grid entries k and the allowed signs (bit 0: +1, bit 1: -1), the minimum of
 *   s^2 Q_sign[k] - 2 s (e_k . b),   e_k = G_k + sign * delta,
 * which is (t - s e)' M (t - s e) - t'Mt for b = M t and Q = e'Me: the best
 * group for target t under the metric M at scale s. Returns that value.
 * One pass over the entries computes both signs' values into arrays, with a running
 * minimum per lane (element-wise, so the compiler vectorizes it at the baseline
 * instruction set); the index is then the first entry reaching the minimum, sign +1
 * before -1, as a sequential scan with a strict "<" would pick. */
static float iq1q_gq_search(const float *Q, const float b[8], float s, int allow, int *kout, int *sout) {
    if (s == 0.0f) {
        *kout = IQ1Q_GRID_ZERO;
        *sout = 1;
        return 0.0f;
    }
    const float sb = b[0] + b[1] + b[2] + b[3] + b[4] + b[5] + b[6] + b[7];
    const float s2 = s * s, ts = 2.0f * s, c = ts * IQ1Q_DELTA * sb;
    const float *qp = Q, *qm = Q + IQ1Q_GRID_SIZE;
    const float *g0 = iq1q_gq_Gt[0], *g1 = iq1q_gq_Gt[1], *g2 = iq1q_gq_Gt[2], *g3 = iq1q_gq_Gt[3];
    const float *g4 = iq1q_gq_Gt[4], *g5 = iq1q_gq_Gt[5], *g6 = iq1q_gq_Gt[6], *g7 = iq1q_gq_Gt[7];
    float vp[IQ1Q_GRID_SIZE], vm[IQ1Q_GRID_SIZE], lp[8], lm[8];
    for (int i = 0; i < 8; ++i) lp[i] = lm[i] = FLT_MAX;
    for (int k0 = 0; k0 < IQ1Q_GRID_SIZE; k0 += 8)
        for (int i = 0; i < 8; ++i) {
            const int k = k0 + i;
            const float eb = g0[k] * b[0] + g1[k] * b[1] + g2[k] * b[2] + g3[k] * b[3] + g4[k] * b[4] +
                             g5[k] * b[5] + g6[k] * b[6] + g7[k] * b[7];
            const float t = ts * eb;
            const float p = s2 * qp[k] - t - c, m = s2 * qm[k] - t + c;
            vp[k] = p;
            vm[k] = m;
            lp[i] = p < lp[i] ? p : lp[i];
            lm[i] = m < lm[i] ? m : lm[i];
        }
    float best = FLT_MAX;
    for (int i = 0; i < 8; ++i) {
        if ((allow & 1) && lp[i] < best) best = lp[i];
        if ((allow & 2) && lm[i] < best) best = lm[i];
    }
    int bk = IQ1Q_GRID_ZERO, bsg = 1;
    int k = 0;
    if (allow & 1)
        for (k = 0; k < IQ1Q_GRID_SIZE && vp[k] != best; ++k) continue;
    if ((allow & 1) && k < IQ1Q_GRID_SIZE) {
        bk = k;
    } else if (allow & 2) {
        for (k = 0; k < IQ1Q_GRID_SIZE && vm[k] != best; ++k) continue;
        if (k < IQ1Q_GRID_SIZE) {
            bk = k;
            bsg = -1;
        }
    }
    *kout = bk;
    *sout = bsg;
    return best;
}

/* The same minimum over the grid entries near entry `near` (its list in iq1q_gq_near:
 * itself and every entry whose levels differ in at most two positions), with the signs
 * allowed; for polishing a solution that is already good. */
static float iq1q_gq_search_near(const float *Q, const float b[8], float s, int allow, int near, int *kout,
                                 int *sout) {
    if (s == 0.0f) {
        *kout = IQ1Q_GRID_ZERO;
        *sout = 1;
        return 0.0f;
    }
    const float sb = b[0] + b[1] + b[2] + b[3] + b[4] + b[5] + b[6] + b[7];
    const float s2 = s * s, ts = 2.0f * s;
    float best = FLT_MAX;
    int bk = near, bsg = 1;
    const uint16_t *list = iq1q_gq_near + iq1q_gq_near_start[near];
    const int cnt = iq1q_gq_near_start[near + 1] - iq1q_gq_near_start[near];
    for (int c = 0; c < cnt; ++c) {
        const int k = list[c];
        const float *g = iq1q_gq_G[k];
        float e = 0.0f;
        for (int j = 0; j < 8; ++j) e += g[j] * b[j];
        for (int pass = 0; pass < 2; ++pass) {
            if (!(allow & (1 << pass))) continue;
            const float sg = pass ? -1.0f : 1.0f;
            const float v = s2 * Q[pass * IQ1Q_GRID_SIZE + k] - ts * (e + sg * IQ1Q_DELTA * sb);
            if (v < best) {
                best = v;
                bk = k;
                bsg = pass ? -1 : 1;
            }
        }
    }
    *kout = bk;
    *sout = bsg;
    return best;
}

/* ======================================================================== */
/* The GPTQ pass                                                             */
/* ======================================================================== */

/* Scratch of one thread. */
typedef struct {
    float *xw;   /* K: the row in processing order, updated by the errors fed back */
    float *xb;   /* 32: a block's working copy for one candidate */
    float *eb;   /* 32 + 32: the errors of the candidate being tried / of the best one */
    float *w;    /* K: dequantized row */
    double *r;   /* K: H (x - w) */
    double *hv;  /* K: H times a span's pattern */
    double *hx;  /* K: H x, x the row being quantized */
    iq1q_gq_row cur, best, cand;
} iq1q_gq_scratch;

/* Multiplier codes to try for a block whose first guess of the scale is `est` at fp16
 * scale d: the ncand codes whose multiplier * d is nearest to est (all when ncand is 0). */
static int iq1q_gq_candidates(const iq1q_gq_layout *L, float d, float est, int ncand, int *codes) {
    if (ncand <= 0 || ncand >= L->nmult || !(d > 0)) {
        for (int l = 0; l < L->nmult; ++l) codes[l] = l;
        return L->nmult;
    }
    float dist[16];
    int used[16] = {0};
    for (int l = 0; l < L->nmult; ++l) dist[l] = fabsf((float)iq1q_gq_mult(L, l) * d - est);
    for (int c = 0; c < ncand; ++c) {
        int bl = -1;
        for (int l = 0; l < L->nmult; ++l)
            if (!used[l] && (bl < 0 || dist[l] < dist[bl])) bl = l;
        used[bl] = 1;
        codes[c] = bl;
    }
    return ncand;
}

/* Quantizes one row with the fp16 scales of s->d held fixed; writes s->l, sg, idx. */
static void iq1q_gq_gptq_row(const iq1q_gptq_problem *P, const iq1q_gq_layout *L, const float *x,
                             iq1q_gq_row *s, iq1q_gq_scratch *S) {
    const int64_t K = P->K;
    const int bs = L->bs, ng = bs / 8;
    float *xw = S->xw, *xb = S->xb, *ec = S->eb, *ebest = S->eb + 32;
    for (int64_t p = 0; p < K; ++p) xw[p] = x[P->perm[p]];
    for (int64_t p0 = 0; p0 < K; p0 += bs) {
        const int64_t ob = P->perm[p0] / bs; /* the block in weight order */
        const float d = s->d[L->span ? ob * bs / L->span : 0];
        /* first guess of the block scale: ik's block search on the updated weights */
        float est;
        {
            uint16_t idx4[4];
            int sh;
            if (bs == 32) {
                est = iq1q_q_block32(xw + p0, P->imp + p0, idx4, &sh);
            } else if (!iq1q_q_block16(xw + p0, P->imp + p0, &est, idx4, &sh)) {
                est = 0.0f;
            }
        }
        int codes[16] = {0};
        const int nc = iq1q_gq_candidates(L, d, est, P->ncand, codes);
        float best = FLT_MAX;
        int bl = codes[0];
        uint16_t bidx[4] = {IQ1Q_GRID_ZERO, IQ1Q_GRID_ZERO, IQ1Q_GRID_ZERO, IQ1Q_GRID_ZERO};
        int8_t bsg[4] = {1, 1, 1, 1};
        for (int ci = 0; ci < nc; ++ci) {
            const float sc = d * (float)iq1q_gq_mult(L, codes[ci]);
            for (int sgi = 0; sgi < (L->sgroup ? 1 : 2); ++sgi) {
                /* IQ1_S: one sign for the block, tried both ways; IQ1_M: chosen per group */
                const int allow = L->sgroup ? 3 : (sgi ? 2 : 1);
                memcpy(xb, xw + p0, (size_t)bs * sizeof(float));
                float cost = 0.0f;
                uint16_t cidx[4];
                int8_t csg[4];
                for (int gi = 0; gi < ng && cost < best; ++gi) {
                    const int64_t gp = p0 / 8 + gi;
                    const float *A = P->A + 64 * gp, *T = P->T + 64 * gp;
                    const float *t = xb + 8 * gi;
                    float b8[8];
                    for (int i = 0; i < 8; ++i) {
                        float a = 0.0f;
                        for (int j = 0; j < 8; ++j) a += A[8 * i + j] * t[j];
                        b8[i] = a;
                    }
                    int k, sg;
                    iq1q_gq_search(P->QA + 2 * IQ1Q_GRID_SIZE * gp, b8, sc, allow, &k, &sg);
                    cidx[gi] = (uint16_t)k;
                    csg[gi] = (int8_t)sg;
                    float diff[8], *e = ec + 8 * gi;
                    for (int j = 0; j < 8; ++j) diff[j] = t[j] - sc * iq1q_gq_e(k, sg, j);
                    for (int i = 0; i < 8; ++i) {
                        float a = 0.0f;
                        for (int j = 0; j <= i; ++j) a += T[8 * i + j] * diff[j];
                        e[i] = a;
                        cost += a * a;
                    }
                    /* feed the group's error into the block's later columns */
                    for (int i = 0; i < 8; ++i) {
                        const float *u = P->U + (p0 + 8 * gi + i) * K + p0;
                        for (int j = 8 * (gi + 1); j < bs; ++j) xb[j] -= e[i] * u[j];
                    }
                }
                if (cost < best) {
                    best = cost;
                    bl = codes[ci];
                    memcpy(bidx, cidx, sizeof(uint16_t) * (size_t)ng);
                    memcpy(bsg, csg, (size_t)ng);
                    memcpy(ebest, ec, (size_t)bs * sizeof(float));
                }
            }
        }
        s->l[ob] = (uint8_t)bl;
        for (int gi = 0; gi < ng; ++gi) {
            s->idx[ob * ng + gi] = bidx[gi];
            s->sg[ob * ng + gi] = bsg[gi];
        }
        /* feed the block's errors into every later column (GPTQ's lazy batch update) */
        for (int i = 0; i < bs; ++i) {
            const float e = ebest[i];
            const float *u = P->U + (p0 + i) * K;
            for (int64_t p = p0 + bs; p < K; ++p) xw[p] -= e * u[p];
        }
    }
}

/* ======================================================================== */
/* Polish: coordinate descent on (x - w)' H (x - w)                          */
/* ======================================================================== */

/* r = H (x - w), and hx = H x unless hx is NULL; returns (x - w)' r. H is symmetric, so
 * r is a sum of H's rows: axpy loops, which the compiler vectorizes in strict float mode
 * (a dot product it may not). */
static double iq1q_gq_residual(const float *H, int64_t K, const float *x, const float *w, double *r, double *e,
                               double *hx) {
    for (int64_t j = 0; j < K; ++j) {
        e[j] = (double)x[j] - (double)w[j];
        r[j] = 0.0;
    }
    if (hx) {
        memset(hx, 0, (size_t)K * sizeof(double));
        for (int64_t j = 0; j < K; ++j) {
            const double ej = e[j], xj = x[j];
            const float *h = H + j * K;
            for (int64_t i = 0; i < K; ++i) {
                const double hi = h[i];
                r[i] += ej * hi;
                hx[i] += xj * hi;
            }
        }
    }
    for (int64_t j = 0; j < K && !hx; ++j) {
        const double ej = e[j];
        if (ej == 0.0) continue;
        const float *h = H + j * K;
        for (int64_t i = 0; i < K; ++i) r[i] += ej * (double)h[i];
    }
    double cost = 0.0;
    for (int64_t i = 0; i < K; ++i) cost += e[i] * r[i];
    return cost;
}

/* w changes by delta on columns c0 .. c0+n-1: r -= H[:, c0..] delta */
static void iq1q_gq_move(const float *H, int64_t K, int64_t c0, int n, const float *delta, double *r) {
    for (int i = 0; i < n; ++i) {
        const double dl = delta[i];
        if (dl == 0.0) continue;
        const float *h = H + (c0 + i) * K;
        for (int64_t j = 0; j < K; ++j) r[j] -= dl * (double)h[j];
    }
}

/* Each fp16 scale moved to the least-squares optimum along its pattern V (w = d V on its
 * span), rounded to fp16: dC = t^2 V'HV - 2 t V'r for d -> d + t. HV is (H x - r) / d for a
 * scale per row (S->hx = H x), a sum of K x span rows of H otherwise. Returns the moves. */
static int iq1q_gq_scales(const iq1q_gptq_problem *P, const iq1q_gq_layout *L, iq1q_gq_row *s,
                          iq1q_gq_scratch *S) {
    const int64_t K = P->K, span = L->span ? L->span : K;
    const float *H = P->H, *w = S->w;
    double *r = S->r, *hv = S->hv;
    int changes = 0;
    for (int64_t c0 = 0; c0 < K; c0 += span) {
        const int64_t sp = c0 / span;
        const float d = s->d[sp];
        if (!(d > 0)) continue;
        if (span == K) {
            for (int64_t i = 0; i < K; ++i) hv[i] = (S->hx[i] - r[i]) / d;
        } else {
            memset(hv, 0, (size_t)K * sizeof(double));
            for (int64_t j = c0; j < c0 + span; ++j) {
                const double vj = (double)w[j] / d;
                if (vj == 0.0) continue;
                const float *h = H + j * K;
                for (int64_t i = 0; i < K; ++i) hv[i] += vj * (double)h[i];
            }
        }
        double a = 0.0, c = 0.0;
        for (int64_t j = c0; j < c0 + span; ++j) {
            const double vj = (double)w[j] / d;
            a += vj * hv[j];
            c += vj * r[j];
        }
        if (!(a > 0)) continue;
        const float nd = iq1q_gq_fp16_round((float)(d + c / a));
        const double t = (double)nd - d;
        if (!(nd > 0) || nd == d || !(t * t * a - 2.0 * t * c < 0)) continue;
        s->d[sp] = nd;
        for (int64_t i = 0; i < K; ++i) r[i] -= t * hv[i];
        ++changes;
    }
    return changes;
}

/* One sweep; returns the number of changes made. */
static int iq1q_gq_sweep(const iq1q_gptq_problem *P, const iq1q_gq_layout *L, iq1q_gq_row *s,
                         iq1q_gq_scratch *S, int scales) {
    const int64_t K = P->K;
    const float *H = P->H;
    float *w = S->w;
    double *r = S->r;
    int changes = 0;
    /* each group's grid index (and, IQ1_M, its sign) */
    for (int64_t g = 0; g < K / 8; ++g) {
        const int64_t c0 = 8 * g, blk = c0 / L->bs;
        const float sc = s->d[L->span ? c0 / L->span : 0] * (float)iq1q_gq_mult(L, s->l[blk]);
        if (sc == 0.0f) continue;
        float b8[8];
        for (int i = 0; i < 8; ++i) {
            const float *h = H + (c0 + i) * K + c0;
            double a = r[c0 + i];
            for (int j = 0; j < 8; ++j) a += (double)h[j] * w[c0 + j];
            b8[i] = (float)a;
        }
        const float *Q = P->QH + 2 * IQ1Q_GRID_SIZE * g;
        int k, sg;
        const float v = iq1q_gq_search_near(Q, b8, sc, L->sgroup ? 3 : (s->sg[g] > 0 ? 1 : 2), s->idx[g], &k, &sg);
        if (k == s->idx[g] && sg == s->sg[g]) continue;
        /* the current choice's value under the same formula */
        float cur = 0.0f;
        {
            const int ci = s->idx[g], cs = s->sg[g];
            const float qc = Q[(cs < 0) * IQ1Q_GRID_SIZE + ci];
            float eb = 0.0f;
            for (int j = 0; j < 8; ++j) eb += iq1q_gq_e(ci, cs, j) * b8[j];
            cur = sc * sc * qc - 2.0f * sc * eb;
        }
        if (!(v < cur - 1e-6f * fabsf(cur))) continue;
        const float dl = s->d[L->span ? c0 / L->span : 0] * (float)iq1q_gq_mult(L, s->l[blk]);
        float delta[8];
        for (int j = 0; j < 8; ++j) {
            const float nw = dl * iq1q_gq_e(k, sg, j);
            delta[j] = nw - w[c0 + j];
            w[c0 + j] = nw;
        }
        iq1q_gq_move(H, K, c0, 8, delta, r);
        s->idx[g] = (uint16_t)k;
        s->sg[g] = (int8_t)sg;
        ++changes;
    }
    /* each block's multiplier (and, IQ1_S, its sign) */
    const int bs = L->bs, ng = bs / 8;
    for (int64_t blk = 0; blk < K / bs; ++blk) {
        const int64_t c0 = blk * bs;
        const float d = s->d[L->span ? c0 / L->span : 0];
        if (!(d > 0)) continue;
        float v[2][32];
        double a[2], rv[2], cross = 0.0; /* v_f' H v_f, v_f' r, v_1' H v_0 */
        const int nflip = L->sgroup ? 1 : 2;
        for (int f = 0; f < nflip; ++f)
            for (int gi = 0; gi < ng; ++gi) {
                const int64_t g = blk * ng + gi;
                const int sg = f ? -s->sg[g] : s->sg[g];
                for (int j = 0; j < 8; ++j) v[f][8 * gi + j] = iq1q_gq_e(s->idx[g], sg, j);
            }
        for (int f = 0; f < nflip; ++f) {
            double aa = 0.0, rr = 0.0, cc = 0.0;
            for (int i = 0; i < bs; ++i) {
                const float *h = H + (c0 + i) * K + c0;
                double hv = 0.0;
                for (int j = 0; j < bs; ++j) hv += (double)h[j] * v[f][j];
                aa += v[f][i] * hv;
                rr += v[f][i] * r[c0 + i];
                if (f) { /* v_0' H v_1 */
                    double h0 = 0.0;
                    for (int j = 0; j < bs; ++j) h0 += (double)h[j] * v[0][j];
                    cc += v[1][i] * h0;
                }
            }
            a[f] = aa;
            rv[f] = rr;
            if (f) cross = cc;
        }
        /* u = d m v0 now; u' = d m' v_f: dC = (u'-u)'H(u'-u) - 2 (u'-u)' r */
        const double m = (double)iq1q_gq_mult(L, s->l[blk]) * d;
        double bestc = 0.0;
        int bl = s->l[blk], bf = 0;
        for (int f = 0; f < nflip; ++f)
            for (int l = 0; l < L->nmult; ++l) {
                const double mp = (double)iq1q_gq_mult(L, l) * d;
                const double quad = f ? mp * mp * a[1] - 2.0 * mp * m * cross + m * m * a[0]
                                      : (mp - m) * (mp - m) * a[0];
                const double dc = quad - 2.0 * (f ? mp * rv[1] - m * rv[0] : (mp - m) * rv[0]);
                if (dc < bestc - 1e-9 * fabs(bestc)) {
                    bestc = dc;
                    bl = l;
                    bf = f;
                }
            }
        if (bl == s->l[blk] && bf == 0) continue;
        s->l[blk] = (uint8_t)bl;
        if (bf)
            for (int gi = 0; gi < ng; ++gi) s->sg[blk * ng + gi] = (int8_t)-s->sg[blk * ng + gi];
        const float dl = d * (float)iq1q_gq_mult(L, bl);
        float delta[32];
        for (int j = 0; j < bs; ++j) {
            const float nw = dl * v[bf][j];
            delta[j] = nw - w[c0 + j];
            w[c0 + j] = nw;
        }
        iq1q_gq_move(H, K, c0, bs, delta, r);
        ++changes;
    }
    if (scales) changes += iq1q_gq_scales(P, L, s, S);
    /* w in the dequantizer's float order again (a scale move rescaled it) */
    iq1q_gq_values(L, K, s, w);
    return changes;
}

/* Polishes s and returns its objective (r is computed once, then updated move by move). The scales of a row move every sweep (O(K) each); those of
 * 256-column spans, O(K^2) a row, in the last sweep only. */
static double iq1q_gq_polish(const iq1q_gptq_problem *P, const iq1q_gq_layout *L, const float *x,
                             iq1q_gq_row *s, iq1q_gq_scratch *S) {
    iq1q_gq_values(L, P->K, s, S->w);
    double cost = iq1q_gq_residual(P->H, P->K, x, S->w, S->r, S->hv, NULL);
    if (P->sweeps == 0) return cost;
    for (int it = 0; it < P->sweeps; ++it) {
        const int last = it == P->sweeps - 1;
        if (!iq1q_gq_sweep(P, L, s, S, !L->span || last) && (!L->span || last)) break;
    }
    cost = 0.0; /* from r as the moves left it: exact up to rounding, and no O(K^2) pass */
    for (int64_t i = 0; i < P->K; ++i) cost += ((double)x[i] - (double)S->w[i]) * S->r[i];
    return cost;
}

/* ======================================================================== */
/* Rows                                                                      */
/* ======================================================================== */

static int iq1q_gq_alloc_row(const iq1q_gq_layout *L, int64_t K, iq1q_gq_row *s) {
    const int64_t nspan = L->span ? K / L->span : 1;
    s->d = (float *)malloc((size_t)nspan * sizeof(float));
    s->l = (uint8_t *)malloc((size_t)(K / L->bs));
    s->sg = (int8_t *)malloc((size_t)(K / 8));
    s->idx = (uint16_t *)malloc((size_t)(K / 8) * sizeof(uint16_t));
    return s->d && s->l && s->sg && s->idx ? 0 : -1;
}

static void iq1q_gq_free_row(iq1q_gq_row *s) {
    free(s->d);
    free(s->l);
    free(s->sg);
    free(s->idx);
}

/* Rows [r0, r1) of x (row-major, K columns): y holds their bytes as the plain quantizer wrote
 * them (the starting point; rewritten in place). cost[2 * row] = that start's objective,
 * cost[2 * row + 1] = the written one's. r0, r1: whole row groups. Returns 0, or -1 when
 * out of memory (the bytes are then left as they were). */
static int iq1q_gptq_rows(const iq1q_gptq_problem *P, const float *x, uint8_t *y, int64_t r0, int64_t r1,
                          double *cost) {
    const int64_t K = P->K;
    const iq1q_gq_layout L = iq1q_gq_layout_of(P->fmt);
    const int rows_per_group = iq1q_format_infos[P->fmt].rows_per_group;
    const size_t rs = iq1q_row_size((size_t)iq1q_format_infos[P->fmt].block_size,
                                    (size_t)iq1q_format_infos[P->fmt].type_size,
                                    (size_t)iq1q_format_infos[P->fmt].row_meta_size, K);
    iq1q_gq_scratch S;
    memset(&S, 0, sizeof(S));
    S.xw = (float *)malloc((size_t)K * sizeof(float));
    S.w = (float *)malloc((size_t)K * sizeof(float));
    S.xb = (float *)malloc(32 * sizeof(float));
    S.eb = (float *)malloc(64 * sizeof(float));
    S.r = (double *)malloc((size_t)K * sizeof(double));
    S.hv = (double *)malloc((size_t)K * sizeof(double));
    S.hx = (double *)malloc((size_t)K * sizeof(double));
    int ok = S.xw && S.w && S.xb && S.eb && S.r && S.hv && S.hx;
    ok = ok && !iq1q_gq_alloc_row(&L, K, &S.cur) && !iq1q_gq_alloc_row(&L, K, &S.best) &&
         !iq1q_gq_alloc_row(&L, K, &S.cand);
    if (ok) {
        for (int64_t row = r0; row < r1; ++row) {
            const float *xr = x + row * K;
            const int r = (int)(row % rows_per_group);
            uint8_t *yr = y + (row - r) * rs; /* the row, or its 4-row group */
            iq1q_gq_unpack(P->fmt, K, yr, r, &S.best);
            iq1q_gq_values(&L, K, &S.best, S.w);
            double bestc = iq1q_gq_residual(P->H, K, xr, S.w, S.r, S.hv, S.hx);
            cost[2 * row] = bestc;
            int any = 0;
            for (int64_t i = 0; i < (L.span ? K / L.span : 1); ++i) any |= S.best.d[i] > 0;
            if (any) {
                if (P->passes == 0) { /* ik's solution polished */
                    iq1q_gq_copy(&L, K, &S.cur, &S.best);
                    const double c0 = iq1q_gq_polish(P, &L, xr, &S.cur, &S);
                    if (c0 < bestc) {
                        bestc = c0;
                        iq1q_gq_copy(&L, K, &S.best, &S.cur);
                    }
                }
                for (int pass = 0; pass < P->passes; ++pass) {
                    /* scales from the best so far, everything else chosen anew */
                    iq1q_gq_copy(&L, K, &S.cand, &S.best);
                    iq1q_gq_gptq_row(P, &L, xr, &S.cand, &S);
                    const double c = iq1q_gq_polish(P, &L, xr, &S.cand, &S);
                    if (c < bestc) {
                        bestc = c;
                        iq1q_gq_copy(&L, K, &S.best, &S.cand);
                    }
                }
                iq1q_gq_pack(P->fmt, K, yr, r, &S.best);
            }
            cost[2 * row + 1] = bestc;
        }
    }
    iq1q_gq_free_row(&S.cur);
    iq1q_gq_free_row(&S.best);
    iq1q_gq_free_row(&S.cand);
    free(S.xw);
    free(S.w);
    free(S.xb);
    free(S.eb);
    free(S.r);
    free(S.hv);
    free(S.hx);
    return ok ? 0 : -1;
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

#endif /* IQ1Q_REF_GPTQ_H */
