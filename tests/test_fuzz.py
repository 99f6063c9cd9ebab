"""Fuzzing with hypothesis: every input either works or raises a documented exception
(ValueError, TypeError, or OverflowError for the fp16 hazard), and every backend agrees
with the reference, and with the float64 oracle, wherever the input is valid.

Inputs: random weight and activation bytes (so NaN, Inf and subnormal fp16 or float32
scales), random shapes, float dtypes and memory layouts, values from subnormal to past
the fp16 and float32 ranges, random importance matrices. The "ci" profile (conftest.py)
bounds the cases; ``pytest tests/test_fuzz.py --hypothesis-profile=long`` runs 25 times
as many.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import iq1q
import oracle

DOCUMENTED = (ValueError, TypeError, OverflowError)
# extreme random scales overflow the float32 casts of the oracle's float64 values, as they
# overflow the kernels' float32 products: equal infinities, and numpy warns about them
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                                        "ignore:invalid value encountered:RuntimeWarning")
TOL = 1e-5  # relative to the largest |output| (docs/spec.md §7.6)
SUBNORMAL_ERROR = 64 * float(np.finfo(np.float32).tiny)
BACKENDS = [b.name for b in iq1q.backends() if b.available]
# hypothesis draws the backends too: one test covers them all, and no case is drawn per backend
slow_ok = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _shapes(fmt: str, max_rows: int = 12):
    """(rows, K) of a format: rows a multiple of its row group, K of its block."""
    f = iq1q.format_info(fmt)
    step = 256 if fmt.startswith(("iq1_s", "iq1_m")) and f.rows_per_group == 1 else f.block_size
    return st.tuples(st.integers(0, max_rows // f.rows_per_group).map(lambda g: g * f.rows_per_group),
                     st.integers(1, 512 // step).map(lambda b: b * step))


@st.composite
def weight_bytes(draw, fmt: str | None = None, max_rows: int = 12):
    fmt = fmt or draw(st.sampled_from(iq1q.WEIGHT_FORMATS))
    rows, k = draw(_shapes(fmt, max_rows))
    size = rows * iq1q.format_info(fmt).row_size(k)
    data = bytearray(draw(st.binary(min_size=size, max_size=size)))
    for pos in draw(st.lists(st.integers(0, max(size - 1, 0)), max_size=6)) if size else ():
        data[pos] = 0xFF  # an fp16 scale's high byte of all ones is NaN: make them common
    return fmt, rows, k, bytes(data)


# finite floats from subnormal to past fp16; extremes mixed in by hypothesis
FLOATS = st.floats(-1e6, 1e6, width=32, allow_subnormal=True)


@st.composite
def float_matrix(draw, rows: int, k: int, elements=FLOATS):
    x = draw(hnp.arrays(np.float32, (rows, k), elements=elements))
    return x * np.float32(draw(st.sampled_from([1.0, 1e-38, 1e-20, 1e-3, 1e3])))


@st.composite
def layouts(draw, x: np.ndarray):
    """x, or the same values in another dtype or memory layout."""
    kind = draw(st.sampled_from(["same", "float64", "float16", "fortran", "reversed", "strided",
                                 "readonly", "misaligned"]))
    if kind == "float64":
        return x.astype(np.float64), x
    if kind == "float16":
        return x.astype(np.float16), x.astype(np.float16).astype(np.float32)
    if kind == "fortran":
        return np.asfortranarray(x), x
    if kind == "reversed":  # negative strides
        return np.ascontiguousarray(x[::-1, ::-1])[::-1, ::-1], x
    if kind == "strided":  # every other column of a wider array
        wide = np.zeros((x.shape[0], 2 * x.shape[1]), dtype=np.float32)
        wide[:, ::2] = x
        return wide[:, ::2], x
    if kind == "readonly":
        y = x.copy()
        y.flags.writeable = False
        return y, x
    if kind == "misaligned":  # float32 data one byte off its alignment
        buf = np.zeros(x.nbytes + 1, dtype=np.uint8)
        y = np.frombuffer(buf.data, dtype=np.float32, count=x.size, offset=1).reshape(x.shape)
        buf[1:] = x.view(np.uint8).reshape(-1)
        return y, x
    return x, x


def _assert_same_or_close(got, want, what):
    """Equal non-finite entries; finite ones within TOL of the largest finite |want|."""
    want = np.asarray(want, dtype=np.float64)
    got = np.asarray(got, dtype=np.float64)
    assert got.shape == want.shape
    fin = np.isfinite(want)
    assert (np.isfinite(got) == fin).all(), f"{what}: non-finite entries differ"
    np.testing.assert_array_equal(got[~fin], want[~fin])  # NaN == NaN here, inf signs too
    if fin.any():
        scale = np.abs(want[fin]).max()
        # float32 products that land below its smallest normal (1.2e-38) keep fewer bits: there
        # the error is bounded by a small multiple of that, not relative to the result
        assert np.abs(got[fin] - want[fin]).max() <= TOL * scale + SUBNORMAL_ERROR, what


# ---- weights --------------------------------------------------------------------

@slow_ok
@given(weight_bytes(), st.just(0) | st.integers(-3, 3))
def test_weight_bytes_of_any_content(case, cut):
    fmt, rows, k, data = case
    if cut:  # a truncated or overlong buffer is refused, naming the expected size
        bad = data[:max(len(data) + cut, 0)] if cut < 0 else data + bytes(cut)
        assume(len(bad) != len(data))
        with pytest.raises(ValueError, match="must be"):
            iq1q.QuantizedTensor.from_bytes(bad, fmt, (rows, k))
        return
    t = iq1q.QuantizedTensor.from_bytes(data, fmt, (rows, k))
    assert t.tobytes() == data
    w = t.dequantize()
    assert w.shape == (rows, k) and w.dtype == np.float32
    want = oracle.dequantize_weights(data, fmt, (rows, k)) if rows else np.zeros((0, k))
    np.testing.assert_allclose(w, want.astype(np.float32), rtol=2e-7, atol=0)  # NaN == NaN
    bad_rows = np.flatnonzero(~np.isfinite(want).all(axis=1))
    event(f"{fmt}: {'NaN/Inf' if bad_rows.size else 'finite'} scales")
    if bad_rows.size:  # NaN/Inf fp16 scales, in every weight format, and the rows named
        with pytest.raises(ValueError, match=rf"NaN or Inf fp16 scales in {bad_rows.size} row\(s\): "
                                             rf"{bad_rows[0]}\b"):
            t.validate()
    else:
        t.validate()


@slow_ok
@given(st.sampled_from(iq1q.WEIGHT_FORMATS), st.data())
def test_quantize_any_floats(fmt, data):
    rows, k = data.draw(_shapes(fmt, 8))
    x = data.draw(float_matrix(rows, k, st.floats(width=32, allow_nan=True, allow_infinity=True)
                               | FLOATS))
    arg, values = data.draw(layouts(x))
    imatrix = data.draw(st.none() | hnp.arrays(np.float32, k, elements=st.floats(0, float(np.float32(1e30)), width=32))
                        | st.just(np.zeros(k, np.float32)))
    try:
        t = iq1q.quantize(arg, fmt, imatrix=imatrix)
    except DOCUMENTED as e:
        # the only refusals of a well-shaped input: non-finite or unrepresentable weights
        assert not np.isfinite(values).all() or np.abs(values).max() > 1e5 or "fp16 scales" in str(e), e
        return
    assert np.isfinite(values).all()
    assert t.shape == (rows, k) and t.nbytes == rows * iq1q.format_info(fmt).row_size(k)
    t.validate()  # a tensor quantize returns never holds NaN/Inf scales
    # and the layout of the input does not matter
    assert t.tobytes() == iq1q.quantize(np.ascontiguousarray(values), fmt, imatrix=imatrix).tobytes()


# ---- activations ---------------------------------------------------------------

@slow_ok
@given(st.sampled_from(iq1q.ACTIVATION_FORMATS), st.sampled_from(BACKENDS), st.data())
def test_quantize_activations_any_floats(fmt, backend, data):
    rows, k = data.draw(_shapes(fmt, 6))
    x = data.draw(float_matrix(rows, k, FLOATS | st.floats(width=32)))
    arg, values = data.draw(layouts(x))
    if not np.isfinite(values).all():
        with pytest.raises(ValueError, match="NaN or Inf in activations"):
            iq1q.quantize_activations(arg, fmt, backend=backend)
        return
    got = iq1q.quantize_activations(arg, fmt, backend=backend)
    want = iq1q.quantize_activations(np.ascontiguousarray(values), fmt, backend="ref")
    assert got.tobytes() == want.tobytes()  # every backend's bytes are the reference's
    d = got.dequantize()
    np.testing.assert_array_equal(d, oracle.dequantize_activations(got.tobytes(), fmt, (rows, k))
                                  .astype(np.float32))
    reports = iq1q.check_activations(arg)
    assert set(reports) == {f for f in iq1q.ACTIVATION_FORMATS if k % iq1q.format_info(f).block_size == 0}
    if fmt in ("q8_0", "q8_1"):  # the hazard scan agrees with the bytes: it counts the inf fields
        size = iq1q.format_info(fmt).type_size
        fields = np.frombuffer(got.tobytes(), np.uint8).reshape(-1, size)[:, :size - 32].copy().view("<f2")
        assert reports[fmt].overflow_blocks == int((~np.isfinite(fields)).any(axis=1).sum())


@slow_ok
@given(st.sampled_from(iq1q.ACTIVATION_FORMATS), st.data())
def test_activation_bytes_of_any_content(fmt, data):
    rows, k = data.draw(_shapes(fmt, 6))
    size = rows * iq1q.format_info(fmt).row_size(k)
    raw = data.draw(st.binary(min_size=size, max_size=size))
    a = iq1q.QuantizedActivations.from_bytes(raw, fmt, (rows, k))
    np.testing.assert_array_equal(a.dequantize(), oracle.dequantize_activations(raw, fmt, (rows, k))
                                  .astype(np.float32))


# ---- matmul --------------------------------------------------------------------

@slow_ok
@given(weight_bytes(max_rows=20), st.sampled_from(iq1q.ACTIVATION_FORMATS), st.sampled_from(BACKENDS),
       st.integers(0, 9), st.data())
def test_matmul_any_weight_bytes(case, afmt, backend, m, data):
    """Random weight bytes (NaN/Inf/subnormal scales included) times quantized random
    activations: never a crash; with valid scales, every backend matches the oracle."""
    wfmt, n, k, wraw = case
    assume(k % iq1q.format_info(afmt).block_size == 0)
    W = iq1q.QuantizedTensor.from_bytes(wraw, wfmt, (n, k))
    x = data.draw(float_matrix(m, k, st.floats(-1e4, 1e4, width=32)))
    a = iq1q.quantize_activations(x, afmt)
    threads = data.draw(st.integers(1, 3))
    y = iq1q.matmul(a, W, backend=backend, overflow="ignore", threads=threads)
    assert y.shape == (m, n) and y.dtype == np.float32
    try:
        W.validate()
    except ValueError:
        return  # NaN/Inf scales: any output, but no crash and the right shape
    if m and any(r.overflow_blocks for r in iq1q.check_activations(x).values()):
        return  # fp16 fields at inf (the hazard matmul refuses by default): the same
    want = oracle.matmul_f64(a.tobytes(), afmt, wraw, wfmt, m, n, k) if m and n else np.zeros((m, n))
    _assert_same_or_close(y, want, f"{backend} {wfmt} x {afmt}")
    _assert_same_or_close(y, iq1q.matmul(a, W, backend="ref", overflow="ignore"), "against ref")


@slow_ok
@given(st.sampled_from(iq1q.WEIGHT_FORMATS), st.sampled_from(BACKENDS), st.data())
def test_matmul_float_inputs_any_layout(wfmt, backend, data):
    n, _ = data.draw(_shapes(wfmt, 12))
    k = 256 * data.draw(st.integers(1, 2))  # what every automatic activation format takes
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    W = iq1q.quantize(rng.standard_normal((n, k)).astype(np.float32), wfmt)
    x = data.draw(float_matrix(data.draw(st.integers(1, 6)), k, st.floats(-60, 60, width=32)))
    arg, values = data.draw(layouts(x))
    y = iq1q.matmul(arg, W, backend=backend, overflow="ignore")
    assert y.tobytes() == iq1q.matmul(np.ascontiguousarray(values), W, backend=backend,
                                      overflow="ignore").tobytes()


@slow_ok
@given(st.sampled_from(iq1q.WEIGHT_FORMATS), st.sampled_from(iq1q.ACTIVATION_FORMATS + ("auto", "q9_9")),
       st.integers(1, 3), st.integers(0, 2), st.sampled_from(["float32", "float64", "int32", "complex64",
                                                               "bool"]))
def test_matmul_bad_calls_raise_documented_errors(wfmt, afmt, kmul, ndim, dtype):
    W = iq1q.quantize(np.ones((4, 256), np.float32), wfmt)
    shape = [(), (256 * kmul - 32,), (2, 256 * kmul - 32)][ndim]  # wrong row length unless kmul fits
    x = np.ones(shape, dtype=dtype)
    try:
        iq1q.matmul(x, W, activation=afmt)
    except DOCUMENTED:
        return
    raise AssertionError(f"accepted activations of shape {shape} and dtype {dtype} as {afmt}")
