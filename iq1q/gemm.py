"""matmul: y = x @ W.T with x quantized on the fly to an 8-bit format."""

from __future__ import annotations

import numpy as np

from . import hazards, registry
from .arrays import as_float32
from .formats import ACTIVATION_FORMATS, WEIGHT_FORMATS, Format, activation_format, format_info
from .tensors import QuantizedActivations, QuantizedTensor, _check_shape
from .threads import num_threads

OVERFLOW_POLICIES = ("raise", "warn", "ignore")


def auto_activation(weight_format: str) -> str:
    """What ik_llama.cpp pairs a weight with: q8_k128 for _r4, q8_k for plain formats."""
    return "q8_k128" if weight_format.endswith("_r4") else "q8_k"


# looked up once: these run on every call, and a 512 x 512 GEMV takes ~10 us in all
_AUTO = {w: activation_format(auto_activation(w)) for w in WEIGHT_FORMATS}
_PAIR_BLOCK = {(w, a): max(format_info(w).block_size, format_info(a).block_size)
               for w in WEIGHT_FORMATS for a in ACTIVATION_FORMATS}


def quantize_activations(x, fmt: str, backend: str | None = None,
                         threads: int | None = None) -> QuantizedActivations:
    """Quantize activations of shape (M, K) or (K,) to q8_0, q8_1, q8_k or q8_k128."""
    f = activation_format(fmt)
    arr = as_float32(x, "activations", (1, 2))
    x2 = arr.reshape(1, -1) if arr.ndim == 1 else arr
    rows, n = _check_shape(f, x2.shape)
    data = _quantize(x2, f, registry.activation_quantizer(f.name, backend)[1], num_threads(threads))
    return QuantizedActivations(f, rows, n, data, vector=arr.ndim == 1)


def _quantize(x2: np.ndarray, f: Format, quantizer, nthreads: int) -> np.ndarray:
    """The bytes of x2 (rows of a valid length for f) quantized to f."""
    out = np.empty(x2.shape[0] * f.row_size(x2.shape[1]), dtype=np.uint8)
    if not out.size:  # no rows: no backend is asked to handle empty buffers
        return out
    bad = quantizer(x2, out, nthreads)  # the native side splits the rows
    if bad >= 0:
        raise ValueError(f"NaN or Inf in activations (first in row {bad})")
    return out


def matmul(x, W: QuantizedTensor, activation: str = "auto", backend: str | None = None,
           threads: int | None = None, overflow: str = "raise") -> np.ndarray:
    """x @ W.T as float32: (M, K) x (N, K) -> (M, N), or (K,) -> (N,).

    x is a float16/32/64 array, quantized here to `activation` ("auto": q8_k128
    for _r4 weights, q8_k for plain ones), or a QuantizedActivations.
    overflow: what to do when the activation format's fp16 fields overflow for
    this x: "raise" Fp16OverflowError, "warn" (Fp16OverflowWarning, then return
    what the kernels computed) or "ignore".
    """
    if not isinstance(W, QuantizedTensor):
        raise TypeError(f"W must be an iq1q.QuantizedTensor (see iq1q.quantize), got {type(W).__name__}")
    if overflow not in OVERFLOW_POLICIES:
        raise ValueError(f"overflow must be one of {', '.join(OVERFLOW_POLICIES)}, got {overflow!r}")
    N, K = W.shape
    nthreads = num_threads(threads)
    if isinstance(x, QuantizedActivations):
        if activation not in ("auto", x.format):
            raise ValueError(f"activations are already {x.format}, but activation={activation!r}")
        vector, rows, a = len(x.shape) == 1, x.rows, x.data
        if x.row_length != K:
            raise ValueError(f"activations have rows of {x.row_length} values, W has rows of {K}")
        _check_pair_block(W.format, x.format, K)
        if overflow != "ignore":
            hazards.enforce(hazards.scan_quantized(a, x.format, K), overflow)
        route = registry.route(W.format, x.format, backend)
    else:
        afmt = _AUTO[W.format] if activation == "auto" else activation_format(activation)
        arr = as_float32(x, "activations", (1, 2))
        vector = arr.ndim == 1
        x2 = arr.reshape(1, -1) if vector else arr
        if x2.shape[1] != K:
            raise ValueError(f"activations have rows of {x2.shape[1]} values, W has rows of {K}")
        _check_pair_block(W.format, afmt.name, K)
        if overflow != "ignore" and afmt.name in hazards.FP16_FORMATS:
            hazards.enforce(hazards.scan(x2, afmt.name), overflow)
        route = registry.route(W.format, afmt.name, backend)
        rows, a = x2.shape[0], _quantize(x2, afmt, route.quantize, nthreads)
    y = np.empty((rows, N), dtype=np.float32)
    if y.size:  # an empty product is not the kernels' business
        w = W._packed_for(route.packer, nthreads) if route.packer else W.data
        route.kernel(w, a, y, K, nthreads)  # the native side splits the work
    return y[0] if vector else y


def _check_pair_block(weight: str, activation: str, K: int) -> None:
    if K % _PAIR_BLOCK[weight, activation]:
        wb, ab = format_info(weight).block_size, format_info(activation).block_size
        raise ValueError(f"row length {K} is not a multiple of {max(wb, ab)}, the larger block of "
                         f"{weight} ({wb}) x {activation} ({ab})")
