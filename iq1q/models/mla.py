"""Multi-head latent attention (`deepseek2`), as llama.cpp's build_deepseek2 computes it.

Per token: q = attn_q(x), or attn_q_b(rms_norm(attn_q_a(x))) when q_lora_rank > 0;
attn_kv_a_mqa(x) gives the latent c (kv_lora_rank values, then RMS-normed) and one key part
k_rope (n_rot values) that every head shares. Each head's query and key are a no-RoPE part
(nope values) followed by a RoPE part (n_rot values, RoPE "norm", YaRN when the metadata asks
for it). The no-RoPE key and the value of every head come from c:

* `attn_kv_b` (ik_llama.cpp's files, and llama.cpp's before it split them): one matrix,
  (n_head * (nope + v), kv_lora_rank), whose rows per head are k_nope then v;
* `attn_k_b` and `attn_v_b` (newer llama.cpp converters): per head, k_b (kv_lora_rank, nope),
  the transpose of that head's k_nope rows, and v_b (v, kv_lora_rank). Then, as llama.cpp
  does, each head's query is carried into the latent space (k_b applied to q_nope) and the
  value is taken from the attention-weighted latent (v_b applied to softmax @ c): per head
  an `iq1q.matmul`, named `attn_k_b.weight[h]` / `attn_v_b.weight[h]` for the hook.

Scores are scaled by mscale^2 / sqrt(nope + n_rot), mscale = attn_factor * (1 +
yarn_log_multiplier * ln(rope factor)); the RoPE rotation itself is not scaled.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ModelError


@dataclass(frozen=True)
class MLAConfig:
    q_lora_rank: int   # 0: attn_q directly
    kv_lora_rank: int
    nope: int          # no-RoPE part of each head's query and key
    rope: int          # RoPE part (n_rot)
    v: int             # value length per head

    @classmethod
    def from_metadata(cls, key: Callable[..., Any], arch: str, n_head: int) -> MLAConfig:
        """key(name, default) reads `{arch}.name`. Files in llama.cpp's newer layout give the
        head sizes as key_length_mla / value_length_mla (key_length is then kv_lora_rank + n_rot)."""
        kv = int(key("attention.kv_lora_rank"))
        rope = int(key("rope.dimension_count"))
        head_k = int(key("attention.key_length_mla", 0)) or int(key("attention.key_length"))
        v = int(key("attention.value_length_mla", 0)) or int(key("attention.value_length"))
        if head_k <= rope:
            raise ModelError(f"{arch}: key length {head_k} leaves no room beside {rope} RoPE dimensions")
        return cls(int(key("attention.q_lora_rank", 0)), kv, head_k - rope, rope, v)


class MLA:
    """The attention projections of one block (attn_output stays with the model's layer)."""

    def __init__(self, config: MLAConfig, n_head: int, lin: Mapping[str, Any], norms: Mapping[str, np.ndarray],
                 k_b: list | None = None, v_b: list | None = None):
        """lin: "q" or "q_a" and "q_b", "kv_a", and "kv_b" unless k_b / v_b (a Linear per head)."""
        self.config, self.n_head, self.lin, self.norms = config, n_head, lin, norms
        self.k_b, self.v_b = k_b, v_b

    def linears(self) -> list:
        out = [self.lin[k] for k in ("q", "q_a", "q_b", "kv_a", "kv_b") if k in self.lin]
        if self.k_b is not None:
            out += self.k_b + self.v_b
        return out

    def __call__(self, h: np.ndarray, mask: np.ndarray, rope: Callable[[np.ndarray], np.ndarray],
                 rms_norm: Callable[[np.ndarray, np.ndarray], np.ndarray], scale: float, activation: str,
                 threads: int | None, hook) -> np.ndarray:
        """Attention of normed h (T, n_embd) -> the input of attn_output (T, n_head * v).
        rope(x (T, heads, n_rot)) rotates; rms_norm(x, weight) is the model's; mask (T, T) is
        added to the scores."""
        c, L, H, T = self.config, self.lin, self.n_head, len(h)
        if "q" in L:
            q = L["q"](h, activation, threads, hook)
        else:
            q = L["q_b"](rms_norm(L["q_a"](h, activation, threads, hook), self.norms["q_a"]),
                         activation, threads, hook)
        q = q.reshape(T, H, c.nope + c.rope)
        kv = L["kv_a"](h, activation, threads, hook)
        latent = rms_norm(kv[:, :c.kv_lora_rank], self.norms["kv_a"])
        k_rope = rope(np.ascontiguousarray(kv[:, None, c.kv_lora_rank:]))[:, 0]  # (T, rope), shared by the heads
        q_rope = rope(np.ascontiguousarray(q[..., c.nope:]))
        q_nope = q[..., :c.nope]
        s_scale = np.float32(scale)
        out = np.empty((T, H, c.v), np.float32)
        if self.k_b is None:
            kvb = L["kv_b"](latent, activation, threads, hook).reshape(T, H, c.nope + c.v)
            k_nope, v = kvb[..., :c.nope], kvb[..., c.nope:]
        for j in range(H):
            if self.k_b is None:
                s = q_nope[:, j] @ k_nope[:, j].T
            else:  # the query in the latent space: q_nope . (k_b^T c) = (k_b q_nope) . c
                s = self.k_b[j](np.ascontiguousarray(q_nope[:, j]), activation, threads, hook) @ latent.T
            s += q_rope[:, j] @ k_rope.T
            s *= s_scale
            s += mask
            s -= s.max(axis=-1, keepdims=True)
            np.exp(s, out=s)
            s /= s.sum(axis=-1, keepdims=True)
            if self.k_b is None:
                out[:, j] = s @ v[:, j]
            else:
                out[:, j] = self.v_b[j](s @ latent, activation, threads, hook)
        return out.reshape(T, H * c.v)


def kq_scale(head_k: int, attn_factor: float, log_mul: float, freq_scale: float) -> float:
    """llama.cpp's deepseek2 score scale: mscale^2 / sqrt(head_k)."""
    mscale = attn_factor * (1.0 + log_mul * math.log(1.0 / freq_scale))
    return mscale * mscale / math.sqrt(head_k)
