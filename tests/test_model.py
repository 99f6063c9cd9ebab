"""iq1q.models.model's forward pass against ik_llama.cpp's logits on tiny llama and gemma3 models
(tests/vectors/tiny_*_ik_logits.npz, see tests/vectors/MODEL_FIXTURES.md), and its errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gguf")

import iq1q  # noqa: E402
from iq1q import gguf_io  # noqa: E402
from iq1q.models.model import Config, Model, ModelError, from_gguf, load  # noqa: E402

import tiny_models  # noqa: E402

VECTORS = Path(__file__).resolve().parent / "vectors"
BUILDERS = {"llama": tiny_models.tiny_llama, "gemma3": tiny_models.tiny_gemma3}


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def tiny(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / f"tiny_{request.param}.gguf"
    BUILDERS[request.param](path)
    return request.param, path


def _rel_rms(a: np.ndarray, ref: np.ndarray, axis=None) -> np.ndarray:
    a, ref = a.astype(np.float64), ref.astype(np.float64)
    return np.sqrt(np.sum((a - ref) ** 2, axis=axis) / np.sum(ref**2, axis=axis))


def test_float_logits_match_ik_llama_cpp(tiny):
    """ik computes with an f16 KV cache (K and V rounded to fp16): measured 4.7e-4 (llama) and
    4.5e-4 (gemma3) relative RMS over all logits, 7.4e-4 at worst in a row."""
    arch, path = tiny
    ref = np.load(VECTORS / f"tiny_{arch}_ik_logits.npz")
    assert np.array_equal(ref["tokens"], tiny_models.TOKENS)
    got = load(path, threads=1).forward(ref["tokens"])
    assert got.shape == ref["logits"].shape and got.dtype == np.float32
    assert _rel_rms(got, ref["logits"]) < 1.5e-3
    assert _rel_rms(got, ref["logits"], axis=1).max() < 2.5e-3
    assert np.array_equal(got.argmax(1), ref["logits"].argmax(1))


def test_gemma3_sliding_window_layers_matter(tmp_path):
    """The fixture would catch a wrong layer pattern: all-global attention is far from ik's."""
    import dataclasses

    tiny_models.tiny_gemma3(tmp_path / "g.gguf")
    m = load(tmp_path / "g.gguf", threads=1)
    ref = np.load(VECTORS / "tiny_gemma3_ik_logits.npz")
    assert m.config.swa_layers == (True,) * 5 + (False,) and m.config.sliding_window == 5
    m.config = dataclasses.replace(m.config, swa_layers=(False,) * 6)
    assert _rel_rms(m.forward(ref["tokens"]), ref["logits"]) > 0.1


def _quantized_tensors(path: Path, fmt: str) -> tuple[dict, dict]:
    f = gguf_io.read(path)
    qt, deq = {}, {}
    for name in f.raw:
        v = f.tensors[name]
        if name.startswith("blk.") and v.ndim == 2:
            qt[name] = iq1q.quantize(v, fmt)
            deq[name] = qt[name].dequantize()
        else:
            qt[name] = deq[name] = v
    return qt, deq


def test_iq1_layers_go_through_matmul_with_the_chosen_activations(tiny):
    arch, path = tiny
    f = gguf_io.read(path)
    cfg = Config.from_metadata(f.metadata)
    qt, deq = _quantized_tensors(path, "iq1_s_r4")
    toks = tiny_models.TOKENS
    float_model = Model(cfg, deq, f.metadata, threads=1)
    ref = float_model.forward(toks)  # the same quantized weights, float activations
    seen = []
    m = Model(cfg, qt, f.metadata, activation="q8_k128", threads=1)
    y128 = m.forward(toks, hook=lambda name, x: seen.append((name, x.shape)))
    assert [n for n, _ in seen] == [lin.name for lin in m.linears()]
    assert all(shape == (len(toks), lin.shape[1]) for (_, shape), lin in zip(seen, m.linears()))
    assert sum(lin.quantized for lin in m.linears()) == 7 * cfg.n_layer
    m.activation = "q8_0"
    y0 = m.forward(toks)
    # only the 8-bit activation rounding differs from the float model: well under 5 %
    for y in (y128, y0):
        assert 0 < _rel_rms(y, ref) < 0.05
    assert not np.array_equal(y0, y128)
    # each quantized layer's output is iq1q.matmul's
    x = np.random.default_rng(0).standard_normal((3, cfg.n_embd)).astype(np.float32)
    lin = m.layers[0].lin["q"]
    np.testing.assert_array_equal(lin(x, "q8_k128", 1, None), iq1q.matmul(x, qt[lin.name], activation="q8_k128"))


def test_unsupported_architecture_and_missing_metadata_are_named():
    with pytest.raises(ModelError, match="'falcon' is not supported.*llama, gemma3"):
        Config.from_metadata({"general.architecture": "falcon"})
    with pytest.raises(ModelError, match="general.architecture"):
        Config.from_metadata({})
    with pytest.raises(ModelError, match="'llama.block_count'"):
        Config.from_metadata({"general.architecture": "llama", "llama.embedding_length": 64})
    md = {"general.architecture": "gemma3", "gemma3.block_count": 1, "gemma3.embedding_length": 64,
          "gemma3.attention.head_count": 3, "gemma3.attention.head_count_kv": 2}
    with pytest.raises(ModelError, match="3 attention heads are not a multiple of 2"):
        Config.from_metadata(md)


def test_missing_or_misshapen_tensors_are_named(tiny):
    arch, path = tiny
    f = gguf_io.read(path)
    cfg = Config.from_metadata(f.metadata)
    tensors = dict(f.tensors)
    del tensors["blk.1.ffn_up.weight"]
    with pytest.raises(ModelError, match="no tensor 'blk.1.ffn_up.weight'"):
        Model(cfg, tensors)
    tensors = dict(f.tensors)
    tensors["blk.0.attn_k.weight"] = np.zeros((3, cfg.n_embd), np.float32)
    with pytest.raises(ModelError, match=r"'blk.0.attn_k.weight' has shape \(3, 128\)"):
        Model(cfg, tensors)


def test_bad_token_ids(tiny):
    _, path = tiny
    m = load(path, threads=1)
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 300\)"):
        m.forward([1, 300])
    with pytest.raises(ValueError, match="non-empty 1-D"):
        m.forward([])
    with pytest.raises(ValueError, match="integers"):
        m.forward(np.array([1.0, 2.0]))


def test_from_gguf_reads_an_iq1_file_as_quantized(tiny, tmp_path):
    _, path = tiny
    f = gguf_io.read(path)
    qt, _ = _quantized_tensors(path, "iq1_m_r4")
    out = tmp_path / "q.gguf"
    gguf_io.write(out, qt, f.metadata)
    m = from_gguf(gguf_io.read(out), activation="q8_k128", threads=1)
    assert all(lin.quantized == lin.name.startswith("blk.") for lin in m.linears())
    ref = Model(Config.from_metadata(f.metadata), qt, threads=1, activation="q8_k128").forward(tiny_models.TOKENS)
    np.testing.assert_array_equal(m.forward(tiny_models.TOKENS), ref)
