"""Matrices read in their own bytes (iq1q.models.rows): the same values as the gguf
package's dequantization, the whole matrix never as float32, and perplexity's running
log-sum-exp over vocabulary slices equal to a float64 softmax over whole rows."""

import tracemalloc

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

import iq1q  # noqa: E402
from iq1q import gguf_io, plugins, registry  # noqa: E402
from iq1q.models import perplexity, rows  # noqa: E402
from iq1q.models.chunks import chunks  # noqa: E402
from iq1q.models.model import Linear, load  # noqa: E402
from iq1q.models.rows import RowMatrix  # noqa: E402

T = gguf.GGMLQuantizationType


def raw_tensor(x: np.ndarray, qtype) -> gguf_io.RawTensor:
    q = np.ascontiguousarray(gguf.quants.quantize(x, qtype)).reshape(-1).view(np.uint8)
    return gguf_io.RawTensor(int(qtype), x.shape, q)


@pytest.mark.parametrize("qtype", [T.Q8_0, T.F16, T.BF16], ids=lambda t: t.name)
def test_rows_are_the_gguf_package_values(rng, qtype, monkeypatch):
    x = rng.standard_normal((37, 256)).astype(np.float32)
    r = raw_tensor(x, qtype)
    want = gguf.quants.dequantize(r.data.reshape(37, -1), qtype).astype(np.float32)
    m = RowMatrix("w", r)
    ids = np.array([5, 0, 36, 5, 17])
    np.testing.assert_array_equal(m.take(ids), want[ids])
    got = np.concatenate([block for _, _, block in m.slices(step=8)])
    np.testing.assert_array_equal(got, want)
    h = rng.standard_normal((3, 256)).astype(np.float32)
    monkeypatch.setattr(rows, "SLICE_ROWS", 8)  # a product of 5 pieces, on 1 and 2 threads
    lin, hq = Linear("w", m), h
    if qtype == T.Q8_0:  # as ggml: h quantized to q8_0 (whether a backend serves Q8_0 or not)
        hq = gguf.quants.dequantize(gguf.quants.quantize(h, T.Q8_0), T.Q8_0)
    for threads in (1, 2):
        np.testing.assert_allclose(lin(h, "auto", threads, None), hq.astype(np.float64) @ want.T, rtol=1e-5, atol=1e-5)
    piece = lin.product(h, "auto", 1, exact=True)  # the float model's head: h as it is
    np.testing.assert_allclose(np.concatenate([piece(a, b) for a, b in lin.ranges()], axis=1),
                               h.astype(np.float64) @ want.T, rtol=1e-5, atol=1e-5)

class Q8Recorder:
    """A throw-away plugin whose backend multiplies Q8_0 weights in float64 from the bytes."""

    name = "q8-recorder"

    def __init__(self):
        self.calls = []

    def product(self, w, a, y, K, threads):
        self.calls.append((y.shape, threads))
        nb = K // 32
        wd, wq = _q8_0_parts(w, nb)
        ad, aq = _q8_0_parts(a, nb)
        y[:] = np.einsum("mb,nb,mbi,nbi->mn", ad, wd, aq, wq)

    @iq1q.hookimpl
    def iq1q_register_backends(self, register):
        register(iq1q.Backend(self.name, stored_products={"Q8_0": self.product}, priority=1000))


def _q8_0_parts(data, nblk):
    """(scales, quants) of q8_0 rows as float64, from the bytes: fp16 d, then 32 int8."""
    b = np.asarray(data).reshape(-1, nblk, 34)
    return b[..., :2].copy().view(np.float16)[..., 0].astype(np.float64), b[..., 2:].view(np.int8).astype(np.float64)


def test_q8_0_rows_go_to_the_backend_that_serves_them(rng, monkeypatch):
    """A plugin's Q8_0 product gets the weight bytes and x quantized to q8_0, one thread a
    piece; NaN in x takes the float path, which carries it; a bad stored type is named."""
    x = rng.standard_normal((40, 64)).astype(np.float32)
    r = raw_tensor(x, T.Q8_0)
    want = gguf.quants.dequantize(r.data.reshape(40, -1), T.Q8_0).astype(np.float64)
    h = rng.standard_normal((3, 64)).astype(np.float32)
    hq = gguf.quants.dequantize(gguf.quants.quantize(h, T.Q8_0), T.Q8_0).astype(np.float64)
    monkeypatch.setattr(rows, "SLICE_ROWS", 16)
    rec = Q8Recorder()
    plugins.pm.register(rec, name="test-q8-recorder")
    try:
        assert registry.stored_product("Q8_0")[0] == "q8-recorder"
        np.testing.assert_allclose(Linear("w", RowMatrix("w", r))(h, "auto", 2, None), hq @ want.T, rtol=1e-6)  # float32 out
        assert sorted(rec.calls) == [((3, 8), 1), ((3, 16), 1), ((3, 16), 1)]
        h[1, 5] = np.nan
        y = Linear("w", RowMatrix("w", r))(h, "auto", 2, None)
        assert len(rec.calls) == 3 and np.isnan(y[1]).all() and np.isfinite(y[[0, 2]]).all()
    finally:
        plugins.pm.unregister(rec)
    with pytest.raises(ValueError, match="'Q4_K' is not one of Q8_0"):
        iq1q.Backend("bad", stored_products={"Q4_K": print})
    with pytest.raises(ValueError, match="unknown stored type 'F16'"):
        registry.stored_product("F16")
    # no backend serves Q8_0: the same product from the dequantized values
    monkeypatch.setattr(registry, "stored_product", lambda kind, backend=None: None)
    h[1, 5] = 0.5
    hq = gguf.quants.dequantize(gguf.quants.quantize(h, T.Q8_0), T.Q8_0).astype(np.float64)
    np.testing.assert_allclose(Linear("w", RowMatrix("w", r))(h, "auto", 2, None), hq @ want.T, rtol=1e-5, atol=1e-5)


def test_iq1_rows_come_from_their_four_row_groups(rng):
    W = iq1q.quantize(rng.standard_normal((12, 256)).astype(np.float32), "iq1_s_r4")
    m = RowMatrix("w", W)
    ids = np.array([11, 2, 3, 2, 8])
    np.testing.assert_array_equal(m.take(ids), W.dequantize()[ids])
    assert [(a, b) for a, b, _ in m.slices(step=6)] == [(0, 4), (4, 8), (8, 12)]  # whole groups


def test_a_q8_0_embedding_is_never_a_float_copy(tmp_path, monkeypatch):
    """A model whose 4096 x 256 embedding is Q8_0 (and its tied head) loads and runs with far
    less than the 4 MiB a float32 copy would take (tracemalloc: numpy's allocations), the head
    dequantized 512 rows at a time."""
    import gguf_models  # the tests' GGUF builders

    monkeypatch.setattr(rows, "SLICE_ROWS", 512)
    path = tmp_path / "m.gguf"
    gguf_models.tiny_llama(path, n_embd=256, n_vocab=4096, qtype=T.Q8_0)
    tracemalloc.start()
    model = load(path)
    kept = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    model.forward([1, 2, 3])
    used = tracemalloc.get_traced_memory()[1] - kept
    tracemalloc.stop()
    embedding = 4096 * 256 * 4  # its float32 copy
    assert kept < embedding / 2 and used < embedding / 2, f"kept {kept}, a forward used {used} bytes"


def test_running_log_sum_exp_over_slices_equals_a_whole_softmax(tmp_path, monkeypatch):
    """The head in slices of 3 vocabulary rows (the tiny vocabulary is 8): the NLLs of a
    perplexity run equal a float64 softmax over each position's whole logits."""
    import gguf_models

    path = tmp_path / "m.gguf"
    gguf_models.tiny_llama(path, n_vocab=8, qtype=T.Q8_0, output=True)
    model = load(path)
    ids = [1, 5, 2, 7, 3, 3, 0, 6, 4, 1]
    z = model.forward(ids).astype(np.float64)
    want = np.log(np.exp(z[:-1] - z[:-1].max(1, keepdims=True)).sum(1)) + z[:-1].max(1) - z[np.arange(9), ids[1:]]
    monkeypatch.setattr(rows, "SLICE_ROWS", 3)
    c = chunks(ids[1:], 10, ids[0])[0]
    got = perplexity._nll(model, model.hidden(c.tokens)[:-1], c.tokens[1:], None)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)  # the head's own kernel, where there is one
    monkeypatch.setattr(registry, "stored_nll", lambda kind, backend=None: None)
    got = perplexity._nll(model, model.hidden(c.tokens)[:-1], c.tokens[1:], None)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)  # the slices


class NLLRecorder:
    """A throw-away plugin that serves the Q8_0 head's log-sum-exp in float64 from the bytes."""

    name = "nll-recorder"

    def __init__(self):
        self.calls = []

    def nll(self, w, a, targets, out, K, threads):
        self.calls.append((len(targets), threads))
        nb = K // 32
        wd, wq = _q8_0_parts(w, nb)
        ad, aq = _q8_0_parts(a, nb)
        z = np.einsum("mb,nb,mbi,nbi->mn", ad, wd, aq, wq)
        top = z.max(axis=1)
        out[:] = np.log(np.exp(z - top[:, None]).sum(axis=1)) + top - z[np.arange(len(targets)), targets]

    @iq1q.hookimpl
    def iq1q_register_backends(self, register):
        register(iq1q.Backend(self.name, stored_nlls={"Q8_0": self.nll}, priority=1000))


def test_the_head_log_sum_exp_goes_to_the_backend_that_serves_it(tmp_path):
    """A plugin's Q8_0 log-sum-exp gets the head's bytes, the hidden states quantized to q8_0
    and the targets, and its NLLs are the run's; NaN input does not go there (the slices
    carry it); a bad stored type is named."""
    import gguf_models

    path = tmp_path / "m.gguf"
    gguf_models.tiny_llama(path, n_vocab=8, qtype=T.Q8_0, output=True)
    model = load(path, threads=2)
    h = model.hidden([1, 5, 2, 7, 3])
    targets = np.array([5, 2, 7, 3])
    rec = NLLRecorder()
    plugins.pm.register(rec, name="test-nll-recorder")
    try:
        assert registry.stored_nll("Q8_0")[0] == "nll-recorder"
        got = perplexity._nll(model, h[:-1], targets, None)
        assert rec.calls == [(4, 2)]
        z = Linear("x", model.output._rows)(h[:-1], "auto", 1, None).astype(np.float64)  # via q8_0 too
        want = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1) - z[np.arange(4), targets]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        bad = h[:-1].copy()
        bad[0, 0] = np.nan
        assert np.isnan(perplexity._nll(model, bad, targets, None)[0]) and len(rec.calls) == 1
    finally:
        plugins.pm.unregister(rec)
    with pytest.raises(ValueError, match="stored_nlls: 'Q4_K' is not one of Q8_0"):
        iq1q.Backend("bad", stored_nlls={"Q4_K": print})
    with pytest.raises(ValueError, match="unknown stored type 'F16'"):
        registry.stored_nll("F16")
