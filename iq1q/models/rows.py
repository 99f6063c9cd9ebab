"""Matrices that are read a slice of rows at a time, never whole as float32.

A model's token embedding and output head are its largest matrices, and files keep them in
a format of their own (Gemma 3 270M: a 262144 x 640 Q8_0 embedding that is also its head). A
float32 copy of one is most of what a run would hold (671 MB for Gemma), so a RowMatrix
dequantizes only what a step needs: the rows of the tokens looked up, and, for x @ M.T, one
slice of rows after another (SLICE_ROWS, a few MiB of floats).

Products x @ M.T go a piece of rows at a time (RowMatrix.product). Q8_0 rows are multiplied
as ggml multiplies them, x quantized to q8_0: in their own bytes by the backend that serves
Q8_0 (iq1q.registry.stored_product; AVX-512 VNNI: 3.8x numpy's float32 product on one Zen 4
core), else dequantized. Every other type is dequantized a piece at a time and numpy
multiplies: Q8_0 natively (q8_0's bytes are the same as weights or as activations,
docs/spec.md §4.1), F32 and F16 by numpy, the rest by the gguf package.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from .. import registry
from ..backend import STORED_TYPES
from ..gemm import quantize_activations
from ..tensors import QuantizedActivations, QuantizedTensor
from ..threads import num_threads

# rows dequantized at a time, and a piece of a product that one thread computes: 2.5 MiB
# of floats at 640 columns, which stay in cache while x meets them (Gemma 3 270M's float32
# head on 2 threads: 0.82 s a chunk in 256 pieces, 1.45 s in 32 of 8192 rows)
SLICE_ROWS = 1024


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

    def rows(self, r0: int, r1: int, threads: int | None = None) -> np.ndarray:
        """Rows [r0, r1) as float32 (r0 and r1 whole groups, but r1 may be the end);
        threads: of the native dequantizers (default: iq1q's thread count)."""
        m = self.matrix
        if isinstance(m, np.ndarray):
            return np.asarray(m[r0:r1], np.float32)
        if isinstance(m, QuantizedTensor):
            rs = m._format.row_size(self.shape[1])
            part = QuantizedTensor(m._format, r1 - r0, self.shape[1], m.data[r0 * rs:r1 * rs])
            return part.dequantize(threads)
        from .gguf_io import RawTensor, to_array  # a RawTensor came from a GGUF file: gguf is there

        rb = m.row_bytes
        part = m.data[r0 * rb:r1 * rb]
        if m.type_name == "Q8_0":
            return QuantizedActivations.from_bytes(part, "q8_0", (r1 - r0, self.shape[1])).dequantize(threads)
        return np.asarray(to_array(RawTensor(m.ggml_type, (r1 - r0, self.shape[1]), part)), np.float32)

    def product(self, x: np.ndarray, threads: int | None = None,
                exact: bool = False) -> Callable[[int, int], np.ndarray]:
        """A function (r0, r1) -> x @ M[r0:r1].T as float32 (r0, r1 as for rows()), for a
        product computed a piece at a time, pieces side by side on threads of their own (each
        piece runs on one). threads: for what is done once here (quantizing x).

        Rows of a STORED_TYPES type are multiplied as ggml multiplies them, x quantized to the
        type's activation format: by the backend that serves the type, else in float32 from
        both dequantized (the same values, in another summation order), so that results do
        not depend on the CPU. exact: x in float32 as it is, every type dequantized."""
        m = self.matrix
        kind = getattr(m, "type_name", None)
        if exact or kind not in STORED_TYPES or not np.isfinite(x).all():  # NaN/Inf: carried, not raised
            return lambda r0, r1: x @ self.rows(r0, r1, threads=1).T
        xq = quantize_activations(x, STORED_TYPES[kind], threads=threads)
        found = registry.stored_product(kind)
        if found is None:
            xf = xq.dequantize(threads)
            return lambda r0, r1: xf @ self.rows(r0, r1, threads=1).T
        product, rb, a = found[1], m.row_bytes, xq.data

        def piece(r0: int, r1: int) -> np.ndarray:
            y = np.empty((x.shape[0], r1 - r0), np.float32)
            product(m.data[r0 * rb:r1 * rb], a, y, self.shape[1], 1)
            return y
        return piece

    def nll(self, x: np.ndarray, targets: np.ndarray, threads: int | None = None) -> np.ndarray | None:
        """-log softmax(x @ M.T)[m, targets[m]] per row m, in float64, by the kernel of the
        backend that serves this type's log-sum-exp (x quantized as product() quantizes it),
        the logits never kept; None when no backend does, or x is not finite: the caller then
        reduces product()'s logits itself."""
        kind = getattr(self.matrix, "type_name", None)
        if kind not in STORED_TYPES or not np.isfinite(x).all():
            return None
        found = registry.stored_nll(kind)
        if found is None:
            return None
        xq = quantize_activations(x, STORED_TYPES[kind], threads=threads)
        out = np.empty(x.shape[0], np.float64)
        found[1](self.matrix.data, xq.data, np.ascontiguousarray(targets, np.int64), out, self.shape[1],
                 num_threads(threads))
        return out

    def take(self, ids: np.ndarray) -> np.ndarray:
        """The rows of ids (any order, repeats allowed) as float32, (len(ids), K)."""
        if isinstance(self.matrix, np.ndarray):
            return np.asarray(self.matrix[ids], np.float32)
        groups, inverse = np.unique(ids // self.group, return_inverse=True)
        rows = np.concatenate([self.rows(g * self.group, g * self.group + self.group) for g in groups])
        return rows[inverse * self.group + ids % self.group]

    def ranges(self, step: int | None = None) -> list[tuple[int, int]]:
        """(r0, r1) of the slices that cover the matrix, step rows each (default SLICE_ROWS,
        rounded to whole groups)."""
        step = step or SLICE_ROWS
        step = max(self.group, step - step % self.group)
        return [(r0, min(r0 + step, self.shape[0])) for r0 in range(0, self.shape[0], step)]

    def slices(self, step: int | None = None) -> Iterator[tuple[int, int, np.ndarray]]:
        """(r0, r1, rows [r0, r1) as float32) over the whole matrix, step rows at a time
        (default SLICE_ROWS)."""
        for r0, r1 in self.ranges(step):
            yield r0, r1, self.rows(r0, r1)
