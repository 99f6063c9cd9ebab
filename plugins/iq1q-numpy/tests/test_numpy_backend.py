"""The numpy backend against iq1q's portable C reference ("ref")."""

import numpy as np
import pytest

import iq1q
import iq1q_numpy
from iq1q_numpy import decode

PAIRS = iq1q_numpy.PAIRS


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def random_weight_bytes(rng, fmt, N, K):
    """Random bytes with every index, sign and multiplier bit random, but finite fp16 scales."""
    f = iq1q.format_info(fmt)
    data = rng.integers(0, 256, N * f.row_size(K), dtype=np.uint8)
    scales = rng.uniform(0.01, 0.1, data.size).astype(np.float16).view(np.uint16)
    if fmt == "iq1_s":  # d: the first 2 bytes of each 50-byte block
        blocks = data.reshape(-1, f.type_size)
        blocks[:, 0:2] = scales[: len(blocks), None].view(np.uint8)
    elif fmt == "iq1_m":  # d: the top nibbles of the 4 scale words at bytes 48..55
        blocks = data.reshape(-1, f.type_size)
        for w in range(4):
            top = ((scales[: len(blocks)] >> (4 * w)) & 15).astype(np.uint8)
            blocks[:, 49 + 2 * w] = (blocks[:, 49 + 2 * w] & 15) | (top << 4)
    else:  # _r4: 4 fp16 row scales open each group of 4 rows
        groups = data.reshape(N // 4, -1)
        groups[:, 0:8] = scales[: 4 * len(groups)].reshape(-1, 4).view(np.uint8)
    return iq1q.QuantizedTensor.from_bytes(data.tobytes(), fmt, (N, K))


def test_registered_with_its_pairs_and_priority():
    info = next(b for b in iq1q.backends() if b.name == "numpy")
    assert info.origin == f"iq1q-numpy {iq1q_numpy.__version__}"
    assert (info.priority, info.available) == (10, True)
    assert set(info.pairs) == set(PAIRS) and len(PAIRS) == 8
    assert not info.backend.activation_quantizers  # the built-in quantizers serve


@pytest.mark.parametrize("fmt", decode.WEIGHT_FORMATS)
def test_weights_decode_like_iq1q_dequantize(rng, fmt):
    W = random_weight_bytes(rng, fmt, 8, 512)
    np.testing.assert_allclose(decode.weights(W.data, fmt, 8, 512), iq1q.dequantize(W), rtol=1e-6)


@pytest.mark.parametrize("fmt", decode.ACTIVATION_FORMATS)
def test_activations_within_a_rounding_step_of_x(rng, fmt):
    x = rng.standard_normal((3, 256)).astype(np.float32)
    A = iq1q.quantize_activations(x, fmt)
    step = np.abs(x).reshape(3, -1, iq1q.format_info(fmt).block_size).max(axis=-1) / 127
    err = np.abs(decode.activations(A.data, fmt, 3, 256) - x).reshape(step.shape + (-1,))
    # half a step of rounding, plus q8_0's fp16 scale (127 steps times 2^-11 relative)
    assert (err <= 0.6 * step[..., None]).all() and err.max() > 0.4 * step.min()


@pytest.mark.parametrize("random_bytes", [False, True], ids=["quantized", "random-bytes"])
@pytest.mark.parametrize("pair", PAIRS, ids="x".join)
def test_matmul_agrees_with_ref(rng, pair, random_bytes):
    wfmt, afmt = pair
    N, K, M = 12, 512, 5
    if random_bytes:
        W = random_weight_bytes(rng, wfmt, N, K)
    else:
        W = iq1q.quantize(rng.standard_normal((N, K)).astype(np.float32), wfmt)
    x = rng.standard_normal((M, K)).astype(np.float32)
    assert iq1q.kernel_table("numpy")[pair] == "numpy"
    y = iq1q.matmul(x, W, activation=afmt, backend="numpy")
    ref = iq1q.matmul(x, W, activation=afmt, backend="ref")
    assert y.dtype == np.float32 and y.shape == (M, N)
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-5 * np.abs(ref).max())


def test_kernel_refuses_bytes_of_the_wrong_size():
    y = np.empty((1, 4), np.float32)
    with pytest.raises(ValueError, match="iq1_s_r4: expected 392 uint8 bytes for 4 x 512, got 391"):
        decode.gemm("iq1_s_r4", "q8_k128", np.zeros(391, np.uint8), np.zeros(560, np.uint8), y, 512, 1)
