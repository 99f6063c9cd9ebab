# cython: language_level=3
"""CPU feature detection, compiled at baseline flags (see kernels/cpu.h)."""

cdef extern from "cpu.h":
    ctypedef struct iq1q_cpu_features:
        int x86_64, avx2, fma, f16c, avx512f, avx512bw, avx512vl, avx512dq, avx512vnni
        int aarch64, neon, dotprod, i8mm
    void iq1q_cpu_detect(iq1q_cpu_features *f)


def features():
    """dict: feature name -> bool, for this CPU and OS."""
    cdef iq1q_cpu_features f
    iq1q_cpu_detect(&f)
    cdef dict values = f  # Cython converts the struct field by field
    return {name: bool(value) for name, value in values.items()}
