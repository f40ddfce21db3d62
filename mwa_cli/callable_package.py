"""A package that can also be called, for the two API names that are also package names (`mwa_cli.train`,
`mwa_cli.search`): Python sets a package as an attribute of its parent when it is imported, so a function of the
same name in ``mwa_cli/__init__.py`` would be replaced by the package the first time any of its modules loads.
The package's class becomes a ``ModuleType`` subclass with ``__call__`` (module ``__class__`` assignment, the
data model's documented way to customise a module)."""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any


def make_callable(package: str, target: str) -> None:
    """Calling the package `package` calls `target` ("module:function", imported at the first call)."""
    module_name, function = target.split(":")

    class CallablePackage(types.ModuleType):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return getattr(importlib.import_module(module_name), function)(*args, **kwargs)

    CallablePackage.__call__.__doc__ = f"Calls {module_name}.{function} (see its docstring)."
    sys.modules[package].__class__ = CallablePackage
