"""The portable C reference backend: every pair, on every CPU."""

from .. import _ref
from ..backend import Backend
from ..hookspecs import hookimpl
from .native import activation_quantizers, kernels


@hookimpl
def iq1q_register_backends(register):
    register(Backend(
        name="ref",
        priority=0,
        description="portable scalar C, the reference every backend is checked against",
        kernels=kernels(_ref),
        activation_quantizers=activation_quantizers(_ref),
    ))
