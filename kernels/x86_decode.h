/* x86_decode.h: the decode of ggml bytes into tiles (tiles.h) with AVX2 / AVX-512.
 *
 * The same bytes as iq1q_tile_decode_portable, made 8 rows at a time: per chunk of
 * 32 columns the 32 grid indices of a tile (8 rows x 4 groups of 8) are assembled in
 * vector lanes, one lane per row, with the scales and signs beside them, and the
 * tile's codes come from iq1q_grid_tile (8 KiB, in L1), one load per 8 weights. The
 * plain formats' 8 rows lie apart: their bytes come by gathers (offsets from the
 * tile's first row), three per chunk.
 * A tile with rows past the end of the tensor goes the portable way.
 */
#ifndef IQ1Q_X86_DECODE_H
#define IQ1Q_X86_DECODE_H

#include <immintrin.h>

#include "tiles.h"

#define IQ1Q_X86_DEC static inline __attribute__((always_inline))

/* One chunk of a tile as the format hands it over: the grid index of group i of row r in
 * lane r of idx[i], ls of both halves of row r in byte r of ls, and per group i a lane
 * mask whose sign bit is set where s = -1. */
typedef struct {
    __m256i idx[4];
    uint64_t ls;
    __m256i neg[4]; /* with one_sign, neg[0] alone: one sign per row for the whole chunk */
    int one_sign;
} iq1q_x86_chunk;

/* bits b of an 8-bit mask to bits 2b */
IQ1Q_X86_DEC unsigned iq1q_x86_spread(unsigned m) {
    m = (m | (m << 4)) & 0x0F0Fu;
    m = (m | (m << 2)) & 0x3333u;
    return (m | (m << 1)) & 0x5555u;
}

IQ1Q_X86_DEC unsigned iq1q_x86_signs(__m256i v) { return (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(v)); }

/* byte 0 of each 32-bit lane, lanes 0..7 as bytes 0..7 */
IQ1Q_X86_DEC uint64_t iq1q_x86_low_bytes(__m256i v) {
#if defined(__AVX512VL__)
    return (uint64_t)_mm_cvtsi128_si64(_mm256_cvtepi32_epi8(v));
#else
    const __m256i pick = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                          0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
    const __m256i b = _mm256_shuffle_epi8(v, pick);
    return (uint32_t)_mm256_extract_epi32(b, 0) | ((uint64_t)(uint32_t)_mm256_extract_epi32(b, 4) << 32);
#endif
}

/* Write chunk c of the tile from what a format handed over. The lookups are scalar loads:
 * on Zen 4 a gather costs ~1.5 cycles a lane, three times a load (the gathers made the
 * decode of iq1_s_r4 ~62 cycles per 256 weights, the loads ~55). */
IQ1Q_X86_DEC void iq1q_x86_put_chunk(uint8_t *tile, const iq1q_tile_layout *L, int64_t c,
                                     const iq1q_x86_chunk *k) {
    uint8_t *codes = tile + (size_t)c * IQ1Q_TILE_CODES;
    uint32_t ix[4][8];
    for (int i = 0; i < 4; ++i) _mm256_storeu_si256((__m256i *)ix[i], k->idx[i]);
    for (int h = 0; h < 2; ++h)
        for (int r = 0; r < IQ1Q_TILE_ROWS; ++r) {
            const uint32_t v = iq1q_grid_tile[ix[2 * h][r]] | (iq1q_grid_tile[ix[2 * h + 1][r]] << 4);
            memcpy(codes + 32 * h + 4 * r, &v, 4);
        }
    memcpy(tile + L->ls + (size_t)c * IQ1Q_TILE_LS, &k->ls, 8);
    uint32_t sn;
    if (k->one_sign) {
        sn = 3 * iq1q_x86_spread(iq1q_x86_signs(k->neg[0]));
        sn |= sn << 16;
    } else {
        const unsigned sn0 = iq1q_x86_spread(iq1q_x86_signs(k->neg[0])) | (iq1q_x86_spread(iq1q_x86_signs(k->neg[1])) << 1);
        const unsigned sn1 = iq1q_x86_spread(iq1q_x86_signs(k->neg[2])) | (iq1q_x86_spread(iq1q_x86_signs(k->neg[3])) << 1);
        sn = sn0 | (sn1 << 16);
    }
    memcpy(tile + L->sneg + (size_t)c * IQ1Q_TILE_SNEG, &sn, 4);
}

/* (qs << 0 | high << 8) lanes: low byte of q, index bits 8-10 from hi & 0x700 */
IQ1Q_X86_DEC __m256i iq1q_x86_index(__m256i q, __m256i hi) {
    return _mm256_or_si256(q, _mm256_and_si256(hi, _mm256_set1_epi32(0x700)));
}

/* ls of both halves, 2l + 1 from 3 bits, times 17 (the same in both nibbles) */
IQ1Q_X86_DEC uint64_t iq1q_x86_ls_same(__m256i l3) {
    const __m256i ls = _mm256_or_si256(_mm256_slli_epi32(_mm256_and_si256(l3, _mm256_set1_epi32(7)), 1),
                                       _mm256_set1_epi32(1));
    return iq1q_x86_low_bytes(_mm256_or_si256(ls, _mm256_slli_epi32(ls, 4)));
}

/* ---- _r4: rows 0-3 in the 4-row group at ua, rows 4-7 at ub -------------------- */

/* the low index bytes of the 4 groups: qs[4i + r] of both blocks */
IQ1Q_X86_DEC void iq1q_x86_r4_qs(const uint8_t *ba, const uint8_t *bb, __m256i q[4]) {
    const __m128i a = _mm_loadu_si128((const __m128i *)ba), b = _mm_loadu_si128((const __m128i *)bb);
    const __m128i lo = _mm_unpacklo_epi32(a, b), hi = _mm_unpackhi_epi32(a, b); /* [a_i, b_i] pairs */
    q[0] = _mm256_cvtepu8_epi32(lo);
    q[1] = _mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8));
    q[2] = _mm256_cvtepu8_epi32(hi);
    q[3] = _mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8));
}

/* the 8 rows' fp16 scales d / 8 (the 4 of each group open it) */
IQ1Q_X86_DEC __m256 iq1q_x86_r4_d(const uint8_t *ua, const uint8_t *ub) {
    const __m128i h = _mm_unpacklo_epi64(_mm_loadl_epi64((const __m128i *)ua), _mm_loadl_epi64((const __m128i *)ub));
    return _mm256_mul_ps(_mm256_cvtph_ps(h), _mm256_set1_ps(IQ1Q_DELTA));
}

IQ1Q_X86_DEC void iq1q_x86_chunk_iq1_s_r4(const uint8_t *ua, const uint8_t *ub, int64_t c, iq1q_x86_chunk *k) {
    const size_t off = 4 * IQ1Q_ROW_META_IQ1_S_R4 + (size_t)c * sizeof(iq1q_block_iq1_s_r4);
    const uint8_t *ba = ua + off, *bb = ub + off;
    __m256i q[4];
    iq1q_x86_r4_qs(ba, bb, q);
    const __m256i H = _mm256_cvtepu16_epi32(_mm_unpacklo_epi64(
        _mm_loadl_epi64((const __m128i *)(ba + offsetof(iq1q_block_iq1_s_r4, qh))),
        _mm_loadl_epi64((const __m128i *)(bb + offsetof(iq1q_block_iq1_s_r4, qh)))));
    k->idx[0] = iq1q_x86_index(q[0], _mm256_slli_epi32(H, 8));
    k->idx[1] = iq1q_x86_index(q[1], _mm256_slli_epi32(H, 5));
    k->idx[2] = iq1q_x86_index(q[2], _mm256_slli_epi32(H, 2));
    k->idx[3] = iq1q_x86_index(q[3], _mm256_srli_epi32(H, 1));
    k->ls = iq1q_x86_ls_same(_mm256_srli_epi32(H, 12));
    k->neg[0] = _mm256_slli_epi32(H, 16); /* bit 15: s = -1, for all four groups */
    k->one_sign = 1;
}

IQ1Q_X86_DEC void iq1q_x86_chunk_iq1_m_r4(const uint8_t *ua, const uint8_t *ub, int64_t c, iq1q_x86_chunk *k) {
    const size_t off = 4 * IQ1Q_ROW_META_IQ1_M_R4 + (size_t)c * sizeof(iq1q_block_iq1_m_r4);
    const uint8_t *ba = ua + off, *bb = ub + off;
    __m256i q[4];
    iq1q_x86_r4_qs(ba, bb, q);
    /* qh: 4 bytes of nibbles for groups 0, 1 (row r), then 4 for groups 2, 3 */
    const __m128i n = _mm_unpacklo_epi32(
        _mm_loadl_epi64((const __m128i *)(ba + offsetof(iq1q_block_iq1_m_r4, qh))),
        _mm_loadl_epi64((const __m128i *)(bb + offsetof(iq1q_block_iq1_m_r4, qh))));
    const __m256i n01 = _mm256_cvtepu8_epi32(n), n23 = _mm256_cvtepu8_epi32(_mm_srli_si128(n, 8));
    k->idx[0] = iq1q_x86_index(q[0], _mm256_slli_epi32(n01, 8));
    k->idx[1] = iq1q_x86_index(q[1], _mm256_slli_epi32(n01, 4));
    k->idx[2] = iq1q_x86_index(q[2], _mm256_slli_epi32(n23, 8));
    k->idx[3] = iq1q_x86_index(q[3], _mm256_slli_epi32(n23, 4));
    k->neg[0] = _mm256_slli_epi32(n01, 28); /* bit 3 of each nibble: s = -1 */
    k->neg[1] = _mm256_slli_epi32(n01, 24);
    k->neg[2] = _mm256_slli_epi32(n23, 28);
    k->neg[3] = _mm256_slli_epi32(n23, 24);
    k->one_sign = 0;
    uint32_t sa, sb; /* the 4-bit scales of both halves, a byte per row, as the tile holds them */
    memcpy(&sa, ba + offsetof(iq1q_block_iq1_m_r4, scales), 4);
    memcpy(&sb, bb + offsetof(iq1q_block_iq1_m_r4, scales), 4);
    k->ls = sa | ((uint64_t)sb << 32);
}

/* ---- plain: 8 rows rs bytes apart from row0; one 32-bit lane per row by gathers ---- */

IQ1Q_X86_DEC __m256i iq1q_x86_rows32(const uint8_t *row0, __m256i offs, size_t at) {
    return _mm256_i32gather_epi32((const int *)(row0 + at), offs, 1);
}

IQ1Q_X86_DEC void iq1q_x86_plain_qs(__m256i qs4, __m256i q[4]) {
    const __m256i ff = _mm256_set1_epi32(0xff);
    for (int i = 0; i < 4; ++i) q[i] = _mm256_and_si256(_mm256_srli_epi32(qs4, 8 * i), ff);
}

IQ1Q_X86_DEC void iq1q_x86_chunk_iq1_s(const uint8_t *row0, __m256i offs, int64_t c, iq1q_x86_chunk *k) {
    const size_t blk = (size_t)(c / 8) * IQ1Q_TYPE_SIZE_IQ1_S;
    const int b = (int)(c % 8);
    __m256i q[4];
    iq1q_x86_plain_qs(iq1q_x86_rows32(row0, offs, blk + offsetof(iq1q_block_iq1_s, qs) + 4 * b), q);
    /* qh[b] in the upper 16 bits: the 4 bytes end inside the block */
    const __m256i H = iq1q_x86_rows32(row0, offs, blk + offsetof(iq1q_block_iq1_s, qh) + 2 * b - 2);
    k->idx[0] = iq1q_x86_index(q[0], _mm256_srli_epi32(H, 8));
    k->idx[1] = iq1q_x86_index(q[1], _mm256_srli_epi32(H, 11));
    k->idx[2] = iq1q_x86_index(q[2], _mm256_srli_epi32(H, 14));
    k->idx[3] = iq1q_x86_index(q[3], _mm256_srli_epi32(H, 17));
    k->ls = iq1q_x86_ls_same(_mm256_srli_epi32(H, 28));
    k->neg[0] = H; /* bit 31 = qh bit 15, for all four groups */
    k->one_sign = 1;
}

IQ1Q_X86_DEC void iq1q_x86_chunk_iq1_m(const uint8_t *row0, __m256i offs, int64_t c, iq1q_x86_chunk *k) {
    const size_t blk = (size_t)(c / 8) * IQ1Q_TYPE_SIZE_IQ1_M;
    const int b = (int)(c % 8);
    __m256i q[4];
    iq1q_x86_plain_qs(iq1q_x86_rows32(row0, offs, blk + offsetof(iq1q_block_iq1_m, qs) + 4 * b), q);
    /* the nibbles of groups 4b..4b+3 in the upper 16 bits */
    const __m256i H = iq1q_x86_rows32(row0, offs, blk + offsetof(iq1q_block_iq1_m, qh) + 2 * b - 2);
    k->idx[0] = iq1q_x86_index(q[0], _mm256_srli_epi32(H, 8));
    k->idx[1] = iq1q_x86_index(q[1], _mm256_srli_epi32(H, 12));
    k->idx[2] = iq1q_x86_index(q[2], _mm256_srli_epi32(H, 16));
    k->idx[3] = iq1q_x86_index(q[3], _mm256_srli_epi32(H, 20));
    k->neg[0] = _mm256_slli_epi32(H, 12); /* bit 19 + 4i */
    k->neg[1] = _mm256_slli_epi32(H, 8);
    k->neg[2] = _mm256_slli_epi32(H, 4);
    k->neg[3] = H;
    k->one_sign = 0;
    /* scales word b / 2 in the upper 16 bits: sub-blocks 2b, 2b + 1 at bits 6 (b % 2) */
    const __m256i S = iq1q_x86_rows32(row0, offs, blk + offsetof(iq1q_block_iq1_m, scales) + 2 * (b / 2) - 2);
    const __m256i l = _mm256_srli_epi32(S, 16 + 6 * (b % 2)), seven = _mm256_set1_epi32(7), one = _mm256_set1_epi32(1);
    const __m256i l0 = _mm256_or_si256(_mm256_slli_epi32(_mm256_and_si256(l, seven), 1), one);
    const __m256i l1 = _mm256_or_si256(_mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(l, 3), seven), 1), one);
    k->ls = iq1q_x86_low_bytes(_mm256_or_si256(l0, _mm256_slli_epi32(l1, 4)));
}

/* d / 8 of the 8 rows of a plain tile for span s (the scale of block s of each row) */
static inline void iq1q_x86_plain_d(int wfmt, const uint8_t *row0, size_t rs, int64_t s, float *d) {
    for (int r = 0; r < IQ1Q_TILE_ROWS; ++r) {
        iq1q_tile_row o;
        const uint8_t *row = row0 + (size_t)r * rs;
        d[r] = IQ1Q_DELTA * (wfmt == IQ1Q_IQ1_S ? iq1q_tile_row_iq1_s(row, 0, 8 * s, &o)
                                                : iq1q_tile_row_iq1_m(row, 0, 8 * s, &o));
    }
}

static void iq1q_x86_decode(int wfmt, const uint8_t *w, int64_t N, int64_t K, int64_t t, int64_t c0,
                            int64_t c1, const iq1q_tile_layout *L, uint8_t *tile) {
    if ((t + 1) * IQ1Q_TILE_ROWS > N) {
        iq1q_tile_decode_portable(wfmt, w, N, K, t, c0, c1, L, tile);
        return;
    }
    const size_t rs = iq1q_row_size(iq1q_format_infos[wfmt].block_size, iq1q_format_infos[wfmt].type_size,
                                    iq1q_format_infos[wfmt].row_meta_size, K);
    const uint8_t *row0 = w + (size_t)t * IQ1Q_TILE_ROWS * rs;
    float *d = (float *)(tile + L->d);
    const int per_span = IQ1Q_TILE_SPAN / IQ1Q_TILE_CHUNK;
    iq1q_x86_chunk k;
    if (wfmt == IQ1Q_IQ1_S_R4 || wfmt == IQ1Q_IQ1_M_R4) {
        const uint8_t *ua = row0, *ub = row0 + 4 * rs;
        const __m256 dr = iq1q_x86_r4_d(ua, ub);
        for (int64_t c = c0; c < c1; ++c) {
            if (wfmt == IQ1Q_IQ1_S_R4) iq1q_x86_chunk_iq1_s_r4(ua, ub, c, &k);
            else iq1q_x86_chunk_iq1_m_r4(ua, ub, c, &k);
            iq1q_x86_put_chunk(tile, L, c, &k);
            if (c % per_span == 0) _mm256_storeu_ps(d + (c / per_span) * IQ1Q_TILE_ROWS, dr);
        }
        return;
    }
    const __m256i offs = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32((int)rs));
    for (int64_t c = c0; c < c1; ++c) {
        if (wfmt == IQ1Q_IQ1_S) iq1q_x86_chunk_iq1_s(row0, offs, c, &k);
        else iq1q_x86_chunk_iq1_m(row0, offs, c, &k);
        iq1q_x86_put_chunk(tile, L, c, &k);
        if (c % per_span == 0) iq1q_x86_plain_d(wfmt, row0, rs, c / per_span, d + (c / per_span) * IQ1Q_TILE_ROWS);
    }
}

#endif /* IQ1Q_X86_DECODE_H */
