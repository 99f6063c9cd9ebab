"""Weights and activations decoded from their ggml bytes, and their product.

Everything is whole-array numpy: blocks are reshaped into an axis, so no
Python loop runs over rows or blocks. Field offsets are those of the format
table in iq1q's specification; sizes come from iq1q.format_info.
"""

from __future__ import annotations

import numpy as np

import iq1q

from .grid import grid

WEIGHT_FORMATS = ("iq1_s", "iq1_m", "iq1_s_r4", "iq1_m_r4")
ACTIVATION_FORMATS = ("q8_0", "q8_k128")
DELTA = 0.125  # the shift every weight group adds to its grid values, signed per group


def _blocks(data: np.ndarray, fmt: str, rows: int, K: int) -> np.ndarray:
    """The bytes as (rows, blocks, bytes per block), or for _r4 formats (row groups of 4, bytes
    per group), whose rows are interleaved; ValueError if their count is wrong."""
    f = iq1q.format_info(fmt)
    expected = rows * f.row_size(K)
    if data.dtype != np.uint8 or data.size != expected:
        raise ValueError(f"{fmt}: expected {expected} uint8 bytes for {rows} x {K}, "
                         f"got {data.size} of {data.dtype}")
    if f.rows_per_group > 1:
        return data.reshape(rows // f.rows_per_group, -1)
    return data.reshape(rows, K // f.block_size, f.type_size)


def _field(blocks: np.ndarray, start: int, stop: int, dtype: str) -> np.ndarray:
    """Bytes start:stop of every block read as little-endian `dtype`, as int64 or float64."""
    raw = np.ascontiguousarray(blocks[..., start:stop]).view(dtype)
    return raw.astype(np.float64 if raw.dtype.kind == "f" else np.int64)


def _f16(bits: np.ndarray) -> np.ndarray:
    return bits.astype(np.uint16).view(np.float16).astype(np.float64)


def _expand(scale: np.ndarray, index: np.ndarray, negative: np.ndarray) -> np.ndarray:
    """w = scale * (G[index] + sign * DELTA) per group of 8 weights; arrays (rows, K/8)."""
    shift = np.where(negative, -DELTA, DELTA)
    w = scale[..., None] * (grid()[index] + shift[..., None])
    return w.reshape(index.shape[0], -1)


def _iq1_s(b: np.ndarray):
    # 256 weights: fp16 d, 32 low index bytes (group m = 4 * block + l), 8 qh words per 32
    rows, nb = b.shape[:2]
    d = _field(b, 0, 2, "<f2")  # (rows, nb, 1)
    low = _field(b, 2, 34, "u1")  # (rows, nb, 32)
    qh = _field(b, 34, 50, "<u2")  # (rows, nb, 8)
    high = (qh[..., None] >> np.array([0, 3, 6, 9])) & 7  # (rows, nb, 8, 4)
    index = low | high.reshape(rows, nb, 32) << 8
    scale = np.repeat(d * (2 * ((qh >> 12) & 7) + 1), 4, axis=-1)
    negative = np.repeat(qh >> 15, 4, axis=-1)
    return scale, index, negative


def _iq1_m(b: np.ndarray):
    # 256 weights: 32 low index bytes, 16 bytes of nibbles (3 index bits + sign per group),
    # 4 scale words holding twelve 3-bit sub-block scales and, in their top nibbles, fp16 d
    rows, nb = b.shape[:2]
    low = _field(b, 0, 32, "u1")
    qh = _field(b, 32, 48, "u1")
    nib = np.stack([qh & 15, qh >> 4], axis=-1).reshape(rows, nb, 32)
    sc = _field(b, 48, 56, "<u2")  # (rows, nb, 4)
    d = _f16(((sc >> 12) << np.array([0, 4, 8, 12])).sum(axis=-1))[..., None]
    sub = ((sc[..., None] >> np.array([0, 3, 6, 9])) & 7).reshape(rows, nb, 16)  # per 16 weights
    scale = np.repeat(d * (2 * sub + 1), 2, axis=-1)
    return scale, low | (nib & 7) << 8, nib >> 3


def _r4_groups(groups: np.ndarray, fmt: str, K: int) -> tuple[np.ndarray, np.ndarray]:
    """_r4 row groups -> (fp16 row scales (N/4, 4), blocks (N/4, K/32, bytes per 4-row block))."""
    d = _f16(_field(groups, 0, 8, "<u2"))
    return d, groups[:, 8:].reshape(len(groups), K // 32, 4 * iq1q.format_info(fmt).type_size)


def _interleaved(d: np.ndarray, mult: np.ndarray, index: np.ndarray, negative: np.ndarray):
    """(groups, blocks, group of 8, row) arrays -> per row (N, K/8), scales times row scale."""
    G, nb = index.shape[:2]
    scale = d[:, None, None, :] * mult
    return tuple(a.transpose(0, 3, 1, 2).reshape(4 * G, nb * 4) for a in (scale, index, negative))


def _iq1_s_r4(b: np.ndarray, K: int):
    # per 32 columns of 4 rows: qs[4 i + r] low index bytes, then qh[r] words as in iq1_s
    d, blk = _r4_groups(b, "iq1_s_r4", K)
    low = _field(blk, 0, 16, "u1").reshape(*blk.shape[:2], 4, 4)  # (G, nb, i, r)
    qh = _field(blk, 16, 24, "<u2")[:, :, None, :]  # (G, nb, 1, r)
    high = (qh >> np.array([0, 3, 6, 9])[:, None]) & 7
    mult = np.broadcast_to(2 * ((qh >> 12) & 7) + 1, low.shape)
    return _interleaved(d, mult, low | high << 8, np.broadcast_to(qh >> 15, low.shape))


def _iq1_m_r4(b: np.ndarray, K: int):
    # per 32 columns of 4 rows: qs[4 m + r], qh[4 h + r] (nibble p: group 2 h + p),
    # scales[r] (4-bit multipliers used as is: low nibble groups 0-1, high nibble 2-3)
    d, blk = _r4_groups(b, "iq1_m_r4", K)
    G, nb = blk.shape[:2]
    low = _field(blk, 0, 16, "u1").reshape(G, nb, 4, 4)
    qh = _field(blk, 16, 24, "u1").reshape(G, nb, 2, 1, 4)  # (G, nb, h, 1, r)
    nib = ((qh >> np.array([0, 4])[:, None]) & 15).reshape(G, nb, 4, 4)  # (G, nb, m, r)
    sc = _field(blk, 24, 28, "u1")[:, :, None, :]  # (G, nb, 1, r)
    mult = np.concatenate([sc & 15, sc & 15, sc >> 4, sc >> 4], axis=2)
    return _interleaved(d, mult, low | (nib & 7) << 8, nib >> 3)


def weights(data: np.ndarray, fmt: str, N: int, K: int) -> np.ndarray:
    """float64 (N, K) of a weight tensor's ggml bytes."""
    b = _blocks(data, fmt, N, K)
    if fmt == "iq1_s":
        parts = _iq1_s(b)
    elif fmt == "iq1_m":
        parts = _iq1_m(b)
    elif fmt == "iq1_s_r4":
        parts = _iq1_s_r4(b, K)
    elif fmt == "iq1_m_r4":
        parts = _iq1_m_r4(b, K)
    else:
        raise ValueError(f"iq1q-numpy decodes no weight format {fmt!r}")
    scale, index, negative = (a.reshape(N, K // 8) for a in parts)
    return _expand(scale, index, negative)


# activation format -> (offset of the float scale, its dtype, offset of the int8 quants)
_ACTIVATION_FIELDS = {"q8_0": (0, "<f2", 2), "q8_k128": (0, "<f4", 12)}


def activations(data: np.ndarray, fmt: str, M: int, K: int) -> np.ndarray:
    """float64 (M, K) = d * q per block of an activation tensor's ggml bytes."""
    if fmt not in _ACTIVATION_FIELDS:
        raise ValueError(f"iq1q-numpy decodes no activation format {fmt!r}")
    b = _blocks(data, fmt, M, K)
    at, dtype, q0 = _ACTIVATION_FIELDS[fmt]
    d = _field(b, at, at + np.dtype(dtype).itemsize, dtype)
    q = _field(b, q0, q0 + iq1q.format_info(fmt).block_size, "i1")
    return (d * q).reshape(M, K)


def gemm(weight_fmt: str, act_fmt: str, w: np.ndarray, a: np.ndarray, y: np.ndarray,
         K: int, threads: int) -> None:
    """The kernel contract: y[:] = X @ W.T, y (M, N) float32. threads is ignored (numpy's
    BLAS picks its own); the float64 product is rounded to float32 once, on the store."""
    M, N = y.shape
    y[...] = activations(a, act_fmt, M, K) @ weights(w, weight_fmt, N, K).T
