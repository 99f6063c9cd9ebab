/* cpu.h: which instruction sets this CPU (and its OS) supports.
 * Compiled at baseline flags only, so it runs anywhere; the kernel modules
 * built with -mavx2 etc. are imported only when it says they can run. */
#ifndef IQ1Q_CPU_H
#define IQ1Q_CPU_H

typedef struct {
    int x86_64, avx2, fma, f16c, avx512f, avx512bw, avx512vl, avx512dq, avx512vnni;
    int aarch64, neon, dotprod, i8mm;
} iq1q_cpu_features;

#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#ifndef HWCAP2_I8MM
#define HWCAP2_I8MM (1 << 13)
#endif
#endif

static void iq1q_cpu_detect(iq1q_cpu_features *f) {
    *f = (iq1q_cpu_features){0};
#if defined(__x86_64__) && defined(__GNUC__)
    /* libgcc's checks include the OS's XSAVE state (XCR0) for AVX and AVX-512 */
    __builtin_cpu_init();
    f->x86_64 = 1;
    f->avx2 = __builtin_cpu_supports("avx2");
    f->fma = __builtin_cpu_supports("fma");
    f->f16c = __builtin_cpu_supports("f16c");
    f->avx512f = __builtin_cpu_supports("avx512f");
    f->avx512bw = __builtin_cpu_supports("avx512bw");
    f->avx512vl = __builtin_cpu_supports("avx512vl");
    f->avx512dq = __builtin_cpu_supports("avx512dq");
    f->avx512vnni = __builtin_cpu_supports("avx512vnni");
#elif defined(__aarch64__)
    f->aarch64 = 1;
    f->neon = 1; /* Advanced SIMD is mandatory on AArch64 */
#if defined(__linux__)
    f->dotprod = (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
    f->i8mm = (getauxval(AT_HWCAP2) & HWCAP2_I8MM) != 0;
#endif
#endif
}

#endif /* IQ1Q_CPU_H */
