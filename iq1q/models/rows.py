"""Matrices that are read a slice of rows at a time, never whole as float32.

A model's token embedding and output head are its largest matrices, and files keep them in
a format of their own (Gemma 3 270M: a 262144 x 640 Q8_0 embedding that is also its head). A
float32 copy of one is most of what a run would hold (671 MB for Gemma), so a RowMatrix
dequantizes only what a step needs: the rows of the tokens looked up, and, for x @ M.T, one
slice of rows after another (SLICE_ROWS, a few MiB of floats).

Q8_0 rows are dequantized natively (q8_0's bytes are the same as weights or as activations,
docs/spec.md §4.1), F32 and F16 by numpy, other GGUF types by the gguf package.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..tensors import QuantizedActivations, QuantizedTensor

SLICE_ROWS = 8192  # rows dequantized at a time: 20 MiB of floats at 640 columns


class RowMatrix:
    """A (rows, K) matrix in its own bytes: a GGUF tensor of any type iq1q or the gguf package
    can read, an IQ1 QuantizedTensor, or a float array."""

    def __init__(self, name: str, matrix):
        """matrix: an iq1q.gguf_io.RawTensor, a QuantizedTensor or a 2-D float array."""
        self.name = name
        if len(matrix.shape) != 2:
            raise ValueError(f"{name}: a matrix needs 2 dimensions, got shape {tuple(matrix.shape)}")
        self.matrix = matrix
        self.shape: tuple[int, int] = tuple(int(s) for s in matrix.shape)
        # rows dequantized together: _r4 formats interleave groups of 4
        self.group = matrix._format.rows_per_group if isinstance(matrix, QuantizedTensor) else 1

    def __repr__(self) -> str:
        m = self.matrix
        kind = m.format if isinstance(m, QuantizedTensor) else str(m.dtype) if isinstance(m, np.ndarray) else m.type_name
        return f"RowMatrix({self.name!r}, {kind}, shape={self.shape})"

    def rows(self, r0: int, r1: int) -> np.ndarray:
        """Rows [r0, r1) as float32 (r0 and r1 whole groups, but r1 may be the end)."""
        m = self.matrix
        if isinstance(m, np.ndarray):
            return np.asarray(m[r0:r1], np.float32)
        if isinstance(m, QuantizedTensor):
            rs = m._format.row_size(self.shape[1])
            return QuantizedTensor(m._format, r1 - r0, self.shape[1], m.data[r0 * rs:r1 * rs]).dequantize()
        from .gguf_io import RawTensor, to_array  # a RawTensor came from a GGUF file: gguf is there

        rb = m.row_bytes
        part = m.data[r0 * rb:r1 * rb]
        if m.type_name == "Q8_0":
            return QuantizedActivations.from_bytes(part, "q8_0", (r1 - r0, self.shape[1])).dequantize()
        return np.asarray(to_array(RawTensor(m.ggml_type, (r1 - r0, self.shape[1]), part)), np.float32)

    def take(self, ids: np.ndarray) -> np.ndarray:
        """The rows of ids (any order, repeats allowed) as float32, (len(ids), K)."""
        if isinstance(self.matrix, np.ndarray):
            return np.asarray(self.matrix[ids], np.float32)
        groups, inverse = np.unique(ids // self.group, return_inverse=True)
        rows = np.concatenate([self.rows(g * self.group, g * self.group + self.group) for g in groups])
        return rows[inverse * self.group + ids % self.group]

    def slices(self, step: int | None = None) -> Iterator[tuple[int, int, np.ndarray]]:
        """(r0, r1, rows [r0, r1) as float32) over the whole matrix, step rows at a time
        (default SLICE_ROWS)."""
        step = step or SLICE_ROWS
        step = max(self.group, step - step % self.group)
        for r0 in range(0, self.shape[0], step):
            r1 = min(r0 + step, self.shape[0])
            yield r0, r1, self.rows(r0, r1)

    def matmul_t(self, x: np.ndarray) -> np.ndarray:
        """x @ M.T (float32), a slice of M's rows at a time."""
        y = np.empty((x.shape[0], self.shape[0]), np.float32)
        for r0, r1, block in self.slices():
            y[:, r0:r1] = x @ block.T
        return y
