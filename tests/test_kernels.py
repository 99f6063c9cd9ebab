"""The GEMM kernels of every built-in backend (kernels/ref_gemm.h, kernels/x86.h) through
iq1q.matmul(backend=...); a backend this CPU cannot run is skipped.

Every (weight, activation) pair is checked on random valid bytes against the
independent float64 oracle (tests/oracle.py, written from docs/spec.md), and the
docs/spec.md §11 worked examples are checked against the spec's numbers. The oracle itself
is checked against docs/spec.md §11 and against gguf's dequantizers first.
"""

import itertools

import numpy as np
import pytest

import iq1q
import oracle
from spec_vectors import (IQ1_M_R4_EXACT, IQ1_M_R4_GROUP, IQ1_S_R4_EXACT, IQ1_S_R4_GROUP,
                          IQ1_S_R4_OVERFLOW_K128, Q8_K128_11_1, activation_11_1, activation_11_4,
                          q8_k128_11_4)

PAIRS = list(itertools.product(oracle.WEIGHT_FORMATS, oracle.ACTIVATION_FORMATS))
TOL = 1e-5  # relative to the largest |output| (docs/spec.md §7.6)


def _pair_id(pair):
    return f"{pair[0]}-{pair[1]}"


def _run(abytes, afmt, wbytes, wfmt, M, N, K, backend, **kw):
    qa = iq1q.QuantizedActivations.from_bytes(abytes, afmt, (M, K))
    qw = iq1q.QuantizedTensor.from_bytes(wbytes, wfmt, (N, K))
    y = iq1q.matmul(qa, qw, backend=backend, overflow="ignore", **kw)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32 and y.shape == (M, N)
    return y


def _assert_close(y, want, tol=TOL):
    want = np.asarray(want, dtype=np.float64)
    assert np.all(np.isfinite(y)), y
    scale = np.abs(want).max()
    err = np.abs(y.astype(np.float64) - want).max()
    assert err <= tol * scale, f"max error {err:.3g} > {tol} x {scale:.6g}"


# ---------------------------------------------------------------------------
# the oracle against docs/spec.md and gguf (so the kernel tests below mean something)

def test_oracle_grid_matches_spec_facts():
    g = oracle.grid()
    assert g.shape == (2048, 8)
    assert not g[1029].any() and (g[0] == -1).all() and (g[2047] == 1).all()
    vals, counts = np.unique(g, return_counts=True)
    assert dict(zip(vals.tolist(), counts.tolist())) == {-1: 4875, 0: 6649, 1: 4860}


def test_oracle_dequantizes_spec_11_examples():
    w = oracle.dequantize_weights(IQ1_S_R4_GROUP, "iq1_s_r4", (4, 128))
    np.testing.assert_array_equal(
        w[0, :16], [0.0625] * 9 + [0.5625, 0.0625, -0.4375, 0.0625, -0.4375, -0.4375, -0.4375])
    w = oracle.dequantize_weights(IQ1_M_R4_GROUP, "iq1_m_r4", (4, 128))
    np.testing.assert_array_equal(
        w[1, :16], [0.125] * 8 + [1.125, 1.125, 0.125, 1.125, 1.125, 1.125, 0.125, -0.875])
    assert not w[0, :16].any()
    x = oracle.dequantize_activations(Q8_K128_11_1, "q8_k128", (1, 128))
    assert np.abs(x[0] - activation_11_1()).max() < 0.04  # d/2 = 0.036


@pytest.mark.parametrize("group,wfmt,exact", [
    (IQ1_S_R4_GROUP, "iq1_s_r4", IQ1_S_R4_EXACT),
    (IQ1_M_R4_GROUP, "iq1_m_r4", IQ1_M_R4_EXACT),
], ids=["11.2-iq1_s_r4", "11.3-iq1_m_r4"])
def test_oracle_reproduces_spec_exact_values(group, wfmt, exact):
    y = oracle.matmul_f64(Q8_K128_11_1, "q8_k128", group, wfmt, 1, 4, 128)
    np.testing.assert_allclose(y[0], exact, rtol=0, atol=1e-8)


@pytest.mark.parametrize("wfmt", ["iq1_s", "iq1_m"])
def test_oracle_dequantize_matches_gguf(wfmt):
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    rng = np.random.default_rng(11)
    data = oracle.random_weights(rng, wfmt, 6, 1024)
    qtype = getattr(GGMLQuantizationType, wfmt.upper())
    want = dequantize(data.reshape(6, -1), qtype)
    got = oracle.dequantize_weights(data, wfmt, (6, 1024))
    np.testing.assert_array_equal(got, want.astype(np.float64))


def test_oracle_random_activations_are_consistent():
    rng = np.random.default_rng(12)
    for afmt in oracle.ACTIVATION_FORMATS:
        data = oracle.random_activations(rng, afmt, 3, 512)
        assert data.dtype == np.uint8 and data.size == 3 * oracle.row_size(afmt, 512)
        d, q, raw = oracle._act_parts(data, afmt, (3, 512))
        assert np.all(d > 0) and np.all(np.isfinite(d)) and np.abs(q).max() <= 127
        if afmt == "q8_k128":
            np.testing.assert_array_equal(raw[..., 4:12].copy().view("<i2"), q.reshape(3, 4, 4, 32).sum(-1))
        if afmt == "q8_k":
            np.testing.assert_array_equal(raw[..., 264:296].copy().view("<i2"), q.reshape(3, 2, 16, 16).sum(-1))


# ---------------------------------------------------------------------------
# all 16 pairs on random valid bytes

def _shapes(pair):
    kmin = oracle.min_k(*pair)
    # M = 1 and 5; N = 4 and 12; the pair's smallest K, a medium one, and one that
    # spans more than one 4096-column decode chunk of the reference kernels
    return [(1, 4, kmin), (5, 12, kmin), (5, 4, 1024), (1, 12, 1024), (3, 4, 4096 + 768)]


@pytest.mark.parametrize("pair", PAIRS, ids=_pair_id)
def test_pair_matches_oracle_on_random_bytes(pair, backend):
    wfmt, afmt = pair
    rng = np.random.default_rng(PAIRS.index(pair) + 100)
    for M, N, K in _shapes(pair):
        wbytes = oracle.random_weights(rng, wfmt, N, K)
        abytes = oracle.random_activations(rng, afmt, M, K)
        y = _run(abytes, afmt, wbytes, wfmt, M, N, K, backend=backend)
        _assert_close(y, oracle.matmul_f64(abytes, afmt, wbytes, wfmt, M, N, K))


@pytest.mark.parametrize("pair", PAIRS, ids=_pair_id)
def test_pair_threads_give_identical_results(pair, backend):
    """Row ranges split across threads (the kernels run concurrently) change nothing."""
    wfmt, afmt = pair
    rng = np.random.default_rng(PAIRS.index(pair) + 200)
    M, N, K = 3, 264, oracle.min_k(wfmt, afmt) * 2
    wbytes = oracle.random_weights(rng, wfmt, N, K)
    abytes = oracle.random_activations(rng, afmt, M, K)
    y1 = _run(abytes, afmt, wbytes, wfmt, M, N, K, threads=1, backend=backend)
    y4 = _run(abytes, afmt, wbytes, wfmt, M, N, K, threads=4, backend=backend)
    np.testing.assert_array_equal(y1, y4)
    _assert_close(y1, oracle.matmul_f64(abytes, afmt, wbytes, wfmt, M, N, K))


@pytest.mark.parametrize("wfmt", oracle.WEIGHT_FORMATS)
def test_only_iq1_s_r4_reads_q8_1_s(wfmt, backend):
    """Every pair but iq1_s_r4 x q8_1 derives its sums from d and the quants."""
    rng = np.random.default_rng(7)
    M, N, K = 2, 4, 256
    wbytes = oracle.random_weights(rng, wfmt, N, K)
    abytes = oracle.random_activations(rng, "q8_1", M, K)
    good = _run(abytes, "q8_1", wbytes, wfmt, M, N, K, backend=backend)
    bad = abytes.reshape(M, K // 32, 36).copy()
    bad[:, 0, 2:4] = np.frombuffer(np.float16(np.inf).tobytes(), np.uint8)
    bad[:, 1, 2:4] = np.frombuffer(np.float16(-np.inf).tobytes(), np.uint8)
    bad[:, 2:, 2:4] = 0x55
    y = _run(bad.reshape(-1), "q8_1", wbytes, wfmt, M, N, K, backend=backend)
    if wfmt == "iq1_s_r4":
        assert np.isnan(y).all()
    else:
        np.testing.assert_array_equal(y, good)


@pytest.mark.parametrize("wfmt", oracle.WEIGHT_FORMATS)
def test_q8_k_float_sum_is_not_read(wfmt, backend):
    rng = np.random.default_rng(8)
    M, N, K = 2, 4, 512
    wbytes = oracle.random_weights(rng, wfmt, N, K)
    abytes = oracle.random_activations(rng, "q8_k", M, K)
    good = _run(abytes, "q8_k", wbytes, wfmt, M, N, K, backend=backend)
    bad = abytes.reshape(M, K // 256, 296).copy()
    bad[:, :, 4:8] = np.frombuffer(np.float32(np.nan).tobytes(), np.uint8)
    np.testing.assert_array_equal(_run(bad.reshape(-1), "q8_k", wbytes, wfmt, M, N, K, backend=backend), good)


# ---------------------------------------------------------------------------
# docs/spec.md §11 worked examples

SPEC_11_1 = Q8_K128_11_1


@pytest.mark.parametrize("group,wfmt,exact", [
    (IQ1_S_R4_GROUP, "iq1_s_r4", IQ1_S_R4_EXACT),
    (IQ1_M_R4_GROUP, "iq1_m_r4", IQ1_M_R4_EXACT),
], ids=["11.2-iq1_s_r4", "11.3-iq1_m_r4"])
def test_spec_11_groups(group, wfmt, exact, backend):
    w = group
    assert len(w) == {"iq1_s_r4": 104, "iq1_m_r4": 120}[wfmt]
    assert len(SPEC_11_1) == 140
    y = _run(SPEC_11_1, "q8_k128", w, wfmt, 1, 4, 128, backend=backend)
    _assert_close(y[0], exact)
    # the same through matmul's own quantization of x
    qw = iq1q.QuantizedTensor.from_bytes(w, wfmt, (4, 128))
    y2 = iq1q.matmul(activation_11_1()[None, :], qw, activation="q8_k128", backend=backend)
    np.testing.assert_array_equal(y2, y)


def _q8_1_blocks_11_4() -> bytes:
    """docs/spec.md §11.4's q8_1 encoding of its activation, built from the description:
    blocks 0 and 1 as the spec gives them (s = +-inf), blocks 2 and 3 a valid
    encoding of x_64..127 (d = fp16(amax/127), q = rint(x*127/amax), s = fp16(d*sum q))."""
    b0 = bytes.fromhex("ec60007c") + bytes([0x7F] + [0x06] * 31)
    b1 = bytes.fromhex("ec6000fc") + bytes([0x81] + [0xFA] * 31)
    out = [b0, b1]
    x = activation_11_4()
    for k in (2, 3):
        xb = x[32 * k:32 * k + 32]
        amax = np.abs(xb).max()
        d = amax / np.float32(127)
        q = np.rint(xb * (np.float32(127) / amax)).astype(np.int64)
        s = np.float16(d * np.float32(q.sum()))
        out.append(np.float16(d).tobytes() + s.tobytes() + q.astype(np.int8).tobytes())
    return b"".join(out)


def test_spec_11_4_q8_1_gives_nan_in_all_rows(backend):
    w = IQ1_S_R4_GROUP
    y = _run(_q8_1_blocks_11_4(), "q8_1", w, "iq1_s_r4", 1, 4, 128, backend=backend)
    assert np.isnan(y).all(), y
    assert np.isnan(oracle.matmul_f64(_q8_1_blocks_11_4(), "q8_1", w, "iq1_s_r4", 1, 4, 128)).all()
    # the same with iq1q's own q8_1 quantization of the docs/spec.md §11.4 activation
    qa = iq1q.quantize_activations(activation_11_4()[None, :], "q8_1")
    qw = iq1q.QuantizedTensor.from_bytes(w, "iq1_s_r4", (4, 128))
    y2 = iq1q.matmul(qa, qw, backend=backend, overflow="ignore")
    assert y2.shape == (1, 4) and np.isnan(y2).all(), y2


def test_spec_11_4_other_pairs_stay_finite_on_the_same_q8_1(backend):
    """Only the historical kernel reads the infinite s."""
    abytes = _q8_1_blocks_11_4()
    w = IQ1_M_R4_GROUP
    y = _run(abytes, "q8_1", w, "iq1_m_r4", 1, 4, 128, backend=backend)
    _assert_close(y, oracle.matmul_f64(abytes, "q8_1", w, "iq1_m_r4", 1, 4, 128))
    rng = np.random.default_rng(9)
    ab = abytes * 2  # K = 256 for the plain formats
    for wfmt in ("iq1_s", "iq1_m"):
        w = oracle.random_weights(rng, wfmt, 4, 256)
        y = _run(ab, "q8_1", w, wfmt, 1, 4, 256, backend=backend)
        _assert_close(y, oracle.matmul_f64(ab, "q8_1", w, wfmt, 1, 4, 256))


def test_spec_11_4_q8_k128_is_finite(backend):
    w = IQ1_S_R4_GROUP
    a = q8_k128_11_4()
    y = _run(a, "q8_k128", w, "iq1_s_r4", 1, 4, 128, backend=backend)
    _assert_close(y[0], IQ1_S_R4_OVERFLOW_K128)  # ik_llama's float output
    _assert_close(y, oracle.matmul_f64(a, "q8_k128", w, "iq1_s_r4", 1, 4, 128))
    # and through matmul's own quantization (the default activation for _r4)
    qw = iq1q.QuantizedTensor.from_bytes(w, "iq1_s_r4", (4, 128))
    y2 = iq1q.matmul(activation_11_4()[None, :], qw, backend=backend)
    np.testing.assert_array_equal(y2, y)
