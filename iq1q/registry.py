"""Backends and the kernels they serve, keyed by (weight, activation) format.

One registry decides which backend serves a pair; native code never chooses.
Backends come from plugins (iq1q.plugins); the choice honours $IQ1Q_BACKEND.
A backend that lacks a pair falls back, pair by pair, to the next available
backend by priority; "ref" serves every pair, so every pair always works.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from .formats import ACTIVATION_FORMATS, WEIGHT_FORMATS, activation_format, weight_format

ENV_BACKEND = "IQ1Q_BACKEND"

# kernel(w_bytes, a_bytes, y, K, row0, row1): y[:, row0:row1] = X @ W[row0:row1].T, where y is
# (M, N) float32 and the bytes hold whole tensors; releases the GIL, safe on disjoint row ranges.
GemmKernel = Callable[[np.ndarray, np.ndarray, np.ndarray, int, int, int], None]
# quantizer(x, out, row0, row1) -> first row holding NaN/Inf, or -1; x is (M, K) float32.
ActivationQuantizer = Callable[[np.ndarray, np.ndarray, int, int], int]


def _always() -> bool:
    return True


@dataclass(frozen=True)
class Backend:
    """What a plugin registers: a named set of kernels and activation quantizers."""

    name: str
    kernels: Mapping[tuple[str, str], GemmKernel] = field(default_factory=dict, repr=False)
    activation_quantizers: Mapping[str, ActivationQuantizer] = field(default_factory=dict, repr=False)
    priority: int = 0
    is_available: Callable[[], bool] = field(default=_always, repr=False)  # e.g. a CPU feature check
    description: str = ""

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name or self.name == "auto":
            raise ValueError(f"a backend needs a name other than 'auto', got {self.name!r}")
        for w, a in self.kernels:
            weight_format(w), activation_format(a)
        for a in self.activation_quantizers:
            activation_format(a)


@dataclass(frozen=True)
class BackendInfo:
    """A registered backend as iq1q.backends() lists it."""

    backend: Backend
    origin: str  # "builtin", "<distribution> <version>" or "runtime"
    available: bool

    @property
    def name(self) -> str:
        return self.backend.name

    @property
    def priority(self) -> int:
        return self.backend.priority

    @property
    def description(self) -> str:
        return self.backend.description

    @property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        return tuple(p for p in ALL_PAIRS if p in self.backend.kernels)

    def __repr__(self) -> str:
        return (f"<backend {self.name!r} priority={self.priority} origin={self.origin!r} "
                f"available={self.available} pairs={len(self.pairs)}>")


ALL_PAIRS = tuple((w, a) for w in WEIGHT_FORMATS for a in ACTIVATION_FORMATS)

# (registered plugin objects, their backends); holding the plugins keeps their ids unique
_cache: tuple[frozenset, list[BackendInfo]] | None = None


def backends() -> list[BackendInfo]:
    """All registered backends, highest priority first."""
    global _cache
    from .plugins import origin, pm

    key = frozenset(pm.get_plugins())
    if _cache is not None and _cache[0] == key:
        return list(_cache[1])
    found: dict[str, BackendInfo] = {}
    for impl in pm.hook.iq1q_register_backends.get_hookimpls():

        def register(backend: Backend, _plugin=impl.plugin) -> None:
            if not isinstance(backend, Backend):
                raise TypeError(f"register() takes an iq1q.Backend, got {type(backend).__name__}")
            if backend.name in found:
                raise ValueError(f"backend {backend.name!r} is registered twice "
                                 f"({found[backend.name].origin} and {origin(_plugin)})")
            found[backend.name] = BackendInfo(backend, origin(_plugin), bool(backend.is_available()))

        impl.function(register=register)
    result = sorted(found.values(), key=lambda b: (-b.priority, b.name))
    _cache = (key, result)
    return list(result)


def _chosen(name: str | None) -> BackendInfo | None:
    """The backend asked for (argument, else $IQ1Q_BACKEND), or None for auto."""
    if name is None:
        name = os.environ.get(ENV_BACKEND, "").strip() or "auto"
    if name == "auto":
        return None
    every = backends()
    for b in every:
        if b.name == name:
            if not b.available:
                ok = ", ".join(x.name for x in every if x.available)
                raise ValueError(f"backend {name!r} is not available on this machine; "
                                 f"available: auto, {ok}")
            return b
    raise ValueError(f"unknown backend {name!r}; choose auto or one of: "
                     f"{', '.join(b.name for b in every)}")


def get_backend(name: str | None = None) -> str:
    """The name of the backend in use (the highest-priority available one for auto)."""
    b = _chosen(name)
    return b.name if b else next(x.name for x in backends() if x.available)


def _search_order(name: str | None) -> list[BackendInfo]:
    first = _chosen(name)
    rest = [b for b in backends() if b.available and b is not first]
    return ([first] if first else []) + rest


def kernel(weight: str, activation: str, backend: str | None = None) -> tuple[str, GemmKernel]:
    """(serving backend's name, kernel) for a format pair."""
    pair = (weight_format(weight).name, activation_format(activation).name)
    for b in _search_order(backend):
        if pair in b.backend.kernels:
            return b.name, b.backend.kernels[pair]
    raise LookupError(f"no available backend serves {pair[0]} x {pair[1]}")


def activation_quantizer(fmt: str, backend: str | None = None) -> tuple[str, ActivationQuantizer]:
    name = activation_format(fmt).name
    for b in _search_order(backend):
        if name in b.backend.activation_quantizers:
            return b.name, b.backend.activation_quantizers[name]
    raise LookupError(f"no available backend quantizes activations to {name}")


def kernel_table(backend: str | None = None) -> dict[tuple[str, str], str]:
    """(weight, activation) -> name of the backend serving it, for every pair."""
    return {pair: kernel(*pair, backend)[0] for pair in ALL_PAIRS}
