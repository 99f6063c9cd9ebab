"""Activation quantizers: docs/spec.md §11.1, §11.4 bytes, and a numpy model of docs/spec.md §5 (AVX2 column)."""

import numpy as np
import pytest

import iq1q
from iq1q import _ref
from spec_vectors import Q8_K128_11_1, activation_11_1, activation_11_4, q8_k128_11_4

# --- an independent numpy model of docs/spec.md §5: d = amax/127, id = 127/amax, round half to even ---

def _blocks(x, qk):
    xb = x.astype(np.float32).reshape(-1, qk)
    amax = np.abs(xb).max(axis=1)
    # where 127/amax would overflow (amax < ~3.7e-37), x and amax are scaled by 2^64 first
    tiny = (amax > 0) & (amax < np.float32(127) / np.finfo(np.float32).max)
    scale = np.where(tiny, np.float32(2.0**64), np.float32(1)).astype(np.float32)
    with np.errstate(divide="ignore"):
        iscale = np.where(amax > 0, np.float32(127) / (amax * scale), np.float32(0)).astype(np.float32)
    q = np.rint((xb * scale[:, None]) * iscale[:, None]).astype(np.int32)  # float32 products, half to even
    return (amax / np.float32(127)).astype(np.float32), q


def model_bytes(x: np.ndarray, fmt: str) -> bytes:
    qk = iq1q.format_info(fmt).block_size
    d, q = _blocks(x, qk)
    out = []
    for db, qb in zip(d, q):
        q8 = qb.astype(np.int8).tobytes()
        if fmt == "q8_0":
            out.append(np.float16(db).tobytes() + q8)
        elif fmt == "q8_1":
            s = np.float32(db) * np.float32(qb.sum())
            out.append(np.float16(db).tobytes() + np.float16(s).tobytes() + q8)
        elif fmt == "q8_k":
            bsums = qb.reshape(16, 16).sum(axis=1).astype("<i2").tobytes()
            s = np.float32(db) * np.float32(qb.sum())
            out.append(np.float32(db).tobytes() + np.float32(s).tobytes() + q8 + bsums)
        else:
            bsums = qb.reshape(4, 32).sum(axis=1).astype("<i2").tobytes()
            out.append(np.float32(db).tobytes() + bsums + q8)
    return b"".join(out)


def test_spec_11_1_q8_k128_bytes():
    assert iq1q.quantize_activations(activation_11_1(), "q8_k128").tobytes() == Q8_K128_11_1


def test_spec_11_4_q8_1_overflows_to_inf():
    data = iq1q.quantize_activations(activation_11_4(), "q8_1").tobytes()
    assert data[:6] == bytes.fromhex("ec60007c7f06")  # d = 630.0, s = +inf, q = 127, 6, ...
    assert data[6:36] == bytes([6] * 30)
    assert data[36:40] == bytes.fromhex("ec6000fc")  # block 1: s = -inf


def test_spec_11_4_q8_k128_block():
    data = iq1q.quantize_activations(activation_11_4(), "q8_k128").tobytes()
    assert data[:12] == bytes.fromhex("f67a1d443901c7fe00000000")  # as docs/spec.md §11.4 prints the header
    assert data == q8_k128_11_4()


@pytest.mark.parametrize("fmt", iq1q.ACTIVATION_FORMATS)
def test_bytes_match_numpy_model(fmt, rng, backend):
    x = rng.standard_normal((5, 512)).astype(np.float32) * rng.uniform(0.01, 100, (5, 1)).astype(np.float32)
    x[1, :256] = 0.0  # all-zero blocks: d = 0, everything 0
    x[2, ::7] = 0.5  # many exact ties after scaling
    x[3] = np.round(x[3] * 4) / 4
    assert iq1q.quantize_activations(x, fmt, backend=backend).tobytes() == model_bytes(x, fmt)


@pytest.mark.parametrize("fmt", iq1q.ACTIVATION_FORMATS)
def test_tiny_blocks_keep_the_int8_range(fmt, rng, backend):
    """Blocks whose amax is below ~3.7e-37 (127/amax overflows float32, which once made
    every quant 0) are quantized as if the exponent were unbounded."""
    x = rng.standard_normal((4, 512)).astype(np.float32)
    x[0] *= np.float32(1e-38)  # normal floats, 127/amax = inf
    x[1] *= np.float32(1e-41)  # subnormal floats
    x[2, :] = 0.0
    x[2, 7] = np.float32(1.4e-45)  # one smallest subnormal: q = 127 there, 0 elsewhere
    x[3] *= np.float32(4e-37)  # just above the threshold: the plain path
    got = iq1q.quantize_activations(x, fmt, backend=backend)
    assert got.tobytes() == model_bytes(x, fmt)
    _, q = _blocks(x, iq1q.format_info(fmt).block_size)
    assert (np.abs(q).reshape(4, -1).max(axis=1) == 127).all()


@pytest.mark.parametrize("fmt", iq1q.ACTIVATION_FORMATS)
def test_dequantize_is_d_times_q(fmt, rng):
    x = rng.standard_normal((3, 256)).astype(np.float32)
    qa = iq1q.quantize_activations(x, fmt)
    d, q = _blocks(x, iq1q.format_info(fmt).block_size)
    if fmt in ("q8_0", "q8_1"):
        d = d.astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(qa.dequantize(), (d[:, None] * q).reshape(3, 256).astype(np.float32))


def test_one_dimensional_activations():
    x = activation_11_1()
    qa = iq1q.quantize_activations(x, "q8_0")
    assert qa.shape == (128,) and qa.dequantize().shape == (128,)
    assert qa.tobytes() == model_bytes(x, "q8_0")


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_other_float_dtypes_are_converted(dtype, rng):
    x = rng.standard_normal((2, 128)).astype(dtype)
    assert (iq1q.quantize_activations(x, "q8_k128").tobytes()
            == iq1q.quantize_activations(x.astype(np.float32), "q8_k128").tobytes())


def test_fp16_rounding_matches_numpy(rng):
    special = np.array([0, -0.0, 65504, 65519.99, 65520, -65520, 1e9, np.inf, -np.inf,
                        6.1035156e-05, 6.0975552e-05, 5.96e-08, 2.98e-08, 2.9802322e-08,
                        2.9802326e-08, 1e-10, 1.00048828125, 1.0009765625, 2049, 2051], dtype=np.float32)
    bits = rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    x = np.concatenate([special, bits[np.isfinite(bits)], rng.standard_normal(10_000).astype(np.float32)])
    out = np.empty(x.size, dtype=np.uint16)
    _ref.fp32_to_fp16(x, out)
    with np.errstate(over="ignore"):
        want = x.astype(np.float16).view(np.uint16)
    np.testing.assert_array_equal(out, want)


def test_fp16_widening_is_exact_for_all_halves():
    h = np.arange(65536, dtype=np.uint16)
    out = np.empty(h.size, np.float32)
    _ref.fp16_to_fp32(h, out)
    with np.errstate(invalid="ignore"):  # signalling NaN halves raise the flag on ARM
        want = h.view(np.float16).astype(np.float32)
    nan = np.isnan(want)
    np.testing.assert_array_equal(out[~nan], want[~nan])
    assert np.isnan(out[nan]).all()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_activations_are_rejected(bad):
    x = np.zeros((3, 128), dtype=np.float32)
    x[2, 5] = bad
    with pytest.raises(ValueError, match=r"NaN or Inf in activations \(first in row 2\)"):
        iq1q.quantize_activations(x, "q8_k128")


def test_activation_errors():
    with pytest.raises(ValueError, match="not an activation format"):
        iq1q.quantize_activations(np.zeros(256, np.float32), "iq1_s")
    with pytest.raises(ValueError, match="unknown format 'q4_0'"):
        iq1q.quantize_activations(np.zeros(256, np.float32), "q4_0")
    with pytest.raises(ValueError, match="multiple of q8_k128's block of 128"):
        iq1q.quantize_activations(np.zeros(96, np.float32), "q8_k128")
    with pytest.raises(TypeError, match="dtype int32"):
        iq1q.quantize_activations(np.zeros(128, np.int32), "q8_0")
    with pytest.raises(ValueError, match="1-D or 2-D"):
        iq1q.quantize_activations(np.zeros((1, 2, 128), np.float32), "q8_0")


def test_from_bytes_checks_length():
    good = iq1q.quantize_activations(np.ones((2, 128), np.float32), "q8_k128")
    again = iq1q.QuantizedActivations.from_bytes(good.tobytes(), "q8_k128", (2, 128))
    assert again.tobytes() == good.tobytes()
    with pytest.raises(ValueError, match="must be 280 bytes, got 279"):
        iq1q.QuantizedActivations.from_bytes(good.tobytes()[:-1], "q8_k128", (2, 128))
