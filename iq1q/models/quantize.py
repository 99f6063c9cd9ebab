"""`iq1q quantize`: a GGUF model in, the same model with IQ1 block weights out.

What is quantized follows ik_llama.cpp's `llama-quantize --pure`: every weight matrix
of the transformer blocks (2-D, or 3-D experts quantized expert by expert) goes to the
chosen type; norms, routers and 1-D tensors never; the token embedding, the output
matrix and everything else keep their type unless a --tensor-type pattern says
otherwise. Tensors are copied byte for byte, metadata key for key (general.file_type
updated).

The work is cut into chunks of whole rows (whole 4-row groups), spread over a Python
thread pool and written in order as they finish, so memory holds a few chunks, never
the model. A Python pool, not the native one: a chunk is a pipeline of Python-level
steps (pread, conversion from the source type by the gguf package's numpy code, the
native quantizer with the GIL released, the error measurement), each chunk on one
thread. Source bytes are read with pread rather than through the memory map, so the
pages read do not stay in this process's RSS.
"""

from __future__ import annotations

import math
import os
import re
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import gguf_io
from ..formats import WEIGHT_FORMATS, Format, format_info
from .gguf_io import GGUFError, RawTensor, TensorSpec
from ..hessian import HessianOptions
from .calibrate import Calibration, calibrate
from .imatrix import Imatrix
from .imatrix import load as load_imatrix
from .moe import matrix_name
from ..report import table
from ..tensors import QuantizedTensor, quantize
from ..threads import num_threads

KEEP = "keep"  # --tensor-type target: leave the tensor as it is
CHUNK_WEIGHTS = 1 << 18  # weights per work item: a few MiB of floats in flight per thread
COPY_CHUNK_BYTES = 4 << 20
# not quantized even inside blocks (ik_llama.cpp's list): routers, Mamba's small 2-D
# weights, T5's relative position bias
_NEVER = ("_norm.weight", "ffn_gate_inp.weight", "ssm_conv1d", "ssm_x.weight", "ssm_dt.weight",
          "attn_rel_b.weight")
_INT_TYPES = {int(gguf_io.GGMLQuantizationType[t]) for t in ("I8", "I16", "I32", "I64")}


class QuantizeError(ValueError):
    """A model or option that `iq1q quantize` cannot work with."""


def _family(fmt: Format) -> tuple[Format, Format]:
    """(plain, _r4) formats of fmt's family."""
    plain = fmt.name.removesuffix("_r4")
    return format_info(plain), format_info(plain + "_r4")


def _gguf_target(name: str) -> int | None:
    """The ggml type id of a type the gguf package can quantize to, or None."""
    try:
        t = gguf_io.GGMLQuantizationType[name.upper()]
    except KeyError:
        return None
    block = gguf_io.GGML_QUANT_SIZES[t][0]
    try:
        gguf_io.gguf.quants.quantize(np.zeros((1, block), np.float32), t)
    except (NotImplementedError, ValueError):
        return None
    return int(t)


@dataclass(frozen=True)
class Target:
    """Where a tensor goes: an IQ1 format (iq1q's quantizer), a type the gguf package
    quantizes to, or KEEP."""

    name: str
    ggml_type: int | None  # None for KEEP

    @property
    def iq1(self) -> Format | None:
        return format_info(self.name) if self.name in WEIGHT_FORMATS else None


def parse_target(text: str) -> Target:
    t = text.strip().lower()
    if t in WEIGHT_FORMATS:
        return Target(t, format_info(t).ggml_type)
    if t in (KEEP, "copy"):
        return Target(KEEP, None)
    gt = _gguf_target(t)
    if gt is None:
        raise QuantizeError(f"unknown or unsupported type {text!r}: choose one of {', '.join(WEIGHT_FORMATS)}, "
                            f"{KEEP}, or a type the gguf package quantizes to (f32, f16, bf16, q8_0, q5_0, ...)")
    return Target(t, gt)


def parse_tensor_types(specs: Sequence[str]) -> list[tuple[re.Pattern, Target]]:
    """REGEX=TYPE rules; the first whose regex is found in a tensor's name wins."""
    rules = []
    for s in specs:
        pattern, eq, ty = s.rpartition("=")
        if not eq or not pattern:
            raise QuantizeError(f"--tensor-type {s!r}: expected REGEX=TYPE")
        try:
            rx = re.compile(pattern)
        except re.error as e:
            raise QuantizeError(f"--tensor-type {s!r}: bad regular expression: {e}") from None
        rules.append((rx, parse_target(ty)))
    return rules


@dataclass
class TensorPlan:
    name: str
    src: RawTensor
    out_type: int  # ggml type id written
    target: Target | None  # None: copied
    note: str = ""  # why the type differs from the one asked for
    asked: str = ""  # the type asked for, when a fallback changed it
    imatrix: np.ndarray | None = None  # n_expert * K values
    imatrix_entry: str = ""

    @property
    def quantized(self) -> bool:
        return self.target is not None

    @property
    def spec(self) -> TensorSpec:
        return TensorSpec(self.name, self.out_type, self.src.shape)


def _eligible(name: str, raw: RawTensor) -> bool:
    """A matrix that may be quantized at all: >= 2-D float weights, not norms or routers."""
    return (name.endswith("weight") and len(raw.shape) >= 2 and raw.ggml_type not in _INT_TYPES
            and not any(s in name for s in _NEVER))


def _fit_iq1(name: str, fmt: Format, rows: int, k: int) -> tuple[Format | None, str]:
    """The IQ1 format a matrix of `rows` rows (per expert) of length k can hold, falling
    back within fmt's family; (None, why) when none can."""
    plain, r4 = _family(fmt)
    fits_plain = k % plain.block_size == 0
    fits_r4 = rows % r4.rows_per_group == 0 and k % r4.block_size == 0
    if name == "token_embd.weight" and fmt is r4:
        # ik_llama.cpp cannot look rows up in row-interleaved types
        if fits_plain:
            return plain, "token embeddings cannot be row-interleaved"
        return None, (f"token embeddings cannot be row-interleaved and row length {k} is not a "
                      f"multiple of {plain.block_size}")
    if fmt is plain and not fits_plain:
        if fits_r4:
            return r4, f"row length {k} is not a multiple of {plain.block_size}"
        return None, f"row length {k} is not a multiple of {plain.block_size} and {rows} rows not a multiple of 4"
    if fmt is r4 and not fits_r4:
        if fits_plain:
            return plain, f"{rows} rows are not a multiple of {r4.rows_per_group}"
        return None, f"{rows} rows of length {k} fit neither {r4.name} nor {plain.name}"
    return fmt, ""


def plan(src: gguf_io.GGUFFile, target: Target, rules: Sequence[tuple[re.Pattern, Target]] = (),
         imatrix: Imatrix | None = None, warn: Callable[[str], None] = lambda m: None) -> list[TensorPlan]:
    """What happens to each tensor of src, in file order."""
    plans = []
    for name, raw in src.raw.items():
        asked = None
        if _eligible(name, raw):
            asked = next((t for rx, t in rules if rx.search(name)), None)
            if asked is None and name.startswith("blk."):
                asked = target
        p = TensorPlan(name, raw, raw.ggml_type, None)
        plans.append(p)
        if asked is None or asked.name == KEEP or asked.ggml_type == raw.ggml_type:
            continue
        rows, k = raw.shape[-2], raw.shape[-1]
        if not gguf_io.convertible(raw.ggml_type):
            p.note, p.asked = f"cannot read {raw.type_name} values", asked.name
            continue
        if asked.iq1 is not None:
            fmt, why = _fit_iq1(name, asked.iq1, rows, k)
            if fmt is None:
                p.note, p.asked = why, asked.name
                continue
            if fmt is not asked.iq1:
                p.note, p.asked = why, asked.name
            got = Target(fmt.name, fmt.ggml_type)
        else:
            block = gguf_io.GGML_QUANT_SIZES[gguf_io.GGMLQuantizationType(asked.ggml_type)][0]
            if k % block:
                p.note, p.asked = f"row length {k} is not a multiple of {block}", asked.name
                continue
            got = asked
        if got.ggml_type == raw.ggml_type:
            continue
        p.target, p.out_type = got, got.ggml_type
        if got.iq1 is not None and imatrix is not None:
            _attach_imatrix(p, imatrix, warn)
    return plans


def _attach_imatrix(p: TensorPlan, im: Imatrix, warn: Callable[[str], None]) -> None:
    found = im.lookup(p.name)
    if found is None:
        warn(f"no imatrix entry for {p.name}: quantized without one")
        return
    entry, values = found
    k = p.src.shape[-1]
    n_mat = math.prod(p.src.shape[:-2])
    if values.size != k * n_mat:
        msg = (f"imatrix entry {entry!r} has {values.size} values, but {p.name} {p.src.shape} needs "
               f"{k * n_mat} ({n_mat} x {k})")
        if p.name == "token_embd.weight":  # llama-quantize ignores this one too
            warn(msg + "; ignored")
            return
        raise QuantizeError(msg)
    p.imatrix, p.imatrix_entry = values, entry


@dataclass
class _Item:
    plan: TensorPlan
    src_bytes: int
    row0: int = 0  # first flattened row
    rows: int = 0
    imatrix: np.ndarray | None = None
    byte0: int = 0  # for copies: byte range in the tensor
    nbytes: int = 0
    calibrated: np.ndarray | None = None  # the rows' bytes, quantized already with a Hessian


def _items(plans: Sequence[TensorPlan], calibrated: Mapping[str, np.ndarray]):
    """Work items in file order: row chunks of quantized tensors, byte chunks of copies.
    calibrated: bytes quantized with a Hessian, by matrix (a 2-D tensor's name, or
    matrix_name(tensor, i) for matrix i of a 3-D one)."""
    for p in plans:
        src = p.src
        if not p.quantized:
            for b in range(0, src.nbytes, COPY_CHUNK_BYTES):
                n = min(COPY_CHUNK_BYTES, src.nbytes - b)
                yield _Item(p, n, byte0=b, nbytes=n)
            continue
        k, rows = src.shape[-1], src.shape[-2]
        step = max(4, CHUNK_WEIGHTS // k // 4 * 4)  # whole 4-row groups
        n_mat = math.prod(src.shape[:-2])
        out_row = p.spec.nbytes // (rows * n_mat)
        for e in range(n_mat):
            im = None if p.imatrix is None else p.imatrix[e * k:(e + 1) * k]
            # calibrated bytes are kept per matrix: an expert no token reached has none
            done = calibrated.get(p.name if len(src.shape) == 2 else matrix_name(p.name, e))
            for r in range(0, rows, step):
                n = min(step, rows - r)
                yield _Item(p, n * src.row_bytes, row0=e * rows + r, rows=n, imatrix=im,
                            calibrated=None if done is None else done[r * out_row:(r + n) * out_row])


def _to_float(raw: RawTensor, buf: np.ndarray, rows: int) -> np.ndarray:
    """Rows of a tensor's bytes as float32 (rows, K)."""
    k = raw.shape[-1]
    fmt = gguf_io.IQ1_TYPES.get(raw.ggml_type)
    if fmt is not None:
        return QuantizedTensor.from_bytes(buf, fmt.name, (rows, k)).dequantize(threads=1)
    part = RawTensor(raw.ggml_type, (rows, k), buf)
    return np.asarray(gguf_io.to_array(part), dtype=np.float32)


@dataclass
class _Done:
    data: np.ndarray
    seconds: float
    err2: float = 0.0  # sum of squared quantization error
    ref2: float = 0.0  # sum of squared source values


def _pread(fd: int, n: int, offset: int, name: str) -> np.ndarray:
    """n bytes of the input file at offset, or GGUFError if the file is shorter."""
    buf = os.pread(fd, n, offset)
    if len(buf) != n:
        raise GGUFError(f"{name}: the input file is shorter than its header says (changed while read?)")
    return np.frombuffer(buf, np.uint8)


def _run(fd: int, item: _Item, errors: bool) -> _Done:
    t0 = time.perf_counter()
    p, src = item.plan, item.plan.src
    if not p.quantized:
        return _Done(_pread(fd, item.nbytes, src.offset + item.byte0, p.name), time.perf_counter() - t0)
    rb = src.row_bytes
    x = _to_float(src, _pread(fd, item.rows * rb, src.offset + item.row0 * rb, p.name), item.rows)
    if not np.isfinite(x).all():
        raise QuantizeError(f"{p.name}: NaN or Inf in the source weights (rows from {item.row0})")
    t = p.target
    if t.iq1 is not None:
        if item.calibrated is not None:
            q = QuantizedTensor.from_bytes(item.calibrated, t.name, (item.rows, x.shape[1]))
        else:
            q = quantize(x, t.name, imatrix=item.imatrix, threads=1)
        out = q.data
        y = q.dequantize(threads=1) if errors else None
    else:
        qt = gguf_io.GGMLQuantizationType(t.ggml_type)
        out = np.ascontiguousarray(gguf_io.gguf.quants.quantize(x, qt)).reshape(-1).view(np.uint8)
        y = gguf_io.gguf.quants.dequantize(out.reshape(item.rows, -1), qt) if errors else None
    done = _Done(out, time.perf_counter() - t0)
    if y is not None:
        x64 = x.astype(np.float64)
        done.err2 = float(np.sum((y - x64) ** 2))
        done.ref2 = float(np.sum(x64 * x64))
    return done


@dataclass
class _Tally:
    tensors: int = 0
    before: int = 0
    after: int = 0
    weights: int = 0
    seconds: float = 0.0
    err2: float = 0.0
    ref2: float = 0.0


@dataclass
class Summary:
    """What a run did: per output type, per tensor, and the fallbacks."""

    output: Path
    wall_seconds: float = 0.0
    threads: int = 1
    by_type: dict[str, _Tally] = field(default_factory=dict)
    tensor_rms: dict[str, float] = field(default_factory=dict)  # relative RMS error per quantized tensor
    fallbacks: list[tuple[str, str, str, str]] = field(default_factory=list)  # name, asked, got, why
    quantized_weights: int = 0
    calibration: Calibration | None = None  # --calibration: the layers quantized with their Hessians

    def table(self) -> str:
        mib = 1 << 20
        rows, total = [], _Tally()
        for ty, t in sorted(self.by_type.items(), key=lambda kv: -kv[1].after):
            rms = f"{math.sqrt(t.err2 / t.ref2):.4f}" if t.ref2 else "-"
            rows.append([ty, t.tensors, f"{t.before / mib:.2f}", f"{t.after / mib:.2f}",
                         f"{8 * t.after / t.weights:.4f}" if t.weights else "-", rms, f"{t.seconds:.2f}"])
            for a in ("tensors", "before", "after", "weights", "seconds"):
                setattr(total, a, getattr(total, a) + getattr(t, a))
        rows.append(["total", total.tensors, f"{total.before / mib:.2f}", f"{total.after / mib:.2f}",
                     f"{8 * total.after / total.weights:.4f}", "", f"{total.seconds:.2f}"])
        out = table(["type", "tensors", "MiB before", "MiB after", "bits/weight", "rel RMS", "thread s"], rows)
        out += (f"\n{self.quantized_weights / 1e6:.1f} M weights quantized in {self.wall_seconds:.1f} s "
                f"({self.quantized_weights / 1e6 / max(self.wall_seconds, 1e-9):.2f} M weights/s, "
                f"{self.threads} threads)")
        groups: dict[tuple[str, str, str], list[str]] = {}
        for name, asked, got, why in self.fallbacks:
            groups.setdefault((asked, got, why), []).append(name)
        for (asked, got, why), names in groups.items():
            out += (f"\nfallback {asked} -> {got}: {len(names)} tensor{'s' if len(names) > 1 else ''} "
                    f"({why}), e.g. {names[0]}")
        if self.calibration is not None:
            c = self.calibration
            q = sum(r.seconds for r in c.layers)
            out += (f"\n\n{len(c.layers)} layers quantized with their input Hessians in {c.seconds:.1f} s "
                    f"({q:.1f} s quantizing, the rest running the model); " + c.table())
        return out


def quantize_model(src_path: str | os.PathLike, dst_path: str | os.PathLike, type: str,
                   imatrix: str | os.PathLike | None = None, tensor_types: Sequence[str] = (),
                   threads: int | None = None, progress: bool | None = None, errors: bool = True,
                   warn: Callable[[str], None] | None = None, calibration: str | None = None, ctx: int = 512,
                   chunks: int | None = None, hessian_options: HessianOptions | None = None) -> Summary:
    """Quantize a GGUF model's block weights to `type`; see the module docstring.

    calibration: a text; the block matrices are then quantized with their input Hessians
    on it (iq1q.models.calibrate: chunks of ctx tokens, at most `chunks` of them,
    hessian_options for iq1q.quantize).
    progress: a tqdm bar on stderr (None: only when stderr is a terminal).
    errors: also measure each quantized tensor's relative RMS error (dequantizes the result).
    warn: called with each warning line (default: printed to stderr)."""
    from tqdm import tqdm

    warn = warn or (lambda m: print(f"iq1q: warning: {m}", file=sys.stderr))
    t_start = time.perf_counter()
    target = parse_target(type)
    if target.iq1 is None:
        raise QuantizeError(f"--type must be one of {', '.join(WEIGHT_FORMATS)}, got {type!r}")
    rules = parse_tensor_types(tensor_types)
    nthreads = num_threads(threads)
    src_path, dst_path = Path(src_path), Path(dst_path)
    if dst_path.exists() and src_path.exists() and os.path.samefile(src_path, dst_path):
        raise QuantizeError(f"the output {dst_path} is the input file")
    im = None
    if imatrix is not None:
        im = load_imatrix(imatrix)
    elif calibration is None:
        warn("no --imatrix: IQ1 quality depends on an importance matrix (llama-imatrix computes one); "
             "quantizing without")
    src = gguf_io.read(src_path)
    plans = plan(src, target, rules, im, warn)

    meta = dict(src.metadata)
    meta["general.file_type"] = np.uint32(gguf_io.FILE_TYPES[target.name])
    meta.setdefault("general.quantization_version", np.uint32(2))  # ggml's GGML_QNT_VERSION
    if im is not None:  # the keys ik_llama.cpp's llama-quantize records
        meta["quantize.imatrix.file"] = str(imatrix)
        if im.datasets:
            meta["quantize.imatrix.dataset"] = im.datasets[0]
        meta["quantize.imatrix.entries_count"] = np.int32(len(im))
        meta["quantize.imatrix.chunks_count"] = np.int32(im.chunks)

    summary = Summary(dst_path, threads=nthreads)
    calibrated: dict[str, np.ndarray] = {}
    if calibration is not None:
        summary.calibration = calibrate(src, {p.name: p for p in plans}, calibration, dst_path.resolve().parent,
                                        ctx=ctx, max_chunks=chunks, options=hessian_options, threads=nthreads,
                                        progress=progress, warn=warn)
        calibrated = summary.calibration.tensors
    for p in plans:
        if p.asked:
            summary.fallbacks.append((p.name, p.asked, gguf_io.type_name(p.out_type).lower(), p.note))
    total_bytes = sum(p.src.nbytes for p in plans)
    items = _items(plans, calibrated)
    fd = os.open(src_path, os.O_RDONLY)
    pool = ThreadPoolExecutor(nthreads, thread_name_prefix="iq1q-quantize")
    pending: deque[tuple[_Item, Future]] = deque()
    bar = tqdm(total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024, desc="quantize",
               disable=(not sys.stderr.isatty()) if progress is None else not progress,
               file=sys.stderr, dynamic_ncols=True, mininterval=0.5)
    tensor_acc: dict[str, list[float]] = {}
    try:
        with gguf_io.Writer(dst_path, [p.spec for p in plans], meta) as w:
            def refill() -> None:
                while len(pending) < 2 * nthreads + 2:
                    it = next(items, None)
                    if it is None:
                        return
                    pending.append((it, pool.submit(_run, fd, it, errors)))

            refill()
            while pending:
                it, fut = pending.popleft()
                done = fut.result()
                refill()
                w.write(done.data)
                p = it.plan
                ty = gguf_io.type_name(p.out_type).lower()
                tally = summary.by_type.setdefault(ty, _Tally())
                tally.seconds += done.seconds
                if p.quantized:
                    tally.err2 += done.err2
                    tally.ref2 += done.ref2
                    acc = tensor_acc.setdefault(p.name, [0.0, 0.0])
                    acc[0] += done.err2
                    acc[1] += done.ref2
                    summary.quantized_weights += it.rows * p.src.shape[-1]
                last = (it.row0 + it.rows) * p.src.row_bytes == p.src.nbytes if p.quantized \
                    else it.byte0 + it.nbytes == p.src.nbytes
                if last or p.src.nbytes == 0:
                    tally.tensors += 1
                    tally.before += p.src.nbytes
                    tally.after += p.spec.nbytes
                    tally.weights += p.src.n_elements
                bar.set_postfix_str(p.name, refresh=False)
                bar.update(it.src_bytes)
            # tensors of no bytes never make an item
            for p in plans:
                if p.src.nbytes == 0:
                    t = summary.by_type.setdefault(gguf_io.type_name(p.out_type).lower(), _Tally())
                    t.tensors += 1
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        bar.close()
        os.close(fd)
    pool.shutdown(wait=True)
    if errors:
        summary.tensor_rms = {n: math.sqrt(e / r) if r else 0.0 for n, (e, r) in tensor_acc.items()}
    summary.wall_seconds = time.perf_counter() - t_start
    return summary


__all__ = ["KEEP", "QuantizeError", "Summary", "Target", "TensorPlan", "parse_target", "parse_tensor_types",
           "plan", "quantize_model"]
