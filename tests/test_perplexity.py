"""The tokenizer, `iq1q perplexity` and `iq1q imatrix` on tiny models (tests/tiny_models.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gguf")
pytest.importorskip("sentencepiece")
pytest.importorskip("tqdm")

from iq1q import cli, gguf_io  # noqa: E402
from iq1q.models import imatrix  # noqa: E402
from iq1q.models.chunks import builtin_text, chunks  # noqa: E402
from iq1q.models.model import load  # noqa: E402
from iq1q.models.tokenizer import Tokenizer, TokenizerError  # noqa: E402

import tiny_models  # noqa: E402

VECTORS = Path(__file__).resolve().parent / "vectors"
# words the tiny vocabulary merges, a few bytes between them
TEXT = " ".join(f"w{i % 10}" + ("é" if i % 7 == 0 else "") for i in range(60))


@pytest.fixture(scope="module", params=["llama", "gemma3"])
def tiny(request, tmp_path_factory):
    d = tmp_path_factory.mktemp("ppl")
    path = d / f"{request.param}.gguf"
    {"llama": tiny_models.tiny_llama, "gemma3": tiny_models.tiny_gemma3}[request.param](path)
    (d / "text.txt").write_text(TEXT, encoding="utf-8")
    return request.param, path, d / "text.txt"


def test_token_ids_equal_llama_cpp(tiny):
    arch, path, _ = tiny
    ref = json.loads((VECTORS / "tiny_ik_tokens.json").read_text(encoding="utf-8"))
    assert Tokenizer(gguf_io.read(path).metadata).encode(ref["text"]) == ref[arch]


@pytest.mark.parametrize("texts", [[], [""], ["a", "", "b▁c", "", "é"], ["a\0b", "c"], ["x", b"\xff"]])
def test_vocabulary_bytes_are_each_tokens_utf8(texts):
    """The vocabulary goes to sentencepiece as one blob and the tokens' lengths: joined at
    NULs and encoded once, or one by one where a token holds a NUL or is bytes."""
    from iq1q.models.tokenizer import _joined

    raw = [t.encode("utf-8") if isinstance(t, str) else t for t in texts]
    blob, lens = _joined(texts)
    assert blob.tobytes() == b"".join(raw) and lens.tolist() == [len(r) for r in raw]


def test_tokenizer_errors_name_the_problem():
    with pytest.raises(TokenizerError, match="'gpt2' is not supported"):
        Tokenizer({"tokenizer.ggml.model": "gpt2"})
    with pytest.raises(TokenizerError, match="tokenizer.ggml.model"):
        Tokenizer({})
    with pytest.raises(TokenizerError, match="'tokenizer.ggml.tokens'"):
        Tokenizer({"tokenizer.ggml.model": "llama"})


def test_chunks_score_the_documented_tokens():
    ids = list(range(10, 30))  # 20 text tokens, BOS = 1
    c = chunks(ids, 8, 1)
    assert [x.tokens.tolist() for x in c] == [[1] + ids[0:7], [1] + ids[7:14]]
    assert [x.first for x in c] == [0, 0]  # every token after the BOS is scored
    c = chunks(ids, 8, 1, llama_compatible=True)  # BOS + 20 = 21 tokens: two chunks of 8
    assert [x.tokens.tolist() for x in c] == [[1] + ids[0:7], [1] + ids[8:15]]  # ids[7] replaced by BOS
    assert [x.first for x in c] == [4, 4]  # positions 4..6 score tokens 5..7: 3 = 8 - 1 - 8 // 2
    assert len(chunks(ids[:3], 8, 1)) == 1 and len(chunks(ids, 8, 1, max_chunks=1)) == 1
    with pytest.raises(ValueError, match="at least 2 \\* ctx = 32 tokens"):
        chunks(ids, 16, 1, llama_compatible=True)


def _nll_float64(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    lse = np.log(np.sum(np.exp(z - z.max(1, keepdims=True)), 1)) + z.max(1)
    return lse - z[np.arange(len(z)), targets]


@pytest.mark.parametrize("llama_compatible", [False, True])
def test_perplexity_cli_json(tiny, tmp_path, llama_compatible):
    arch, path, text = tiny
    out = tmp_path / "ppl.json"
    argv = ["perplexity", str(path), "--text", str(text), "--ctx", "16", "--weights", "iq1_s_r4",
            "--activations", "q8_0", "q8_k128", "--json", str(out), "--threads", "1", "--no-progress"]
    assert cli.main(argv + (["--llama-compatible"] if llama_compatible else [])) == 0
    r = json.loads(out.read_text())
    assert r["model"] == str(path) and r["llama_compatible"] == llama_compatible
    assert [(x["weights"], x["activations"], x["imatrix"]) for x in r["runs"]] == [
        ("float", None, False), ("iq1_s_r4", "q8_0", False), ("iq1_s_r4", "q8_k128", False)]
    tok = Tokenizer(gguf_io.read(path).metadata)
    parts = chunks(tok.encode(TEXT, add_bos=False), 16, 1, llama_compatible)
    assert r["chunks"] == len(parts) >= 2
    model = load(path, threads=1)
    want_nll = np.concatenate([_nll_float64(model.forward(c.tokens)[c.first:-1], c.tokens[c.first + 1:])
                               for c in parts])
    for run in r["runs"]:
        assert run["tokens"] == [int(t) for c in parts for t in c.tokens]
        assert len(run["nll"]) == r["scored_tokens"] == len(want_nll)
        assert run["ppl"] == pytest.approx(np.exp(np.mean(run["nll"])), rel=1e-12)
        assert run["overflow_blocks"] == 0 and run["max_activation_layer"].startswith("blk.")
    # the float run is the model's own forward pass, its NLL computed independently in float64
    np.testing.assert_allclose(r["runs"][0]["nll"], want_nll, rtol=1e-5, atol=1e-5)
    assert r["runs"][1]["nll"] != r["runs"][2]["nll"]


def test_perplexity_counts_fp16_overflow_of_q8_1(tmp_path):
    """The attention norm's weight scaled so that blocks of 32 inputs of attn_q/k/v sum past
    65504: q8_1 reports overflowing blocks, q8_k128 none, and iq1_s_r4 x q8_1 (the pre-PR-#194
    kernel reading s) turns the logits into NaN."""
    path = tmp_path / "big.gguf"
    tiny_models.tiny_llama(path, n_layer=1)
    f = gguf_io.read(path)
    tensors = {n: f.tensors[n] for n in f.raw}
    tensors["blk.0.attn_norm.weight"] = np.asarray(tensors["blk.0.attn_norm.weight"]) * np.float32(3e4)
    big = tmp_path / "big2.gguf"
    gguf_io.write(big, tensors, f.metadata)
    out = tmp_path / "o.json"
    (tmp_path / "t.txt").write_text(TEXT)
    assert cli.main(["perplexity", str(big), "--text", str(tmp_path / "t.txt"), "--ctx", "16", "--chunks", "1",
                     "--weights", "iq1_s_r4", "--activations", "q8_1", "q8_k128", "--json", str(out),
                     "--no-progress"]) == 0
    runs = json.loads(out.read_text())["runs"]
    assert runs[1]["activations"] == "q8_1" and runs[1]["overflow_blocks"] > 0 and np.isnan(runs[1]["ppl"])
    assert runs[2]["activations"] == "q8_k128" and runs[2]["overflow_blocks"] == 0 and np.isfinite(runs[2]["ppl"])


def test_perplexity_errors(tiny, tmp_path, capsys):
    _, path, text = tiny
    assert cli.main(["perplexity", str(path), "--text", str(text), "--ctx", "64", "--llama-compatible"]) == 2
    assert "at least 2 * ctx" in capsys.readouterr().err
    assert cli.main(["perplexity", str(path), "--imatrix", "x.dat", "--both-imatrix", "--ctx", "1"]) == 2


def test_imatrix_cli_writes_what_llama_imatrix_defines(tiny, tmp_path):
    arch, path, text = tiny
    out_gguf, out_dat = tmp_path / "im.gguf", tmp_path / "im.dat"
    for out in (out_gguf, out_dat):
        assert cli.main(["imatrix", str(path), "--text", str(text), "--ctx", "16", "-o", str(out),
                         "--no-progress"]) == 0
    # independently: mean x^2 per column of every block linear input over llama-imatrix's chunks
    tok = Tokenizer(gguf_io.read(path).metadata)
    parts = chunks(tok.encode(TEXT, add_bos=False), 16, 1, llama_compatible=True)
    model = load(path, threads=1)
    seen: dict[str, list[np.ndarray]] = {}
    for c in parts:
        model.hidden(c.tokens, lambda name, x: seen.setdefault(name, []).append(x.astype(np.float64)))
    want = {n: np.mean(np.square(np.concatenate(xs)), axis=0) for n, xs in seen.items() if n.startswith("blk.")}
    assert len(want) == 7 * model.config.n_layer
    for out in (out_gguf, out_dat):
        im = imatrix.load(out)
        assert im.format == ("gguf" if out == out_gguf else "legacy") and set(im.entries) == set(want)
        assert im.chunks == len(parts) and im.datasets == [str(text)]
        for n, v in want.items():
            np.testing.assert_allclose(im.entries[n], v, rtol=2e-6)
    # the GGUF layout: in_sum2 (1, K) and counts (1, 1) per entry, as mainline llama.cpp writes
    f = gguf_io.read(out_gguf)
    assert f.metadata["general.type"] == "imatrix"
    n = "blk.0.ffn_down.weight"
    assert f.raw[n + ".in_sum2"].shape == (1, model.layers[0].lin["down"].shape[1])
    assert f.tensors[n + ".counts"].tolist() == [[16.0 * len(parts)]]
    # and iq1q quantize takes it
    q = tmp_path / "q.gguf"
    assert cli.main(["quantize", str(path), str(q), "--type", "iq1_s_r4", "--imatrix", str(out_gguf),
                     "--no-progress"]) == 0
    assert gguf_io.read(q).tensors["blk.0.attn_q.weight"].format == "iq1_s_r4"


def test_builtin_text_is_shipped():
    t = builtin_text()
    assert t.startswith("First Citizen:") and len(t) > 10000


def test_a_pair_the_rows_cannot_take_is_named(tmp_path, capsys):
    """iq1_s_r4 rows of 128 x q8_k (blocks of 256): refused before any chunk runs."""
    path = tmp_path / "t.gguf"
    tiny_models.tiny_llama(path, n_layer=1)
    (tmp_path / "t.txt").write_text(TEXT)
    assert cli.main(["perplexity", str(path), "--text", str(tmp_path / "t.txt"), "--ctx", "16",
                     "--weights", "iq1_s_r4", "--activations", "q8_k", "--no-progress"]) == 2
    assert ("blk.0.attn_q.weight: row length 128 is not a multiple of 256, the larger block of "
            "iq1_s_r4 (32) x q8_k (256)") in capsys.readouterr().err


def test_an_iq1_file_runs_as_it_is(tmp_path, capsys):
    path, q = tmp_path / "t.gguf", tmp_path / "q.gguf"
    tiny_models.tiny_llama(path, n_layer=1)
    (tmp_path / "t.txt").write_text(TEXT)
    assert cli.main(["quantize", str(path), str(q), "--type", "iq1_m_r4", "--no-progress"]) == 0
    out = tmp_path / "o.json"
    base = ["perplexity", str(q), "--text", str(tmp_path / "t.txt"), "--ctx", "16", "--no-progress"]
    assert cli.main(base + ["--activations", "q8_0", "q8_k128", "--json", str(out)]) == 0
    runs = json.loads(out.read_text())["runs"]
    assert [(r["weights"], r["activations"], r["from_file"]) for r in runs] == [
        ("iq1_m_r4", "q8_0", True), ("iq1_m_r4", "q8_k128", True)]
    # the file's own bytes: the same NLL as the model iq1q.models.model reads from it
    model = load(q, activation="q8_k128", threads=1)
    tok = Tokenizer(gguf_io.read(q).metadata)
    c = chunks(tok.encode(TEXT, add_bos=False), 16, 1)[0]
    np.testing.assert_allclose(runs[1]["nll"][:15], _nll_float64(model.forward(c.tokens)[:-1], c.tokens[1:]),
                               rtol=1e-5, atol=1e-5)
    capsys.readouterr()
    assert cli.main(base + ["--weights", "iq1_s_r4"]) == 2
    assert "already quantized (iq1_m_r4)" in capsys.readouterr().err


@pytest.mark.parametrize("threads", [1, 2])
def test_threads_hold_for_the_float_work_too(tmp_path, monkeypatch, threads):
    """--threads holds for the float work around the kernels: numpy's BLAS is one thread
    while the layers run (what it reports to the hooks) and as before afterwards; the pieces
    of the output head run at most `threads` at a time."""
    import threading

    threadpoolctl = pytest.importorskip("threadpoolctl")
    from iq1q.models import perplexity, rows

    def blas() -> set[int]:
        return {d["num_threads"] for d in threadpoolctl.threadpool_info() if d.get("user_api") == "blas"}

    before, seen, running, most, lock = blas(), [], [0], [0], threading.Lock()
    monkeypatch.setattr(perplexity.Stats, "__call__", lambda self, name, x: seen.extend(blas()))
    piece = rows.RowMatrix.rows

    def counted(*a, **k):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            return piece(*a, **k)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(rows.RowMatrix, "rows", counted)
    monkeypatch.setattr(rows, "SLICE_ROWS", 64)  # the head of 300 rows in 5 pieces
    path = tmp_path / "t.gguf"
    tiny_models.tiny_llama(path, n_layer=1)
    c = chunks(Tokenizer(gguf_io.read(path).metadata).encode(TEXT, add_bos=False), 16, 1)[0]
    perplexity.evaluate(load(path, threads=threads), perplexity.Run("float", None, False), [c], progress=False)
    assert seen and set(seen) == {1}, seen
    assert blas() == before
    assert 1 <= most[0] <= threads
