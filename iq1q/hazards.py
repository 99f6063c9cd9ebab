"""fp16 hazards: activation blocks whose fp16 fields cannot hold them.

q8_0 stores its scale d as fp16, q8_1 stores d and s = d * sum(q) as fp16.
For activations beyond the fp16 range s (and for larger ones d) becomes
+-inf, and the kernel that reads s (iq1_s_r4 x q8_1, ik_llama.cpp before
PR #194) returns NaN. q8_k and q8_k128 keep float32 scales and cannot overflow.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from . import _ref
from .arrays import as_rows
from .formats import ACTIVATION_FORMATS, Format, activation_format

FP16_FORMATS = {"q8_0": False, "q8_1": True}  # format -> whether it stores s = d * sum(q)


class Fp16OverflowError(OverflowError):
    """An activation block overflows an fp16 field of the chosen activation format."""


class Fp16OverflowWarning(RuntimeWarning):
    """Like Fp16OverflowError, for overflow="warn"."""


@dataclass(frozen=True)
class Fp16Report:
    """What one activation format would store for some activations."""

    format: str
    overflow_blocks: int = 0  # blocks with an fp16 field at +-inf
    underflow_blocks: int = 0  # non-zero blocks whose fp16 scale is zero or subnormal
    first: tuple[int, int, float] | None = None  # (row, block, value) of the first offending block
    first_overflow: tuple[int, int, float] | None = None  # the same for the first overflowing one

    @property
    def ok(self) -> bool:
        return not (self.overflow_blocks or self.underflow_blocks)

    def message(self) -> str:
        row, block, value = self.first_overflow
        return (f"{self.overflow_blocks} block(s) of the activations overflow {self.format}'s fp16 "
                f"fields (first: row {row}, block {block} of 32 values, value {value:.6g}, "
                f"beyond the fp16 range of +-65504); use activation='q8_k128' (float32 scale, integer sums), which cannot overflow")


def scan(x: np.ndarray, fmt: Format) -> Fp16Report:
    """The report of one activation format for float32 x of shape (M, K);
    ValueError if x holds NaN or Inf (found by the same native pass)."""
    if fmt.name not in FP16_FORMATS:
        return Fp16Report(fmt.name)
    *fields, bad_row = _ref.fp16_hazards(x, FP16_FORMATS[fmt.name])
    if bad_row >= 0:
        raise ValueError(f"NaN or Inf in activations (first in row {bad_row})")
    return Fp16Report(fmt.name, *fields)


def check_activations(x) -> dict[str, Fp16Report]:
    """Per activation format whose block divides the row length, what its fp16
    fields would do with x, of shape (M, K) or (K,)."""
    arr, _ = as_rows(x, "activations")
    k = arr.shape[1]
    activation_format("q8_0").row_size(k)  # the smallest block; raises for a bad row length
    fmts = map(activation_format, ACTIVATION_FORMATS)
    return {f.name: scan(arr, f) for f in fmts if k % f.block_size == 0}


def scan_quantized(data: np.ndarray, f: Format, k: int) -> Fp16Report:
    """The overflow report read back from quantized bytes (no underflow count:
    the original values are gone). Values are recomputed from d and the quants."""
    if f.name not in FP16_FORMATS:
        return Fp16Report(f.name)
    blocks = data.reshape(-1, f.type_size)
    nhalf = 2 if FP16_FORMATS[f.name] else 1
    halves = blocks[:, : 2 * nhalf].copy().view("<f2").astype(np.float32)
    bad = ~np.isfinite(halves).all(axis=1)
    if not bad.any():
        return Fp16Report(f.name)
    first = int(np.argmax(bad))
    q = blocks[first, 2 * nhalf :].view(np.int8).astype(np.float64)
    value = float(halves[first, 0]) * q.sum() if np.isfinite(halves[first, 0]) else float("inf")
    per_row = k // f.block_size
    site = (first // per_row, first % per_row, value)
    return Fp16Report(f.name, int(bad.sum()), 0, site, site)


def enforce(report: Fp16Report, policy: str) -> None:
    """Apply matmul's overflow policy to a report."""
    if report.overflow_blocks and policy != "ignore":
        if policy == "raise":
            raise Fp16OverflowError(report.message())
        warnings.warn(report.message(), Fp16OverflowWarning, stacklevel=3)
