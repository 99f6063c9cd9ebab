"""The forward pass's native float work (kernels/float_ops.h through iq1q.models.ops): RMS
norm, the gated activations, RoPE and max |x| against float64 (numpy) references, the same
bits from every kernel module the CPU runs and at every thread count, NaN carried, bad
shapes named."""

import importlib
import math

import numpy as np
import pytest

from iq1q import cpu
from iq1q.models import ops

# every kernel module this CPU can import: each compiles float_ops.h with its own flags
MODULES = ["iq1q._ref"] + [name for name, features in ops._MODULES if cpu.has(*features)]


def modules():
    return [importlib.import_module(m) for m in MODULES]


def norm64(x, w, eps):
    x = x.astype(np.float64)
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def gelu64(x):
    """ggml's 0.5 x (1 + tanh(u)), written x sigmoid(2u): the same function, without the
    cancellation of 1 + tanh(u) where u is very negative (float64 itself loses it there)."""
    x = x.astype(np.float64)
    u = math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)
    with np.errstate(over="ignore"):
        return x / (1.0 + np.exp(-2.0 * u))


def silu64(x):
    x = x.astype(np.float64)
    with np.errstate(over="ignore"):
        return x / (1.0 + np.exp(-x))


def test_rms_norm_is_the_float64_norm(rng):
    x = (rng.standard_normal((37, 643)) * 30).astype(np.float32)  # a row length past the 8 lanes
    w = rng.standard_normal(643).astype(np.float32)
    want = norm64(x, w, 1e-6)
    for m in modules():
        y = np.empty_like(x)
        m.rms_norm(x, w, y, 1e-6, 2)
        # the scale rounded to float32 and two float32 products: a few ulp of the result
        np.testing.assert_allclose(y, want, rtol=4e-7 * 4, atol=0)


@pytest.mark.parametrize("act,ref,z", [("gelu", gelu64, lambda x: 2 * math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)),
                                        ("silu", silu64, lambda x: x)])
def test_gated_activations_are_the_float64_forms(rng, act, ref, z):
    g = np.concatenate([rng.standard_normal(5000) * 4, np.linspace(-120, 120, 1001),
                        [0.0, -0.0, 1e-30, -1e-30, 88.5, -88.5]]).astype(np.float32)
    u = rng.standard_normal(g.size).astype(np.float32)
    want = ref(g) * u
    # x sigmoid(z) * u: exp within 2 ulp, a division and two products (1e-6), and exp(-z) off
    # by |z| times z's own float32 rounding; 1e-30 where exp's argument is clamped (|z| > 87)
    tol = (1e-6 + 3e-7 * np.abs(z(g.astype(np.float64)))) * np.abs(want) + 1e-30
    for m in modules():
        y = np.empty_like(g)
        m.gated(act, g, u, y, 2)
        bad = np.abs(y - want) > tol
        assert not bad.any(), (g[bad][:5], y[bad][:5], want[bad][:5])


def test_rope_is_the_float64_rotation(rng):
    T, heads, d, n_rot = 9, 3, 16, 12
    x = rng.standard_normal((T, heads, d)).astype(np.float32)
    theta = rng.uniform(-7, 7, (T, n_rot // 2))
    cos, sin = np.cos(theta).astype(np.float32), np.sin(theta).astype(np.float32)
    for neox in (True, False):
        want = x.astype(np.float64).copy()
        lo, hi = (np.arange(n_rot // 2), np.arange(n_rot // 2) + n_rot // 2) if neox else \
            (np.arange(0, n_rot, 2), np.arange(1, n_rot, 2))
        a, b = x[..., lo].astype(np.float64), x[..., hi].astype(np.float64)
        c, s = cos[:, None, :].astype(np.float64), sin[:, None, :].astype(np.float64)
        want[..., lo], want[..., hi] = a * c - b * s, a * s + b * c
        for m in modules():
            y = np.empty_like(x)
            m.rope(x.reshape(T, -1), cos, sin, y.reshape(T, -1), heads, d, n_rot, neox, 1)
            np.testing.assert_allclose(y, want, rtol=0, atol=2e-6)  # |x| < 6: two rounded products
            np.testing.assert_array_equal(y[..., n_rot:], x[..., n_rot:])


def test_every_module_and_thread_count_gives_the_same_bits(rng):
    x = rng.standard_normal((300, 640)).astype(np.float32)
    w = rng.standard_normal(640).astype(np.float32)
    theta = rng.uniform(-7, 7, (300, 32))
    cos, sin = np.cos(theta).astype(np.float32), np.sin(theta).astype(np.float32)
    results = []
    for m in modules():
        for threads in (1, 2, 3):
            n, g, r = np.empty_like(x), np.empty_like(x), np.empty_like(x)
            m.rms_norm(x, w, n, 1e-6, threads)
            m.gated("gelu", x.reshape(-1), w.repeat(300), g.reshape(-1), threads)
            m.rope(x, cos, sin, r, 10, 64, 64, True, threads)
            results.append((n, g, r))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("n", [0, 1, 15, 16, 17, 1000, 4099])
def test_max_abs_is_numpys_with_nan_kept(rng, n):
    """The perplexity table's largest |activation|: a NaN anywhere (in the 16 lanes or the
    tail) gives NaN, an infinity of either sign gives inf, no values give 0."""
    x = (rng.standard_normal(n) * 1e3).astype(np.float32)
    want = float(np.abs(x).max()) if n else 0.0
    for m in modules():
        assert m.max_abs(x) == want
        for at in {0, n // 2, n - 1} if n else ():
            y = x.copy()
            y[at] = -np.inf
            assert m.max_abs(y) == math.inf
            y[at] = np.nan
            assert math.isnan(m.max_abs(y))
    assert ops.max_abs(x.reshape(-1, 1)[::-1]) == want  # any shape and stride, as float32


def test_nan_and_inf_are_carried():
    g = np.array([np.nan, np.inf, 1.0], np.float32)
    for act in ("silu", "gelu"):
        y = ops.gated(act, g.copy(), np.ones(3, np.float32))
        assert np.isnan(y[0]) and y[1] == np.inf and np.isfinite(y[2])
    n = ops.rms_norm(np.array([[1.0, np.nan]], np.float32), np.ones(2, np.float32), 1e-6)
    assert np.isnan(n).all()


def test_the_model_functions_use_them(rng):
    """model.rms_norm and model.rope: the native ops on (T, heads, d) arrays."""
    from iq1q.models import model

    x = rng.standard_normal((5, 2, 8)).astype(np.float32)
    w = rng.standard_normal(8).astype(np.float32)
    np.testing.assert_allclose(model.rms_norm(x, w, 1e-5), norm64(x, w, 1e-5), rtol=2e-6)
    pos = np.arange(5)
    y = model.rope(x, pos, 8, 10000.0, 1.0, True)
    theta = pos[:, None] * 10000.0 ** (-np.arange(4) * 2.0 / 8)
    a, b = x[..., :4].astype(np.float64), x[..., 4:].astype(np.float64)
    c, s = np.cos(theta)[:, None], np.sin(theta)[:, None]
    np.testing.assert_allclose(y, np.concatenate([a * c - b * s, a * s + b * c], -1), atol=2e-6)


def test_bad_input_is_named(rng):
    m = ops.module()
    x = rng.standard_normal((4, 8)).astype(np.float32)
    t4 = np.ascontiguousarray(x[:, :4])
    with pytest.raises(ValueError, match="do not match"):
        m.rms_norm(x, np.ones(7, np.float32), np.empty_like(x), 1e-6, 1)
    with pytest.raises(ValueError, match="unknown activation 'relu'"):
        m.gated("relu", x.reshape(-1), x.reshape(-1), np.empty(32, np.float32), 1)
    with pytest.raises(ValueError, match="have 32, 31 and 32 values"):
        m.gated("gelu", x.reshape(-1), x.reshape(-1)[:31], np.empty(32, np.float32), 1)
    with pytest.raises(ValueError, match="rotated size 9"):
        m.rope(x, t4, t4, np.empty_like(x), 1, 8, 9, True, 1)
    with pytest.raises(ValueError, match="expected 4 x 4"):
        m.rope(x, t4[:, :3].copy(), t4[:, :3].copy(), np.empty_like(x), 1, 8, 8, True, 1)
    with pytest.raises(ValueError, match="threads must be at least 1"):
        m.rms_norm(x, np.ones(8, np.float32), np.empty_like(x), 1e-6, 0)
    with pytest.raises(ValueError, match="differ"):
        ops.gated("gelu", x, x[:2])
    with pytest.raises(ValueError, match="out must be"):
        ops.gated("gelu", x, x, out=np.empty((4, 8)))


def attention64(q, k, v, mask, scale):
    """Softmax attention in float64, every key scored (the mask hides the future)."""
    T, n_head, _ = q.shape
    group = n_head // k.shape[1]
    o = np.empty((T, n_head, v.shape[2]))
    for h in range(n_head):
        s = scale * (q[:, h].astype(np.float64) @ k[:, h // group].astype(np.float64).T) + mask
        p = np.exp(s - s.max(axis=1, keepdims=True))
        o[:, h] = (p / p.sum(axis=1, keepdims=True)) @ v[:, h // group]
    return o


@pytest.mark.parametrize("T,n_head,n_kv,d,dv", [(1, 1, 1, 8, 8), (70, 4, 2, 24, 40), (131, 4, 1, 64, 96),
                                                (37, 3, 3, 16, 7)])
def test_attention_is_the_float64_softmax(rng, T, n_head, n_kv, d, dv):
    """Sizes past every block: rows of 4 and 64 queries, 32 keys, 32 value columns."""
    q = rng.standard_normal((T, n_head, d)).astype(np.float32)
    k = rng.standard_normal((T, n_kv, d)).astype(np.float32) * 2
    v = rng.standard_normal((T, n_kv, dv)).astype(np.float32)
    pos = np.arange(T)
    for window in (0, 9):  # causal, and a sliding window as Gemma's local layers
        hidden = pos[None, :] > pos[:, None]
        if window:
            hidden |= pos[:, None] - pos[None, :] >= window
        mask = np.where(hidden, np.float32(-np.inf), np.float32(0))
        want = attention64(q, k, v, mask, 1 / math.sqrt(d))
        for m in modules():
            for threads in (1, 2):
                kt = np.zeros((n_kv, d, -(-T // m.ATTENTION_KEYS) * m.ATTENTION_KEYS), np.float32)
                kt[:, :, :T] = k.transpose(1, 2, 0)
                o = np.empty((T, n_head, dv), np.float32)
                m.attention(q, kt, v, mask, o, 1 / math.sqrt(d), threads)
                # float32 scores of |s| < ~20 and a weighted mean of |v| < 5
                np.testing.assert_allclose(o, want, rtol=0, atol=2e-5)


def test_attention_names_bad_shapes(rng):
    m = ops.module()
    q = np.zeros((5, 4, 8), np.float32)
    kt = np.zeros((2, 8, m.ATTENTION_KEYS), np.float32)
    v = np.zeros((5, 2, 8), np.float32)
    mask = np.zeros((5, 5), np.float32)
    with pytest.raises(ValueError, match="do not match"):
        m.attention(q, np.zeros((3, 8, m.ATTENTION_KEYS), np.float32), v, mask, np.empty((5, 4, 8), np.float32), 1.0, 1)
    with pytest.raises(ValueError, match="do not match"):
        m.attention(q, np.zeros((2, 8, 5), np.float32), v, mask, np.empty((5, 4, 8), np.float32), 1.0, 1)
    with pytest.raises(ValueError, match="mask 4 x 5"):
        m.attention(q, kt, v, mask[:4].copy(), np.empty((5, 4, 8), np.float32), 1.0, 1)
    with pytest.raises(ValueError, match="expected 5 x 4 x 8"):
        m.attention(q, kt, v, mask, np.empty((5, 4, 9), np.float32), 1.0, 1)
