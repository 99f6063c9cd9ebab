"""CPU features: what kernels/cpu.h detects, minus what the user masks.

A feature is an instruction set a kernel backend may need: ``avx``, ``avx2``,
``fma``, ``f16c``, ``avxvnni``, ``avx512f``, ``avx512bw``, ``avx512vl``,
``avx512dq``, ``avx512vnni``, ``avx512vbmi``, ``neon``, ``dotprod``, ``i8mm``.
Every name is known on every architecture (those of another one are simply
absent), so ``has("avx2")`` is a plain False on aarch64. The architecture and
the OS verdicts are not features: the x86 ones are already folded into them
(an AVX feature counts only if the OS saves AVX state), and ``os_support()``
shows them.

Masking works like numpy's ``NPY_DISABLE_CPU_FEATURES``: the features named in
``IQ1Q_DISABLE_CPU_FEATURES`` (comma separated, any case) count as absent
everywhere, so backends that need them report themselves unavailable. Masking
is per name, with no implied features: backends list every feature they use.
"""

from __future__ import annotations

import os
import warnings
from functools import cache

from . import _cpu

ENV_DISABLE = "IQ1Q_DISABLE_CPU_FEATURES"

_NOT_FEATURES = frozenset({"x86_64", "aarch64", "os_avx", "os_avx512"})


@cache
def _probe() -> dict[str, bool]:
    # The CPU and the OS's register-state setting do not change while we run.
    return _cpu.features()


@cache
def known() -> tuple[str, ...]:
    """Every feature name, in detection order (the same on every architecture)."""
    return tuple(name for name in _probe() if name not in _NOT_FEATURES)


def detected() -> dict[str, bool]:
    """Feature name -> whether this CPU and its OS support it, ignoring the mask."""
    probe = _probe()
    return {name: probe[name] for name in known()}


def os_support() -> dict[str, bool]:
    """On x86-64, whether the OS saves the AVX and the AVX-512 register state (XCR0):
    ``{"avx": ..., "avx512": ...}``. Empty elsewhere, where there is no such verdict."""
    probe = _probe()
    return {"avx": probe["os_avx"], "avx512": probe["os_avx512"]} if probe["x86_64"] else {}


def masked() -> frozenset[str]:
    """The known features named in $IQ1Q_DISABLE_CPU_FEATURES, read now.

    Unknown names are ignored with a warning, not an error: a typo in the
    environment must not make ``import iq1q`` fail.
    """
    names = {n.strip().lower() for n in os.environ.get(ENV_DISABLE, "").split(",")} - {""}
    unknown = names.difference(known())
    if unknown:
        warnings.warn(f"{ENV_DISABLE}: ignoring unknown CPU feature(s) {', '.join(sorted(unknown))}; "
                      f"known: {', '.join(known())}")
    return frozenset(names - unknown)


def features() -> dict[str, bool]:
    """Feature name -> usable: detected and not masked."""
    off = masked()
    return {name: on and name not in off for name, on in detected().items()}


def has(*names: str) -> bool:
    """Whether every named feature is detected and not masked.

    Raises ValueError for a name that is not a feature, so that a misspelt
    requirement in a backend fails loudly instead of disabling it silently.
    """
    unknown = [n for n in names if n not in known()]
    if unknown:
        raise ValueError(f"unknown CPU feature(s) {', '.join(unknown)}; known: {', '.join(known())}")
    usable = features()
    return all(usable[n] for n in names)
