"""The hooks a backend plugin implements."""

import pluggy

hookspec = pluggy.HookspecMarker("iq1q")
hookimpl = pluggy.HookimplMarker("iq1q")


@hookspec
def iq1q_register_backends(register):
    """Register backends: call register(iq1q.Backend(...)) once for each."""
