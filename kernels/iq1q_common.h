/* iq1q_common.h: the facts every kernel set shares, each defined once.
 *
 * The format table below is the single source of block sizes, byte sizes and
 * ggml type ids; Python reads it through the compiled extension
 * (iq1q/formats.py), so the two can never disagree.
 */
#ifndef IQ1Q_COMMON_H
#define IQ1Q_COMMON_H

#include <stdint.h>
#include <stddef.h>
#include <string.h>
#include <math.h>

/* X(ID, name, ggml type id, block size, bytes per block, row meta bytes,
 *   rows per group, kind)
 * For the _r4 formats a "block" is 32 columns of one row; four rows'
 * blocks are interleaved into one 4 * type_size byte group block. */
#define IQ1Q_FORMAT_TABLE(X)                                     \
    X(IQ1_S,    "iq1_s",     19, 256,  50, 0, 1, WEIGHT)         \
    X(IQ1_M,    "iq1_m",     29, 256,  56, 0, 1, WEIGHT)         \
    X(IQ1_S_R4, "iq1_s_r4", 219,  32,   6, 2, 4, WEIGHT)         \
    X(IQ1_M_R4, "iq1_m_r4", 229,  32,   7, 2, 4, WEIGHT)         \
    X(Q8_0,     "q8_0",       8,  32,  34, 0, 1, ACTIVATION)     \
    X(Q8_1,     "q8_1",       9,  32,  36, 0, 1, ACTIVATION)     \
    X(Q8_K,     "q8_k",      15, 256, 296, 0, 1, ACTIVATION)     \
    X(Q8_K128,  "q8_k128",  150, 128, 140, 0, 1, ACTIVATION)

typedef enum {
#define IQ1Q_X_ENUM(ID, name, ggml, blk, size, meta, rows, kind) IQ1Q_##ID,
    IQ1Q_FORMAT_TABLE(IQ1Q_X_ENUM)
#undef IQ1Q_X_ENUM
    IQ1Q_NUM_FORMATS
} iq1q_format;

#define IQ1Q_X_CONST(ID, name, ggml, blk, size, meta, rows, kind) \
    enum { IQ1Q_BLOCK_##ID = blk, IQ1Q_TYPE_SIZE_##ID = size,     \
           IQ1Q_ROW_META_##ID = meta, IQ1Q_ROWS_##ID = rows };
IQ1Q_FORMAT_TABLE(IQ1Q_X_CONST)
#undef IQ1Q_X_CONST

/* The formats list weights first, so these index the per-kind tables. */
enum { IQ1Q_NUM_WEIGHT_FORMATS = IQ1Q_Q8_0, IQ1Q_NUM_ACTIVATION_FORMATS = IQ1Q_NUM_FORMATS - IQ1Q_Q8_0 };

/* What every kernel set provides, as function types. x is row-major and
 * contiguous; for _r4 formats nrows is a multiple of 4 and rows are stored in
 * groups. Activation quantizers return -1, or the first row holding NaN/Inf. */
typedef void (*iq1q_weight_quantize_fn)(const float *x, uint8_t *y, int64_t nrows, int64_t n,
                                        const float *imatrix);
typedef int64_t (*iq1q_act_quantize_fn)(const float *x, uint8_t *y, int64_t nrows, int64_t n);
typedef void (*iq1q_dequantize_fn)(const uint8_t *x, float *y, int64_t nrows, int64_t n);
/* y[m * ldy + r] = sum_k W[r, k] * X[m, k] for weight rows r in [r0, r1) and
 * activation rows m in [0, M); r0, r1 multiples of the weight's rows per group. */
typedef void (*iq1q_gemm_fn)(const uint8_t *w, const uint8_t *a, float *y,
                             int64_t K, int64_t M, int64_t r0, int64_t r1, int64_t ldy);

/* The table as data, for the Python side (iq1q/formats.py). */
typedef struct {
    const char *name;
    int ggml_type, block_size, type_size, row_meta_size, rows_per_group, is_weight;
} iq1q_format_info;

enum { IQ1Q_KIND_ACTIVATION = 0, IQ1Q_KIND_WEIGHT = 1 };
static const iq1q_format_info iq1q_format_infos[IQ1Q_NUM_FORMATS] = {
#define IQ1Q_X_INFO(ID, name, ggml, blk, size, meta, rows, kind) \
    {name, ggml, blk, size, meta, rows, IQ1Q_KIND_##kind},
    IQ1Q_FORMAT_TABLE(IQ1Q_X_INFO)
#undef IQ1Q_X_INFO
};

/* Bytes of one row of n values (n a multiple of the block). */
static inline size_t iq1q_row_size(size_t block, size_t type_size, size_t meta, int64_t n) {
    return meta + type_size * (size_t)(n / (int64_t)block);
}
#define IQ1Q_ROW_SIZE(ID, n) \
    iq1q_row_size(IQ1Q_BLOCK_##ID, IQ1Q_TYPE_SIZE_##ID, IQ1Q_ROW_META_##ID, (n))

/* The IQ1 grid: 2048 entries of 8 values in {-1, 0, 1}; an index has 11 bits. */
#define IQ1Q_GRID_SIZE 2048
#define IQ1Q_GRID_ZERO 1029 /* the only all-zero entry */

/* ---- block layouts (little-endian, packed by construction) -------------- */

typedef struct { uint16_t d; int8_t qs[32]; } iq1q_block_q8_0;
typedef struct { uint16_t d; uint16_t s; int8_t qs[32]; } iq1q_block_q8_1;
/* ik_llama's Q8_K carries an extra float sum (296 bytes, not mainline's 292). */
typedef struct { float d; float sum; int8_t qs[256]; int16_t bsums[16]; } iq1q_block_q8_k;
typedef struct { float d; int16_t bsums[4]; int8_t qs[128]; } iq1q_block_q8_k128;

typedef struct { uint16_t d; uint8_t qs[32]; uint16_t qh[8]; } iq1q_block_iq1_s;
typedef struct { uint8_t qs[32]; uint8_t qh[16]; uint16_t scales[4]; } iq1q_block_iq1_m;
/* One 32-column block of four interleaved rows. */
typedef struct { uint8_t qs[16]; uint16_t qh[4]; } iq1q_block_iq1_s_r4;
typedef struct { uint8_t qs[16]; uint8_t qh[8]; uint8_t scales[4]; } iq1q_block_iq1_m_r4;

#define IQ1Q_CHECK_SIZE(T, n) _Static_assert(sizeof(T) == (n), #T " has the wrong size")
IQ1Q_CHECK_SIZE(iq1q_block_q8_0, IQ1Q_TYPE_SIZE_Q8_0);
IQ1Q_CHECK_SIZE(iq1q_block_q8_1, IQ1Q_TYPE_SIZE_Q8_1);
IQ1Q_CHECK_SIZE(iq1q_block_q8_k, IQ1Q_TYPE_SIZE_Q8_K);
IQ1Q_CHECK_SIZE(iq1q_block_q8_k128, IQ1Q_TYPE_SIZE_Q8_K128);
IQ1Q_CHECK_SIZE(iq1q_block_iq1_s, IQ1Q_TYPE_SIZE_IQ1_S);
IQ1Q_CHECK_SIZE(iq1q_block_iq1_m, IQ1Q_TYPE_SIZE_IQ1_M);
IQ1Q_CHECK_SIZE(iq1q_block_iq1_s_r4, 4 * IQ1Q_TYPE_SIZE_IQ1_S_R4);
IQ1Q_CHECK_SIZE(iq1q_block_iq1_m_r4, 4 * IQ1Q_TYPE_SIZE_IQ1_M_R4);

/* The +-1/8 shift of every IQ1 weight ("delta"). */
#define IQ1Q_DELTA 0.125f

/* ---- scalar conversions ------------------------------------------------- */

static inline float iq1q_bits_to_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t iq1q_f32_to_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

/* IEEE binary16 -> float32, exact for every input (inf and NaN included).
 * Branch-free, with no subnormal float operands (kernels call it once per
 * activation block): the half's bits are moved into float position and
 * rescaled by 2^-112; zero and subnormal halves are formed as 0.5 + m * 2^-24
 * and reduced by 0.5, which is exact. */
static inline float iq1q_fp16_to_fp32(uint16_t h) {
    const uint32_t w = (uint32_t)h << 16;
    const uint32_t sign = w & 0x80000000u;
    const uint32_t two_w = w + w;
    const float normal = iq1q_bits_to_f32((two_w >> 4) + (0xE0u << 23)) * 0x1p-112f;
    const float tiny = iq1q_bits_to_f32((two_w >> 17) | (126u << 23)) - 0.5f;
    const uint32_t bits = two_w < (1u << 27) ? iq1q_f32_to_bits(tiny) : iq1q_f32_to_bits(normal);
    return iq1q_bits_to_f32(sign | bits);
}

/* float32 -> IEEE binary16, round to nearest, ties to even (as F16C with
 * rounding immediate 0 and ARM's default FPCR mode). */
static inline uint16_t iq1q_fp32_to_fp16(float f) {
    const uint32_t x = iq1q_f32_to_bits(f);
    const uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    const uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return sign | 0x7e00u | (uint16_t)((ax >> 13) & 0x3ffu); /* NaN */
    if (ax >= 0x477ff000u) return sign | 0x7c00u; /* >= 65520 rounds to inf */
    if (ax < 0x38800000u) {
        /* result is subnormal or zero: scale so that one fp16 ulp (2^-24) is 1 */
        if (ax < 0x33000000u) return sign; /* below half the smallest subnormal */
        const uint32_t e = ax >> 23, m = (ax & 0x7fffffu) | 0x800000u;
        const uint32_t shift = 126u - e; /* 14..24 */
        uint32_t q = m >> shift;
        const uint32_t rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (q & 1u))) q++;
        return sign | (uint16_t)q;
    }
    /* normal: rebias the exponent and round the 13 dropped mantissa bits */
    uint32_t r = ax - (112u << 23);
    const uint32_t rem = r & 0x1fffu;
    r >>= 13;
    if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) r++;
    return sign | (uint16_t)r;
}

static inline int iq1q_fp16_is_finite(uint16_t h) { return (h & 0x7c00u) != 0x7c00u; }
/* zero or subnormal */
static inline int iq1q_fp16_is_tiny(uint16_t h) { return (h & 0x7c00u) == 0; }

/* Round half to even, valid for |v| < 2^22; the rounding every IQ1 quantizer
 * and the AVX2/NEON activation quantizers use (docs/spec.md §1.4, §1.5). */
static inline int iq1q_nearest_int(float v) { return (int)lrintf(v); }

#endif /* IQ1Q_COMMON_H */
