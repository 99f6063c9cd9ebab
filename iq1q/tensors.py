"""Quantized weights and activations: ggml bytes plus their format and shape."""

from __future__ import annotations

import numpy as np

from . import _ref, registry
from .arrays import as_float32, require_finite
from .formats import Format, activation_format, auto_activation, weight_format
from .hessian import HessianOptions, HessianResult, run
from .hessian import prepare as prepare_hessian
from .threads import num_threads


def check_shape(fmt: Format, shape: tuple[int, ...]) -> tuple[int, int]:
    """(rows, row length) of a 2-D shape, checked against the format's rules."""
    if len(shape) != 2 or any(not isinstance(s, (int, np.integer)) or s < 0 for s in shape):
        raise ValueError(f"shape must be (rows, row length) of non-negative ints, got {shape!r}")
    rows, n = (int(s) for s in shape)
    fmt.row_size(n)  # raises for a row length that is not a multiple of the block
    if rows % fmt.rows_per_group:
        raise ValueError(f"{fmt.name} needs a multiple of {fmt.rows_per_group} rows, got {rows}")
    return rows, n


def _as_bytes(buf, fmt: Format, rows: int, n: int) -> np.ndarray:
    """A private, aligned uint8 copy of buf (bytes-like or array) after checking its length."""
    if isinstance(buf, np.ndarray):
        data = np.ascontiguousarray(buf).reshape(-1).view(np.uint8)
    else:
        data = np.frombuffer(buf, dtype=np.uint8)
    want = rows * fmt.row_size(n)
    if data.size != want:
        raise ValueError(f"{fmt.name} data of shape ({rows}, {n}) must be {want} bytes, got {data.size}")
    return data.copy()


class _Quantized:
    """What quantized weights and activations share."""

    __slots__ = ("_format", "_rows", "_n", "_data")

    def __init__(self, fmt: Format, rows: int, n: int, data: np.ndarray):
        self._format, self._rows, self._n, self._data = fmt, rows, n, data
        data.flags.writeable = False

    @property
    def format(self) -> str:
        return self._format.name

    @property
    def rows(self) -> int:
        """Rows of values (1 for a 1-D activation vector)."""
        return self._rows

    @property
    def row_length(self) -> int:
        return self._n

    @property
    def data(self) -> np.ndarray:
        """1-D read-only uint8 view of the bytes, in ggml layout."""
        return self._data

    @property
    def nbytes(self) -> int:
        return self._data.size

    def tobytes(self) -> bytes:
        return self._data.tobytes()

    def _dequantize(self, threads: int | None) -> np.ndarray:
        out = np.empty((self._rows, self._n), dtype=np.float32)
        _ref.dequantize(self._format.id, self._data, out, num_threads(threads))
        return out


class QuantizedTensor(_Quantized):
    """A weight matrix of shape (N, K) in one of the IQ1 formats."""

    # _prepared: weight packer -> its layout of these bytes, made only by prepare()
    __slots__ = ("_prepared",)

    def __init__(self, fmt: Format, rows: int, n: int, data: np.ndarray):
        super().__init__(fmt, rows, n, data)
        self._prepared: dict = {}

    def prepare(self, backend: str | None = None, activation: str = "auto",
                threads: int | None = None) -> QuantizedTensor:
        """Keep the serving backend's own layout of these weights with the tensor: faster
        matmuls with few activation rows, for memory (the SIMD backends' tiles take 2.5 bits
        per weight beside the ggml bytes; a GEMV then decodes nothing). Without it a tensor
        holds its ggml bytes alone, and every matmul reads them. Returns the tensor."""
        afmt = auto_activation(self.format) if activation == "auto" else activation
        route = registry.route(self._format, afmt, backend)
        if route.packer is not None and route.packer not in self._prepared:
            self._prepared[route.packer] = route.packer(self._format.id, self._data, self._rows, self._n,
                                                        num_threads(threads))
        return self

    def release(self) -> None:
        """Drop what prepare() made: the tensor holds its ggml bytes alone again."""
        self._prepared.clear()

    @property
    def prepared_bytes(self) -> int:
        """Bytes held beside the ggml bytes (0 unless prepared)."""
        return sum(p.nbytes for p in self._prepared.values())

    @property
    def shape(self) -> tuple[int, int]:
        return (self._rows, self._n)

    @classmethod
    def from_bytes(cls, buf, fmt: str, shape: tuple[int, int]) -> QuantizedTensor:
        """Wrap ggml bytes (e.g. a GGUF tensor's data), checking their length."""
        f = weight_format(fmt)
        rows, n = check_shape(f, tuple(shape))
        return cls(f, rows, n, _as_bytes(buf, f, rows, n))

    def dequantize(self, threads: int | None = None) -> np.ndarray:
        """The (N, K) float32 weights these bytes encode."""
        return self._dequantize(threads)

    def validate(self) -> None:
        """Raise ValueError naming the rows whose fp16 scales are NaN or Inf."""
        bad = _bad_scale_rows(self)
        if bad.size:
            shown = ", ".join(str(r) for r in bad[:10]) + (", ..." if bad.size > 10 else "")
            raise ValueError(f"{self.format} tensor has NaN or Inf fp16 scales in {bad.size} "
                             f"row(s): {shown}")

    def __repr__(self) -> str:
        return f"QuantizedTensor({self.format!r}, shape={self.shape}, {self.nbytes} bytes)"


def _bad_scale_rows(t: QuantizedTensor) -> np.ndarray:
    """Sorted row indices whose fp16 scales are not finite."""
    fmt, rows, n = t._format, t._rows, t._n
    if rows == 0:
        return np.zeros(0, dtype=np.int64)
    if fmt.rows_per_group == 4:  # 4 fp16 row scales open every 4-row group
        groups = t.data.reshape(rows // 4, 4 * fmt.row_size(n))
        bits = groups[:, :8].copy().view("<u2").reshape(rows)
    else:
        blocks = t.data.reshape(rows * n // fmt.block_size, fmt.type_size)
        if fmt.name == "iq1_s":  # d opens the block
            bits = blocks[:, :2].copy().view("<u2")[:, 0]
        else:  # iq1_m: d's four nibbles top the four scale words at the block's end
            words = blocks[:, -8:].copy().view("<u2").astype(np.uint32)
            bits = ((words >> 12) << np.array([0, 4, 8, 12], dtype=np.uint32)).sum(axis=1)
        bits = bits.reshape(rows, -1)
    bad = ((bits & 0x7C00) == 0x7C00).reshape(rows, -1).any(axis=1)
    return np.flatnonzero(bad)


class QuantizedActivations(_Quantized):
    """Activations of shape (M, K) or (K,) in one of the 8-bit formats."""

    __slots__ = ("_vector",)

    def __init__(self, fmt: Format, rows: int, n: int, data: np.ndarray, vector: bool = False):
        super().__init__(fmt, rows, n, data)
        self._vector = vector

    @property
    def shape(self) -> tuple[int, ...]:
        return (self._n,) if self._vector else (self._rows, self._n)

    @classmethod
    def from_bytes(cls, buf, fmt: str, shape: tuple[int, ...]) -> QuantizedActivations:
        f = activation_format(fmt)
        shape = tuple(shape)
        rows, n = check_shape(f, (1,) + shape if len(shape) == 1 else shape)
        return cls(f, rows, n, _as_bytes(buf, f, rows, n), vector=len(shape) == 1)

    def dequantize(self, threads: int | None = None) -> np.ndarray:
        """d * q as float32, in the shape of the original activations."""
        out = self._dequantize(threads)
        return out[0] if self._vector else out

    def __repr__(self) -> str:
        return f"QuantizedActivations({self.format!r}, shape={self.shape}, {self.nbytes} bytes)"


# The largest |w| any IQ1 block can encode: the fp16 maximum 65504 as scale d, times the
# largest block multiplier 15 and the largest |grid value + delta| 1.125 (docs/spec.md §6.5).
# Past it the reference quantizer's float sums overflow and it would write zeros.
MAX_WEIGHT = float(np.finfo(np.float16).max) * 15 * 1.125


def quantize(w, fmt: str, imatrix=None, threads: int | None = None, *, hessian=None,
             options: HessianOptions | None = None) -> QuantizedTensor:
    """Quantize a (N, K) float matrix to an IQ1 weight format, byte-exact with ik_llama.cpp.

    imatrix: optional importance per column (length K, finite, >= 0), as
    llama-imatrix computes it.
    hessian: optional K x K Hessian of the layer's inputs (sum of x x' over calibration
    inputs x). With it, the same format's bytes are chosen to minimise the output error
    tr((W - Q) H (W - Q)') rather than ik_llama.cpp's per-block error (iq1q.hessian,
    docs/quantizer.md), starting from the plain quantizer's result with imatrix (or diag(H)
    when imatrix is None). options: an iq1q.HessianOptions (damping, passes, ...).
    """
    if hessian is None:
        if options is not None:
            raise ValueError("options apply to quantizing with a hessian; pass hessian=... too")
        return _quantize(w, fmt, imatrix, threads, None, None)[0]
    return quantize_with_hessian(w, fmt, hessian, imatrix, threads, options)[0]


def quantize_with_hessian(w, fmt: str, hessian, imatrix=None, threads: int | None = None,
                          options: HessianOptions | None = None) -> tuple[QuantizedTensor, HessianResult]:
    """quantize(w, fmt, imatrix, threads, hessian=hessian, options=options) and, per row, the
    output error of the plain quantizer's bytes and of the bytes returned."""
    if options is None:
        options = HessianOptions()
    elif not isinstance(options, HessianOptions):
        raise TypeError(f"options must be an iq1q.HessianOptions, got {type(options).__name__}")
    return _quantize(w, fmt, imatrix, threads, hessian, options)


def _quantize(w, fmt: str, imatrix, threads: int | None, hessian,
              options: HessianOptions | None) -> tuple[QuantizedTensor, HessianResult | None]:
    f = weight_format(fmt)
    x = as_float32(w, "weights", (2,))
    rows, n = check_shape(f, x.shape)
    require_finite(x, "weights")
    if rows and (big := float(np.abs(x).max())) > MAX_WEIGHT:
        raise ValueError(f"weights up to {big:.3g} are beyond what IQ1's fp16 scales can hold "
                         f"(|w| <= {MAX_WEIGHT:.3g}); scale the matrix down first")
    im = None
    if imatrix is not None:
        im = as_float32(imatrix, "imatrix", (1,))
        if im.shape[0] != n:
            raise ValueError(f"imatrix must have one entry per column ({n}), got {im.shape[0]}")
        require_finite(im, "imatrix")
        if (im < 0).any():
            raise ValueError(f"imatrix must be non-negative (first negative at {int(np.argmax(im < 0))})")
    prep = None
    if hessian is not None:  # checked before any work
        prep = prepare_hessian(hessian, n, f, options)
        if im is None:
            im = prep.diag
    out = np.empty(rows * f.row_size(n), dtype=np.uint8)
    _ref.quantize_weights(f.id, x, out, im, num_threads(threads))
    result = None if prep is None else run(x, out, f, prep, options, num_threads(threads))
    t = QuantizedTensor(f, rows, n, out)
    if (bad := _bad_scale_rows(t)).size:  # a block scale past fp16's 65504: not a usable tensor
        raise ValueError(f"weights up to {float(np.abs(x[bad]).max()):.3g} in row {bad[0]} overflow "
                         f"{f.name}'s fp16 scales ({bad.size} row(s)); scale the matrix down first")
    return t, result


def dequantize(t: QuantizedTensor | QuantizedActivations) -> np.ndarray:
    """Float32 values of quantized weights or activations."""
    if not isinstance(t, (QuantizedTensor, QuantizedActivations)):
        raise TypeError(f"expected a QuantizedTensor or QuantizedActivations, got {type(t).__name__}")
    return t.dequantize()
