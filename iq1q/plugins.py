"""The plugin manager: built-in backends and those of installed distributions.

Third-party distributions declare an entry point in the group "iq1q" whose
module implements the hooks of iq1q.hookspecs. $IQ1Q_LOAD_PLUGINS, when set,
is a comma-separated list of the distributions whose entry points load (an
empty string loads none).

This module also asks the plugins for their backends (registered()) and keeps
the book of the installed plugins that failed, at any stage (broken()); the
registry (iq1q.registry) chooses among the backends.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import warnings
from dataclasses import dataclass

import pluggy

from . import hookspecs
from .backend import Backend, BackendInfo

ENTRY_POINT_GROUP = "iq1q"
ENV_LOAD_PLUGINS = "IQ1Q_LOAD_PLUGINS"

DEFAULT_PLUGINS = (
    "iq1q.builtin_backends.ref",
    "iq1q.builtin_backends.avx2",
    "iq1q.builtin_backends.avx512",
    "iq1q.builtin_backends.neon",
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


class PluginWarning(UserWarning):
    """An installed plugin was skipped (see iq1q.plugins.broken())."""


@dataclass(frozen=True)
class BrokenPlugin:
    """An installed plugin that was skipped, and why."""

    name: str  # its entry point's name
    origin: str  # "<distribution> <version>"
    error: str  # what went wrong: the stage, then the exception


_distributions: dict[str, str] = {}  # entry point name -> "<distribution> <version>"
_failed: list[BrokenPlugin] = []  # entry points that did not load or did not validate
_entry_points_loaded = False


def skipped(name: str, origin: str, stage: str, error: BaseException) -> BrokenPlugin:
    """Warn that a plugin is skipped at `stage`, and describe it for broken(): one broken
    distribution must never make iq1q unusable."""
    broken = BrokenPlugin(name, origin, f"{stage}: {type(error).__name__}: {error}")
    warnings.warn(f"iq1q: skipping plugin {name!r} of distribution {origin}: {broken.error}",
                  PluginWarning, stacklevel=3)
    return broken


def _register_entry_point(ep, label: str) -> None:
    try:
        plugin = ep.load()
    except Exception as e:  # anything its import raises, SyntaxError included
        _failed.append(skipped(ep.name, label, "import failed", e))
        return
    try:
        pm.register(plugin, name=ep.name)
        pm.check_pending()  # a hook implementation no spec knows, e.g. a misspelled name
    except pluggy.PluginValidationError as e:
        if pm.is_registered(plugin):
            pm.unregister(plugin)
        _failed.append(skipped(ep.name, label, "not a valid iq1q plugin", e))
        return
    _distributions[ep.name] = label


def load_entry_points() -> None:
    """Register the installed distributions' plugins (as $IQ1Q_LOAD_PLUGINS allows). Called
    once, as the last step of `import iq1q`, so that a plugin's module sees the whole API."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
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
            _register_entry_point(ep, f"{dist_name} {dist.version}" if dist else dist_name)
    for missing in sorted((names or set()) - seen):
        # a warning, not an error: a typo here must not make iq1q unimportable
        warnings.warn(f"{ENV_LOAD_PLUGINS} names {missing!r}, which is not installed "
                      f"(or declares no {ENTRY_POINT_GROUP!r} entry point)", stacklevel=2)


def origin(plugin: object) -> str:
    """Where a plugin comes from: "builtin", "<distribution> <version>", or
    "runtime" for one registered by code (pm.register)."""
    name = pm.get_name(plugin) or ""
    return "builtin" if name in DEFAULT_PLUGINS else _distributions.get(name, "runtime")


def installed(plugin: object) -> bool:
    """Whether a plugin came from an installed distribution: its failures are reported and
    skipped, while those of built-in and runtime plugins (code you run) raise."""
    return (pm.get_name(plugin) or "") in _distributions


# (plugin set generation, its backends highest priority first, installed plugins whose hook raised)
_registered: tuple[int, list[BackendInfo], list[BrokenPlugin]] | None = None


def registered() -> list[BackendInfo]:
    """Every backend the current plugins register, highest priority first; asked once
    per plugin set (pm.generation). An installed plugin whose hook raises is skipped
    whole; a built-in or runtime one raises."""
    global _registered
    if _registered is not None and _registered[0] == pm.generation:
        return list(_registered[1])
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
    _registered = (pm.generation, result, failures)
    return list(result)


def broken() -> list[BrokenPlugin]:
    """Installed plugins skipped: those that failed to import or validate, then those whose
    iq1q_register_backends hook raised (found when the backends are listed)."""
    registered()
    return _failed + _registered[2]
