"""The `iq1q` command: demo, info, quantize, perplexity and imatrix."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from contextlib import contextmanager

import numpy as np

from . import check_activations, cpu, dequantize, matmul, plugins, quantize, registry
from .formats import ACTIVATION_FORMATS, WEIGHT_FORMATS, format_info
from .hessian import HessianOptions
from .report import table


def _rel_rms(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a.astype(np.float64) - ref) ** 2) / np.mean(ref**2)))


def _seconds(call, repeat: int = 3) -> float:
    """The best wall time of `repeat` calls."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - t0)
    return best


def demo_activations(rng: np.random.Generator, m: int, k: int) -> np.ndarray:
    """Gaussian activations whose row 0 has one 32-block beyond the fp16 range:
    its sum is ~96000 > 65504, so q8_1's fp16 s = d * sum(q) becomes inf."""
    x = rng.standard_normal((m, k)).astype(np.float32)
    x[0, 96:128] = 3000.0
    return x


def demo(args: argparse.Namespace) -> int:
    n, k, m = args.rows, args.cols, args.batch
    rng = np.random.default_rng(args.seed)
    w = rng.standard_normal((n, k)).astype(np.float32)
    x = demo_activations(rng, m, k)
    print(f"iq1q demo: Gaussian weights {n}x{k}, activations {m}x{k} "
          f"(row 0 has one 32-block of 3000s: sum 96000 > fp16 max 65504)\n")

    quantized, rows = {}, []
    for fmt in WEIGHT_FORMATS:
        t0 = time.perf_counter()
        quantized[fmt] = qw = quantize(w, fmt)
        dt = time.perf_counter() - t0
        # a backend may do one-time work on a tensor's first matmul (the built-in ones keep
        # nothing): the first call's excess over a warm one, shown here, not in the times below
        first = _seconds(lambda: matmul(x, qw, overflow="ignore"), repeat=1)
        prep = first - _seconds(lambda: matmul(x, qw, overflow="ignore"))
        bpw = 8 * qw.nbytes / (n * k)
        rows.append([fmt, f"{bpw:.4f}", f"{_rel_rms(dequantize(qw), w):.4f}", f"{dt * 1e3:.0f}",
                     f"{dt * 1e9 / (n * k):.1f}", f"{max(prep, 0.0) * 1e3:.1f}"])
    print("Weight quantization")
    print(table(["format", "bits/weight", "rel RMS error", "time ms", "ns/weight",
                 "first matmul's prep ms"], rows))

    y32 = x.astype(np.float64) @ w.T.astype(np.float64)
    hazards = check_activations(x)
    rows = []
    for fmt in WEIGHT_FORMATS:
        y_deq = x.astype(np.float64) @ dequantize(quantized[fmt]).T.astype(np.float64)
        for act in ACTIVATION_FORMATS:
            y = matmul(x, quantized[fmt], activation=act, overflow="ignore")
            dt = _seconds(lambda: matmul(x, quantized[fmt], activation=act, overflow="ignore"))
            finite = np.isfinite(y)
            err = [f"{_rel_rms(y, ref):.4f}" if finite.all() else "nan" for ref in (y32, y_deq)]
            rows.append([fmt, act, *err, int((~finite).sum()),
                         "yes" if hazards[act].overflow_blocks else "no", f"{dt * 1e3:.1f}"])
    print(f"\nmatmul, relative RMS error against x @ w.T and against x @ dequantized W "
          f"(backend {registry.get_backend()}; time: a warm call, the best of 3)")
    print(table(["weights", "activations", "vs w", "vs deq. W", "NaN/Inf", "fp16 overflow", "time ms"],
                rows))
    print("\nOnly iq1_s_r4 x q8_1 reads q8_1's fp16 s = d*sum(q) (ik_llama.cpp before PR #194): the\n"
          "overflowing block turns whole output rows into NaN. matmul(..., overflow='raise'), the\n"
          "default, refuses such input and suggests q8_k128, whose float32 scale cannot overflow.")
    return 0


def info(args: argparse.Namespace) -> int:
    found = " ".join(f for f, on in cpu.detected().items() if on) or "(none detected)"
    masked = cpu.masked()
    off = [f for f in cpu.known() if f in masked]  # in detection order, like the features
    print(f"CPU features: {found}" + (f" (masked by {cpu.ENV_DISABLE}: {' '.join(off)})" if off else ""))
    if state := cpu.os_support():  # x86-64 only
        yes = {True: "yes", False: "no"}
        print(f"OS register state (XCR0): AVX {yes[state['avx']]}, AVX-512 {yes[state['avx512']]}")
    print("\nBackends (highest priority first)")
    print(table(["name", "priority", "available", "pairs", "origin", "description"],
                 [[b.name, b.priority, "yes" if b.available else "no", len(b.pairs), b.origin,
                   b.description] for b in registry.backends()]))
    if broken := plugins.broken():
        print("\nBroken plugins (skipped)")
        print(table(["name", "origin", "error"], [[b.name, b.origin, b.error] for b in broken]))
    print(f"\nBackend in use: {registry.get_backend()}\n\nKernel table (weights x activations -> backend)")
    served = registry.kernel_table()
    print(table(["weights"] + list(ACTIVATION_FORMATS),
                 [[w] + [served[(w, a)] for a in ACTIVATION_FORMATS] for w in WEIGHT_FORMATS]))
    print("\nFormats")
    print(table(["name", "ggml type", "block", "bytes/block", "row meta", "rows/group", "bits/weight"],
                 [[f.name, f.ggml_type, f.block_size, f.type_size, f.row_meta_size, f.rows_per_group,
                   f"{f.bits_per_weight:g}"] for f in map(format_info, WEIGHT_FORMATS + ACTIVATION_FORMATS)]))
    return 0


def quantize_gguf(args: argparse.Namespace) -> int:
    with _extras():
        from .models.quantize import quantize_model

    def terminate(signum, frame):  # SIGTERM, SIGHUP: unwind like Ctrl-C, so the temporary file goes
        raise KeyboardInterrupt

    sigs = [s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None]
    previous = {s: signal.signal(s, terminate) for s in sigs}
    try:
        calibration = options = None
        if args.calibration is not None:
            calibration, _ = _read_text(args.calibration)
            given = {k: getattr(args, k) for k in ("damping", "passes", "sweeps") if getattr(args, k) is not None}
            options = HessianOptions(**given)
        elif args.ctx != 512 or any(v is not None for v in (args.chunks, args.damping, args.passes, args.sweeps)):
            raise ValueError("--ctx, --chunks, --damping, --passes and --sweeps need --calibration")
        summary = quantize_model(args.input, args.output, args.type, imatrix=args.imatrix,
                                 tensor_types=args.tensor_type, threads=args.threads,
                                 progress=args.progress, calibration=calibration, ctx=args.ctx,
                                 chunks=args.chunks, hessian_options=options)
    except KeyboardInterrupt:
        print(f"iq1q: interrupted; {args.output} was not written", file=sys.stderr)
        return 130
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    print(f"wrote {args.output}\n")
    print(summary.table())
    return 0


def _read_text(path: str | None) -> tuple[str | None, str]:
    if path is None:
        return None, "built-in (Coriolanus, opening)"
    with open(path, encoding="utf-8") as fh:
        return fh.read(), path


EXTRAS = {"gguf": "gguf", "tqdm": "gguf", "sentencepiece": "tokenizer"}  # package -> iq1q extra


@contextmanager
def _extras():
    """A missing optional package as a one-line error naming the extra that installs it,
    rather than a traceback. The model commands import layer 2 (iq1q.models) only when run."""
    try:
        yield
    except ModuleNotFoundError as e:
        top = (e.name or "").partition(".")[0]
        if top not in EXTRAS:
            raise
        raise ValueError(f"{e} (needs: pip install 'iq1q[{EXTRAS[top]}]')") from None


def perplexity_cmd(args: argparse.Namespace) -> int:
    import json

    text, _ = _read_text(args.text)
    with _extras():
        from .models.perplexity import format_table, perplexity

        result = perplexity(args.model, text, ctx=args.ctx, weights=args.weights,
                            activations=args.activations, imatrix=args.imatrix,
                            both_imatrix=args.both_imatrix, llama_compatible=args.llama_compatible,
                            max_chunks=args.chunks, threads=args.threads, progress=args.progress)
    print(format_table(result))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh)
        print(f"\nwrote {args.json}")
    return 0


def imatrix_cmd(args: argparse.Namespace) -> int:
    from .models import imatrix
    from .models.chunks import builtin_text

    text, name = _read_text(args.text)
    t0 = time.perf_counter()
    with _extras():
        col, n = imatrix.compute(args.model, builtin_text() if text is None else text, ctx=args.ctx,
                                 max_chunks=args.chunks, threads=args.threads, progress=args.progress)
    if str(args.output).endswith(".dat"):
        imatrix.write_legacy(args.output, col, name, n)
    else:
        imatrix.write_gguf(args.output, col, name, n, args.ctx)
    print(f"wrote {args.output}: {len(col.sums)} entries from {n} chunks of {args.ctx} tokens "
          f"({time.perf_counter() - t0:.1f} s)")
    return 0


def _threads_and_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=None, help="worker threads (default: all CPUs)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar on stderr (default: when stderr is a terminal)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="iq1q", description="IQ1 weight matrices on the CPU")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="quantize a Gaussian matrix to every format and multiply it "
                                    "against activations that overflow fp16")
    p.add_argument("--rows", type=int, default=4096)
    p.add_argument("--cols", type=int, default=4096)
    p.add_argument("--batch", type=int, default=4, help="activation rows")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=demo)
    p = sub.add_parser("info", help="CPU features, backends and the kernel table")
    p.set_defaults(func=info)
    p = sub.add_parser("quantize", help="quantize a GGUF model's block weights to an IQ1 type",
                       description="Quantize every weight matrix of the transformer blocks (as "
                       "ik_llama.cpp's llama-quantize --pure) and copy everything else.")
    p.add_argument("input", metavar="IN.gguf")
    p.add_argument("output", metavar="OUT.gguf")
    p.add_argument("--type", required=True, choices=WEIGHT_FORMATS)
    p.add_argument("--imatrix", metavar="FILE", help="importance matrix: llama-imatrix's .dat or a GGUF imatrix")
    p.add_argument("--tensor-type", metavar="REGEX=TYPE", action="append", default=[],
                   help="type for tensors whose name matches REGEX (first match wins): an IQ1 type, "
                        "keep, or a type the gguf package writes (q8_0, f16, ...); repeatable")
    g = p.add_argument_group("calibration", "quantize each block matrix with the Hessian of its inputs on a text "
                             "(GPTQ's sequential order; docs/quantizer.md)")
    g.add_argument("--calibration", metavar="TEXT", help="UTF-8 calibration text (better not the evaluation text)")
    g.add_argument("--ctx", type=int, default=512, help="tokens per calibration chunk (default 512)")
    g.add_argument("--chunks", type=int, default=None, help="use at most this many chunks of the text")
    g.add_argument("--damping", type=float, default=None,
                   help=f"added to the Hessian's diagonal, times its mean (default {HessianOptions.damping})")
    g.add_argument("--passes", type=int, default=None, help=f"GPTQ passes (default {HessianOptions.passes})")
    g.add_argument("--sweeps", type=int, default=None,
                   help=f"coordinate-descent sweeps after each pass (default {HessianOptions.sweeps})")
    _threads_and_progress(p)
    p.set_defaults(func=quantize_gguf)
    p = sub.add_parser("perplexity", help="perplexity of a GGUF model, float and per (weight, activation) pair",
                       description="Perplexity of a llama or gemma3 GGUF model on a text: the float model "
                       "(weights dequantized) and, for each --weights format, the model quantized as "
                       "'iq1q quantize' does, with each --activations format. An already-quantized IQ1 "
                       "file runs as it is. See iq1q.models.chunks for which tokens are scored.")
    p.add_argument("model", metavar="MODEL.gguf")
    p.add_argument("--text", metavar="FILE", help="UTF-8 text (default: the built-in public-domain text)")
    p.add_argument("--ctx", type=int, default=512, help="tokens per chunk, BOS included (default 512)")
    p.add_argument("--weights", nargs="*", default=[], choices=WEIGHT_FORMATS, metavar="FMT",
                   help=f"weight formats to quantize to ({', '.join(WEIGHT_FORMATS)})")
    p.add_argument("--activations", nargs="+", default=["q8_k128"], choices=ACTIVATION_FORMATS, metavar="FMT",
                   help=f"activation formats ({', '.join(ACTIVATION_FORMATS)}; default q8_k128)")
    p.add_argument("--imatrix", metavar="FILE", help="importance matrix for quantizing (.dat or GGUF)")
    p.add_argument("--both-imatrix", action="store_true", help="with --imatrix: run each format also without it")
    p.add_argument("--llama-compatible", action="store_true",
                   help="score as llama-perplexity: BOS replaces each chunk's first token, second half scored")
    p.add_argument("--chunks", type=int, default=None, help="evaluate at most this many chunks")
    p.add_argument("--json", metavar="FILE", help="write the table, token ids and per-token NLL as JSON")
    _threads_and_progress(p)
    p.set_defaults(func=perplexity_cmd)
    p = sub.add_parser("imatrix", help="importance matrix of a GGUF model on a text",
                       description="Mean x^2 per input column of every block linear layer over the text, "
                       "as llama-imatrix computes it; written as llama.cpp's GGUF imatrix, or as the legacy "
                       ".dat (what ik_llama.cpp reads) when OUT ends in .dat.")
    p.add_argument("model", metavar="MODEL.gguf")
    p.add_argument("--text", metavar="FILE", help="UTF-8 text (default: the built-in text; better a different one "
                   "from the evaluation text)")
    p.add_argument("-o", "--output", required=True, metavar="OUT")
    p.add_argument("--ctx", type=int, default=512)
    p.add_argument("--chunks", type=int, default=None, help="use at most this many chunks")
    _threads_and_progress(p)
    p.set_defaults(func=imatrix_cmd)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, OSError) as e:
        print(f"iq1q: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
