"""The float work of a forward pass in native code on iq1q's pool: RMS norm, the gated MLP
activation and rotary embeddings (kernels/float_ops.h), and causal attention
(kernels/attention.h); and the largest |activation| the perplexity table reports.

Every kernel module carries these functions, compiled with its own flags; the widest one the
CPU runs serves them (the built-in backends' feature lists say which), iq1q._ref elsewhere.
The first three give the same bits in every module and at every thread count; attention the
same bits at every thread count (its multiply-adds are fused where the CPU has FMA).
tests/test_float_ops.py holds them to float64 forms.
"""

from __future__ import annotations

import importlib
from functools import cache
from types import ModuleType

import numpy as np

from .. import cpu
from ..builtin_backends import avx2, avx512, neon
from ..threads import num_threads

# widest first; the reference module runs anywhere
_MODULES = (("iq1q._avx512", avx512.FEATURES), ("iq1q._avx2", avx2.FEATURES),
            ("iq1q._neon_dotprod", neon.FEATURES), ("iq1q._neon", neon.PLAIN_FEATURES))


@cache
def module() -> ModuleType:
    """The kernel module that serves the float work here."""
    for name, features in _MODULES:
        if cpu.has(*features):
            return importlib.import_module(name)
    return importlib.import_module("iq1q._ref")


def _floats(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float, threads: int | None = None) -> np.ndarray:
    """x / sqrt(mean(x^2) + eps) * w over the last axis (the mean in float64), a new array."""
    x = _floats(x)
    y = np.empty_like(x)
    n = x.shape[-1] if x.ndim else 1
    module().rms_norm(x.reshape(-1, n), _floats(w).reshape(-1), y.reshape(-1, n), float(eps),
                      num_threads(threads))
    return y


def max_abs(x: np.ndarray) -> float:
    """max |x| over all values, NaN if one is NaN; 0.0 for an empty array."""
    return float(module().max_abs(_floats(x).reshape(-1)))


def gated(activation: str, gate: np.ndarray, up: np.ndarray, threads: int | None = None,
          out: np.ndarray | None = None) -> np.ndarray:
    """activation(gate) * up ('silu' or 'gelu', ggml's tanh form), into out (a float32 array of
    their shape, which may be gate or up) or a new array."""
    g, u = _floats(gate), _floats(up)
    if g.shape != u.shape:
        raise ValueError(f"gate {g.shape} and up {u.shape} differ")
    if out is None:
        out = np.empty_like(g)
    elif out.shape != g.shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous float32 array of shape {g.shape}")
    module().gated(activation, g.reshape(-1), u.reshape(-1), out.reshape(-1), num_threads(threads))
    return out


def rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray, n_rot: int, neox: bool,
         threads: int | None = None) -> np.ndarray:
    """x (T, heads, d) with the first n_rot values of each head rotated by cos and sin
    (T, n_rot / 2), NEOX pairs (i, i + n_rot / 2) or else (2i, 2i + 1); a new array."""
    x = _floats(x)
    if x.ndim != 3:
        raise ValueError(f"rope takes (T, heads, d), got shape {x.shape}")
    T, heads, d = x.shape
    y = np.empty_like(x)
    module().rope(x.reshape(T, heads * d), _floats(cos), _floats(sin),
                  y.reshape(T, heads * d), heads, d, n_rot, neox, num_threads(threads))
    return y


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray, scale: float,
              threads: int | None = None) -> np.ndarray:
    """Causal self-attention (T, n_head, dv) of queries q (T, n_head, d), keys k (T, n_kv, d)
    and values v (T, n_kv, dv), the scores scale * q . k + mask (T, T); query head h reads
    key/value head h // (n_head / n_kv), and each query only keys up to its own."""
    m = module()
    T, n_kv, d = k.shape
    padded = -(-T // m.ATTENTION_KEYS) * m.ATTENTION_KEYS
    kt = np.zeros((n_kv, d, padded), np.float32)
    kt[:, :, :T] = k.transpose(1, 2, 0)
    o = np.empty((T, q.shape[1], v.shape[2]), np.float32)
    m.attention(_floats(q), kt, _floats(v), _floats(mask), o, scale, num_threads(threads))
    return o
