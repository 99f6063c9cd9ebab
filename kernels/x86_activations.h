/* x86_activations.h: AVX2 + F16C versions of the four activation quantizers
 * (q8_0, q8_1, q8_k, q8_k128; docs/spec.md §5, the AVX2 column) whose output bytes and
 * return values are identical to ref_activations.h for every input.
 *
 * Arithmetic, as in the reference: amax = max |x| over the block, d = amax/127,
 * id = amax > 0 ? 127/amax : 0, q = round_half_even(x * id) (one float multiply,
 * then _mm256_cvtps_epi32 under the default MXCSR = lrintf), integer sums.
 *
 * How bit-identity is kept:
 *   - amax is the integer max of the |x| bit patterns. For non-negative
 *     non-NaN floats integer order is float order (subnormals included), and
 *     every NaN/Inf pattern is >= 0x7f800000, so the same max also tells
 *     whether the block holds a non-finite value (the reference's "bad" test).
 *   - The vector path runs only when x * id is finite for every element: amax
 *     finite and id = 127/amax finite. Otherwise (a NaN/Inf in the block, or
 *     amax < ~3.7e-37 so that 127/amax overflows to inf, which the reference
 *     handles by scaling) the block goes through the reference's own block code.
 *   - In the vector path |x * id| <= ~127, so packs never saturate, and
 *     cvtps_epi32 (MXCSR round-to-nearest-even) equals lrintf.
 *   - fp16 fields in the vector path are converted with F16C (vcvtps2ph,
 *     immediate 0 = round to nearest even); the inputs there are finite or
 *     +-inf (never NaN). tests/c/test_x86_activations.c --exhaustive checks
 *     F16C against iq1q_fp32_to_fp16 for all 2^32 float patterns (NaNs included).
 *   - The row/block loop mirrors the reference shell exactly (x advances by
 *     one block per block, n / QK blocks per row, first row with a non-finite
 *     value returned).
 *
 * Assumes the default MXCSR (round to nearest, no DAZ/FTZ), as the reference does
 * for its own scalar SSE arithmetic.
 *
 * q8_0 / q8_1 work on 8 blocks (256 values) at a time so that the 8 block
 * maxima, the divisions and the fp16 conversions are done in one vector each.
 */
#ifndef IQ1Q_X86_ACTIVATIONS_H
#define IQ1Q_X86_ACTIVATIONS_H

#include <float.h>
#include <immintrin.h>
#include "iq1q_common.h"
#include "ref_activations.h"

#if !defined(__AVX2__) || !defined(__F16C__)
#error "x86_activations.h needs -mavx2 -mfma -mf16c"
#endif

/* Blocks the vector path cannot take go through the reference's own block code,
 * iq1q_ref_checked_* (ref_activations.h), which also gives the NaN/Inf verdict. */

/* ---- vector helpers ------------------------------------------------------ */

#define IQ1Q_X86_NONFINITE_BITS 0x7f800000u

/* |x| as int32 bit patterns (sign cleared, so signed int compares are float compares) */
static inline __m256i iq1q_x86_absbits(const float *x) {
    return _mm256_and_si256(_mm256_loadu_si256((const __m256i *)x), _mm256_set1_epi32(0x7fffffff));
}

/* lane-wise max of the |x| bits of 32 consecutive values */
static inline __m256i iq1q_x86_maxbits32(const float *x) {
    const __m256i a = _mm256_max_epi32(iq1q_x86_absbits(x), iq1q_x86_absbits(x + 8));
    const __m256i b = _mm256_max_epi32(iq1q_x86_absbits(x + 16), iq1q_x86_absbits(x + 24));
    return _mm256_max_epi32(a, b);
}

static inline uint32_t iq1q_x86_hmax_epi32(__m256i m) {
    __m128i v = _mm_max_epi32(_mm256_castsi256_si128(m), _mm256_extracti128_si256(m, 1));
    v = _mm_max_epi32(v, _mm_shuffle_epi32(v, 0x4e));
    v = _mm_max_epi32(v, _mm_shuffle_epi32(v, 0xb1));
    return (uint32_t)_mm_cvtsi128_si32(v);
}

static inline int iq1q_x86_hsum_epi32(__m256i m) {
    __m128i v = _mm_add_epi32(_mm256_castsi256_si128(m), _mm256_extracti128_si256(m, 1));
    v = _mm_add_epi32(v, _mm_shuffle_epi32(v, 0x4e));
    v = _mm_add_epi32(v, _mm_shuffle_epi32(v, 0xb1));
    return _mm_cvtsi128_si32(v);
}

/* Transposed reductions of 8 vectors of 8 int32 lanes.
 * iq1q_x86_tsum8_lanes: u0 = [sum lo lane of m0..m3 | sum hi lane of m0..m3],
 * u1 likewise for m4..m7 (each entry = sum of the 4 int32 of that 128-bit lane). */
static inline void iq1q_x86_tsum8_lanes(__m256i m0, __m256i m1, __m256i m2, __m256i m3, __m256i m4,
                                        __m256i m5, __m256i m6, __m256i m7, __m256i *u0, __m256i *u1) {
    const __m256i t0 = _mm256_add_epi32(_mm256_unpacklo_epi32(m0, m1), _mm256_unpackhi_epi32(m0, m1));
    const __m256i t1 = _mm256_add_epi32(_mm256_unpacklo_epi32(m2, m3), _mm256_unpackhi_epi32(m2, m3));
    const __m256i t2 = _mm256_add_epi32(_mm256_unpacklo_epi32(m4, m5), _mm256_unpackhi_epi32(m4, m5));
    const __m256i t3 = _mm256_add_epi32(_mm256_unpacklo_epi32(m6, m7), _mm256_unpackhi_epi32(m6, m7));
    *u0 = _mm256_add_epi32(_mm256_unpacklo_epi64(t0, t1), _mm256_unpackhi_epi64(t0, t1));
    *u1 = _mm256_add_epi32(_mm256_unpacklo_epi64(t2, t3), _mm256_unpackhi_epi64(t2, t3));
}

/* [hsum m0, ..., hsum m7] */
static inline __m256i iq1q_x86_tsum8(__m256i m0, __m256i m1, __m256i m2, __m256i m3, __m256i m4,
                                     __m256i m5, __m256i m6, __m256i m7) {
    __m256i u0, u1;
    iq1q_x86_tsum8_lanes(m0, m1, m2, m3, m4, m5, m6, m7, &u0, &u1);
    return _mm256_add_epi32(_mm256_permute2x128_si256(u0, u1, 0x20),
                            _mm256_permute2x128_si256(u0, u1, 0x31));
}

/* [hmax m0, ..., hmax m7] for non-negative int32 lanes */
static inline __m256i iq1q_x86_tmax8(__m256i m0, __m256i m1, __m256i m2, __m256i m3, __m256i m4,
                                     __m256i m5, __m256i m6, __m256i m7) {
    const __m256i t0 = _mm256_max_epi32(_mm256_unpacklo_epi32(m0, m1), _mm256_unpackhi_epi32(m0, m1));
    const __m256i t1 = _mm256_max_epi32(_mm256_unpacklo_epi32(m2, m3), _mm256_unpackhi_epi32(m2, m3));
    const __m256i t2 = _mm256_max_epi32(_mm256_unpacklo_epi32(m4, m5), _mm256_unpackhi_epi32(m4, m5));
    const __m256i t3 = _mm256_max_epi32(_mm256_unpacklo_epi32(m6, m7), _mm256_unpackhi_epi32(m6, m7));
    const __m256i u0 = _mm256_max_epi32(_mm256_unpacklo_epi64(t0, t1), _mm256_unpackhi_epi64(t0, t1));
    const __m256i u1 = _mm256_max_epi32(_mm256_unpacklo_epi64(t2, t3), _mm256_unpackhi_epi64(t2, t3));
    return _mm256_max_epi32(_mm256_permute2x128_si256(u0, u1, 0x20),
                            _mm256_permute2x128_si256(u0, u1, 0x31));
}

/* Quantizes 32 values with the scale id: returns the 32 int8 quants in order
 * and, in *isum, 8 int32 lanes whose total is their sum. */
static inline __m256i iq1q_x86_quant32(const float *x, __m256 id, __m256i *isum) {
    const __m256i q0 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x), id));
    const __m256i q1 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 8), id));
    const __m256i q2 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 16), id));
    const __m256i q3 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 24), id));
    *isum = _mm256_add_epi32(_mm256_add_epi32(q0, q1), _mm256_add_epi32(q2, q3));
    /* packs interleave 128-bit lanes: bytes come out as dwords 0 2 4 6 1 3 5 7 */
    const __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(q0, q1), _mm256_packs_epi32(q2, q3));
    return _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

/* 8 int32 lanes whose 128-bit halves sum to the quants of bytes 0..15 and 16..31 */
static inline __m256i iq1q_x86_sum16x2(__m256i q) {
    const __m256i p = _mm256_maddubs_epi16(_mm256_set1_epi8(1), q); /* 16 pair sums, |.| <= 254 */
    return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

/* id for the vector path, or a negative value when the block must take the
 * scalar path (x * id would not be finite everywhere). */
static inline float iq1q_x86_inv_scale(float amax) {
    const float id = amax > 0.0f ? 127.0f / amax : 0.0f;
    return iq1q_f32_to_bits(id) < IQ1Q_X86_NONFINITE_BITS ? id : -1.0f;
}

/* ---- q8_0 / q8_1 --------------------------------------------------------- */

/* One block of 32; returns 1 when the block holds NaN/Inf. */
static inline int iq1q_x86_q8_01_x1(const float *x, uint8_t *y, int with_sum) {
    const uint32_t abits = iq1q_x86_hmax_epi32(iq1q_x86_maxbits32(x));
    const float amax = iq1q_bits_to_f32(abits);
    const float id = iq1q_x86_inv_scale(amax);
    if (abits >= IQ1Q_X86_NONFINITE_BITS || id < 0.0f) {
        return with_sum ? iq1q_ref_checked_q8_1(x, (iq1q_block_q8_1 *)y)
                        : iq1q_ref_checked_q8_0(x, (iq1q_block_q8_0 *)y);
    }
    __m256i isum;
    const __m256i q = iq1q_x86_quant32(x, _mm256_set1_ps(id), &isum);
    const float d = amax / 127.0f;
    if (with_sum) {
        iq1q_block_q8_1 *b = (iq1q_block_q8_1 *)y;
        b->d = iq1q_fp32_to_fp16(d);
        b->s = iq1q_fp32_to_fp16(d * (float)iq1q_x86_hsum_epi32(isum));
        _mm256_storeu_si256((__m256i *)b->qs, q);
    } else {
        iq1q_block_q8_0 *b = (iq1q_block_q8_0 *)y;
        b->d = iq1q_fp32_to_fp16(d);
        _mm256_storeu_si256((__m256i *)b->qs, q);
    }
    return 0;
}

/* Eight consecutive blocks (256 values); returns 1 when one holds NaN/Inf. */
static inline int iq1q_x86_q8_01_x8(const float *x, uint8_t *y, int with_sum) {
    const size_t bs = with_sum ? sizeof(iq1q_block_q8_1) : sizeof(iq1q_block_q8_0);
    const size_t hdr = with_sum ? 4 : 2;
    const __m256i abits = iq1q_x86_tmax8(
        iq1q_x86_maxbits32(x), iq1q_x86_maxbits32(x + 32), iq1q_x86_maxbits32(x + 64),
        iq1q_x86_maxbits32(x + 96), iq1q_x86_maxbits32(x + 128), iq1q_x86_maxbits32(x + 160),
        iq1q_x86_maxbits32(x + 192), iq1q_x86_maxbits32(x + 224));
    const __m256 amax = _mm256_castsi256_ps(abits);
    const __m256 zero = _mm256_setzero_ps();
    /* id = amax > 0 ? 127/amax : 0 (the division is exact IEEE, as the scalar one) */
    const __m256 id = _mm256_and_ps(_mm256_div_ps(_mm256_set1_ps(127.0f), amax),
                                    _mm256_cmp_ps(amax, zero, _CMP_GT_OQ));
    /* non-finite amax (NaN/Inf in a block) or non-finite id: all 8 blocks one by one */
    const __m256i limit = _mm256_set1_epi32((int)(IQ1Q_X86_NONFINITE_BITS - 1u));
    const __m256i off = _mm256_or_si256(_mm256_cmpgt_epi32(abits, limit),
                                        _mm256_cmpgt_epi32(_mm256_castps_si256(id), limit));
    if (!_mm256_testz_si256(off, off)) {
        int bad = 0;
        for (int k = 0; k < 8; ++k) bad |= iq1q_x86_q8_01_x1(x + 32 * k, y + bs * k, with_sum);
        return bad;
    }
    const __m256 d = _mm256_div_ps(amax, _mm256_set1_ps(127.0f));
    float ids[8];
    _mm256_storeu_ps(ids, id);
    __m256i s[8];
    for (int k = 0; k < 8; ++k) {
        const __m256i q = iq1q_x86_quant32(x + 32 * k, _mm256_set1_ps(ids[k]), &s[k]);
        _mm256_storeu_si256((__m256i *)(y + bs * k + hdr), q);
    }
    const __m128i dh = _mm256_cvtps_ph(d, _MM_FROUND_TO_NEAREST_INT);
    if (with_sum) {
        const __m256i sums = iq1q_x86_tsum8(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]);
        const __m256 sf = _mm256_mul_ps(d, _mm256_cvtepi32_ps(sums));
        const __m128i sh = _mm256_cvtps_ph(sf, _MM_FROUND_TO_NEAREST_INT);
        uint32_t ds[8];
        _mm_storeu_si128((__m128i *)ds, _mm_unpacklo_epi16(dh, sh));
        _mm_storeu_si128((__m128i *)(ds + 4), _mm_unpackhi_epi16(dh, sh));
        for (int k = 0; k < 8; ++k) memcpy(y + bs * k, &ds[k], 4);
    } else {
        uint16_t dd[8];
        _mm_storeu_si128((__m128i *)dd, dh);
        for (int k = 0; k < 8; ++k) memcpy(y + bs * k, &dd[k], 2);
    }
    return 0;
}

static inline int64_t iq1q_x86_quantize_q8_01(const float *x, uint8_t *y, int64_t nrows, int64_t n,
                                              int with_sum) {
    const size_t bs = with_sum ? sizeof(iq1q_block_q8_1) : sizeof(iq1q_block_q8_0);
    const int64_t nb = n / 32;
    int64_t first_bad = -1;
    for (int64_t r = 0; r < nrows; ++r) {
        int bad = 0;
        int64_t i = 0;
        for (; i + 8 <= nb; i += 8, x += 256, y += 8 * bs) bad |= iq1q_x86_q8_01_x8(x, y, with_sum);
        for (; i < nb; ++i, x += 32, y += bs) bad |= iq1q_x86_q8_01_x1(x, y, with_sum);
        if (bad && first_bad < 0) first_bad = r;
    }
    return first_bad;
}

static int64_t iq1q_x86_quantize_q8_0(const float *x, uint8_t *y, int64_t nrows, int64_t n) {
    return iq1q_x86_quantize_q8_01(x, y, nrows, n, 0);
}

static int64_t iq1q_x86_quantize_q8_1(const float *x, uint8_t *y, int64_t nrows, int64_t n) {
    return iq1q_x86_quantize_q8_01(x, y, nrows, n, 1);
}

/* ---- q8_k ----------------------------------------------------------------- */

static inline int iq1q_x86_q8_k_block(const float *x, iq1q_block_q8_k *b) {
    __m256i m0 = iq1q_x86_maxbits32(x), m1 = iq1q_x86_maxbits32(x + 32);
    for (int j = 64; j < 256; j += 64) {
        m0 = _mm256_max_epi32(m0, iq1q_x86_maxbits32(x + j));
        m1 = _mm256_max_epi32(m1, iq1q_x86_maxbits32(x + j + 32));
    }
    const uint32_t abits = iq1q_x86_hmax_epi32(_mm256_max_epi32(m0, m1));
    const float amax = iq1q_bits_to_f32(abits);
    const float id = iq1q_x86_inv_scale(amax);
    if (abits >= IQ1Q_X86_NONFINITE_BITS || id < 0.0f) {
        return iq1q_ref_checked_q8_k(x, b);
    }
    const __m256 idv = _mm256_set1_ps(id);
    __m256i w[8], unused;
    for (int g = 0; g < 8; ++g) {
        const __m256i q = iq1q_x86_quant32(x + 32 * g, idv, &unused);
        _mm256_storeu_si256((__m256i *)(b->qs + 32 * g), q);
        w[g] = iq1q_x86_sum16x2(q); /* lo lane: group 2g, hi lane: group 2g+1 */
    }
    __m256i u0, u1; /* u0 = [g0 g2 g4 g6 | g1 g3 g5 g7], u1 = [g8 .. g14 | g9 .. g15] */
    iq1q_x86_tsum8_lanes(w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7], &u0, &u1);
    const __m256i p = _mm256_packs_epi32(u0, u1); /* [g0 g2 .. g14 | g1 g3 .. g15], |g| <= 2032 */
    const __m128i lo = _mm256_castsi256_si128(p), hi = _mm256_extracti128_si256(p, 1);
    _mm_storeu_si128((__m128i *)b->bsums, _mm_unpacklo_epi16(lo, hi));
    _mm_storeu_si128((__m128i *)(b->bsums + 8), _mm_unpackhi_epi16(lo, hi));
    const int sum = iq1q_x86_hsum_epi32(_mm256_add_epi32(u0, u1));
    const float d = amax / 127.0f;
    b->d = d;
    b->sum = d * (float)sum;
    return 0;
}

IQ1Q_ACT_ROW_LOOP(iq1q_x86_quantize_q8_k, Q8_K, q8_k, iq1q_x86_q8_k_block)

/* ---- q8_k128 ---------------------------------------------------------------- */

static inline int iq1q_x86_q8_k128_block(const float *x, iq1q_block_q8_k128 *b) {
    const __m256i m0 = _mm256_max_epi32(iq1q_x86_maxbits32(x), iq1q_x86_maxbits32(x + 32));
    const __m256i m1 = _mm256_max_epi32(iq1q_x86_maxbits32(x + 64), iq1q_x86_maxbits32(x + 96));
    const uint32_t abits = iq1q_x86_hmax_epi32(_mm256_max_epi32(m0, m1));
    const float amax = iq1q_bits_to_f32(abits);
    const float id = iq1q_x86_inv_scale(amax);
    if (abits >= IQ1Q_X86_NONFINITE_BITS || id < 0.0f) {
        return iq1q_ref_checked_q8_k128(x, b);
    }
    const __m256 idv = _mm256_set1_ps(id);
    __m256i s[4];
    for (int g = 0; g < 4; ++g) {
        const __m256i q = iq1q_x86_quant32(x + 32 * g, idv, &s[g]);
        _mm256_storeu_si256((__m256i *)(b->qs + 32 * g), q);
    }
    /* transposed sum of the 4 int32 vectors: [s0 s1 s2 s3] */
    const __m256i t0 = _mm256_add_epi32(_mm256_unpacklo_epi32(s[0], s[1]), _mm256_unpackhi_epi32(s[0], s[1]));
    const __m256i t1 = _mm256_add_epi32(_mm256_unpacklo_epi32(s[2], s[3]), _mm256_unpackhi_epi32(s[2], s[3]));
    const __m256i u = _mm256_add_epi32(_mm256_unpacklo_epi64(t0, t1), _mm256_unpackhi_epi64(t0, t1));
    const __m128i v = _mm_add_epi32(_mm256_castsi256_si128(u), _mm256_extracti128_si256(u, 1));
    _mm_storel_epi64((__m128i *)b->bsums, _mm_packs_epi32(v, v)); /* |bsum| <= 4064 */
    b->d = amax / 127.0f;
    return 0;
}

IQ1Q_ACT_ROW_LOOP(iq1q_x86_quantize_q8_k128, Q8_K128, q8_k128, iq1q_x86_q8_k128_block)

/* Indexed by iq1q_format - IQ1Q_Q8_0. */
static const iq1q_act_quantize_fn iq1q_simd_act_quantizers[IQ1Q_NUM_ACTIVATION_FORMATS] = {
    [IQ1Q_Q8_0 - IQ1Q_Q8_0] = iq1q_x86_quantize_q8_0,
    [IQ1Q_Q8_1 - IQ1Q_Q8_0] = iq1q_x86_quantize_q8_1,
    [IQ1Q_Q8_K - IQ1Q_Q8_0] = iq1q_x86_quantize_q8_k,
    [IQ1Q_Q8_K128 - IQ1Q_Q8_0] = iq1q_x86_quantize_q8_k128,
};

#endif /* IQ1Q_X86_ACTIVATIONS_H */
