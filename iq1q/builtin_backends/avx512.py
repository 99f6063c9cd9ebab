"""AVX-512 VNNI kernels (iq1q._avx512): the AVX2 kernels with vpdpbusd/vpdpwssd on 256-bit
registers (AVX512VL), which on Zen 4 retire at twice the 512-bit rate."""

from ..hookspecs import hookimpl
from .avx2 import FEATURES as AVX2_FEATURES
from .native import simd_backend

FEATURES = AVX2_FEATURES + ("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512vnni")


@hookimpl
def iq1q_register_backends(register):
    register(simd_backend("avx512", "iq1q._avx512", FEATURES, priority=30,
                          description="x86 AVX-512 VNNI (256-bit dpbusd), weights repacked once into 8-row tiles"))
