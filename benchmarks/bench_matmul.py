"""matmul speed of iq1q against numpy float32 BLAS and ik_llama.cpp, measured in one run.

usage: python benchmarks/bench_matmul.py [--quick] [--json FILE] [--shapes ROWSxK ...]
           [--m M ...] [--threads T ...] [--backends NAME ...]
           [--pairs WEIGHT:ACTIVATION ... | --all-pairs] [--cold-mb MB | --hot]
           [--reps R] [--min-time-ms MS] [--ik PATH | --no-ik]

Run it with OpenBLAS's overrides unset (numpy reads them when it loads, so the script
cannot undo them; it prints a note when they are set):

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_matmul.py

One table per shape (rows x K; default 4096x4096 11008x4096 4096x11008 14336x8192 512x512),
one line per weight:activation pair (default the pairs models use: iq1_s_r4:q8_k128
iq1_m_r4:q8_k128 iq1_s:q8_k iq1_m:q8_k; --all-pairs for all 16), backend (default every
available one), M activation rows (1 8 32 256) and thread count (1 2):

  backend       the backend asked for; NAME+prep: the same with each tensor prepared
                (QuantizedTensor.prepare: the backend's own layout kept beside the bytes)
  median ms     one iq1q.matmul(x, W) call, activation quantization included
  GFLOP/s       2 * M * rows * K / median
  W GB/s        W.nbytes / median
  act-quant %   median of iq1q.quantize_activations alone / median of the matmul
  vs numpy      numpy float32 x @ Wd.T with the same M, thread count (threadpoolctl) and cold
                policy, measured in this run: numpy ms / iq1q ms (Wd: the shape's first weight
                format dequantized, rows x K; BLAS speed does not depend on the values)
  vs ik         ik_llama.cpp's mul_mat of the same weight type, shape, M and threads, with its
                own activation format (q8_k128 for _r4, q8_k for plain types, so only those
                pairs get one), from this run: ik ms / iq1q ms
                (> 1: iq1q is faster; a * marks an ik line ikbench flagged NOISY)

  bits str.     bits per weight one GEMV reads from memory, measured: the pages one call
                touches of a fresh file mapping of the weights (and of a prepared tensor's
                layout), less those of a second call, times the page size, over rows * K
  bits res.     bits per weight resident, measured: the growth of the process's RSS while
                fresh tensors are made and multiplied once (prepared too, for +prep)

then numpy's and ik's own lines, and a summary of the 4096x4096 one-thread lines against the
targets for the speed-up over ik (R4 x q8_k128: 2.0 2.0 2.5 3.0 at M = 1 8 32 256; plain x
q8_k: 1.6 1.6 1.3 1.3) with each line's two-thread scaling (t=1 ms / t=2 ms; 2 is perfect).

Weights are cold by default, as in inference: each call uses the next of several copies of
W totalling >= 128 MiB (--cold-mb MB; at most 4096 copies, as ikbench's), so they come from
DRAM; --hot (same as --cold-mb 0) times one cache-hot copy. Activations stay hot. Every copy is multiplied once
before timing, since a backend may do one-time work on a tensor's first matmul. Timing, like
ikbench: 2 warm-up calls, then the median of >= 20 calls (>= 7 at M >= 256) lasting >= 250 ms
in all (--reps, --min-time-ms); a line stops after ~10 s once it has 3 calls. A line during
which other processes used > 0.2 CPUs (/proc/stat) is re-timed up to 2 times (--quick: none)
and marked ! if it stays noisy (ikbench has its own guard), so a busy machine shows.

ik_llama.cpp is timed by the harness in benchmarks/ikbench: $IQ1Q_IKBUILD/ikbench, by default
benchmarks/ikbench/build/ikbench (IK_LLAMA_SRC=<a clone of ik_llama.cpp>
benchmarks/ikbench/build.sh builds it; --ik PATH for another build), once per (weight type,
shape), with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset for that command; it quantizes the
weights itself, and its first call spends ~10 s building tables. Skipped when the binary is
absent, or with --no-ik.

Last, a projection of the GEMV (M = 1) to larger hosts of (cores, GB/s): time =
max(t=1 time / cores, bytes streamed / bandwidth), for iq1q (its measured bits streamed) and
for ik (the format's bytes), and their ratio.

--quick: 4096x4096 and 512x512, M 1 32, threads 1 2, the default pairs, the fastest available
backend with and without prepared tensors (and ref at M=1), 5 reps / 100 ms windows, ik for 4096x4096 only: well under a minute
without ik, about 1.5 minutes with it. Options given explicitly override these.
--json FILE: {"header": {...}, "rows": [...], "baselines": [...], "summary": [...]}, one
dict per table line, numbers as numbers, null where a value is absent.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from timing import Timing, median_time, rotating

import iq1q
from iq1q.report import table

try:
    import threadpoolctl
except ImportError:  # numpy then runs with its default thread count on every line
    threadpoolctl = None

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import ik_build  # noqa: E402  (where benchmarks/ikbench builds ikbench and machine_probe)

Shape = tuple[int, int]  # (rows, K): W is rows x K, x is M x K, y is M x rows
PREP = "+prep"  # a backend name with this suffix: its tensors prepared (QuantizedTensor.prepare)
Pair = tuple[str, str]  # (weight format, activation format)

SHAPES: tuple[Shape, ...] = ((4096, 4096), (11008, 4096), (4096, 11008), (14336, 8192), (512, 512))
MS = (1, 8, 32, 256)
THREADS = (1, 2)
PAIRS: tuple[Pair, ...] = (("iq1_s_r4", "q8_k128"), ("iq1_m_r4", "q8_k128"),
                           ("iq1_s", "q8_k"), ("iq1_m", "q8_k"))
QUICK_SHAPES: tuple[Shape, ...] = ((4096, 4096), (512, 512))
QUICK_MS = (1, 32)

# ikbench type for each weight format, and the activation format ik's kernel quantizes to
IK_TYPES = {"iq1_s_r4": "iq1_s_r4", "iq1_m_r4": "iq1_m_r4", "iq1_s": "iq1_s", "iq1_m": "iq1_m"}
IK_ACTIVATION = {"iq1_s_r4": "q8_k128", "iq1_m_r4": "q8_k128", "iq1_s": "q8_k", "iq1_m": "q8_k"}

# speed-up over ik wanted at 4096x4096, one thread, per M: (R4 weight?, activation) -> targets
TARGET_SHAPE: Shape = (4096, 4096)
TARGETS = {(True, "q8_k128"): {1: 2.0, 8: 2.0, 32: 2.5, 256: 3.0},
           (False, "q8_k"): {1: 1.6, 8: 1.6, 32: 1.3, 256: 1.3}}

OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
BIG_M = 256  # from this M on, 7 reps suffice (as ikbench's --reps-big)
MAX_COPIES = 4096  # ikbench's cap on cold copies
MAX_SECONDS = 10.0  # a line stops after this much timed work once it has 3 calls
NOISE_CPUS = 0.2  # a window during which other processes used more CPUs than this is noisy
RETRY_WAIT = 0.5  # seconds
CHECK_TOLERANCE = 0.05  # relative error vs the dequantized product; q8 rounding gives ~1e-2
T0 = time.perf_counter()


@dataclass(frozen=True)
class Policy:
    """How every line is timed, iq1q's, numpy's and ik's alike."""

    reps: int
    min_seconds: float
    cold_mb: float
    retries: int  # re-timings of a noisy line, RETRY_WAIT apart; the quietest attempt is kept
    max_seconds: float = MAX_SECONDS

    @property
    def reps_big(self) -> int:
        return min(7, self.reps)

    def copies(self, nbytes: int) -> int:
        """How many copies of nbytes to rotate over: enough for cold_mb MiB, at least one,
        at most MAX_COPIES (as ikbench: for tiny matrices cold hardly matters)."""
        return min(MAX_COPIES, max(1, math.ceil(self.cold_mb * 2**20 / nbytes)))

    def time(self, fn, m: int, retry: bool = True) -> Timing:
        """fn's Timing; re-timed while noisy (if retry), keeping the quietest attempt."""
        best = None
        for attempt in range(self.retries + 1 if retry else 1):
            if attempt:
                time.sleep(RETRY_WAIT)
            t = median_time(fn, self.reps if m < BIG_M else self.reps_big, self.min_seconds,
                            self.max_seconds)
            if best is None or (t.others_cpu or 0) < (best.others_cpu or 0):
                best = t
            if not noisy(best.others_cpu):
                break
        return best


def noisy(others_cpu: float | None) -> bool:
    return others_cpu is not None and others_cpu > NOISE_CPUS


def log(msg: str) -> None:
    """Progress on stderr, so that stdout holds only the report."""
    print(f"[{time.perf_counter() - T0:6.1f} s] {msg}", file=sys.stderr, flush=True)


# --- command line ----------------------------------------------------------------------

def parse_shape(s: str) -> Shape:
    try:
        rows, k = (int(v) for v in s.lower().split("x"))
        return rows, k
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape {s!r} is not ROWSxK, e.g. 4096x4096") from None


def parse_pair(s: str) -> Pair:
    w, _, a = s.partition(":")
    if w not in iq1q.WEIGHT_FORMATS or a not in iq1q.ACTIVATION_FORMATS:
        raise argparse.ArgumentTypeError(
            f"pair {s!r} is not WEIGHT:ACTIVATION with WEIGHT in {', '.join(iq1q.WEIGHT_FORMATS)} "
            f"and ACTIVATION in {', '.join(iq1q.ACTIVATION_FORMATS)}")
    return w, a


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, usage=argparse.SUPPRESS,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the one-minute subset (see above)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--shapes", nargs="+", type=parse_shape, metavar="ROWSxK")
    p.add_argument("--m", nargs="+", type=int, metavar="M", help="activation rows")
    p.add_argument("--threads", nargs="+", type=int, metavar="T")
    p.add_argument("--backends", nargs="+", metavar="NAME", help="default: every available one; "
                   "NAME+prep: the backend with prepared tensors (default: beside every SIMD backend)")
    pairs = p.add_mutually_exclusive_group()
    pairs.add_argument("--pairs", nargs="+", type=parse_pair, metavar="WEIGHT:ACTIVATION")
    pairs.add_argument("--all-pairs", action="store_true", help="all 16 pairs")
    cold = p.add_mutually_exclusive_group()
    cold.add_argument("--cold-mb", type=float, metavar="MB", default=128.0,
                      help="rotate over copies of the weights totalling >= MB MiB (default 128)")
    cold.add_argument("--hot", action="store_true", help="one cache-hot copy (= --cold-mb 0)")
    p.add_argument("--reps", type=int, help="timed calls per line, at least (default 20; quick 5)")
    p.add_argument("--min-time-ms", type=float, help="timed window per line, at least "
                   "(default 250; quick 100)")
    ik = p.add_mutually_exclusive_group()
    ik.add_argument("--ik", metavar="PATH", help=f"ikbench (default ${ik_build.BUILD_VAR}/ikbench, "
                    f"here {ik_build.shown(ik_build.ikbench())})")
    ik.add_argument("--no-ik", action="store_true", help="do not run ik_llama.cpp")
    args = p.parse_args(argv)

    shapes_given = args.shapes is not None
    args.shapes = args.shapes or (QUICK_SHAPES if args.quick else SHAPES)
    args.m = sorted(set(args.m or (QUICK_MS if args.quick else MS)))
    args.threads = sorted(set(args.threads or THREADS))
    if args.all_pairs:
        args.pairs = [(w, a) for w in iq1q.WEIGHT_FORMATS for a in iq1q.ACTIVATION_FORMATS]
    args.pairs = list(dict.fromkeys(args.pairs or PAIRS))
    if args.hot:
        args.cold_mb = 0.0
    if min(args.m) < 1 or min(args.threads) < 1:
        p.error("--m and --threads take positive numbers")
    group = 4 if any(w.endswith("_r4") for w, _ in args.pairs) else 1
    for rows, k in args.shapes:
        if rows < group or rows % group or k < 256 or k % 256:
            p.error(f"shape {rows}x{k}: K must be a multiple of 256" +
                    (" and rows of 4 (for the _r4 formats)" if group == 4 else ""))
    available = [b.name for b in iq1q.backends() if b.available]
    for name in args.backends or ():
        if name.removesuffix(PREP) not in available:
            p.error(f"backend {name!r} is not available here; available: {', '.join(available)}")
    args.plan = backend_plan(args.backends, available, args.m, args.quick)
    args.policy = Policy(args.reps or (5 if args.quick else 20),
                         (args.min_time_ms or (100.0 if args.quick else 250.0)) / 1e3, args.cold_mb,
                         retries=0 if args.quick else 2)
    # --quick runs ik (~15 s per type) only where the targets are judged, unless asked for more
    args.ik_shapes = ([s for s in args.shapes if s == TARGET_SHAPE] if args.quick and not shapes_given
                      else args.shapes)
    return args


def backend_plan(chosen: Sequence[str] | None, available: Sequence[str], ms: Sequence[int],
                 quick: bool) -> list[tuple[str, list[int]]]:
    """(backend, the Ms it runs at) for every backend to time.

    Default: every available backend at every M, and each SIMD one also with prepared
    tensors. --quick without --backends: the fastest (highest-priority) available backend at
    every M, with and without prepared tensors, and ref at M=1 only."""
    if chosen:
        return [(b, list(ms)) for b in dict.fromkeys(chosen)]
    packs = {b.name for b in iq1q.backends() if b.backend.weight_packers}  # ref keeps no layout
    prep = [b + PREP for b in available if b in packs]
    if not quick:
        return [(b, list(ms)) for b in available + prep]
    plan = [(available[0], list(ms))] + ([(available[0] + PREP, list(ms))] if available[0] in packs else [])
    if available[0] != "ref" and "ref" in available and 1 in ms:
        plan.append(("ref", [1]))
    return plan


# --- the machine -----------------------------------------------------------------------

def cpu_description() -> dict:
    """CPU model, logical CPU counts and the SIMD flags the kernels care about."""
    model, flags = "unknown", set()
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    wanted = ("avx2", "fma", "avx_vnni", "avx512f", "avx512bw", "avx512vl", "avx512_vnni")
    return {"model": model, "cpus": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
            "simd": [f for f in wanted if f in flags]}


def machine_probe() -> list[str]:
    """The lines of ikbench's machine_probe (clock, read bandwidth), if it is built."""
    probe = ik_build.machine_probe()
    if not os.access(probe, os.X_OK):
        return []
    try:
        out = subprocess.run([probe], capture_output=True, text=True, timeout=120).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.removeprefix("# probe:").strip() for line in out.splitlines() if line.strip()]


def blas_description() -> list[dict] | None:
    """numpy's BLAS libraries as threadpoolctl sees them (None without threadpoolctl)."""
    if threadpoolctl is None:
        return None
    keep = ("internal_api", "version", "architecture", "corename", "threading_layer",
            "num_threads", "prefix")
    return [{k: d[k] for k in keep if k in d} for d in threadpoolctl.threadpool_info()
            if d.get("user_api") == "blas"]


def blas_name() -> str:
    """numpy's BLAS in a word, e.g. openblas (threadpoolctl's internal_api)."""
    libs = blas_description()
    return libs[0].get("internal_api", "blas") if libs else "blas"


@contextlib.contextmanager
def blas_threads(t: int) -> Iterator[None]:
    """numpy's BLAS limited to t threads (no limit without threadpoolctl)."""
    if threadpoolctl is None:
        yield
    else:
        with threadpoolctl.threadpool_limits(limits=t, user_api="blas"):
            yield


def make_header(args: argparse.Namespace, ik: IkBench | None) -> dict:
    b = {x.name: x.available for x in iq1q.backends()}
    return {
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpu": cpu_description(),
        "machine_probe": machine_probe(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "blas": blas_description(),
        "openblas_env": {v: os.environ[v] for v in OPENBLAS_VARS if v in os.environ},
        "iq1q": getattr(iq1q, "__version__", "?"),
        "backends": b,
        "plan": {name: ms for name, ms in args.plan},
        "cold_mb": args.cold_mb,
        "timing": {"reps": args.policy.reps, "reps_big_m": args.policy.reps_big,
                   "min_time_ms": args.policy.min_seconds * 1e3,
                   "max_time_s": args.policy.max_seconds, "warmup": 2},
        "ik": ik_build.shown(ik.path) if ik else None,
        "quick": args.quick,
    }


def header_lines(h: dict, ik_note: str) -> list[str]:
    cpu = h["cpu"]
    lines = [f"bench_matmul: {h['date']}; {h['command']}",
             f"CPU {cpu['model']}, {cpu['cpus']} logical CPUs ({cpu['cpus_usable']} usable), "
             f"{' '.join(cpu['simd']) or 'no AVX2'}"]
    lines += [f"machine_probe: {s}" for s in h["machine_probe"]]
    if h["blas"] is None:
        blas = ("threadpoolctl is not installed (pip install threadpoolctl): numpy's BLAS is not "
                "identified and runs with its default thread count on every line")
    else:
        blas = "; ".join(f"{d.get('internal_api')} {d.get('version')} "
                         f"{d.get('architecture') or d.get('corename') or ''} "
                         f"({d.get('threading_layer')}, up to {d.get('num_threads')} threads)"
                         for d in h["blas"]) or "no BLAS found by threadpoolctl"
        blas += ", limited to each line's thread count with threadpoolctl"
    blas += "; baseline x @ Wd.T, Wd = the first weight format dequantized to float32"
    lines.append(f"numpy {h['numpy']} (python {h['python']}): {blas}")
    if h["openblas_env"]:
        lines.append("NOTE: " + " ".join(f"{k}={v}" for k, v in h["openblas_env"].items()) +
                     " is set, and numpy's OpenBLAS obeyed it when it loaded (ikbench runs without "
                     f"it); for numpy's own kernel: env -u {' -u '.join(OPENBLAS_VARS)} python "
                     "benchmarks/bench_matmul.py ...")
    lines.append("iq1q " + h["iq1q"] + ", backends: " + ", ".join(
        f"{n}{'' if ok else ' (not available)'}" for n, ok in h["backends"].items()) +
        "; timed: " + ", ".join(f"{n} (M {' '.join(map(str, ms))})" for n, ms in h["plan"].items()))
    t = h["timing"]
    lines.append(("weights cold: each call uses the next of several copies totalling >= "
                  f"{h['cold_mb']:g} MiB" if h["cold_mb"] else "weights hot: one copy") +
                 f"; median of >= {t['reps']} calls" +
                 (f" (>= {t['reps_big_m']} at M >= {BIG_M})" if t["reps_big_m"] != t["reps"] else "") +
                 " and "
                 f">= {t['min_time_ms']:g} ms after {t['warmup']} warm-ups, <= ~{t['max_time_s']:g} s")
    lines.append(ik_note)
    return ["# " + s for s in lines]


# --- ik_llama.cpp ----------------------------------------------------------------------

IK_LINE = re.compile(r"^(\S+) (\d+)x(\d+) N=(\d+) t=(\d+) (.*)$")


def parse_ikbench(text: str) -> tuple[dict[tuple[int, int], dict], dict]:
    """ikbench's stdout -> ({(M, threads): {median_ms, min_ms, ..., noisy}}, other info)."""
    results, info = {}, {}
    for line in text.splitlines():
        if line.startswith("# machine:"):
            info["machine"] = line.removeprefix("# machine:").strip()
        m = IK_LINE.match(line)
        if m:
            rest = m.group(6)
            fields = {k: _number(v) for k, _, v in (f.partition("=") for f in rest.split()) if v}
            fields["noisy"] = rest.rstrip().endswith("NOISY")
            results[int(m.group(4)), int(m.group(5))] = fields
        elif " quantize " in line:
            for key in ("first_call_ms", "ms_per_Mw", "bpw", "bytes"):
                found = re.search(rf"\b{key}=([\d.eE+-]+)", line)
                if found:
                    info[key] = _number(found.group(1))
    return results, info


def _number(v: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(v)
        except ValueError:
            pass
    return v


class IkBench:
    """Runs ikbench once per (type, shape, Ms, threads) and keeps its results for the run."""

    def __init__(self, path: str, policy: Policy, quick: bool):
        self.path, self.policy, self.quick = path, policy, quick
        self.cache: dict[tuple, dict[tuple[int, int], dict]] = {}
        self.info: dict[str, dict] = {}

    def run(self, wtype: str, shape: Shape, ms: Sequence[int], threads: Sequence[int]
            ) -> dict[tuple[int, int], dict]:
        key = (wtype, shape, tuple(ms), tuple(threads))
        if key in self.cache:
            return self.cache[key]
        p = self.policy
        cmd = [self.path, wtype, "-r", str(shape[0]), "-k", str(shape[1]),
               "-n", ",".join(map(str, ms)), "-t", ",".join(map(str, threads)),
               "--cold-mb", f"{p.cold_mb:g}", "--reps", str(p.reps), "--reps-big", str(p.reps_big),
               "--min-time-ms", f"{p.min_seconds * 1e3:g}"]
        if self.quick:
            cmd += ["--retries", "0"]
        env = {k: v for k, v in os.environ.items() if k not in OPENBLAS_VARS}
        log(f"ik: {' '.join(cmd)} (its first call builds tables, ~10 s)")
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
        except (OSError, subprocess.TimeoutExpired) as e:
            log(f"ik: {wtype} {shape[0]}x{shape[1]} failed: {e}")
            proc = None
        results: dict[tuple[int, int], dict] = {}
        if proc is not None and proc.returncode:
            log(f"ik: exit code {proc.returncode}: {proc.stderr.strip()[-500:]}")
        elif proc is not None:
            results, info = parse_ikbench(proc.stdout)
            self.info[f"{wtype} {shape[0]}x{shape[1]}"] = info
        self.cache[key] = results
        return results


# --- measurements ----------------------------------------------------------------------

def line_fields(shape: Shape, m: int, t: int, timing: Timing, nbytes: int, copies: int) -> dict:
    """The fields every table line has: where, how long, how fast, how quiet."""
    rows, k = shape
    return {"shape": f"{rows}x{k}", "rows": rows, "k": k, "m": m, "threads": t,
            "median_ms": timing.median * 1e3, "min_ms": timing.min * 1e3, "max_ms": timing.max * 1e3,
            "reps": timing.reps, "gflops": 2 * m * rows * k / timing.median / 1e9,
            "w_gbps": nbytes / timing.median / 1e9, "w_bytes": nbytes, "cold_copies": copies,
            "others_cpu": timing.others_cpu, "noisy": noisy(timing.others_cpu)}


def bench_numpy(wd: np.ndarray, x: np.ndarray, args: argparse.Namespace, source: str) -> list[dict]:
    """numpy float32 x[:M] @ Wd.T for every (M, threads), rotating over copies of Wd."""
    policy = args.policy
    copies = [wd] + [wd.copy() for _ in range(policy.copies(wd.nbytes) - 1)]
    transposed = [c.T for c in copies]
    lines = []
    for t in args.threads:
        with blas_threads(t):
            for m in args.m:
                xm = x[:m]
                timing = policy.time(rotating(transposed, lambda wt: xm @ wt), m)
                lines.append({"kind": "numpy", "label": "numpy float32 x @ Wd.T", "backend": blas_name(),
                              "dequantized_from": source,
                              **line_fields(wd.shape, m, t, timing, wd.nbytes, len(copies))})
    return lines


def weight_copies(W: iq1q.QuantizedTensor, policy: Policy) -> list[iq1q.QuantizedTensor]:
    """W and enough byte copies of it to fill the cold window (each its own tensor object)."""
    data = W.tobytes()
    return [W] + [iq1q.QuantizedTensor.from_bytes(data, W.format, W.shape)
                  for _ in range(policy.copies(W.nbytes) - 1)]


def served_by(pair: Pair, backend: str) -> str:
    """The backend whose kernel runs the pair when `backend` is asked for (it may fall back)."""
    try:
        return iq1q.kernel_table(backend)[pair]
    except Exception:  # noqa: BLE001 - a display detail; the library may change this helper
        return backend


def rel_error(y: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(y - ref) / max(np.linalg.norm(ref), 1e-30))


def _file_mapped(data: np.ndarray, folder: str) -> np.ndarray:
    """A read-only mapping of a fresh file holding data's bytes: none of its pages touched."""
    fd, path = tempfile.mkstemp(dir=folder)
    with os.fdopen(fd, "wb") as f:
        f.write(data.tobytes())
    out = np.memmap(path, np.uint8, mode="r")
    os.unlink(path)  # the mapping keeps the file
    return out


def _mapped_rss(arrays: Sequence[np.ndarray]) -> int:
    """Bytes of these mappings in this process's page tables (/proc/self/smaps Rss): the
    pages touched, to the kernel's fault-around granularity (64 KiB)."""
    starts = {a.ctypes.data for a in arrays}
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                inside = int(head.split("-")[0], 16) in starts
            elif inside and head == "Rss:":
                total += int(line.split()[1]) * 1024
    return total


def streamed_bits(W: iq1q.QuantizedTensor, x1: np.ndarray, act: str, backend: str, prepared: bool) -> float:
    """Bits per weight one GEMV reads: the pages it touches of fresh file mappings of the
    weight bytes and, prepared, of the layout prepare() made (moved to a fresh mapping: a
    benchmark's liberty with a private field)."""
    with tempfile.TemporaryDirectory() as folder:
        Wm = iq1q.QuantizedTensor(W._format, *W.shape, _file_mapped(W.data, folder))
        if prepared:
            layout = Wm.prepare(backend=backend, activation=act)._prepared
            Wm = iq1q.QuantizedTensor(W._format, *W.shape, _file_mapped(W.data, folder))
            Wm._prepared = {k: _file_mapped(v, folder) for k, v in layout.items()}
        mapped = [Wm.data, *Wm._prepared.values()]
        iq1q.matmul(x1, Wm, activation=act, backend=backend, threads=1, overflow="ignore")
        return 8 * _mapped_rss(mapped) / (W.shape[0] * W.shape[1])


def resident_bits(W: iq1q.QuantizedTensor, x1: np.ndarray, act: str, backend: str, prepared: bool) -> float:
    """Bits per weight resident: RSS growth while fresh tensors (>= 64 MiB of bytes) are made
    from W's bytes, prepared if asked, and multiplied once, over their weights."""
    n = max(1, math.ceil(64 * 2**20 / W.nbytes))
    data = W.tobytes()
    iq1q.matmul(x1, iq1q.QuantizedTensor.from_bytes(data, W.format, W.shape), activation=act,
                backend=backend, overflow="ignore")  # the call's own buffers and pools, once
    gc.collect()
    start = _rss()
    held = []
    for _ in range(n):
        Wc = iq1q.QuantizedTensor.from_bytes(data, W.format, W.shape)
        if prepared:
            Wc.prepare(backend=backend, activation=act)
        iq1q.matmul(x1, Wc, activation=act, backend=backend, overflow="ignore")
        held.append(Wc)
    grown = _rss() - start
    return 8 * grown / (n * W.shape[0] * W.shape[1])


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def bench_pair(copies: list[iq1q.QuantizedTensor], wd: np.ndarray, x: np.ndarray, act: str,
               variant: str, ms: Sequence[int], args: argparse.Namespace,
               quant_cache: dict[tuple, Timing]) -> list[dict]:
    """Lines of one (pair, backend variant): matmul and activation quantization times per
    (M, t), and the bits per weight a GEMV streams and a tensor keeps resident."""
    W, policy = copies[0], args.policy
    backend, prepared = variant.removesuffix(PREP), variant.endswith(PREP)

    def mm(Wc: iq1q.QuantizedTensor, xm: np.ndarray, t: int) -> np.ndarray:
        return iq1q.matmul(xm, Wc, activation=act, backend=backend, threads=t, overflow="ignore")

    for Wc in copies:
        if prepared:
            Wc.prepare(backend=backend, activation=act)
        mm(Wc, x[:1], 1)  # each copy touched once before timing
    err = rel_error(mm(W, x[:ms[0]], 1), x[:ms[0]] @ wd.T)
    memory = {"bits_streamed": streamed_bits(W, x[:1], act, backend, prepared),
              "bits_resident": resident_bits(W, x[:1], act, backend, prepared)}
    lines = []
    for m in ms:
        xm = x[:m]
        for t in args.threads:
            timing = policy.time(rotating(copies, lambda Wc: mm(Wc, xm, t)), m)
            qkey = (W.shape[1], act, backend, m, t)
            if qkey not in quant_cache:
                quant_cache[qkey] = policy.time(
                    lambda: iq1q.quantize_activations(xm, act, backend=backend, threads=t), m,
                    retry=False)
            q = quant_cache[qkey].median
            lines.append({"weight": W.format, "activation": act, "backend": variant,
                          "kernel_backend": served_by((W.format, act), backend) + (PREP if prepared else ""),
                          **memory,
                          **line_fields(W.shape, m, t, timing, W.nbytes, len(copies)),
                          "act_quant_ms": q * 1e3, "act_quant_pct": 100 * q / timing.median,
                          "numpy_ms": None, "vs_numpy": None, "ik_ms": None, "vs_ik": None,
                          "ik_noisy": None, "check_rel_err": err})
    for Wc in copies:
        Wc.release()
    return lines


def bench_ik(ik: IkBench, shape: Shape, weights: dict[str, iq1q.QuantizedTensor],
             args: argparse.Namespace) -> list[dict]:
    """ik_llama.cpp's lines for the weight types whose ik pairing is among the pairs."""
    lines = []
    for wf, W in weights.items():
        if wf not in IK_TYPES or (wf, IK_ACTIVATION[wf]) not in args.pairs:
            continue
        for (m, t), r in ik.run(IK_TYPES[wf], shape, args.m, args.threads).items():
            ms = r.get("median_ms")
            lines.append({
                "kind": "ik", "label": f"ik {IK_TYPES[wf]} x {IK_ACTIVATION[wf]}",
                "backend": "ik_llama.cpp", "weight": wf, "activation": IK_ACTIVATION[wf],
                "shape": f"{shape[0]}x{shape[1]}", "rows": shape[0], "k": shape[1], "m": m, "threads": t,
                "median_ms": ms, "min_ms": r.get("min_ms"), "max_ms": r.get("max_ms"),
                "reps": r.get("reps"), "gflops": r.get("gflops"),
                "w_gbps": W.nbytes / ms / 1e6 if ms else None, "w_bytes": W.nbytes,
                "cold_copies": r.get("cold_copies"), "others_cpu": r.get("others_cpu"),
                "noisy": r["noisy"], "check_rel_err": r.get("check_rel_err")})
    return lines


def add_ratios(lines: list[dict], baselines: list[dict]) -> None:
    """Fill in each iq1q line's numpy and ik times from the same shape's baselines."""
    def find(kind: str, line: dict, **kv) -> dict | None:
        return next((b for b in baselines if b["kind"] == kind and b["m"] == line["m"]
                     and b["threads"] == line["threads"] and b["median_ms"]
                     and all(b.get(k) == v for k, v in kv.items())), None)

    for line in lines:
        if (b := find("numpy", line)) is not None:
            line["numpy_ms"] = b["median_ms"]
            line["vs_numpy"] = b["median_ms"] / line["median_ms"]
        if (b := find("ik", line, weight=line["weight"], activation=line["activation"])) is not None:
            line["ik_ms"], line["ik_noisy"] = b["median_ms"], b["noisy"]
            line["vs_ik"] = b["median_ms"] / line["median_ms"]


def bench_shape(shape: Shape, args: argparse.Namespace, ik: IkBench | None
                ) -> tuple[list[dict], list[dict]]:
    """All lines of one shape: iq1q's (ratios filled in) and the baselines' (numpy, ik)."""
    rows, k = shape
    rng = np.random.default_rng(0)
    w = rng.standard_normal((rows, k), dtype=np.float32)
    x = rng.standard_normal((max(args.m), k), dtype=np.float32)
    formats = list(dict.fromkeys(wf for wf, _ in args.pairs))
    log(f"{rows}x{k}: quantizing to {', '.join(formats)}")
    weights = {f: iq1q.quantize(w, f) for f in formats}
    del w

    log(f"{rows}x{k}: numpy float32")
    baselines = bench_numpy(iq1q.dequantize(weights[formats[0]]), x, args, formats[0])
    lines: list[dict] = []
    quant_cache: dict[tuple, Timing] = {}
    for wf in formats:
        wd, copies = iq1q.dequantize(weights[wf]), weight_copies(weights[wf], args.policy)
        for act in (a for f, a in args.pairs if f == wf):
            for backend, backend_ms in args.plan:
                if ms := [m for m in args.m if m in backend_ms]:
                    log(f"{rows}x{k}: {wf} x {act}, {backend}")
                    lines += bench_pair(copies, wd, x, act, backend, ms, args, quant_cache)
        del wd, copies
    if ik and shape in args.ik_shapes:
        baselines += bench_ik(ik, shape, weights, args)
    add_ratios(lines, baselines)
    return lines, baselines


# --- report ----------------------------------------------------------------------------

def _f(v: float | None, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def shape_table(lines: list[dict], baselines: list[dict]) -> str:
    body = []
    for r in lines:
        backend = r["backend"] if r["kernel_backend"] == r["backend"] else f"{r['backend']}→{r['kernel_backend']}"
        vs_ik = _f(r["vs_ik"], ".2f") + ("*" if r["ik_noisy"] else "")
        body.append([f"{r['weight']} x {r['activation']}", backend, r["m"], r["threads"],
                     _f(r["median_ms"], ".4g") + ("!" if r["noisy"] else ""), _f(r["gflops"], ".1f"),
                     _f(r["w_gbps"], ".2f"), _f(r["bits_streamed"], ".2f"), _f(r["bits_resident"], ".2f"),
                     _f(r["act_quant_pct"], ".1f"), _f(r["vs_numpy"], ".2f"), vs_ik])
    labels = list(dict.fromkeys(b["label"] for b in baselines))  # numpy first, then ik by pair
    for b in sorted(baselines, key=lambda b: (labels.index(b["label"]), b["m"], b["threads"])):
        body.append([b["label"], b["backend"], b["m"], b["threads"],
                     _f(b["median_ms"], ".4g") + ("!" if b["noisy"] else ""),
                     _f(b["gflops"], ".1f"), _f(b["w_gbps"], ".2f"), "", "", "", "", ""])
    out = table(["pair", "backend", "M", "t", "median ms", "GFLOP/s", "W GB/s", "bits str.", "bits res.",
                 "act-quant %", "vs numpy", "vs ik"], body)
    if any(r["noisy"] for r in lines + baselines):
        out += (f"\n! noisy: other processes used > {NOISE_CPUS} CPUs during the timing, even "
                f"after retries (ik: ikbench's own guard); * on vs ik: the ik line was noisy")
    bad = [r for r in lines if r["check_rel_err"] > CHECK_TOLERANCE]
    for r in bad:
        out += (f"\nWARNING: {r['weight']} x {r['activation']} on {r['backend']}: relative error "
                f"{r['check_rel_err']:.3g} against x @ dequantized W (expected < {CHECK_TOLERANCE})")
    return out


def summarize(lines: list[dict], baselines: list[dict]) -> list[dict]:
    """The TARGET_SHAPE one-thread lines of pairs with a target, and their 2-thread scaling."""
    shape = f"{TARGET_SHAPE[0]}x{TARGET_SHAPE[1]}"

    def find(rows: list[dict], **kv) -> dict | None:
        return next((r for r in rows if all(r.get(k) == v for k, v in kv.items())), None)

    out = []
    for r in lines:
        targets = TARGETS.get((r["weight"].endswith("_r4"), r["activation"]))
        if r["shape"] != shape or r["threads"] != 1 or targets is None:
            continue
        key = dict(weight=r["weight"], activation=r["activation"], m=r["m"])
        r2 = find(lines, shape=shape, backend=r["backend"], threads=2, **key)
        ik1 = find(baselines, kind="ik", shape=shape, threads=1, **key)
        ik2 = find(baselines, kind="ik", shape=shape, threads=2, **key)
        target = targets.get(r["m"])
        met = None if target is None or r["vs_ik"] is None else r["vs_ik"] >= target
        out.append({"weight": r["weight"], "activation": r["activation"], "backend": r["backend"],
                    "m": r["m"], "median_ms": r["median_ms"], "ik_ms": r["ik_ms"], "vs_ik": r["vs_ik"],
                    "target": target, "met": met,
                    "scaling_2t": r["median_ms"] / r2["median_ms"] if r2 else None,
                    "ik_scaling_2t": ik1["median_ms"] / ik2["median_ms"] if ik1 and ik2 else None})
    return out


def summary_table(summary: list[dict]) -> str:
    body = [[f"{s['weight']} x {s['activation']}", s["backend"], s["m"], _f(s["median_ms"], ".4g"),
             _f(s["ik_ms"], ".4g"), _f(s["vs_ik"], ".2f"), _f(s["target"], ".1f"),
             {True: "met", False: "MISSED", None: "—"}[s["met"]],
             _f(s["scaling_2t"], ".2f"), _f(s["ik_scaling_2t"], ".2f")] for s in summary]
    out = table(["pair", "backend", "M", "ms t=1", "ik ms", "vs ik", "target", "status", "t1/t2 iq1q",
                 "t1/t2 ik"], body)
    for backend in dict.fromkeys(s["backend"] for s in summary):
        judged = [s for s in summary if s["backend"] == backend and s["met"] is not None]
        if judged:
            out += f"\n{backend}: {sum(s['met'] for s in judged)} of {len(judged)} targets met"
    return out


HOSTS = ((8, 60), (16, 80), (64, 400), (128, 600))  # (cores, GB/s) of the projection


def project(lines: list[dict], baselines: list[dict]) -> list[dict]:
    """GEMV time on larger hosts from this run's one-thread M = 1 lines: max(time / cores,
    bytes / bandwidth), bytes = the measured bits streamed (iq1q) or the format's bytes (ik)."""
    out = []
    for r in lines:
        if r["m"] != 1 or r["threads"] != 1 or not r["median_ms"]:
            continue
        ik = next((b for b in baselines if b["kind"] == "ik" and b["shape"] == r["shape"] and b["m"] == 1
                   and b["threads"] == 1 and b["weight"] == r["weight"] and b["median_ms"]), None)
        weights = r["rows"] * r["k"]
        for cores, gbps in HOSTS:
            t = max(r["median_ms"] / cores, r["bits_streamed"] * weights / 8 / gbps / 1e6)
            t_ik = max(ik["median_ms"] / cores, ik["w_bytes"] / gbps / 1e6) if ik else None
            out.append({"shape": r["shape"], "weight": r["weight"], "activation": r["activation"],
                        "backend": r["backend"], "cores": cores, "gbps": gbps, "ms": t, "ik_ms": t_ik,
                        "vs_ik": t_ik / t if t_ik else None})
    return out


def projection_table(rows: list[dict]) -> str:
    keys = list(dict.fromkeys((r["shape"], r["weight"], r["activation"], r["backend"]) for r in rows))
    body = []
    for key in keys:
        mine = [r for r in rows if (r["shape"], r["weight"], r["activation"], r["backend"]) == key]
        body.append([key[0], f"{key[1]} x {key[2]}", key[3]] +
                    [f"{_f(r['ms'], '.3g')} / {_f(r['ik_ms'], '.3g')} = {_f(r['vs_ik'], '.2f')}" for r in mine])
    return table(["shape", "pair", "backend"] + [f"{c} cores {g} GB/s" for c, g in HOSTS], body)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    ik, ik_note = None, "ik_llama.cpp: skipped (--no-ik)"
    if not args.no_ik:
        path = args.ik or str(ik_build.ikbench())
        if os.access(path, os.X_OK):
            ik = IkBench(path, args.policy, args.quick)
            shapes = " ".join(f"{r}x{k}" for r, k in args.ik_shapes)
            ik_note = (f"ik_llama.cpp: {ik_build.shown(path)} per (type, shape) for {shapes}, same "
                       f"cold-mb and timing, OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE unset")
        elif args.ik:
            ik_note = f"ik_llama.cpp: {args.ik} is not an executable; no vs-ik ratios"
        else:
            ik_note = f"{ik_build.not_built()} (or give --ik PATH); no vs-ik ratios"
    header = make_header(args, ik)
    print("\n".join(header_lines(header, ik_note)), flush=True)

    all_lines, all_baselines = [], []
    for shape in args.shapes:
        lines, baselines = bench_shape(shape, args, ik)
        all_lines += lines
        all_baselines += baselines
        print(f"\n{shape[0]}x{shape[1]} (rows x K)\n{shape_table(lines, baselines)}", flush=True)

    projection = project(all_lines, all_baselines)
    if projection:
        print("\nGEMV projected to larger hosts: iq1q ms / ik ms = speed-up over ik "
              "(max(t=1 ms / cores, bytes streamed / bandwidth))")
        print(projection_table(projection))
    summary = summarize(all_lines, all_baselines)
    if summary:
        print(f"\nTargets: speed-up over ik at {TARGET_SHAPE[0]}x{TARGET_SHAPE[1]}, one thread "
              "(t1/t2: time at t=1 / time at t=2)")
        print(summary_table(summary))
    wall = time.perf_counter() - T0
    print(f"\n# wall time {wall:.1f} s")
    if args.json:
        header["wall_s"] = wall
        header["ik_info"] = ik.info if ik else {}
        with open(args.json, "w") as f:
            json.dump({"header": header, "rows": all_lines, "baselines": all_baselines,
                       "summary": summary, "projection": projection}, f, indent=1)
        log(f"wrote {args.json}")


if __name__ == "__main__":
    main()
