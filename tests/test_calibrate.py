"""`iq1q quantize --calibration`: tiny llama and gemma3 models end to end (iq1q.models.calibrate)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("gguf")
pytest.importorskip("tqdm")

from iq1q import gguf_io  # noqa: E402
from iq1q.cli import main  # noqa: E402
from iq1q.models.chunks import calibration_chunks  # noqa: E402
from iq1q.models.model import from_gguf  # noqa: E402
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
