"""Native extensions: one module per instruction set, each with its own flags.

The reference kernels and the CPU probe are compiled for the baseline of the
target, so they import anywhere; ISA kernel modules carry their -m flags and
are imported only where iq1q._cpu says the CPU has those features.
"""

import os
import sysconfig

from Cython.Build import cythonize
from setuptools import Extension, setup

KERNELS = "kernels"
# Strict float32 everywhere: quantizer bytes must not depend on FMA contraction (SPEC 1.6).
STRICT = ["-O2", "-ffp-contract=off", "-fno-fast-math", "-std=c11"]


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


def extensions() -> list[Extension]:
    # the target's platform (honours _PYTHON_HOST_PLATFORM when cross-compiling)
    isa = X86_64_KERNELS if sysconfig.get_platform().endswith(("x86_64", "amd64")) else {}
    base = [extension("_cpu", []), extension("_pool", ["-pthread"]), extension("_ref", [])]
    return base + [extension(name, flags) for name, flags in isa.items()]


setup(ext_modules=cythonize(extensions(), include_path=[KERNELS], language_level=3, quiet=True))
