"""The plugin manager: built-in backends and those of installed distributions.

Third-party distributions declare an entry point in the group "iq1q" whose
module implements the hooks of iq1q.hookspecs. $IQ1Q_LOAD_PLUGINS, when set,
is a comma-separated list of the distributions whose entry points load (an
empty string loads none).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import warnings

import pluggy

from . import hookspecs

ENTRY_POINT_GROUP = "iq1q"
ENV_LOAD_PLUGINS = "IQ1Q_LOAD_PLUGINS"

DEFAULT_PLUGINS = (
    "iq1q.builtin_backends.ref",
    "iq1q.builtin_backends.avx2",
    "iq1q.builtin_backends.avx512",
)


class PluginManager(pluggy.PluginManager):
    """pluggy's manager, counting changes so that the registry can cache what
    it resolved until a plugin comes or goes."""

    generation = 0

    def register(self, plugin, name=None):
        self.generation += 1
        return super().register(plugin, name)

    def unregister(self, plugin=None, name=None):
        self.generation += 1
        return super().unregister(plugin, name)


pm = PluginManager("iq1q")
pm.add_hookspecs(hookspecs)

for _name in DEFAULT_PLUGINS:
    pm.register(importlib.import_module(_name), name=_name)


_origins: dict[str, str] = {name: "builtin" for name in DEFAULT_PLUGINS}


def _load_entry_points() -> None:
    wanted = os.environ.get(ENV_LOAD_PLUGINS)
    names = None if wanted is None else {d.strip() for d in wanted.split(",") if d.strip()}
    seen = set()
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist
        dist_name = dist.metadata["Name"] if dist else ep.name
        seen.add(dist_name)
        if names is not None and dist_name not in names:
            continue
        if pm.get_plugin(ep.name) is None:
            pm.register(ep.load(), name=ep.name)
            _origins[ep.name] = f"{dist_name} {dist.version}" if dist else dist_name
    for missing in sorted((names or set()) - seen):
        # a warning, not an error: a typo here must not make iq1q unimportable
        warnings.warn(f"{ENV_LOAD_PLUGINS} names {missing!r}, which is not installed "
                      f"(or declares no {ENTRY_POINT_GROUP!r} entry point)", stacklevel=2)


_load_entry_points()


def origin(plugin: object) -> str:
    """Where a plugin comes from: "builtin", "<distribution> <version>", or
    "runtime" for one registered by code (pm.register)."""
    return _origins.get(pm.get_name(plugin) or "", "runtime")
