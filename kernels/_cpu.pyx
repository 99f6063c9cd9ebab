# cython: language_level=3
"""CPU feature detection, compiled at baseline flags (see kernels/cpu.h); iq1q.cpu is the API."""

cdef extern from "cpu.h":
    ctypedef struct iq1q_cpu_features:
        int x86_64, avx, avx2, fma, f16c, avxvnni
        int avx512f, avx512bw, avx512vl, avx512dq, avx512vnni, avx512vbmi
        int os_avx, os_avx512
        int aarch64, neon, dotprod, i8mm
    void iq1q_cpu_detect(iq1q_cpu_features *f)


def features():
    """dict: field of iq1q_cpu_features -> bool, in declaration order, for this CPU and OS.

    Besides the instruction sets: the architecture (x86_64, aarch64) and the XCR0
    verdicts (os_avx, os_avx512) the x86 fields already take into account.
    """
    cdef iq1q_cpu_features f
    iq1q_cpu_detect(&f)
    cdef dict values = f  # Cython converts the struct field by field
    return {name: bool(value) for name, value in values.items()}
