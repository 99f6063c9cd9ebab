/* test_simd_gemm.c: the SIMD GEMM of the target (kernels/simd.h: x86.h or
 * neon.h) against the reference GEMM (kernels/ref_gemm.h) for all 16 pairs, in
 * C, with no Python in between.
 *
 * Its point is the code paths no CPU here runs natively: built with
 * -DIQ1Q_X86_EMULATE_VNNI it runs the AVX-512 backend's arithmetic (8*ls folded
 * into the bytes, dpbusd/dpwssd emulated exactly, 8 activation rows per pass) on
 * any AVX2 machine, and cross-compiled for AArch64 it runs the NEON kernels
 * (with and without dotprod) under qemu-user; tests/test_simd_c.py builds and
 * runs each variant the machine can run.
 *
 *   cc -O2 -std=c11 -mavx2 -mfma -mf16c [-DIQ1Q_X86_EMULATE_VNNI] -Ikernels \
 *      tests/c/test_simd_gemm.c -o ./tg -lm && ./tg
 *
 * Prints "N passed, M failed"; exits non-zero on any failure.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "ref.h"
#include "simd.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static double uniform(void) { /* splitmix64 -> [0, 1) */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return (double)((z ^ (z >> 31)) >> 11) * 0x1p-53;
}

static float gauss(void) {
    const double u = uniform() + 1e-300, v = uniform();
    return (float)(sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
}

/* a pool that runs the tasks in order, in this thread */
static void serial_run(iq1q_task_fn fn, void *ctx, int64_t ntasks, int nthreads) {
    (void)nthreads;
    for (int64_t t = 0; t < ntasks; ++t) fn(ctx, t);
}

static int check(int wfmt, int afmt, int64_t N, int64_t M, int64_t K) {
    const iq1q_format_info *wi = &iq1q_format_infos[wfmt], *ai = &iq1q_format_infos[afmt];
    const size_t wrow = (size_t)wi->row_meta_size + (size_t)wi->type_size * (size_t)(K / wi->block_size);
    const size_t arow = (size_t)ai->type_size * (size_t)(K / ai->block_size);
    float *w = malloc(sizeof(float) * (size_t)(N * K)), *x = malloc(sizeof(float) * (size_t)(M * K));
    uint8_t *wq = malloc(wrow * (size_t)N), *aq = malloc(arow * (size_t)M);
    const iq1q_tile_layout L = iq1q_tile_layout_for(K);
    uint8_t *tiles = malloc(L.bytes * (size_t)iq1q_tile_count(N));
    float *want = malloc(sizeof(float) * (size_t)(M * N)), *got = malloc(sizeof(float) * (size_t)(M * N));
    for (int64_t i = 0; i < N * K; ++i) w[i] = gauss();
    for (int64_t m = 0; m < M; ++m) {
        const float scale = (float)(0.1 + 10.0 * uniform());
        for (int64_t k = 0; k < K; ++k) x[m * K + k] = scale * gauss();
    }
    iq1q_ref_weight_quantizers[wfmt](w, wq, N, K, NULL);
    iq1q_ref_act_quantizers[afmt - IQ1Q_Q8_0](x, aq, M, K);
    iq1q_ref_gemm_table[wfmt][afmt - IQ1Q_Q8_0](wq, aq, want, K, M, 0, N, N);
    iq1q_tile_repack(wfmt, wq, N, K, tiles, 0, iq1q_tile_count(N));
    const int hist = wfmt == IQ1Q_IQ1_S_R4 && afmt == IQ1Q_Q8_1;
    int ok = iq1q_simd_gemm(afmt, hist, tiles, N, K, aq, M, got, 1, serial_run) == 0;
    double scale = 0.0, err = 0.0;
    for (int64_t i = 0; i < M * N; ++i) {
        scale = fmax(scale, fabs((double)want[i]));
        err = fmax(err, fabs((double)got[i] - (double)want[i]));
    }
    ok = ok && err <= 1e-5 * scale; /* docs/spec.md §7.6 */
    if (!ok)
        printf("FAILED %s x %s, N=%lld M=%lld K=%lld: max error %.3g of %.3g\n", wi->name, ai->name,
               (long long)N, (long long)M, (long long)K, err, scale);
    free(w), free(x), free(wq), free(aq), free(tiles), free(want), free(got);
    return ok;
}

int main(void) {
    if (iq1q_ref_quantize_init() != 0) return 2;
    /* a partial tile (N = 20), M on both sides of the 4 or 8 rows run together and
     * of the 128-row expansion block, K across the expanded chunk (512 or 1024 columns) */
    static const int64_t Ms[] = {1, 3, 5, 8, 9, 70, 150};
    int passed = 0, failed = 0;
    for (int wfmt = 0; wfmt < IQ1Q_NUM_WEIGHT_FORMATS; ++wfmt)
        for (int afmt = IQ1Q_Q8_0; afmt < IQ1Q_NUM_FORMATS; ++afmt)
            for (size_t i = 0; i < sizeof Ms / sizeof *Ms; ++i)
                for (int64_t K = 256; K <= 1280; K += 1024) {
                    if (check(wfmt, afmt, 20, Ms[i], K)) ++passed;
                    else ++failed;
                }
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
