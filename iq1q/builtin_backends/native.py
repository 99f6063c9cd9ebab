"""What the built-in native backends share: a Backend made from a kernel module."""

from __future__ import annotations

import importlib
from functools import partial

import numpy as np

from .. import cpu
from ..formats import ACTIVATION_FORMATS, WEIGHT_FORMATS, format_info
from ..registry import Backend

IDS = {name: format_info(name).id for name in WEIGHT_FORMATS + ACTIVATION_FORMATS}


def _packer(module, fmt: int, data: np.ndarray, N: int, K: int, threads: int) -> np.ndarray:
    out = np.empty(module.packed_size(N, K), dtype=np.uint8)
    module.pack(fmt, data, N, K, out, threads)
    out.flags.writeable = False
    return out


def simd_backend(name: str, module: str, features: tuple[str, ...], priority: int,
                 description: str) -> Backend:
    """A backend over an x86/ARM kernel module (the tile layout of kernels/tiles.h), imported
    only when the CPU has every feature the module was compiled for."""
    if not cpu.has(*features):
        missing = [f for f in features if not cpu.has(f)]
        return Backend(name, priority=priority, is_available=lambda: False,
                       description=f"{description}; not here: needs {' '.join(missing)}")
    mod = importlib.import_module(module)
    return Backend(
        name,
        priority=priority,
        description=description,
        kernels={(w, a): partial(mod.gemm, IDS[w], IDS[a]) for w in WEIGHT_FORMATS for a in ACTIVATION_FORMATS},
        activation_quantizers={a: partial(mod.quantize_activations, IDS[a]) for a in ACTIVATION_FORMATS},
        weight_packers={w: partial(_packer, mod) for w in WEIGHT_FORMATS},
    )
