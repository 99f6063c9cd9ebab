"""fp16 hazards: detection in check_activations and matmul's overflow policies."""

import warnings

import numpy as np
import pytest

import iq1q
from spec_vectors import IQ1_S_R4_GROUP, activation_11_4


def test_spec_11_4_overflows_q8_1_only():
    reports = iq1q.check_activations(activation_11_4())
    assert set(reports) == {"q8_0", "q8_1", "q8_k128"}  # K = 128: no q8_k
    q81 = reports["q8_1"]
    assert not q81.ok and (q81.overflow_blocks, q81.underflow_blocks) == (2, 0)
    row, block, value = q81.first
    # s = d_f32 * sum(q) = (80000/127) * 313 in float32
    assert (row, block) == (0, 0) and value == pytest.approx(80000 / 127 * 313, rel=1e-6)
    for fmt in ("q8_0", "q8_k128"):
        assert reports[fmt].ok and reports[fmt].first is None


def test_scale_overflow_and_underflow_rows_and_blocks():
    x = np.ones((3, 128), np.float32)
    x[1, 70] = 1e7  # row 1, block 2: d = 1e7/127 = 78740 > 65504 in q8_0 and q8_1
    x[2, 32:64] = 1e-7  # row 2, block 1: d = 7.9e-10, below the smallest fp16 subnormal
    x[2, 96:128] = 1e-3  # row 2, block 3: d = 7.9e-6, a subnormal fp16
    reports = iq1q.check_activations(x)
    for fmt in ("q8_0", "q8_1"):
        r = reports[fmt]
        assert (r.overflow_blocks, r.underflow_blocks) == (1, 2)
        assert r.first[:2] == (1, 2) and r.first[2] == pytest.approx(1e7 / 127, rel=1e-6)
    assert reports["q8_k128"].ok


def test_first_overflow_is_reported_apart_from_an_earlier_underflow():
    x = np.ones((2, 64), np.float32)
    x[0, :32] = 1e-7  # row 0 block 0 underflows
    x[1, 32:] = 5000.0  # row 1 block 1: sum 160000 overflows q8_1's s
    r = iq1q.check_activations(x)["q8_1"]
    assert r.first[:2] == (0, 0) and r.first_overflow[:2] == (1, 1)
    assert r.first_overflow[2] == pytest.approx(5000 / 127 * 32 * 127, rel=1e-6)
    assert "row 1, block 1" in r.message()


def test_row_lengths_and_input_checks():
    assert set(iq1q.check_activations(np.ones(96, np.float32))) == {"q8_0", "q8_1"}
    assert set(iq1q.check_activations(np.ones(384, np.float32))) == {"q8_0", "q8_1", "q8_k128"}
    with pytest.raises(ValueError, match="multiple of q8_0's block of 32"):
        iq1q.check_activations(np.ones(100, np.float32))
    with pytest.raises(ValueError, match="NaN or Inf"):
        iq1q.check_activations(np.full(32, np.nan, np.float32))


@pytest.fixture
def w_11_2():
    return iq1q.QuantizedTensor.from_bytes(IQ1_S_R4_GROUP, "iq1_s_r4", (4, 128))


def test_matmul_raises_by_default(w_11_2):
    with pytest.raises(iq1q.Fp16OverflowError, match=r"overflow q8_1's fp16 fields \(first: row 0, "
                                                      r"block 0 .* value 197165.*q8_k128"):
        iq1q.matmul(activation_11_4(), w_11_2, activation="q8_1")


def test_matmul_warns_and_returns_the_pre_pr194_nans(w_11_2):
    with pytest.warns(iq1q.Fp16OverflowWarning, match="q8_1"):
        y = iq1q.matmul(activation_11_4(), w_11_2, activation="q8_1", overflow="warn")
    assert np.isnan(y).all()


def test_matmul_ignore_is_silent(w_11_2):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = iq1q.matmul(activation_11_4(), w_11_2, activation="q8_1", overflow="ignore")
        y128 = iq1q.matmul(activation_11_4(), w_11_2)  # auto = q8_k128: no hazard, no warning
    assert np.isnan(y).all() and np.isfinite(y128).all()


def test_matmul_checks_quantized_activations_too(w_11_2):
    qa = iq1q.quantize_activations(activation_11_4(), "q8_1")
    again = iq1q.QuantizedActivations.from_bytes(qa.tobytes(), "q8_1", qa.shape)
    for a in (qa, again):
        with pytest.raises(iq1q.Fp16OverflowError, match="row 0, block 0"):
            iq1q.matmul(a, w_11_2)


def test_bad_overflow_policy(w_11_2):
    with pytest.raises(ValueError, match="overflow must be one of raise, warn, ignore"):
        iq1q.matmul(np.ones(128, np.float32), w_11_2, overflow="skip")
