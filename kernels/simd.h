/* simd.h: the SIMD kernel set of the target architecture under one set of names,
 * for the Cython shell (simd_shell.pxi) and the C tests: iq1q_simd_gemm (the
 * driver, simd_gemm.h) and iq1q_simd_act_quantizers. Each kernel module compiles
 * this with its own ISA flags (setup.py). */
#ifndef IQ1Q_SIMD_H
#define IQ1Q_SIMD_H

#if defined(__x86_64__)
#include "x86.h"
#include "x86_activations.h"
#elif defined(__aarch64__)
#include "neon.h"
#include "neon_activations.h"
#else
#error "no SIMD kernels for this architecture: build the reference backend only"
#endif

#endif /* IQ1Q_SIMD_H */
