"""Small GGUF models and imatrix files for the tests, written with the gguf package's
own GGUFWriter (not iq1q's), and the ik_llama.cpp tools when they are built here."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import ik_build
import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
from gguf import GGMLQuantizationType as T  # noqa: E402

ROOT_VECTORS = Path(__file__).resolve().parent / "vectors"


def stable_weights(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Float32 weights that every platform and numpy version computes to the same bits
    (integer hashing, then exact conversions): for the files ik_llama.cpp wrote once."""
    n = int(np.prod(shape))
    i = np.arange(n, dtype=np.uint64) + np.uint64(seed * 1_000_003)
    h = (i * np.uint64(2654435761) + np.uint64(0x9E3779B9)) % np.uint64(1 << 32)
    h = (h ^ (h >> np.uint64(15))) * np.uint64(2246822519) % np.uint64(1 << 32)
    u = (h >> np.uint64(8)).astype(np.float64) / float(1 << 24)  # 24 bits: exact in float32
    # a symmetric, peaked distribution (cube of a uniform) with a few large values, like weights
    t = 2 * u - 1
    v = t * t * t  # multiplications only: IEEE-exact everywhere (pow() need not be)
    return (v * 0.05).astype(np.float32).reshape(shape)


def add(w, name: str, x: np.ndarray, qtype: T = T.F32) -> None:
    """Add a tensor, stored as qtype (quantized by the gguf package when not F32/F16)."""
    if qtype == T.F32:
        w.add_tensor(name, np.ascontiguousarray(x, dtype=np.float32))
    elif qtype == T.F16:
        w.add_tensor(name, np.ascontiguousarray(x, dtype=np.float16))
    else:
        q = gguf.quants.quantize(np.asarray(x, np.float32), qtype)
        w.add_tensor(name, q, raw_dtype=qtype)


def tiny_llama(path: Path, *, n_embd: int = 128, n_head: int = 4, n_head_kv: int = 1, n_ff: int = 32,
               n_layer: int = 1, n_vocab: int = 8, n_expert: int = 0, qtype: T = T.F32,
               output: bool = False, weights=stable_weights) -> dict[str, np.ndarray]:
    """A llama-architecture model that ik_llama.cpp's llama-quantize accepts; returns the
    float32 weights by name (as stored, i.e. before any source quantization)."""
    head = n_embd // n_head
    shapes: dict[str, tuple[int, ...]] = {"token_embd.weight": (n_vocab, n_embd), "output_norm.weight": (n_embd,)}
    if output:
        shapes["output.weight"] = (n_vocab, n_embd)
    for b in range(n_layer):
        p = f"blk.{b}."
        shapes |= {p + "attn_norm.weight": (n_embd,), p + "attn_q.weight": (n_head * head, n_embd),
                   p + "attn_k.weight": (n_head_kv * head, n_embd), p + "attn_v.weight": (n_head_kv * head, n_embd),
                   p + "attn_output.weight": (n_embd, n_head * head), p + "ffn_norm.weight": (n_embd,)}
        if n_expert:
            shapes |= {p + "ffn_gate_inp.weight": (n_expert, n_embd),
                       p + "ffn_gate_exps.weight": (n_expert, n_ff, n_embd),
                       p + "ffn_up_exps.weight": (n_expert, n_ff, n_embd),
                       p + "ffn_down_exps.weight": (n_expert, n_embd, n_ff)}
        else:
            shapes |= {p + "ffn_gate.weight": (n_ff, n_embd), p + "ffn_up.weight": (n_ff, n_embd),
                       p + "ffn_down.weight": (n_embd, n_ff)}
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny")
    w.add_context_length(256)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(head)
    w.add_file_type(0)
    if n_expert:
        w.add_expert_count(n_expert)
        w.add_expert_used_count(min(2, n_expert))
    w.add_tokenizer_model("llama")
    w.add_token_list([f"<t{i}>" for i in range(n_vocab)])
    w.add_token_scores([0.0] * n_vocab)
    w.add_token_types([1] * n_vocab)
    out = {name: np.ones(shape, np.float32) if name.endswith("norm.weight") else weights(shape, i)
           for i, (name, shape) in enumerate(shapes.items())}
    finish(w, {name: (x, qtype if x.ndim >= 2 else T.F32) for name, x in out.items()})
    return out


def finish(w, tensors: dict[str, tuple[np.ndarray, T]]) -> None:
    """Add the tensors (array, stored type) in order, then write and close the file."""
    for name, (x, qtype) in tensors.items():
        add(w, name, x, qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_legacy_imatrix(path: Path, entries: dict[str, tuple[int, np.ndarray]], chunks: int = 1,
                         dataset: str | None = "test.txt") -> None:
    """llama-imatrix's legacy .dat: name -> (ncall, values already multiplied by ncall)."""
    with open(path, "wb") as f:
        f.write(struct.pack("<i", len(entries)))
        for name, (ncall, values) in entries.items():
            b = name.encode()
            v = np.asarray(values, "<f4")
            f.write(struct.pack("<i", len(b)) + b + struct.pack("<ii", ncall, v.size) + v.tobytes())
        if dataset is not None:
            d = dataset.encode()
            f.write(struct.pack("<ii", chunks, len(d)) + d)


def write_gguf_imatrix(path: Path, entries: dict[str, tuple[np.ndarray, np.ndarray]], chunks: int = 1) -> None:
    """Mainline llama.cpp's GGUF imatrix: name -> (in_sum2 (n_mat, K), counts (n_mat,))."""
    w = gguf.GGUFWriter(str(path), "")
    w.add_type("imatrix")
    w.add_array("imatrix.datasets", ["test.txt"])
    w.add_uint32("imatrix.chunk_count", chunks)
    w.add_uint32("imatrix.chunk_size", 512)
    for name, (sums, counts) in entries.items():
        w.add_tensor(name + ".in_sum2", np.asarray(sums, np.float32).reshape(len(counts), -1))
        w.add_tensor(name + ".counts", np.asarray(counts, np.float32).reshape(len(counts), 1))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def require_ik(name: str) -> Path:
    """An ik_llama.cpp tool built by benchmarks/ikbench/build-tools.sh; skips the test without it."""
    tool = ik_build.tool(name)
    if tool is None:
        pytest.skip(ik_build.not_built(f"ik_llama.cpp's {name}", f"{ik_build.HARNESS}/build-tools.sh"))
    return tool


def run_ik_quantize(src: Path, dst: Path, ftype: str, *extra: str, tool: Path | None = None,
                    threads: int = 1) -> subprocess.CompletedProcess:
    """ik_llama.cpp's llama-quantize --pure on src (pass --token-embedding-type to keep that one)."""
    tool = tool or require_ik("llama-quantize")
    r = subprocess.run([str(tool), "--pure", "--allow-requantize", *extra, str(src), str(dst), ftype,
                        str(threads)],
                       capture_output=True, text=True, cwd=dst.parent)
    if r.returncode != 0:
        raise AssertionError(f"llama-quantize failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


# ik's llama-quantize built -ffp-contract=off by tests/ik_nofma_quantize.sh, or None
ik_nofma_quantize = ik_build.nofma_quantize
