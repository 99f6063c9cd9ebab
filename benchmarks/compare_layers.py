"""Layer by layer, on held-out activations: ik_llama.cpp's quantizer with an imatrix vs the
Hessian-aware one (`iq1q quantize --calibration`), both from the same calibration text.

    python benchmarks/compare_layers.py MODEL.gguf --type iq1_s_r4 [--calibration FILE]
        [--eval FILE] [--chunks 16] [--eval-chunks 4] [--ik IK.gguf] [--new NEW.gguf] [--json OUT]

Per block linear layer: the relative output error |X (W - Q)'| / |X W'| of each quantized
file, W the source weights, X the layer's inputs on the evaluation text (iq1q's built-in text
unless --eval): in the float model (--inputs float, the default), or in the quantized model
itself (--inputs own: each file's layers see what its own earlier layers produce, as they do
when it runs). The calibration text (default: benchmarks/texts.py's,
Julius Caesar) gives the imatrix of ik's method (`iq1q imatrix`, what llama-imatrix computes)
and the Hessians of the new one. --ik / --new: files made already (skips quantizing; an
existing path is used as it is, a missing one is written).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from texts import calibration_text  # noqa: E402

from iq1q import gguf_io  # noqa: E402
from iq1q.models import imatrix  # noqa: E402
from iq1q.models.calibrate import LAYER_TYPES  # noqa: E402
from iq1q.models.chunks import builtin_text, calibration_chunks  # noqa: E402
from iq1q.models.model import from_gguf  # noqa: E402
from iq1q.models.quantize import quantize_model  # noqa: E402
from iq1q.models.tokenizer import Tokenizer  # noqa: E402
from iq1q.report import table  # noqa: E402


def held_out_errors(model_path: Path, files: dict[str, Path], text: str, ctx: int, chunks: int | None,
                    threads: int | None, inputs: str = "float") -> dict[str, dict[str, float]]:
    """{layer: {label: |X (W - Q)'| / |X W'|}} over the float model's inputs on text, or (inputs
    "own") each file's own."""
    if inputs == "own":
        out: dict[str, dict[str, float]] = {}
        for label, path in files.items():
            for n, e in _own_errors(model_path, path, text, ctx, chunks, threads).items():
                out.setdefault(n, {})[label] = e
        return out
    src = gguf_io.read(model_path)
    model = from_gguf(src, threads=threads)
    deltas: dict[str, dict[str, np.ndarray]] = {}
    for label, path in files.items():
        f = gguf_io.read(path)
        for lin in model.linears():
            name = lin.name
            if name.startswith("blk.") and hasattr(f.tensors[name], "dequantize"):
                deltas.setdefault(name, {})[label] = (lin.weight - f.tensors[name].dequantize()).T.copy()
    err2 = {n: {k: 0.0 for k in d} for n, d in deltas.items()}
    ref2 = {n: 0.0 for n in deltas}

    def hook(name: str, x: np.ndarray) -> None:
        if name in deltas:
            lin = next(l for l in model.linears() if l.name == name)
            ref2[name] += float(np.sum((x @ lin.weight.T) ** 2, dtype=np.float64))
            for k, d in deltas[name].items():
                err2[name][k] += float(np.sum((x @ d) ** 2, dtype=np.float64))

    tok = Tokenizer(src.metadata)
    for c in calibration_chunks(tok.encode(text, add_bos=False), ctx, tok.bos_id, chunks):
        model.hidden(c.tokens, hook)
    return {n: {k: float(np.sqrt(e / ref2[n])) for k, e in d.items()} for n, d in err2.items()}


def _own_errors(model_path: Path, path: Path, text: str, ctx: int, chunks: int | None,
                threads: int | None) -> dict[str, float]:
    """{layer: |X (W - Q)'| / |X W'|}, X the inputs the quantized file's own model gives the layer."""
    src = gguf_io.read(model_path)
    f = gguf_io.read(path)
    model = from_gguf(f, threads=threads)
    weights = {n: np.asarray(src.tensors[n], np.float32) for n in f.raw
               if n.startswith("blk.") and hasattr(f.tensors[n], "dequantize")}
    deltas = {n: (w - f.tensors[n].dequantize()).T.copy() for n, w in weights.items()}
    err2, ref2 = dict.fromkeys(deltas, 0.0), dict.fromkeys(deltas, 0.0)

    def hook(name: str, x: np.ndarray) -> None:
        if name in deltas:
            ref2[name] += float(np.sum((x @ weights[name].T) ** 2, dtype=np.float64))
            err2[name] += float(np.sum((x @ deltas[name]) ** 2, dtype=np.float64))

    tok = Tokenizer(f.metadata)
    for c in calibration_chunks(tok.encode(text, add_bos=False), ctx, tok.bos_id, chunks):
        model.hidden(c.tokens, hook)
    return {n: float(np.sqrt(err2[n] / ref2[n])) for n in deltas}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("--type", required=True)
    p.add_argument("--calibration", help="calibration text file (default: benchmarks/texts.py's)")
    p.add_argument("--eval", help="held-out text file (default: iq1q's built-in text)")
    p.add_argument("--ctx", type=int, default=512)
    p.add_argument("--chunks", type=int, default=16, help="calibration chunks")
    p.add_argument("--eval-chunks", type=int, default=4)
    p.add_argument("--ik", type=Path, help="ik's-method file: used if it exists, else written there")
    p.add_argument("--new", type=Path, help="Hessian-aware file: used if it exists, else written there")
    p.add_argument("--inputs", choices=["float", "own"], default="float",
                   help="X from the float model, or from each quantized model itself")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", help="write the per-layer errors here")
    a = p.parse_args()
    cal = Path(a.calibration).read_text(encoding="utf-8") if a.calibration else calibration_text()
    ev = Path(a.eval).read_text(encoding="utf-8") if a.eval else builtin_text()
    tmp = tempfile.TemporaryDirectory(prefix="iq1q-compare-")
    ik = a.ik or Path(tmp.name) / "ik.gguf"
    new = a.new or Path(tmp.name) / "new.gguf"
    seconds = {}
    if not ik.exists():
        t0 = time.perf_counter()
        col, n = imatrix.compute(a.model, cal, ctx=a.ctx, max_chunks=a.chunks, threads=a.threads, progress=False)
        imf = Path(tmp.name) / "imatrix.gguf"
        imatrix.write_gguf(imf, col, "calibration", n, a.ctx)
        quantize_model(a.model, ik, a.type, imatrix=imf, threads=a.threads, progress=False, warn=lambda m: None)
        seconds["ik"] = time.perf_counter() - t0
    if not new.exists():
        t0 = time.perf_counter()
        quantize_model(a.model, new, a.type, calibration=cal, ctx=a.ctx, chunks=a.chunks, threads=a.threads,
                       progress=False, warn=lambda m: None)
        seconds["new"] = time.perf_counter() - t0
    errs = held_out_errors(Path(a.model), {"ik": ik, "new": new}, ev, a.ctx, a.eval_chunks, a.threads, a.inputs)
    rows = [[n.removesuffix(".weight"), f"{e['ik']:.4f}", f"{e['new']:.4f}", f"{100 * (1 - e['new'] / e['ik']):.1f}"]
            for n, e in errs.items()]
    print(table(["layer", "ik rel err", "new rel err", "% lower"], rows))
    summary = []
    for t in LAYER_TYPES:
        v = [e for n, e in errs.items() if n.split(".")[2] == t]
        if v:
            red = [1 - e["new"] / e["ik"] for e in v]
            summary.append([t, len(v), f"{np.mean([e['ik'] for e in v]):.4f}", f"{np.mean([e['new'] for e in v]):.4f}",
                            f"{100 * np.mean(red):.1f}", f"{100 * min(red):.1f}"])
    print(f"\n{a.type}: held-out relative output error by layer type (mean over blocks; inputs: {a.inputs} model)")
    print(table(["type", "layers", "ik", "new", "mean % lower", "min % lower"], summary))
    if seconds:
        print("\nquantization wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"type": a.type, "errors": errs, "seconds": seconds}, fh, indent=1)


if __name__ == "__main__":
    main()
