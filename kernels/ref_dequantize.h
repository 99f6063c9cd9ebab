/* ref_dequantize.h: IQ1 weight dequantizers (docs/spec.md §6).
 *
 * Each weight is (scale * multiplier) * (grid value + shift) in float32, in
 * that order: this is what ik_llama and gguf evaluate, so results are
 * bit-identical to theirs.
 */
#ifndef IQ1Q_REF_DEQUANTIZE_H
#define IQ1Q_REF_DEQUANTIZE_H

#include "iq1q_common.h"
#include "iq1q_grid.h"

/* Writes the 8 values (scale) * (g_j + shift) of grid entry idx. */
static inline void iq1q_dequant_group(float scale, float shift, int idx, float *y) {
    const int8_t *g = (const int8_t *)&iq1q_grid_i8[idx];
    for (int j = 0; j < 8; ++j) y[j] = scale * ((float)g[j] + shift);
}

static void iq1q_ref_dequantize_iq1_s(const uint8_t *x, float *y, int64_t nrows, int64_t n) {
    const int64_t nblocks = nrows * (n / IQ1Q_BLOCK_IQ1_S);
    const iq1q_block_iq1_s *blocks = (const iq1q_block_iq1_s *)x;
    for (int64_t i = 0; i < nblocks; ++i, y += IQ1Q_BLOCK_IQ1_S) {
        const iq1q_block_iq1_s *b = &blocks[i];
        const float d = iq1q_fp16_to_fp32(b->d);
        for (int ib = 0; ib < 8; ++ib) {
            const unsigned qh = b->qh[ib];
            const float dl = d * (float)(2 * ((qh >> 12) & 7) + 1);
            const float shift = (qh & 0x8000) ? -IQ1Q_DELTA : IQ1Q_DELTA;
            for (int l = 0; l < 4; ++l) {
                const int idx = b->qs[4 * ib + l] | (((qh >> (3 * l)) & 7) << 8);
                iq1q_dequant_group(dl, shift, idx, y + 32 * ib + 8 * l);
            }
        }
    }
}

/* IQ1_M keeps its fp16 scale in the top nibbles of the four scale words. */
static inline uint16_t iq1q_iq1_m_scale_bits(const iq1q_block_iq1_m *b) {
    return (uint16_t)((b->scales[0] >> 12) | ((b->scales[1] >> 12) << 4) |
                      ((b->scales[2] >> 12) << 8) | ((b->scales[3] >> 12) << 12));
}

static void iq1q_ref_dequantize_iq1_m(const uint8_t *x, float *y, int64_t nrows, int64_t n) {
    const int64_t nblocks = nrows * (n / IQ1Q_BLOCK_IQ1_M);
    const iq1q_block_iq1_m *blocks = (const iq1q_block_iq1_m *)x;
    for (int64_t i = 0; i < nblocks; ++i, y += IQ1Q_BLOCK_IQ1_M) {
        const iq1q_block_iq1_m *b = &blocks[i];
        const float d = iq1q_fp16_to_fp32(iq1q_iq1_m_scale_bits(b));
        for (int m = 0; m < 32; ++m) {
            const int s = m / 2; /* 16-weight sub-block */
            const unsigned nib = (b->qh[m / 2] >> (4 * (m % 2))) & 15;
            const unsigned l = (b->scales[s / 4] >> (3 * (s % 4))) & 7;
            const int idx = b->qs[m] | ((nib & 7) << 8);
            const float shift = (nib & 8) ? -IQ1Q_DELTA : IQ1Q_DELTA;
            iq1q_dequant_group(d * (float)(2 * l + 1), shift, idx, y + 8 * m);
        }
    }
}

/* The _r4 formats: for each group of 4 rows, 4 fp16 row scales then n/32
 * interleaved blocks; row r of the group is written to y + r * n. */
static void iq1q_ref_dequantize_iq1_s_r4(const uint8_t *x, float *y, int64_t nrows, int64_t n) {
    const size_t group_size = 4 * IQ1Q_ROW_SIZE(IQ1_S_R4, n);
    for (int64_t g = 0; g < nrows / 4; ++g, x += group_size, y += 4 * n) {
        uint16_t dh[4];
        memcpy(dh, x, sizeof dh);
        const iq1q_block_iq1_s_r4 *blocks = (const iq1q_block_iq1_s_r4 *)(x + sizeof dh);
        for (int64_t ib = 0; ib < n / 32; ++ib) {
            const iq1q_block_iq1_s_r4 *b = &blocks[ib];
            for (int r = 0; r < 4; ++r) {
                const unsigned qh = b->qh[r];
                const float dl = iq1q_fp16_to_fp32(dh[r]) * (float)(2 * ((qh >> 12) & 7) + 1);
                const float shift = (qh & 0x8000) ? -IQ1Q_DELTA : IQ1Q_DELTA;
                for (int i = 0; i < 4; ++i) {
                    const int idx = b->qs[4 * i + r] | (((qh >> (3 * i)) & 7) << 8);
                    iq1q_dequant_group(dl, shift, idx, y + r * n + 32 * ib + 8 * i);
                }
            }
        }
    }
}

static void iq1q_ref_dequantize_iq1_m_r4(const uint8_t *x, float *y, int64_t nrows, int64_t n) {
    const size_t group_size = 4 * IQ1Q_ROW_SIZE(IQ1_M_R4, n);
    for (int64_t g = 0; g < nrows / 4; ++g, x += group_size, y += 4 * n) {
        uint16_t dh[4];
        memcpy(dh, x, sizeof dh);
        const iq1q_block_iq1_m_r4 *blocks = (const iq1q_block_iq1_m_r4 *)(x + sizeof dh);
        for (int64_t ib = 0; ib < n / 32; ++ib) {
            const iq1q_block_iq1_m_r4 *b = &blocks[ib];
            for (int r = 0; r < 4; ++r) {
                const float d = iq1q_fp16_to_fp32(dh[r]);
                for (int m = 0; m < 4; ++m) {
                    const unsigned nib = (b->qh[4 * (m / 2) + r] >> (4 * (m % 2))) & 15;
                    const unsigned ls = m < 2 ? (b->scales[r] & 15) : (b->scales[r] >> 4);
                    const int idx = b->qs[4 * m + r] | ((nib & 7) << 8);
                    const float shift = (nib & 8) ? -IQ1Q_DELTA : IQ1Q_DELTA;
                    iq1q_dequant_group(d * (float)ls, shift, idx, y + r * n + 32 * ib + 8 * m);
                }
            }
        }
    }
}

#endif /* IQ1Q_REF_DEQUANTIZE_H */
