"""AVX-512 VNNI kernels (iq1q._avx512): the AVX2 kernels with vpdpbusd/vpdpwssd, one tile in
256-bit registers (AVX512VL) for one or two activation rows, a pair of tiles in 512-bit
registers for more (kernels/x86.h says why)."""

from ..hookspecs import hookimpl
from .avx2 import FEATURES as AVX2_FEATURES
from .native import simd_backend

FEATURES = AVX2_FEATURES + ("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512vnni")


@hookimpl
def iq1q_register_backends(register):
    register(simd_backend("avx512", "iq1q._avx512", FEATURES, priority=30,
                          description="x86 AVX-512 VNNI (vpdpbusd)"))
