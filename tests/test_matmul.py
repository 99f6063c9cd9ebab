"""matmul against float32 numpy, its shapes, threads and bad input."""

import numpy as np
import pytest

import iq1q

N, K, M = 128, 512, 16


@pytest.fixture(scope="module")
def gaussian():
    rng = np.random.default_rng(7)
    return (rng.standard_normal((N, K)).astype(np.float32), rng.standard_normal((M, K)).astype(np.float32))


@pytest.fixture(scope="module")
def quantized(gaussian):
    w, _ = gaussian
    return {fmt: iq1q.quantize(w, fmt) for fmt in iq1q.WEIGHT_FORMATS}


def rel_rms(y, ref):
    return float(np.sqrt(np.mean((y - ref) ** 2) / np.mean(ref**2)))


# Relative RMS error of y = x @ W.T against float32 x @ w.T, Gaussian w and x. It is the
# weights' own quantization error: y's error is a sum over K of per-weight errors times
# Gaussian x, so it keeps the weights' relative size, which measures 0.485 (iq1_s),
# 0.565 (iq1_m: without an imatrix ik_llama's algorithm weights by x^2, not RMS),
# 0.469 (iq1_s_r4) and 0.435 (iq1_m_r4); over six seeds y's error stayed within 0.03 of
# those (2048 outputs each), and 8-bit activations add ~1%. Bound = weight error + 0.045.
MATMUL_REL_RMS_BOUND = {"iq1_s": 0.53, "iq1_m": 0.61, "iq1_s_r4": 0.515, "iq1_m_r4": 0.48}


@pytest.mark.parametrize("wfmt", iq1q.WEIGHT_FORMATS)
@pytest.mark.parametrize("afmt", iq1q.ACTIVATION_FORMATS)
def test_matmul_close_to_float32(gaussian, quantized, wfmt, afmt):
    w, x = gaussian
    y = iq1q.matmul(x, quantized[wfmt], activation=afmt)
    assert y.dtype == np.float32 and y.shape == (M, N)
    err = rel_rms(y, x @ w.T)
    assert err < MATMUL_REL_RMS_BOUND[wfmt]
    # and it is the weights' error, not the kernel's: against the dequantized weights it is small
    assert rel_rms(y, x @ quantized[wfmt].dequantize().T) < 0.02


@pytest.mark.parametrize("wfmt,auto", [("iq1_s", "q8_k"), ("iq1_m", "q8_k"),
                                       ("iq1_s_r4", "q8_k128"), ("iq1_m_r4", "q8_k128")])
def test_auto_activation(gaussian, quantized, wfmt, auto):
    _, x = gaussian
    np.testing.assert_array_equal(iq1q.matmul(x, quantized[wfmt]),
                                  iq1q.matmul(x, quantized[wfmt], activation=auto))


def test_vector_and_dtypes(gaussian, quantized):
    _, x = gaussian
    W = quantized["iq1_s_r4"]
    full = iq1q.matmul(x, W)
    assert iq1q.matmul(x[2], W).shape == (N,)
    np.testing.assert_array_equal(iq1q.matmul(x[2], W), full[2])
    np.testing.assert_array_equal(iq1q.matmul(x.astype(np.float64), W), full)
    qa = iq1q.quantize_activations(x, "q8_k128")
    np.testing.assert_array_equal(iq1q.matmul(qa, W), full)
    half = x.astype(np.float16)
    np.testing.assert_array_equal(iq1q.matmul(half, W), iq1q.matmul(half.astype(np.float32), W))


def test_empty_activations(quantized):
    y = iq1q.matmul(np.zeros((0, K), np.float32), quantized["iq1_m"])
    assert y.shape == (0, N)


@pytest.mark.parametrize("wfmt", iq1q.WEIGHT_FORMATS)
def test_thread_count_does_not_change_bits(quantized, wfmt):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, K)).astype(np.float32)
    w = rng.standard_normal((256, K)).astype(np.float32)  # 32 tiles: split at 2, 3 and 7 threads
    W = iq1q.quantize(w, wfmt, threads=1)
    for t in (2, 3, 7):
        assert iq1q.quantize(w, wfmt, threads=t).tobytes() == W.tobytes()
    y1 = iq1q.matmul(x, W, threads=1)
    for t in (2, 3, 7):
        np.testing.assert_array_equal(iq1q.matmul(x, W, threads=t), y1)


def test_thread_env(monkeypatch, quantized, gaussian):
    _, x = gaussian
    monkeypatch.setenv("IQ1Q_NUM_THREADS", "3")
    np.testing.assert_array_equal(iq1q.matmul(x, quantized["iq1_s"]),
                                  iq1q.matmul(x, quantized["iq1_s"], threads=1))


def test_bad_inputs(gaussian, quantized):
    _, x = gaussian
    W = quantized["iq1_s_r4"]
    with pytest.raises(TypeError, match="W must be an iq1q.QuantizedTensor"):
        iq1q.matmul(x, np.zeros((N, K), np.float32))
    with pytest.raises(ValueError, match="rows of 256 values, W has rows of 512"):
        iq1q.matmul(x[:, :256], W)
    with pytest.raises(TypeError, match="dtype int64"):
        iq1q.matmul(np.ones((2, K), np.int64), W)
    with pytest.raises(ValueError, match="1-D or 2-D"):
        iq1q.matmul(x[None], W)
    with pytest.raises(ValueError, match=r"NaN or Inf in activations \(first in row 1\)"):
        bad = x.copy()
        bad[1, 3] = np.inf
        iq1q.matmul(bad, W)
    with pytest.raises(ValueError, match=r"NaN or Inf in activations \(first in row 1\)"):
        iq1q.matmul(bad, W, activation="q8_1")  # not mistaken for an fp16 overflow
    with pytest.raises(ValueError, match="unknown format 'q8_2'"):
        iq1q.matmul(x, W, activation="q8_2")
    with pytest.raises(ValueError, match="already q8_0, but activation='q8_k128'"):
        iq1q.matmul(iq1q.quantize_activations(x, "q8_0"), W, activation="q8_k128")


def test_row_length_must_fit_both_blocks(rng):
    # 160 columns: iq1_s_r4's block (32) divides it, q8_k128's block (128) does not
    W = iq1q.quantize(rng.standard_normal((4, 160)).astype(np.float32), "iq1_s_r4")
    x = rng.standard_normal(160).astype(np.float32)
    with pytest.raises(ValueError, match="160 is not a multiple of 128, the larger block of iq1_s_r4"):
        iq1q.matmul(x, W)
    assert iq1q.matmul(x, W, activation="q8_0").shape == (4,)


def test_concurrent_callers_get_serial_results(quantized, gaussian):
    """Kernels release the GIL and share no state: calls from many Python threads at once
    (each also splitting its rows over the pool) give exactly the serial results."""
    from concurrent.futures import ThreadPoolExecutor

    _, x = gaussian
    jobs = [(x[i:i + 4], quantized[fmt], act) for i in range(0, M, 4)
            for fmt in iq1q.WEIGHT_FORMATS for act in ("q8_0", "q8_k128")]
    serial = [iq1q.matmul(xi, W, activation=a, threads=1) for xi, W, a in jobs]
    with ThreadPoolExecutor(6) as pool:
        parallel = list(pool.map(lambda job: iq1q.matmul(job[0], job[1], activation=job[2], threads=2),
                                 jobs * 3))
    for i, y in enumerate(parallel):
        np.testing.assert_array_equal(y, serial[i % len(jobs)])


def test_from_bytes_takes_arrays_and_buffers(quantized):
    W = quantized["iq1_m_r4"]
    for buf in (W.tobytes(), bytearray(W.tobytes()), memoryview(W.tobytes()), W.data.view(np.int8),
                W.data.copy()):
        again = iq1q.QuantizedTensor.from_bytes(buf, "iq1_m_r4", W.shape)
        assert again.tobytes() == W.tobytes()
