"""`iq1q quantize --calibration TEXT`: every block matrix quantized with its input Hessian.

The model (iq1q.models.model) runs over the calibration text in llama-imatrix's chunks.
Block by block, and inside a block in the order the layers are called (q/k/v, then the
attention output, then gate/up, then down: GPTQ's sequential order), each layer's input
Hessian H = sum x x' is collected from the inputs that the already-quantized layers before
it produce, the layer is quantized with it (iq1q.quantize(..., hessian=H), see
iq1q.hessian), and the quantized weights replace the float ones before the next layer's
inputs are collected. Only one block's Hessians exist at a time; the quantized bytes go to
a temporary file beside the output, which `iq1q quantize` then writes in file order.

A layer with no token (none in a dense model; an expert no token was routed to) is
quantized as without --calibration. Mixture-of-experts models: the runner does not
support them yet; the collection is keyed by tensor, so experts would each get the
Hessian of their own tokens.
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
from .tokenizer import Tokenizer

# the block's linear layers in call order, grouped by shared input (iq1q.models.model._Layer.lin keys)
STAGES: tuple[tuple[str, ...], ...] = (("q", "k", "v"), ("o",), ("gate", "up"), ("down",))
LAYER_TYPES = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


@dataclass
class LayerReport:
    """One quantized layer: the output error tr((W - Q) H (W - Q)') on the calibration inputs
    (damped H) of the plain quantizer's bytes (ik's method, imatrix = diag(H)) and of those written."""

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
        return self.name.split(".")[2] if self.name.startswith("blk.") else self.name


@dataclass
class Calibration:
    """The calibrated layers' bytes (name -> uint8 array of the whole tensor) and reports."""

    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    layers: list[LayerReport] = field(default_factory=list)
    tokens: int = 0
    chunks: int = 0
    seconds: float = 0.0

    def table(self) -> str:
        """Per block and layer type: the reduction of the calibration output error, in %."""
        by_block: dict[int, dict[str, float]] = {}
        for r in self.layers:
            by_block.setdefault(int(r.name.split(".")[1]), {})[r.layer_type] = r.reduction
        types = [t for t in LAYER_TYPES if any(t in row for row in by_block.values())]
        rows = [[b] + [f"{100 * row[t]:.1f}" if t in row else "-" for t in types] for b, row in sorted(by_block.items())]
        mean = []
        for t in types:
            v = [r.reduction for r in self.layers if r.layer_type == t]
            mean.append(f"{100 * sum(v) / len(v):.1f}" if v else "-")
        rows.append(["mean"] + mean)
        return (f"output error on the calibration text ({self.tokens} tokens, {self.chunks} chunks), % below "
                f"ik's method (imatrix = diag(H)):\n" + table(["block"] + types, rows))


def _hessian(inputs: Sequence[np.ndarray]) -> np.ndarray:
    """H = sum over the chunks of x'x, in float64 (dgemm: a float32 product of a few thousand
    tokens rounds H's entries, and OpenBLAS's sgemm under qemu's emulated SVE returned NaN
    for x'x of some shapes)."""
    h = None
    for x in inputs:
        x = np.asarray(x, np.float64)
        xx = x.T @ x
        h = xx if h is None else h + xx
    return h


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
    if any(len(p.src.shape) > 2 for p in planned.values()) or any(
            layer.moe is not None or layer.mla is not None for layer in model.layers):
        raise ValueError(f"--calibration quantizes the q, k, v, output and dense MLP matrices block by block; "
                         f"{model.config.arch!r} models with experts or latent attention are not supported")
    outside = [n for n in planned if not n.startswith("blk.")]
    if outside:
        warn(f"--calibration covers the blocks' matrices; {len(outside)} other tensor(s) (e.g. {outside[0]}) "
             "are quantized as without it")
    xs, where = [], None
    for c in parts:
        x, where = model.embed(c.tokens)
        xs.append(x)
    spill = tempfile.TemporaryFile(dir=spill_dir, prefix=".iq1q-calibration-")
    offsets: dict[str, tuple[int, int]] = {}
    bar = tqdm(total=len(model.layers) * len(STAGES), desc="calibrate", unit="stage", leave=False, file=sys.stderr,
               disable=not (sys.stderr.isatty() if progress is None else progress))

    def stage(il: int, keys: tuple[str, ...], inputs: list[np.ndarray]) -> None:
        """Quantize the layers `keys` of block il, which all read `inputs`, with their Hessian."""
        lin = model.layers[il].lin
        names = [lin[k].name for k in keys]
        todo = [n for n in names if n in planned]
        bar.set_postfix_str(", ".join(todo) or f"blk.{il}", refresh=False)
        h = _hessian(inputs) if todo else None
        for k, n in zip(keys, names):
            p, w = plans.get(n), lin[k].weight
            if n in todo:
                ts = time.perf_counter()
                q, res = quantize_with_hessian(w, p.target.name, h, imatrix=p.imatrix, threads=threads,
                                               options=options)
                model.set_weight(n, q)
                offsets[n] = (spill.tell(), q.nbytes)
                spill.write(q.data.tobytes())
                out.layers.append(LayerReport(n, p.target.name, out.tokens, float(res.plain.sum()),
                                              float(res.final.sum()), time.perf_counter() - ts))
            elif p is not None and p.quantized and p.target.iq1 is None:
                # another type asked for (--tensor-type): the later layers see it as it will be
                qt = gguf_io.GGMLQuantizationType(p.target.ggml_type)
                model.set_weight(n, gguf_io.gguf.quants.dequantize(gguf_io.gguf.quants.quantize(w, qt), qt))
        bar.update(1)

    try:
        # each step once per chunk, its result kept for the next: the layers of a stage see
        # the outputs of the quantized layers of the stages before
        for il in range(len(model.layers)):
            hs = [model.attention_norm(il, x) for x in xs]
            stage(il, STAGES[0], hs)
            att = [model.attention(il, h, where) for h in hs]
            del hs
            stage(il, STAGES[1], att)
            xs = [model.attention_residual(il, x, a) for x, a in zip(xs, att)]
            del att
            hs = [model.ffn_norm(il, x) for x in xs]
            stage(il, STAGES[2], hs)
            fs = [model.ffn_hidden(il, h) for h in hs]
            del hs
            stage(il, STAGES[3], fs)
            xs = [model.ffn_residual(il, x, f) for x, f in zip(xs, fs)]
            del fs
    finally:
        bar.close()
    spill.flush()
    if offsets:
        mm = np.memmap(spill, dtype=np.uint8, mode="r")
        out.tensors = {n: mm[o:o + nb] for n, (o, nb) in offsets.items()}
    spill.close()  # unlinked already; the mapping keeps the pages while referenced
    out.seconds = time.perf_counter() - t0
    return out


__all__ = ["Calibration", "LayerReport", "STAGES", "calibrate"]
