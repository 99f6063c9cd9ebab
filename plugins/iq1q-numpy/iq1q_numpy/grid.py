"""The IQ1 grid: 2048 entries of 8 values in {-1, 0, 1}, taken from gguf-py."""

from __future__ import annotations

from functools import cache

import numpy as np


@cache
def grid() -> np.ndarray:
    """(2048, 8) float64, read-only; entry 1029 is the only all-zero one."""
    from gguf.quants import IQ1_S  # imported on first use: gguf is slow to import

    IQ1_S.init_grid()
    g = np.asarray(IQ1_S.grid, dtype=np.float64).reshape(2048, 8)
    g.flags.writeable = False
    return g
