"""`iq1q quantize` on small models the tests write, read back with the gguf package."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
pytest.importorskip("tqdm")

import iq1q  # noqa: E402
from iq1q import gguf_io  # noqa: E402
from iq1q.cli import main  # noqa: E402
from iq1q.models.imatrix import ImatrixError, load as load_imatrix  # noqa: E402
from iq1q.models.quantize import QuantizeError, quantize_model  # noqa: E402

from gguf import GGMLQuantizationType as T, GGUFReader  # noqa: E402
from gguf_models import ROOT_VECTORS, add, tiny_llama, write_gguf_imatrix, write_legacy_imatrix  # noqa: E402


def source_values(path: Path) -> dict[str, np.ndarray]:
    """The source's float values as the gguf package reads and dequantizes them."""
    return {t.name: np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), np.float32)
            for t in GGUFReader(path).tensors}


def write_model(path: Path, tensors: dict[str, tuple[np.ndarray, T]], arch: str = "llama") -> None:
    w = gguf.GGUFWriter(str(path), arch)
    w.add_uint32("llama.block_count", 1)
    w.add_file_type(1)
    for name, (x, qt) in tensors.items():
        add(w, name, x, qt)
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()


def q(path, out, fmt, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("warn", lambda m: None)
    return quantize_model(path, out, fmt, **kw)


@pytest.fixture
def model(tmp_path, rng):
    path = tmp_path / "m.gguf"
    w = tiny_llama(path, n_embd=256, n_head=4, n_head_kv=2, n_ff=512, qtype=T.F16, output=True,
                   weights=lambda shape, seed: rng.standard_normal(shape).astype(np.float32) * 0.02)
    return path, w


@pytest.mark.parametrize("fmt", ["iq1_s", "iq1_m"])
def test_block_matrices_quantized_everything_else_copied(tmp_path, model, fmt):
    src, _ = model
    out = tmp_path / "o.gguf"
    s = q(src, out, fmt)
    values = source_values(src)
    a, b = GGUFReader(src), GGUFReader(out)  # plain types: the gguf package reads the result itself
    assert [t.name for t in a.tensors] == [t.name for t in b.tensors]
    blocks = 0
    for ta, tb in zip(a.tensors, b.tensors):
        if ta.name.startswith("blk.") and len(ta.shape) == 2:
            blocks += 1
            assert tb.tensor_type == T[fmt.upper()], ta.name
            want = iq1q.quantize(values[ta.name], fmt)
            assert bytes(tb.data) == want.tobytes(), ta.name
            np.testing.assert_allclose(gguf.quants.dequantize(tb.data, tb.tensor_type), want.dequantize(),
                                       atol=1e-6 * np.abs(want.dequantize()).max())
        else:  # norms, token embedding, output: kept
            assert tb.tensor_type == ta.tensor_type and bytes(tb.data) == bytes(ta.data), ta.name
    assert blocks == 7
    fa, fb = a.fields, b.fields
    for k in fa:
        if k not in ("general.file_type", "GGUF.tensor_count", "GGUF.kv_count"):
            assert fb[k].types == fa[k].types and fb[k].contents() == fa[k].contents(), k
    assert fb["general.file_type"].contents() == gguf_io.FILE_TYPES[fmt] == {"iq1_s": 24, "iq1_m": 31}[fmt]
    assert s.by_type[fmt].tensors == 7 and s.by_type["f16"].tensors == 2 and s.by_type["f32"].tensors == 3
    assert not s.fallbacks and set(s.tensor_rms) == {t.name for t in a.tensors if t.name.startswith("blk.")
                                                     and len(t.shape) == 2}


@pytest.mark.parametrize("fmt", ["iq1_s_r4", "iq1_m_r4"])
def test_r4_output_equals_iq1q_quantize(tmp_path, model, fmt):
    src, _ = model
    out = tmp_path / "o.gguf"
    s = q(src, out, fmt, threads=2)
    values = source_values(src)
    f = gguf_io.read(out)
    for name, x in values.items():
        if name.startswith("blk.") and x.ndim == 2:
            want = iq1q.quantize(x, fmt)
            assert f.raw[name].type_name == fmt.upper() and f.tensors[name].tobytes() == want.tobytes()
            err = np.sqrt(np.mean((want.dequantize().astype(np.float64) - x) ** 2) / np.mean(x.astype(np.float64) ** 2))
            assert s.tensor_rms[name] == pytest.approx(err, rel=1e-9)
    assert f.metadata["general.file_type"] == {"iq1_s_r4": 224, "iq1_m_r4": 231}[fmt]


@pytest.mark.parametrize("qt", [T.F32, T.BF16, T.Q8_0, T.Q5_0, T.Q4_0])
def test_any_source_type_the_gguf_package_dequantizes(tmp_path, rng, qt):
    x = rng.standard_normal((8, 512)).astype(np.float32)
    src = tmp_path / "s.gguf"
    write_model(src, {"blk.0.attn_q.weight": (x, qt), "blk.0.attn_norm.weight": (np.ones(512, np.float32), T.F32)})
    out = tmp_path / "o.gguf"
    q(src, out, "iq1_m")
    got = {t.name: t for t in GGUFReader(out).tensors}
    assert bytes(got["blk.0.attn_q.weight"].data) == iq1q.quantize(source_values(src)["blk.0.attn_q.weight"],
                                                                    "iq1_m").tobytes()


def test_requantizes_iq1_sources(tmp_path, rng):
    x = rng.standard_normal((8, 512)).astype(np.float32)
    src = tmp_path / "s.gguf"
    gguf_io.write(src, {"blk.0.ffn_up.weight": iq1q.quantize(x, "iq1_m_r4")}, {"general.architecture": "llama"})
    q(src, tmp_path / "o.gguf", "iq1_s")
    got = gguf_io.read(tmp_path / "o.gguf").tensors["blk.0.ffn_up.weight"]
    assert got.tobytes() == iq1q.quantize(iq1q.quantize(x, "iq1_m_r4").dequantize(), "iq1_s").tobytes()


def test_fallbacks_are_applied_and_reported(tmp_path, rng):
    def m(rows, k):
        return rng.standard_normal((rows, k)).astype(np.float32), T.F16

    src = tmp_path / "s.gguf"
    write_model(src, {"blk.0.k640.weight": m(8, 640), "blk.0.k640rows6.weight": m(6, 640),
                      "blk.0.rows6.weight": m(6, 256), "blk.0.k96rows6.weight": m(6, 96),
                      "blk.0.ok.weight": m(4, 256)})
    s = q(src, tmp_path / "a.gguf", "iq1_s")
    types = {n: r.type_name for n, r in gguf_io.read(tmp_path / "a.gguf").raw.items()}
    assert types == {"blk.0.k640.weight": "IQ1_S_R4", "blk.0.k640rows6.weight": "F16",
                     "blk.0.rows6.weight": "IQ1_S", "blk.0.k96rows6.weight": "F16", "blk.0.ok.weight": "IQ1_S"}
    assert {(n, a, g) for n, a, g, _ in s.fallbacks} == {
        ("blk.0.k640.weight", "iq1_s", "iq1_s_r4"), ("blk.0.k640rows6.weight", "iq1_s", "f16"),
        ("blk.0.k96rows6.weight", "iq1_s", "f16")}
    assert "fallback iq1_s -> iq1_s_r4: 1 tensor (row length 640 is not a multiple of 256)" in s.table()

    s = q(src, tmp_path / "b.gguf", "iq1_m_r4")
    types = {n: r.type_name for n, r in gguf_io.read(tmp_path / "b.gguf").raw.items()}
    assert types == {"blk.0.k640.weight": "IQ1_M_R4", "blk.0.k640rows6.weight": "F16",
                     "blk.0.rows6.weight": "IQ1_M", "blk.0.k96rows6.weight": "F16", "blk.0.ok.weight": "IQ1_M_R4"}
    assert {(n, g) for n, _, g, _ in s.fallbacks} == {
        ("blk.0.rows6.weight", "iq1_m"), ("blk.0.k640rows6.weight", "f16"), ("blk.0.k96rows6.weight", "f16")}
    x = source_values(src)["blk.0.rows6.weight"]
    assert gguf_io.read(tmp_path / "b.gguf").tensors["blk.0.rows6.weight"].tobytes() == \
        iq1q.quantize(x, "iq1_m").tobytes()


def test_tensor_type_patterns(tmp_path, model):
    src, _ = model
    out = tmp_path / "o.gguf"
    s = q(src, out, "iq1_s_r4", tensor_types=["attn_v=keep", "token_embd=iq1_m_r4", "ffn_down=q8_0",
                                              r"attn_(q|k)\.=iq1_m", "norm=iq1_s", ".*=iq1_s_r4"])
    f = gguf_io.read(out)
    types = {n: r.type_name for n, r in f.raw.items()}
    assert types["blk.0.attn_v.weight"] == "F16"  # keep
    assert types["token_embd.weight"] == "IQ1_M"  # no row-interleaved token embeddings
    assert types["blk.0.ffn_down.weight"] == "Q8_0" and types["blk.0.attn_q.weight"] == "IQ1_M"
    assert types["output.weight"] == "IQ1_S_R4"  # matched by .*
    assert types["blk.0.attn_norm.weight"] == "F32" and types["output_norm.weight"] == "F32"  # never
    values = source_values(src)
    down = values["blk.0.ffn_down.weight"]
    assert bytes(f.raw["blk.0.ffn_down.weight"].data) == gguf.quants.quantize(down, T.Q8_0).tobytes()
    assert ("token_embd.weight", "iq1_m_r4", "iq1_m", "token embeddings cannot be row-interleaved") in s.fallbacks
    with pytest.raises(QuantizeError, match="unknown or unsupported type 'q9_x'"):
        q(src, tmp_path / "x.gguf", "iq1_s", tensor_types=["a=q9_x"])
    with pytest.raises(QuantizeError, match="bad regular expression"):
        q(src, tmp_path / "x.gguf", "iq1_s", tensor_types=["(=iq1_s"])
    with pytest.raises(QuantizeError, match="expected REGEX=TYPE"):
        q(src, tmp_path / "x.gguf", "iq1_s", tensor_types=["iq1_s"])
    with pytest.raises(QuantizeError, match="--type must be one of"):
        q(src, tmp_path / "x.gguf", "q8_0")


def _dense_imatrix(weights: dict[str, np.ndarray], rng) -> dict[str, np.ndarray]:
    """Like ik's llama-imatrix output: no ffn_gate entry (ik fuses it with ffn_up), exact
    zeros in some columns (where a norm weight is 0)."""
    out = {}
    for n, x in weights.items():
        if n.startswith("blk.") and x.ndim >= 2 and "norm" not in n and "gate" not in n:
            v = (rng.random(x.shape[-1] * (x.shape[0] if x.ndim == 3 else 1)) ** 3 * 20).astype(np.float32)
            v[::37] = 0
            out[n] = v
    return out


def test_imatrix_gaps_zeros_and_ffn_gate_from_ffn_up(tmp_path, model, rng):
    src, w = model
    im = _dense_imatrix(w, rng)
    dat = tmp_path / "im.dat"
    write_legacy_imatrix(dat, {n: (5, v * np.float32(5)) for n, v in im.items()})
    out = tmp_path / "o.gguf"
    warnings = []
    s = q(src, out, "iq1_s", imatrix=dat, warn=warnings.append)
    assert warnings == []  # every block matrix found its entry
    values = source_values(src)
    loaded = load_imatrix(dat)
    f = gguf_io.read(out)
    for name, x in values.items():
        if name.startswith("blk.") and x.ndim == 2:
            entry = name.replace("ffn_gate", "ffn_up")
            want = iq1q.quantize(x, "iq1_s", imatrix=loaded.entries[entry])
            assert f.tensors[name].tobytes() == want.tobytes(), name
    gate = values["blk.0.ffn_gate.weight"]
    assert f.tensors["blk.0.ffn_gate.weight"].tobytes() != iq1q.quantize(gate, "iq1_s").tobytes()
    assert f.metadata["quantize.imatrix.file"] == str(dat) and f.metadata["quantize.imatrix.entries_count"] == 6
    assert f.metadata["quantize.imatrix.dataset"] == "test.txt"
    assert s.by_type["iq1_s"].tensors == 7


def test_both_imatrix_formats_give_the_same_bytes(tmp_path, model, rng):
    src, w = model
    im = _dense_imatrix(w, rng)
    ncall = 3
    write_legacy_imatrix(tmp_path / "a.dat", {n: (ncall, v * np.float32(ncall)) for n, v in im.items()})
    # GGUF: in_sum2 / counts, as mainline writes it; one matrix per entry
    write_gguf_imatrix(tmp_path / "b.gguf", {n: (v * np.float32(ncall), np.array([ncall])) for n, v in im.items()})
    a, b = load_imatrix(tmp_path / "a.dat"), load_imatrix(tmp_path / "b.gguf")
    assert a.format == "legacy" and b.format == "gguf" and set(a.entries) == set(b.entries) == set(im)
    for n in im:
        want = (im[n] * np.float32(ncall)) / np.float32(ncall)  # float32, as llama-quantize divides
        np.testing.assert_array_equal(a.entries[n], want)
        np.testing.assert_array_equal(b.entries[n], want)
    q(src, tmp_path / "a.gguf", "iq1_m_r4", imatrix=tmp_path / "a.dat")
    q(src, tmp_path / "b.gguf.out", "iq1_m_r4", imatrix=tmp_path / "b.gguf")
    ra, rb = gguf_io.read(tmp_path / "a.gguf").raw, gguf_io.read(tmp_path / "b.gguf.out").raw
    assert all(bytes(ra[n].data) == bytes(rb[n].data) for n in ra)


def test_experts_per_expert_with_their_imatrix_slices(tmp_path, rng):
    src = tmp_path / "moe.gguf"
    w = tiny_llama(src, n_embd=256, n_head=4, n_head_kv=2, n_ff=64, n_expert=4, qtype=T.F16,
                   weights=lambda shape, seed: rng.standard_normal(shape).astype(np.float32))
    im = _dense_imatrix(w, rng)  # per expert: n_expert * K values; ffn_gate_exps has none
    write_legacy_imatrix(tmp_path / "im.dat", {n: (1, v) for n, v in im.items()})
    s = q(src, tmp_path / "o.gguf", "iq1_s", imatrix=tmp_path / "im.dat")
    values = source_values(src)
    f = gguf_io.read(tmp_path / "o.gguf")
    up = im["blk.0.ffn_up_exps.weight"].reshape(4, 256)
    down = im["blk.0.ffn_down_exps.weight"].reshape(4, 64)
    for name, fmt, imat in (("blk.0.ffn_gate_exps.weight", "iq1_s", up), ("blk.0.ffn_up_exps.weight", "iq1_s", up),
                            ("blk.0.ffn_down_exps.weight", "iq1_s_r4", down)):  # K = 64: the _r4 fallback
        got = f.tensors[name]
        assert isinstance(got, tuple) and len(got) == 4 and f.raw[name].shape == values[name].shape
        for e in range(4):
            want = iq1q.quantize(values[name][e], fmt, imatrix=imat[e])
            assert got[e].tobytes() == want.tobytes(), (name, e)
    assert f.raw["blk.0.ffn_gate_inp.weight"].type_name == "F16"  # the router is never quantized
    assert ("blk.0.ffn_down_exps.weight", "iq1_s", "iq1_s_r4", "row length 64 is not a multiple of 256") \
        in s.fallbacks


def test_imatrix_problems_are_clear_errors(tmp_path, model, rng):
    src, w = model
    good = {n: (1, v) for n, v in _dense_imatrix(w, rng).items()}
    write_legacy_imatrix(tmp_path / "ok.dat", good)
    blob = (tmp_path / "ok.dat").read_bytes()
    (tmp_path / "cut.dat").write_bytes(blob[:len(blob) // 2])
    with pytest.raises(ImatrixError, match="truncated legacy imatrix"):
        load_imatrix(tmp_path / "cut.dat")
    (tmp_path / "junk.dat").write_bytes(b"\xff" * 64)
    with pytest.raises(ImatrixError, match="not an imatrix file"):
        load_imatrix(tmp_path / "junk.dat")
    bad = dict(good)
    bad["blk.0.attn_q.weight"] = (1, np.full(256, np.nan, np.float32))
    write_legacy_imatrix(tmp_path / "nan.dat", bad)
    with pytest.raises(ImatrixError, match="'blk.0.attn_q.weight' has NaN or Inf"):
        load_imatrix(tmp_path / "nan.dat")
    short = dict(good)
    short["blk.0.attn_k.weight"] = (1, np.ones(128, np.float32))
    write_legacy_imatrix(tmp_path / "short.dat", short)
    with pytest.raises(QuantizeError, match="has 128 values, but blk.0.attn_k.weight"):
        q(src, tmp_path / "o.gguf", "iq1_s", imatrix=tmp_path / "short.dat")
    assert not (tmp_path / "o.gguf").exists()
    # GGUF imatrix: a matrix with count 0 gets importance 1 (llama-quantize's rule)
    write_gguf_imatrix(tmp_path / "z.gguf", {"blk.0.ffn_up_exps.weight": (np.full((2, 4), 6.0), np.array([0, 3]))})
    np.testing.assert_array_equal(load_imatrix(tmp_path / "z.gguf").entries["blk.0.ffn_up_exps.weight"],
                                  [1, 1, 1, 1, 2, 2, 2, 2])


def test_without_imatrix_it_warns(tmp_path, model):
    src, _ = model
    warnings = []
    q(src, tmp_path / "o.gguf", "iq1_m", warn=warnings.append)
    assert len(warnings) == 1 and "IQ1 quality depends on an importance matrix" in warnings[0]


def test_cli_prints_the_summary(tmp_path, model, capsys):
    src, _ = model
    assert main(["quantize", str(src), str(tmp_path / "o.gguf"), "--type", "iq1_s_r4", "--threads", "2",
                 "--no-progress"]) == 0
    cap = capsys.readouterr()
    assert "IQ1 quality depends on an importance matrix" in cap.err
    lines = cap.out.splitlines()
    assert any(ln.split()[:2] == ["iq1_s_r4", "7"] for ln in lines)
    assert any(ln.startswith("total") for ln in lines) and "M weights/s" in cap.out


def _run_cli(python, *args) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(iq1q.__file__).parent.parent),
                                                      os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([python, "-m", "iq1q", "quantize", *map(str, args)], capture_output=True, text=True,
                          env=env)


def test_bad_input_and_output_are_one_line_errors(tmp_path, model, python_subprocess):
    src, _ = model
    blob = src.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(blob[:len(blob) * 2 // 3])
    cases = [
        (cut, tmp_path / "o.gguf", "truncated?"),
        (tmp_path / "missing.gguf", tmp_path / "o.gguf", "No such file"),
        (src, tmp_path / "no" / "dir" / "o.gguf", "No such file or directory"),
        (src, tmp_path, "Is a directory"),
    ]
    for inp, out, msg in cases:
        r = _run_cli(python_subprocess, inp, out, "--type", "iq1_s")
        assert r.returncode == 2, r.stderr
        err = [ln for ln in r.stderr.splitlines() if not ln.startswith("iq1q: warning")]
        assert len(err) == 1 and err[0].startswith("iq1q: error:") and msg in err[0], r.stderr
        assert "Traceback" not in r.stderr
    r = _run_cli(python_subprocess, src, tmp_path / "o.gguf", "--type", "iq1_s", "--imatrix", tmp_path / "none.dat")
    assert r.returncode == 2 and "none.dat" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o.gguf").exists() and not list(tmp_path.glob(".*part"))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_interrupted_run_leaves_no_output(tmp_path, rng, python_subprocess, sig):
    src = tmp_path / "big.gguf"
    x = rng.standard_normal((1024, 1024)).astype(np.float16)
    # 32 MiB of output work: a loaded CI machine must not finish the rest before the signal lands
    write_model(src, {f"blk.{i}.ffn_up.weight": (x, T.F16) for i in range(32)})
    out = tmp_path / "out.gguf"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(iq1q.__file__).parent.parent),
                                                      os.environ.get("PYTHONPATH", "")]))
    # the child takes SIGINT's default action: a runner started in the background of a
    # non-interactive shell ignores SIGINT, its children would inherit that, and Python then
    # installs no KeyboardInterrupt handler
    p = subprocess.Popen([python_subprocess, "-m", "iq1q", "quantize", str(src), str(out), "--type", "iq1_m",
                          "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        # early: once the temporary file holds a quarter of the output's tensor bytes
        want = 32 * 1024 * 1024 * 1.75 / 8 / 4
        part = None
        while p.poll() is None:
            parts = list(tmp_path.glob(".out.gguf.*.part"))
            if parts and parts[0].stat().st_size > want:
                part = parts[0]
                break
            time.sleep(0.005)
        assert part is not None, "the run ended before it could be interrupted"
        p.send_signal(sig)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert not out.exists() and not part.exists()
    assert sorted(f.name for f in tmp_path.iterdir()) == ["big.gguf"]


def test_reads_a_file_ik_llama_cpp_wrote(tmp_path):
    """tests/vectors/ik_tiny64_r4.gguf: R4 tensors written by ik's own llama-quantize (README
    there). Read through gguf_io, they equal iq1q.quantize of the same source, and `iq1q
    quantize` with the same rules writes the same file contents."""
    ik = ROOT_VECTORS / "ik_tiny64_r4.gguf"
    src = tmp_path / "tiny64.gguf"
    w = tiny_llama(src, n_embd=64, n_head=2, n_head_kv=1, n_ff=32, n_vocab=4)
    f = gguf_io.read(ik)
    r4 = {"attn_q": "iq1_m_r4", "attn_k": "iq1_m_r4", "ffn_up": "iq1_m_r4", "ffn_down": "iq1_m_r4",
          "attn_v": "iq1_s_r4", "attn_output": "iq1_s_r4", "ffn_gate": "iq1_s_r4"}
    for kind, fmt in r4.items():
        name = f"blk.0.{kind}.weight"
        got = f.tensors[name]
        assert isinstance(got, iq1q.QuantizedTensor) and got.format == fmt and got.shape == w[name].shape
        assert f.raw[name].nbytes == w[name].shape[0] * (2 + (6 if fmt == "iq1_s_r4" else 7) * w[name].shape[1] // 32)
        assert got.tobytes() == iq1q.quantize(w[name], fmt).tobytes(), name
        assert np.isfinite(got.dequantize()).all()
    assert f.metadata["general.architecture"] == "llama" and f.metadata["general.file_type"] == 224
    out = tmp_path / "mine.gguf"
    q(src, out, "iq1_s_r4", tensor_types=["attn_(q|k)=iq1_m_r4", "ffn_(up|down)=iq1_m_r4"])
    mine = gguf_io.read(out)
    assert list(mine.raw) == list(f.raw)
    for n, raw in f.raw.items():
        assert mine.raw[n].ggml_type == raw.ggml_type and bytes(mine.raw[n].data) == bytes(raw.data), n
    assert mine.metadata.keys() == f.metadata.keys()


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
@pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""), reason="meaningless under ASan")
# the streaming is Python, the same on every platform; under qemu (tools/test-aarch64.sh sets
# QEMU_CPU) its 32 M weights take minutes
@pytest.mark.skipif("QEMU_CPU" in os.environ, reason="emulated: minutes for what x86 already proves")
def test_memory_holds_chunks_not_the_model(tmp_path, rng):
    """16 matrices of 1024 x 1024 (32 MiB of F16 in, 64 MiB as float32): the peak resident
    memory of a whole run stays at a few chunks in flight."""
    src = tmp_path / "m.gguf"
    x = rng.standard_normal((1024, 1024)).astype(np.float16)
    write_model(src, {f"blk.{i}.ffn_up.weight": (x, T.F16) for i in range(16)} |
                {"token_embd.weight": (np.ones((4096, 1024), np.float32), T.F32)})  # 16 MiB copied
    q(src, tmp_path / "warm.gguf", "iq1_s_r4", threads=2)  # thread pools, allocator arenas

    def status(field: str) -> int:
        line = next(ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith(field + ":"))
        return 1024 * int(line.split()[1])

    Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM) to the current RSS
    before = status("VmRSS")
    q(src, tmp_path / "o.gguf", "iq1_s_r4", threads=2)
    peak = status("VmHWM") - before
    assert peak < 24 << 20, f"peak {peak / 2**20:.1f} MiB for a 48 MiB model"
