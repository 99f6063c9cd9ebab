/* test_simd_activations.c: the SIMD activation quantizers of the target
 * (kernels/x86_activations.h or neon_activations.h, through simd.h) against the
 * reference (kernels/ref_activations.h): identical bytes and return values for
 * all four formats on many generated inputs.
 *
 *   gcc -O2 -ffp-contract=off -fno-fast-math -std=c11 -mavx2 -mfma -mf16c -Ikernels \
 *       tests/c/test_simd_activations.c -o ./tx -lm && ./tx
 *   aarch64-linux-gnu-gcc ... -march=armv8.2-a+dotprod ... && qemu-aarch64-static -L ... ./tx
 *
 *   ./tx               the comparison (x86: plus a sampled F16C vs iq1q_fp32_to_fp16 check)
 *   ./tx --exhaustive  x86: also F16C vs iq1q_fp32_to_fp16 for all 2^32 float bit patterns
 *   ./tx --bench       throughput, GB/s of float input, ref vs simd (256 rows x 4096)
 */
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../kernels/ref_activations.h"
#include "../../kernels/simd.h"

/* ---- PRNG: splitmix64 ------------------------------------------------------ */

static uint64_t rng_state = 0x1234abcd9876ef01ull;

static uint64_t rnd64(void) {
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static uint32_t rnd32(void) { return (uint32_t)(rnd64() >> 32); }
static int rndint(int lo, int hi) { return lo + (int)(rnd64() % (uint64_t)(hi - lo + 1)); } /* [lo, hi] */
static double rnd01(void) { return (double)(rnd64() >> 11) * 0x1p-53; }
static double gauss(void) {
    double u = rnd01(), v = rnd01();
    if (u < 1e-300) u = 1e-300;
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}
static float pow10f_(int e) { return (float)pow(10.0, e); }
/* a random index in [j, j + len) clipped to [0, n) */
static int64_t pos_in(int64_t j, int len, int64_t n) {
    const int64_t k = j + (int64_t)(rnd32() % (uint32_t)len);
    return k < n ? k : j;
}

/* ---- row generators ----------------------------------------------------------- */

enum {
    K_GAUSS_ROW,      /* gaussian * 10^e, e in [-30, 6] for the row */
    K_GAUSS_BLOCK,    /* gaussian with a scale 10^e per 32-block */
    K_TIES_EXACT,     /* amax = 127 * 2^e in every 32-block, the rest (k/2) * 2^e: x*id = k/2 exactly */
    K_TIES_NEAR,      /* (k/2) * A/127 with one +-A per 32-block, A random */
    K_ZEROS,          /* all +0, all -0, or zero blocks among gaussian blocks */
    K_HUGE,           /* one huge value per block (up to +-FLT_MAX) among small ones */
    K_NONFINITE,      /* gaussian with NaN / +-Inf sprinkled in */
    K_SUBNORMAL,      /* subnormal inputs, and amax around 127/FLT_MAX where 127/amax overflows */
    K_BITS_ANY,       /* random bit patterns (NaN, Inf, subnormal, anything) */
    K_BITS_FINITE,    /* random finite bit patterns */
    K_FP16_EDGE,      /* q8_1 s and d near the fp16 overflow boundaries */
    K_SMALL_INTS,     /* small integers and halves */
    K_ID_EDGE,        /* amax a few ulps around the 127/amax overflow threshold */
    K_NUM
};

static void gen_row(int kind, float *x, int64_t n) {
    if (n <= 0) return;
    switch (kind) {
    case K_GAUSS_ROW: {
        const float s = pow10f_(rndint(-30, 6));
        for (int64_t j = 0; j < n; ++j) x[j] = (float)gauss() * s;
        break;
    }
    case K_GAUSS_BLOCK:
        for (int64_t j = 0; j < n; j += 32) {
            const float s = pow10f_(rndint(-30, 6));
            for (int64_t k = j; k < j + 32 && k < n; ++k) x[k] = (float)gauss() * s;
        }
        break;
    case K_TIES_EXACT: {
        const int e = rndint(-100, 15);
        const float u = ldexpf(1.0f, e), a = 127.0f * u;
        for (int64_t j = 0; j < n; ++j) x[j] = (float)rndint(-254, 254) * 0.5f * u;
        for (int64_t j = 0; j < n; j += 32) x[pos_in(j, 32, n)] = (rnd32() & 1) ? a : -a;
        break;
    }
    case K_TIES_NEAR: {
        const float a = (float)(rnd01() * 10.0 + 0.01) * pow10f_(rndint(-20, 5));
        const float u = a / 127.0f;
        for (int64_t j = 0; j < n; ++j) x[j] = (float)rndint(-254, 254) * 0.5f * u;
        for (int64_t j = 0; j < n; j += 32) x[pos_in(j, 32, n)] = (rnd32() & 1) ? a : -a;
        break;
    }
    case K_ZEROS: {
        const int mode = rndint(0, 3);
        for (int64_t j = 0; j < n; ++j) {
            if (mode == 0) x[j] = 0.0f;
            else if (mode == 1) x[j] = -0.0f;
            else x[j] = (rnd32() & 1) ? 0.0f : -0.0f;
        }
        if (mode == 3)
            for (int64_t j = 0; j < n; j += 32)
                if (rnd32() & 1)
                    for (int64_t k = j; k < j + 32 && k < n; ++k) x[k] = (float)gauss();
        break;
    }
    case K_HUGE: {
        const float s = pow10f_(rndint(-10, 3));
        for (int64_t j = 0; j < n; ++j) x[j] = (float)gauss() * s;
        const int stride = 32 << rndint(0, 3);
        for (int64_t j = 0; j < n; j += stride) {
            float h;
            switch (rndint(0, 3)) {
            case 0: h = FLT_MAX; break;
            case 1: h = iq1q_bits_to_f32(0x7f7fffffu - (rnd32() & 0xffff)); break;
            case 2: h = pow10f_(rndint(7, 38)); break;
            default: h = (float)(rnd01() + 1.0) * pow10f_(rndint(4, 37)); break;
            }
            x[pos_in(j, stride, n)] = (rnd32() & 1) ? h : -h;
        }
        break;
    }
    case K_NONFINITE: {
        const int base = rndint(0, 2);
        for (int64_t j = 0; j < n; ++j) x[j] = base == 0 ? (float)gauss() : base == 1 ? 0.0f : (float)gauss() * 1e-39f;
        const int count = rndint(1, 4);
        for (int c = 0; c < count; ++c) {
            uint32_t bits;
            switch (rndint(0, 4)) {
            case 0: bits = 0x7f800000u; break;                                      /* +inf */
            case 1: bits = 0xff800000u; break;                                      /* -inf */
            case 2: bits = 0x7fc00000u; break;                                      /* quiet NaN */
            case 3: bits = 0x7f800000u | (1u + (rnd32() & 0x3fffffu)); break;       /* signalling NaN */
            default: bits = (rnd32() & 0x80000000u) | 0x7f800000u | (rnd32() & 0x7fffffu); break;
            }
            if ((bits & 0x7fffffu) == 0 && (bits & 0x7f800000u) == 0x7f800000u && rndint(0, 1)) bits |= 1; /* sometimes NaN */
            x[rnd64() % (uint64_t)n] = iq1q_bits_to_f32(bits);
        }
        break;
    }
    case K_SUBNORMAL: {
        const int mode = rndint(0, 3);
        for (int64_t j = 0; j < n; ++j) {
            if (mode == 0) x[j] = iq1q_bits_to_f32((rnd32() & 0x807fffffu)); /* subnormal or zero */
            else if (mode == 1) x[j] = iq1q_bits_to_f32((rnd32() & 0x80000000u) | (rnd32() & 0xffu)); /* tiny */
            else if (mode == 2) x[j] = (float)gauss() * (float)(rnd01() * 1e-36);            /* around the threshold */
            else x[j] = (rnd32() & 1) ? iq1q_bits_to_f32(rnd32() & 0x807fffffu) : (float)gauss() * 1e-30f;
        }
        break;
    }
    case K_BITS_ANY:
        for (int64_t j = 0; j < n; ++j) x[j] = iq1q_bits_to_f32(rnd32());
        break;
    case K_BITS_FINITE:
        for (int64_t j = 0; j < n; ++j) {
            uint32_t b;
            do b = rnd32(); while ((b & 0x7f800000u) == 0x7f800000u);
            x[j] = iq1q_bits_to_f32(b);
        }
        break;
    case K_FP16_EDGE: {
        const int mode = rndint(0, 2);
        if (mode == 0) { /* sum of 32 near 65504..65520 (q8_1's s) */
            const float c = (float)(65504.0 / 32.0 + (rnd01() - 0.5) * 8.0);
            const int noisy = rndint(0, 2), flips = rndint(0, 1);
            for (int64_t j = 0; j < n; ++j)
                x[j] = (flips && !(rnd32() & 7) ? -1.0f : 1.0f) * (c + (noisy ? (float)(gauss() * 0.01 * noisy) : 0.0f));
        } else if (mode == 1) { /* amax near 65504*127 and 65520*127 (fp16 d) */
            const double edge = (rnd32() & 1) ? 65504.0 * 127.0 : 65520.0 * 127.0;
            for (int64_t j = 0; j < n; ++j) x[j] = (float)(gauss() * edge * 0.3);
            for (int64_t j = 0; j < n; j += 32) x[pos_in(j, 32, n)] =
                (float)(edge * (1.0 + (rnd01() - 0.5) * 1e-4)) * ((rnd32() & 1) ? 1.0f : -1.0f);
        } else { /* d near the fp16 subnormal range and the smallest fp16 subnormal */
            const double dd = ldexp(1.0, -rndint(14, 26)) * (1.0 + (rnd01() - 0.5) * 0.01);
            for (int64_t j = 0; j < n; ++j) x[j] = (float)(gauss() * dd * 40.0);
            for (int64_t j = 0; j < n; j += 32) x[j] = (float)(dd * 127.0);
        }
        break;
    }
    case K_SMALL_INTS:
        for (int64_t j = 0; j < n; ++j) x[j] = (float)rndint(-4, 4) * ((rnd32() & 1) ? 1.0f : 0.5f);
        break;
    case K_ID_EDGE: {
        /* smallest amax for which 127/amax is finite: around 127/FLT_MAX */
        const uint32_t t = iq1q_f32_to_bits(127.0f / FLT_MAX);
        for (int64_t j = 0; j < n; j += 32) {
            const float a = iq1q_bits_to_f32(t + (uint32_t)rndint(-3, 3));
            for (int64_t k = j; k < j + 32 && k < n; ++k) x[k] = (float)(rnd01() * 2.0 - 1.0) * a;
            x[pos_in(j, 32, n)] = (rnd32() & 1) ? a : -a;
        }
        break;
    }
    }
}

/* ---- comparison --------------------------------------------------------------- */

static iq1q_act_quantize_fn ref_fn(int f) {
    switch (f) {
    case IQ1Q_Q8_0 - IQ1Q_Q8_0: return iq1q_ref_quantize_q8_0;
    case IQ1Q_Q8_1 - IQ1Q_Q8_0: return iq1q_ref_quantize_q8_1;
    case IQ1Q_Q8_K - IQ1Q_Q8_0: return iq1q_ref_quantize_q8_k;
    default: return iq1q_ref_quantize_q8_k128;
    }
}

static const char *fmt_names[IQ1Q_NUM_ACTIVATION_FORMATS] = {"q8_0", "q8_1", "q8_k", "q8_k128"};
static const int fmt_block[IQ1Q_NUM_ACTIVATION_FORMATS] = {32, 32, 256, 128};
static const int fmt_size[IQ1Q_NUM_ACTIVATION_FORMATS] = {34, 36, 296, 140};

static long passed, failed;
static long per_fmt_pass[IQ1Q_NUM_ACTIVATION_FORMATS];

enum { GUARD = 64 };

static void compare(const float *x, int64_t nrows, int64_t n, const char *what) {
    for (int f = 0; f < IQ1Q_NUM_ACTIVATION_FORMATS; ++f) {
        const size_t bytes = (size_t)(nrows > 0 && n > 0 ? nrows * (n / fmt_block[f]) : 0) * (size_t)fmt_size[f];
        uint8_t *a = malloc(bytes + GUARD), *b = malloc(bytes + GUARD);
        memset(a, 0xa5, bytes + GUARD);
        memset(b, 0xa5, bytes + GUARD);
        const int64_t ra = ref_fn(f)(x, a, nrows, n);
        const int64_t rb = iq1q_simd_act_quantizers[f](x, b, nrows, n);
        if (ra != rb || memcmp(a, b, bytes + GUARD) != 0) {
            ++failed;
            if (failed <= 20) {
                size_t k = 0;
                while (k < bytes + GUARD && a[k] == b[k]) ++k;
                printf("FAIL %s %s nrows=%lld n=%lld: ret ref %lld simd %lld", fmt_names[f], what,
                       (long long)nrows, (long long)n, (long long)ra, (long long)rb);
                if (k < bytes + GUARD)
                    printf(", first byte diff at %zu (block %zu, offset %zu): ref %02x simd %02x", k,
                           k / (size_t)fmt_size[f], k % (size_t)fmt_size[f], a[k], b[k]);
                printf("\n");
            }
        } else {
            ++passed;
            ++per_fmt_pass[f];
        }
        free(a);
        free(b);
    }
}

static const char *kind_names[K_NUM] = {"gauss_row", "gauss_block", "ties_exact", "ties_near", "zeros",
                                        "huge", "nonfinite", "subnormal", "bits_any", "bits_finite",
                                        "fp16_edge", "small_ints", "id_edge"};

static void run_random(int iters) {
    static const int64_t ns[] = {256, 512, 768, 1024, 2048, 4096};
    static const int64_t odd_ns[] = {32, 96, 128, 288, 384, 640, 300, 0, 31, 255};
    for (int it = 0; it < iters; ++it) {
        const int64_t n = (it % 8 == 7) ? odd_ns[rndint(0, (int)(sizeof odd_ns / sizeof *odd_ns) - 1)]
                                        : ns[rndint(0, (int)(sizeof ns / sizeof *ns) - 1)];
        const int64_t nrows = rndint(1, 6);
        const int same = rndint(0, 1);
        const int kind0 = it % K_NUM;
        float *x = malloc(sizeof(float) * (size_t)(nrows * n + 1));
        for (int64_t r = 0; r < nrows; ++r) gen_row(same ? kind0 : rndint(0, K_NUM - 1), x + r * n, n);
        char what[64];
        snprintf(what, sizeof what, "iter %d kind %s%s", it, kind_names[kind0], same ? "" : "+mixed");
        compare(x, nrows, n, what);
        free(x);
    }
}

/* hand-made cases */
static void run_fixed(void) {
    enum { N = 256 };
    float x[4 * N];
    memset(x, 0, sizeof x);
    /* empty inputs */
    compare(x, 0, N, "nrows=0");
    compare(x, 3, 0, "n=0");
    /* all zero / all negative zero */
    for (int j = 0; j < 4 * N; ++j) x[j] = 0.0f;
    compare(x, 4, N, "zeros");
    for (int j = 0; j < 4 * N; ++j) x[j] = -0.0f;
    compare(x, 4, N, "negative zeros");
    /* a lone NaN / Inf in an otherwise zero row, in different rows */
    const uint32_t specials[] = {0x7fc00000u, 0xffc00000u, 0x7f800001u, 0xff800001u, 0x7f800000u, 0xff800000u, 0x7fffffffu};
    for (size_t s = 0; s < sizeof specials / sizeof *specials; ++s)
        for (int pos = 0; pos < 4 * N; pos += 77) {
            for (int j = 0; j < 4 * N; ++j) x[j] = (j & 1) ? 0.25f : -0.0f;
            x[pos] = iq1q_bits_to_f32(specials[s]);
            compare(x, 4, N, "lone special");
            x[(pos + 300) % (4 * N)] = iq1q_bits_to_f32(specials[(s + 1) % 7]);
            compare(x, 4, N, "two specials");
        }
    /* every single value 1 .. 127 * 2^e, both signs, with amax 127 * 2^e: exact ties */
    for (int e = -140; e <= 20; e += 7) {
        const float u = ldexpf(1.0f, e);
        for (int j = 0; j < 4 * N; ++j) x[j] = (float)((j % 255) - 127) * 0.5f * u;
        for (int j = 0; j < 4 * N; j += 32) x[j] = 127.0f * u;
        compare(x, 4, N, "tie ladder");
    }
    /* FLT_MAX everywhere, and sums that overflow float in q8_1/q8_k */
    for (int j = 0; j < 4 * N; ++j) x[j] = FLT_MAX;
    compare(x, 4, N, "FLT_MAX");
    for (int j = 0; j < 4 * N; ++j) x[j] = (j & 1) ? -FLT_MAX : FLT_MAX;
    compare(x, 4, N, "+-FLT_MAX");
    /* smallest subnormal alone */
    for (int j = 0; j < 4 * N; ++j) x[j] = 0.0f;
    x[5] = iq1q_bits_to_f32(1);
    x[300] = -iq1q_bits_to_f32(1);
    compare(x, 4, N, "min subnormal");
    /* docs/spec.md §5.2: sum of 32 values over 65504 */
    for (int j = 0; j < 4 * N; ++j) x[j] = (j < 2 * N) ? 2047.5f : -2047.5f;
    compare(x, 4, N, "q8_1 s overflow");
}

/* ---- F16C vs iq1q_fp32_to_fp16 ------------------------------------------------ */

#if defined(__F16C__)

static long fp16_check(uint64_t start, uint64_t end, uint64_t stride) {
    long bad = 0;
    uint32_t in[8];
    uint16_t out[8];
    for (uint64_t u = start; u < end; u += 8 * stride) {
        for (int k = 0; k < 8; ++k) in[k] = (uint32_t)(u + (uint64_t)k * stride);
        const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps((const float *)in), _MM_FROUND_TO_NEAREST_INT);
        _mm_storeu_si128((__m128i *)out, h);
        for (int k = 0; k < 8; ++k) {
            if (u + (uint64_t)k * stride >= end) break;
            const uint16_t want = iq1q_fp32_to_fp16(iq1q_bits_to_f32(in[k]));
            if (out[k] != want) {
                if (bad < 10) printf("FP16 MISMATCH %08x: f16c %04x ref %04x\n", in[k], out[k], want);
                ++bad;
            }
        }
    }
    return bad;
}
#endif

/* ---- throughput ---------------------------------------------------------------- */

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void bench(void) {
    enum { ROWS = 256, N = 4096 };
    float *x = malloc(sizeof(float) * ROWS * N);
    for (int j = 0; j < ROWS * N; ++j) x[j] = (float)gauss();
    uint8_t *y = malloc((size_t)ROWS * (N / 32) * 37); /* the largest: q8_k, 296 bytes per 256 */
    const double gb = (double)ROWS * N * sizeof(float) * 1e-9;
    printf("throughput, %d rows x %d floats (%.1f MB of float input), best of runs:\n", ROWS, N, gb * 1e3);
    for (int f = 0; f < IQ1Q_NUM_ACTIVATION_FORMATS; ++f) {
        double best[2] = {1e30, 1e30};
        for (int impl = 0; impl < 2; ++impl) {
            const iq1q_act_quantize_fn fn = impl ? iq1q_simd_act_quantizers[f] : ref_fn(f);
            const int runs = impl ? 50 : 5;
            for (int r = 0; r < runs; ++r) {
                const double t0 = now();
                volatile int64_t ret = fn(x, y, ROWS, N);
                (void)ret;
                const double t = now() - t0;
                if (t < best[impl]) best[impl] = t;
            }
        }
        printf("  %-8s ref %7.3f GB/s   simd %7.3f GB/s   (x%.1f)\n", fmt_names[f], gb / best[0], gb / best[1],
               best[0] / best[1]);
    }
    free(x);
    free(y);
}

int main(int argc, char **argv) {
    int exhaustive = 0, do_bench = 0;
    for (int i = 1; i < argc; ++i) {
        if (!strcmp(argv[i], "--exhaustive")) exhaustive = 1;
        else if (!strcmp(argv[i], "--bench")) do_bench = 1;
    }
    if (do_bench) {
        bench();
        return 0;
    }
    run_fixed();
    run_random(4000);
    printf("activation bytes: %ld passed, %ld failed (q8_0 %ld, q8_1 %ld, q8_k %ld, q8_k128 %ld passed)\n",
           passed, failed, per_fmt_pass[0], per_fmt_pass[1], per_fmt_pass[2], per_fmt_pass[3]);

#if defined(__F16C__)
    /* F16C (as used by the vector path) vs the reference fp32 -> fp16 */
    long fbad = exhaustive ? fp16_check(0, 1ull << 32, 1) : fp16_check(0, 1ull << 32, 61);
    /* plus every pattern in the ranges where rounding is subtle: fp16 subnormal results and overflow */
    fbad += fp16_check(0x33000000u - 16, 0x38800000u + 16, exhaustive ? 1 : 3);
    fbad += fp16_check(0x477fe000u - 4096, 0x47800000u + 16, 1);
    fbad += fp16_check(0x7f800000u, 0x80000000u, exhaustive ? 1 : 7);
    printf("fp16: F16C vs iq1q_fp32_to_fp16 (%s): %s\n", exhaustive ? "all 2^32 patterns" : "sampled",
           fbad ? "MISMATCH" : "identical");
    if (fbad) ++failed;
#else
    (void)exhaustive; /* the NEON quantizers convert to fp16 with the reference's own code */
#endif
    printf("%ld passed, %ld failed\n", passed, failed);
    return failed ? 1 : 0;
}
