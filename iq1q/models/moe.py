"""Mixture-of-experts feed-forward blocks (`qwen3moe`, `deepseek2`): routing and experts.

A router (`ffn_gate_inp`, float) scores every expert per token; softmax or sigmoid turns the
scores into probabilities; the `expert_used_count` best (by probability plus `exp_probs_b`,
when the model has that bias, and within the best `expert_group_used_count` groups, when the
metadata groups the experts) are chosen; their probabilities, normalized to sum 1 when the
model says so and multiplied by `expert_weights_scale`, weight the chosen experts' SiLU MLPs.
Shared experts (`ffn_*_shexp`) run on every token, unweighted. This is llama.cpp's
llm_build_moe_ffn for these architectures.

Expert tensors are 3-D (n_expert, rows, K). Each expert's matrices are `Linear` layers of
their own, named `<tensor>[<e>]` (e.g. `blk.3.ffn_down_exps.weight[17]`, see matrix_name), so
that the forward hook, the perplexity table's hazard statistics and the imatrix see each
expert apart. An expert multiplies only the rows of the tokens routed to it (an IQ1 expert
through iq1q.matmul with the model's activation format); the hook is called for every
expert, with zero rows when no token chose it, so that every expert of a layer is named.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ModelError

# gating functions by llama.cpp's enum llm_expert_gating_func_type (the `expert_gating_func` key)
GATING_FUNCS = {1: "softmax", 2: "sigmoid"}
_INDEXED = re.compile(r"^(.*)\[(\d+)\]$")


def matrix_name(tensor: str, i: int) -> str:
    """The name of matrix i of a 3-D tensor (an expert, or an MLA head): 'tensor[i]'."""
    return f"{tensor}[{i}]"


def split_matrix_name(name: str) -> tuple[str, int | None]:
    """(tensor, i) for 'tensor[i]'; (name, None) for a 2-D layer's name."""
    m = _INDEXED.match(name)
    return (m.group(1), int(m.group(2))) if m else (name, None)


@dataclass(frozen=True)
class MoEConfig:
    n_expert: int
    n_used: int
    n_ff: int                 # rows of each expert's gate and up
    n_shared: int             # shared experts (their MLP is n_shared * n_ff wide)
    gating: str               # "softmax" or "sigmoid"
    norm_weights: bool        # divide the chosen weights by their sum
    weights_scale: float      # then multiply them by this
    n_groups: int             # expert groups (1: no group-limited routing)
    n_groups_used: int
    dense_lead: int           # the first dense_lead blocks have a dense MLP instead

    @classmethod
    def from_metadata(cls, key: Callable[..., Any], arch: str, gating: str | None, norm_weights: bool | None,
                      scaled: bool) -> MoEConfig:
        """key(name, default) reads `{arch}.name` (raising when absent without a default);
        gating / norm_weights: llama.cpp's fixed choice for the architecture, None to read
        them from the metadata; scaled: whether llama.cpp applies `expert_weights_scale`."""
        n_expert, n_used = int(key("expert_count")), int(key("expert_used_count"))
        if not 0 < n_used <= n_expert:
            raise ModelError(f"{arch}: expert_used_count {n_used} must be in 1..expert_count ({n_expert})")
        if gating is None:
            # DeepSeek 2 / 2.5 files predate the key: llama.cpp then takes softmax
            func = int(key("expert_gating_func", 1))
            if func not in GATING_FUNCS:
                raise ModelError(f"{arch}.expert_gating_func = {func} is not supported "
                                 f"(supported: {', '.join(f'{k} ({v})' for k, v in GATING_FUNCS.items())})")
            gating = GATING_FUNCS[func]
        if norm_weights is None:
            norm_weights = bool(key("expert_weights_norm", False))
        n_groups = int(key("expert_group_count", 1)) or 1
        n_groups_used = int(key("expert_group_used_count", n_groups)) or n_groups
        if n_expert % n_groups or not 0 < n_groups_used <= n_groups:
            raise ModelError(f"{arch}: {n_expert} experts in {n_groups} groups, {n_groups_used} used: "
                             "not a valid grouping")
        if n_groups > 1 and n_expert // n_groups < 2:
            raise ModelError(f"{arch}: group-limited routing needs at least 2 experts per group")
        return cls(n_expert, n_used, int(key("expert_feed_forward_length")),
                   int(key("expert_shared_count", 0)), gating, norm_weights,
                   float(key("expert_weights_scale")) if scaled else 1.0, n_groups, n_groups_used,
                   int(key("leading_dense_block_count", 0)))


def route(h: np.ndarray, router: np.ndarray, bias: np.ndarray | None, c: MoEConfig) -> tuple[np.ndarray, np.ndarray]:
    """(experts (T, n_used) int, weights (T, n_used) float32) chosen for the normed hidden
    states h (T, n_embd): vectorised over tokens, no loop."""
    logits = h @ router.T  # (T, n_expert)
    if c.gating == "softmax":
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs = z / z.sum(axis=1, keepdims=True)
    else:
        probs = 1.0 / (1.0 + np.exp(-logits))
    select = probs + bias if bias is not None else probs  # the bias chooses; it does not weight
    if c.n_groups > 1:
        # group-limited routing (DeepSeek V3): a group's score is the sum of its two best
        # experts; experts outside the n_groups_used best groups cannot be chosen
        T = len(h)
        g = select.reshape(T, c.n_groups, -1)
        top2 = -np.partition(-g, 1, axis=2)[:, :, :2]
        score = top2.sum(axis=2)
        best = np.argpartition(-score, c.n_groups_used - 1, axis=1)[:, :c.n_groups_used]
        keep = np.zeros((T, c.n_groups), bool)
        np.put_along_axis(keep, best, True, axis=1)
        select = np.where(np.repeat(keep, c.n_expert // c.n_groups, axis=1), select, -np.inf)
    k = c.n_used
    top = np.argpartition(-select, k - 1, axis=1)[:, :k] if k < c.n_expert else np.tile(np.arange(k), (len(h), 1))
    # best first, as ggml's top-k orders them (the sum over experts then adds in that order)
    order = np.argsort(-np.take_along_axis(select, top, axis=1), axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)
    w = np.take_along_axis(probs, top, axis=1)
    if c.norm_weights:
        w = w / w.sum(axis=1, keepdims=True)
    if c.weights_scale != 1.0:
        w = w * np.float32(c.weights_scale)
    return top, w.astype(np.float32)


class MoE:
    """The routed experts (and the shared ones) of one block."""

    def __init__(self, config: MoEConfig, router_name: str, router: np.ndarray, bias: np.ndarray | None,
                 experts: Mapping[str, list], shared: Mapping[str, Any] | None,
                 act: Callable[[np.ndarray, np.ndarray, int | None], np.ndarray]):
        """experts: "gate", "up", "down" -> a Linear per expert; shared: "gate", "up", "down" -> Linear, or None;
        act(gate, up, threads): the gated MLP's hidden state.
        The router's input reaches the hook under router_name, as llama-imatrix records it."""
        self.config, self.router_name, self.router, self.bias = config, router_name, router, bias
        self.experts, self.shared, self.act = experts, shared, act

    def linears(self) -> list:
        out = [lin for e in range(self.config.n_expert) for lin in
               (self.experts["gate"][e], self.experts["up"][e], self.experts["down"][e])]
        if self.shared is not None:
            out += [self.shared["gate"], self.shared["up"], self.shared["down"]]
        return out

    def __call__(self, h: np.ndarray, activation: str, threads: int | None, hook) -> np.ndarray:
        """The MoE output (T, n_embd) for normed hidden states h."""
        if hook is not None:
            hook(self.router_name, h)
        top, w = route(h, self.router, self.bias, self.config)
        # the (token, slot) pairs sorted by expert: expert e's tokens are one contiguous run
        flat = top.reshape(-1)
        pairs = np.argsort(flat, kind="stable")
        bounds = np.searchsorted(flat[pairs], np.arange(self.config.n_expert + 1))
        out = np.zeros_like(h)
        G, U, D = self.experts["gate"], self.experts["up"], self.experts["down"]
        for e in range(self.config.n_expert):
            sel = pairs[bounds[e]:bounds[e + 1]]
            rows = sel // top.shape[1]  # each token at most once per expert
            x = h[rows]
            f = self.act(G[e](x, activation, threads, hook), U[e](x, activation, threads, hook), threads)
            y = D[e](f, activation, threads, hook)
            if len(rows):
                out[rows] += y * w.reshape(-1)[sel, None]
        if self.shared is not None:
            S = self.shared
            f = self.act(S["gate"](h, activation, threads, hook), S["up"](h, activation, threads, hook), threads)
            out += S["down"](f, activation, threads, hook)
        return out
