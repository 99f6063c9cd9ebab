"""Weight dequantizers: bit-exact against gguf (plain formats) and docs/spec.md §11.2, §11.3 (_r4)."""

import gguf
import numpy as np
import pytest

import iq1q
import oracle
from spec_vectors import IQ1_M_R4_GROUP, IQ1_S_R4_GROUP


def random_plain_blocks(rng, fmt: str, nblocks: int) -> bytes:
    """Random IQ1_S / IQ1_M bytes whose fp16 scale is finite."""
    f = iq1q.format_info(fmt)
    data = rng.integers(0, 256, (nblocks, f.type_size), dtype=np.uint8)
    d = rng.uniform(-2, 2, nblocks).astype(np.float16).view(np.uint16)
    if fmt == "iq1_s":
        data[:, :2] = d.view(np.uint8).reshape(-1, 2)
    else:  # four nibbles on top of the four scale words
        words = data[:, 48:].copy().view("<u2") & 0x0FFF
        words |= ((d[:, None] >> np.array([0, 4, 8, 12], np.uint16)) & 0xF) << 12
        data[:, 48:] = words.view(np.uint8)
    return data.tobytes()


@pytest.mark.parametrize("fmt", ["iq1_s", "iq1_m"])
def test_plain_formats_equal_gguf(fmt, rng):
    rows, n = 6, 1024
    raw = random_plain_blocks(rng, fmt, rows * n // 256)
    t = iq1q.QuantizedTensor.from_bytes(raw, fmt, (rows, n))
    want = gguf.quants.dequantize(np.frombuffer(raw, np.uint8).reshape(rows, -1),
                                  gguf.GGMLQuantizationType[fmt.upper()])
    got = t.dequantize()
    assert got.dtype == np.float32 and got.shape == (rows, n)
    np.testing.assert_array_equal(got, want.astype(np.float32))


def test_iq1_s_r4_spec_11_2():
    w = iq1q.QuantizedTensor.from_bytes(IQ1_S_R4_GROUP, "iq1_s_r4", (4, 128)).dequantize()
    # row 0 starts with index 1029 (all zero), ls = 1, positive delta, d = 0.5
    want = [0.0625] * 9 + [0.5625, 0.0625, -0.4375, 0.0625, -0.4375, -0.4375, -0.4375]
    np.testing.assert_array_equal(w[0, :16], np.array(want, np.float32))


def test_iq1_m_r4_spec_11_3():
    w = iq1q.QuantizedTensor.from_bytes(IQ1_M_R4_GROUP, "iq1_m_r4", (4, 128)).dequantize()
    want = [0.125] * 8 + [1.125, 1.125, 0.125, 1.125, 1.125, 1.125, 0.125, -0.875]
    np.testing.assert_array_equal(w[1, :16], np.array(want, np.float32))
    assert not w[0, :16].any()  # a 4-bit scale of 0 zeroes that half exactly


@pytest.mark.parametrize("fmt", iq1q.WEIGHT_FORMATS)
def test_dequantize_equals_oracle_on_random_bytes(fmt, rng):
    data = oracle.random_weights(rng, fmt, 8, 512)
    t = iq1q.QuantizedTensor.from_bytes(data, fmt, (8, 512))
    want = oracle.dequantize_weights(np.frombuffer(data, np.uint8), fmt, (8, 512))
    np.testing.assert_array_equal(t.dequantize(), want.astype(np.float32))
    np.testing.assert_array_equal(iq1q.dequantize(t), t.dequantize())


def test_validate_names_rows_with_bad_scales():
    group = bytearray(IQ1_S_R4_GROUP * 2)  # 8 rows
    t = iq1q.QuantizedTensor.from_bytes(bytes(group), "iq1_s_r4", (8, 128))
    assert t.validate() is None
    group[104 + 2:104 + 4] = np.float16(np.inf).tobytes()  # row 5's scale
    group[0:2] = np.float16(np.nan).tobytes()  # row 0's scale
    with pytest.raises(ValueError, match=r"2 row\(s\): 0, 5"):
        iq1q.QuantizedTensor.from_bytes(bytes(group), "iq1_s_r4", (8, 128)).validate()


@pytest.mark.parametrize("fmt", ["iq1_s", "iq1_m"])
def test_validate_plain_formats(fmt, rng):
    raw = bytearray(random_plain_blocks(rng, fmt, 6))  # 3 rows of 512
    t = iq1q.QuantizedTensor.from_bytes(bytes(raw), fmt, (3, 512))
    assert t.validate() is None
    size = iq1q.format_info(fmt).type_size
    if fmt == "iq1_s":
        raw[3 * size:3 * size + 2] = np.float16(-np.inf).tobytes()  # block 3 = row 1
    else:
        # d's exponent (bits 10-14) lies in the top nibbles of scale words 2 and 3
        raw[3 * size + 48 + 5] |= 0xC0
        raw[3 * size + 48 + 7] |= 0x70
    with pytest.raises(ValueError, match=r"1 row\(s\): 1$"):
        iq1q.QuantizedTensor.from_bytes(bytes(raw), fmt, (3, 512)).validate()


def test_from_bytes_errors():
    with pytest.raises(ValueError, match="must be 104 bytes, got 103"):
        iq1q.QuantizedTensor.from_bytes(IQ1_S_R4_GROUP[:-1], "iq1_s_r4", (4, 128))
    with pytest.raises(ValueError, match="multiple of 4 rows, got 2"):
        iq1q.QuantizedTensor.from_bytes(IQ1_S_R4_GROUP[:52], "iq1_s_r4", (2, 128))
    with pytest.raises(ValueError, match="not a weight format"):
        iq1q.QuantizedTensor.from_bytes(IQ1_S_R4_GROUP, "q8_0", (4, 128))
    with pytest.raises(ValueError, match="multiple of iq1_s's block of 256"):
        iq1q.QuantizedTensor.from_bytes(b"", "iq1_s", (1, 128))
