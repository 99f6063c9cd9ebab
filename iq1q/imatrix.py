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

