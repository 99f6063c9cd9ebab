"""Importance matrices in llama.cpp's two file formats, and which entry a tensor uses.

* legacy binary (`.dat`, what ik_llama.cpp's llama-imatrix writes): int32 entry count;
  per entry int32 name length, the name, int32 ncall, int32 nval, nval float32 values
  (already scaled by ncall); then optionally int32 chunk count, int32 length and the
  dataset name. The importance is value / ncall.
* GGUF (mainline llama.cpp's default): per entry `<name>.in_sum2` (F32, one row of K
  sums of squares per matrix) and `<name>.counts` (F32, one count per matrix); the
  importance is in_sum2 / count, and 1 for a matrix whose count is 0.

Both are computed in float32 exactly as llama-quantize does, so the weights come out
byte-identical to its output.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

GGUF_MAGIC = b"GGUF"


class ImatrixError(ValueError):
    """An importance-matrix file that cannot be used."""


@dataclass
class Imatrix:
    """Importance per tensor name: float32, K values per matrix (n_expert * K for experts)."""

    entries: dict[str, np.ndarray]
    path: Path | None = None
    datasets: list[str] = field(default_factory=list)
    chunks: int = 0
    format: str = ""  # "legacy" or "gguf"

    def __len__(self) -> int:
        return len(self.entries)

    def lookup(self, tensor: str) -> tuple[str, np.ndarray] | None:
        """(entry name, values) for a weight tensor, or None.

        As ik_llama.cpp's llama-quantize does: the tensor's own entry, else its sibling
        that sees the same input. ik fuses ffn_gate with ffn_up and records only ffn_up;
        merged gate_up expert tensors and split ones stand in for each other; MLA's
        attn_v_b and attn_kv_b see the same activations."""
        for name in _candidates(tensor):
            values = self.entries.get(name)
            if values is not None:
                return name, values
        return None


def _candidates(tensor: str) -> list[str]:
    names = [tensor]
    if m := re.search(r"ffn_(up|gate)_exps\.weight", tensor):
        base = tensor[:m.start()]
        names += [base + "ffn_gate_up_exps.weight", base + "ffn_up_exps.weight"]
    elif (i := tensor.find("ffn_gate_up_exps.weight")) >= 0:
        names.append(tensor[:i] + "ffn_up_exps.weight")
    elif (i := tensor.find("ffn_gate.weight")) >= 0:
        names.append(tensor[:i] + "ffn_up.weight")
    else:
        for a, b in ((".attn_v_b.weight", ".attn_kv_b.weight"), (".attn_kv_b.weight", ".attn_v_b.weight")):
            if (i := tensor.find(a)) >= 0:
                names.append(tensor[:i] + b)
                break
    return names


def _check(path: Path, name: str, values: np.ndarray) -> np.ndarray:
    if not np.isfinite(values).all():
        raise ImatrixError(f"{path}: entry {name!r} has NaN or Inf values")
    if (values < 0).any():
        raise ImatrixError(f"{path}: entry {name!r} has negative values")
    return values


def _load_legacy(path: Path, buf: bytes) -> Imatrix:
    # No library reads this format (the gguf package only knows GGUF), so it is read
    # here with numpy: a flat sequence of little-endian int32 / float32 fields.
    pos = 0

    def take(n: int, what: str) -> bytes:
        nonlocal pos
        if pos + n > len(buf):
            raise ImatrixError(f"{path}: truncated legacy imatrix file (reading {what} at byte {pos})")
        b = buf[pos:pos + n]
        pos += n
        return b

    def i32(what: str) -> int:
        return int(np.frombuffer(take(4, what), "<i4")[0])

    n_entries = i32("the entry count")
    if n_entries < 1:
        raise ImatrixError(f"{path}: not an imatrix file (entry count {n_entries})")
    entries: dict[str, np.ndarray] = {}
    for i in range(n_entries):
        length = i32(f"entry {i}'s name length")
        if not 0 < length < 4096:
            raise ImatrixError(f"{path}: not an imatrix file (entry {i} has a name length of {length})")
        try:
            name = take(length, f"entry {i}'s name").decode("utf-8")
        except UnicodeDecodeError:
            raise ImatrixError(f"{path}: not an imatrix file (entry {i}'s name is not UTF-8)") from None
        ncall = i32(f"{name}'s call count")
        nval = i32(f"{name}'s value count")
        if nval < 1:
            raise ImatrixError(f"{path}: entry {name!r} has {nval} values")
        values = np.frombuffer(take(4 * nval, f"{name}'s values"), "<f4").astype(np.float32)
        if ncall > 0:
            values = values / np.float32(ncall)  # float32 division, as llama-quantize
        entries[name] = _check(path, name, values)
    chunks, datasets = 0, []
    if pos < len(buf):  # newer files end with the chunk count and the dataset's name
        chunks = i32("the chunk count")
        n = i32("the dataset name's length")
        datasets = [take(n, "the dataset name").decode("utf-8", "replace")]
    return Imatrix(entries, path, datasets, chunks, "legacy")


def _load_gguf(path: Path) -> Imatrix:
    from . import gguf_io

    f = gguf_io.read(path)
    sums, counts = {}, {}
    for name in f.raw:
        if name.endswith(".in_sum2"):
            sums[name[:-len(".in_sum2")]] = name
        elif name.endswith(".counts"):
            counts[name[:-len(".counts")]] = name
    if not sums:
        raise ImatrixError(f"{path}: GGUF file holds no imatrix entries (no *.in_sum2 tensors)")
    entries: dict[str, np.ndarray] = {}
    for base in sorted(sums):
        if base not in counts:
            raise ImatrixError(f"{path}: entry {base!r} has in_sum2 but no counts")
        s = np.asarray(f.tensors[sums[base]], dtype=np.float32)
        c = np.asarray(f.tensors[counts[base]], dtype=np.float32).reshape(-1)
        s = s.reshape(c.size, -1) if s.size % max(c.size, 1) == 0 else None
        if s is None or c.size == 0:
            raise ImatrixError(f"{path}: entry {base!r}: in_sum2 does not hold one row per count")
        with np.errstate(divide="ignore", invalid="ignore"):
            v = np.where(c[:, None] > 0, s / np.where(c > 0, c, 1)[:, None], np.float32(1))
        entries[base] = _check(path, base, v.astype(np.float32).reshape(-1))
    ds = f.metadata.get("imatrix.datasets", [])
    chunks = f.metadata.get("imatrix.chunk_count", 0)
    return Imatrix(entries, path, [str(d) for d in ds] if isinstance(ds, list) else [str(ds)],
                   int(chunks), "gguf")


def load(path: str | os.PathLike) -> Imatrix:
    """Read an importance matrix file of either format (told apart by the GGUF magic)."""
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(4)
        if head == GGUF_MAGIC:
            return _load_gguf(path)
        buf = head + fh.read()
    return _load_legacy(path, buf)


# ---------------------------------------------------------------------------
# computing and writing (`iq1q imatrix`)


class Collector:
    """A forward hook (iq1q.models.model) that sums x^2 per input column of every linear layer of
    the transformer blocks, and counts the rows (tokens), as llama-imatrix does: the output
    head and other tensors outside `blk.` are left out (llama-imatrix without --process-output).

    The matrices of a 3-D tensor (experts, MLA heads) reach the hook as `tensor[i]`
    (iq1q.models.moe.matrix_name), each with the rows routed to it; their statistics are kept
    apart and stored as the tensor's one entry with a count per matrix, as llama-imatrix
    stores experts."""

    def __init__(self) -> None:
        self.sums: dict[str, np.ndarray] = {}
        self.counts: dict[str, int] = {}

    def __call__(self, name: str, x: np.ndarray) -> None:
        if not name.startswith("blk."):
            return
        x2 = np.square(x, dtype=np.float64).sum(axis=0)  # float64: thousands of tokens per column
        if name in self.sums:
            self.sums[name] += x2
            self.counts[name] += x.shape[0]
        else:
            self.sums[name], self.counts[name] = x2, x.shape[0]

    def tensors(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """tensor name -> (sums of squares (n_matrix, K) float64, row counts (n_matrix,)),
        the matrices of a 3-D tensor gathered in order."""
        from .moe import split_matrix_name

        parts: dict[str, dict[int, str]] = {}
        for name in self.sums:
            base, i = split_matrix_name(name)
            parts.setdefault(base, {})[-1 if i is None else i] = name
        out = {}
        for base, by_index in sorted(parts.items()):
            if -1 in by_index:
                if len(by_index) > 1:
                    raise ImatrixError(f"{base!r} was seen both whole and as matrices")
                order = [by_index[-1]]
            else:
                n = max(by_index) + 1
                missing = [i for i in range(n) if i not in by_index]
                if missing:
                    raise ImatrixError(f"{base!r}: matrices {missing[:4]} were never seen")
                order = [by_index[i] for i in range(n)]
            out[base] = (np.stack([self.sums[k] for k in order]), np.array([self.counts[k] for k in order]))
        return out

    def imatrix(self, dataset: str = "", chunks: int = 0) -> Imatrix:
        """The importance per tensor (n_matrix * K values): mean x^2, 1 for a matrix no row reached."""
        entries = {}
        for name, (sums, counts) in self.tensors().items():
            with np.errstate(divide="ignore", invalid="ignore"):
                v = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], 1.0)
            entries[name] = v.astype(np.float32).reshape(-1)
        return Imatrix(entries, None, [dataset] if dataset else [], chunks, "")


def write_gguf(path: str | os.PathLike, collector: Collector, dataset: str, chunks: int, chunk_size: int) -> None:
    """Mainline llama.cpp's GGUF imatrix: per entry `<name>.in_sum2` (n_matrix, K) float32 sums
    of squares and `<name>.counts` (n_matrix, 1) float32 row counts (n_matrix = 1 but for
    experts); general.type = imatrix."""
    from . import gguf_io

    tensors = {}
    for name, (sums, counts) in collector.tensors().items():
        tensors[name + ".in_sum2"] = sums.astype(np.float32)
        tensors[name + ".counts"] = counts.astype(np.float32).reshape(-1, 1)
    meta = {"general.type": "imatrix", "imatrix.datasets": [dataset],
            "imatrix.chunk_count": np.uint32(chunks), "imatrix.chunk_size": np.uint32(chunk_size)}
    gguf_io.write(path, tensors, meta)


def write_legacy(path: str | os.PathLike, collector: Collector, dataset: str, chunks: int) -> None:
    """llama-imatrix's legacy .dat (what ik_llama.cpp's tools read): values = mean x^2 * ncall
    with ncall = the row count here, summed over an entry's matrices (readers divide by ncall,
    whatever it counts; llama-imatrix counts calls); a matrix that no row reached gets
    importance 1, as llama-imatrix stores such experts; then the chunk count and the dataset's name."""
    entries = collector.tensors()
    with open(path, "wb") as f:
        f.write(struct.pack("<i", len(entries)))
        for name, (sums, counts) in entries.items():
            b = name.encode()
            n = int(counts.sum())
            with np.errstate(divide="ignore", invalid="ignore"):
                v = np.where(counts[:, None] > 0, sums * (n / np.maximum(counts, 1))[:, None], float(n))
            v = v.astype("<f4").reshape(-1)
            f.write(struct.pack("<i", len(b)) + b + struct.pack("<ii", n, v.size) + v.tobytes())
        d = dataset.encode()
        f.write(struct.pack("<ii", chunks, len(d)) + d)


def compute(model_path: str | os.PathLike, text: str, ctx: int = 512, max_chunks: int | None = None,
            threads: int | None = None, progress: bool | None = None) -> tuple[Collector, int]:
    """Run the model over text in llama-imatrix's chunks (ctx tokens, the first replaced by
    BOS; iq1q.models.chunks.chunks with llama_compatible) and collect every block linear
    layer's input. Returns the collector and the number of chunks."""
    import sys

    from tqdm import tqdm

    from . import gguf_io
    from .chunks import calibration_chunks
    from .model import from_gguf
    from .tokenizer import Tokenizer

    f = gguf_io.read(model_path)
    tok = Tokenizer(f.metadata)
    try:
        parts = calibration_chunks(tok.encode(text, add_bos=False), ctx, tok.bos_id, max_chunks)
    except ValueError as e:
        raise ImatrixError(str(e)) from None
    model = from_gguf(f, threads=threads)
    col = Collector()
    for c in tqdm(parts, desc="imatrix", unit="chunk", leave=False, file=sys.stderr,
                  disable=not (sys.stderr.isatty() if progress is None else progress)):
        model.hidden(c.tokens, col)  # the output head is not collected, so not computed
    return col, len(parts)
