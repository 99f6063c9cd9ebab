/* cpu.h: which instruction sets this CPU (and its OS) supports.
 * Compiled at baseline flags only, so it runs anywhere; the kernel modules
 * built with -mavx2 etc. are imported only when it says they can run.
 *
 * x86: a CPUID bit says the CPU has an instruction set, but its registers are
 * usable only if the OS saves them on a context switch, which XCR0 tells.
 * So AVX-family features count only with the AVX state enabled (os_avx), and
 * AVX-512 ones only with the opmask and ZMM states enabled too (os_avx512). */
#ifndef IQ1Q_CPU_H
#define IQ1Q_CPU_H

typedef struct {
    int x86_64, avx, avx2, fma, f16c, avxvnni;
    int avx512f, avx512bw, avx512vl, avx512dq, avx512vnni, avx512vbmi;
    int os_avx, os_avx512; /* XCR0 verdicts: the OS saves AVX / AVX-512 state */
    int aarch64, neon, dotprod, i8mm;
} iq1q_cpu_features;

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <stdint.h>

/* Bits spelled out here: <cpuid.h>'s bit_* names differ between compilers and versions. */
#define IQ1Q_BIT(n) (1u << (n))
/* CPUID.1:ECX */
#define IQ1Q_CPUID1_FMA IQ1Q_BIT(12)
#define IQ1Q_CPUID1_OSXSAVE IQ1Q_BIT(27) /* the OS enabled XSAVE, so xgetbv exists */
#define IQ1Q_CPUID1_AVX IQ1Q_BIT(28)
#define IQ1Q_CPUID1_F16C IQ1Q_BIT(29)
/* CPUID.(7,0):EBX */
#define IQ1Q_CPUID7_AVX2 IQ1Q_BIT(5)
#define IQ1Q_CPUID7_AVX512F IQ1Q_BIT(16)
#define IQ1Q_CPUID7_AVX512DQ IQ1Q_BIT(17)
#define IQ1Q_CPUID7_AVX512BW IQ1Q_BIT(30)
#define IQ1Q_CPUID7_AVX512VL IQ1Q_BIT(31)
/* CPUID.(7,0):ECX */
#define IQ1Q_CPUID7_AVX512VBMI IQ1Q_BIT(1)
#define IQ1Q_CPUID7_AVX512VNNI IQ1Q_BIT(11)
/* CPUID.(7,1):EAX */
#define IQ1Q_CPUID71_AVXVNNI IQ1Q_BIT(4)
/* XCR0: SSE (1) and AVX (2) state; opmask (5), ZMM_Hi256 (6), Hi16_ZMM (7) */
#define IQ1Q_XCR0_AVX (IQ1Q_BIT(1) | IQ1Q_BIT(2))
#define IQ1Q_XCR0_AVX512 (IQ1Q_BIT(5) | IQ1Q_BIT(6) | IQ1Q_BIT(7))

static uint64_t iq1q_xgetbv0(void) {
    uint32_t lo, hi;
    /* inline asm, not _xgetbv(): that intrinsic needs -mxsave, and this file has no -m flags */
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

static void iq1q_cpu_detect_x86(iq1q_cpu_features *f) {
    unsigned a, b, c, d;
    unsigned ecx1 = 0, ebx7 = 0, ecx7 = 0, eax71 = 0;
    if (__get_cpuid_count(1, 0, &a, &b, &c, &d)) ecx1 = c;
    /* returns 0 when leaf 7 is beyond the CPU's maximum leaf */
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
        ebx7 = b;
        ecx7 = c;
        /* EAX of sub-leaf 0 is the highest sub-leaf; sub-leaf 1 is not range-checked by cpuid.h */
        if (a >= 1 && __get_cpuid_count(7, 1, &a, &b, &c, &d)) eax71 = a;
    }
    uint64_t xcr0 = (ecx1 & IQ1Q_CPUID1_OSXSAVE) ? iq1q_xgetbv0() : 0;
    f->x86_64 = 1;
    f->os_avx = (xcr0 & IQ1Q_XCR0_AVX) == IQ1Q_XCR0_AVX;
    f->os_avx512 = f->os_avx && (xcr0 & IQ1Q_XCR0_AVX512) == IQ1Q_XCR0_AVX512;
    if (f->os_avx) {
        f->avx = (ecx1 & IQ1Q_CPUID1_AVX) != 0;
        f->avx2 = (ebx7 & IQ1Q_CPUID7_AVX2) != 0;
        f->fma = (ecx1 & IQ1Q_CPUID1_FMA) != 0;
        f->f16c = (ecx1 & IQ1Q_CPUID1_F16C) != 0;
        f->avxvnni = (eax71 & IQ1Q_CPUID71_AVXVNNI) != 0;
    }
    if (f->os_avx512) {
        f->avx512f = (ebx7 & IQ1Q_CPUID7_AVX512F) != 0;
        f->avx512bw = (ebx7 & IQ1Q_CPUID7_AVX512BW) != 0;
        f->avx512vl = (ebx7 & IQ1Q_CPUID7_AVX512VL) != 0;
        f->avx512dq = (ebx7 & IQ1Q_CPUID7_AVX512DQ) != 0;
        f->avx512vnni = (ecx7 & IQ1Q_CPUID7_AVX512VNNI) != 0;
        f->avx512vbmi = (ecx7 & IQ1Q_CPUID7_AVX512VBMI) != 0;
    }
}
#endif

#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#ifndef HWCAP2_I8MM
#define HWCAP2_I8MM (1 << 13)
#endif
#elif defined(__aarch64__) && defined(__APPLE__)
#include <stddef.h>
#include <sys/sysctl.h>

/* macOS has no auxv; it reports each optional Arm feature as a sysctl (absent on old releases: 0) */
static int iq1q_sysctl_flag(const char *name) {
    int value = 0;
    size_t size = sizeof value;
    return sysctlbyname(name, &value, &size, NULL, 0) == 0 && value != 0;
}
#endif

static void iq1q_cpu_detect(iq1q_cpu_features *f) {
    *f = (iq1q_cpu_features){0};
#if defined(__x86_64__) && defined(__GNUC__)
    iq1q_cpu_detect_x86(f);
#elif defined(__aarch64__)
    f->aarch64 = 1;
    f->neon = 1; /* Advanced SIMD is mandatory on AArch64 */
#if defined(__linux__)
    f->dotprod = (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
    f->i8mm = (getauxval(AT_HWCAP2) & HWCAP2_I8MM) != 0;
#elif defined(__APPLE__)
    f->dotprod = iq1q_sysctl_flag("hw.optional.arm.FEAT_DotProd");
    f->i8mm = iq1q_sysctl_flag("hw.optional.arm.FEAT_I8MM");
#endif
#endif
}

#endif /* IQ1Q_CPU_H */
