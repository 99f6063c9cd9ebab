/* tiles.h: the weight layout the SIMD kernels read, and the one-time repack
 * of every IQ1 weight format into it (portable C, no intrinsics).
 *
 * Why a second layout: ggml's bytes store an 11-bit grid index per 8 weights,
 * so a kernel spends a table lookup and several shuffles per 8 weights; that,
 * not memory, bounds a GEMV. A repack trades a little memory for a layout
 * whose decode is a shift and a mask per 32 weights, and whose bytes already
 * sit where an int8 dot-product instruction wants them.
 *
 * Every IQ1 weight, for all four formats, is (docs/spec.md §6.5, §7.1)
 *     w = (d / 8) * ls * (8u - 8 + s),   u = g + 1 in {0, 1, 2},  s = +-1,
 * with d per row (_r4) or per 256 columns (plain), an integer multiplier ls
 * per 16 columns (iq1_s: 2l+1 per 32; iq1_m: 2l+1 per 16; iq1_m_r4: 0..15
 * per 16) and a delta sign s per 8 columns (iq1_s: per 32). So a tile stores
 * u in 2 bits, ls per 16 columns, s per 8 and d/8 per 256, for all formats
 * alike, and one kernel serves every weight format.
 *
 * A tile is 8 consecutive weight rows (rows past the end are zero). Its
 * columns go in chunks of 32 and spans of 256 (the last ones may be short):
 *   codes[chunk][half][32]: half h = columns 16h..16h+15; byte 4r + j holds
 *       in bits 2p..2p+1 the u of row r, column 16h + 4p + j. So (byte >> 2p)
 *       & 3 is, for p = 0..3, the 32-byte operand of one dot-product step
 *       over 4 columns of 8 rows: row r in 32-bit lane r.
 *   ls[chunk][8]: byte r = ls of row r, columns 0..15 | ls of columns 16..31 << 4.
 *   sneg[chunk][half]: uint16, bit 2r + i set when s = -1 for row r, columns
 *       16h + 8i .. 16h + 8i + 7.
 *   d[span][8]: float d / 8 of row r (exact: d is a float16).
 * Memory: 76 bytes per 8 x 32 weights plus 32 per 8 x 256, 2.5 bits per
 * weight (ggml: 1.5 to 1.75).
 */
#ifndef IQ1Q_TILES_H
#define IQ1Q_TILES_H

#include "iq1q_common.h"
#include "iq1q_grid.h"

enum {
    IQ1Q_TILE_ROWS = 8,
    IQ1Q_TILE_CHUNK = 32,  /* columns per chunk */
    IQ1Q_TILE_SPAN = 256,  /* columns per weight scale d */
    IQ1Q_TILE_CODES = 64,  /* bytes of codes per chunk */
    IQ1Q_TILE_LS = 8,      /* bytes of ls per chunk */
    IQ1Q_TILE_SNEG = 4,    /* bytes of sign bits per chunk */
};

typedef struct {
    int64_t nchunks, nspans;
    size_t ls, sneg, d, bytes; /* offsets within a tile, and its size */
} iq1q_tile_layout;

static inline iq1q_tile_layout iq1q_tile_layout_for(int64_t K) {
    iq1q_tile_layout t;
    t.nchunks = K / IQ1Q_TILE_CHUNK;
    t.nspans = (K + IQ1Q_TILE_SPAN - 1) / IQ1Q_TILE_SPAN;
    t.ls = (size_t)t.nchunks * IQ1Q_TILE_CODES;
    t.sneg = t.ls + (size_t)t.nchunks * IQ1Q_TILE_LS;
    t.d = t.sneg + (size_t)t.nchunks * IQ1Q_TILE_SNEG;
    t.bytes = t.d + (size_t)t.nspans * IQ1Q_TILE_ROWS * sizeof(float);
    t.bytes = (t.bytes + 63) & ~(size_t)63; /* tiles start on cache lines */
    return t;
}

static inline int64_t iq1q_tile_count(int64_t N) { return (N + IQ1Q_TILE_ROWS - 1) / IQ1Q_TILE_ROWS; }

/* One 32-column block of one weight row, in the terms above. */
typedef struct {
    uint16_t codes[4]; /* grid codes of the 4 groups of 8: 2 bits u per column */
    uint8_t ls[2];     /* per 16 columns */
    uint8_t sneg[4];   /* per group of 8: 1 when s = -1 */
    float d;           /* the float16 scale d of this row here */
} iq1q_tile_block;

static inline uint16_t iq1q_tile_u16(const uint8_t *p) { return (uint16_t)(p[0] | ((unsigned)p[1] << 8)); }

/* Block c (columns 32c..32c+31) of row `row`; base = the tensor's bytes. */
static inline void iq1q_tile_block_iq1_s(const uint8_t *base, int64_t row, int64_t c, int64_t K,
                                         iq1q_tile_block *o) {
    const uint8_t *blk = base + (size_t)row * IQ1Q_ROW_SIZE(IQ1_S, K) + (size_t)(c / 8) * IQ1Q_TYPE_SIZE_IQ1_S;
    const int b = (int)(c % 8);
    const unsigned qh = iq1q_tile_u16(blk + offsetof(iq1q_block_iq1_s, qh) + 2 * b);
    const uint8_t *qs = blk + offsetof(iq1q_block_iq1_s, qs);
    for (int l = 0; l < 4; ++l) {
        o->codes[l] = iq1q_grid_codes[qs[4 * b + l] | (((qh >> (3 * l)) & 7u) << 8)];
        o->sneg[l] = (uint8_t)(qh >> 15);
    }
    o->ls[0] = o->ls[1] = (uint8_t)(2 * ((qh >> 12) & 7) + 1);
    o->d = iq1q_fp16_to_fp32(iq1q_tile_u16(blk + offsetof(iq1q_block_iq1_s, d)));
}

static inline void iq1q_tile_block_iq1_m(const uint8_t *base, int64_t row, int64_t c, int64_t K,
                                         iq1q_tile_block *o) {
    const uint8_t *blk = base + (size_t)row * IQ1Q_ROW_SIZE(IQ1_M, K) + (size_t)(c / 8) * IQ1Q_TYPE_SIZE_IQ1_M;
    const int b = (int)(c % 8);
    const uint8_t *qs = blk + offsetof(iq1q_block_iq1_m, qs);
    const uint8_t *qh = blk + offsetof(iq1q_block_iq1_m, qh);
    unsigned sc[4];
    for (int w = 0; w < 4; ++w) sc[w] = iq1q_tile_u16(blk + offsetof(iq1q_block_iq1_m, scales) + 2 * w);
    for (int i = 0; i < 4; ++i) {
        const int m = 4 * b + i;
        const unsigned nib = (qh[m / 2] >> (4 * (m % 2))) & 15u;
        o->codes[i] = iq1q_grid_codes[qs[m] | ((nib & 7u) << 8)];
        o->sneg[i] = (uint8_t)(nib >> 3);
    }
    for (int h = 0; h < 2; ++h) {
        const int s = 2 * b + h;
        o->ls[h] = (uint8_t)(2 * ((sc[s / 4] >> (3 * (s % 4))) & 7) + 1);
    }
    o->d = iq1q_fp16_to_fp32((uint16_t)((sc[0] >> 12) | ((sc[1] >> 12) << 4) | ((sc[2] >> 12) << 8) |
                                        ((sc[3] >> 12) << 12)));
}

static inline void iq1q_tile_block_iq1_s_r4(const uint8_t *base, int64_t row, int64_t c, int64_t K,
                                            iq1q_tile_block *o) {
    const uint8_t *unit = base + (size_t)(row & ~(int64_t)3) * IQ1Q_ROW_SIZE(IQ1_S_R4, K);
    const int r = (int)(row & 3);
    const uint8_t *blk = unit + 4 * IQ1Q_ROW_META_IQ1_S_R4 + (size_t)c * sizeof(iq1q_block_iq1_s_r4);
    const unsigned qh = iq1q_tile_u16(blk + offsetof(iq1q_block_iq1_s_r4, qh) + 2 * r);
    for (int i = 0; i < 4; ++i) {
        o->codes[i] = iq1q_grid_codes[blk[4 * i + r] | (((qh >> (3 * i)) & 7u) << 8)];
        o->sneg[i] = (uint8_t)(qh >> 15);
    }
    o->ls[0] = o->ls[1] = (uint8_t)(2 * ((qh >> 12) & 7) + 1);
    o->d = iq1q_fp16_to_fp32(iq1q_tile_u16(unit + 2 * r));
}

static inline void iq1q_tile_block_iq1_m_r4(const uint8_t *base, int64_t row, int64_t c, int64_t K,
                                            iq1q_tile_block *o) {
    const uint8_t *unit = base + (size_t)(row & ~(int64_t)3) * IQ1Q_ROW_SIZE(IQ1_M_R4, K);
    const int r = (int)(row & 3);
    const uint8_t *blk = unit + 4 * IQ1Q_ROW_META_IQ1_M_R4 + (size_t)c * sizeof(iq1q_block_iq1_m_r4);
    const uint8_t *qh = blk + offsetof(iq1q_block_iq1_m_r4, qh);
    const unsigned sc = blk[offsetof(iq1q_block_iq1_m_r4, scales) + r];
    for (int m = 0; m < 4; ++m) {
        const unsigned nib = (qh[4 * (m / 2) + r] >> (4 * (m % 2))) & 15u;
        o->codes[m] = iq1q_grid_codes[blk[4 * m + r] | ((nib & 7u) << 8)];
        o->sneg[m] = (uint8_t)(nib >> 3);
    }
    o->ls[0] = (uint8_t)(sc & 15);
    o->ls[1] = (uint8_t)(sc >> 4);
    o->d = iq1q_fp16_to_fp32(iq1q_tile_u16(unit + 2 * r));
}

typedef void (*iq1q_tile_block_fn)(const uint8_t *base, int64_t row, int64_t c, int64_t K,
                                   iq1q_tile_block *o);

/* indexed by iq1q_format (the weight formats come first) */
static const iq1q_tile_block_fn iq1q_tile_blocks[IQ1Q_NUM_WEIGHT_FORMATS] = {
    iq1q_tile_block_iq1_s, iq1q_tile_block_iq1_m, iq1q_tile_block_iq1_s_r4, iq1q_tile_block_iq1_m_r4,
};

/* Repack tiles [t0, t1) of an N x K weight tensor (K a multiple of 32) into
 * out, which holds all tiles (iq1q_tile_count(N) * layout.bytes). */
static void iq1q_tile_repack(int wfmt, const uint8_t *w, int64_t N, int64_t K, uint8_t *out,
                             int64_t t0, int64_t t1) {
    const iq1q_tile_layout L = iq1q_tile_layout_for(K);
    const iq1q_tile_block_fn block = iq1q_tile_blocks[wfmt];
    for (int64_t t = t0; t < t1; ++t) {
        uint8_t *tile = out + (size_t)t * L.bytes;
        memset(tile, 0, L.bytes);
        float *d = (float *)(tile + L.d);
        for (int r = 0; r < IQ1Q_TILE_ROWS; ++r) {
            const int64_t row = t * IQ1Q_TILE_ROWS + r;
            if (row >= N) break;
            for (int64_t c = 0; c < L.nchunks; ++c) {
                iq1q_tile_block b;
                block(w, row, c, K, &b);
                uint8_t *codes = tile + (size_t)c * IQ1Q_TILE_CODES;
                uint8_t *ls = tile + L.ls + (size_t)c * IQ1Q_TILE_LS;
                uint8_t *sneg = tile + L.sneg + (size_t)c * IQ1Q_TILE_SNEG;
                for (int h = 0; h < 2; ++h) {
                    /* groups 2h and 2h+1 fill half h; element e of a group is column 8i + e */
                    const unsigned g0 = b.codes[2 * h], g1 = b.codes[2 * h + 1];
                    for (int j = 0; j < 4; ++j) {
                        const unsigned u0 = (g0 >> (2 * j)) & 3u, u1 = (g0 >> (2 * j + 8)) & 3u;
                        const unsigned u2 = (g1 >> (2 * j)) & 3u, u3 = (g1 >> (2 * j + 8)) & 3u;
                        codes[32 * h + 4 * r + j] = (uint8_t)(u0 | (u1 << 2) | (u2 << 4) | (u3 << 6));
                    }
                    ls[r] |= (uint8_t)(b.ls[h] << (4 * h));
                    uint16_t bits = iq1q_tile_u16(sneg + 2 * h);
                    bits |= (uint16_t)((b.sneg[2 * h] | (b.sneg[2 * h + 1] << 1)) << (2 * r));
                    sneg[2 * h] = (uint8_t)bits;
                    sneg[2 * h + 1] = (uint8_t)(bits >> 8);
                }
                if (c % (IQ1Q_TILE_SPAN / IQ1Q_TILE_CHUNK) == 0)
                    d[(c / (IQ1Q_TILE_SPAN / IQ1Q_TILE_CHUNK)) * IQ1Q_TILE_ROWS + r] = b.d * IQ1Q_DELTA;
            }
        }
    }
}

#endif /* IQ1Q_TILES_H */
