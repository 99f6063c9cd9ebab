"""AVX2 + FMA + F16C kernels (iq1q._avx2): every pair, on x86-64 from Haswell and Zen on."""

from ..hookspecs import hookimpl
from .native import simd_backend

FEATURES = ("avx2", "fma", "f16c")


@hookimpl
def iq1q_register_backends(register):
    register(simd_backend("avx2", "iq1q._avx2", FEATURES, priority=20,
                          description="x86 AVX2 (maddubs)"))
