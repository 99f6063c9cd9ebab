"""Backends and the kernels they serve, keyed by (weight, activation) format.

One registry decides which backend serves a pair; native code never chooses.
Backends come from plugins (iq1q.plugins); the choice honours $IQ1Q_BACKEND.
A backend that lacks a pair falls back, pair by pair, to the next available
backend by priority; "ref" serves every pair, so every pair always works.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from . import plugins
from .backend import (ALL_PAIRS, STORED_TYPES, ActivationQuantizer, BackendInfo, GemmKernel, StoredNLL, StoredProduct,
                      WeightPacker)
from .formats import Format, activation_format, weight_format

ENV_BACKEND = "IQ1Q_BACKEND"

# (backend asked for or $IQ1Q_BACKEND, formats) -> route, for the plugin set of _routes_generation
_routes: dict = {}
_routes_generation = -1


def backends() -> list[BackendInfo]:
    """All registered backends, highest priority first."""
    return plugins.registered()


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
    """What serves a format pair: the backend's name, its kernel, the activation quantizer to
    use, and the backend's packer of the weight format, when it has one (for prepare)."""

    backend: str
    kernel: GemmKernel
    quantize: ActivationQuantizer
    packer: WeightPacker | None


def _cache_key(backend: str | None, *formats: str | Format) -> tuple:
    """Everything a resolution depends on; the cache is emptied when a plugin comes or goes."""
    global _routes_generation
    if _routes_generation != plugins.pm.generation:
        _routes.clear()
        _routes_generation = plugins.pm.generation
    # one os.environ lookup at most: it costs ~1 us, a tenth of a small GEMV's Python side
    return (backend or os.environ.get(ENV_BACKEND), *formats)


def route(weight: str | Format, activation: str | Format, backend: str | None = None) -> Route:
    """The Route of a format pair, resolved once per backend set and then cached."""
    key = _cache_key(backend, weight, activation)
    found = _routes.get(key)
    if found is None:
        pair = (weight_format(weight).name, activation_format(activation).name)
        for b in _search_order(backend):
            if pair in b.backend.kernels:
                found = Route(b.name, b.backend.kernels[pair], activation_quantizer(pair[1], backend)[1],
                              b.backend.weight_packers.get(pair[0]))
                break
        else:
            raise LookupError(f"no available backend serves {pair[0]} x {pair[1]}")
        _routes[key] = found
    return found


def kernel(weight: str | Format, activation: str | Format, backend: str | None = None) -> tuple[str, GemmKernel]:
    """(serving backend's name, kernel) for a format pair."""
    r = route(weight, activation, backend)
    return r.backend, r.kernel


def activation_quantizer(fmt: str | Format, backend: str | None = None) -> tuple[str, ActivationQuantizer]:
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


def stored_product(ggml_type: str, backend: str | None = None) -> tuple[str, StoredProduct] | None:
    """(serving backend's name, product) for weights stored as ggml_type (a key of
    STORED_TYPES), or None when no available backend multiplies them: the caller then
    dequantizes them to float."""
    return _stored("stored_products", ggml_type, backend)


def stored_nll(ggml_type: str, backend: str | None = None) -> tuple[str, StoredNLL] | None:
    """(serving backend's name, nll) for an output head stored as ggml_type, or None when no
    available backend computes the log-sum-exp in its own kernel: the caller then reduces
    the products' logits itself."""
    return _stored("stored_nlls", ggml_type, backend)


def _stored(what: str, ggml_type: str, backend: str | None):
    if ggml_type not in STORED_TYPES:
        raise ValueError(f"unknown stored type {ggml_type!r}; known: {', '.join(STORED_TYPES)}")
    key = _cache_key(backend, what, ggml_type)
    if key not in _routes:
        _routes[key] = next(((b.name, getattr(b.backend, what)[ggml_type]) for b in _search_order(backend)
                             if ggml_type in getattr(b.backend, what)), None)
    return _routes[key]


def kernel_table(backend: str | None = None) -> dict[tuple[str, str], str]:
    """(weight, activation) -> name of the backend serving it, for every pair."""
    return {pair: kernel(*pair, backend)[0] for pair in ALL_PAIRS}
