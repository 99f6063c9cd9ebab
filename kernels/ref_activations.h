/* ref_activations.h: the activation quantizers (docs/spec.md §5, the AVX2 column:
 * d = amax/127, id = 127/amax, round half to even), their dequantizers, and
 * the fp16 hazard scan that finds blocks whose fp16 fields cannot hold them.
 *
 * Quantizers return -1, or the index of the first row holding NaN or Inf
 * (that row's bytes are then meaningless).
 */
#ifndef IQ1Q_REF_ACTIVATIONS_H
#define IQ1Q_REF_ACTIVATIONS_H

#include <float.h>
#include "iq1q_common.h"

/* max |x| over a block; *bad is set when the block holds NaN or Inf */
static inline float iq1q_absmax(const float *x, int n, int *bad) {
    float amax = 0.0f;
    int finite = 1;
    for (int j = 0; j < n; ++j) {
        const float a = fabsf(x[j]);
        finite &= a <= FLT_MAX;
        amax = a > amax ? a : amax;
    }
    if (!finite) *bad = 1;
    return amax;
}

/* q_j = round_half_even(x_j * 127/amax); returns the sum of the quants.
 *
 * Below amax ~ 3.7e-37, 127/amax overflows float32: x * id would be +-inf or NaN and
 * the quants undefined (ik_llama.cpp's x86 code yields -128 there, C's lrintf
 * something else). There both x and amax are scaled by 2^64 first: exact, as a
 * power of two, so q is the product x * id would round to with an unbounded
 * exponent, and the block keeps its full int8 range. Above it, the scale is 1. */
static inline int iq1q_quantize_q8(const float *x, int n, float amax, int8_t *q) {
    float id = amax > 0.0f ? 127.0f / amax : 0.0f, scale = 1.0f;
    if (id > FLT_MAX) {
        scale = 0x1p64f;
        id = 127.0f / (amax * scale);
    }
    int sum = 0;
    for (int j = 0; j < n; ++j) {
        const int v = iq1q_nearest_int(x[j] * scale * id);
        q[j] = (int8_t)v;
        sum += v;
    }
    return sum;
}

/* One block of each format from its values x and their amax (the SIMD
 * quantizers fall back to these for blocks their vector path cannot take). */

static inline void iq1q_ref_block_q8_0(const float *x, iq1q_block_q8_0 *b, float amax) {
    b->d = iq1q_fp32_to_fp16(amax / 127.0f);
    iq1q_quantize_q8(x, IQ1Q_BLOCK_Q8_0, amax, b->qs);
}

/* s = fp16(d_f32 * sum q) with the unrounded float scale: the field that
 * overflows to +-inf when |sum x| passes ~65504 (docs/spec.md §5.2). */
static inline void iq1q_ref_block_q8_1(const float *x, iq1q_block_q8_1 *b, float amax) {
    const float d = amax / 127.0f;
    const int sum = iq1q_quantize_q8(x, IQ1Q_BLOCK_Q8_1, amax, b->qs);
    b->d = iq1q_fp32_to_fp16(d);
    b->s = iq1q_fp32_to_fp16(d * (float)sum);
}

static inline void iq1q_ref_block_q8_k(const float *x, iq1q_block_q8_k *b, float amax) {
    const float d = amax / 127.0f;
    const int sum = iq1q_quantize_q8(x, IQ1Q_BLOCK_Q8_K, amax, b->qs);
    for (int k = 0; k < IQ1Q_BLOCK_Q8_K / 16; ++k) {
        int s = 0;
        for (int j = 0; j < 16; ++j) s += b->qs[16 * k + j];
        b->bsums[k] = (int16_t)s;
    }
    b->d = d;
    b->sum = d * (float)sum;
}

static inline void iq1q_ref_block_q8_k128(const float *x, iq1q_block_q8_k128 *b, float amax) {
    iq1q_quantize_q8(x, IQ1Q_BLOCK_Q8_K128, amax, b->qs);
    for (int k = 0; k < IQ1Q_BLOCK_Q8_K128 / 32; ++k) {
        int s = 0;
        for (int j = 0; j < 32; ++j) s += b->qs[32 * k + j];
        b->bsums[k] = (int16_t)s;
    }
    b->d = amax / 127.0f;
}

/* The row loop of every activation quantizer, the SIMD ones included:
 * BLOCK_FN(x, b) quantizes one block and returns 1 when it holds NaN/Inf. */
#define IQ1Q_ACT_ROW_LOOP(NAME, ID, name, BLOCK_FN)                                         \
    static inline int64_t NAME(const float *x, uint8_t *y, int64_t nrows, int64_t n) {      \
        enum { QK = IQ1Q_BLOCK_##ID };                                                       \
        iq1q_block_##name *b = (iq1q_block_##name *)y;                                       \
        int64_t first_bad = -1;                                                              \
        for (int64_t r = 0; r < nrows; ++r) {                                                \
            int bad = 0;                                                                     \
            for (int64_t i = 0; i < n / QK; ++i, x += QK, ++b) bad |= BLOCK_FN(x, b);        \
            if (bad && first_bad < 0) first_bad = r;                                         \
        }                                                                                    \
        return first_bad;                                                                    \
    }

#define IQ1Q_ACT_QUANTIZER(ID, name)                                                        \
    static inline int iq1q_ref_checked_##name(const float *x, iq1q_block_##name *b) {       \
        int bad = 0;                                                                         \
        iq1q_ref_block_##name(x, b, iq1q_absmax(x, IQ1Q_BLOCK_##ID, &bad));                  \
        return bad;                                                                          \
    }                                                                                        \
    IQ1Q_ACT_ROW_LOOP(iq1q_ref_quantize_##name, ID, name, iq1q_ref_checked_##name)

IQ1Q_ACT_QUANTIZER(Q8_0, q8_0)
IQ1Q_ACT_QUANTIZER(Q8_1, q8_1)
IQ1Q_ACT_QUANTIZER(Q8_K, q8_k)
IQ1Q_ACT_QUANTIZER(Q8_K128, q8_k128)

#undef IQ1Q_ACT_QUANTIZER

/* ---- dequantizers: d * q ------------------------------------------------ */

#define IQ1Q_ACT_DEQUANTIZER(NAME, ID, BLOCK_T, SCALE)                         \
    static inline void NAME(const uint8_t *x, float *y, int64_t nrows, int64_t n) { \
        enum { QK = IQ1Q_BLOCK_##ID };                                          \
        const BLOCK_T *b = (const BLOCK_T *)x;                                  \
        for (int64_t i = 0; i < nrows * (n / QK); ++i, ++b, y += QK) {          \
            const float d = SCALE;                                              \
            for (int j = 0; j < QK; ++j) y[j] = d * (float)b->qs[j];           \
        }                                                                       \
    }

IQ1Q_ACT_DEQUANTIZER(iq1q_ref_dequantize_q8_0, Q8_0, iq1q_block_q8_0, iq1q_fp16_to_fp32(b->d))
IQ1Q_ACT_DEQUANTIZER(iq1q_ref_dequantize_q8_1, Q8_1, iq1q_block_q8_1, iq1q_fp16_to_fp32(b->d))
IQ1Q_ACT_DEQUANTIZER(iq1q_ref_dequantize_q8_k, Q8_K, iq1q_block_q8_k, b->d)
IQ1Q_ACT_DEQUANTIZER(iq1q_ref_dequantize_q8_k128, Q8_K128, iq1q_block_q8_k128, b->d)

#undef IQ1Q_ACT_DEQUANTIZER

/* ---- fp16 hazards -------------------------------------------------------- */

/* A block of the activations: row, block index in the row, and the float32
 * value that did not fit in fp16 (row -1: no such block). */
typedef struct { int64_t row, block; float value; } iq1q_fp16_site;

typedef struct {
    int64_t overflow_blocks;  /* a fp16 field became +-inf */
    int64_t underflow_blocks; /* a non-zero block whose fp16 scale is zero or subnormal */
    iq1q_fp16_site first;          /* the first offending block of either kind */
    iq1q_fp16_site first_overflow; /* the first overflowing block */
    int64_t nonfinite_row;         /* the first row holding NaN or Inf, or -1 */
} iq1q_fp16_report;

/* Scans raw activations for what q8_0 (with_sum = 0: the scale d) or q8_1
 * (with_sum = 1: d and s = d * sum q) would store, computing exactly what
 * the quantizers above compute. Blocks holding NaN or Inf are not counted;
 * the first row with one is reported instead. */
static inline void iq1q_ref_fp16_hazards(const float *x, int64_t nrows, int64_t n, int with_sum,
                                  iq1q_fp16_report *rep) {
    enum { QK = IQ1Q_BLOCK_Q8_0 };
    _Static_assert((int)IQ1Q_BLOCK_Q8_0 == (int)IQ1Q_BLOCK_Q8_1, "q8_0 and q8_1 share a block");
    const iq1q_fp16_site none = {-1, -1, 0.0f};
    rep->overflow_blocks = rep->underflow_blocks = 0;
    rep->first = rep->first_overflow = none;
    rep->nonfinite_row = -1;
    int8_t q[QK];
    for (int64_t r = 0; r < nrows; ++r) {
        for (int64_t i = 0; i < n / QK; ++i, x += QK) {
            int bad = 0;
            const float amax = iq1q_absmax(x, QK, &bad);
            if (bad) {
                if (rep->nonfinite_row < 0) rep->nonfinite_row = r;
                continue;
            }
            const float d = amax / 127.0f;
            float value = d;
            int over = !iq1q_fp16_is_finite(iq1q_fp32_to_fp16(d));
            const int under = amax > 0.0f && iq1q_fp16_is_tiny(iq1q_fp32_to_fp16(d));
            if (with_sum && !over) {
                const float s = d * (float)iq1q_quantize_q8(x, QK, amax, q);
                if (!iq1q_fp16_is_finite(iq1q_fp32_to_fp16(s))) { over = 1; value = s; }
            }
            const iq1q_fp16_site here = {r, i, value};
            rep->overflow_blocks += over;
            rep->underflow_blocks += under;
            if ((over || under) && rep->first.row < 0) rep->first = here;
            if (over && rep->first_overflow.row < 0) rep->first_overflow = here;
        }
    }
}

#endif /* IQ1Q_REF_ACTIVATIONS_H */
