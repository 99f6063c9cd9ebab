/* neon_activations.h: NEON versions of the four activation quantizers (q8_0,
 * q8_1, q8_k, q8_k128; docs/spec.md §5, the AVX2 column) whose output bytes and return
 * values are identical to ref_activations.h for every input. (ik_llama.cpp's
 * ARM q8_k rounds differently from its x86 one, docs/spec.md §5.4; ours does not.)
 *
 * How bit-identity is kept, as in x86_activations.h:
 *   - amax is the integer max of the |x| bit patterns: for non-negative floats
 *     integer order is float order, and every NaN/Inf pattern is >= 0x7f800000,
 *     so the same max tells whether the block holds a non-finite value.
 *   - The vector path runs only when x * id is finite everywhere (amax and
 *     id = 127/amax finite); other blocks go through the reference's own block
 *     code, so they get whatever the reference gets.
 *   - q = vcvtnq_s32_f32(x * id): one float multiply (vmulq_n_f32, the scalar
 *     product) rounded to nearest, ties to even, as lrintf under the default
 *     FPCR; |q| <= 127 there, so narrowing never saturates.
 *   - d, s and the fp16 fields are the reference's scalar expressions.
 * Assumes the default FPCR (round to nearest, no flush-to-zero), as the reference does.
 */
#ifndef IQ1Q_NEON_ACTIVATIONS_H
#define IQ1Q_NEON_ACTIVATIONS_H

#include <arm_neon.h>

#include "iq1q_common.h"
#include "ref_activations.h"

#define IQ1Q_NEON_NONFINITE_BITS 0x7f800000u

/* max of the |x| bit patterns of n values (a multiple of 16) */
static inline uint32_t iq1q_neon_maxbits(const float *x, int n) {
    const uint32x4_t abs = vdupq_n_u32(0x7fffffffu);
    uint32x4_t m0 = vdupq_n_u32(0), m1 = m0;
    for (int j = 0; j < n; j += 8) {
        m0 = vmaxq_u32(m0, vandq_u32(vld1q_u32((const uint32_t *)(x + j)), abs));
        m1 = vmaxq_u32(m1, vandq_u32(vld1q_u32((const uint32_t *)(x + j + 4)), abs));
    }
    return vmaxvq_u32(vmaxq_u32(m0, m1));
}

/* amax and id of a block for the vector path; 0 when the block must take the
 * reference's path (its own amax, and its own verdict on NaN/Inf). */
static inline int iq1q_neon_scale(const float *x, int n, float *amax, float *id) {
    const uint32_t abits = iq1q_neon_maxbits(x, n);
    *amax = iq1q_bits_to_f32(abits);
    *id = *amax > 0.0f ? 127.0f / *amax : 0.0f;
    return abits < IQ1Q_NEON_NONFINITE_BITS && iq1q_f32_to_bits(*id) < IQ1Q_NEON_NONFINITE_BITS;
}

/* q = round_half_even(x * id) for n values (a multiple of 16); sums[g] = the sum of
 * the quants of group g of `group` values (16 or 32), when sums is given; returns
 * the sum of all the quants. */
static inline int iq1q_neon_quant(const float *x, int n, float id, int8_t *q, int group, int16_t *sums) {
    int total = 0;
    for (int j = 0; j < n; j += 16) {
        const int32x4_t a = vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(x + j), id));
        const int32x4_t b = vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(x + j + 4), id));
        const int32x4_t c = vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(x + j + 8), id));
        const int32x4_t d = vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(x + j + 12), id));
        const int16x8_t lo = vcombine_s16(vmovn_s32(a), vmovn_s32(b));
        const int16x8_t hi = vcombine_s16(vmovn_s32(c), vmovn_s32(d));
        vst1q_s8(q + j, vcombine_s8(vmovn_s16(lo), vmovn_s16(hi)));
        const int s = vaddvq_s32(vaddq_s32(vaddq_s32(a, b), vaddq_s32(c, d)));
        if (sums) sums[j / group] = (int16_t)((j % group ? sums[j / group] : 0) + s);
        total += s;
    }
    return total;
}

/* One block of each format; returns 1 when it holds NaN/Inf (the BLOCK_FN of IQ1Q_ACT_ROW_LOOP). */

static inline int iq1q_neon_block_q8_0(const float *x, iq1q_block_q8_0 *b) {
    float amax, id;
    if (!iq1q_neon_scale(x, IQ1Q_BLOCK_Q8_0, &amax, &id)) return iq1q_ref_checked_q8_0(x, b);
    iq1q_neon_quant(x, IQ1Q_BLOCK_Q8_0, id, b->qs, 16, NULL);
    b->d = iq1q_fp32_to_fp16(amax / 127.0f);
    return 0;
}

static inline int iq1q_neon_block_q8_1(const float *x, iq1q_block_q8_1 *b) {
    float amax, id;
    if (!iq1q_neon_scale(x, IQ1Q_BLOCK_Q8_1, &amax, &id)) return iq1q_ref_checked_q8_1(x, b);
    const float d = amax / 127.0f;
    const int sum = iq1q_neon_quant(x, IQ1Q_BLOCK_Q8_1, id, b->qs, 16, NULL);
    b->d = iq1q_fp32_to_fp16(d);
    b->s = iq1q_fp32_to_fp16(d * (float)sum);
    return 0;
}

static inline int iq1q_neon_block_q8_k(const float *x, iq1q_block_q8_k *b) {
    float amax, id;
    if (!iq1q_neon_scale(x, IQ1Q_BLOCK_Q8_K, &amax, &id)) return iq1q_ref_checked_q8_k(x, b);
    const float d = amax / 127.0f;
    const int sum = iq1q_neon_quant(x, IQ1Q_BLOCK_Q8_K, id, b->qs, 16, b->bsums);
    b->d = d;
    b->sum = d * (float)sum;
    return 0;
}

static inline int iq1q_neon_block_q8_k128(const float *x, iq1q_block_q8_k128 *b) {
    float amax, id;
    if (!iq1q_neon_scale(x, IQ1Q_BLOCK_Q8_K128, &amax, &id)) return iq1q_ref_checked_q8_k128(x, b);
    iq1q_neon_quant(x, IQ1Q_BLOCK_Q8_K128, id, b->qs, 32, b->bsums);
    b->d = amax / 127.0f;
    return 0;
}

IQ1Q_ACT_ROW_LOOP(iq1q_neon_quantize_q8_0, Q8_0, q8_0, iq1q_neon_block_q8_0)
IQ1Q_ACT_ROW_LOOP(iq1q_neon_quantize_q8_1, Q8_1, q8_1, iq1q_neon_block_q8_1)
IQ1Q_ACT_ROW_LOOP(iq1q_neon_quantize_q8_k, Q8_K, q8_k, iq1q_neon_block_q8_k)
IQ1Q_ACT_ROW_LOOP(iq1q_neon_quantize_q8_k128, Q8_K128, q8_k128, iq1q_neon_block_q8_k128)

/* Indexed by iq1q_format - IQ1Q_Q8_0. */
static const iq1q_act_quantize_fn iq1q_simd_act_quantizers[IQ1Q_NUM_ACTIVATION_FORMATS] = {
    [IQ1Q_Q8_0 - IQ1Q_Q8_0] = iq1q_neon_quantize_q8_0,
    [IQ1Q_Q8_1 - IQ1Q_Q8_0] = iq1q_neon_quantize_q8_1,
    [IQ1Q_Q8_K - IQ1Q_Q8_0] = iq1q_neon_quantize_q8_k,
    [IQ1Q_Q8_K128 - IQ1Q_Q8_0] = iq1q_neon_quantize_q8_k128,
};

#endif /* IQ1Q_NEON_ACTIVATIONS_H */
