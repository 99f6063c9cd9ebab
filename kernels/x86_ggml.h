/* x86_ggml.h: the x86 kernels' reading of the ggml bytes (AVX2 / AVX-512).
 *
 * Per chunk of 32 columns of a pass's 8 weight rows, the 32 grid indices (8 rows x 4
 * groups of 8) are made in vector lanes and stored, with the rows' scales and signs
 * beside them (iq1q_x86_ggml); the levels u = g + 1 of a group then come from
 * iq1q_grid_u8 (2048 x 8 bytes, 16 KiB: it stays in L1), one 8-byte load per 8
 * weights of a row. _r4 formats keep 4 rows together, so a chunk's fields are two
 * loads each; the plain formats' 8 rows lie apart, a load per row and field.
 *
 * Measured on Zen 4 (4096 x 4096 GEMV, one thread, a C harness): the lookups are
 * ~1 cycle per 8 weights, the chunk's indices ~14 cycles per 256 weights; a gather
 * costs ~1.5 cycles a lane, which made gathers of levels (0.46-0.56 ns per 8 weights,
 * against 0.2-0.29 for loads) and of the plain formats' fields (iq1_s 2.55 -> 1.34 ms)
 * slower than loads; a 4 KiB table of 2-bit codes expanded by vpmultishiftqb was no
 * faster than the 16 KiB one.
 */
#ifndef IQ1Q_X86_GGML_H
#define IQ1Q_X86_GGML_H

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
    /* 8 loads that broadcast, and blends: a gather took ~1.5 cycles a lane (4096 x 4096
     * iq1_s GEMV 2.55 -> 1.34 ms, Zen 4) */
    int32_t o[8], v[8];
    _mm256_storeu_si256((__m256i *)o, offs);
    for (int r = 0; r < 8; ++r) memcpy(&v[r], row0 + at + o[r], 4);
    const __m256i a = _mm256_blend_epi32(_mm256_blend_epi32(_mm256_set1_epi32(v[0]), _mm256_set1_epi32(v[1]), 0x02),
                                         _mm256_blend_epi32(_mm256_set1_epi32(v[2]), _mm256_set1_epi32(v[3]), 0x08), 0x0C);
    const __m256i b = _mm256_blend_epi32(_mm256_blend_epi32(_mm256_set1_epi32(v[4]), _mm256_set1_epi32(v[5]), 0x20),
                                         _mm256_blend_epi32(_mm256_set1_epi32(v[6]), _mm256_set1_epi32(v[7]), 0x80), 0xC0);
    return _mm256_blend_epi32(a, b, 0xF0);
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

/* ---- a chunk of a pass's 8 rows, from the ggml bytes ------------------------------ */

/* What the operands of chunk c need besides the levels: its grid indices (stored, since
 * the lookups take them one at a time), and per half h the int16 ls of row r in lanes 2r
 * and 2r + 1, and a mask, -1 where s = -1, of group 2h of row r in lane 2r and of group
 * 2h + 1 in lane 2r + 1. */
typedef struct {
    uint16_t ix[4][IQ1Q_TILE_ROWS];
    __m256i ls16[2], neg16[2];
} iq1q_x86_ggml;

/* per half h: ls16 from ls (byte r: ls of row r for columns 0-15 | columns 16-31 << 4) and
 * neg16 from the sign masks of the chunk's groups (iq1q_x86_chunk) */
IQ1Q_X86_DEC void iq1q_x86_ggml_scales(const iq1q_x86_chunk *k, iq1q_x86_ggml *g) {
    const __m256i nib = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)k->ls));
    for (int h = 0; h < 2; ++h) {
        const __m256i ls32 = h ? _mm256_srli_epi32(nib, 4) : _mm256_and_si256(nib, _mm256_set1_epi32(15));
        g->ls16[h] = _mm256_or_si256(ls32, _mm256_slli_epi32(ls32, 16));
        const __m256i n0 = _mm256_srai_epi32(k->neg[k->one_sign ? 0 : 2 * h], 31);
        const __m256i n1 = _mm256_srai_epi32(k->neg[k->one_sign ? 0 : 2 * h + 1], 31);
        g->neg16[h] = _mm256_blend_epi16(n0, n1, 0xAA);
    }
}

#if defined(__AVX512BW__) && defined(__AVX512VL__)
/* _r4 with AVX-512: the chunk's 32 indices in one register, group i of row r in 16-bit lane
 * 8i + r, stored at once (against a register per group: the decode of a chunk ~30 -> ~12
 * instructions) */
IQ1Q_X86_DEC __m512i iq1q_x86_r4_low16(const uint8_t *ba, const uint8_t *bb) {
    const __m128i a = _mm_loadu_si128((const __m128i *)ba), b = _mm_loadu_si128((const __m128i *)bb);
    /* dword i of a (b): qs of group i, rows 0-3 (4-7) */
    const __m256i ab = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_unpacklo_epi32(a, b)),
                                               _mm_unpackhi_epi32(a, b), 1);
    return _mm512_cvtepu8_epi16(ab);
}

IQ1Q_X86_DEC void iq1q_x86_ggml_chunk_s_r4(const uint8_t *ua, const uint8_t *ub, int64_t c, iq1q_x86_ggml *g) {
    const size_t off = 4 * IQ1Q_ROW_META_IQ1_S_R4 + (size_t)c * sizeof(iq1q_block_iq1_s_r4);
    const uint8_t *ba = ua + off, *bb = ub + off;
    const __m128i H = _mm_unpacklo_epi64(
        _mm_loadl_epi64((const __m128i *)(ba + offsetof(iq1q_block_iq1_s_r4, qh))),
        _mm_loadl_epi64((const __m128i *)(bb + offsetof(iq1q_block_iq1_s_r4, qh)))); /* qh of rows 0-7 */
    /* index bits 8-10 of group i: qh bits 3i..3i+2 */
    const __m512i hi = _mm512_and_si512(
        _mm512_srlv_epi16(_mm512_broadcast_i32x4(H), _mm512_setr_epi64(0, 0, 0x0003000300030003LL, 0x0003000300030003LL,
                                                                       0x0006000600060006LL, 0x0006000600060006LL,
                                                                       0x0009000900090009LL, 0x0009000900090009LL)),
        _mm512_set1_epi16(7));
    _mm512_storeu_si512(g->ix, _mm512_or_si512(iq1q_x86_r4_low16(ba, bb), _mm512_slli_epi16(hi, 8)));
    /* ls = 2 l + 1 from bits 12-14, one sign (bit 15) for all four groups */
    const __m256i x = _mm256_cvtepu16_epi32(H);
    const __m256i ls32 = _mm256_or_si256(_mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(x, 12), _mm256_set1_epi32(7)), 1),
                                         _mm256_set1_epi32(1));
    g->ls16[0] = g->ls16[1] = _mm256_or_si256(ls32, _mm256_slli_epi32(ls32, 16));
    g->neg16[0] = g->neg16[1] = _mm256_srai_epi32(_mm256_slli_epi32(x, 16), 31);
}

IQ1Q_X86_DEC void iq1q_x86_ggml_chunk_m_r4(const uint8_t *ua, const uint8_t *ub, int64_t c, iq1q_x86_ggml *g) {
    const size_t off = 4 * IQ1Q_ROW_META_IQ1_M_R4 + (size_t)c * sizeof(iq1q_block_iq1_m_r4);
    const uint8_t *ba = ua + off, *bb = ub + off;
    /* qh: byte r = nibbles of groups 0 (low) and 1 of row r, then 4 bytes for groups 2, 3 */
    const __m128i n = _mm_unpacklo_epi32(_mm_loadl_epi64((const __m128i *)(ba + offsetof(iq1q_block_iq1_m_r4, qh))),
                                         _mm_loadl_epi64((const __m128i *)(bb + offsetof(iq1q_block_iq1_m_r4, qh))));
    const __m256i n16 = _mm256_cvtepu8_epi16(n); /* rows 0-7 of groups 0/1, then of groups 2/3 */
    const __m512i nz = _mm512_shuffle_i64x2(_mm512_castsi256_si512(n16), _mm512_castsi256_si512(n16), 0x50);
    const __m512i hi = _mm512_and_si512(
        _mm512_srlv_epi16(nz, _mm512_setr_epi64(0, 0, 0x0004000400040004LL, 0x0004000400040004LL, 0, 0,
                                                0x0004000400040004LL, 0x0004000400040004LL)),
        _mm512_set1_epi16(7));
    _mm512_storeu_si512(g->ix, _mm512_or_si512(iq1q_x86_r4_low16(ba, bb), _mm512_slli_epi16(hi, 8)));
    uint32_t sa, sb; /* the 4-bit scales of both halves, a byte per row */
    memcpy(&sa, ba + offsetof(iq1q_block_iq1_m_r4, scales), 4);
    memcpy(&sb, bb + offsetof(iq1q_block_iq1_m_r4, scales), 4);
    const __m256i nib = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)(sa | ((uint64_t)sb << 32))));
    const __m256i n01 = _mm256_cvtepu8_epi32(n), n23 = _mm256_cvtepu8_epi32(_mm_srli_si128(n, 8));
    for (int h = 0; h < 2; ++h) {
        const __m256i ls32 = h ? _mm256_srli_epi32(nib, 4) : _mm256_and_si256(nib, _mm256_set1_epi32(15));
        g->ls16[h] = _mm256_or_si256(ls32, _mm256_slli_epi32(ls32, 16));
        /* the sign bit 3 of each nibble: group 2h to the lane's low int16, 2h + 1 to its high */
        const __m256i x = h ? n23 : n01;
        const __m256i bits = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(x, 3), _mm256_set1_epi32(1)),
                                             _mm256_and_si256(_mm256_slli_epi32(x, 9), _mm256_set1_epi32(0x10000)));
        g->neg16[h] = _mm256_sub_epi16(_mm256_setzero_si256(), bits);
    }
}
#endif

/* A plain tile's 8 rows, 4 blocks on: the hardware's prefetcher does not follow 8 rows read
 * a few bytes at a time (cold 4096 x 4096 iq1_s GEMV, Zen 4, C harness: 2.1-2.6 -> 1.7-2.3
 * ms; for _r4's two streams of 4-row groups it cost 5-25 %, so they have none). A
 * prefetch past the end never faults. */
IQ1Q_X86_DEC void iq1q_x86_ggml_prefetch(int wfmt, const uint8_t *w, const int32_t *offs, int64_t c) {
    if (c % 8 || wfmt == IQ1Q_IQ1_S_R4 || wfmt == IQ1Q_IQ1_M_R4) return;
    const size_t ts = wfmt == IQ1Q_IQ1_S ? IQ1Q_TYPE_SIZE_IQ1_S : IQ1Q_TYPE_SIZE_IQ1_M;
    for (int r = 0; r < IQ1Q_TILE_ROWS; ++r) {
        const char *p = (const char *)(w + offs[r] + (size_t)(c / 8 + 4) * ts);
        _mm_prefetch(p, _MM_HINT_T0);
        _mm_prefetch(p + ts - 1, _MM_HINT_T0);
    }
}

/* Chunk c of the 8 rows at w + offs[r] (for _r4: the 4-row groups at offs[0], offs[4]) */
IQ1Q_X86_DEC void iq1q_x86_ggml_chunk(int wfmt, const uint8_t *w, const int32_t *offs, int64_t c,
                                      iq1q_x86_ggml *g) {
    iq1q_x86_ggml_prefetch(wfmt, w, offs, c);
#if defined(__AVX512BW__) && defined(__AVX512VL__)
    if (wfmt == IQ1Q_IQ1_S_R4) return iq1q_x86_ggml_chunk_s_r4(w + offs[0], w + offs[4], c, g);
    if (wfmt == IQ1Q_IQ1_M_R4) return iq1q_x86_ggml_chunk_m_r4(w + offs[0], w + offs[4], c, g);
#endif
    iq1q_x86_chunk k;
    switch (wfmt) {
    case IQ1Q_IQ1_S_R4: iq1q_x86_chunk_iq1_s_r4(w + offs[0], w + offs[4], c, &k); break;
    case IQ1Q_IQ1_M_R4: iq1q_x86_chunk_iq1_m_r4(w + offs[0], w + offs[4], c, &k); break;
    case IQ1Q_IQ1_S: iq1q_x86_chunk_iq1_s(w, _mm256_loadu_si256((const __m256i *)offs), c, &k); break;
    default: iq1q_x86_chunk_iq1_m(w, _mm256_loadu_si256((const __m256i *)offs), c, &k); break;
    }
    /* 16-bit indices, groups in order: packus interleaves 128-bit lanes */
    for (int i = 0; i < 4; i += 2)
        _mm256_storeu_si256((__m256i *)g->ix[i],
                            _mm256_permute4x64_epi64(_mm256_packus_epi32(k.idx[i], k.idx[i + 1]), 0xD8));
    iq1q_x86_ggml_scales(&k, g);
}

/* The levels u of the 8 rows' groups with grid indices ix: columns 0-3 of the group (lo)
 * and 4-7 (hi), row r in 32-bit lane r */
IQ1Q_X86_DEC void iq1q_x86_ggml_levels(const uint16_t *ix, __m256i *lo, __m256i *hi) {
    const uint64_t *u = iq1q_grid_u8;
#if defined(__AVX512F__)
    const __m512i z = _mm512_set_epi64((long long)u[ix[7]], (long long)u[ix[6]], (long long)u[ix[5]],
                                       (long long)u[ix[4]], (long long)u[ix[3]], (long long)u[ix[2]],
                                       (long long)u[ix[1]], (long long)u[ix[0]]);
    /* even 32-bit lanes (columns 0-3 of each row) to the low half, odd ones to the high */
    const __m512i p = _mm512_permutexvar_epi32(
        _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15), z);
    *lo = _mm512_castsi512_si256(p);
    *hi = _mm512_extracti64x4_epi64(p, 1);
#else
    const __m256i a = _mm256_set_epi64x((long long)u[ix[3]], (long long)u[ix[2]], (long long)u[ix[1]],
                                        (long long)u[ix[0]]);
    const __m256i b = _mm256_set_epi64x((long long)u[ix[7]], (long long)u[ix[6]], (long long)u[ix[5]],
                                        (long long)u[ix[4]]);
    /* per 128-bit lane [a0 a1 b0 b1] of the low (high) dwords, then rows in order */
    const __m256 l = _mm256_shuffle_ps(_mm256_castsi256_ps(a), _mm256_castsi256_ps(b), 0x88);
    const __m256 h = _mm256_shuffle_ps(_mm256_castsi256_ps(a), _mm256_castsi256_ps(b), 0xDD);
    *lo = _mm256_permute4x64_epi64(_mm256_castps_si256(l), 0xD8);
    *hi = _mm256_permute4x64_epi64(_mm256_castps_si256(h), 0xD8);
#endif
}

#if defined(__AVX512F__)
/* the 8 bytes of levels of rows 4k..4k+3 (indices ix), row r in 64-bit lane r % 4: loads
 * that broadcast and blends, which leave the shuffle units to the kernel (against
 * vmovq/vpinsrq inserts: 1.13 -> 0.97 ms for the AVX-512 GEMV of x86.h, near the host's noise; four
 * indices per 64-bit load instead of one each: no faster) */
IQ1Q_X86_DEC __m256i iq1q_x86_ggml_levels4(const uint16_t *ix) {
    const uint64_t *u = iq1q_grid_u8;
    const __m256i a = _mm256_set1_epi64x((long long)u[ix[0]]), b = _mm256_set1_epi64x((long long)u[ix[1]]);
    const __m256i c = _mm256_set1_epi64x((long long)u[ix[2]]), d = _mm256_set1_epi64x((long long)u[ix[3]]);
    return _mm256_blend_epi32(_mm256_blend_epi32(a, b, 0x0C), _mm256_blend_epi32(c, d, 0xC0), 0xF0);
}

/* the levels of one group of the 8 rows (indices ix), row r in 64-bit lane r */
IQ1Q_X86_DEC __m512i iq1q_x86_ggml_levels8(const uint16_t *ix) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(iq1q_x86_ggml_levels4(ix)), iq1q_x86_ggml_levels4(ix + 4), 1);
}
#endif

/* d / 8 of the 8 rows for span s (256 columns) */
IQ1Q_X86_DEC __m256 iq1q_x86_ggml_d(int wfmt, const uint8_t *w, const int32_t *offs, int64_t s) {
    if (wfmt == IQ1Q_IQ1_S_R4 || wfmt == IQ1Q_IQ1_M_R4) return iq1q_x86_r4_d(w + offs[0], w + offs[4]);
    uint16_t h[IQ1Q_TILE_ROWS];
    for (int r = 0; r < IQ1Q_TILE_ROWS; ++r) {
        if (wfmt == IQ1Q_IQ1_S) {
            memcpy(&h[r], w + offs[r] + (size_t)s * IQ1Q_TYPE_SIZE_IQ1_S + offsetof(iq1q_block_iq1_s, d), 2);
        } else { /* iq1_m: the top nibbles of the four scale words */
            uint64_t x;
            memcpy(&x, w + offs[r] + (size_t)s * IQ1Q_TYPE_SIZE_IQ1_M + offsetof(iq1q_block_iq1_m, scales), 8);
            h[r] = (uint16_t)(((x >> 12) & 0xF) | ((x >> 24) & 0xF0) | ((x >> 36) & 0xF00) | ((x >> 48) & 0xF000));
        }
    }
    return _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)h)), _mm256_set1_ps(IQ1Q_DELTA));
}

#endif /* IQ1Q_X86_GGML_H */
