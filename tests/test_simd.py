"""The SIMD backends against the reference backend, and how they are chosen.

Kernel parity with the float64 oracle on random bytes is in test_kernels.py
(run for every backend); here: realistic quantized data over the shapes that
exercise the SIMD code's tiles, chunks and row blocks, activation bytes on
awkward inputs, and CPU-feature masking.
"""

import itertools
import json
import subprocess
import textwrap

import numpy as np
import pytest

import iq1q

PAIRS = list(itertools.product(iq1q.WEIGHT_FORMATS, iq1q.ACTIVATION_FORMATS))
TOL = 1e-5  # relative to the largest |output| (docs/spec.md §7.6)


@pytest.fixture
def simd(backend):
    if backend == "ref":
        pytest.skip("the reference itself")
    return backend


@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: f"{p[0]}-{p[1]}")
def test_agrees_with_ref(pair, simd, rng):
    wfmt, afmt = pair
    # N not a multiple of 8 (a partial tile), K past one 1024-column chunk, M not a
    # multiple of the 4 or 8 rows run together
    for M, N, K in [(1, 12, 1280), (70, 20, 1280), (9, 36, 256)]:
        w = rng.standard_normal((N, K)).astype(np.float32)
        x = (rng.standard_normal((M, K)) * rng.uniform(0.1, 10, (M, 1))).astype(np.float32)
        W = iq1q.quantize(w, wfmt)
        qa = iq1q.quantize_activations(x, afmt, backend="ref")
        want = iq1q.matmul(qa, W, backend="ref", overflow="ignore")
        got = iq1q.matmul(qa, W, backend=simd, overflow="ignore")
        err = np.abs(got.astype(np.float64) - want).max()
        assert err <= TOL * np.abs(want).max(), (M, N, K, err)


@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: f"{p[0]}-{p[1]}")
def test_few_and_many_rows_give_the_same_bits(pair, simd, rng):
    """A call of few activation rows makes each weight operand where it is used, one of many
    expands them once. On AVX2, from five rows on, both read biased quants q + 128 with no
    group-sum correction (four rows and five: either side of that switch); on AVX-512, one
    or two rows run one tile per pass and more run pairs of tiles (20 rows: an odd last
    tile). The many rows are more than one block the driver expands for (450 at K = 1280: 408
    rows, as many as 512 KiB of quants hold, then 42). All reach the same exact integer per
    block and take the same float steps."""
    wfmt, afmt = pair
    W = iq1q.quantize(rng.standard_normal((20, 1280)).astype(np.float32), wfmt)
    x = (rng.standard_normal((450, 1280)) * rng.uniform(0.1, 10, (450, 1))).astype(np.float32)
    qa = iq1q.quantize_activations(x, afmt, backend="ref")
    many = iq1q.matmul(qa, W, backend=simd, overflow="ignore")
    for lo, n in ((0, 1), (1, 1), (2, 2), (4, 3), (12, 4), (20, 5), (7, 8), (405, 6), (449, 1)):
        few = iq1q.matmul(iq1q.quantize_activations(x[lo:lo + n], afmt, backend="ref"), W, backend=simd,
                          overflow="ignore")
        np.testing.assert_array_equal(few, many[lo:lo + n])


@pytest.mark.parametrize("wfmt", iq1q.WEIGHT_FORMATS)
def test_prepared_tensors_give_the_same_bits(wfmt, simd, rng):
    """A prepared tensor hands the kernels its tiles, made once; an unprepared one has them
    decoded from its ggml bytes panel by panel in every call. The operands are the same."""
    W = iq1q.quantize(rng.standard_normal((20, 1280)).astype(np.float32), wfmt)
    for M in (1, 3, 9, 150):
        x = (rng.standard_normal((M, 1280)) * rng.uniform(0.1, 10, (M, 1))).astype(np.float32)
        plain = iq1q.matmul(x, W, backend=simd)
        assert W.prepare(backend=simd) is W and W.prepared_bytes > 0
        np.testing.assert_array_equal(iq1q.matmul(x, W, backend=simd), plain)
        W.release()
        assert W.prepared_bytes == 0


def test_results_do_not_depend_on_threads(simd, rng):
    W = iq1q.quantize(rng.standard_normal((200, 512)).astype(np.float32), "iq1_m_r4")
    x = rng.standard_normal((33, 512)).astype(np.float32)
    y1 = iq1q.matmul(x, W, backend=simd, threads=1)
    for t in (2, 3, 7):
        np.testing.assert_array_equal(iq1q.matmul(x, W, backend=simd, threads=t), y1)


def test_weights_keep_ggml_bytes(simd, rng):
    W = iq1q.quantize(rng.standard_normal((8, 256)).astype(np.float32), "iq1_s_r4")
    before = W.tobytes()
    iq1q.matmul(rng.standard_normal((2, 256)).astype(np.float32), W, backend=simd)
    assert W.tobytes() == before and len(before) == 8 * iq1q.format_info("iq1_s_r4").row_size(256)


def _awkward_activations(rng):
    x = rng.standard_normal((12, 512)).astype(np.float32)
    x[0] = 0.0
    x[1, :128] = -0.0
    x[2] = np.round(x[2] * 2) / 2 * (127 / 2)  # exact .5 ties after scaling
    x[3] *= np.float32(1e-30)
    x[4] *= np.float32(1e6)
    x[5, 7] = 3.0e38
    x[6, ::32] = 80000.0  # q8_1's s overflows
    x[7] = np.float32(1e-41)  # subnormal inputs
    x[8, 100] = np.float32(-1e-40)
    return x


@pytest.mark.parametrize("fmt", iq1q.ACTIVATION_FORMATS)
def test_activation_bytes_equal_ref(fmt, simd, rng):
    x = _awkward_activations(rng)
    want = iq1q.quantize_activations(x, fmt, backend="ref").tobytes()
    assert iq1q.quantize_activations(x, fmt, backend=simd).tobytes() == want
    for t in (1, 2):
        assert iq1q.quantize_activations(x, fmt, backend=simd, threads=t).tobytes() == want


@pytest.mark.parametrize("fmt", iq1q.ACTIVATION_FORMATS)
def test_activation_nan_row_is_named(fmt, simd, rng):
    x = rng.standard_normal((300, 256)).astype(np.float32)
    x[211, 5] = np.inf
    with pytest.raises(ValueError, match="first in row 211"):
        iq1q.quantize_activations(x, fmt, backend=simd, threads=2)


def test_q8_1_overflow_nans_reproduce(simd, rng):
    """docs/spec.md §11.4 on a whole matrix: the historical kernel turns the rows with an
    overflowing block into NaN, on the SIMD backends as on the reference."""
    W = iq1q.quantize(rng.standard_normal((16, 256)).astype(np.float32), "iq1_s_r4")
    x = rng.standard_normal((3, 256)).astype(np.float32)
    x[1, :32], x[1, 32:64] = 4000.0, -4000.0
    for be in ("ref", simd):
        y = iq1q.matmul(x, W, activation="q8_1", backend=be, overflow="ignore")
        assert np.isnan(y[1]).all() and np.isfinite(y[[0, 2]]).all()
        assert np.isfinite(iq1q.matmul(x, W, activation="q8_k128", backend=be)).all()


def _in_subprocess(python, env: dict, code: str) -> dict:
    out = subprocess.run([python, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         env=env, check=True)
    return json.loads(out.stdout)


REPORT = """
    import json, sys, iq1q
    print(json.dumps({"available": [b.name for b in iq1q.backends() if b.available],
                      "in_use": iq1q.get_backend(),
                      "modules": sorted(m for m in sys.modules if m.startswith(("iq1q._avx", "iq1q._neon"))),
                      "table": sorted(set(iq1q.kernel_table().values()))}))
"""


def test_masking_avx2_leaves_only_ref(python_subprocess, monkeypatch):
    import os

    if not iq1q.cpu.detected()["avx2"]:
        pytest.skip("not an x86-64 CPU with AVX2")
    # installed plugins off: only the built-in backends are under test
    env = dict(os.environ, IQ1Q_DISABLE_CPU_FEATURES="avx2", IQ1Q_LOAD_PLUGINS="")
    got = _in_subprocess(python_subprocess, env, REPORT)
    # a masked feature counts as absent everywhere: no kernel module built for it is imported
    assert got == {"available": ["ref"], "in_use": "ref", "modules": [], "table": ["ref"]}


def test_masking_avx512_falls_back_to_avx2(python_subprocess):
    import os

    if not iq1q.cpu.has("avx2", "fma", "f16c"):
        pytest.skip("no AVX2 here")
    env = dict(os.environ, IQ1Q_DISABLE_CPU_FEATURES=" AVX512F , avx512vnni")
    got = _in_subprocess(python_subprocess, env, REPORT)
    assert got["in_use"] == "avx2" and "avx512" not in got["available"]
    assert got["modules"] == ["iq1q._avx2"]


def _neon_backends(monkeypatch, masked: str) -> dict:
    """The neon plugin's backends as it registers them under IQ1Q_DISABLE_CPU_FEATURES=masked
    (read at registration, so calling its hook again shows the mask in this process)."""
    from iq1q.builtin_backends import neon

    monkeypatch.setenv("IQ1Q_DISABLE_CPU_FEATURES", masked)
    got = {}
    neon.iq1q_register_backends(register=lambda b: got.setdefault(b.name, b))
    return got


def test_masking_dotprod_leaves_neon_plain(monkeypatch):
    got = _neon_backends(monkeypatch, "dotprod")
    assert not got["neon"].is_available() and "needs" in got["neon"].description
    assert "dotprod" in got["neon"].description.split("needs")[1]
    # neon_plain needs no dotprod: it serves wherever NEON is (every AArch64 CPU)
    assert got["neon_plain"].is_available() == iq1q.cpu.has("neon")
    if iq1q.cpu.has("neon"):
        assert len(got["neon_plain"].kernels) == len(PAIRS)


def test_masking_neon_leaves_no_neon_backend(monkeypatch):
    got = _neon_backends(monkeypatch, "neon")
    assert not got["neon"].is_available() and not got["neon_plain"].is_available()
    assert not got["neon"].kernels and not got["neon_plain"].kernels


def test_neon_backends_follow_the_cpu():
    table = {b.name: b for b in iq1q.backends()}
    assert table["neon"].available == iq1q.cpu.has("neon", "dotprod")
    assert table["neon_plain"].available == iq1q.cpu.has("neon")
    if iq1q.cpu.has("neon", "dotprod"):  # the dotprod kernels serve by default
        higher = [b.name for b in iq1q.backends() if b.available and b.priority > table["neon"].priority]
        assert iq1q.get_backend() in ["neon", *higher]


def test_unavailable_simd_backend_says_why():
    for b in iq1q.backends():
        if b.name in ("avx2", "avx512", "neon", "neon_plain") and not b.available:
            assert "needs" in b.description and not b.pairs
            with pytest.raises(ValueError, match=f"backend {b.name!r} is not available"):
                iq1q.get_backend(b.name)
