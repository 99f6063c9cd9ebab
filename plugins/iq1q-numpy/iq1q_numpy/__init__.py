"""iq1q-numpy: an iq1q backend named "numpy", in vectorised numpy.

It decodes the ggml bytes of every IQ1 weight format and of q8_0 / q8_k128
activations and multiplies them in float64, so it doubles as an oracle
written apart from iq1q's C code. It registers no activation quantizer: the
built-in ones serve. Priority 10 sits below the SIMD backends and above "ref",
so it serves only when asked for ($IQ1Q_BACKEND=numpy or backend="numpy").
"""

from __future__ import annotations

from functools import partial

import iq1q

from .decode import ACTIVATION_FORMATS, WEIGHT_FORMATS, gemm

__version__ = "0.1.0"

PAIRS = tuple((w, a) for w in WEIGHT_FORMATS for a in ACTIVATION_FORMATS)


@iq1q.hookimpl
def iq1q_register_backends(register):
    register(iq1q.Backend(
        "numpy",
        priority=10,
        description="vectorised numpy, float64 (plugin example; an oracle apart from the C code)",
        kernels={(w, a): partial(gemm, w, a) for w, a in PAIRS},
    ))
