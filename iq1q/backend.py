"""What a plugin registers: a Backend, a named set of kernels keyed by format pair."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from .formats import ACTIVATION_FORMATS, WEIGHT_FORMATS, activation_format, weight_format

# kernel(w, a_bytes, y, K, threads[, prepared]): y = X @ W.T, where y is (M, N) float32, a_bytes
# the whole activation tensor and w the weight tensor's ggml bytes; runs on up to `threads`
# threads (its own split), releases the GIL. A kernel keeps nothing between calls (per-call
# scratch is its business). `prepared` comes only to a backend with weight_packers, and only
# for a tensor the user prepared (QuantizedTensor.prepare): what the packer made of w.
GemmKernel = Callable[..., None]
# quantizer(x, out, threads) -> first row holding NaN/Inf, or -1; x is (M, K) float32.
ActivationQuantizer = Callable[[np.ndarray, np.ndarray, int], int]
# packer(format id, ggml bytes, N, K, threads) -> the weights in the backend's own layout, made
# when the user prepares a tensor and kept with it until released.
WeightPacker = Callable[[int, np.ndarray, int, int, int], np.ndarray]
# product(w, a_bytes, y, K, threads): y = X @ W.T as GemmKernel, for W stored in a ggml type
# other than IQ1 (w its ggml bytes), X quantized to STORED_TYPES[type].
StoredProduct = Callable[[np.ndarray, np.ndarray, np.ndarray, int, int], None]
# nll(w, a_bytes, targets, out, K, threads): out[m] = logsumexp(z[m]) - z[m, targets[m]] in
# float64 for the logits z = X @ W.T of a StoredProduct, without keeping z (a model's output
# head under perplexity); targets int64 (M,), out float64 (M,).
StoredNLL = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int, int], None]

# ggml types of the other weights a model file carries (a token embedding, an output head)
# that backends may multiply in their own bytes, and the activation format each one takes
STORED_TYPES: dict[str, str] = {"Q8_0": "q8_0"}


def _always() -> bool:
    return True


@dataclass(frozen=True)
class Backend:
    """What a plugin registers: a named set of kernels and activation quantizers."""

    name: str
    kernels: Mapping[tuple[str, str], GemmKernel] = field(default_factory=dict, repr=False)
    activation_quantizers: Mapping[str, ActivationQuantizer] = field(default_factory=dict, repr=False)
    weight_packers: Mapping[str, WeightPacker] = field(default_factory=dict, repr=False)
    stored_products: Mapping[str, StoredProduct] = field(default_factory=dict, repr=False)
    stored_nlls: Mapping[str, StoredNLL] = field(default_factory=dict, repr=False)
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
        for what, types in (("stored_products", self.stored_products), ("stored_nlls", self.stored_nlls)):
            for t in types:
                if t not in STORED_TYPES:
                    raise ValueError(f"{what}: {t!r} is not one of {', '.join(STORED_TYPES)}")


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
