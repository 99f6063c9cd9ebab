"""`iq1q quantize --calibration`: tiny llama and gemma3 models end to end (iq1q.models.calibrate)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("gguf")
pytest.importorskip("tqdm")

import iq1q  # noqa: E402
from iq1q import HessianOptions, gguf_io  # noqa: E402
from iq1q.cli import main  # noqa: E402
from iq1q.models.chunks import calibration_chunks  # noqa: E402
from iq1q.models.model import from_gguf  # noqa: E402
from iq1q.models.moe import matrix_name, split_matrix_name  # noqa: E402
from iq1q.models.quantize import quantize_model  # noqa: E402
from iq1q.models.tokenizer import Tokenizer  # noqa: E402
from iq1q.tensors import quantize_with_hessian  # noqa: E402

import tiny_models  # noqa: E402

CTX, CHUNKS = 32, 6
# words of the tiny vocabulary ("w0".."w9", letters a-h) in an irregular order
TEXT = " ".join(f"w{(i * i) % 10} {'abcdefgh'[i % 8]}{'abcdefgh'[(3 * i) % 8]} w{(7 * i) % 10}" for i in range(300))
BUILDERS = {"llama": tiny_models.tiny_llama, "gemma3": tiny_models.tiny_gemma3}


def quantize(src, dst, fmt, **kw):
    return quantize_model(src, dst, fmt, progress=False, warn=lambda m: None, **kw)


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def calibrated(request, tmp_path_factory):
    d = tmp_path_factory.mktemp(request.param)
    src, out = d / "src.gguf", d / "cal.gguf"
    BUILDERS[request.param](src)
    s = quantize(src, out, "iq1_s_r4", calibration=TEXT, ctx=CTX, chunks=CHUNKS)
    return src, out, s


def test_every_block_matrix_calibrated_and_better(calibrated):
    src, out, s = calibrated
    f = gguf_io.read(out)
    names = [n for n, r in f.raw.items() if n.startswith("blk.") and len(r.shape) == 2 and "norm" not in n]
    assert sorted(r.name for r in s.calibration.layers) == sorted(names)
    for r in s.calibration.layers:
        assert r.final <= r.plain and r.reduction > 0.2, (r.name, r.reduction)
        assert r.tokens == CHUNKS * CTX
    for n in names:
        f.tensors[n].validate()
    plain = src.parent / "plain.gguf"
    quantize(src, plain, "iq1_s_r4")
    p = gguf_io.read(plain)
    assert all(f.tensors[n].tobytes() != p.tensors[n].tobytes() for n in names)
    # everything else is copied as without --calibration
    for n, r in p.raw.items():
        if n not in names:
            assert bytes(f.raw[n].data) == bytes(r.data), n
    assert "layers quantized with their input Hessians" in s.table()
    assert "ffn_down" in s.calibration.table()


@pytest.mark.parametrize("layer", ["blk.1.attn_q.weight", "blk.1.ffn_down.weight"])
def test_sequential_order(calibrated, layer):
    """Each layer's Hessian comes from the inputs the quantized layers before it produce: the
    written model, run on the same chunks, gives that Hessian, and quantizing the source
    weights with it gives the written bytes."""
    src, out, _ = calibrated
    f = gguf_io.read(out)
    model = from_gguf(f)
    tok = Tokenizer(f.metadata)
    h = 0

    def hook(name, x):
        nonlocal h
        if name == layer:  # as iq1q.models.calibrate sums it: x'x per chunk in float64
            x = np.asarray(x, np.float64)
            h = h + x.T @ x

    for c in calibration_chunks(tok.encode(TEXT, add_bos=False), CTX, tok.bos_id, CHUNKS):
        model.hidden(c.tokens, hook)
    w = np.asarray(gguf_io.read(src).tensors[layer], np.float32)
    q, _ = quantize_with_hessian(w, "iq1_s_r4", h)
    assert q.tobytes() == f.tensors[layer].tobytes()


def test_plain_formats_and_fallbacks(tmp_path):
    src = tmp_path / "g.gguf"
    tiny_models.tiny_gemma3(src, n_layer=2)
    # K = 128 is not a multiple of 256: iq1_m falls back to iq1_m_r4, as without --calibration
    s = quantize(src, tmp_path / "o.gguf", "iq1_m", calibration=TEXT, ctx=CTX, chunks=2)
    assert {r.format for r in s.calibration.layers} == {"iq1_m_r4", "iq1_m"}  # ffn_down: K = 256


def test_another_type_by_rule_is_what_later_layers_see(tmp_path):
    src = tmp_path / "l.gguf"
    tiny_models.tiny_llama(src, n_layer=1)
    s = quantize(src, tmp_path / "o.gguf", "iq1_m_r4", calibration=TEXT, ctx=CTX, chunks=2,
                 tensor_types=["attn_v=q8_0"])
    assert "blk.0.attn_v.weight" not in {r.name for r in s.calibration.layers}
    assert len(s.calibration.layers) == 6


def test_cli(tmp_path, capsys):
    src, text = tmp_path / "l.gguf", tmp_path / "cal.txt"
    tiny_models.tiny_llama(src, n_layer=1)
    text.write_text(TEXT, encoding="utf-8")
    assert main(["quantize", str(src), str(tmp_path / "o.gguf"), "--type", "iq1_s_r4", "--calibration", str(text),
                 "--ctx", str(CTX), "--chunks", "2", "--damping", "0.2", "--passes", "1", "--sweeps", "1",
                 "--no-progress"]) == 0
    assert "ffn_down" in capsys.readouterr().out
    assert main(["quantize", str(src), str(tmp_path / "p.gguf"), "--type", "iq1_s_r4", "--chunks", "2"]) == 2
    assert "need --calibration" in capsys.readouterr().err
    assert main(["quantize", str(src), str(tmp_path / "p.gguf"), "--type", "iq1_s_r4", "--calibration", str(text),
                 "--ctx", "4096"]) == 2
    assert "fewer than one chunk" in capsys.readouterr().err
    assert not (tmp_path / "p.gguf").exists()
    assert main(["quantize", str(src), str(tmp_path / "p.gguf"), "--type", "iq1_s_r4", "--calibration", str(text),
                 "--damping", "-1"]) == 2
    assert "damping" in capsys.readouterr().err


# mixtures of experts and latent attention: fewer chunks (one expert of tiny qwen3moe's first
# block gets no token from these 64), one sweep to keep the tests quick
MOE_CHUNKS = 2
FAST = HessianOptions(sweeps=1)


def _split_deepseek2(path):
    tiny_models.tiny_deepseek2(path.with_suffix(".kv_b.gguf"))
    tiny_models.split_mla(path.with_suffix(".kv_b.gguf"), path)


MOE_BUILDERS = {"qwen3moe": tiny_models.tiny_qwen3moe, "deepseek2": tiny_models.tiny_deepseek2,
                "deepseek2_split": _split_deepseek2}
# the split layout's attn_k_b heads have rows of nope = 32, which IQ1 x q8_k128 cannot multiply:
# q8_0 by rule (the later layers then see those heads as q8_0 gives them); its experts stay
# float (the other two models cover them) to keep the test quick
MOE_RULES = {"deepseek2_split": ["attn_k_b=q8_0", "_exps=keep"]}


@pytest.fixture(scope="module", params=sorted(MOE_BUILDERS))
def moe_calibrated(request, tmp_path_factory):
    d = tmp_path_factory.mktemp(request.param)
    src, out, plain = d / "src.gguf", d / "cal.gguf", d / "plain.gguf"
    MOE_BUILDERS[request.param](src)
    rules = MOE_RULES.get(request.param, [])
    s = quantize(src, out, "iq1_s_r4", calibration=TEXT, ctx=CTX, chunks=MOE_CHUNKS, hessian_options=FAST,
                 tensor_types=rules)
    quantize(src, plain, "iq1_s_r4", tensor_types=rules)
    return request.param, src, out, plain, s


def _input_hessians(path) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Per linear layer of the model at path (each expert and head apart): sum x'x in float64
    over the calibration chunks, as iq1q.models.calibrate sums it, and the rows seen."""
    f = gguf_io.read(path)
    model = from_gguf(f)
    tok = Tokenizer(f.metadata)
    hs, rows = {}, {}

    def hook(name, x):
        rows[name] = rows.get(name, 0) + len(x)
        if len(x):
            x = np.asarray(x, np.float64)
            hs[name] = hs.get(name, 0) + x.T @ x

    for c in calibration_chunks(tok.encode(TEXT, add_bos=False), CTX, tok.bos_id, MOE_CHUNKS):
        model.hidden(c.tokens, hook)
    return hs, rows


def _matrices(f) -> dict[str, object]:
    """Every block weight matrix of an opened file by matrix name (3-D tensors per matrix)."""
    out = {}
    for n, r in f.raw.items():
        if n.startswith("blk.") and len(r.shape) >= 2 and "norm" not in n and "gate_inp" not in n:
            t = f.tensors[n]
            if len(r.shape) == 2:
                out[n] = t
            else:
                out |= {matrix_name(n, i): m for i, m in enumerate(t)}
    return out


def _error(w: np.ndarray, q, h: np.ndarray) -> float:
    """tr((W - Q) H (W - Q)')."""
    d = w.astype(np.float64) - q.dequantize().astype(np.float64)
    return float(np.einsum("ij,jk,ik->", d, h, d))


def test_moe_and_mla_matrices_each_calibrated_with_their_own_tokens(moe_calibrated):
    """Every matrix with tokens (each expert on the rows routed to it, each MLA head) is
    calibrated: its bytes are valid, its output error on its own inputs in the written model is
    below ik's method's (imatrix = diag(H)) and the plain file's; a matrix no token reached
    has the plain quantizer's bytes."""
    arch, src, out, plain, s = moe_calibrated
    f, p, w = gguf_io.read(out), gguf_io.read(plain), gguf_io.read(src)
    got, ref = _matrices(f), _matrices(p)
    weights = {n: np.asarray(w.tensors[split_matrix_name(n)[0]])[split_matrix_name(n)[1]]
               if split_matrix_name(n)[1] is not None else np.asarray(w.tensors[n]) for n in got}
    hs, rows = _input_hessians(out)
    reports = {r.name: r for r in s.calibration.layers}
    reached = {n for n in got if rows.get(n, 0) and isinstance(got[n], iq1q.QuantizedTensor)}
    assert set(reports) == reached
    assert any(("attn_v_b" if arch == "deepseek2_split" else "_exps") in n for n in reached)
    empty = {n for n in got if not rows.get(n, 0)}
    if arch == "qwen3moe":
        assert empty  # the case this fixture is for
    for n in empty:
        assert "_exps" in n and got[n].tobytes() == ref[n].tobytes(), n
    for n in reached:
        q = got[n]
        q.validate()
        assert np.isfinite(q.dequantize()).all()
        assert reports[n].tokens == rows[n], n
        ik = iq1q.quantize(weights[n], "iq1_s_r4", imatrix=np.diag(hs[n]).astype(np.float32))
        e_cal, e_ik, e_plain = (_error(weights[n], t, hs[n]) for t in (q, ik, ref[n]))
        assert e_cal < e_ik and e_cal < e_plain, (n, rows[n], e_cal, e_ik, e_plain)
    # the experts' bytes are those of the source weights quantized with the Hessian of the
    # rows the written model routes to them: routing and gate/up were quantized before down
    for n in [n for n in reached if "ffn_down_exps" in n][:3]:
        q, _ = quantize_with_hessian(weights[n], "iq1_s_r4", hs[n], options=FAST)
        assert q.tobytes() == got[n].tobytes(), n
    logits = from_gguf(f, activation="q8_k128").forward(tiny_models.TOKENS)
    assert np.isfinite(logits).all()
    t = s.table()
    for tensor, n_mat in s.calibration.matrices.items():
        done = sum(1 for n in reached if split_matrix_name(n)[0] == tensor)
        assert f"{tensor.removesuffix('.weight')} " in t and f" {done}/{n_mat} " in t
