"""The Q8_0 weight product of the SIMD modules (kernels/q8_0_gemm.h): exact integer block
dots against a float64 oracle from the bytes, the same bits on any thread count, and the
shell's checks."""

import importlib

import numpy as np
import pytest

import iq1q
from iq1q import cpu

# the modules built with the product, where this CPU can run them
MODULES = [m for name, feats in (("iq1q._avx512", ("avx512f", "avx512bw", "avx512vl", "avx512vnni")),)
           if cpu.has(*feats) and (m := importlib.import_module(name)).HAS_Q8_0_GEMM]
pytestmark = pytest.mark.skipif(not MODULES, reason="no kernel module here multiplies Q8_0 weights")


def q8_0_rows(rng, rows, K, scale=1.0):
    """q8_0 bytes of random rows (any bytes are valid q8_0 but NaN/Inf scales), by iq1q's
    activation quantizer: the same bytes ggml writes for a Q8_0 tensor."""
    x = (rng.standard_normal((rows, K)) * scale).astype(np.float32)
    return iq1q.quantize_activations(x, "q8_0").data


def oracle(w, a, N, M, K):
    """sum over blocks of d_w * d_a * (exact integer dot), in float64."""
    def parts(data, rows):
        b = np.asarray(data).reshape(rows, K // 32, 34)
        return b[..., :2].copy().view(np.float16)[..., 0].astype(np.float64), b[..., 2:].view(np.int8).astype(np.int64)
    wd, wq = parts(w, N)
    ad, aq = parts(a, M)
    return (np.einsum("mbi,nbi->mnb", aq, wq) * (ad[:, None] * wd[None])).sum(-1)


@pytest.mark.parametrize("mod", MODULES, ids=lambda m: m.__name__)
@pytest.mark.parametrize("N,K,M", [(1, 32, 1), (16, 64, 8), (37, 96, 13), (100, 640, 7), (33, 256, 17), (50, 64, 6)])
def test_q8_0_product_is_the_exact_block_sum(mod, rng, N, K, M):
    w, a = q8_0_rows(rng, N, K), q8_0_rows(rng, M, K, scale=30.0)
    want = oracle(w, a, N, M, K)
    y = np.empty((M, N), np.float32)
    mod.q8_0_gemm(w, a, y, K, 1)
    # float32 scaling and summing of K / 32 exact block integers
    np.testing.assert_allclose(y, want, rtol=0, atol=2e-6 * np.abs(want).max() * (K // 32))
    for threads in (2, 3):
        y2 = np.full((M, N), np.nan, np.float32)
        mod.q8_0_gemm(w, a, y2, K, threads)
        assert np.array_equal(y2, y)


@pytest.mark.parametrize("mod", MODULES, ids=lambda m: m.__name__)
def test_q8_0_product_extremes(mod):
    """Weights and activations of -127 and 127 (the unsigned trick's worst case) give the
    exact integer."""
    def block(q):  # scale 1.0, 32 times q
        return np.concatenate([np.frombuffer(np.float16(1).tobytes(), np.uint8), np.full(32, q, np.int8).view(np.uint8)])
    w = np.concatenate([block(-127), block(-127), block(127), block(-127)])  # 2 rows of 2 blocks
    a = np.concatenate([block(127), block(127), block(-127), block(-127)])
    y = np.empty((2, 2), np.float32)
    mod.q8_0_gemm(w, a, y, 64, 1)
    full = 2 * 127 * 127 * 32
    assert y.tolist() == [[-full, 0.0], [full, 0.0]]


@pytest.mark.parametrize("mod", MODULES, ids=lambda m: m.__name__)
@pytest.mark.parametrize("change,message", [
    (dict(w=np.zeros(33, np.uint8)), "q8_0 data of 2 x 64 must be 136 bytes, got 33"),
    (dict(a=np.zeros(10, np.uint8)), "q8_0 data of 3 x 64 must be 204 bytes, got 10"),
    (dict(K=48), "row length 48 is not a positive multiple of q8_0's block of 32"),
    (dict(threads=0), "threads must be at least 1, got 0"),
])
def test_q8_0_product_checks_its_buffers(mod, change, message):
    args = dict(w=np.zeros(136, np.uint8), a=np.zeros(204, np.uint8), y=np.zeros((3, 2), np.float32), K=64,
                threads=1) | change
    with pytest.raises(ValueError, match=message):
        mod.q8_0_gemm(args["w"], args["a"], args["y"], args["K"], args["threads"])


def nll64(z, targets):
    top = z.max(axis=1)
    return np.log(np.exp(z - top[:, None]).sum(axis=1)) + top - z[np.arange(len(z)), targets]


@pytest.mark.parametrize("mod", MODULES, ids=lambda m: m.__name__)
@pytest.mark.parametrize("N,K,M", [(1, 32, 1), (37, 96, 13), (1100, 64, 6), (2080, 640, 5), (5000, 32, 9)])
def test_q8_0_nll_is_the_float64_log_softmax(mod, rng, N, K, M):
    """Sizes past a tile (32 rows) and a slice (1024); large logits, so that exps overflow
    unless shifted; every target column, first and last included."""
    w, a = q8_0_rows(rng, N, K), q8_0_rows(rng, M, K, scale=30.0)
    z = oracle(w, a, N, M, K)
    targets = rng.integers(0, N, M)
    targets[0], targets[-1] = 0, N - 1
    want = nll64(z, targets)
    out = np.full(M, np.nan)
    mod.q8_0_nll(w, a, targets, out, K, 1)
    # float32 logits (as the product's) and float32 sums of exps per slice of 1024
    np.testing.assert_allclose(out, want, rtol=2e-6, atol=2e-6 * np.abs(z).max() * (K // 32) + 1e-5)
    for threads in (2, 3):
        again = np.full(M, np.nan)
        mod.q8_0_nll(w, a, targets, again, K, threads)
        assert np.array_equal(again, out)


@pytest.mark.parametrize("mod", MODULES, ids=lambda m: m.__name__)
def test_q8_0_nll_checks_its_input(mod, rng):
    w, a = q8_0_rows(rng, 40, 64), q8_0_rows(rng, 3, 64)
    out = np.empty(3)
    with pytest.raises(ValueError, match="target 40 of row 1 is not in"):
        mod.q8_0_nll(w, a, np.array([0, 40, 1]), out, 64, 1)
    with pytest.raises(ValueError, match="not whole rows"):
        mod.q8_0_nll(w[:-1], a, np.array([0, 1, 2]), out, 64, 1)
    with pytest.raises(ValueError, match="room for 2"):
        mod.q8_0_nll(w, a, np.array([0, 1, 2]), out[:2], 64, 1)
    with pytest.raises(ValueError, match="row length 48"):
        mod.q8_0_nll(w, a, np.array([0, 1, 2]), out, 48, 1)
