"""The runner's exception, in a module of its own so that the modules model.py uses can raise it."""


class ModelError(ValueError):
    """A GGUF model this runner cannot run (architecture, metadata or tensors)."""
