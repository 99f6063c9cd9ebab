"""Mixture-of-experts blocks against dense blocks of the same active parameters.

usage: python benchmarks/bench_moe.py [--tokens 512] [--threads 1 2] [--type iq1_s_r4]

Two in-memory models of 2 blocks, n_embd 1024, 8 heads of 128 (2 KV heads), every block
matrix in --type: `qwen3moe` with 32 experts of 512 rows, 4 used per token, and `qwen3` with a
dense MLP of 2048 rows (the same multiply-adds per token). Prints the blocks' time per token
(Model.hidden, best of 3, embedding and head excluded) and the MoE's share spent routing.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import iq1q  # noqa: E402
from iq1q.models import moe  # noqa: E402
from iq1q.models.model import Config, Model  # noqa: E402
from iq1q.report import table  # noqa: E402

N_EMBD, N_HEAD, N_KV, HEAD, N_LAYER, N_VOCAB = 1024, 8, 2, 128, 2, 64
N_EXPERT, N_USED, N_FF_EXPERT = 32, 4, 512


def model(arch: str, wtype: str, rng: np.random.Generator) -> Model:
    md = {"general.architecture": arch, f"{arch}.block_count": N_LAYER, f"{arch}.embedding_length": N_EMBD,
          f"{arch}.attention.head_count": N_HEAD, f"{arch}.attention.head_count_kv": N_KV,
          f"{arch}.attention.key_length": HEAD, f"{arch}.attention.value_length": HEAD,
          f"{arch}.attention.layer_norm_rms_epsilon": 1e-6, f"{arch}.rope.freq_base": 1e6,
          f"{arch}.feed_forward_length": N_USED * N_FF_EXPERT,
          f"{arch}.expert_count": N_EXPERT, f"{arch}.expert_used_count": N_USED,
          f"{arch}.expert_feed_forward_length": N_FF_EXPERT}

    def q(rows: int, cols: int) -> iq1q.QuantizedTensor:
        return iq1q.quantize(rng.standard_normal((rows, cols), np.float32) / np.sqrt(cols), wtype)

    t: dict = {"token_embd.weight": rng.standard_normal((N_VOCAB, N_EMBD), np.float32),
               "output_norm.weight": np.ones(N_EMBD, np.float32)}
    for b in range(N_LAYER):
        p = f"blk.{b}."
        t |= {p + "attn_norm.weight": np.ones(N_EMBD, np.float32), p + "ffn_norm.weight": np.ones(N_EMBD, np.float32),
              p + "attn_q_norm.weight": np.ones(HEAD, np.float32), p + "attn_k_norm.weight": np.ones(HEAD, np.float32),
              p + "attn_q.weight": q(N_HEAD * HEAD, N_EMBD), p + "attn_k.weight": q(N_KV * HEAD, N_EMBD),
              p + "attn_v.weight": q(N_KV * HEAD, N_EMBD), p + "attn_output.weight": q(N_EMBD, N_HEAD * HEAD)}
        if arch == "qwen3moe":
            t |= {p + "ffn_gate_inp.weight": rng.standard_normal((N_EXPERT, N_EMBD), np.float32),
                  p + "ffn_gate_exps.weight": tuple(q(N_FF_EXPERT, N_EMBD) for _ in range(N_EXPERT)),
                  p + "ffn_up_exps.weight": tuple(q(N_FF_EXPERT, N_EMBD) for _ in range(N_EXPERT)),
                  p + "ffn_down_exps.weight": tuple(q(N_EMBD, N_FF_EXPERT) for _ in range(N_EXPERT))}
        else:
            n_ff = N_USED * N_FF_EXPERT
            t |= {p + "ffn_gate.weight": q(n_ff, N_EMBD), p + "ffn_up.weight": q(n_ff, N_EMBD),
                  p + "ffn_down.weight": q(N_EMBD, n_ff)}
    return Model(Config.from_metadata(md), t, md)


def per_token(m: Model, ids: np.ndarray, threads: int) -> float:
    """Seconds per token of the blocks, best of 3."""
    m.threads = threads
    best = np.inf
    for _ in range(3):
        t0 = time.perf_counter()
        m.hidden(ids)
        best = min(best, time.perf_counter() - t0)
    return best / len(ids)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=512)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--type", default="iq1_s_r4")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    dense, mixture = model("qwen3", args.type, rng), model("qwen3moe", args.type, rng)
    ids = rng.integers(0, N_VOCAB, args.tokens)
    routing = [0.0]
    route = moe.route

    def timed_route(*a, **k):
        t0 = time.perf_counter()
        try:
            return route(*a, **k)
        finally:
            routing[0] += time.perf_counter() - t0

    rows = []
    for t in args.threads:
        d = per_token(dense, ids, t)
        moe.route, routing[0] = timed_route, 0.0
        e = per_token(mixture, ids, t)
        share = routing[0] / 3 / (e * len(ids))
        moe.route = route
        rows.append([t, f"{d * 1e3:.3f}", f"{e * 1e3:.3f}", f"{d / e:.2f}", f"{100 * share:.1f}"])
    print(f"# {N_LAYER} blocks, n_embd {N_EMBD}, {args.type}, {args.tokens} tokens; dense MLP {N_USED * N_FF_EXPERT} "
          f"vs {N_EXPERT} experts of {N_FF_EXPERT}, {N_USED} used")
    print(table(["threads", "dense ms/token", "MoE ms/token", "MoE speed vs dense", "routing % of MoE"], rows))


if __name__ == "__main__":
    main()
