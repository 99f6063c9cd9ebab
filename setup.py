"""Native extensions: one module per instruction set, each with its own flags.

The reference kernels and the CPU probe are compiled for the baseline of the
target, so they import anywhere; ISA kernel modules carry their -m flags and
are imported only where iq1q._cpu says the CPU has those features.
"""

import os
import sysconfig

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

KERNELS = "kernels"
# Strict float32 everywhere: quantizer bytes must not depend on FMA contraction (docs/spec.md §1.6).
STRICT = ["-O2", "-ffp-contract=off", "-fno-fast-math", "-std=c11",
          "-Wno-psabi"]  # kernels/float_ops.h's 16-float vectors pass between inlined helpers only


def extension(name: str, flags: list[str]) -> Extension:
    return Extension(
        f"iq1q.{name}",
        [os.path.join(KERNELS, f"{name}.pyx")],
        include_dirs=[KERNELS],
        extra_compile_args=STRICT + flags,
        depends=[os.path.join(KERNELS, f) for f in os.listdir(KERNELS) if f.endswith((".h", ".pxi"))],
    )


# Kernel modules per target instruction set: each is imported only where
# iq1q.cpu reports these features (iq1q/builtin_backends/).
X86_64_KERNELS = {
    "_avx2": ["-O3", "-mavx2", "-mfma", "-mf16c"],
    "_avx512": ["-O3", "-mavx2", "-mfma", "-mf16c", "-mavx512f", "-mavx512bw", "-mavx512vl",
                "-mavx512dq", "-mavx512vnni"],
}


# NEON is part of AArch64; dotprod (sdot) came with ARMv8.2 and is checked at run time.
AARCH64_KERNELS = {
    "_neon": ["-O3", "-march=armv8-a"],
    "_neon_dotprod": ["-O3", "-march=armv8.2-a+dotprod"],
}


def kernels_for(platform: str) -> dict[str, list[str]]:
    """The ISA kernel modules for a target platform (as sysconfig names it)."""
    if platform.endswith(("x86_64", "amd64")):
        return X86_64_KERNELS
    if platform.endswith(("aarch64", "arm64")):
        return AARCH64_KERNELS
    return {}  # anywhere else the reference backend serves alone


def extensions() -> list[Extension]:
    # The target's platform, not the build machine's: a cross build (crossenv) reports
    # the target here. CC and LDSHARED from the environment are honoured by setuptools.
    isa = kernels_for(sysconfig.get_platform())
    base = [extension("_cpu", []), extension("_pool", ["-pthread"]), extension("_ref", [])]
    return base + [extension(name, flags) for name, flags in isa.items()]


class ParallelBuildExt(build_ext):
    """Compiles the modules side by side (they are independent) unless told otherwise (-j)."""

    def finalize_options(self) -> None:
        super().finalize_options()
        if not self.parallel:
            self.parallel = os.cpu_count() or 1


setup(
    ext_modules=cythonize(extensions(), include_path=[KERNELS], language_level=3, quiet=True,
                          nthreads=os.cpu_count() or 1),
    cmdclass={"build_ext": ParallelBuildExt},
)
