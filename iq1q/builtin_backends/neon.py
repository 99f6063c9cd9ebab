"""AArch64 NEON kernels: ``neon`` (ARMv8.2 sdot, iq1q._neon_dotprod) where the CPU has the
dot-product instructions, and ``neon_plain`` (ARMv8.0, iq1q._neon: the same kernels with sdot
made of widening multiplies) for cores without them, such as Cortex-A72 and A53."""

from ..hookspecs import hookimpl
from .native import simd_backend

FEATURES = ("neon", "dotprod")
PLAIN_FEATURES = ("neon",)


@hookimpl
def iq1q_register_backends(register):
    register(simd_backend("neon", "iq1q._neon_dotprod", FEATURES, priority=20,
                          description="AArch64 NEON + dotprod (sdot)"))
    register(simd_backend("neon_plain", "iq1q._neon", PLAIN_FEATURES, priority=15,
                          description="AArch64 NEON without dotprod (sdot emulated)"))
