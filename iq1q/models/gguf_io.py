"""GGUF files in and out, through the `gguf` package (the extra `iq1q[gguf]`).

    f = iq1q.gguf_io.read("model.gguf")
    f.metadata["general.architecture"]     # typed values (numpy scalars keep GGUF's int widths)
    f.tensors["blk.0.attn_q.weight"]       # QuantizedTensor over the memory-mapped file, or ndarray
    f.raw["token_embd.weight"]             # RawTensor: type id, shape and the bytes, any type
    iq1q.gguf_io.write("out.gguf", {"w": qt, "norm": np.ones(64, np.float32)}, f.metadata)

The `gguf` package parses and writes every header, key/value and tensor-info
byte. What it lacks are ik_llama.cpp's row-interleaved types IQ1_S_R4 (219) and
IQ1_M_R4 (229): its GGMLQuantizationType rejects their ids, so its reader fails
on any file that holds one. `_Reader` below is the one place that handles them.
"""

from __future__ import annotations

import errno
import math
import os
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np

try:
    import gguf
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter
    from gguf.gguf_reader import ReaderTensor
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("iq1q.gguf_io needs the gguf package: pip install 'iq1q[gguf]'") from e

from .. import _ref
from ..formats import WEIGHT_FORMATS, Format, format_info
from ..tensors import QuantizedTensor

# ggml type id -> iq1q weight format (19, 29 and ik_llama.cpp's 219, 229; ids from formats.py)
IQ1_TYPES: dict[int, Format] = {format_info(n).ggml_type: format_info(n) for n in WEIGHT_FORMATS}
_GGUF_TYPE_IDS = frozenset(int(t) for t in GGMLQuantizationType)
# types the gguf package cannot name: sized here (docs/spec.md §4.10), everything else by GGML_QUANT_SIZES
_OWN_TYPES = {t: f for t, f in IQ1_TYPES.items() if t not in _GGUF_TYPE_IDS}

# general.file_type (llama_ftype) of a model whose block weights are of one IQ1 format;
# the _r4 values are ik_llama.cpp's (docs/spec.md §2), which the gguf package does not list
FILE_TYPES: dict[str, int] = {
    "iq1_s": int(gguf.LlamaFileType.MOSTLY_IQ1_S),
    "iq1_m": int(gguf.LlamaFileType.MOSTLY_IQ1_M),
    "iq1_s_r4": 224,
    "iq1_m_r4": 231,
}

# types whose values numpy holds as they are stored (a view, no conversion)
_NUMPY_TYPES: dict[int, np.dtype] = {
    int(GGMLQuantizationType.F32): np.dtype("<f4"),
    int(GGMLQuantizationType.F16): np.dtype("<f2"),
    int(GGMLQuantizationType.F64): np.dtype("<f8"),
    int(GGMLQuantizationType.I8): np.dtype("i1"),
    int(GGMLQuantizationType.I16): np.dtype("<i2"),
    int(GGMLQuantizationType.I32): np.dtype("<i4"),
    int(GGMLQuantizationType.I64): np.dtype("<i8"),
}
_TYPE_OF_DTYPE = {dt: t for t, dt in _NUMPY_TYPES.items()}

MAX_NAME_BYTES = 63  # ggml's GGML_MAX_NAME (64) includes the terminating NUL


def _decode_strings(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> list:
    """The strings at data[starts[i]:starts[i] + lengths[i]] as str, or as bytes where one is
    not UTF-8 (kept, and written back the same). A GGUF array holds each string's bytes right
    after its 8-byte length: the last byte of each length becomes a NUL, the other 7 are
    dropped, and the blob is decoded once and split at the NULs (a vocabulary of 262k: 0.1 s
    one by one, 0.02-0.04 s so); one by one where a string holds a NUL or the blob is not
    UTF-8 (a string that is not, or that starts inside a character)."""
    count = len(starts)
    if count == 0:
        return []
    lo, hi = int(starts[0]) - 8, int(starts[-1] + lengths[-1])
    if lo >= 0 and (starts[1:] == starts[:-1] + lengths[:-1] + 8).all():
        blob, at = data[lo:hi].copy(), starts - lo
        blob[at - 1] = 0
        keep = np.ones(blob.size, bool)
        keep[(at - 8)[:, None] + np.arange(7)] = False
        keep[at[0] - 1] = False  # nothing before the first string
        blob = blob[keep]
        if np.count_nonzero(blob) == blob.size - (count - 1):  # no NUL inside a string
            try:
                return blob.tobytes().decode("utf-8").split("\0")
            except UnicodeDecodeError:
                pass

    def one(b: bytes) -> str | bytes:
        try:
            return b.decode("utf-8")
        except UnicodeDecodeError:
            return b
    return [one(data[a:a + n].tobytes()) for a, n in zip(starts.tolist(), lengths.tolist())]


class GGUFError(ValueError):
    """A file that is not valid GGUF, or data that cannot be written as GGUF."""


def type_name(ggml_type: int) -> str:
    """'Q4_K', 'IQ1_S_R4', ... for a ggml type id."""
    if ggml_type in _OWN_TYPES:
        return _OWN_TYPES[ggml_type].name.upper()
    try:
        return GGMLQuantizationType(ggml_type).name
    except ValueError:
        return f"type {ggml_type}"


def tensor_nbytes(ggml_type: int, shape: Sequence[int]) -> int:
    """Bytes of a tensor of numpy shape (..., K): rows x row size (ggml_nbytes)."""
    shape = tuple(int(s) for s in shape)
    k, rows = (shape[-1], math.prod(shape[:-1])) if shape else (1, 1)
    if ggml_type in IQ1_TYPES:
        return rows * IQ1_TYPES[ggml_type].row_size(k)
    if ggml_type not in _GGUF_TYPE_IDS:
        raise GGUFError(f"unknown ggml type {ggml_type}: neither the gguf package nor iq1q knows it")
    block, size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
    if k % block:
        raise GGUFError(f"row length {k} is not a multiple of {type_name(ggml_type)}'s block of {block}")
    return rows * (k // block) * size


class _Reader(GGUFReader):
    """gguf's GGUFReader, taught the two R4 types.

    The package parses everything up to the tensor infos; its _build_tensors then
    calls GGMLQuantizationType(id), which raises for 219 / 229. This override hands
    the package the tensors it knows and builds the R4 ones itself, with their true
    size rows x (2 + 6K/32) or rows x (2 + 7K/32) (gguf-py's sizes omit the 2-byte row
    scale). It also checks every tensor's bytes lie inside the file, so that a
    truncated file fails here with a clear message rather than in a reshape.

    The reader slices its np.memmap once or twice per metadata array item (~10^6 times
    for a 262k-token vocabulary); np.memmap's Python-level __getitem__ and
    __array_finalize__ make that 3-4x slower than on a plain ndarray view of the same
    mapping, which is what `data` holds here (the view keeps the mapping alive).

    Arrays are the other cost: the package parses them item by item through its generic
    recursion, into two numpy views per string (~20 us and ~200 bytes an item: 6 s and
    230 MB for Gemma 3's 262k-token vocabulary). `_get_field_parts` below reads arrays of
    scalars as one view and arrays of strings as one object array of bytes: one part per
    array, so such a field's `data` is [its index], and `contents()` is the package's only
    for scalar arrays (_field_value below reads both).
    """

    @property
    def data(self) -> np.ndarray:
        return self._mapped

    @data.setter
    def data(self, mm: np.memmap) -> None:
        self._mapped = mm.view(np.ndarray)

    def _get_field_parts(self, orig_offs: int, raw_type: int) -> tuple[int, list, list[int], list]:
        if raw_type != GGUFValueType.ARRAY or self.byte_order != "I":
            return super()._get_field_parts(orig_offs, raw_type)
        item_type, n = self._get(orig_offs, np.uint32), self._get(orig_offs + 4, np.uint64)
        if item_type.size < 1 or n.size < 1:
            raise ValueError(f"array header at offset {orig_offs} ends past the end of the file")
        sub, count, offs = GGUFValueType(int(item_type[0])), int(n[0]), orig_offs + 12
        scalar = self.gguf_scalar_to_np.get(sub)
        if scalar is not None:
            values = self._get(offs, scalar, count)
            if values.size != count:
                raise ValueError(f"array of {count} items at offset {offs} ends past the end of the file")
            offs += values.nbytes
        elif sub == GGUFValueType.STRING:  # per item a uint64 length, then the bytes
            starts, lengths = np.empty(count, np.int64), np.empty(count, np.int64)
            offs = _ref.gguf_string_spans(self.data, offs, count, starts, lengths)
            values = np.empty(count, dtype=object)
            values[:] = _decode_strings(self.data, starts, lengths)
        else:  # arrays of arrays: the package's general path
            return super()._get_field_parts(orig_offs, raw_type)
        # the package names the item type from the first item, so an empty array has none
        return offs - orig_offs, [item_type, n, values], [2], [GGUFValueType.ARRAY] + [sub] * (count > 0)

    def _build_tensors(self, start_offs: int, fields: list) -> None:
        known, own, names = [], {}, set()
        for i, field in enumerate(fields):
            _, name_data, _, dims, raw_type, offset = field.parts
            name = bytes(name_data).decode("utf-8")
            if name in names:
                raise GGUFError(f"duplicate tensor name {name!r}")
            names.add(name)
            ggml_type = int(raw_type[0])
            shape = tuple(reversed([int(d) for d in dims]))
            try:
                nbytes = tensor_nbytes(ggml_type, shape)
            except ValueError as e:
                raise GGUFError(f"tensor {name!r}: {e}") from None
            start = start_offs + int(offset[0])
            if start + nbytes > self.data.size:
                raise GGUFError(f"tensor {name!r} ({type_name(ggml_type)}, {nbytes} bytes at offset {start}) "
                                f"ends past the end of the file ({self.data.size} bytes): truncated?")
            if ggml_type in _OWN_TYPES:
                own[i] = ReaderTensor(name=name, tensor_type=ggml_type, shape=dims,
                                      n_elements=math.prod(shape), n_bytes=nbytes, data_offset=start,
                                      data=self.data[start:start + nbytes], field=field)
            else:
                known.append(field)
        super()._build_tensors(start_offs, known)
        if own:  # put the R4 tensors back in file order
            it = iter(self.tensors)
            self.tensors = [own[i] if i in own else next(it) for i in range(len(fields))]


@dataclass(frozen=True)
class RawTensor:
    """A tensor's stored bytes: ggml type id, numpy shape (..., K) and data (uint8).

    `offset` is the data's absolute position in the file it came from (None otherwise)."""

    ggml_type: int
    shape: tuple[int, ...]
    data: np.ndarray
    offset: int | None = None

    def __post_init__(self) -> None:
        want = tensor_nbytes(self.ggml_type, self.shape)
        if self.data.dtype != np.uint8 or self.data.ndim != 1 or self.data.size != want:
            raise GGUFError(f"{type_name(self.ggml_type)} data of shape {self.shape} must be a 1-D uint8 "
                            f"array of {want} bytes, got {self.data.dtype} {self.data.shape}")

    @property
    def type_name(self) -> str:
        return type_name(self.ggml_type)

    @property
    def nbytes(self) -> int:
        return self.data.size

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)

    @property
    def row_bytes(self) -> int:
        return tensor_nbytes(self.ggml_type, self.shape[-1:])


def _quantized(name: str, raw: RawTensor) -> QuantizedTensor | tuple[QuantizedTensor, ...]:
    """IQ1 bytes as QuantizedTensor views of the mapped file: one per matrix (a tuple for 3-D experts)."""
    fmt = IQ1_TYPES[raw.ggml_type]
    shape = raw.shape if len(raw.shape) > 1 else (1,) + raw.shape
    if len(shape) > 3:
        raise GGUFError(f"tensor {name!r}: {fmt.name} tensors of {len(shape)} dimensions are not supported")
    rows, k = shape[-2], shape[-1]
    if rows % fmt.rows_per_group:
        raise GGUFError(f"tensor {name!r}: {fmt.name} needs a multiple of {fmt.rows_per_group} rows, "
                        f"has {rows}")
    mats = raw.data.reshape(-1, rows * fmt.row_size(k))
    # the constructor wraps the bytes as they are: from_bytes would copy them
    qts = tuple(QuantizedTensor(fmt, rows, k, m) for m in mats)
    return qts if len(shape) == 3 else qts[0]


def to_array(raw: RawTensor) -> np.ndarray:
    """Values of a non-IQ1 tensor in its numpy shape: a view for F32/F16/F64/I*, else
    float32 dequantized by the gguf package (BF16, Q8_0, Q4_K, ...)."""
    dt = _NUMPY_TYPES.get(raw.ggml_type)
    if dt is not None:
        return raw.data.view(dt).reshape(raw.shape)
    if raw.ggml_type not in _GGUF_TYPE_IDS:
        raise GGUFError(f"cannot convert {raw.type_name} to an array")
    rows = raw.data.reshape(-1, raw.row_bytes)
    try:
        out = gguf.quants.dequantize(rows, GGMLQuantizationType(raw.ggml_type))
    except NotImplementedError:
        raise GGUFError(f"the gguf package cannot dequantize {raw.type_name}") from None
    return out.reshape(raw.shape)


_DEQUANTIZABLE: set[int] | None = None


def convertible(ggml_type: int) -> bool:
    """Whether values of this type can be had as floats: IQ1 (iq1q), numpy's own types,
    or a type the gguf package dequantizes (it raises NotImplementedError for the rest)."""
    global _DEQUANTIZABLE
    if ggml_type in IQ1_TYPES or ggml_type in _NUMPY_TYPES:
        return True
    if _DEQUANTIZABLE is None:
        found = set()
        for t in GGMLQuantizationType:
            try:
                gguf.quants.dequantize(np.zeros((1, GGML_QUANT_SIZES[t][1]), np.uint8), t)
                found.add(int(t))
            except (NotImplementedError, ValueError):
                pass
        _DEQUANTIZABLE = found
    return ggml_type in _DEQUANTIZABLE


class TensorMap(Mapping):
    """Read-only name -> QuantizedTensor (IQ1 types; a tuple of them for 3-D experts)
    or ndarray (other types), built on access from the raw tensors."""

    def __init__(self, raw: Mapping[str, RawTensor]):
        self._raw = raw

    def __getitem__(self, name: str) -> QuantizedTensor | tuple[QuantizedTensor, ...] | np.ndarray:
        raw = self._raw[name]
        return _quantized(name, raw) if raw.ggml_type in IQ1_TYPES else to_array(raw)

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)

    def __repr__(self) -> str:
        return f"<{len(self)} tensors: {', '.join(list(self)[:4])}{', ...' if len(self) > 4 else ''}>"


class _ReadOnly(Mapping):
    def __init__(self, d: dict):
        self._d = d

    def __getitem__(self, k):
        return self._d[k]

    def __iter__(self):
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)


def _field_value(key: str, field) -> Any:
    """A metadata value: str, bool, a numpy scalar of the stored type, a list of str, or a
    1-D numpy array; the type of an empty array is kept in its dtype (or [] for strings)."""
    types = field.types
    main = types[0]

    def text(part) -> str | bytes:
        b = part if isinstance(part, bytes) else bytes(part)
        try:
            return b.decode("utf-8")
        except UnicodeDecodeError:
            return b  # kept as bytes, written back the same

    if main == GGUFValueType.ARRAY:
        sub = GGUFValueType(int(field.parts[3][0]))  # the item type, also known for empty arrays
        if sub == GGUFValueType.ARRAY:
            raise GGUFError(f"metadata {key!r} is an array of arrays, which iq1q.gguf_io does not support")
        values = field.parts[field.data[0]]  # the whole array: _Reader's one part
        if sub == GGUFValueType.STRING:  # the reader's own decoding (str, or bytes if not UTF-8)
            return [text(b) for b in values] if values.dtype != object else values.tolist()
        return np.array(values, dtype=GGUFReader.gguf_scalar_to_np[sub])  # a copy: the file may close
    if main == GGUFValueType.STRING:
        return text(field.parts[-1])
    value = field.parts[-1][0]  # a numpy scalar of the stored type
    return bool(value) if main == GGUFValueType.BOOL else value


class GGUFFile:
    """A GGUF file, memory-mapped read-only: .metadata, .tensors, .raw.

    Tensor data stays in the file: values hold views of the mapping, which lives
    as long as any of them does."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            reader = _Reader(self.path, "r")
        except GGUFError as e:
            raise GGUFError(f"{self.path}: {e}") from None
        except (ValueError, IndexError, KeyError, OverflowError, TypeError) as e:
            # gguf's reader meets a short or garbled file as a failed view or lookup
            what = "duplicate key" if isinstance(e, KeyError) else "truncated or corrupt"
            raise GGUFError(f"{self.path}: not a valid GGUF file ({what}: {e})") from None
        if reader.byte_order != "I":
            raise GGUFError(f"{self.path}: byte order differs from this machine's; not supported")
        self.alignment: int = int(reader.alignment)
        self.data_offset: int = int(reader.data_offset)
        meta = {}
        for key, field in reader.fields.items():
            if key.startswith("GGUF."):  # version and counts: the reader's, not key/values
                continue
            meta[key] = _field_value(key, field)
        self.metadata: dict[str, Any] = meta
        raw = {}
        for t in reader.tensors:
            shape = tuple(reversed([int(d) for d in t.shape]))
            data = t.data.reshape(-1).view(np.uint8)
            raw[t.name] = RawTensor(int(t.tensor_type), shape, data, int(t.data_offset))
        self.raw: Mapping[str, RawTensor] = _ReadOnly(raw)
        self.tensors = TensorMap(self.raw)

    def __repr__(self) -> str:
        return f"GGUFFile({str(self.path)!r}, {len(self.metadata)} keys, {len(self.raw)} tensors)"


def read(path: str | os.PathLike) -> GGUFFile:
    """Open a GGUF file: metadata read, tensor data memory-mapped (IQ1 tensors are not copied)."""
    return GGUFFile(path)


# ---------------------------------------------------------------------------
# writing

_NUMPY_VALUE_TYPES = {
    np.dtype(np.uint8): GGUFValueType.UINT8, np.dtype(np.int8): GGUFValueType.INT8,
    np.dtype(np.uint16): GGUFValueType.UINT16, np.dtype(np.int16): GGUFValueType.INT16,
    np.dtype(np.uint32): GGUFValueType.UINT32, np.dtype(np.int32): GGUFValueType.INT32,
    np.dtype(np.uint64): GGUFValueType.UINT64, np.dtype(np.int64): GGUFValueType.INT64,
    np.dtype(np.float32): GGUFValueType.FLOAT32, np.dtype(np.float64): GGUFValueType.FLOAT64,
    np.dtype(np.bool_): GGUFValueType.BOOL,
}


def _python_type(key: str, v: Any) -> GGUFValueType:
    if isinstance(v, (bool, np.bool_)):
        return GGUFValueType.BOOL
    if isinstance(v, np.generic):
        t = _NUMPY_VALUE_TYPES.get(v.dtype.newbyteorder("="))
        if t is None:
            raise GGUFError(f"metadata {key!r}: numpy type {v.dtype} has no GGUF value type")
        return t
    if isinstance(v, int):
        if -2**31 <= v < 2**31:
            return GGUFValueType.INT32
        return GGUFValueType.INT64 if -2**63 <= v < 2**63 else GGUFValueType.UINT64
    if isinstance(v, float):
        return GGUFValueType.FLOAT32  # gguf's own choice for Python floats
    if isinstance(v, (str, bytes)):
        return GGUFValueType.STRING
    raise GGUFError(f"metadata {key!r}: cannot store a {type(v).__name__} in GGUF")


def _typed_value(key: str, v: Any) -> tuple[Any, GGUFValueType, GGUFValueType | None]:
    """(value, type, item type) for GGUFWriter.add_key_value; numpy values keep their width."""
    if isinstance(v, np.ndarray):
        if v.ndim != 1:
            raise GGUFError(f"metadata {key!r}: arrays must be 1-D, got shape {v.shape}")
        sub = _NUMPY_VALUE_TYPES.get(v.dtype.newbyteorder("="))
        if sub is None:
            raise GGUFError(f"metadata {key!r}: numpy type {v.dtype} has no GGUF value type")
        return v.tolist(), GGUFValueType.ARRAY, sub
    if isinstance(v, (list, tuple)):
        subs = {_python_type(key, x) for x in v}
        if subs == {GGUFValueType.INT32, GGUFValueType.INT64}:
            subs = {GGUFValueType.INT64}
        if len(subs) > 1:
            raise GGUFError(f"metadata {key!r}: array items must share one type, got {sorted(s.name for s in subs)}")
        return list(v), GGUFValueType.ARRAY, subs.pop() if subs else None
    t = _python_type(key, v)
    return (v.item() if isinstance(v, np.generic) else v), t, None


class _Writer(GGUFWriter):
    """gguf's GGUFWriter with its array packing vectorised: the package packs arrays
    item by item through struct (3 s for Gemma 3's vocabulary); this packs the same
    bytes (little-endian, the writer's default) in one numpy or join call."""

    _ITEM_DTYPES = {t: np.dtype(dt).newbyteorder("<") for t, dt in GGUFReader.gguf_scalar_to_np.items()}

    def _pack_val(self, val: Any, vtype: GGUFValueType, add_vtype: bool,
                  sub_type: GGUFValueType | None = None) -> bytes:
        if (vtype != GGUFValueType.ARRAY or sub_type is None or not val or isinstance(val, (str, bytes))
                or self.endianess != gguf.GGUFEndian.LITTLE):
            return super()._pack_val(val, vtype, add_vtype, sub_type)
        if sub_type == GGUFValueType.STRING:
            encoded = [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in val]
            items = b"".join(len(e).to_bytes(8, "little") + e for e in encoded)
        elif sub_type in self._ITEM_DTYPES:
            a = np.asarray(val)
            with np.errstate(over="ignore", invalid="ignore"):
                out = a.astype(self._ITEM_DTYPES[sub_type])
            # struct refuses what does not fit (out of range, floats for ints); so does the package
            exact = a.dtype.kind in "iub" and np.array_equal(out, a)
            rounded = a.dtype.kind in "iuf" and out.dtype.kind == "f" and np.isfinite(out).sum() == np.isfinite(a).sum()
            if not (exact or rounded):
                return super()._pack_val(val, vtype, add_vtype, sub_type)
            items = out.tobytes()
        else:
            return super()._pack_val(val, vtype, add_vtype, sub_type)
        head = (self._pack("I", vtype) if add_vtype else b"") + self._pack("I", sub_type) + self._pack("Q", len(val))
        return head + items


@dataclass(frozen=True)
class TensorSpec:
    """What a tensor's info in the file says: name, ggml type id, numpy shape, bytes."""

    name: str
    ggml_type: int
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return tensor_nbytes(self.ggml_type, self.shape)


class Writer:
    """Writes a GGUF file whose tensor infos are known up front and whose tensor data
    then arrives piece by piece, in order, so no tensor need be held whole.

    Everything goes to a temporary file in the target folder, renamed to `path` by
    close(): an interrupted or failed run never leaves a partial file under that name.
    Use as a context manager; an exception inside the block removes the temporary file.
    """

    def __init__(self, path: str | os.PathLike, specs: Sequence[TensorSpec],
                 metadata: Mapping[str, Any] | None = None):
        self.path = Path(path)
        self._specs = list(specs)
        self._sizes = [s.nbytes for s in self._specs]
        names = [s.name for s in self._specs]
        if len(set(names)) != len(names):
            raise GGUFError(f"duplicate tensor names: {sorted({n for n in names if names.count(n) > 1})}")
        for n in names:
            if len(n.encode("utf-8")) > MAX_NAME_BYTES:
                raise GGUFError(f"tensor name {n!r} is longer than ggml's {MAX_NAME_BYTES} bytes")
        metadata = dict(metadata or {})
        typed = {k: _typed_value(k, v) for k, v in metadata.items()}
        for k, (v, t, sub) in typed.items():
            if t == GGUFValueType.ARRAY and not v:
                warnings.warn(f"metadata {k!r} is an empty array, which the gguf package cannot write; "
                              "left out", stacklevel=2)

        if self.path.is_dir():
            raise IsADirectoryError(errno.EISDIR, f"cannot write {self.path}: Is a directory")
        try:
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".part")
        except OSError as e:
            raise OSError(e.errno, f"cannot write {self.path}: {e.strerror}") from None
        os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it 0600; give it a new file's usual mode
        self._tmp: Path | None = Path(tmp)
        try:
            arch = metadata.get("general.architecture", "")
            w = _Writer(self._tmp, arch if isinstance(arch, str) else "")
            for k, (v, t, sub) in typed.items():
                if k == "general.architecture" and isinstance(arch, str):
                    continue  # GGUFWriter added it
                if k == "general.alignment":  # also sets the writer's padding; always uint32
                    w.add_custom_alignment(int(v))
                elif not (t == GGUFValueType.ARRAY and not v):
                    w.add_key_value(k, v, t, sub)
            for s, n in zip(self._specs, self._sizes):
                known = s.ggml_type in _GGUF_TYPE_IDS
                # element shape and an int8 dtype: gguf would reinterpret a uint8 dtype's shape
                # as bytes, with sizes it has wrong for the R4 types
                w.add_tensor_info(s.name, s.shape, np.dtype(np.int8), n,
                                  raw_dtype=GGMLQuantizationType(s.ggml_type) if known else s.ggml_type)
            w.write_header_to_file()
            w.write_kv_data_to_file()
            w.write_ti_data_to_file()
        except BaseException:
            self.abort()
            raise
        self._w = w
        self._fout = w.fout[0]
        self._index = 0  # tensor being written
        self._done = 0  # its bytes written so far
        self._skip_empty()

    @property
    def specs(self) -> list[TensorSpec]:
        return list(self._specs)

    def _skip_empty(self) -> None:
        while self._index < len(self._specs) and self._sizes[self._index] == 0:
            self._index += 1

    def write(self, chunk) -> None:
        """Append bytes of the current tensor (a bytes-like or array); moves on when it is complete.

        gguf's GGUFWriter.write_tensor_data takes a whole tensor in one array; writing it
        in pieces is only the padding (the package's write_padding) and the bytes."""
        data = np.ascontiguousarray(chunk).reshape(-1).view(np.uint8) if isinstance(chunk, np.ndarray) \
            else np.frombuffer(chunk, dtype=np.uint8)
        while data.size:
            if self._index >= len(self._specs):
                raise GGUFError(f"{data.size} bytes more than the tensors' infos announce")
            want = self._sizes[self._index]
            if self._done == 0:  # each tensor starts aligned (the package's infos assume it)
                self._w.write_padding(self._fout, self._fout.tell())
            take = min(data.size, want - self._done)
            data[:take].tofile(self._fout)
            data = data[take:]
            self._done += take
            if self._done == want:
                self._w.write_padding(self._fout, want)
                self._index, self._done = self._index + 1, 0
                self._skip_empty()

    def close(self) -> None:
        """Check every tensor was written, then rename the temporary file to the target."""
        if self._tmp is None:
            return
        if self._index < len(self._specs):
            s = self._specs[self._index]
            self.abort()
            raise GGUFError(f"tensor {s.name!r} is incomplete ({self._done} of {s.nbytes} bytes written)")
        try:
            self._fout.flush()
            os.fsync(self._fout.fileno())
            self._w.close()
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self._tmp = None

    def abort(self) -> None:
        """Drop the temporary file; the target is left as it was."""
        w = getattr(self, "_w", None)
        if w is not None:
            w.close()
        if self._tmp is not None:
            try:
                self._tmp.unlink()
            except FileNotFoundError:
                pass
            self._tmp = None

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


TensorValue = Union[QuantizedTensor, Sequence[QuantizedTensor], np.ndarray, RawTensor]


def _spec_and_chunks(name: str, v: TensorValue) -> tuple[TensorSpec, list]:
    if isinstance(v, QuantizedTensor):
        return TensorSpec(name, format_info(v.format).ggml_type, v.shape), [v.data]
    if isinstance(v, RawTensor):
        return TensorSpec(name, v.ggml_type, v.shape), [v.data]
    if isinstance(v, (list, tuple)) and v and all(isinstance(q, QuantizedTensor) for q in v):
        if len({(q.format, q.shape) for q in v}) != 1:
            raise GGUFError(f"tensor {name!r}: expert matrices must share one format and shape")
        return TensorSpec(name, format_info(v[0].format).ggml_type, (len(v),) + v[0].shape), [q.data for q in v]
    if isinstance(v, np.ndarray):
        t = _TYPE_OF_DTYPE.get(v.dtype)
        if t is None:
            raise GGUFError(f"tensor {name!r}: dtype {v.dtype} has no ggml type "
                            "(float16/32/64, int8/16/32/64; others as a RawTensor)")
        if v.ndim == 0:
            v = v.reshape(1)
        return TensorSpec(name, t, v.shape), [np.ascontiguousarray(v, dtype=_NUMPY_TYPES[t])]
    raise GGUFError(f"tensor {name!r}: cannot write a {type(v).__name__}")


def write(path: str | os.PathLike, tensors: Mapping[str, TensorValue],
          metadata: Mapping[str, Any] | None = None) -> None:
    """Write a GGUF file: QuantizedTensors as types 19, 29, 219, 229 (a sequence of them as
    a 3-D expert tensor), float/int arrays as F16/F32/F64/I*, RawTensors byte for byte.

    metadata: key -> value; numpy scalars and arrays keep their type, Python ints are
    stored as int32 (int64 when larger), floats as float32. `general.alignment` sets
    the data alignment (default 32)."""
    items: list[tuple[TensorSpec, list]] = [_spec_and_chunks(n, v) for n, v in tensors.items()]
    with Writer(path, [s for s, _ in items], metadata) as w:
        for _, chunks in items:
            for c in chunks:
                w.write(c)

