"""Perplexity of a GGUF model, float and per (weight, activation) pair: `iq1q perplexity`.

Which tokens are scored: iq1q.models.chunks.

Perplexity is exp(mean NLL) over all scored tokens, NLL in float64 from float32 logits.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import hazards
from ..formats import ACTIVATION_FORMATS, WEIGHT_FORMATS, activation_format
from ..gemm import check_pair_block
from ..report import table
from . import gguf_io, ops
from .chunks import Chunk, builtin_text, chunks
from .model import Model, from_gguf
from .moe import split_matrix_name
from .quantize import quantize_model
from .tokenizer import Tokenizer

def layer_name(name: str) -> str:
    """A linear layer's name in the table: the tensor's without '.weight', an expert's (or an
    MLA head's) with its index, e.g. 'blk.3.ffn_down_exps[17]' for matrix 17 of a 3-D tensor."""
    base, i = split_matrix_name(name)
    return base.removesuffix(".weight") + ("" if i is None else f"[{i}]")


class Stats:
    """A forward hook: fp16-overflowing activation blocks of the IQ1 layers (what the pair's
    activation format would store), per layer, and the largest |activation| of any linear
    input; an expert counts as a layer of its own (iq1q.models.moe names them)."""

    def __init__(self, quantized: set[str], activation: str | None):
        self.quantized = quantized
        self.fp16 = activation_format(activation) if activation in hazards.FP16_FORMATS else None
        self.overflow_blocks = 0
        self.overflow_by_layer: dict[str, int] = {}
        self.max_abs, self.max_layer = 0.0, ""
        self._last, self._last_max, self._last_overflow = None, 0.0, None  # the last array seen

    def __call__(self, name: str, x: np.ndarray) -> None:
        if not x.size:  # an expert no token was routed to
            return
        if x is not self._last:  # q, k and v (gate and up) see the same array: scan it once
            self._last, self._last_max, self._last_overflow = x, ops.max_abs(x), None
        m = self._last_max
        # a NaN is kept once seen, so that a NaN run names the layer where it began
        if not math.isnan(self.max_abs) and (math.isnan(m) or m > self.max_abs):
            self.max_abs, self.max_layer = m, layer_name(name)
        if self.fp16 and name in self.quantized and not math.isnan(m) and not math.isinf(m):
            if self._last_overflow is None:
                self._last_overflow = hazards.scan(np.ascontiguousarray(x, np.float32), self.fp16).overflow_blocks
            n = self._last_overflow
            if n:
                self.overflow_blocks += n
                key = layer_name(name)
                self.overflow_by_layer[key] = self.overflow_by_layer.get(key, 0) + n

    @property
    def overflow_layer(self) -> str:
        """The layer (or expert) with the most overflowing blocks; '' when none overflowed."""
        return max(self.overflow_by_layer, key=self.overflow_by_layer.get, default="")


def _nll(model: Model, hidden: np.ndarray, targets: np.ndarray, hook) -> np.ndarray:
    """-log softmax(logits)[target] per row: in the head's own kernel where its backend has
    one (Model.head_nll), else with the head a slice of the vocabulary at a time (on the
    run's threads): each slice's largest logit and sum of exp(logit - largest) per row,
    combined at the end, so that no row's whole logits are ever held."""
    fused = model.head_nll(hidden, targets, hook)  # the head's own kernel, where it has one
    if fused is not None:
        return fused
    n = len(targets)
    picked = np.empty(n, np.float64)

    def reduce(v0: int, v1: int, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        here = (targets >= v0) & (targets < v1)
        picked[here] = z[here, targets[here] - v0]  # slices own disjoint rows of picked
        top = z.max(axis=1)
        shift = np.where(np.isneginf(top), np.float32(0), top)  # a row of -inf: exp gives 0s, not NaNs
        # in place, in float32 (terms <= 1; the slices' sums are combined in float64); the
        # sum as a product with ones: a fifth of the time of sum(axis=1) on these shapes
        np.subtract(z, shift[:, None], out=z)
        np.exp(z, out=z)
        return top, z @ np.ones(z.shape[1], np.float32)

    parts = model.logit_map(hidden, reduce, hook)  # reduce may overwrite the logits it is given
    tops = np.stack([p[0] for p in parts]).astype(np.float64)  # (slices, rows)
    top = tops.max(axis=0)
    with np.errstate(invalid="ignore", over="ignore"):  # a slice of -inf logits adds exp(-inf) = 0
        total = sum(p[1] * np.exp(t - top) for p, t in zip(parts, tops))
    return np.log(total) + top - picked


@dataclass
class Run:
    weights: str              # "float" or a weight format
    activations: str | None   # None for float
    imatrix: bool             # quantized here with an imatrix (False for the float and file runs)
    from_file: bool = False   # the weights were IQ1 in the model file, used as they are
    ppl: float = math.nan
    overflow_blocks: int = 0
    overflow_layer: str = ""  # where most of them were (an expert: 'blk.3.ffn_down_exps[17]')
    max_activation: float = 0.0
    max_activation_layer: str = ""
    tokens_per_second: float = 0.0
    seconds: float = 0.0
    tokens: list[int] = field(default_factory=list)
    nll: list[float] = field(default_factory=list)

    def json(self) -> dict:
        return {"weights": self.weights, "activations": self.activations, "imatrix": self.imatrix,
                "from_file": self.from_file,
                "ppl": self.ppl, "overflow_blocks": self.overflow_blocks, "overflow_layer": self.overflow_layer,
                "max_activation": self.max_activation, "max_activation_layer": self.max_activation_layer,
                "tokens_per_second": self.tokens_per_second, "seconds": self.seconds,
                "tokens": self.tokens, "nll": self.nll}


def evaluate(model: Model, run: Run, parts: Sequence[Chunk], progress: bool | None = None) -> Run:
    """Fill run (ppl, NLLs, statistics) by evaluating every chunk with model."""
    from tqdm import tqdm

    if run.activations:  # before any work: a row length the pair cannot take
        act = activation_format(run.activations)
        for lin in model.linears():
            if lin.quantized:
                check_pair_block(lin.weight._format, act, lin.shape[1], what=lin.name)
    stats = Stats({l.name for l in model.linears() if l.quantized}, run.activations)
    nll, toks, n_eval = [], [], 0
    t0 = time.perf_counter()
    label = f"{run.weights} x {run.activations}" if run.activations else run.weights
    bar = tqdm(parts, desc=f"{label}{' +imatrix' if run.imatrix else ''}", unit="chunk", leave=False,
               disable=not (sys.stderr.isatty() if progress is None else progress), file=sys.stderr)
    for c in bar:
        h = model.hidden(c.tokens, stats)
        nll.append(_nll(model, h[c.first:-1], c.tokens[c.first + 1:], stats))
        toks.extend(c.tokens.tolist())
        n_eval += len(c.tokens)
    run.seconds = time.perf_counter() - t0
    all_nll = np.concatenate(nll)
    run.ppl = float(np.exp(all_nll.mean()))
    run.nll, run.tokens = all_nll.tolist(), toks
    run.overflow_blocks, run.overflow_layer = stats.overflow_blocks, stats.overflow_layer
    run.max_activation, run.max_activation_layer = stats.max_abs, stats.max_layer
    run.tokens_per_second = n_eval / run.seconds if run.seconds else 0.0
    return run


def file_formats(f) -> list[str]:
    """The IQ1 formats of a GGUF file's tensors, most frequent first."""
    counts: dict[str, int] = {}
    for r in f.raw.values():
        if r.ggml_type in gguf_io.IQ1_TYPES:
            name = gguf_io.IQ1_TYPES[r.ggml_type].name
            counts[name] = counts.get(name, 0) + 1
    return sorted(counts, key=lambda k: -counts[k])


def perplexity(model_path: str | os.PathLike, text: str | None = None, ctx: int = 512,
               weights: Sequence[str] = (), activations: Sequence[str] = ("q8_k128",),
               imatrix: str | os.PathLike | None = None, both_imatrix: bool = False,
               llama_compatible: bool = False, max_chunks: int | None = None, threads: int | None = None,
               progress: bool | None = None) -> dict:
    """The perplexity table as a dict (the --json shape); see the module docstring."""
    for w in weights:
        if w not in WEIGHT_FORMATS:
            raise ValueError(f"--weights must be among {', '.join(WEIGHT_FORMATS)}, got {w!r}")
    for a in activations:
        if a not in ACTIVATION_FORMATS:
            raise ValueError(f"--activations must be among {', '.join(ACTIVATION_FORMATS)}, got {a!r}")
    if both_imatrix and imatrix is None:
        raise ValueError("--both-imatrix needs --imatrix")
    src = gguf_io.read(model_path)
    tok = Tokenizer(src.metadata)
    text = builtin_text() if text is None else text
    parts = chunks(tok.encode(text, add_bos=False), ctx, tok.bos_id, llama_compatible, max_chunks)
    runs: list[Run] = []
    in_file = file_formats(src)
    if in_file:  # an already-quantized model runs as it is, with each activation format
        if weights or imatrix is not None:
            raise ValueError(f"{model_path} is already quantized ({', '.join(in_file)}); --weights and "
                             "--imatrix apply to models with float or non-IQ1 weights")
        model = from_gguf(src, threads=threads)
        for a in activations:
            model.activation = a
            runs.append(evaluate(model, Run(in_file[0], a, False, from_file=True), parts, progress))
    else:
        model = from_gguf(src, threads=threads)
        model.float_head = True  # the float model: no 8-bit activations anywhere
        runs.append(evaluate(model, Run("float", None, False), parts, progress))
        variants = ([None, imatrix] if both_imatrix else [imatrix])
        with tempfile.TemporaryDirectory(prefix="iq1q-ppl-") as tmp:
            for w in weights:
                for im in variants:
                    out = Path(tmp) / f"{w}.gguf"
                    quantize_model(model_path, out, w, imatrix=im, threads=threads, progress=False,
                                   errors=False, warn=lambda m: None)
                    model = from_gguf(gguf_io.read(out), threads=threads)
                    for a in activations:
                        model.activation = a
                        runs.append(evaluate(model, Run(w, a, im is not None), parts, progress))
                    del model
                    out.unlink()
    scored = sum(len(c.tokens) - 1 - c.first for c in parts)
    return {"model": str(model_path), "ctx": ctx, "chunks": len(parts), "scored_tokens": scored,
            "llama_compatible": llama_compatible, "runs": [r.json() for r in runs]}


def format_table(result: dict) -> str:
    base = next((r["ppl"] for r in result["runs"] if r["weights"] == "float"), None)
    rows = []
    for r in result["runs"]:
        # the ratio, not a percentage: an IQ1 model without an imatrix can be 10^8 times worse
        ratio = f"{r['ppl'] / base:.4g}" if base and r["weights"] != "float" else ""
        rows.append([r["weights"], r["activations"] or "-",
                     "(file)" if r.get("from_file") else "yes" if r["imatrix"] else "no",
                     f"{r['ppl']:.6g}", ratio,
                     f"{r['overflow_blocks']} ({r['overflow_layer']})" if r.get("overflow_layer") else r["overflow_blocks"],
                     f"{r['max_activation']:.4g} ({r['max_activation_layer']})", f"{r['tokens_per_second']:.0f}"])
    head = (f"{result['model']}: {result['chunks']} chunks of {result['ctx']} tokens, "
            f"{result['scored_tokens']} scored{' (llama-perplexity scoring)' if result['llama_compatible'] else ''}")
    return head + "\n" + table(["weights", "activations", "imatrix", "PPL", "PPL / float", "fp16 overflow blocks",
                                "max |x| (layer)", "tokens/s"], rows)
