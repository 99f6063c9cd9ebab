"""matmul: y = x @ W.T with x quantized on the fly to an 8-bit format.

Format names are resolved here, once per call; the layers below (registry, hazards,
kernels) are handed Format objects.
"""

from __future__ import annotations

import numpy as np

from . import hazards, registry
from .arrays import as_rows
from .formats import WEIGHT_FORMATS, Format, activation_format, auto_activation
from .tensors import QuantizedActivations, QuantizedTensor, check_shape
from .threads import num_threads

OVERFLOW_POLICIES = ("raise", "warn", "ignore")


# looked up once: matmul runs this on every call, and a 512 x 512 GEMV takes ~10 us in all
_AUTO = {w: activation_format(auto_activation(w)) for w in WEIGHT_FORMATS}


def check_pair_block(weight: Format, activation: Format, K: int, what: str = "") -> None:
    """ValueError unless rows of K values are whole blocks of both formats of a pair."""
    block = max(weight.block_size, activation.block_size)
    if K % block:
        raise ValueError(f"{what + ': ' if what else ''}row length {K} is not a multiple of {block}, "
                         f"the larger block of {weight.name} ({weight.block_size}) x "
                         f"{activation.name} ({activation.block_size})")


def quantize_activations(x, fmt: str, backend: str | None = None,
                         threads: int | None = None) -> QuantizedActivations:
    """Quantize activations of shape (M, K) or (K,) to q8_0, q8_1, q8_k or q8_k128."""
    f = activation_format(fmt)
    x2, vector = as_rows(x, "activations")
    rows, n = check_shape(f, x2.shape)
    data = _quantize(x2, f, registry.activation_quantizer(f, backend)[1], num_threads(threads))
    return QuantizedActivations(f, rows, n, data, vector=vector)


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
    wfmt, (N, K) = W._format, W.shape
    nthreads = num_threads(threads)
    if isinstance(x, QuantizedActivations):
        if activation not in ("auto", x.format):
            raise ValueError(f"activations are already {x.format}, but activation={activation!r}")
        afmt, vector, rows, a = x._format, len(x.shape) == 1, x.rows, x.data
        if x.row_length != K:
            raise ValueError(f"activations have rows of {x.row_length} values, W has rows of {K}")
        check_pair_block(wfmt, afmt, K)
        if overflow != "ignore":
            hazards.enforce(hazards.scan_quantized(a, afmt, K), overflow)
        route = registry.route(wfmt, afmt, backend)
    else:
        afmt = _AUTO[wfmt.name] if activation == "auto" else activation_format(activation)
        x2, vector = as_rows(x, "activations")
        if x2.shape[1] != K:
            raise ValueError(f"activations have rows of {x2.shape[1]} values, W has rows of {K}")
        check_pair_block(wfmt, afmt, K)
        if overflow != "ignore" and afmt.name in hazards.FP16_FORMATS:
            hazards.enforce(hazards.scan(x2, afmt), overflow)
        route = registry.route(wfmt, afmt, backend)
        rows, a = x2.shape[0], _quantize(x2, afmt, route.quantize, nthreads)
    y = np.empty((rows, N), dtype=np.float32)
    if y.size:  # an empty product is not the kernels' business
        # the native side splits the work; a prepared tensor hands over its backend's layout
        prepared = W._prepared.get(route.packer) if route.packer else None
        if prepared is None:
            route.kernel(W.data, a, y, K, nthreads)
        else:
            route.kernel(W.data, a, y, K, nthreads, prepared)
    return y[0] if vector else y
