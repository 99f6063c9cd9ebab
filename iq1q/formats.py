"""Format descriptors, read from the native format table (kernels/iq1q_common.h).

The C header is the one place where block sizes and byte sizes are defined;
this module only turns its table into Python objects.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import _ref


# eq=False: one object per format (the table below), so identity is equality, and hashing
# one (as a cache key on every matmul) costs no more than hashing its name
@dataclass(frozen=True, eq=False)
class Format:
    """One weight or activation format, as ggml / ik_llama.cpp define it."""

    name: str
    ggml_type: int
    block_size: int  # values per block (for _r4: per row, 32)
    type_size: int  # bytes per block (for _r4: per row; 4 rows share one interleaved block)
    row_meta_size: int  # bytes per row besides the blocks (the _r4 fp16 row scale)
    rows_per_group: int  # rows quantized together (4 for _r4)
    kind: str  # "weight" or "activation"
    id: int  # index into the native tables

    @property
    def bits_per_weight(self) -> float:
        """Bits per value of the blocks alone; row_size(n) adds the row meta (16 bits per _r4 row)."""
        return 8 * self.type_size / self.block_size

    def row_size(self, n: int) -> int:
        """Bytes of one row of n values."""
        if n <= 0 or n % self.block_size:
            raise ValueError(
                f"row length {n} is not a positive multiple of {self.name}'s block of {self.block_size}"
            )
        return self.row_meta_size + self.type_size * (n // self.block_size)

    def __str__(self) -> str:
        return self.name


_FORMATS: dict[str, Format] = {
    row[0]: Format(*row[:6], kind="weight" if row[6] else "activation", id=i)
    for i, row in enumerate(_ref.format_table())
}
WEIGHT_FORMATS: tuple[str, ...] = tuple(n for n, f in _FORMATS.items() if f.kind == "weight")
ACTIVATION_FORMATS: tuple[str, ...] = tuple(n for n, f in _FORMATS.items() if f.kind == "activation")


def format_info(name: str | Format) -> Format:
    """The descriptor of a format; ValueError listing the valid names for an unknown one."""
    if isinstance(name, Format):
        return name
    try:
        return _FORMATS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown format {name!r}; valid formats: {', '.join(_FORMATS)}") from None


def weight_format(name: str | Format) -> Format:
    fmt = format_info(name)
    if fmt.kind != "weight":
        raise ValueError(f"{fmt.name} is not a weight format; choose one of {', '.join(WEIGHT_FORMATS)}")
    return fmt


def activation_format(name: str | Format) -> Format:
    fmt = format_info(name)
    if fmt.kind != "activation":
        raise ValueError(
            f"{fmt.name} is not an activation format; choose one of {', '.join(ACTIVATION_FORMATS)}"
        )
    return fmt


def auto_activation(weight_format: str) -> str:
    """What ik_llama.cpp pairs a weight with: q8_k128 for _r4, q8_k for plain formats."""
    return "q8_k128" if weight_format.endswith("_r4") else "q8_k"
