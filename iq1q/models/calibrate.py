"""`iq1q quantize --calibration TEXT`: every block matrix quantized with its input Hessian.

The model (iq1q.models.model) runs over the calibration text in llama-imatrix's chunks.
Block by block, and inside a block in the order the layers are called (q/k/v, then the
attention output, then gate/up, then down: GPTQ's sequential order), each layer's input
Hessian H = sum x x' is collected from the inputs that the already-quantized layers before
it produce, the layer is quantized with it (iq1q.quantize(..., hessian=H), see
iq1q.hessian), and the quantized weights replace the float ones before the next layer's
inputs are collected. Only one block's Hessians exist at a time; the quantized bytes go to
a temporary file beside the output, which `iq1q quantize` then writes in file order.

Mixture-of-experts blocks (`qwen3moe`, `deepseek2`, iq1q.models.moe): the router
(ffn_gate_inp) stays float, as the runner keeps it, so each chunk is routed once, from the
inputs the quantized attention gives. Shared experts (ffn_*_shexp) are a dense MLP over every
token (gate/up, then down). Then expert by expert: its gate and up with the Hessian of the
rows routed to it, its down with the Hessian of its hidden states computed with the quantized
gate/up. One expert's two Hessians (n_embd^2 and n_ff^2 float64) exist at a time, beside the
attention's. An expert no token reached is quantized as without --calibration (by `iq1q
quantize`'s plain pass; no later input of the calibration depends on it).

Multi-head latent attention (`deepseek2`, iq1q.models.mla), in call order: attn_q or attn_q_a,
and attn_kv_a_mqa, with the normed input's Hessian; then attn_q_b and attn_kv_b, each with
its own inputs as the quantized first step gives them (in llama.cpp's split layout: attn_q_b,
then each head of attn_k_b, then each head of attn_v_b, every head with its own Hessian: the
v_b step holds n_head kv_lora_rank^2 float64); then attn_output. Each of these later steps
runs the block's attention once over the chunks with a hook collecting the Hessians.

Calibrated bytes are kept per matrix: a 2-D tensor by name, matrix i of a 3-D one (an expert,
an MLA head) as moe.matrix_name(tensor, i).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..hessian import HessianOptions
from ..report import table
from ..tensors import quantize_with_hessian
from . import gguf_io
from .chunks import calibration_chunks
from .model import from_gguf
from .moe import route, split_matrix_name
from .tokenizer import Tokenizer

# the dense block's linear layers in call order, grouped by shared input (iq1q.models.model._Layer.lin keys)
STAGES: tuple[tuple[str, ...], ...] = (("q", "k", "v"), ("o",), ("gate", "up"), ("down",))
# multi-head latent attention: the layers that read the normed input (one Hessian for them)
MLA_FIRST = ("q", "q_a", "kv_a")


@dataclass
class LayerReport:
    """One quantized matrix (a 2-D tensor, or an expert / MLA head of a 3-D one): the output
    error tr((W - Q) H (W - Q)') on its calibration inputs (damped H) of the plain quantizer's
    bytes (ik's method, imatrix = diag(H)) and of those written."""

    name: str
    format: str
    tokens: int
    plain: float
    final: float
    seconds: float

    @property
    def reduction(self) -> float:
        return 1.0 - self.final / self.plain if self.plain > 0 else 0.0

    @property
    def layer_type(self) -> str:
        """'attn_q', 'ffn_down_exps', ...: the tensor name without block, '.weight' or [index]."""
        tensor, _ = split_matrix_name(self.name)
        return tensor.split(".")[2] if tensor.startswith("blk.") else tensor

    @property
    def block(self) -> int:
        return int(self.name.split(".")[1])


def _reduction(reports: Sequence[LayerReport]) -> float:
    """1 - sum final / sum plain: a 3-D tensor's matrices (or a layer type's) taken together."""
    plain = sum(r.plain for r in reports)
    return 1.0 - sum(r.final for r in reports) / plain if plain > 0 else 0.0


@dataclass
class Calibration:
    """The calibrated matrices' bytes (matrix name -> uint8 array: a 2-D tensor's name, or
    matrix_name(tensor, i) for matrix i of a 3-D one) and reports."""

    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    layers: list[LayerReport] = field(default_factory=list)
    tokens: int = 0
    chunks: int = 0
    seconds: float = 0.0
    # 3-D tensors (experts): tensor -> how many matrices it has (those without tokens are not in layers)
    matrices: dict[str, int] = field(default_factory=dict)

    def table(self) -> str:
        """Per block and layer type: the reduction of the calibration output error, in %
        (the experts of a block together); then, for models with experts, one row per
        expert tensor."""
        types = list(dict.fromkeys(r.layer_type for r in self.layers))  # in call order
        groups: dict[tuple[int, str], list[LayerReport]] = {}
        for r in self.layers:
            groups.setdefault((r.block, r.layer_type), []).append(r)
        blocks = sorted({b for b, _ in groups})
        rows = [[b] + [f"{100 * _reduction(groups[b, t]):.1f}" if (b, t) in groups else "-" for t in types]
                for b in blocks]
        rows.append(["all"] + [f"{100 * _reduction([r for r in self.layers if r.layer_type == t]):.1f}"
                               for t in types])
        out = (f"output error on the calibration text ({self.tokens} tokens, {self.chunks} chunks), % below "
               f"ik's method (imatrix = diag(H)):\n" + table(["block"] + types, rows))
        if self.matrices:
            out += "\n" + self.expert_table()
        return out

    def expert_table(self) -> str:
        """One row per 3-D tensor: its matrices calibrated (the others had no token), tokens
        per calibrated matrix and reduction per matrix (min / median / max, %)."""
        by: dict[str, list[LayerReport]] = {}
        for r in self.layers:
            tensor, i = split_matrix_name(r.name)
            if i is not None:
                by.setdefault(tensor, []).append(r)
        rows = []
        for tensor, n in self.matrices.items():
            rs = by.get(tensor, [])
            tok = [r.tokens for r in rs] or [0]
            red = [100 * r.reduction for r in rs] or [float("nan")]
            rows.append([tensor.removesuffix(".weight"), f"{len(rs)}/{n}",
                         f"{min(tok)} / {int(np.median(tok))} / {max(tok)}",
                         f"{min(red):.1f} / {np.median(red):.1f} / {max(red):.1f}", f"{_reduction(rs) * 100:.1f}"])
        return ("experts and heads (a matrix with no token is quantized as without --calibration):\n"
                + table(["tensor", "calibrated", "tokens min/med/max", "% below ik min/med/max", "% all"], rows))


def _hessian(inputs: Sequence[np.ndarray]) -> np.ndarray | None:
    """H = sum over the chunks of x'x, in float64 (dgemm: a float32 product of a few thousand
    tokens rounds H's entries, and OpenBLAS's sgemm under qemu's emulated SVE returned NaN
    for x'x of some shapes); None when no chunk has a row."""
    h = None
    for x in inputs:
        if len(x) == 0:
            continue
        x = np.asarray(x, np.float64)
        xx = x.T @ x
        h = xx if h is None else h + xx
    return h


class _Gram:
    """A forward hook summing x'x (as _hessian does) per layer name of `names`, over the chunks."""

    def __init__(self, names: Sequence[str]):
        self.h: dict[str, np.ndarray] = {}
        self.rows: dict[str, int] = {}
        self.names = set(names)

    def __call__(self, name: str, x: np.ndarray) -> None:
        if name in self.names and len(x):
            xx = _hessian([x])
            self.h[name] = xx if name not in self.h else self.h[name] + xx
            self.rows[name] = self.rows.get(name, 0) + len(x)


class _Run:
    """One calibration: the running model, the plans, the spill file of the bytes written."""

    def __init__(self, model, plans: Mapping, out: Calibration, spill, options: HessianOptions | None,
                 threads: int | None):
        self.model, self.plans, self.out, self.spill = model, plans, out, spill
        self.options, self.threads = options, threads
        self.offsets: dict[str, tuple[int, int]] = {}

    def wanted(self, name: str) -> bool:
        """Whether the matrix `name` goes to IQ1 and so needs its Hessian."""
        p = self.plans.get(split_matrix_name(name)[0])
        return p is not None and p.quantized and p.target.iq1 is not None

    def quantize(self, layer, name: str, h: np.ndarray | None, tokens: int) -> None:
        """Quantize the matrix `name` of block `layer` with Hessian h (of `tokens` rows) and put
        the result in the running model. Without h (no token reached an expert) it is left to
        `iq1q quantize`'s plain pass: no later input of the calibration depends on it."""
        tensor, i = split_matrix_name(name)
        p = self.plans.get(tensor)
        if p is None or not p.quantized:
            return
        lin = next(lin for lin in layer.linears() if lin.name == name)
        w = lin.weight
        if p.target.iq1 is None:
            # another type asked for (--tensor-type): the later layers see it as it will be
            qt = gguf_io.GGMLQuantizationType(p.target.ggml_type)
            self.model.set_weight(name, gguf_io.gguf.quants.dequantize(gguf_io.gguf.quants.quantize(w, qt), qt))
            return
        if h is None:
            return
        k = w.shape[1]
        im = None if p.imatrix is None else p.imatrix[(i or 0) * k:((i or 0) + 1) * k]
        ts = time.perf_counter()
        q, res = quantize_with_hessian(w, p.target.name, h, imatrix=im, threads=self.threads, options=self.options)
        self.model.set_weight(name, q)
        self.offsets[name] = (self.spill.tell(), q.nbytes)
        self.spill.write(q.data.tobytes())
        self.out.layers.append(LayerReport(name, p.target.name, tokens, float(res.plain.sum()),
                                           float(res.final.sum()), time.perf_counter() - ts))

    def stage(self, layer, names: Sequence[str], inputs: Sequence[np.ndarray]) -> None:
        """Quantize the matrices `names`, which all read `inputs`, with their one Hessian."""
        todo = [n for n in names if self.wanted(n)]
        h = _hessian(inputs) if todo else None
        tokens = sum(len(x) for x in inputs)
        for n in names:
            self.quantize(layer, n, h, tokens)

    def hooked(self, layer, names: Sequence[str], run: Callable[[Callable], None]) -> None:
        """Quantize the matrices `names`, each with the Hessian of its own inputs as run(hook)
        (a pass over the chunks of the model's current weights) shows them."""
        gram = _Gram([n for n in names if self.wanted(n)])
        if gram.names:
            run(gram)
        for n in names:
            self.quantize(layer, n, gram.h.pop(n, None), gram.rows.get(n, 0))

    def mla(self, il: int, hs: Sequence[np.ndarray], where) -> None:
        """Latent attention's projections in call order: those of the normed input (q or q_a,
        and kv_a) with its Hessian, then each later one with the inputs the quantized earlier
        ones give (q_b and kv_b; or q_b, then the per-head k_b, then v_b), the attention run
        once over the chunks per step."""
        layer = self.model.layers[il]
        mla, lin = layer.mla, layer.lin
        self.stage(layer, [lin[k].name for k in MLA_FIRST if k in lin], hs)
        if mla.k_b is None:
            later = [[lin[k].name for k in ("q_b", "kv_b") if k in lin]]
        else:
            later = ([[lin["q_b"].name]] if "q_b" in lin else []) + [[m.name for m in mla.k_b],
                                                                      [m.name for m in mla.v_b]]

        def run(hook: Callable) -> None:
            for h in hs:
                self.model.attention(il, h, where, hook)

        for names in later:
            self.hooked(layer, names, run)

    def moe(self, il: int, hs: Sequence[np.ndarray], bar) -> None:
        """The shared experts as a dense MLP over every token; then expert by expert: gate/up
        with the Hessian of the rows routed to it, down with that of its hidden states from
        the quantized gate/up. The router stays float (as the runner keeps it), so the
        routing is computed once; one expert's Hessians exist at a time."""
        layer = self.model.layers[il]
        m, act, th = layer.moe, self.model.activation, self.model.threads
        if m.shared is not None:
            self.stage(layer, [m.shared["gate"].name, m.shared["up"].name], hs)
            S = m.shared
            fs = [m.act(S["gate"](h, act, th, None), S["up"](h, act, th, None), th) for h in hs]
            self.stage(layer, [S["down"].name], fs)
            del fs
        routed = []
        for h in hs:
            top, _ = route(h, m.router, m.bias, m.config)
            routed.append(top)
        for e in range(m.config.n_expert):
            G, U, D = (m.experts[k][e] for k in ("gate", "up", "down"))
            bar.set_postfix_str(f"blk.{il} expert {e}", refresh=False)
            xs = [h[(top == e).any(axis=1)] for h, top in zip(hs, routed)]  # each token at most once
            self.stage(layer, [G.name, U.name], xs)
            G, U = m.experts["gate"][e], m.experts["up"][e]  # quantized now
            fs = [m.act(G(x, act, th, None), U(x, act, th, None), th) for x in xs]
            self.stage(layer, [D.name], fs)

    def tensors(self) -> dict[str, np.ndarray]:
        """The bytes written, mapped from the spill file (the mapping keeps its pages)."""
        self.spill.flush()
        if not self.offsets:
            return {}
        mm = np.memmap(self.spill, dtype=np.uint8, mode="r")
        return {n: mm[o:o + nb] for n, (o, nb) in self.offsets.items()}


def calibrate(src: gguf_io.GGUFFile, plans: Mapping, text: str, spill_dir: str | os.PathLike,
              ctx: int = 512, max_chunks: int | None = None, options: HessianOptions | None = None,
              threads: int | None = None, progress: bool | None = None,
              warn: Callable[[str], None] = lambda m: None) -> Calibration:
    """Quantize every planned IQ1 block matrix of src (plans: name -> TensorPlan of
    iq1q.models.quantize) with its sequential input Hessian; see the module docstring.
    The bytes are kept in a temporary file in spill_dir (mapped, removed when unreferenced)."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    model = from_gguf(src, threads=threads)
    tok = Tokenizer(src.metadata)
    parts = calibration_chunks(tok.encode(text, add_bos=False), ctx, tok.bos_id, max_chunks)
    out = Calibration(chunks=len(parts), tokens=sum(len(c.tokens) for c in parts))
    planned = {n: p for n, p in plans.items() if p.quantized and p.target.iq1 is not None}
    known = {split_matrix_name(lin.name)[0] for layer in model.layers for lin in layer.linears()}
    outside = [n for n in planned if n not in known]
    if outside:
        warn(f"--calibration covers the blocks' linear layers; {len(outside)} other tensor(s) (e.g. {outside[0]}) "
             "are quantized as without it")
    out.matrices = {n: int(np.prod(p.src.shape[:-2])) for n, p in planned.items()
                    if len(p.src.shape) > 2 and n in known}
    xs, where = [], None
    for c in parts:
        x, where = model.embed(c.tokens)
        xs.append(x)
    spill = tempfile.TemporaryFile(dir=spill_dir, prefix=".iq1q-calibration-")
    run = _Run(model, plans, out, spill, options, threads)
    bar = tqdm(total=len(model.layers) * 4, desc="calibrate", unit="step", leave=False, file=sys.stderr,
               disable=not (sys.stderr.isatty() if progress is None else progress))

    def step(il: int, what: str) -> None:
        bar.update(1)
        bar.set_postfix_str(f"blk.{il} {what}", refresh=False)

    try:
        # each step once per chunk, its result kept for the next: the layers of a step see
        # the outputs of the quantized layers of the steps before
        for il, layer in enumerate(model.layers):
            hs = [model.attention_norm(il, x) for x in xs]
            if layer.mla is None:
                run.stage(layer, [layer.lin[k].name for k in STAGES[0]], hs)
            else:
                run.mla(il, hs, where)
            step(il, "attention")
            att = [model.attention(il, h, where) for h in hs]
            del hs
            run.stage(layer, [layer.lin["o"].name], att)
            step(il, "attn_output")
            xs = [model.attention_residual(il, x, a) for x, a in zip(xs, att)]
            del att
            hs = [model.ffn_norm(il, x) for x in xs]
            if layer.moe is not None:
                run.moe(il, hs, bar)
                step(il, "experts")
                xs = [x + layer.moe(h, model.activation, model.threads, None) for x, h in zip(xs, hs)]
                step(il, "experts' output")
                continue
            run.stage(layer, [layer.lin[k].name for k in STAGES[2]], hs)
            step(il, "gate/up")
            fs = [model.ffn_hidden(il, h) for h in hs]
            del hs
            run.stage(layer, [layer.lin["down"].name], fs)
            step(il, "down")
            xs = [model.ffn_residual(il, x, f) for x, f in zip(xs, fs)]
            del fs
    finally:
        bar.close()
    out.tensors = run.tensors()
    spill.close()  # unlinked already; the mapping keeps the pages while referenced
    out.seconds = time.perf_counter() - t0
    return out


__all__ = ["Calibration", "LayerReport", "STAGES", "calibrate"]
