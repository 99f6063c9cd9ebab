"""Tiny llama and gemma3 GGUF models for the forward-pass tests, written with the gguf
package from platform-exact weights (gguf_models.stable_weights), so that the logits
ik_llama.cpp computed for them once (tests/vectors/tiny_*_ik_logits.npz, see
tests/vectors/MODEL_FIXTURES.md) apply to the files every run rebuilds."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gguf_models import T, finish, gguf, stable_weights

N_VOCAB = 300
N_EMBD = 128
# the token ids ik_llama.cpp was given (int32), BOS = 1 first
TOKENS = np.array([1, 17, 250, 3, 99, 42, 42, 7, 123, 299, 5, 64, 200, 11, 180, 77, 2, 150, 33, 260], np.int32)


def _norm(shape: tuple[int, ...], seed: int) -> np.ndarray:
    # not all ones, so that a norm weight left out or misapplied shows in the logits
    return (1.0 + 4.0 * stable_weights(shape, seed)).astype(np.float32)


def _vocab(w) -> None:
    # a SentencePiece BPE vocabulary that llama.cpp loads: control tokens, the 256 byte
    # tokens, and pieces that merge into words "w0".."w9" (anything else falls back to bytes)
    pieces = ["\u2581", "w", "\u2581w"] + [str(d) for d in range(10)] + [f"\u2581w{d}" for d in range(10)]
    pieces += [f"w{d}" for d in range(10)] + list("abcdefgh")
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + pieces
    assert len(tokens) == N_VOCAB
    types = [2, 3, 3] + [6] * 256 + [1] * len(pieces)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * 259 + [-float(len(p)) for p in pieces])
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)


def _writer(path: Path, arch: str, n_layer: int, n_ff: int, n_head: int, n_kv: int):
    """A GGUFWriter with the hyper-parameters both architectures share."""
    w = gguf.GGUFWriter(str(path), arch)
    w.add_context_length(256)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    return w


def _finish(w, shapes: dict[str, tuple[int, ...]], scale: float) -> dict[str, np.ndarray]:
    out = {name: _norm(shape, 1000 + i) if "norm" in name else (stable_weights(shape, i) * scale).astype(np.float32)
           for i, (name, shape) in enumerate(shapes.items())}
    finish(w, {name: (x, T.F32) for name, x in out.items()})
    return out


def tiny_llama(path: Path, n_layer: int = 2) -> dict[str, np.ndarray]:
    """llama: 4 heads of 32, 2 KV heads (GQA), SiLU MLP of 256, separate output, RoPE base 500."""
    n_head, n_kv, head, n_ff = 4, 2, 32, 256
    w = _writer(path, "llama", n_layer, n_ff, n_head, n_kv)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(head)
    w.add_rope_freq_base(500.0)
    w.add_file_type(0)
    _vocab(w)
    shapes: dict[str, tuple[int, ...]] = {"token_embd.weight": (N_VOCAB, N_EMBD), "output_norm.weight": (N_EMBD,),
                                          "output.weight": (N_VOCAB, N_EMBD)}
    for b in range(n_layer):
        p = f"blk.{b}."
        shapes |= {p + "attn_norm.weight": (N_EMBD,), p + "attn_q.weight": (n_head * head, N_EMBD),
                   p + "attn_k.weight": (n_kv * head, N_EMBD), p + "attn_v.weight": (n_kv * head, N_EMBD),
                   p + "attn_output.weight": (N_EMBD, n_head * head), p + "ffn_norm.weight": (N_EMBD,),
                   p + "ffn_gate.weight": (n_ff, N_EMBD), p + "ffn_up.weight": (n_ff, N_EMBD),
                   p + "ffn_down.weight": (N_EMBD, n_ff)}
    return _finish(w, shapes, 6.0)


def tiny_gemma3(path: Path, n_layer: int = 6) -> dict[str, np.ndarray]:
    """gemma3: 2 heads of 64 (key_length != n_embd / n_head), 1 KV head, GELU MLP of 256,
    q/k and post norms, tied output, sliding window 5 (shorter than TOKENS, so that the
    five sliding layers and the global sixth differ), RoPE bases 10000 (local) / 1e6."""
    n_head, n_kv, head, n_ff = 2, 1, 64, 256
    w = _writer(path, "gemma3", n_layer, n_ff, n_head, n_kv)
    w.add_key_length(head)
    w.add_value_length(head)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(1e6)
    w.add_sliding_window(5)
    w.add_file_type(0)
    _vocab(w)
    w.add_add_space_prefix(False)
    shapes: dict[str, tuple[int, ...]] = {"token_embd.weight": (N_VOCAB, N_EMBD), "output_norm.weight": (N_EMBD,)}
    for b in range(n_layer):
        p = f"blk.{b}."
        shapes |= {p + "attn_norm.weight": (N_EMBD,), p + "attn_q.weight": (n_head * head, N_EMBD),
                   p + "attn_k.weight": (n_kv * head, N_EMBD), p + "attn_v.weight": (n_kv * head, N_EMBD),
                   p + "attn_q_norm.weight": (head,), p + "attn_k_norm.weight": (head,),
                   p + "attn_output.weight": (N_EMBD, n_head * head), p + "post_attention_norm.weight": (N_EMBD,),
                   p + "ffn_norm.weight": (N_EMBD,), p + "ffn_gate.weight": (n_ff, N_EMBD),
                   p + "ffn_up.weight": (n_ff, N_EMBD), p + "ffn_down.weight": (N_EMBD, n_ff),
                   p + "post_ffw_norm.weight": (N_EMBD,)}
    return _finish(w, shapes, 2.0)
