"""A float32 forward pass of GGUF models over iq1q.matmul: `llama`, `gemma3`, `qwen3`,
`qwen3moe` and `deepseek2` (mixtures of experts: iq1q.models.moe; DeepSeek's multi-head latent
attention: iq1q.models.mla).

    m = iq1q.models.model.load("model.gguf", activation="q8_k128")
    logits = m.forward(token_ids)                 # (T, n_vocab) float32, causal, positions 0..T-1
    m.forward(ids, hook=lambda name, x: ...)      # sees every linear layer's input (T, K)

Every 2-D linear layer whose weight is an IQ1 tensor is an `iq1q.matmul` with the chosen
activation format. Block weights of other types are float32 arrays; the token embedding and
an output head of another type stay in the file's bytes (iq1q.models.rows: a Q8_0 head is
multiplied as ggml does, its input quantized to q8_0). Norms, RoPE, the MLP activations and
attention run natively on iq1q's pool (iq1q.models.ops); products with float weights are
split over the run's threads (iq1q.models.parallel). The hyper-parameters come from the
GGUF metadata (`{arch}.*` keys, as llama.cpp reads them); what llama.cpp fixes per architecture instead of reading it (Gemma 3's
5-local-1-global layer pattern and its local RoPE base, the embedding scale, the GELU MLP,
the extra norms, Qwen3-MoE's routing) is in ARCHITECTURES, the one place for such facts.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import numpy as np

from ..formats import WEIGHT_FORMATS
from ..gemm import matmul
from ..tensors import QuantizedTensor
from . import ops
from .errors import ModelError
from .mla import MLA, MLAConfig, kq_scale
from .moe import MoE, MoEConfig, matrix_name
from .parallel import one_blas_thread, pmap
from .rows import RowMatrix

Hook = Callable[[str, np.ndarray], None]
R = TypeVar("R")


@dataclass(frozen=True)
class ArchFacts:
    """What llama.cpp hard-codes per architecture (llama-hparams.cpp, graphs/build_*.cpp)."""

    rope_neox: bool            # NEOX rotates (x[i], x[i + d/2]); NORM rotates (x[2i], x[2i+1])
    activation: str            # gated MLP: act(gate(x)) * up(x)
    embed_scale: bool = False  # token embeddings times sqrt(n_embd)
    qk_norm: bool = False      # RMSNorm of each q and k head before RoPE (attn_q_norm, attn_k_norm)
    post_norms: bool = False   # RMSNorm of the attention and MLP outputs before the residual add
    swa_pattern: int = 0       # every swa_pattern-th layer is global, the others sliding (0: none)
    rope_base_swa: float | None = None  # RoPE base of the sliding layers
    mla: bool = False          # multi-head latent attention (iq1q.models.mla) instead of q, k, v
    moe: bool = False          # blocks may be mixtures of experts (iq1q.models.moe)
    expert_gating: str | None = None         # fixed gating function; None: the expert_gating_func key
    expert_weights_norm: bool | None = None  # fixed; None: the expert_weights_norm key
    expert_weights_scale: bool = False       # the chosen weights are scaled by expert_weights_scale


ARCHITECTURES: dict[str, ArchFacts] = {
    "llama": ArchFacts(rope_neox=False, activation="silu"),
    # llama.cpp's build_gemma3: layers il with (il + 1) % 6 != 0 use the sliding window and
    # RoPE base 10000; norm weights in GGUF already include Gemma's "1 +"
    "gemma3": ArchFacts(rope_neox=True, activation="gelu", embed_scale=True, qk_norm=True,
                        post_norms=True, swa_pattern=6, rope_base_swa=10000.0),
    # llama.cpp's build_qwen3 / build_qwen3moe: NEOX RoPE, q/k norms; softmax routing whose
    # chosen weights are always normalized, whatever the metadata says
    "qwen3": ArchFacts(rope_neox=True, activation="silu", qk_norm=True),
    "qwen3moe": ArchFacts(rope_neox=True, activation="silu", qk_norm=True, moe=True,
                          expert_gating="softmax", expert_weights_norm=True),
    # build_deepseek2: RoPE "norm" on the RoPE part of the heads; gating, normalization,
    # scale, shared experts and the leading dense blocks all from the metadata
    "deepseek2": ArchFacts(rope_neox=False, activation="silu", mla=True, moe=True, expert_weights_scale=True),
}


@dataclass(frozen=True)
class Yarn:
    """YaRN RoPE scaling as ggml applies it (ggml_rope_ext's ext_factor, beta_fast, beta_slow)."""

    freq_scale: float   # 1 / rope.scaling.factor
    n_ctx_orig: int     # rope.scaling.original_context_length
    ext_factor: float = 1.0
    beta_fast: float = 32.0
    beta_slow: float = 1.0

    def ramp(self, n_rot: int, base: float) -> np.ndarray:
        """Per rotated pair, how much of the unscaled (extrapolated) angle is kept: 1 for the
        fast dimensions, 0 for the slow ones, linear between ggml's correction dimensions."""
        def dim(beta: float) -> float:
            return n_rot * math.log(self.n_ctx_orig / (beta * 2 * math.pi)) / (2 * math.log(base))

        low, high = max(0.0, math.floor(dim(self.beta_fast))), min(n_rot - 1.0, math.ceil(dim(self.beta_slow)))
        y = (np.arange(n_rot // 2) - low) / max(0.001, high - low)
        return (1.0 - np.clip(y, 0.0, 1.0)) * self.ext_factor


@dataclass(frozen=True)
class Config:
    arch: str
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim: int        # key length
    value_dim: int
    n_rot: int
    eps: float
    rope_base: float
    rope_scale: float    # positions are multiplied by it (linear scaling: 1 / factor)
    attn_scale: float
    sliding_window: int  # 0: none
    swa_layers: tuple[bool, ...]
    final_softcap: float  # 0: none
    facts: ArchFacts
    yarn: Yarn | None = None
    rope_mscale: float = 1.0   # cos and sin multiplied by it (YaRN's magnitude, rope.scaling.attn_factor)
    moe: MoEConfig | None = None
    mla: MLAConfig | None = None

    @classmethod
    def from_metadata(cls, md: Mapping[str, Any]) -> Config:
        arch = md.get("general.architecture")
        if arch is None:
            raise ModelError("GGUF metadata has no 'general.architecture'")
        arch = str(arch)
        if arch not in ARCHITECTURES:
            raise ModelError(f"architecture {arch!r} is not supported (supported: {', '.join(ARCHITECTURES)})")
        facts = ARCHITECTURES[arch]

        def key(name: str, default: Any = None) -> Any:
            full = f"{arch}.{name}"
            if full in md:
                v = md[full]
                if isinstance(v, (list, np.ndarray)) and np.size(v) > 1:
                    vals = np.unique(np.asarray(v))
                    if vals.size != 1:
                        raise ModelError(f"per-layer values of {full!r} are not supported")
                    v = vals[0]
                return v.item() if isinstance(v, np.generic) else v
            if default is None:
                raise ModelError(f"GGUF metadata has no {full!r} (needed by the {arch} architecture)")
            return default

        n_layer, n_embd, n_head = int(key("block_count")), int(key("embedding_length")), int(key("attention.head_count"))
        n_head_kv = int(key("attention.head_count_kv", n_head))
        if n_head % n_head_kv:
            raise ModelError(f"{n_head} attention heads are not a multiple of {n_head_kv} key/value heads")
        head_dim = int(key("attention.key_length", n_embd // n_head))
        value_dim = int(key("attention.value_length", head_dim))
        n_rot = int(key("rope.dimension_count", head_dim))
        scaling = str(key("rope.scaling.type", "none"))
        factor = float(key("rope.scaling.factor", 1.0))
        attn_factor = float(key("rope.scaling.attn_factor", 1.0))
        yarn, pos_scale = None, 1.0 / factor if factor else 1.0
        if scaling == "yarn" and factor not in (0.0, 1.0):
            yarn = Yarn(1.0 / factor, int(key("rope.scaling.original_context_length", key("context_length"))))
            pos_scale = 1.0
        elif scaling not in ("none", "linear") and factor != 1.0:
            raise ModelError(f"RoPE scaling {scaling!r} is not supported (only linear and yarn)")
        # ggml's rope multiplies cos and sin by attn_factor, and YaRN by 1 + 0.1 ln(factor) more
        rope_mscale = attn_factor * (1.0 + 0.1 * math.log(factor) if yarn else 1.0)
        scale = 1.0 / math.sqrt(head_dim)
        mla = MLAConfig.from_metadata(key, arch, n_head) if facts.mla else None
        if mla is not None:
            head_dim, value_dim, n_rot = mla.nope + mla.rope, mla.v, mla.rope
            # llama.cpp's deepseek2 keeps the rotation unscaled and puts YaRN's magnitude,
            # with yarn_log_multiplier, into the score scale instead
            freq_scale = 1.0 / factor if scaling != "none" and factor else 1.0
            scale = kq_scale(head_dim, attn_factor, float(key("rope.scaling.yarn_log_multiplier", 0.0)), freq_scale)
            rope_mscale = 1.0
        moe = None
        if facts.moe and (facts.mla or int(key("expert_count", 0)) > 0):
            moe = MoEConfig.from_metadata(key, arch, facts.expert_gating, facts.expert_weights_norm,
                                          facts.expert_weights_scale)
        if arch == "gemma3" and n_layer == 62:  # llama.cpp: Gemma 3 27B scales by n_embd / n_head
            scale = 1.0 / math.sqrt(n_embd / n_head)
        window = int(key("attention.sliding_window", 0)) if facts.swa_pattern else 0
        swa = tuple(bool(window) and (il + 1) % facts.swa_pattern != 0 for il in range(n_layer))
        return cls(arch, n_layer, n_embd, n_head, n_head_kv, head_dim, value_dim, n_rot,
                   float(key("attention.layer_norm_rms_epsilon", 1e-5)), float(key("rope.freq_base", 10000.0)),
                   pos_scale, scale, window, swa, float(key("final_logit_softcapping", 0.0)), facts,
                   yarn, rope_mscale, moe, mla)


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float, threads: int | None = None) -> np.ndarray:
    """x / sqrt(mean(x^2) + eps) * w over the last axis (the mean in float64, as ggml)."""
    return ops.rms_norm(x, w, eps, threads)


def rope(x: np.ndarray, pos: np.ndarray, n_rot: int, base: float, scale: float, neox: bool,
         freq_factors: np.ndarray | None = None, yarn: Yarn | None = None, mscale: float = 1.0,
         cache: dict | None = None, threads: int | None = None) -> np.ndarray:
    """Rotary embedding of x (T, heads, d) at positions pos (T,), first n_rot dims of each head;
    with yarn, each pair's angle mixes the scaled and the unscaled one; cos and sin times mscale.
    cache: a dict for the cos/sin tables of these positions (Positions.rope_tables), which
    every layer with the same RoPE parameters shares."""
    key = (n_rot, base, scale, None if freq_factors is None else freq_factors.tobytes(), yarn, mscale)
    tables = cache.get(key) if cache is not None else None
    half = n_rot // 2
    if tables is None:
        inv = base ** (-np.arange(half, dtype=np.float64) * 2.0 / n_rot)
        if freq_factors is not None:  # llama 3's rope_freqs: theta_i / factor_i
            inv = inv / freq_factors[:half]
        theta = (pos.astype(np.float64) * scale)[:, None] * inv[None, :]
        if yarn is not None:
            keep = yarn.ramp(n_rot, base)
            theta = theta * (yarn.freq_scale * (1.0 - keep) + keep)
        tables = ((np.cos(theta) * mscale).astype(np.float32), (np.sin(theta) * mscale).astype(np.float32))
        if cache is not None:
            cache[key] = tables
    return ops.rope(x, *tables, n_rot, neox, threads)


class Linear:
    """y = x @ W.T: iq1q.matmul for an IQ1 weight (the native pool threads it); any other
    weight is a RowMatrix whose product is computed a piece of rows at a time on the run's
    threads (iq1q.models.parallel), dequantized piece by piece when stored quantized."""

    def __init__(self, name: str, weight: QuantizedTensor | np.ndarray | RowMatrix):
        self.name = name
        self.weight = weight
        self.quantized = isinstance(weight, QuantizedTensor)
        self.shape = tuple(weight.shape)
        # a float array too: its pieces are views of its rows
        self._rows = None if self.quantized else weight if isinstance(weight, RowMatrix) else RowMatrix(name, weight)

    def ranges(self) -> list[tuple[int, int]]:
        """The pieces of W's rows that make the output: one for an IQ1 weight, else slices of
        rows.SLICE_ROWS, whether the matrix is stored or a float array: the same float
        results either way, and whatever the thread count."""
        return [(0, self.shape[0])] if self.quantized else self._rows.ranges()

    def product(self, x: np.ndarray, activation: str, threads: int | None,
                exact: bool = False) -> Callable[[int, int], np.ndarray]:
        """(r0, r1) -> x @ W[r0:r1].T as float32, for (r0, r1) in ranges(); exact: a non-IQ1
        weight in float32, x as it is (RowMatrix.product)."""
        if not self.quantized:
            return self._rows.product(x, threads, exact)

        def whole(r0: int, r1: int) -> np.ndarray:
            try:
                # overflow="ignore": a perplexity run must show what the kernels do (the NaNs of
                # ik_llama.cpp before PR #194)
                return matmul(x, self.weight, activation=activation, threads=threads, overflow="ignore")
            except ValueError:  # the activation quantizer found NaN or Inf (or it is another error)
                if np.isfinite(x).all():
                    raise
                # NaN from an earlier layer: propagate it, as ggml does
                return np.full((x.shape[0], self.shape[0]), np.nan, np.float32)
        return whole

    def __call__(self, x: np.ndarray, activation: str, threads: int | None, hook: Hook | None) -> np.ndarray:
        if hook is not None:
            hook(self.name, x)
        if x.shape[0] == 0:  # an expert no token was routed to
            return np.empty((0, self.shape[0]), np.float32)
        piece = self.product(x, activation, threads)
        if self.quantized:
            return piece(0, self.shape[0])
        y = np.empty((x.shape[0], self.shape[0]), np.float32)

        def one(r: tuple[int, int]) -> None:
            y[:, r[0]:r[1]] = piece(*r)

        pmap(one, self.ranges(), threads)
        return y


class _Layer:
    def __init__(self, lin: dict[str, Linear], norms: dict[str, np.ndarray], mla: MLA | None = None,
                 moe: MoE | None = None):
        self.lin, self.norms = lin, norms
        self.mla, self.moe = mla, moe  # latent attention's per-head and the experts' layers

    def holders(self) -> list[dict[str, Linear] | list[Linear]]:
        """The dicts and lists that hold the layer's Linear layers (MLA's lin is self.lin)."""
        out: list = [self.lin]
        if self.mla is not None and self.mla.k_b is not None:
            out += [self.mla.k_b, self.mla.v_b]
        if self.moe is not None:
            out += [self.moe.experts[k] for k in ("gate", "up", "down")]
            if self.moe.shared is not None:
                out.append(self.moe.shared)
        return out

    def linears(self) -> list[Linear]:
        """The layer's Linear layers: attention's first, the experts' among the MLP's."""
        out = list(self.lin.values())
        if self.mla is not None:
            out += [lin for lin in self.mla.linears() if lin not in out]
        if self.moe is not None:
            out += self.moe.linears()
        return out


@dataclass(frozen=True)
class Positions:
    """What every block of one forward pass shares: token positions and attention masks."""

    pos: np.ndarray          # (T,) 0..T-1
    causal: np.ndarray       # (T, T) float32 added to the scores: -inf where a key is in the query's future
    swa_mask: np.ndarray     # the same, and -inf beyond the sliding window too
    rope_tables: dict = field(default_factory=dict)  # rope()'s cos/sin of pos, per set of RoPE parameters


class Model:
    """A causal decoder read from GGUF: forward(tokens) -> logits."""

    def __init__(self, config: Config, tensors: Mapping[str, Any], metadata: Mapping[str, Any] | None = None,
                 activation: str = "auto", threads: int | None = None, raw: Mapping[str, Any] | None = None):
        """tensors: name -> QuantizedTensor or float array (iq1q.gguf_io's GGUFFile.tensors);
        raw, when given (GGUFFile.raw): the stored tensors, from which the token embedding and
        a non-IQ1 output head are read in their own bytes rather than as float copies."""
        self.config, self.activation, self.threads = config, activation, threads
        # the output head in float32 even where the file stores it as Q8_0 (the float model's
        # run of `iq1q perplexity`); by default it is multiplied as ggml does (RowMatrix.product)
        self.float_head = False
        self.metadata = metadata or {}
        c = config

        def get(name: str, optional: bool = False):
            if name not in tensors:
                if optional:
                    return None
                raise ModelError(f"the model has no tensor {name!r}")
            return tensors[name]

        def vec(name: str, n: int, optional: bool = False) -> np.ndarray | None:
            v = get(name, optional)
            if v is None:
                return None
            v = np.asarray(v, np.float32).reshape(-1)
            if v.size != n:
                raise ModelError(f"tensor {name!r} has {v.size} values, expected {n}")
            return v

        def linear(name: str, rows: int, cols: int) -> Linear:
            w = get(name)
            if isinstance(w, tuple) or np.ndim(w) == 3:
                raise ModelError(f"tensor {name!r} is 3-D, expected a matrix of shape {(rows, cols)}")
            if not isinstance(w, QuantizedTensor):
                w = np.ascontiguousarray(w, dtype=np.float32)
            if tuple(w.shape) != (rows, cols):
                raise ModelError(f"tensor {name!r} has shape {tuple(w.shape)}, expected {(rows, cols)}")
            return Linear(name, w)

        def stacked(name: str, n: int, rows: int, cols: int) -> list[Linear]:
            """A 3-D tensor (n, rows, cols) as one Linear per matrix, named matrix_name(name, i);
            a matrix of (n * rows, cols) is cut into its n matrices the same way."""
            w = get(name)
            if isinstance(w, QuantizedTensor) and w.shape == (n * rows, cols) and rows % w._format.rows_per_group == 0:
                rs = w._format.row_size(cols)
                w = tuple(QuantizedTensor(w._format, rows, cols, w.data[i * rows * rs:(i + 1) * rows * rs])
                          for i in range(n))
            elif (not isinstance(w, (tuple, QuantizedTensor)) and np.size(w) == n * rows * cols
                  and np.shape(w)[-1] == cols):
                w = np.ascontiguousarray(w, dtype=np.float32).reshape(n, rows, cols)
            shape = (len(w),) + tuple(w[0].shape) if isinstance(w, tuple) else tuple(np.shape(w))
            if shape != (n, rows, cols):
                raise ModelError(f"tensor {name!r} has shape {shape}, expected {(n, rows, cols)}")
            return [Linear(matrix_name(name, i), m) for i, m in enumerate(w)]

        if c.moe is None and "blk.0.ffn_gate_inp.weight" in tensors:
            raise ModelError(f"mixture-of-experts {c.arch!r} models (ffn_gate_inp) are not supported "
                             f"(supported for: {', '.join(a for a, f in ARCHITECTURES.items() if f.moe)})")
        act = partial(ops.gated, c.facts.activation)  # the experts' act(gate, up, threads)

        def stored(name: str):
            """The tensor as the file stores it, when that is not IQ1 (read in its own bytes);
            else None (IQ1 tensors and arrays come from `tensors`, without a float copy)."""
            r = raw.get(name) if raw is not None else None
            return None if r is None or r.type_name.lower() in WEIGHT_FORMATS else r

        def rows(name: str) -> RowMatrix:  # a matrix read a slice of rows at a time
            try:
                return RowMatrix(name, stored(name) or get(name))
            except ValueError as e:
                raise ModelError(str(e)) from None

        self.embedding = rows("token_embd.weight")
        if self.embedding.shape[1] != c.n_embd:
            raise ModelError(f"token_embd.weight has shape {self.embedding.shape}, expected (n_vocab, {c.n_embd})")
        self.n_vocab = self.embedding.shape[0]
        head = None if "output.weight" not in tensors else stored("output.weight") or get("output.weight")
        if head is None:
            self.output = Linear("token_embd.weight", self.embedding)  # tied
        elif isinstance(head, QuantizedTensor):
            self.output = linear("output.weight", self.n_vocab, c.n_embd)
        else:
            self.output = Linear("output.weight", rows("output.weight"))
            if self.output.shape != (self.n_vocab, c.n_embd):
                raise ModelError(f"tensor 'output.weight' has shape {self.output.shape}, "
                                 f"expected {(self.n_vocab, c.n_embd)}")
        self.output_norm = vec("output_norm.weight", c.n_embd)
        ff = get("rope_freqs.weight", optional=True)
        self.rope_freqs = None if ff is None else np.asarray(ff, np.float64).reshape(-1)
        q_out, kv_out, v_out = c.n_head * c.head_dim, c.n_head_kv * c.head_dim, c.n_head_kv * c.value_dim
        self.layers = []
        for il in range(c.n_layer):
            p = f"blk.{il}."
            mla = moe = None
            norms = {"attn": vec(p + "attn_norm.weight", c.n_embd), "ffn": vec(p + "ffn_norm.weight", c.n_embd)}
            if c.mla is None:
                lin = {"q": linear(p + "attn_q.weight", q_out, c.n_embd),
                       "k": linear(p + "attn_k.weight", kv_out, c.n_embd),
                       "v": linear(p + "attn_v.weight", v_out, c.n_embd)}
            else:
                m, H = c.mla, c.n_head
                if m.q_lora_rank:
                    lin = {"q_a": linear(p + "attn_q_a.weight", m.q_lora_rank, c.n_embd),
                           "q_b": linear(p + "attn_q_b.weight", H * c.head_dim, m.q_lora_rank)}
                    norms["q_a"] = vec(p + "attn_q_a_norm.weight", m.q_lora_rank)
                else:
                    lin = {"q": linear(p + "attn_q.weight", H * c.head_dim, c.n_embd)}
                lin["kv_a"] = linear(p + "attn_kv_a_mqa.weight", m.kv_lora_rank + m.rope, c.n_embd)
                norms["kv_a"] = vec(p + "attn_kv_a_norm.weight", m.kv_lora_rank)
                k_b = v_b = None
                if p + "attn_kv_b.weight" in tensors:
                    lin["kv_b"] = linear(p + "attn_kv_b.weight", H * (m.nope + m.v), m.kv_lora_rank)
                else:
                    k_b = stacked(p + "attn_k_b.weight", H, m.kv_lora_rank, m.nope)
                    v_b = stacked(p + "attn_v_b.weight", H, m.v, m.kv_lora_rank)
                mla = MLA(m, H, lin, norms, k_b, v_b)
            lin["o"] = linear(p + "attn_output.weight", c.n_embd, c.n_head * c.value_dim)
            if c.moe is not None and il >= c.moe.dense_lead:
                e = c.moe
                router = np.ascontiguousarray(get(p + "ffn_gate_inp.weight"), dtype=np.float32)
                if router.shape != (e.n_expert, c.n_embd):
                    raise ModelError(f"tensor '{p}ffn_gate_inp.weight' has shape {router.shape}, "
                                     f"expected {(e.n_expert, c.n_embd)}")
                experts = {"gate": stacked(p + "ffn_gate_exps.weight", e.n_expert, e.n_ff, c.n_embd),
                           "up": stacked(p + "ffn_up_exps.weight", e.n_expert, e.n_ff, c.n_embd),
                           "down": stacked(p + "ffn_down_exps.weight", e.n_expert, c.n_embd, e.n_ff)}
                shared = None
                if e.n_shared:
                    n_sh = e.n_shared * e.n_ff
                    shared = {"gate": linear(p + "ffn_gate_shexp.weight", n_sh, c.n_embd),
                              "up": linear(p + "ffn_up_shexp.weight", n_sh, c.n_embd),
                              "down": linear(p + "ffn_down_shexp.weight", c.n_embd, n_sh)}
                bias = vec(p + "exp_probs_b.bias", e.n_expert, optional=True)
                moe = MoE(e, p + "ffn_gate_inp.weight", router, bias, experts, shared, act)
            else:
                n_ff = get(p + "ffn_gate.weight").shape[0]
                lin |= {"gate": linear(p + "ffn_gate.weight", n_ff, c.n_embd),
                        "up": linear(p + "ffn_up.weight", n_ff, c.n_embd),
                        "down": linear(p + "ffn_down.weight", c.n_embd, n_ff)}
            if c.facts.qk_norm:
                norms["q"] = vec(p + "attn_q_norm.weight", c.head_dim)
                norms["k"] = vec(p + "attn_k_norm.weight", c.head_dim)
            if c.facts.post_norms:
                norms["post_attn"] = vec(p + "post_attention_norm.weight", c.n_embd)
                norms["post_ffn"] = vec(p + "post_ffw_norm.weight", c.n_embd)
            self.layers.append(_Layer(lin, norms, mla, moe))

    def set_weight(self, name: str, weight: QuantizedTensor | np.ndarray) -> None:
        """Replace a block linear layer's weight (same shape) by its name, e.g. with its
        quantized version: a tensor's name, or matrix_name(tensor, i) for an expert or an
        MLA head of a 3-D tensor."""
        for layer in self.layers:
            for holder in layer.holders():
                for key in (list(holder) if isinstance(holder, dict) else range(len(holder))):
                    lin = holder[key]
                    if lin.name != name:
                        continue
                    if tuple(weight.shape) != lin.shape:
                        raise ValueError(f"{name}: shape {tuple(weight.shape)} differs from {lin.shape}")
                    if not isinstance(weight, QuantizedTensor):
                        weight = np.ascontiguousarray(weight, dtype=np.float32)
                    holder[key] = Linear(name, weight)
                    return
        raise KeyError(f"no block linear layer {name!r}")

    def linears(self) -> list[Linear]:
        """Every linear layer in the order forward() calls them (the output head last)."""
        return [lin for layer in self.layers for lin in layer.linears()] + [self.output]

    def _tokens(self, tokens: Sequence[int] | np.ndarray) -> np.ndarray:
        ids = np.asarray(tokens)
        if ids.ndim != 1 or ids.size == 0 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"tokens must be a non-empty 1-D sequence of integers, got shape {ids.shape} {ids.dtype}")
        if ids.min() < 0 or ids.max() >= self.n_vocab:
            raise ValueError(f"token ids must be in [0, {self.n_vocab}), got {ids.min()}..{ids.max()}")
        return ids.astype(np.int64)

    def hidden(self, tokens: Sequence[int] | np.ndarray, hook: Hook | None = None) -> np.ndarray:
        """The final normed hidden states (T, n_embd) of tokens at positions 0..T-1."""
        # NaN (the pre-PR-#194 iq1_s_r4 x q8_1 kernel) runs through to the NLL
        with np.errstate(invalid="ignore"), one_blas_thread():
            return self._hidden(tokens, hook)

    def _hidden(self, tokens: Sequence[int] | np.ndarray, hook: Hook | None) -> np.ndarray:
        x, where = self.embed(tokens)
        for il in range(len(self.layers)):
            x = self.block(il, x, where, hook)
        return self._norm(x, self.output_norm)

    def embed(self, tokens: Sequence[int] | np.ndarray) -> tuple[np.ndarray, Positions]:
        """The first block's input (T, n_embd) for tokens at positions 0..T-1, and the
        positions and masks every block of that pass uses."""
        c = self.config
        ids = self._tokens(tokens)
        T = ids.size
        x = self.embedding.take(ids)
        if c.facts.embed_scale:
            x = x * np.float32(math.sqrt(c.n_embd))
        pos = np.arange(T)
        causal = np.triu(np.ones((T, T), bool), 1)  # True where a key is in the query's future
        dist = pos[:, None] - pos[None, :]
        swa_mask = causal | (dist >= c.sliding_window) if c.sliding_window else causal
        # added to the scores: -inf where masked (an add is ~10x faster than a boolean scatter)
        causal, swa_mask = (np.where(m, np.float32(-np.inf), np.float32(0)) for m in (causal, swa_mask))
        return x, Positions(pos, causal, swa_mask)

    def block(self, il: int, x: np.ndarray, where: Positions, hook: Hook | None = None) -> np.ndarray:
        """Block il on its input x (T, n_embd) -> the next block's input. The steps are also
        methods of their own, for callers that need what passes between them (calibration)."""
        a = self.attention(il, self.attention_norm(il, x), where, hook)
        x = self.attention_residual(il, x, a, hook)
        moe = self.layers[il].moe
        if moe is not None:
            return x + moe(self.ffn_norm(il, x), self.activation, self.threads, hook)
        f = self.ffn_hidden(il, self.ffn_norm(il, x), hook)
        return self.ffn_residual(il, x, f, hook)

    def attention_norm(self, il: int, x: np.ndarray) -> np.ndarray:
        """The input of attn_q, attn_k and attn_v."""
        return self._norm(x, self.layers[il].norms["attn"])

    def attention(self, il: int, h: np.ndarray, where: Positions, hook: Hook | None = None) -> np.ndarray:
        """Self-attention of block il on normed h -> the input of attn_output (T, n_head * value_dim)."""
        c, act, th = self.config, self.activation, self.threads
        T = h.shape[0]
        layer = self.layers[il]
        L, N = layer.lin, layer.norms
        if layer.mla is not None:
            def rot(t: np.ndarray) -> np.ndarray:
                return rope(t, where.pos, c.n_rot, c.rope_base, c.rope_scale, c.facts.rope_neox, self.rope_freqs,
                            c.yarn, c.rope_mscale, where.rope_tables, th)

            return layer.mla(h, where.causal, rot, self._norm, c.attn_scale, act, th, hook)
        sliding = c.swa_layers[il]
        base = c.facts.rope_base_swa if sliding else c.rope_base
        scale = 1.0 if sliding else c.rope_scale
        yarn, mscale = (None, 1.0) if sliding else (c.yarn, c.rope_mscale)
        q = L["q"](h, act, th, hook).reshape(T, c.n_head, c.head_dim)
        k = L["k"](h, act, th, hook).reshape(T, c.n_head_kv, c.head_dim)
        v = L["v"](h, act, th, hook).reshape(T, c.n_head_kv, c.value_dim)
        if c.facts.qk_norm:
            q, k = self._norm(q, N["q"]), self._norm(k, N["k"])
        q, k = (rope(t, where.pos, c.n_rot, base, scale, c.facts.rope_neox, self.rope_freqs, yarn, mscale,
                     where.rope_tables, th) for t in (q, k))
        # grouped-query attention (query head h reads key/value head h // group, as ggml
        # broadcasts), natively on the pool
        o = ops.attention(q, k, v, where.swa_mask if sliding else where.causal, c.attn_scale, th)
        return o.reshape(T, c.n_head * c.value_dim)

    def attention_residual(self, il: int, x: np.ndarray, a: np.ndarray, hook: Hook | None = None) -> np.ndarray:
        """x plus the attention output projected by attn_output (and normed, Gemma 3)."""
        c, layer = self.config, self.layers[il]
        o = layer.lin["o"](a, self.activation, self.threads, hook)
        if c.facts.post_norms:
            o = self._norm(o, layer.norms["post_attn"])
        return x + o

    def ffn_norm(self, il: int, x: np.ndarray) -> np.ndarray:
        """The input of ffn_gate and ffn_up."""
        return self._norm(x, self.layers[il].norms["ffn"])

    def ffn_hidden(self, il: int, h: np.ndarray, hook: Hook | None = None) -> np.ndarray:
        """act(gate(h)) * up(h): the input of ffn_down (dense blocks only)."""
        if self.layers[il].moe is not None:
            raise ModelError(f"block {il} is a mixture of experts: its MLP has no single ffn_down input")
        L, act, th = self.layers[il].lin, self.activation, self.threads
        return self._activate(L["gate"](h, act, th, hook), L["up"](h, act, th, hook))

    def _norm(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        return rms_norm(x, w, self.config.eps, self.threads)

    def _activate(self, gate: np.ndarray, up: np.ndarray) -> np.ndarray:
        """act(gate) * up, the gated MLP's hidden state (in gate's buffer)."""
        return ops.gated(self.config.facts.activation, gate, up, self.threads, out=gate)

    def ffn_residual(self, il: int, x: np.ndarray, f: np.ndarray, hook: Hook | None = None) -> np.ndarray:
        """x plus the MLP's output, projected by ffn_down (and normed, Gemma 3)."""
        c, layer = self.config, self.layers[il]
        f = layer.lin["down"](f, self.activation, self.threads, hook)
        if c.facts.post_norms:
            f = self._norm(f, layer.norms["post_ffn"])
        return x + f

    def logit_map(self, hidden: np.ndarray, fn: Callable[[int, int, np.ndarray], R],
                  hook: Hook | None = None) -> list[R]:
        """The output head on final hidden states (rows, n_embd), a slice of the vocabulary at
        a time on the run's threads: [fn(v0, v1, logits of tokens v0..v1-1), ...] in
        vocabulary order, the logits (rows, v1 - v0) float32. fn runs beside other slices'
        calls: it may only write its own part of shared arrays."""
        x = np.ascontiguousarray(hidden, dtype=np.float32)
        cap = np.float32(self.config.final_softcap)

        def one(r: tuple[int, int]) -> R:
            y = piece(*r)
            return fn(r[0], r[1], np.tanh(y / cap) * cap if cap else y)

        with one_blas_thread():
            if hook is not None:
                hook(self.output.name, x)
            piece = self.output.product(x, self.activation, self.threads, exact=self.float_head)
            return pmap(one, self.output.ranges(), self.threads)

    def head_nll(self, hidden: np.ndarray, targets: np.ndarray, hook: Hook | None = None) -> np.ndarray | None:
        """-log softmax(logits)[target] per row of hidden (rows, n_embd), float64, where the
        head's stored type has a log-sum-exp kernel (iq1q.models.rows.RowMatrix.nll): the
        logits are never kept. None where it has not (an IQ1 or float head, a softcap, NaN)."""
        rows = self.output._rows
        if rows is None or self.float_head or self.config.final_softcap:
            return None
        x = np.ascontiguousarray(hidden, dtype=np.float32)
        out = rows.nll(x, targets, self.threads)
        if out is not None and hook is not None:
            hook(self.output.name, x)
        return out

    def logits(self, hidden: np.ndarray, hook: Hook | None = None) -> np.ndarray:
        """The output head on final hidden states (rows, n_embd) -> (rows, n_vocab)."""
        y = np.empty((len(hidden), self.n_vocab), np.float32)

        def put(v0: int, v1: int, part: np.ndarray) -> None:
            y[:, v0:v1] = part

        self.logit_map(hidden, put, hook)
        return y

    def forward(self, tokens: Sequence[int] | np.ndarray, hook: Hook | None = None) -> np.ndarray:
        """Logits (T, n_vocab) float32 for every position of tokens (a causal pass from position 0)."""
        return self.logits(self.hidden(tokens, hook), hook)


def from_gguf(f, activation: str = "auto", threads: int | None = None) -> Model:
    """A Model from an opened iq1q.gguf_io.GGUFFile."""
    return Model(Config.from_metadata(f.metadata), f.tensors, f.metadata, activation, threads, raw=f.raw)


def load(path: str | os.PathLike, activation: str = "auto", threads: int | None = None) -> Model:
    """Read a GGUF model (an architecture of ARCHITECTURES) for forward passes."""
    from . import gguf_io

    return from_gguf(gguf_io.read(path), activation, threads)
