"""An independent float64 evaluation of the iq1q formats, written from docs/spec.md.

Pure numpy (plus the ``gguf`` package for the grid, docs/spec.md §3.2). Nothing here
imports iq1q or mirrors its C code: weights are dequantized per docs/spec.md §6,
activations are d * q per docs/spec.md §4.1-4.4, and the product is an ordinary
float64 matrix product. The one exception is iq1_s_r4 x q8_1, which is
evaluated with the stored fp16 ``s`` as in docs/spec.md §7.4 (the historical kernel).

Also: helpers that produce random *valid* bytes for every format.
"""

from __future__ import annotations

import numpy as np

WEIGHT_FORMATS = ("iq1_s", "iq1_m", "iq1_s_r4", "iq1_m_r4")
ACTIVATION_FORMATS = ("q8_0", "q8_1", "q8_k", "q8_k128")

# docs/spec.md §4.9: (block size, bytes per block, row meta bytes, rows per group)
LAYOUT = {
    "iq1_s": (256, 50, 0, 1),
    "iq1_m": (256, 56, 0, 1),
    "iq1_s_r4": (32, 6, 2, 4),
    "iq1_m_r4": (32, 7, 2, 4),
    "q8_0": (32, 34, 0, 1),
    "q8_1": (32, 36, 0, 1),
    "q8_k": (256, 296, 0, 1),
    "q8_k128": (128, 140, 0, 1),
}

DELTA = 0.125


def block_size(fmt: str) -> int:
    return LAYOUT[fmt][0]


def row_size(fmt: str, n: int) -> int:
    blk, size, meta, _ = LAYOUT[fmt]
    assert n % blk == 0, (fmt, n)
    return meta + size * (n // blk)


def min_k(wfmt: str, afmt: str) -> int:
    """The smallest K a (weight, activation) pair accepts: the larger block."""
    return max(block_size(wfmt), block_size(afmt))


# ---------------------------------------------------------------------------
# the grid (docs/spec.md §3.2)

_GRID = None


def grid() -> np.ndarray:
    """(2048, 8) int8 grid values in {-1, 0, 1}, decoded from gguf's IQ1_S.grid_hex."""
    global _GRID
    if _GRID is None:
        from gguf.quants import IQ1_S

        hx = IQ1_S.grid_hex
        if isinstance(hx, bytes):
            hx = hx.decode("ascii")
        codes = np.frombuffer(bytes.fromhex(hx), dtype="<u2").astype(np.int64)
        assert codes.shape == (2048,)
        grid_map = np.array([-1, 0, 1], dtype=np.int8)
        levels = (codes[:, None] >> (2 * np.arange(8))) & 3
        g = grid_map[levels]
        assert not g[1029].any()
        _GRID = g
    return _GRID


# ---------------------------------------------------------------------------
# small byte helpers

def _as_u8(data) -> np.ndarray:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return np.frombuffer(bytes(data), dtype=np.uint8)
    return np.ascontiguousarray(data).view(np.uint8).reshape(-1)


def _u16(b: np.ndarray) -> np.ndarray:
    """uint8 (..., 2k) -> little-endian uint16 (..., k) as int64."""
    b = b.astype(np.int64)
    return b[..., 0::2] | (b[..., 1::2] << 8)


def _f16(bits) -> np.ndarray:
    return np.asarray(bits, dtype=np.uint16).view(np.float16).astype(np.float64)


def _f32(b: np.ndarray) -> np.ndarray:
    """uint8 (..., 4) -> float64 of the little-endian float32."""
    return np.ascontiguousarray(b).view("<f4")[..., 0].astype(np.float64)


# ---------------------------------------------------------------------------
# weights (docs/spec.md §4.5-4.8, §6)

def _weight_parts(data, fmt: str, shape):
    """Decode to (scale (N, K/32) or per 8, multiplier (N, K/8), grid idx (N, K/8), sign (N, K/8)).

    Returns d per group of 8 (float64), integer multiplier per group of 8,
    grid index per group of 8, delta sign (+1/-1) per group of 8.
    """
    N, K = shape
    b = _as_u8(data)
    rs = row_size(fmt, K)
    assert b.size == N * rs, (b.size, N, rs)
    if fmt in ("iq1_s", "iq1_m"):
        nb = K // 256
        blk = b.reshape(N, nb, -1)
        if fmt == "iq1_s":
            d = _f16(_u16(blk[:, :, 0:2])[..., 0])  # (N, nb)
            qs = blk[:, :, 2:34].astype(np.int64).reshape(N, nb, 8, 4)  # [b][l]
            qh = _u16(blk[:, :, 34:50])  # (N, nb, 8)
            hi = (qh[..., None] >> (3 * np.arange(4))) & 7  # (N, nb, 8, 4)
            idx = qs | (hi << 8)
            mult = 2 * ((qh >> 12) & 7) + 1  # (N, nb, 8)
            sign = np.where(qh & 0x8000, -1, 1)
            mult = np.repeat(mult[..., None], 4, axis=-1)
            sign = np.repeat(sign[..., None], 4, axis=-1)
            d8 = np.broadcast_to(d[:, :, None, None], idx.shape)
        else:
            qs = blk[:, :, 0:32].astype(np.int64)  # (N, nb, 32) group m
            qh = blk[:, :, 32:48].astype(np.int64)  # (N, nb, 16)
            sc = _u16(blk[:, :, 48:56])  # (N, nb, 4)
            dbits = (sc[..., 0] >> 12) | ((sc[..., 1] >> 12) << 4) | ((sc[..., 2] >> 12) << 8) | (
                (sc[..., 3] >> 12) << 12)
            d = _f16(dbits.astype(np.uint16))  # (N, nb)
            m = np.arange(32)
            nib = (qh[..., m // 2] >> (4 * (m % 2))) & 15
            idx = qs | ((nib & 7) << 8)
            sign = np.where(nib & 8, -1, 1)
            s = m // 2
            l = (sc[..., s // 4] >> (3 * (s % 4))) & 7
            mult = 2 * l + 1
            d8 = np.broadcast_to(d[:, :, None], idx.shape)
        return (d8.reshape(N, K // 8), mult.reshape(N, K // 8), idx.reshape(N, K // 8),
                sign.reshape(N, K // 8))
    # _r4: groups of 4 rows
    assert N % 4 == 0
    G, nb = N // 4, K // 32
    grp = b.reshape(G, 4 * rs)
    d = _f16(_u16(grp[:, 0:8]))  # (G, 4)
    bsz = 24 if fmt == "iq1_s_r4" else 28
    blk = grp[:, 8:].reshape(G, nb, bsz)
    qs = blk[:, :, 0:16].astype(np.int64).reshape(G, nb, 4, 4)  # [i][r]
    qs = qs.transpose(0, 3, 1, 2)  # (G, r, nb, i)
    if fmt == "iq1_s_r4":
        qh = _u16(blk[:, :, 16:24]).transpose(0, 2, 1)  # (G, r, nb)
        hi = (qh[..., None] >> (3 * np.arange(4))) & 7
        idx = qs | (hi << 8)
        mult = np.repeat((2 * ((qh >> 12) & 7) + 1)[..., None], 4, axis=-1)
        sign = np.repeat(np.where(qh & 0x8000, -1, 1)[..., None], 4, axis=-1)
    else:
        qh = blk[:, :, 16:24].astype(np.int64).reshape(G, nb, 2, 4).transpose(0, 3, 1, 2)  # (G, r, nb, h)
        nib = np.stack([qh[..., m // 2] >> (4 * (m % 2)) & 15 for m in range(4)], axis=-1)
        idx = qs | ((nib & 7) << 8)
        sign = np.where(nib & 8, -1, 1)
        sc = blk[:, :, 24:28].astype(np.int64).transpose(0, 2, 1)  # (G, r, nb)
        mult = np.stack([sc & 15, sc & 15, sc >> 4, sc >> 4], axis=-1)
    d8 = np.broadcast_to(d[:, :, None, None], idx.shape)
    return (d8.reshape(N, K // 8), mult.reshape(N, K // 8), idx.reshape(N, K // 8),
            sign.reshape(N, K // 8))


def dequantize_weights(data, fmt: str, shape) -> np.ndarray:
    """float64 (N, K): w = d * multiplier * (G[idx] + sign * 1/8) (docs/spec.md §6)."""
    N, K = shape
    d8, mult, idx, sign = _weight_parts(data, fmt, shape)
    g = grid()[idx].astype(np.float64)  # (N, K/8, 8)
    w = (d8 * mult)[..., None] * (g + (sign * DELTA)[..., None])
    return w.reshape(N, K)


# ---------------------------------------------------------------------------
# activations (docs/spec.md §4.1-4.4)

def _act_parts(data, fmt: str, shape):
    """-> (d per block float64 (M, nb), q int64 (M, nb, blk), raw blocks uint8 (M, nb, bytes))."""
    M, K = shape
    blk, size, _, _ = LAYOUT[fmt]
    b = _as_u8(data)
    assert b.size == M * row_size(fmt, K), (b.size, M, K, fmt)
    raw = b.reshape(M, K // blk, size)
    if fmt in ("q8_0", "q8_1"):
        d = _f16(_u16(raw[..., 0:2])[..., 0])
        q0 = 2 if fmt == "q8_0" else 4
    elif fmt == "q8_k":
        d = _f32(raw[..., 0:4])
        q0 = 8
    else:
        d = _f32(raw[..., 0:4])
        q0 = 12
    q = raw[..., q0:q0 + blk].view(np.int8).astype(np.int64)
    return d, q, raw


def dequantize_activations(data, fmt: str, shape) -> np.ndarray:
    """float64 (M, K) = d * q per block."""
    M, K = shape
    d, q, _ = _act_parts(data, fmt, shape)
    return (d[..., None] * q).reshape(M, K)


# ---------------------------------------------------------------------------
# products

def matmul_f64(act_bytes, afmt: str, w_bytes, wfmt: str, M: int, N: int, K: int) -> np.ndarray:
    """float64 (M, N) = X @ W.T of the quantized operands.

    iq1_s_r4 x q8_1 is the historical kernel of docs/spec.md §7.4: per row r,
    d_r * sum_k ls_k * (d_k * U_k + s_k * (sigma_k - 8) / 8) with U_k = sum (g+1) q
    over 32-block k and q8_1's stored fp16 s_k (inf in -> inf/NaN out).
    """
    if (wfmt, afmt) == ("iq1_s_r4", "q8_1"):
        return _iq1_s_r4_q8_1(act_bytes, w_bytes, M, N, K)
    X = dequantize_activations(act_bytes, afmt, (M, K))
    W = dequantize_weights(w_bytes, wfmt, (N, K))
    return X @ W.T


def _iq1_s_r4_q8_1(act_bytes, w_bytes, M, N, K) -> np.ndarray:
    d, q, raw = _act_parts(act_bytes, "q8_1", (M, K))  # q: (M, nb, 32)
    s = _f16(_u16(raw[..., 2:4])[..., 0])  # (M, nb)
    d8, mult, idx, sign = _weight_parts(w_bytes, "iq1_s_r4", (N, K))
    nb = K // 32
    u = (grid()[idx].astype(np.int64) + 1).reshape(N, nb, 32)  # g + 1
    U = np.einsum("nbj,mbj->mnb", u, q)  # (M, N, nb), exact integers
    ls = mult.reshape(N, nb, 4)[..., 0].astype(np.float64)  # (N, nb)
    sg = sign.reshape(N, nb, 4)[..., 0].astype(np.float64)
    dr = d8.reshape(N, nb, 4)[:, 0, 0]  # (N,)
    with np.errstate(invalid="ignore", over="ignore"):
        term = ls[None] * (d[:, None, :] * U + s[:, None, :] * ((sg - 8.0) / 8.0)[None])
        return dr[None, :] * term.sum(axis=-1)


# ---------------------------------------------------------------------------
# random valid bytes

def _rand_f16_scales(rng, n, lo=2.0 ** -12, hi=2.0 ** -4, signed=True) -> np.ndarray:
    mag = np.exp(rng.uniform(np.log(lo), np.log(hi), size=n))
    if signed:
        mag = mag * rng.choice([-1.0, 1.0], size=n)
    return mag.astype(np.float16).view(np.uint16)


def random_weights(rng: np.random.Generator, fmt: str, N: int, K: int) -> np.ndarray:
    """Random valid weight bytes (uint8, N * row_size(K)): random indices, scales, signs;
    finite fp16 super-block / row scales of magnitude 2^-12..2^-4 (either sign)."""
    rs = row_size(fmt, K)
    b = rng.integers(0, 256, size=N * rs, dtype=np.uint8)
    if fmt == "iq1_s":
        blk = b.reshape(N, K // 256, 50)
        d = _rand_f16_scales(rng, blk.shape[:2])
        blk[..., 0] = d & 0xFF
        blk[..., 1] = d >> 8
    elif fmt == "iq1_m":
        blk = b.reshape(N, K // 256, 56)
        d = _rand_f16_scales(rng, blk.shape[:2]).astype(np.int64)
        for w in range(4):
            nib = (d >> (4 * w)) & 15
            blk[..., 48 + 2 * w + 1] = (blk[..., 48 + 2 * w + 1] & 0x0F) | (nib << 4).astype(np.uint8)
    else:
        assert N % 4 == 0
        grp = b.reshape(N // 4, 4 * rs)
        d = _rand_f16_scales(rng, (N // 4, 4))
        grp[:, 0:8:2] = d & 0xFF
        grp[:, 1:8:2] = d >> 8
    return b


def random_activations(rng: np.random.Generator, fmt: str, M: int, K: int,
                       d_range=(2.0 ** -10, 2.0 ** 2)) -> np.ndarray:
    """Random valid activation bytes: q in [-127, 127], positive finite d, and the
    derived fields consistent (q8_1 s = fp16(d * sum q), q8_k bsums over 16 and
    sum = d * sum q, q8_k128 bsums over 32)."""
    blk, size, _, _ = LAYOUT[fmt]
    nb = K // blk
    q = rng.integers(-127, 128, size=(M, nb, blk)).astype(np.int8)
    dmag = np.exp(rng.uniform(np.log(d_range[0]), np.log(d_range[1]), size=(M, nb)))
    out = np.zeros((M, nb, size), dtype=np.uint8)
    qsum = q.astype(np.int64).sum(axis=-1)
    if fmt in ("q8_0", "q8_1"):
        d16 = dmag.astype(np.float16)
        out[..., 0:2] = d16[..., None].view(np.uint8)
        if fmt == "q8_0":
            out[..., 2:34] = q.view(np.uint8)
        else:
            s = (d16.astype(np.float32) * qsum.astype(np.float32)).astype(np.float16)
            out[..., 2:4] = s[..., None].view(np.uint8)
            out[..., 4:36] = q.view(np.uint8)
    elif fmt == "q8_k":
        d32 = dmag.astype("<f4")
        out[..., 0:4] = d32[..., None].view(np.uint8)
        out[..., 4:8] = (d32 * qsum.astype(np.float32)).astype("<f4")[..., None].view(np.uint8)
        out[..., 8:264] = q.view(np.uint8)
        bs = q.astype(np.int64).reshape(M, nb, 16, 16).sum(axis=-1).astype("<i2")
        out[..., 264:296] = bs.view(np.uint8)
    else:
        d32 = dmag.astype("<f4")
        out[..., 0:4] = d32[..., None].view(np.uint8)
        bs = q.astype(np.int64).reshape(M, nb, 4, 32).sum(axis=-1).astype("<i2")
        out[..., 4:12] = bs.view(np.uint8)
        out[..., 12:140] = q.view(np.uint8)
    return out.reshape(-1)
