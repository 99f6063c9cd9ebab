"""Where the time of `iq1q perplexity` goes, per part of the forward pass.

usage: python benchmarks/profile_model.py [MODEL.gguf] [--text FILE] [--ctx 512]
           [--chunks N] [--threads 1 2] [--type iq1_m_r4]

Runs the perplexity loop of `iq1q perplexity --llama-compatible` (the file's IQ1 layers with
the auto activation format) with timers around the library's functions, and prints, per
thread count, the seconds of each part per chunk and its share of the whole:

  load             reading the GGUF file and making the model (once)
  tokenize         the text to token ids (once)
  IQ1 matmuls      iq1q.matmul of the IQ1 layers, activation quantization excluded
  act. quantize    quantizing their activations to the 8-bit format
  other linears    non-IQ1 weights of the blocks (float32 numpy)
  output head      the head's log-sum-exp kernel (a Q8_0 head where the backend has one), or
                   the logits slice by slice (products, softcap) and each slice's share of
                   the NLL (its largest logits and sums of exps)
  NLL              combining the slices' shares
  norms            RMS norms (native, on the pool)
  RoPE             rotary embeddings (native, on the pool)
  MLP activation   GELU / SiLU and the gate product (native, on the pool)
  attention etc.   the rest of the blocks: attention (native, on the pool), residuals, reshapes

The timers wrap module functions (a benchmark's liberty); their own cost is ~1 us a call.
Without MODEL: Gemma 3 270M quantized as benchmarks/bench_model.py does.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_model import gemma  # noqa: E402

from iq1q import gemm  # noqa: E402
from iq1q.models import chunks, gguf_io, model, perplexity, tokenizer  # noqa: E402
from iq1q.report import table  # noqa: E402

PARTS = ("load", "tokenize", "IQ1 matmuls", "act. quantize", "other linears", "output head", "NLL",
         "norms", "RoPE", "MLP activation", "attention etc.")


class Timers:
    """Seconds per part; a part's time excludes the parts timed inside it."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.stack: list[list] = []  # [part, start, time of the parts inside]

    @contextmanager
    def part(self, name: str) -> Iterator[None]:
        """Time the block as part `name`, less the parts timed inside it."""
        self.stack.append([name, time.perf_counter(), 0.0])
        try:
            yield
        finally:
            name, t0, inner = self.stack.pop()
            dt = time.perf_counter() - t0
            self.seconds[name] += dt - inner
            if self.stack:
                self.stack[-1][2] += dt

    def wrap(self, name: str, fn):
        def timed(*args, **kwargs):
            with self.part(name):
                return fn(*args, **kwargs)
        return timed


def instrument(t: Timers) -> None:
    model.matmul = t.wrap("IQ1 matmuls", model.matmul)
    gemm._quantize = t.wrap("act. quantize", gemm._quantize)
    # methods the main thread calls (their work may run on other threads: the timers are not shared)
    model.Model._norm = t.wrap("norms", model.Model._norm)
    model.rope = t.wrap("RoPE", model.rope)
    model.Model._activate = t.wrap("MLP activation", model.Model._activate)
    call = model.Linear.__call__

    def linear(self, x, activation, threads, hook):
        if self.quantized:
            return call(self, x, activation, threads, hook)
        return t.wrap("other linears", call)(self, x, activation, threads, hook)

    model.Linear.__call__ = linear
    model.Model.logit_map = t.wrap("output head", model.Model.logit_map)
    model.Model.head_nll = t.wrap("output head", model.Model.head_nll)
    perplexity._nll = t.wrap("NLL", perplexity._nll)


TIMERS = Timers()


def profile(path: Path, text: str, ctx: int, max_chunks: int | None, threads: int) -> tuple[dict, int]:
    """(seconds per part over the whole run, number of chunks); instrument(TIMERS) first."""
    t = TIMERS
    t.seconds.clear()
    t0 = time.perf_counter()
    f = gguf_io.read(path)
    m = model.from_gguf(f, threads=threads)
    t.seconds["load"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    tok = tokenizer.Tokenizer(f.metadata)
    ids = tok.encode(text, add_bos=False)
    t.seconds["tokenize"] = time.perf_counter() - t0
    parts = chunks.chunks(ids, ctx, tok.bos_id, llama_compatible=True, max_chunks=max_chunks)
    t0 = time.perf_counter()
    for c in parts:
        total = t.wrap("attention etc.", m.hidden)  # the blocks' time not claimed by a part inside
        h = total(c.tokens)
        perplexity._nll(m, h[c.first:-1], c.tokens[c.first + 1:], None)
    t.seconds["wall"] = time.perf_counter() - t0 + t.seconds["load"] + t.seconds["tokenize"]
    return dict(t.seconds), len(parts)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", metavar="MODEL.gguf")
    p.add_argument("--text", metavar="FILE")
    p.add_argument("--ctx", type=int, default=512)
    p.add_argument("--chunks", type=int, default=None)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--type", default="iq1_m_r4", help="the IQ1 type of the default model")
    args = p.parse_args()
    text = Path(args.text).read_text(encoding="utf-8") if args.text else chunks.builtin_text()
    with tempfile.TemporaryDirectory(prefix="iq1q-profile-") as tmp:
        path = Path(args.model) if args.model else gemma(Path(tmp), args.type)
        instrument(TIMERS)
        results = {t: profile(path, text, args.ctx, args.chunks, t) for t in args.threads}
    n = next(iter(results.values()))[1]
    print(f"# {path.name}: {n} chunks of {args.ctx} tokens; seconds per chunk (once for load and tokenize)")
    rows = []
    for part in PARTS:
        row = [part]
        for threads in args.threads:
            s, _ = results[threads]
            v = s.get(part, 0.0)
            per = v if part in ("load", "tokenize") else v / n
            row += [f"{per:.3f}", f"{100 * v / s['wall']:.1f}"]
        rows.append(row)
    rows.append(["whole run (s)"] + sum(([f"{results[t][0]['wall']:.2f}", "100"] for t in args.threads), []))
    print(table(["part"] + sum(([f"t={t} s", f"t={t} %"] for t in args.threads), []), rows))


if __name__ == "__main__":
    main()
