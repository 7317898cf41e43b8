"""Modules imported on first attribute access (issue 17 item 1).

livefwd's start time is mostly imports; a module that only an install or a refresh
needs (a cabinet parser, an XML parser) is bound to a name at import time and
imported when first used. ``importlib.util.LazyLoader`` does the same at a lower
level but executes the module on any attribute access of its half-built module
object and is awkward with submodules; this is a plain proxy.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

__all__ = ["lazy_module"]


class _LazyModule:
    __slots__ = ("_module", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        module = self._module
        if module is None:
            module = self._module = importlib.import_module(self._name)
        return getattr(module, attr)

    def __repr__(self) -> str:
        state = "loaded" if self._module is not None else "not loaded yet"
        return f"<lazy module {self._name!r} ({state})>"


def lazy_module(name: str) -> Any:
    """A stand-in for module ``name`` that imports it on first attribute access."""
    return _LazyModule(name)
