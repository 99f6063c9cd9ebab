"""Checking and converting the arrays users pass in."""

from __future__ import annotations

import numpy as np

FLOAT_DTYPES = (np.float16, np.float32, np.float64)


def as_float32(x, what: str, ndims: tuple[int, ...]) -> np.ndarray:
    """x as a C-contiguous, aligned float32 array, after checking its dtype and ndim."""
    arr = np.asarray(x)
    if arr.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{what} must be float16, float32 or float64, got dtype {arr.dtype}")
    if arr.ndim not in ndims:
        want = " or ".join(f"{n}-D" for n in ndims)
        raise ValueError(f"{what} must be {want}, got shape {arr.shape}")
    # aligned too: a float32 view one byte into a buffer is contiguous, and the native
    # code must not load floats from it (undefined behaviour, found by UBSan)
    return np.require(arr, dtype=np.float32, requirements=("C_CONTIGUOUS", "ALIGNED"))


def as_rows(x, what: str) -> tuple[np.ndarray, bool]:
    """x of shape (M, K) or (K,) as a 2-D float32 array (one row for a vector), and whether
    it was a vector, so that results can take the caller's shape again."""
    arr = as_float32(x, what, (1, 2))
    return (arr.reshape(1, -1), True) if arr.ndim == 1 else (arr, False)


def require_finite(x: np.ndarray, what: str) -> None:
    """ValueError naming the first NaN or Inf, if there is one."""
    if not np.isfinite(x).all():
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(x))[0])
        raise ValueError(f"NaN or Inf in {what} (first at index {bad}: {x[bad]})")
