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


def _embeddings(w, tied: bool) -> dict[str, tuple[int, ...]]:
    """The file type and vocabulary keys, and the shapes of the tensors outside the blocks."""
    w.add_file_type(0)
    _vocab(w)
    shapes = {"token_embd.weight": (N_VOCAB, N_EMBD), "output_norm.weight": (N_EMBD,)}
    return shapes if tied else shapes | {"output.weight": (N_VOCAB, N_EMBD)}


def _finish(w, shapes: dict[str, tuple[int, ...]], scale: float,
            fixed: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """fixed: tensors whose values are given rather than hashed."""
    out = {name: _norm(shape, 1000 + i) if "norm" in name else (stable_weights(shape, i) * scale).astype(np.float32)
           for i, (name, shape) in enumerate(shapes.items())}
    out |= fixed or {}
    finish(w, {name: (x, T.F32) for name, x in out.items()})
    return out


def tiny_llama(path: Path, n_layer: int = 2) -> dict[str, np.ndarray]:
    """llama: 4 heads of 32, 2 KV heads (GQA), SiLU MLP of 256, separate output, RoPE base 500."""
    n_head, n_kv, head, n_ff = 4, 2, 32, 256
    w = _writer(path, "llama", n_layer, n_ff, n_head, n_kv)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(head)
    w.add_rope_freq_base(500.0)
    shapes = _embeddings(w, tied=False)
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
    shapes = _embeddings(w, tied=True)
    w.add_add_space_prefix(False)
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


def _moe_keys(w, arch: str, n_expert: int, n_used: int, n_ff_exp: int) -> None:
    w.add_uint32(f"{arch}.expert_count", n_expert)
    w.add_uint32(f"{arch}.expert_used_count", n_used)
    w.add_uint32(f"{arch}.expert_feed_forward_length", n_ff_exp)


def _yarn_keys(w, arch: str, factor: float, n_ctx_orig: int) -> None:
    w.add_string(f"{arch}.rope.scaling.type", "yarn")
    w.add_float32(f"{arch}.rope.scaling.factor", factor)
    w.add_uint32(f"{arch}.rope.scaling.original_context_length", n_ctx_orig)


def _experts(p: str, n_expert: int, n_ff: int) -> dict[str, tuple[int, ...]]:
    return {p + "ffn_gate_inp.weight": (n_expert, N_EMBD), p + "ffn_gate_exps.weight": (n_expert, n_ff, N_EMBD),
            p + "ffn_up_exps.weight": (n_expert, n_ff, N_EMBD), p + "ffn_down_exps.weight": (n_expert, N_EMBD, n_ff)}


def _dense(p: str, n_ff: int, infix: str = "") -> dict[str, tuple[int, ...]]:
    return {p + f"ffn_gate{infix}.weight": (n_ff, N_EMBD), p + f"ffn_up{infix}.weight": (n_ff, N_EMBD),
            p + f"ffn_down{infix}.weight": (N_EMBD, n_ff)}


def _qwen3(path: Path, arch: str, n_layer: int, n_head: int, n_kv: int, head: int, n_ff: int,
           n_expert: int = 0, n_used: int = 0, tied: bool = False, yarn: bool = False) -> dict[str, np.ndarray]:
    w = _writer(path, arch, n_layer, n_ff, n_head, n_kv)
    w.add_key_length(head)
    w.add_value_length(head)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(1e6)
    if yarn:
        _yarn_keys(w, arch, 4.0, 64)
    if n_expert:
        _moe_keys(w, arch, n_expert, n_used, n_ff)
    shapes = _embeddings(w, tied)
    for b in range(n_layer):
        p = f"blk.{b}."
        shapes |= {p + "attn_norm.weight": (N_EMBD,), p + "attn_q.weight": (n_head * head, N_EMBD),
                   p + "attn_k.weight": (n_kv * head, N_EMBD), p + "attn_v.weight": (n_kv * head, N_EMBD),
                   p + "attn_q_norm.weight": (head,), p + "attn_k_norm.weight": (head,),
                   p + "attn_output.weight": (N_EMBD, n_head * head), p + "ffn_norm.weight": (N_EMBD,)}
        shapes |= _experts(p, n_expert, n_ff) if n_expert else _dense(p, n_ff)
    return _finish(w, shapes, 4.0)


def tiny_qwen3(path: Path) -> dict[str, np.ndarray]:
    """qwen3: 2 layers, 4 heads of 64 (key_length != n_embd / n_head), 2 KV heads, q/k norms,
    NEOX RoPE base 1e6 with YaRN (factor 4, original context 64), SiLU MLP of 256, tied output."""
    return _qwen3(path, "qwen3", 2, 4, 2, 64, 256, tied=True, yarn=True)


def tiny_qwen3moe(path: Path) -> dict[str, np.ndarray]:
    """qwen3moe: 2 layers, 4 heads of 32, 1 KV head, q/k norms, 8 experts of 128, 2 used
    (softmax, weights normalized: llama.cpp's fixed choice), separate output."""
    return _qwen3(path, "qwen3moe", 2, 4, 1, 32, 128, n_expert=8, n_used=2)


def _deepseek2(path: Path, n_layer: int, n_dense: int, n_head: int, q_lora: int, kv_lora: int, nope: int,
               rope: int, v: int, n_ff: int, n_expert: int, n_used: int, n_ff_exp: int, n_shared: int,
               gating: int, norm: bool, scale: float, yarn: bool) -> dict[str, np.ndarray]:
    arch = "deepseek2"
    w = _writer(path, arch, n_layer, n_ff, n_head, n_head)  # ik_llama.cpp's layout: head_count_kv = head_count
    w.add_key_length(nope + rope)
    w.add_value_length(v)
    w.add_rope_dimension_count(rope)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(10000.0)
    w.add_uint32(f"{arch}.leading_dense_block_count", n_dense)
    if q_lora:
        w.add_uint32(f"{arch}.attention.q_lora_rank", q_lora)
    w.add_uint32(f"{arch}.attention.kv_lora_rank", kv_lora)
    _moe_keys(w, arch, n_expert, n_used, n_ff_exp)
    w.add_uint32(f"{arch}.expert_shared_count", n_shared)
    w.add_float32(f"{arch}.expert_weights_scale", scale)
    w.add_bool(f"{arch}.expert_weights_norm", norm)
    w.add_uint32(f"{arch}.expert_gating_func", gating)
    if yarn:
        _yarn_keys(w, arch, 4.0, 64)
        w.add_float32(f"{arch}.rope.scaling.yarn_log_multiplier", 0.1)
    shapes = _embeddings(w, tied=False)
    for b in range(n_layer):
        p = f"blk.{b}."
        shapes[p + "attn_norm.weight"] = (N_EMBD,)
        if q_lora:
            shapes |= {p + "attn_q_a.weight": (q_lora, N_EMBD), p + "attn_q_a_norm.weight": (q_lora,),
                       p + "attn_q_b.weight": (n_head * (nope + rope), q_lora)}
        else:
            shapes[p + "attn_q.weight"] = (n_head * (nope + rope), N_EMBD)
        shapes |= {p + "attn_kv_a_mqa.weight": (kv_lora + rope, N_EMBD), p + "attn_kv_a_norm.weight": (kv_lora,),
                   p + "attn_kv_b.weight": (n_head * (nope + v), kv_lora),
                   p + "attn_output.weight": (N_EMBD, n_head * v), p + "ffn_norm.weight": (N_EMBD,)}
        if b < n_dense:
            shapes |= _dense(p, n_ff)
        else:
            shapes |= _experts(p, n_expert, n_ff_exp) | _dense(p, n_ff_exp * n_shared, "_shexp")
            if gating == 2:
                shapes[p + "exp_probs_b.bias"] = (n_expert,)
    # selection biases from -0.5 to 0.625 (exact in float32), another expert favoured in
    # each layer: as large as the spread of the sigmoid scores, so that they change choices
    bias = {f"blk.{b}.exp_probs_b.bias": (1.125 * ((np.arange(n_expert) + b) % n_expert) / (n_expert - 1)
                                          - 0.5).astype(np.float32) for b in range(n_dense, n_layer) if gating == 2}
    return _finish(w, shapes, 4.0, bias)


def tiny_deepseek2(path: Path) -> dict[str, np.ndarray]:
    """deepseek2 with q_lora_rank 128: 3 layers, the first dense (MLP of 256); 4 heads with a
    no-RoPE part of 32, a RoPE part of 32 and values of 32; kv_lora_rank 128 (attn_kv_b);
    8 experts of 128, 3 used, softmax gating, weights not normalized, scaled by 2.5, one shared
    expert. (Every row length a multiple of 128, so that q8_k128 activations can take it.)"""
    return _deepseek2(path, 3, 1, 4, 128, 128, 32, 32, 32, 256, 8, 3, 128, 1, gating=1, norm=False, scale=2.5,
                      yarn=False)


def tiny_deepseek2_lite(path: Path) -> dict[str, np.ndarray]:
    """deepseek2 without q_lora_rank (attn_q), as DeepSeek-V2-Lite: 26 layers, because
    ik_llama.cpp tells the two kinds apart by the layer count (26 or 27: no q_lora_rank), the
    first 24 dense (MLP of 128); 2 heads (keys 32 + 32, values 64), kv_lora_rank 128; 4 experts
    of 128, 2 used, sigmoid gating with exp_probs_b, normalized, scaled by 1.5, two shared
    experts; YaRN factor 4 from an original context of 64, yarn_log_multiplier 0.1."""
    return _deepseek2(path, 26, 24, 2, 0, 128, 32, 32, 64, 128, 4, 2, 128, 2, gating=2, norm=True, scale=1.5,
                      yarn=True)


def split_mla(src: Path, dst: Path) -> None:
    """The same deepseek2 model in llama.cpp's newer layout: attn_kv_b split per head into
    attn_k_b (kv_lora_rank x nope, transposed) and attn_v_b (v x kv_lora_rank), one KV head,
    the head sizes under key_length_mla / value_length_mla (tiny_deepseek2's sizes)."""
    from iq1q import gguf_io

    f = gguf_io.read(src)
    md = dict(f.metadata)
    H, nope, rope, v = 4, 32, 32, 32
    kv = int(md["deepseek2.attention.kv_lora_rank"])
    md |= {"deepseek2.attention.head_count_kv": np.uint32(1),
           "deepseek2.attention.key_length": np.uint32(kv + rope), "deepseek2.attention.value_length": np.uint32(kv),
           "deepseek2.attention.key_length_mla": np.uint32(nope + rope),
           "deepseek2.attention.value_length_mla": np.uint32(v)}
    tensors = {}
    for n in f.raw:
        t = np.asarray(f.tensors[n])
        if n.endswith("attn_kv_b.weight"):
            per_head = t.reshape(H, nope + v, kv)
            tensors[n.replace("kv_b", "k_b")] = np.ascontiguousarray(per_head[:, :nope].transpose(0, 2, 1))
            tensors[n.replace("kv_b", "v_b")] = np.ascontiguousarray(per_head[:, nope:])
        else:
            tensors[n] = t
    gguf_io.write(dst, tensors, md)


# the text of the perplexity and imatrix fixtures: words the tiny vocabulary merges, a few bytes
PPL_TEXT = " ".join(f"w{(i * i + 3 * i) % 10}" + ("\u00e9" if i % 11 == 0 else "") for i in range(200))
PPL_CTX = 64
# the text of the imatrix fixtures: ik_llama.cpp's llama-imatrix works in chunks of at least
# 256 tokens (it rounds the context up) and wants two of them
IMATRIX_TEXT = " ".join(f"w{(i * 7 + i // 3) % 10}" + ("\u00e8" if i % 13 == 0 else "") for i in range(560))
IMATRIX_CTX = 256
