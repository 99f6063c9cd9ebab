# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""The x86 SIMD kernels built for AVX512 (flags in setup.py); import only where
iq1q.cpu says the CPU can run them."""

include "simd_shell.pxi"
