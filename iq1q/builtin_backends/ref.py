"""The portable C reference backend: every pair, on every CPU."""

from functools import partial

from .. import _ref
from ..formats import ACTIVATION_FORMATS, WEIGHT_FORMATS, format_info
from ..hookspecs import hookimpl
from ..registry import Backend


@hookimpl
def iq1q_register_backends(register):
    ids = {name: format_info(name).id for name in WEIGHT_FORMATS + ACTIVATION_FORMATS}
    register(Backend(
        name="ref",
        priority=0,
        description="portable scalar C, the reference every backend is checked against",
        kernels={(w, a): partial(_ref.gemm, ids[w], ids[a])
                 for w in WEIGHT_FORMATS for a in ACTIVATION_FORMATS},
        activation_quantizers={a: partial(_ref.quantize_activations, ids[a])
                               for a in ACTIVATION_FORMATS},
    ))
