"""The training methods, registered once: each is one module of ``mwa_cli.adapters.methods`` (its options,
presets, learning rates and injection per backbone family), found there when this module loads; ``register``
adds one from elsewhere (a plugin, a test).

``apply_method(model, name, options)`` validates the options, injects the method into the model's family and
returns an ``AppliedMethod`` (optimiser groups, parameter accounting). Nothing here imports torch: the command
line uses the registry for its help and for validation before any model is built.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Any

from mwa_cli.adapters import methods as _methods_pkg
from mwa_cli.adapters.applied import AppliedMethod
from mwa_cli.adapters.methods.base import AdapterMethod, Family, Method, MethodConfig
from mwa_cli.errors import ConfigError

_REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add a method; refused when its name is taken or its declaration is incomplete."""
    name = getattr(method, "name", "")
    problems = []
    if not name or name in _REGISTRY:
        problems.append(f"the name {name!r} is {'taken' if name else 'empty'}")
    if not getattr(method, "display_name", ""):
        problems.append("no display_name")
    config = getattr(method, "Config", None)
    if not (isinstance(config, type) and issubclass(config, MethodConfig) and dataclasses.is_dataclass(config)):
        problems.append("Config is not a MethodConfig dataclass")
    else:
        fields = {f.name for f in dataclasses.fields(config)}
        for preset, values in method.presets.items():
            if set(values) - fields:
                problems.append(f"preset {preset} sets unknown options {sorted(set(values) - fields)}")
        if isinstance(method, AdapterMethod) and set(AdapterMethod.REQUIRED_OPTIONS) - fields:
            problems.append(f"an adapter method's Config needs {', '.join(AdapterMethod.REQUIRED_OPTIONS)}")
    if "default" not in getattr(method, "learning_rates", {}):
        problems.append('learning_rates has no "default" rate')
    if problems:
        raise ValueError(f"cannot register method {name!r}: {'; '.join(problems)}")
    _REGISTRY[name] = method
    return method


def unregister(name: str) -> None:
    """Remove a method registered with ``register`` (tests clean up after themselves)."""
    _REGISTRY.pop(name, None)


def names() -> list[str]:
    """The registered methods, in help order."""
    return [m.name for m in sorted(_REGISTRY.values(), key=lambda m: (m.order, m.name))]


def get(name: str) -> Method:
    """The method called ``name``; an unknown name is a ``ConfigError`` listing the known ones."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown method {name!r}", hint=f"choose one of: {', '.join(names())}")
    return _REGISTRY[name]


def display_name(name: str) -> str:
    """How reports name a method; a run of a method not registered here keeps its own name."""
    method = _REGISTRY.get(name)
    return method.display_name if method is not None else name


def resolve_options(name: str, options: dict[str, Any] | None) -> dict[str, Any]:
    """Defaults, then a preset (``options["preset"]``), then the given options; unknown keys and ill-typed
    values refused. Needs no model: ``mwa train`` calls it before building one."""
    method = get(name)
    return method.record(*method.configure(options))


def recommended_lr(backbone: str, method: str, *, templated: bool = False) -> float:
    """The default peak learning rate of ``method`` on ``backbone`` (the method module's ``learning_rates``), or,
    for captions that are mostly repeats (class-folder templates), its ``templated_learning_rates`` where
    measured."""
    m = get(method)
    if templated and backbone in m.templated_learning_rates:
        return m.templated_learning_rates[backbone]
    return m.learning_rates.get(backbone, m.learning_rates["default"])


def family_of(model) -> Family:
    """The backbone family of ``model``, from the flag its class sets (``blip2``, ``two_tower``; else BEiT-3)."""
    if getattr(model, "blip2", False):
        from mwa_cli.adapters.blip2 import FAMILY
    elif getattr(model, "two_tower", False):
        from mwa_cli.adapters.two_tower import FAMILY
    else:
        from mwa_cli.adapters.beit3 import FAMILY
    return FAMILY


def apply_method(model, name: str, options: dict[str, Any] | None = None) -> AppliedMethod:
    """Inject method ``name`` into ``model`` and set what trains. The model must not carry a method yet."""
    method = get(name)
    config, preset = method.configure(options)
    family = family_of(model)
    if not method.supports(family):
        usable = [n for n in names() if _REGISTRY[n].supports(family)]
        raise ConfigError(f"method {name} is not available for {family.title} backbones",
                          hint=f"choose one of: {', '.join(usable)}")
    applied = method.apply(model, config, family)
    applied.options = method.record(config, preset)
    return applied


def _load_builtin_methods() -> None:
    """Register every module of ``mwa_cli.adapters.methods`` that defines ``METHOD``."""
    for info in pkgutil.iter_modules(_methods_pkg.__path__):
        module = importlib.import_module(f"{_methods_pkg.__name__}.{info.name}")
        if hasattr(module, "METHOD"):
            register(module.METHOD)


_load_builtin_methods()
