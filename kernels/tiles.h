/* tiles.h: the operand layout the SIMD kernels read, and its decode from the
 * ggml bytes of every IQ1 weight format.
 *
 * Weights stay in their ggml bytes: nothing is kept beside them unless a tensor
 * is prepared (QuantizedTensor.prepare keeps all its tiles). The NEON kernels
 * decode the 8-row tiles a call works on, a panel of columns at a time, into a
 * small scratch of its own (simd_gemm.h), where the operands are a shift and a
 * mask per 32 weights away and already sit where an int8 dot-product
 * instruction wants them; x86 makes the same operands from the ggml bytes
 * where it uses them (x86_ggml.h). The decode is one table lookup per 8 weights
 * (a grid index is 11 bits; iq1q_grid_tile gives its 8 levels in the tile's
 * bit order).
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
 * A tile takes 76 bytes per 8 x 32 weights plus 32 per 8 x 256 (2.5 bits per
 * weight); the scratch holds one tile (two for a pair) and a panel of it is in
 * use at a time, so it stays in L1 while the weights stream past.
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

/* ---- the decode: ggml bytes of rows 8t..8t+7, chunks [c0, c1), into a tile ----- */

/* What the tile holds of one row and one chunk: the codes of its two halves (one 32-bit
 * lane each), ls of both halves in one byte, and a bit per group of 8 set where s = -1. */
typedef struct {
    uint32_t half[2];
    uint8_t ls;
    uint8_t sneg;
} iq1q_tile_row;

static inline uint16_t iq1q_tile_u16(const uint8_t *p) { return (uint16_t)(p[0] | ((unsigned)p[1] << 8)); }

/* the two halves of a chunk from the grid indices of its four groups of 8 */
static inline void iq1q_tile_codes(iq1q_tile_row *o, unsigned i0, unsigned i1, unsigned i2, unsigned i3) {
    o->half[0] = iq1q_grid_tile[i0] | (iq1q_grid_tile[i1] << 4);
    o->half[1] = iq1q_grid_tile[i2] | (iq1q_grid_tile[i3] << 4);
}

/* Chunk c (columns 32c..32c+31) of a row; `row` points at the row's bytes (for _r4: at
 * its 4-row group, r4 = the row within it). Returns the row's d for this chunk. */
static inline float iq1q_tile_row_iq1_s(const uint8_t *row, int r4, int64_t c, iq1q_tile_row *o) {
    (void)r4;
    const uint8_t *blk = row + (size_t)(c / 8) * IQ1Q_TYPE_SIZE_IQ1_S;
    const int b = (int)(c % 8);
    const unsigned qh = iq1q_tile_u16(blk + offsetof(iq1q_block_iq1_s, qh) + 2 * b);
    const uint8_t *qs = blk + offsetof(iq1q_block_iq1_s, qs) + 4 * b;
    iq1q_tile_codes(o, qs[0] | ((qh << 8) & 0x700), qs[1] | ((qh << 5) & 0x700), qs[2] | ((qh << 2) & 0x700),
                    qs[3] | ((qh >> 1) & 0x700));
    o->ls = (uint8_t)(17 * (2 * ((qh >> 12) & 7) + 1));
    o->sneg = (uint8_t)(15 * (qh >> 15));
    return iq1q_fp16_to_fp32(iq1q_tile_u16(blk + offsetof(iq1q_block_iq1_s, d)));
}

static inline float iq1q_tile_row_iq1_m(const uint8_t *row, int r4, int64_t c, iq1q_tile_row *o) {
    (void)r4;
    const uint8_t *blk = row + (size_t)(c / 8) * IQ1Q_TYPE_SIZE_IQ1_M;
    const int b = (int)(c % 8);
    const uint8_t *qs = blk + offsetof(iq1q_block_iq1_m, qs) + 4 * b;
    const unsigned qh = iq1q_tile_u16(blk + offsetof(iq1q_block_iq1_m, qh) + 2 * b); /* 4 nibbles */
    iq1q_tile_codes(o, qs[0] | ((qh << 8) & 0x700), qs[1] | ((qh << 4) & 0x700), qs[2] | (qh & 0x700),
                    qs[3] | ((qh >> 4) & 0x700));
    o->sneg = (uint8_t)(((qh >> 3) & 1) | ((qh >> 6) & 2) | ((qh >> 9) & 4) | ((qh >> 12) & 8));
    unsigned sc[4];
    for (int w = 0; w < 4; ++w) sc[w] = iq1q_tile_u16(blk + offsetof(iq1q_block_iq1_m, scales) + 2 * w);
    /* sub-blocks 2b and 2b + 1 of 16 columns: 3 bits each, four to a scale word */
    const unsigned l0 = (sc[b / 2] >> (6 * (b % 2))) & 7, l1 = (sc[b / 2] >> (6 * (b % 2) + 3)) & 7;
    o->ls = (uint8_t)((2 * l0 + 1) | ((2 * l1 + 1) << 4));
    return iq1q_fp16_to_fp32((uint16_t)((sc[0] >> 12) | ((sc[1] >> 12) << 4) | ((sc[2] >> 12) << 8) |
                                        ((sc[3] >> 12) << 12)));
}

static inline float iq1q_tile_row_iq1_s_r4(const uint8_t *unit, int r4, int64_t c, iq1q_tile_row *o) {
    const uint8_t *blk = unit + 4 * IQ1Q_ROW_META_IQ1_S_R4 + (size_t)c * sizeof(iq1q_block_iq1_s_r4);
    const unsigned qh = iq1q_tile_u16(blk + offsetof(iq1q_block_iq1_s_r4, qh) + 2 * r4);
    iq1q_tile_codes(o, blk[r4] | ((qh << 8) & 0x700), blk[4 + r4] | ((qh << 5) & 0x700),
                    blk[8 + r4] | ((qh << 2) & 0x700), blk[12 + r4] | ((qh >> 1) & 0x700));
    o->ls = (uint8_t)(17 * (2 * ((qh >> 12) & 7) + 1));
    o->sneg = (uint8_t)(15 * (qh >> 15));
    return iq1q_fp16_to_fp32(iq1q_tile_u16(unit + 2 * r4));
}

static inline float iq1q_tile_row_iq1_m_r4(const uint8_t *unit, int r4, int64_t c, iq1q_tile_row *o) {
    const uint8_t *blk = unit + 4 * IQ1Q_ROW_META_IQ1_M_R4 + (size_t)c * sizeof(iq1q_block_iq1_m_r4);
    const uint8_t *qh = blk + offsetof(iq1q_block_iq1_m_r4, qh);
    const unsigned n01 = qh[r4], n23 = qh[4 + r4]; /* nibbles of groups 0, 1 and 2, 3 */
    iq1q_tile_codes(o, blk[r4] | ((n01 << 8) & 0x700), blk[4 + r4] | ((n01 << 4) & 0x700),
                    blk[8 + r4] | ((n23 << 8) & 0x700), blk[12 + r4] | ((n23 << 4) & 0x700));
    o->sneg = (uint8_t)(((n01 >> 3) & 1) | ((n01 >> 6) & 2) | ((n23 >> 1) & 4) | ((n23 >> 4) & 8));
    o->ls = blk[offsetof(iq1q_block_iq1_m_r4, scales) + r4];
    return iq1q_fp16_to_fp32(iq1q_tile_u16(unit + 2 * r4));
}

/* Decode chunks [c0, c1) of tile t (rows 8t..8t+7, zero past row N) of an N x K tensor of
 * format FMT (ggml bytes w) into `tile`, laid out by L; c0 and c1 are whole spans of 256
 * columns but for the last. ROW is one of the four functions above. */
#define IQ1Q_TILE_DECODE_BODY(ROW, FMT)                                                               \
    do {                                                                                              \
        const size_t rs = IQ1Q_ROW_SIZE(FMT, K);                                                      \
        const int R4 = IQ1Q_ROWS_##FMT == 4;                                                          \
        const uint8_t *rows[IQ1Q_TILE_ROWS];                                                          \
        int nr = 0;                                                                                   \
        for (; nr < IQ1Q_TILE_ROWS && t * IQ1Q_TILE_ROWS + nr < N; ++nr) {                            \
            const int64_t row = t * IQ1Q_TILE_ROWS + nr;                                              \
            rows[nr] = w + (size_t)(R4 ? row & ~(int64_t)3 : row) * rs;                               \
        }                                                                                             \
        float *d = (float *)(tile + L->d);                                                            \
        for (int64_t c = c0; c < c1; ++c) {                                                           \
            uint8_t *codes = tile + (size_t)c * IQ1Q_TILE_CODES;                                      \
            uint8_t *ls = tile + L->ls + (size_t)c * IQ1Q_TILE_LS;                                    \
            unsigned sn0 = 0, sn1 = 0;                                                                \
            int r = 0;                                                                                \
            for (; r < nr; ++r) {                                                                     \
                iq1q_tile_row o;                                                                      \
                const float dr = ROW(rows[r], R4 ? (int)((t * IQ1Q_TILE_ROWS + r) & 3) : 0, c, &o);   \
                memcpy(codes + 4 * r, &o.half[0], 4);                                                 \
                memcpy(codes + 32 + 4 * r, &o.half[1], 4);                                            \
                ls[r] = o.ls;                                                                         \
                sn0 |= (o.sneg & 3u) << (2 * r);                                                      \
                sn1 |= (unsigned)(o.sneg >> 2) << (2 * r);                                            \
                if (c % (IQ1Q_TILE_SPAN / IQ1Q_TILE_CHUNK) == 0)                                      \
                    d[(c / (IQ1Q_TILE_SPAN / IQ1Q_TILE_CHUNK)) * IQ1Q_TILE_ROWS + r] = dr * IQ1Q_DELTA; \
            }                                                                                         \
            for (; r < IQ1Q_TILE_ROWS; ++r) { /* past the last row: weights of zero */                \
                memset(codes + 4 * r, 0, 4);                                                          \
                memset(codes + 32 + 4 * r, 0, 4);                                                     \
                ls[r] = 0;                                                                            \
                if (c % (IQ1Q_TILE_SPAN / IQ1Q_TILE_CHUNK) == 0)                                      \
                    d[(c / (IQ1Q_TILE_SPAN / IQ1Q_TILE_CHUNK)) * IQ1Q_TILE_ROWS + r] = 0.0f;          \
            }                                                                                         \
            uint8_t *sneg = tile + L->sneg + (size_t)c * IQ1Q_TILE_SNEG;                              \
            sneg[0] = (uint8_t)sn0, sneg[1] = (uint8_t)(sn0 >> 8);                                    \
            sneg[2] = (uint8_t)sn1, sneg[3] = (uint8_t)(sn1 >> 8);                                    \
        }                                                                                             \
    } while (0)

/* The portable decode, for every format; an ISA header may replace it for some. */
static void iq1q_tile_decode_portable(int wfmt, const uint8_t *w, int64_t N, int64_t K, int64_t t,
                                      int64_t c0, int64_t c1, const iq1q_tile_layout *L, uint8_t *tile) {
    switch (wfmt) {
    case IQ1Q_IQ1_S: IQ1Q_TILE_DECODE_BODY(iq1q_tile_row_iq1_s, IQ1_S); break;
    case IQ1Q_IQ1_M: IQ1Q_TILE_DECODE_BODY(iq1q_tile_row_iq1_m, IQ1_M); break;
    case IQ1Q_IQ1_S_R4: IQ1Q_TILE_DECODE_BODY(iq1q_tile_row_iq1_s_r4, IQ1_S_R4); break;
    default: IQ1Q_TILE_DECODE_BODY(iq1q_tile_row_iq1_m_r4, IQ1_M_R4); break;
    }
}

/* Tiles [t0, t1) of an N x K tensor, whole, into `out` (all tiles, iq1q_tile_count(N) *
 * L.bytes): what a prepared tensor keeps (QuantizedTensor.prepare). */
static void iq1q_tile_pack(int wfmt, const uint8_t *w, int64_t N, int64_t K, uint8_t *out, int64_t t0,
                           int64_t t1) {
    const iq1q_tile_layout L = iq1q_tile_layout_for(K);
    for (int64_t t = t0; t < t1; ++t) iq1q_tile_decode_portable(wfmt, w, N, K, t, 0, L.nchunks, &L, out + (size_t)t * L.bytes);
}

#endif /* IQ1Q_TILES_H */
