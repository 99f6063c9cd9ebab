/* attention.h: causal self-attention of one block in float32, a task per (query head,
 * block of IQ1Q_ATTN_ROWS queries), for the pool.
 *
 *   o[i, h] = sum over keys t <= last query of the block of  p[i, t] v[t, j] / sum_t p[i, t],
 *   p[i, t] = exp(s[i, t] - max_t s[i, t]),  s[i, t] = q[i, h] . k[t, j] + mask[i, t]
 *
 * for every query head h of the group that reads key/value head j (grouped-query attention,
 * as ggml broadcasts); the products q . k are scaled (1 / sqrt(d) or the model's). The mask (T x T, added; -inf where a key is not
 * seen) makes it causal or sliding; a block reads only the keys up to its last query.
 *
 * Written with GCC's vector extensions (16 floats), which every kernel module lowers to its
 * own registers: one zmm (AVX-512), two ymm (AVX2), four q registers (NEON), SSE in the
 * reference module. Micro-tiles of 4 rows x 32 columns keep 8 accumulators in registers;
 * multiply-adds are fused where the target has FMA (so, unlike float_ops.h, the bits depend
 * on the module, as BLAS's do). Why not numpy: its per-piece products and passes cost 0.17 s
 * of a 1.1 s chunk of Gemma 3 270M, on Python threads that fought the native pool's.
 */
#ifndef IQ1Q_ATTENTION_H
#define IQ1Q_ATTENTION_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "float_ops.h"

enum {
    IQ1Q_ATTN_ROWS = 64, /* queries of one head per task */
    IQ1Q_ATTN_KEYS = 32, /* key columns of a micro-tile; the transposed keys are padded to it */
};

/* multiply-adds fused where the target has FMA (a pragma: the build is -ffp-contract=off) */
#pragma GCC push_options
#if defined(__FMA__) || defined(__aarch64__)
#pragma GCC optimize("fp-contract=fast")
#endif

typedef struct {
    const float *q;    /* (T, n_head, d) */
    const float *kt;   /* (n_kv, d, Tp): keys transposed, zero past T (Tp a multiple of IQ1Q_ATTN_KEYS) */
    const float *v;    /* (T, n_kv, dv) */
    const float *mask; /* (T, T) */
    float *o;          /* (T, n_head, dv) */
    int64_t T, Tp, n_head, n_kv, d, dv, blocks; /* blocks: query blocks per key/value head */
    float scale;       /* of q . k */
    int failed;        /* a task found no memory for its scores */
} iq1q_attn_job;

/* s[r][t] = scale * q row r . key t for R rows (R <= 4), keys [0, nk) in steps of 32 (nk <= Tp) */
static inline __attribute__((always_inline)) void
iq1q_attn_scores(const iq1q_attn_job *j, const float *const *qr, const float *kt, float *s, int64_t ld,
                 int64_t nk, const int R) {
    for (int64_t t = 0; t < nk; t += IQ1Q_ATTN_KEYS) {
        iq1q_v16 a[4][2] = {{{0}}};
        for (int64_t c = 0; c < j->d; ++c) {
            const iq1q_v16 k0 = iq1q_v16_load(kt + c * j->Tp + t), k1 = iq1q_v16_load(kt + c * j->Tp + t + 16);
            for (int r = 0; r < R; ++r) {
                const float x = qr[r][c];
                a[r][0] += x * k0;
                a[r][1] += x * k1;
            }
        }
        for (int r = 0; r < R; ++r) {
            iq1q_v16_store(s + r * ld + t, a[r][0] * j->scale);
            iq1q_v16_store(s + r * ld + t + 16, a[r][1] * j->scale);
        }
    }
}

/* out row r = sum over t < nk of p[r][t] v[t], for R rows (R <= 4), columns [c0, c0 + 32) */
static inline __attribute__((always_inline)) void
iq1q_attn_values(const iq1q_attn_job *j, const float *p, int64_t ld, const float *v, int64_t nk, int64_t c0,
                 iq1q_v16 out[4][2], const int R) {
    iq1q_v16 a[4][2] = {{{0}}};
    const int64_t vstride = j->n_kv * j->dv;
    for (int64_t t = 0; t < nk; ++t) {
        const iq1q_v16 v0 = iq1q_v16_load(v + t * vstride + c0), v1 = iq1q_v16_load(v + t * vstride + c0 + 16);
        for (int r = 0; r < R; ++r) {
            const float x = p[r * ld + t];
            a[r][0] += x * v0;
            a[r][1] += x * v1;
        }
    }
    memcpy(out, a, sizeof a);
}

/* Rows [i0, i0 + R) of one query head h (R <= 4): scores, softmax, values into o. */
static inline __attribute__((always_inline)) void iq1q_attn_rows(const iq1q_attn_job *j, int64_t jh, int64_t h,
                                                                 int64_t i0, int64_t nk, float *s, const int R) {
    const float *qr[4];
    for (int r = 0; r < R; ++r) qr[r] = j->q + ((i0 + r) * j->n_head + h) * j->d;
    const int64_t ld = j->Tp;
    const int64_t nk32 = (nk + IQ1Q_ATTN_KEYS - 1) / IQ1Q_ATTN_KEYS * IQ1Q_ATTN_KEYS; /* <= Tp */
    iq1q_attn_scores(j, qr, j->kt + jh * j->d * j->Tp, s, ld, nk32, R);
    float inv[4];
    for (int r = 0; r < R; ++r) { /* softmax without the division: 1 / sum scales the output */
        float *sr = s + r * ld;
        const float *m = j->mask + (i0 + r) * j->T;
        for (int64_t t = 0; t < nk; ++t) sr[t] += m[t];
        for (int64_t t = nk; t < nk32; ++t) sr[t] = -INFINITY; /* the padding */
        iq1q_v16 top16 = (iq1q_v16){0} - INFINITY;
        for (int64_t t = 0; t < nk32; t += 16) {
            const iq1q_v16 x = iq1q_v16_load(sr + t);
            top16 = iq1q_v16_select(x > top16, x, top16);
        }
        float top = -INFINITY;
        for (int k = 0; k < 16; ++k) top = top16[k] > top ? top16[k] : top;
        if (top == -INFINITY) top = 0.0f; /* every key masked: the row is 0 / 0, as numpy's */
        iq1q_v16 sum16 = {0};
        for (int64_t t = 0; t < nk32; t += 16) {
            const iq1q_v16 e = iq1q_exp16(iq1q_v16_load(sr + t) - top);
            iq1q_v16_store(sr + t, e);
            sum16 += e;
        }
        float sum = 0.0f;
        for (int k = 0; k < 16; ++k) sum += sum16[k];
        inv[r] = 1.0f / sum;
    }
    const float *v = j->v + jh * j->dv;
    int64_t c0 = 0;
    for (; c0 + 32 <= j->dv; c0 += 32) {
        iq1q_v16 a[4][2];
        iq1q_attn_values(j, s, ld, v, nk, c0, a, R);
        for (int r = 0; r < R; ++r) {
            float *orow = j->o + ((i0 + r) * j->n_head + h) * j->dv + c0;
            iq1q_v16_store(orow, a[r][0] * inv[r]);
            iq1q_v16_store(orow + 16, a[r][1] * inv[r]);
        }
    }
    for (; c0 < j->dv; ++c0) /* a head size that is not a multiple of 32 */
        for (int r = 0; r < R; ++r) {
            float acc = 0.0f;
            for (int64_t t = 0; t < nk; ++t) acc += s[r * ld + t] * v[t * j->n_kv * j->dv + c0];
            j->o[((i0 + r) * j->n_head + h) * j->dv + c0] = acc * inv[r];
        }
}

/* Task: one query head h (of key/value head h / group) over one block of queries. The
 * last blocks read the most keys, so they go first: tasks are taken in order, and the
 * cheap ones then fill in behind (Gemma 3 270M, 2 threads: 8 tasks of one key/value head
 * each, block first, scaled 1.3x; 32, last block first, ~1.8x). */
static void iq1q_attn_task(void *ctx, int64_t task) {
    iq1q_attn_job *j = (iq1q_attn_job *)ctx;
    const int64_t h = task % j->n_head, r0 = (j->blocks - 1 - task / j->n_head) * IQ1Q_ATTN_ROWS;
    const int64_t r1 = r0 + IQ1Q_ATTN_ROWS < j->T ? r0 + IQ1Q_ATTN_ROWS : j->T;
    const int64_t jh = h / (j->n_head / j->n_kv);
    float *s = malloc((size_t)4 * j->Tp * sizeof(float));
    if (!s) {
        j->failed = 1;
        return;
    }
    int64_t i = r0;
    for (; i + 4 <= r1; i += 4) iq1q_attn_rows(j, jh, h, i, i + 4, s, 4);
    for (; i < r1; ++i) iq1q_attn_rows(j, jh, h, i, i + 1, s, 1);
    free(s);
}

#pragma GCC pop_options
#endif /* IQ1Q_ATTENTION_H */
