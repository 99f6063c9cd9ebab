/* simd_gemm.h: the GEMM driver every SIMD kernel set shares (x86.h, neon.h):
 * the activation data a kernel reads besides the quants, the weights' rows a pass
 * reads (their ggml bytes, or tiles (tiles.h) decoded from them as the work goes),
 * the split of the work over the worker pool, and the choice between the fused
 * (few activation rows) and the expanded (many rows) path. Only the integer steps
 * and the reading of the ggml bytes are per ISA.
 *
 * The including header defines, before including this one,
 *   IQ1Q_SIMD_NM          activation rows per pass (a macro: the ISA code instantiates per count)
 *   IQ1Q_SIMD_GROUP_SUMS  1 when its fused kernel needs the sums of the quants over groups of 8
 *   IQ1Q_SIMD_BIASED_ROWS from how many activation rows its kernels read the quants + 128 as
 *                         unsigned bytes (0: never; the historical kernel never does)
 *   IQ1Q_SIMD_PAIR        1 when its kernels run two tiles (16 weight rows) per pass
 *   IQ1Q_SIMD_READS_GGML  1 when its kernels read a tile's rows from the ggml bytes themselves
 *                         (iq1q_simd_tile without a decoded tile); 0: the driver decodes
 *                         them into tiles first (iq1q_simd_decode)
 *   iq1q_simd_half        the expanded operands of one half chunk (16 columns of a tile's
 *                         8 rows, or of both tiles of a pair)
 * and, after it, the three functions declared below.
 *
 * The work: tiles of 8 weight rows are dealt over the threads; the activation
 * rows go in blocks (128 to IQ1Q_SIMD_MC rows, by K), each over all of a task's
 * tiles in turn, so that a block's quants stay in L2 while the weights stream past (tiles outer:
 * Zen 5, AVX-512, hot, 4096 x 4096, M = 256: 7 % slower). The weights are read in
 * their own bytes, once per block of activation rows, and nothing is kept after the
 * call: an ISA that reads them itself (IQ1Q_SIMD_READS_GGML, x86) gets their rows; for
 * another (NEON) a tile is decoded a panel of IQ1Q_SIMD_KCH * 32 columns at a time into
 * the task's scratch and used there at once; a prepared tensor's tiles are read as
 * they are. With at most
 * IQ1Q_SIMD_NM activation rows the kernel makes each operand where it is used
 * (the GEMV path); with more, a panel of a tile (or of a pair of tiles,
 * IQ1Q_SIMD_PAIR, on both paths) is expanded once into an L1-sized scratch and
 * every activation row runs over it (the GEMM path). The path is chosen once per
 * call, by M, so a call prepares only what its path reads.
 * Results do not depend on the thread count or on the path: every output is
 * the same exact integer per activation block and the same float steps.
 */
#ifndef IQ1Q_SIMD_GEMM_H
#define IQ1Q_SIMD_GEMM_H

#include <stdlib.h>

#include "iq1q_common.h"
#include "pool.h"
#include "tiles.h"

enum {
    /* chunks of 32 columns decoded, and expanded, at a time: 10-12 KiB of operands,
     * whole q8_k blocks and whole spans of a tile's d */
    IQ1Q_SIMD_KCH = IQ1Q_SIMD_PAIR ? 16 : 32,
    /* activation rows per expansion: as many as 512 KiB of quants hold (L2), 128 to 512.
     * Gemma 3 270M under perplexity (M = 512, K = 640-2048), Zen 4, IQ1 matmuls per chunk
     * at 1 / 2 threads: 0.402 / 0.220 s with 128 rows always, 0.393 / 0.237 with 512
     * always (K = 2048: 1 MiB a block), 0.374 / 0.194 so. At K >= 4096: 128 as before. */
    IQ1Q_SIMD_MC = 512,
    IQ1Q_SIMD_MC_MIN = 128,
    IQ1Q_SIMD_MC_BYTES = 512 * 1024,
};

/* ---- activations: what the kernel reads besides the quants ---------------- */

typedef struct {
    int ablk;                   /* values per block */
    size_t atype, aqoff, asoff; /* block bytes, offset of the quants, of q8_1's s */
    int fp16_scale;
} iq1q_simd_act_format;

static const iq1q_simd_act_format iq1q_simd_act_formats[IQ1Q_NUM_ACTIVATION_FORMATS] = {
    {IQ1Q_BLOCK_Q8_0, IQ1Q_TYPE_SIZE_Q8_0, offsetof(iq1q_block_q8_0, qs), 0, 1},
    {IQ1Q_BLOCK_Q8_1, IQ1Q_TYPE_SIZE_Q8_1, offsetof(iq1q_block_q8_1, qs), offsetof(iq1q_block_q8_1, s), 1},
    {IQ1Q_BLOCK_Q8_K, IQ1Q_TYPE_SIZE_Q8_K, offsetof(iq1q_block_q8_k, qs), 0, 0},
    {IQ1Q_BLOCK_Q8_K128, IQ1Q_TYPE_SIZE_Q8_K128, offsetof(iq1q_block_q8_k128, qs), 0, 0},
};

/* The quants are copied into the order a pass reads them: chunk c (32 columns) of
 * IQ1Q_SIMD_NM consecutive rows side by side, so a pass streams one buffer instead of
 * one per row, 4.4 KB apart (Zen 4, AVX-512, 4096 x 4096: 8-14 % faster at M = 8 to
 * 256). Slot of row m, chunk c; the next chunk of the row is IQ1Q_SIMD_NM slots on. */
static inline size_t iq1q_simd_slot(int64_t m, int64_t c, int64_t nchunks) {
    return (size_t)(((m / IQ1Q_SIMD_NM) * nchunks + c) * IQ1Q_SIMD_NM + m % IQ1Q_SIMD_NM);
}

typedef struct {
    iq1q_simd_act_format f;
    const uint8_t *a;
    size_t arow;     /* bytes per activation row */
    int64_t K, nblk; /* nblk: blocks per row */
    int biased;      /* qp holds q + 128 (as q ^ 0x80): see IQ1Q_SIMD_BIASED_ROWS */
    uint8_t *qp;     /* [slot][32] the quants in pass order */
    int16_t *b8;     /* [slot][4] their sums over groups of 8, or NULL */
    float *da;       /* [M][nblk] block scales */
    float *s;        /* [M][nblk] q8_1's stored s, for the historical kernel only */
} iq1q_simd_acts;

static void iq1q_simd_prepare_row(const iq1q_simd_acts *A, int64_t m) {
    const uint8_t *row = A->a + (size_t)m * A->arow;
    const int64_t nchunks = A->K / IQ1Q_TILE_CHUNK, per_blk = A->f.ablk / IQ1Q_TILE_CHUNK;
    float *da = A->da + m * A->nblk;
    for (int64_t i = 0; i < A->nblk; ++i) {
        const uint8_t *blk = row + (size_t)i * A->f.atype;
        uint32_t bits;
        memcpy(&bits, blk, 4);
        da[i] = A->f.fp16_scale ? iq1q_fp16_to_fp32((uint16_t)bits) : iq1q_bits_to_f32(bits);
        if (A->s) {
            uint16_t s;
            memcpy(&s, blk + A->f.asoff, 2);
            A->s[m * A->nblk + i] = iq1q_fp16_to_fp32(s);
        }
        for (int64_t j = 0; j < per_blk; ++j) {
            const int8_t *q = (const int8_t *)(blk + A->f.aqoff) + IQ1Q_TILE_CHUNK * j;
            const size_t slot = iq1q_simd_slot(m, i * per_blk + j, nchunks);
            uint8_t *qp = A->qp + IQ1Q_TILE_CHUNK * slot;
            for (int k = 0; k < IQ1Q_TILE_CHUNK; ++k) qp[k] = (uint8_t)q[k] ^ (A->biased ? 0x80u : 0u);
            if (!A->b8) continue;
            for (int g = 0; g < IQ1Q_TILE_CHUNK / 8; ++g) { /* 8 bytes in one word: 3x the byte loop */
                uint64_t v;
                memcpy(&v, q + 8 * g, 8);
                v ^= 0x8080808080808080u; /* q + 128, 0..255 a byte */
                v = (v & 0x00ff00ff00ff00ffu) + ((v >> 8) & 0x00ff00ff00ff00ffu); /* 4 sums <= 510 */
                A->b8[4 * slot + g] = (int16_t)((int)((v * 0x0001000100010001u) >> 48) - 8 * 128);
            }
        }
    }
}

/* ---- the weights of a pass ----------------------------------------------------- */

/* Rows 8t..8t+7 of the weights as a kernel reads them: decoded into a tile (tiles.h),
 * or, where the ISA reads the ggml bytes itself, those bytes. Rows past the end of the
 * tensor read its last row (its last 4-row group for _r4), and their results are dropped. */
typedef struct {
    const uint8_t *tile;                 /* the decoded tile, or NULL: read the ggml bytes */
    const uint8_t *w;                    /* the ggml bytes of row 8t */
    int32_t offs[IQ1Q_TILE_ROWS];        /* from w to row 8t + r (to its 4-row group for _r4) */
    int wfmt;
} iq1q_simd_tile;

static void iq1q_simd_tile_rows(iq1q_simd_tile *T, int wfmt, const uint8_t *w, int64_t N, int64_t K, int64_t t) {
    const iq1q_format_info *f = &iq1q_format_infos[wfmt];
    const size_t rs = iq1q_row_size(f->block_size, f->type_size, f->row_meta_size, K);
    const int64_t row0 = t * IQ1Q_TILE_ROWS;
    T->tile = NULL;
    T->wfmt = wfmt;
    T->w = w + (size_t)row0 * rs;
    for (int r = 0; r < IQ1Q_TILE_ROWS; ++r) {
        int64_t row = row0 + r < N ? row0 + r : N - 1;
        if (f->rows_per_group == 4) row &= ~(int64_t)3;
        T->offs[r] = (int32_t)((row - row0) * (int64_t)rs);
    }
}

/* ---- what the ISA header defines ---------------------------------------------- */

#if !IQ1Q_SIMD_READS_GGML
/* Chunks [c0, c1) of tile t of an N x K weight tensor (ggml bytes w, weight format
 * wfmt) into `tile` (tiles.h). */
static void iq1q_simd_decode(int wfmt, const uint8_t *w, int64_t N, int64_t K, int64_t t, int64_t c0,
                             int64_t c1, const iq1q_tile_layout *L, uint8_t *tile);
#endif

/* Operands of both halves of chunks [c0, c1) (ops[2 (c - c0) + h]) of a tile (and of
 * tile2, the pair's second tile, or NULL when the pass runs one tile), expanded once for
 * many activation rows (hist: for the historical kernel). */
static void iq1q_simd_expand(const iq1q_simd_tile *tile, const iq1q_simd_tile *tile2, const iq1q_tile_layout *L,
                             int64_t c0, int64_t c1, int hist, iq1q_simd_half *ops);

/* nm (1..IQ1Q_SIMD_NM) activation rows m.. over chunks [c0, c1) (whole activation
 * blocks) of a tile, or of a pair (tile2 not NULL); f holds their float accumulators,
 * 8 per row and tile. The operands come from ops (expanded, for chunks c0..) or,
 * when fused, are made on the spot. */
static inline void iq1q_simd_rows_n(int nm, const iq1q_simd_half *ops, const iq1q_simd_tile *tile,
                             const iq1q_simd_tile *tile2,
                             const iq1q_tile_layout *L, const iq1q_simd_acts *A, int64_t m, int64_t c0,
                             int64_t c1, float *f, int hist, int fused);

/* Defines iq1q_simd_rows_n over ROWS(ops, tile, tile2, L, A, m, c0, c1, f, NM, HIST, FUSED),
 * an always-inline function of the ISA header whose last three arguments are constants:
 * each row count and variant gets its own instantiation, its loops fully unrolled. */
#define IQ1Q_SIMD_ROWS_CASE(ROWS, n)                                           \
    case n:                                                                    \
        if (fused) {                                                           \
            if (hist) ROWS(ops, tile, tile2, L, A, m, c0, c1, f, n, 1, 1);     \
            else ROWS(ops, tile, tile2, L, A, m, c0, c1, f, n, 0, 1);          \
        } else {                                                               \
            if (hist) ROWS(ops, tile, tile2, L, A, m, c0, c1, f, n, 1, 0);     \
            else ROWS(ops, tile, tile2, L, A, m, c0, c1, f, n, 0, 0);          \
        }                                                                      \
        break;
#if IQ1Q_SIMD_NM == 4
#define IQ1Q_SIMD_ROWS_CASES(ROWS) \
    IQ1Q_SIMD_ROWS_CASE(ROWS, 1) IQ1Q_SIMD_ROWS_CASE(ROWS, 2) IQ1Q_SIMD_ROWS_CASE(ROWS, 3) IQ1Q_SIMD_ROWS_CASE(ROWS, 4)
#elif IQ1Q_SIMD_NM == 8
#define IQ1Q_SIMD_ROWS_CASES(ROWS)                                                                   \
    IQ1Q_SIMD_ROWS_CASE(ROWS, 1) IQ1Q_SIMD_ROWS_CASE(ROWS, 2) IQ1Q_SIMD_ROWS_CASE(ROWS, 3) IQ1Q_SIMD_ROWS_CASE(ROWS, 4) \
    IQ1Q_SIMD_ROWS_CASE(ROWS, 5) IQ1Q_SIMD_ROWS_CASE(ROWS, 6) IQ1Q_SIMD_ROWS_CASE(ROWS, 7) IQ1Q_SIMD_ROWS_CASE(ROWS, 8)
#else
#error "IQ1Q_SIMD_NM: 4 or 8 activation rows per pass"
#endif
#define IQ1Q_SIMD_DEFINE_ROWS_N(ROWS)                                                               \
    /* always inlined: left to itself, gcc calls an outlined copy once the switch grows to 8 \
     * row counts, and the expanded path got 4 % slower (AVX2, M = 256) */                       \
    static inline __attribute__((always_inline)) void iq1q_simd_rows_n(                              \
        int nm, const iq1q_simd_half *ops, const iq1q_simd_tile *tile, const iq1q_simd_tile *tile2,  \
        const iq1q_tile_layout *L, const iq1q_simd_acts *A, int64_t m, int64_t c0, int64_t c1,       \
        float *f, int hist, int fused) {                                                             \
        switch (nm) { IQ1Q_SIMD_ROWS_CASES(ROWS) }                                                   \
    }

/* ---- the GEMM ----------------------------------------------------------------- */

typedef struct {
    const uint8_t *w; /* the ggml bytes */
    const uint8_t *tiles; /* or all tiles, decoded beforehand (iq1q_tile_pack), or NULL */
    int wfmt;
    iq1q_tile_layout L;
    int64_t N, M, ntiles, tiles_per_task;
    int64_t mc;       /* activation rows per block */
    int fused; /* the path, by M: operands made where they are used, or expanded */
    int pair;  /* two tiles per pass (IQ1Q_SIMD_PAIR), unless M <= 2 */
    uint8_t *scratch; /* per task, 2 * L.bytes: the tiles being decoded */
    float *y; /* (M, N) row-major */
    iq1q_simd_acts A;
} iq1q_simd_job;

static void iq1q_simd_gemm_task(void *ctx, int64_t task) {
    const iq1q_simd_job *J = (const iq1q_simd_job *)ctx;
    const iq1q_simd_acts *A = &J->A;
    const iq1q_tile_layout *L = &J->L;
    const int hist = A->s != NULL;
    iq1q_simd_half ops[2 * IQ1Q_SIMD_KCH];
    float fbuf[IQ1Q_SIMD_MC * 2 * IQ1Q_TILE_ROWS];
    uint8_t *scratch = J->scratch + (size_t)task * 2 * L->bytes;
    /* tiles per step: a pair where the job runs pairs. An odd last tile is paired with
     * itself, and its copy is not written out. */
    const int pair = J->pair, width = (pair ? 2 : 1) * IQ1Q_TILE_ROWS;
    const int64_t t0 = task * J->tiles_per_task;
    const int64_t t1 = t0 + J->tiles_per_task < J->ntiles ? t0 + J->tiles_per_task : J->ntiles;
    for (int64_t m0 = 0; m0 < J->M; m0 += J->mc) {
        const int64_t mc = J->M - m0 < J->mc ? J->M - m0 : J->mc;
        for (int64_t t = t0; t < t1; t += pair ? 2 : 1) {
            const int two = pair && t + 1 < t1;
            iq1q_simd_tile T[2];
            for (int k = 0; k < (pair ? 2 : 1); ++k) {
                iq1q_simd_tile_rows(&T[k], J->wfmt, J->w, J->N, A->K, two ? t + k : t);
                if (J->tiles) T[k].tile = J->tiles + (size_t)(two ? t + k : t) * L->bytes;
                else if (!IQ1Q_SIMD_READS_GGML) T[k].tile = scratch + (size_t)(two ? k : 0) * L->bytes;
            }
            const iq1q_simd_tile *tile = &T[0], *tile2 = pair ? &T[1] : NULL;
            memset(fbuf, 0, sizeof(float) * (size_t)width * (size_t)mc);
            for (int64_t c0 = 0; c0 < L->nchunks; c0 += IQ1Q_SIMD_KCH) {
                const int64_t c1 = c0 + IQ1Q_SIMD_KCH < L->nchunks ? c0 + IQ1Q_SIMD_KCH : L->nchunks;
#if !IQ1Q_SIMD_READS_GGML
                if (!J->tiles) /* read only, then */
                    for (int k = 0; k < (two ? 2 : 1); ++k)
                        iq1q_simd_decode(J->wfmt, J->w, J->N, A->K, t + k, c0, c1, L, (uint8_t *)T[k].tile);
#endif
                if (J->fused) { /* make each operand where it is used */
                    iq1q_simd_rows_n((int)mc, ops, tile, tile2, L, A, m0, c0, c1, fbuf, hist, 1);
                    continue;
                } /* expand the panel once, then run every row over it */
                iq1q_simd_expand(tile, tile2, L, c0, c1, hist, ops);
                for (int64_t m = 0; m < mc; m += IQ1Q_SIMD_NM) {
                    const int nm = mc - m < IQ1Q_SIMD_NM ? (int)(mc - m) : IQ1Q_SIMD_NM;
                    iq1q_simd_rows_n(nm, ops, tile, tile2, L, A, m0 + m, c0, c1, fbuf + width * m, hist, 0);
                }
            }
            /* the pass's outputs of a row are side by side in fbuf and in y (a pair's two tiles:
             * one 64-byte line); a whole tile's or pair's copy has a constant size, so it is
             * inlined (a libc call per 32 bytes took 5 % of the samples at M = 256) */
            const int64_t row0 = t * IQ1Q_TILE_ROWS, ncols = (two ? 2 : 1) * IQ1Q_TILE_ROWS;
            const int64_t nr = J->N - row0 < ncols ? J->N - row0 : ncols;
            for (int64_t m = 0; m < mc; ++m) {
                float *dst = J->y + (m0 + m) * J->N + row0;
                const float *src = fbuf + width * m;
                if (nr == 2 * IQ1Q_TILE_ROWS) memcpy(dst, src, sizeof(float) * 2 * IQ1Q_TILE_ROWS);
                else if (nr == IQ1Q_TILE_ROWS) memcpy(dst, src, sizeof(float) * IQ1Q_TILE_ROWS);
                else memcpy(dst, src, sizeof(float) * nr);
            }
        }
    }
}

typedef struct {
    const iq1q_simd_acts *A;
    int64_t rows_per_task, M;
} iq1q_simd_prep_job;

static void iq1q_simd_prep_task(void *ctx, int64_t task) {
    const iq1q_simd_prep_job *P = (const iq1q_simd_prep_job *)ctx;
    const int64_t m1 = (task + 1) * P->rows_per_task < P->M ? (task + 1) * P->rows_per_task : P->M;
    for (int64_t m = task * P->rows_per_task; m < m1; ++m) iq1q_simd_prepare_row(P->A, m);
}

/* How many tasks to deal n units of work into: a few per thread, so a busy
 * core slows the call by less than its share, and at least min_units each. */
static inline int64_t iq1q_simd_tasks(int64_t n, int nthreads, int64_t min_units) {
    int64_t t = nthreads <= 1 ? 1 : 4 * (int64_t)nthreads;
    if (t > n / min_units) t = n / min_units;
    return t < 1 ? 1 : t;
}

/* y (M x N) = X @ W.T for an N x K weight tensor w (ggml bytes of weight format wfmt)
 * and activations a (M rows of format afmt); tiles: the weights decoded beforehand by
 * iq1q_tile_pack (a prepared tensor), or NULL to decode as the work goes; hist: the
 * historical iq1_s_r4 x q8_1 kernel. Returns 0, or -1 when out of memory. */
static int iq1q_simd_gemm(int wfmt, int afmt, int hist, const uint8_t *w, const uint8_t *tiles, int64_t N,
                          int64_t K, const uint8_t *a, int64_t M, float *y, int nthreads, iq1q_pool_run_fn run) {
    iq1q_simd_job J;
    J.w = w;
    J.tiles = tiles;
    J.wfmt = wfmt;
    J.L = iq1q_tile_layout_for(K);
    J.N = N;
    J.M = M;
    J.fused = M <= IQ1Q_SIMD_NM;
    J.mc = IQ1Q_SIMD_MC_BYTES / K / IQ1Q_SIMD_NM * IQ1Q_SIMD_NM;
    J.mc = J.mc < IQ1Q_SIMD_MC_MIN ? IQ1Q_SIMD_MC_MIN : J.mc > IQ1Q_SIMD_MC ? IQ1Q_SIMD_MC : J.mc;
    /* one or two rows run one tile: there the pair's register shuffles cost more than
     * its shared broadcasts save (Zen 4, M = 1: 8-14 %) */
    J.pair = IQ1Q_SIMD_PAIR && M > 2;
    J.y = y;
    J.ntiles = iq1q_tile_count(N);
    iq1q_simd_acts *A = &J.A;
    A->f = iq1q_simd_act_formats[afmt - IQ1Q_Q8_0];
    A->a = a;
    A->arow = A->f.atype * (size_t)(K / A->f.ablk);
    A->K = K;
    A->nblk = K / A->f.ablk;
    /* the quants in pass order (biased where the ISA's kernels read them so), and the
     * group sums unless the path needs none (biased, historical) */
    A->biased = IQ1Q_SIMD_BIASED_ROWS && !hist && M >= IQ1Q_SIMD_BIASED_ROWS;
    const size_t nslots = (size_t)((M + IQ1Q_SIMD_NM - 1) / IQ1Q_SIMD_NM * IQ1Q_SIMD_NM) * (size_t)(K / IQ1Q_TILE_CHUNK);
    const size_t nb8 = IQ1Q_SIMD_GROUP_SUMS && !hist && !A->biased ? 4 * nslots : 0;
    const size_t nda = (size_t)M * (size_t)A->nblk;
    char *scratch = malloc((hist ? 2 : 1) * nda * sizeof(float) + nb8 * sizeof(int16_t) + IQ1Q_TILE_CHUNK * nslots);
    if (!scratch) return -1;
    A->da = (float *)scratch;
    A->s = hist ? A->da + nda : NULL;
    A->b8 = nb8 ? (int16_t *)(A->da + (hist ? 2 : 1) * nda) : NULL;
    A->qp = (uint8_t *)(A->da + (hist ? 2 : 1) * nda) + nb8 * sizeof(int16_t);
    iq1q_simd_prep_job P = {A, 0, M};
    const int64_t ptasks = iq1q_simd_tasks(M, nthreads, 16);
    P.rows_per_task = (M + ptasks - 1) / ptasks;
    run(iq1q_simd_prep_task, &P, ptasks, nthreads);
    /* a task is at least ~2M multiply-adds (~15 us on one core): waking the pool costs
     * several us, so a small product (512 x 512 at M = 1) stays on the calling thread */
    const int64_t tile_macs = IQ1Q_TILE_ROWS * K * M;
    const int64_t min_tiles = tile_macs >= (1 << 21) ? 1 : (1 << 21) / tile_macs;
    const int64_t ntasks = iq1q_simd_tasks(J.ntiles, nthreads, min_tiles);
    J.tiles_per_task = (J.ntiles + ntasks - 1) / ntasks;
    if (J.pair) J.tiles_per_task += J.tiles_per_task % 2; /* whole pairs */
    const int64_t njobs = (J.ntiles + J.tiles_per_task - 1) / J.tiles_per_task;
    /* two tiles per task, each touched a panel at a time (tile bytes are 64-byte multiples) */
    J.scratch = aligned_alloc(64, tiles || IQ1Q_SIMD_READS_GGML ? 64 : (size_t)njobs * 2 * J.L.bytes);
    if (!J.scratch) {
        free(scratch);
        return -1;
    }
    run(iq1q_simd_gemm_task, &J, njobs, nthreads);
    free(J.scratch);
    free(scratch);
    return 0;
}

#endif /* IQ1Q_SIMD_GEMM_H */
