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

# kernel(w, a_bytes, y, K, threads): y = X @ W.T, where y is (M, N) float32, a_bytes the whole
# activation tensor and w the weight tensor's ggml bytes, or what the backend's packer made of
# them; runs on up to `threads` threads (its own split), releases the GIL.
GemmKernel = Callable[[np.ndarray, np.ndarray, np.ndarray, int, int], None]
# quantizer(x, out, threads) -> first row holding NaN/Inf, or -1; x is (M, K) float32.
ActivationQuantizer = Callable[[np.ndarray, np.ndarray, int], int]
# packer(format id, ggml bytes, N, K, threads) -> the weights in the backend's own layout,
# made once per tensor and kept with it.
WeightPacker = Callable[[int, np.ndarray, int, int, int], np.ndarray]


def _always() -> bool:
    return True


@dataclass(frozen=True)
class Backend:
    """What a plugin registers: a named set of kernels and activation quantizers."""

    name: str
    kernels: Mapping[tuple[str, str], GemmKernel] = field(default_factory=dict, repr=False)
    activation_quantizers: Mapping[str, ActivationQuantizer] = field(default_factory=dict, repr=False)
    weight_packers: Mapping[str, WeightPacker] = field(default_factory=dict, repr=False)
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
        for w in self.weight_packers:
            weight_format(w)


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

# (plugin set generation, their backends, installed plugins whose hook raised)
_cache: tuple[int, list[BackendInfo], list] | None = None
# (plugin set generation, backend asked for or $IQ1Q_BACKEND, formats) -> route
_routes: dict = {}


_pm = None  # iq1q.plugins.pm, bound on first use (plugins imports this module)


def _generation() -> int:
    global _pm
    if _pm is None:
        from .plugins import pm as _pm
    return _pm.generation


def backends() -> list[BackendInfo]:
    """All registered backends, highest priority first."""
    global _cache
    from .plugins import installed, origin, pm, skipped

    key = _generation()
    if _cache is not None and _cache[0] == key:
        return list(_cache[1])
    found: dict[str, BackendInfo] = {}
    failures = []
    for impl in pm.hook.iq1q_register_backends.get_hookimpls():
        mine: dict[str, BackendInfo] = {}  # kept only if the whole hook succeeds

        def register(backend: Backend, _plugin=impl.plugin, _mine=mine) -> None:
            if not isinstance(backend, Backend):
                raise TypeError(f"register() takes an iq1q.Backend, got {type(backend).__name__}")
            first = found.get(backend.name) or _mine.get(backend.name)
            if first is not None:
                raise ValueError(f"backend {backend.name!r} is registered twice "
                                 f"({first.origin} and {origin(_plugin)})")
            _mine[backend.name] = BackendInfo(backend, origin(_plugin), bool(backend.is_available()))

        try:
            impl.function(register=register)
        except Exception as e:
            if not installed(impl.plugin):
                raise  # built-in or registered by code: the caller's own bug, loud
            failures.append(skipped(impl.plugin_name, origin(impl.plugin),
                                    "its iq1q_register_backends hook raised", e))
            continue
        found.update(mine)
    result = sorted(found.values(), key=lambda b: (-b.priority, b.name))
    _cache = (key, result, failures)
    _routes.clear()
    return list(result)


def hook_failures() -> list:
    """The installed plugins (iq1q.plugins.BrokenPlugin) whose hook raised when the
    current set of plugins was asked for its backends."""
    backends()
    return list(_cache[2])


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


@dataclass(frozen=True)
class Route:
    """What serves a format pair: the backend's name, its kernel, its packer when
    it repacks weights of this format, and the activation quantizer to use."""

    backend: str
    kernel: GemmKernel
    packer: WeightPacker | None
    quantize: ActivationQuantizer


def _cache_key(backend: str | None, *formats: str) -> tuple:
    # everything a resolution depends on (an os.environ lookup costs ~1 us: one at most)
    return (_generation(), backend or os.environ.get(ENV_BACKEND), *formats)


def route(weight: str, activation: str, backend: str | None = None) -> Route:
    """The Route of a format pair, resolved once per backend set and then cached."""
    key = _cache_key(backend, weight, activation)
    found = _routes.get(key)
    if found is None:
        pair = (weight_format(weight).name, activation_format(activation).name)
        for b in _search_order(backend):
            if pair in b.backend.kernels:
                found = Route(b.name, b.backend.kernels[pair], b.backend.weight_packers.get(pair[0]),
                              activation_quantizer(pair[1], backend)[1])
                break
        else:
            raise LookupError(f"no available backend serves {pair[0]} x {pair[1]}")
        _routes[key] = found
    return found


def kernel(weight: str, activation: str, backend: str | None = None) -> tuple[str, GemmKernel]:
    """(serving backend's name, kernel) for a format pair."""
    r = route(weight, activation, backend)
    return r.backend, r.kernel


def activation_quantizer(fmt: str, backend: str | None = None) -> tuple[str, ActivationQuantizer]:
    """(serving backend's name, quantizer) for an activation format, cached like route()."""
    key = _cache_key(backend, fmt)
    found = _routes.get(key)
    if found is None:
        name = activation_format(fmt).name
        for b in _search_order(backend):
            if name in b.backend.activation_quantizers:
                found = _routes[key] = (b.name, b.backend.activation_quantizers[name])
                break
        else:
            raise LookupError(f"no available backend quantizes activations to {name}")
    return found


def kernel_table(backend: str | None = None) -> dict[tuple[str, str], str]:
    """(weight, activation) -> name of the backend serving it, for every pair."""
    return {pair: kernel(*pair, backend)[0] for pair in ALL_PAIRS}
