"""quantize(): what it accepts, and the clear errors for what it does not."""

import numpy as np
import pytest

import iq1q


@pytest.fixture
def w(rng):
    return rng.standard_normal((8, 256)).astype(np.float32)


def test_result_object(w):
    t = iq1q.quantize(w, "iq1_m_r4")
    assert (t.format, t.shape) == ("iq1_m_r4", (8, 256))
    assert t.data.dtype == np.uint8 and t.data.ndim == 1 and t.data.size == 8 * (2 + 7 * 256 // 32)
    assert not t.data.flags.writeable
    assert t.tobytes() == t.data.tobytes()
    again = iq1q.QuantizedTensor.from_bytes(t.tobytes(), "iq1_m_r4", (8, 256))
    np.testing.assert_array_equal(again.dequantize(), t.dequantize())


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_float_dtypes_quantize_like_float32(w, dtype):
    x = w.astype(dtype)
    assert iq1q.quantize(x, "iq1_s").tobytes() == iq1q.quantize(x.astype(np.float32), "iq1_s").tobytes()


def test_non_contiguous_input(w):
    big = np.zeros((16, 512), np.float32)
    big[::2, ::2] = w
    view = big[::2, ::2]
    assert iq1q.quantize(view, "iq1_s_r4").tobytes() == iq1q.quantize(w, "iq1_s_r4").tobytes()


def test_zero_rows():
    t = iq1q.quantize(np.zeros((0, 256), np.float32), "iq1_s_r4")
    assert t.shape == (0, 256) and t.data.size == 0 and t.dequantize().shape == (0, 256)


@pytest.mark.parametrize("fmt,shape,message", [
    ("iq1_s", (4, 128), "row length 128 is not a positive multiple of iq1_s's block of 256"),
    ("iq1_m_r4", (4, 48), "row length 48 is not a positive multiple of iq1_m_r4's block of 32"),
    ("iq1_s_r4", (6, 256), "iq1_s_r4 needs a multiple of 4 rows, got 6"),
    ("iq1_m_r4", (1, 256), "iq1_m_r4 needs a multiple of 4 rows, got 1"),
])
def test_shape_errors(fmt, shape, message):
    with pytest.raises(ValueError, match=message):
        iq1q.quantize(np.ones(shape, np.float32), fmt)


def test_format_and_type_errors(w):
    with pytest.raises(ValueError, match="unknown format 'iq1_x'; valid formats: iq1_s, iq1_m"):
        iq1q.quantize(w, "iq1_x")
    with pytest.raises(ValueError, match="q8_k128 is not a weight format; choose one of iq1_s, iq1_m, "
                                         "iq1_s_r4, iq1_m_r4"):
        iq1q.quantize(w, "q8_k128")
    with pytest.raises(TypeError, match="weights must be float16, float32 or float64, got dtype int32"):
        iq1q.quantize(w.astype(np.int32), "iq1_s")
    with pytest.raises(TypeError, match="complex128"):
        iq1q.quantize(w.astype(complex), "iq1_s")
    with pytest.raises(ValueError, match=r"weights must be 2-D, got shape \(256,\)"):
        iq1q.quantize(w[0], "iq1_s")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_weights(w, bad):
    w[3, 17] = bad
    with pytest.raises(ValueError, match=r"NaN or Inf in weights \(first at index \(3, 17\)"):
        iq1q.quantize(w, "iq1_s_r4")


def test_float16_overflowing_input_is_inf():
    with pytest.raises(ValueError, match="NaN or Inf"):
        iq1q.quantize(np.full((4, 256), np.inf, np.float16), "iq1_s")


@pytest.mark.parametrize("imatrix,message", [
    (np.ones(128, np.float32), r"one entry per column \(256\), got 128"),
    (np.ones((2, 256), np.float32), r"imatrix must be 1-D"),
    (np.full(256, np.nan, np.float32), "NaN or Inf in imatrix"),
    (np.r_[np.ones(255), np.inf].astype(np.float32), "NaN or Inf in imatrix"),
    (np.r_[np.ones(100), -1.0, np.ones(155)].astype(np.float32), r"non-negative \(first negative at 100\)"),
])
def test_imatrix_errors(w, imatrix, message):
    with pytest.raises(ValueError, match=message):
        iq1q.quantize(w, "iq1_m", imatrix=imatrix)


def test_imatrix_dtype_error(w):
    with pytest.raises(TypeError, match="imatrix must be float16, float32 or float64"):
        iq1q.quantize(w, "iq1_s", imatrix=np.ones(256, np.int64))
