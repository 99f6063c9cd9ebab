"""iq1q: IQ1 (1.5-1.75 bit) LLM weight matrices on the CPU.

Weights iq1_s, iq1_m, iq1_s_r4 and iq1_m_r4, byte-compatible with
ik_llama.cpp and GGUF, multiplied against activations quantized on the fly to
q8_0, q8_1, q8_k or q8_k128 by pluggable native backends.
"""

__version__ = "0.1.0"

from . import cpu, plugins
from .backend import Backend, BackendInfo
from .formats import ACTIVATION_FORMATS, WEIGHT_FORMATS, Format, format_info
from .gemm import matmul, quantize_activations
from .hessian import HessianOptions
from .hazards import Fp16OverflowError, Fp16OverflowWarning, Fp16Report, check_activations
from .hookspecs import hookimpl
from .registry import backends, get_backend, kernel_table
from .tensors import QuantizedActivations, QuantizedTensor, dequantize, quantize

plugins.load_entry_points()  # last: an installed plugin's module may use any of the above


def __getattr__(name: str):
    # iq1q.gguf_io (an alias of iq1q.models.gguf_io) needs the optional gguf package:
    # imported on first use, not with iq1q
    if name == "gguf_io":
        import importlib

        return importlib.import_module(".gguf_io", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ACTIVATION_FORMATS", "WEIGHT_FORMATS", "Backend", "BackendInfo", "Format",
    "Fp16OverflowError", "Fp16OverflowWarning", "Fp16Report", "HessianOptions", "QuantizedActivations",
    "QuantizedTensor", "backends", "check_activations", "cpu", "dequantize", "format_info",
    "get_backend", "hookimpl", "kernel_table", "matmul", "plugins", "quantize",
    "quantize_activations",
]
