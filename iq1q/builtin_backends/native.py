"""What the built-in native backends share: their kernel modules' entry points as a Backend.

Every built-in kernel module (iq1q._ref, iq1q._avx2, ...) exports gemm(weight id, activation
id, ...) and quantize_activations(activation id, ...), the ids being the formats' indices
into the native format table (Format.id).
"""

from __future__ import annotations

import importlib
from functools import partial
from types import ModuleType

import numpy as np

from .. import cpu
from ..backend import Backend
from ..formats import ACTIVATION_FORMATS, WEIGHT_FORMATS, format_info

IDS = {name: format_info(name).id for name in WEIGHT_FORMATS + ACTIVATION_FORMATS}


def kernels(module: ModuleType) -> dict:
    """A kernel module's gemm for every (weight, activation) pair."""
    return {(w, a): partial(module.gemm, IDS[w], IDS[a]) for w in WEIGHT_FORMATS for a in ACTIVATION_FORMATS}


def activation_quantizers(module: ModuleType) -> dict:
    """A kernel module's quantize_activations for every activation format."""
    return {a: partial(module.quantize_activations, IDS[a]) for a in ACTIVATION_FORMATS}


def _packer(module: ModuleType, fmt: int, data: np.ndarray, N: int, K: int, threads: int) -> np.ndarray:
    out = np.empty(module.packed_size(N, K), dtype=np.uint8)
    module.pack(fmt, data, N, K, out, threads)
    out.flags.writeable = False
    return out


def simd_backend(name: str, module: str, features: tuple[str, ...], priority: int,
                 description: str) -> Backend:
    """A backend over an x86/ARM kernel module (kernels/simd_gemm.h), imported only when the
    CPU has every feature the module was compiled for."""
    if not cpu.has(*features):
        missing = [f for f in features if not cpu.has(f)]
        return Backend(name, priority=priority, is_available=lambda: False,
                       description=f"{description}; not here: needs {' '.join(missing)}")
    mod = importlib.import_module(module)
    return Backend(
        name,
        priority=priority,
        description=description,
        kernels=kernels(mod),
        activation_quantizers=activation_quantizers(mod),
        weight_packers={w: partial(_packer, mod) for w in WEIGHT_FORMATS},
        stored_products={"Q8_0": mod.q8_0_gemm} if mod.HAS_Q8_0_GEMM else {},
        stored_nlls={"Q8_0": mod.q8_0_nll} if mod.HAS_Q8_0_GEMM else {},
    )
