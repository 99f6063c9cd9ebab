/* float_ops.h: the float work of a forward pass between its products: RMS norm, the gated
 * MLP activations (GELU, SiLU), rotary embeddings, and exp for the output head's log-sum-exp.
 *
 * Portable C written for the compiler to vectorize: every kernel module includes it and
 * compiles it with its own flags (SSE2 in iq1q._ref, AVX-512 in iq1q._avx512), and the
 * shell deals its rows to the pool. A value is made by the same operations in the same
 * order whatever the vector width (the one sum has explicit lanes), so every module and
 * every thread count give the same bits. Why not numpy: its passes over temporaries took
 * 0.12 s of a 1.1 s chunk of Gemma 3 270M on one thread, and stayed on that thread.
 */
#ifndef IQ1Q_FLOAT_OPS_H
#define IQ1Q_FLOAT_OPS_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* Gated MLP activations: y = act(g) * u */
enum { IQ1Q_ACT_SILU = 0, IQ1Q_ACT_GELU = 1 };

/* exp(x) in float32, within 2 ulp for x in [-87.3, 88]; x is clamped to that range (so
 * exp(-inf) gives 1e-38, not 0), NaN stays NaN. Cody-Waite reduction x = n ln2 + r and
 * Cephes' minimax polynomial for exp(r), |r| <= ln2 / 2; 2^n is made in the exponent bits.
 * No libm call, so loops of it vectorize. */
static inline float iq1q_expf(float x) {
    x = x < -87.3f ? -87.3f : x;
    x = x > 88.0f ? 88.0f : x;
    /* round(x / ln2) by the 1.5 * 2^23 trick: the integer lands in t's low mantissa bits */
    const float t = x * 1.44269504088896341f + 12582912.0f;
    const float n = t - 12582912.0f;
    const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    uint32_t bits;
    memcpy(&bits, &t, 4);
    bits = (bits - 0x4B400000u + 127u) << 23; /* 2^n */
    float scale;
    memcpy(&scale, &bits, 4);
    return p * scale;
}

/* 16 floats in GCC's vector extensions, which each kernel module lowers to its own registers
 * (one zmm, two ymm, four NEON q registers, four SSE registers). They pass between
 * always-inlined helpers only: no ABI to keep (setup.py: -Wno-psabi). */
typedef float iq1q_v16 __attribute__((vector_size(64), aligned(4)));
typedef int32_t iq1q_vi16 __attribute__((vector_size(64), aligned(4)));
typedef uint32_t iq1q_vu16 __attribute__((vector_size(64), aligned(4)));

static inline __attribute__((always_inline)) iq1q_v16 iq1q_v16_load(const float *p) {
    iq1q_v16 v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline __attribute__((always_inline)) void iq1q_v16_store(float *p, iq1q_v16 v) { memcpy(p, &v, sizeof v); }

static inline __attribute__((always_inline)) iq1q_v16 iq1q_v16_select(iq1q_vi16 m, iq1q_v16 a, iq1q_v16 b) { /* m ? a : b */
    return (iq1q_v16)(((iq1q_vi16)a & m) | ((iq1q_vi16)b & ~m));
}

/* exp of 16 lanes: iq1q_expf's steps, and exactly 0 below -87.3 (a masked score, -inf) */
static inline __attribute__((always_inline)) iq1q_v16 iq1q_exp16(iq1q_v16 x) {
    const iq1q_vi16 under = x < -87.3f;
    x = iq1q_v16_select(x > 88.0f, (iq1q_v16){0} + 88.0f, iq1q_v16_select(under, (iq1q_v16){0} - 87.3f, x));
    const iq1q_v16 t = x * 1.44269504088896341f + 12582912.0f;
    const iq1q_v16 n = t - 12582912.0f;
    const iq1q_v16 r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
    iq1q_v16 p = r * 1.9875691500e-4f + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    const iq1q_vu16 scale = ((iq1q_vu16)t - 0x4B400000u + 127u) << 23; /* 2^n, unsigned: NaN's bits too */
    return iq1q_v16_select(under, (iq1q_v16){0}, p * (iq1q_v16)scale);
}

/* y[i] = act(g[i]) * u[i] for i in [0, n). Both activations are x * sigmoid(z):
 * SiLU z = x; GELU (ggml's tanh form) 0.5 (1 + tanh(u)) = sigmoid(2u),
 * u = sqrt(2/pi) (x + 0.044715 x^3). */
static void iq1q_gated(int act, const float *g, const float *u, float *y, int64_t n) {
    if (act == IQ1Q_ACT_GELU) {
        for (int64_t i = 0; i < n; ++i) {
            const float x = g[i];
            const float z = 1.59576912160573071f * (x + 0.044715f * x * x * x); /* 2 sqrt(2/pi) */
            y[i] = x / (1.0f + iq1q_expf(-z)) * u[i];
        }
    } else {
        for (int64_t i = 0; i < n; ++i) {
            const float x = g[i];
            y[i] = x / (1.0f + iq1q_expf(-x)) * u[i];
        }
    }
}

/* RMS norm of each of rows [r0, r1) of n values: y = x * (1 / sqrt(mean(x^2) + eps)) * w,
 * the mean in float64 as ggml, the scale rounded to float32 before it multiplies. */
static void iq1q_rms_norm(const float *x, const float *w, float *y, int64_t r0, int64_t r1, int64_t n,
                          double eps) {
    for (int64_t r = r0; r < r1; ++r) {
        const float *xr = x + r * n;
        float *yr = y + r * n;
        double lane[8] = {0};
        int64_t i = 0;
        for (; i + 8 <= n; i += 8)
            for (int k = 0; k < 8; ++k) lane[k] += (double)xr[i + k] * (double)xr[i + k];
        double sum = 0.0;
        for (int k = 0; k < 8; ++k) sum += lane[k];
        for (; i < n; ++i) sum += (double)xr[i] * (double)xr[i];
        const float scale = (float)(1.0 / sqrt(sum / (double)n + eps));
        for (i = 0; i < n; ++i) yr[i] = xr[i] * scale * w[i];
    }
}

/* max |x[i]| over i in [0, n), NaN if any x[i] is NaN: the perplexity table's largest
 * activation, one pass in 16 lanes (numpy's abs and max: two passes and a temporary). */
static float iq1q_max_abs(const float *x, int64_t n) {
    iq1q_v16 top = {0};
    iq1q_vi16 nan = {0};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const iq1q_v16 a = (iq1q_v16)((iq1q_vi16)iq1q_v16_load(x + i) & 0x7fffffff);
        nan |= a != a;
        top = iq1q_v16_select(a > top, a, top);
    }
    float m = 0.0f;
    int bad = 0;
    for (int k = 0; k < 16; ++k) {
        m = top[k] > m ? top[k] : m;
        bad |= nan[k];
    }
    for (; i < n; ++i) {
        const float a = fabsf(x[i]);
        bad |= a != a;
        m = a > m ? a : m;
    }
    return bad ? NAN : m;
}

/* Rotary embedding of rows [r0, r1) of x (T rows of heads x d floats): the first n_rot of
 * each head rotated by the row's cos / sin (T x n_rot / 2 each), the rest copied. NEOX
 * pairs (i, i + n_rot / 2), else (2i, 2i + 1). a cos - b sin and a sin + b cos, each
 * product rounded (no FMA: numpy's bits). */
static void iq1q_rope(const float *x, const float *cs, const float *sn, float *y, int64_t r0, int64_t r1,
                      int64_t heads, int64_t d, int64_t n_rot, int neox) {
    const int64_t half = n_rot / 2;
    for (int64_t r = r0; r < r1; ++r) {
        const float *c = cs + r * half, *s = sn + r * half;
        for (int64_t h = 0; h < heads; ++h) {
            const float *xh = x + (r * heads + h) * d;
            float *yh = y + (r * heads + h) * d;
            if (neox) {
                for (int64_t i = 0; i < half; ++i) {
                    const float a = xh[i], b = xh[i + half];
                    yh[i] = a * c[i] - b * s[i];
                    yh[i + half] = a * s[i] + b * c[i];
                }
            } else {
                for (int64_t i = 0; i < half; ++i) {
                    const float a = xh[2 * i], b = xh[2 * i + 1];
                    yh[2 * i] = a * c[i] - b * s[i];
                    yh[2 * i + 1] = a * s[i] + b * c[i];
                }
            }
            for (int64_t i = n_rot; i < d; ++i) yh[i] = xh[i];
        }
    }
}

#endif /* IQ1Q_FLOAT_OPS_H */
