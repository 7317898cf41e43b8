"""Entry points of installed distributions, read without ``importlib.metadata``.

livefwd finds its plugins through the ``livefw.plugins`` entry-point group at every
start. ``importlib.metadata`` answers that, but importing it pulls in email, zipfile,
csv and friends (tens of ms and several MiB on the daemon's start path; issue 17
item 1). The packaging format is simple: each ``<name>-<version>.dist-info``
directory on ``sys.path`` may hold an ``entry_points.txt`` in INI form
(https://packaging.python.org/en/latest/specifications/entry-points/). This reads
those files the way ``importlib.metadata`` does for this use (the first
distribution of a name on ``sys.path`` wins; lines parsed as its ``Sectioned``
does, not with configparser, which was ~1 ms of import and a parser per file at
every start) and falls back to it when ``sys.path`` has entries that are not plain
directories (zip files, eggs).
"""

from __future__ import annotations

import os
import re
import sys

from livefw.record import Frozen

__all__ = ["EntryPoint", "entry_points"]


class EntryPoint(Frozen):
    """``name = module:attr`` of a group."""

    _FIELDS = ("name", "value")
    name: str
    value: str

    def __init__(self, name: str, value: str) -> None:
        _set = object.__setattr__
        _set(self, "name", name)
        _set(self, "value", value)

    def load(self) -> object:
        """Import the module and return the attribute (``module:attr.sub``)."""
        import importlib

        module_name, _, attrs = self.value.partition(":")
        target: object = importlib.import_module(module_name.strip())
        for attr in filter(None, attrs.strip().split(".")):
            target = getattr(target, attr)
        return target


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def entry_points(group: str) -> list[EntryPoint]:
    """Every entry point of ``group`` of the distributions on ``sys.path``."""
    found: list[EntryPoint] = []
    seen: set[str] = set()
    for entry in sys.path:
        directory = entry or "."
        if not os.path.isdir(directory):
            if os.path.exists(directory):  # a zip or egg: leave it to the stdlib
                return _stdlib_entry_points(group)
            continue
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            continue
        for name in names:
            if not name.endswith(".dist-info"):
                continue
            dist = _normalize(name[: -len(".dist-info")].split("-", 1)[0])
            if dist in seen:
                continue
            seen.add(dist)
            path = os.path.join(directory, name, "entry_points.txt")
            try:
                with open(path, encoding="utf-8") as handle:
                    text = handle.read()
            except (OSError, UnicodeDecodeError):
                continue
            found.extend(_section(text, group))
    return found


def _section(text: str, group: str) -> list[EntryPoint]:
    """The ``name = value`` lines of ``[group]`` (importlib.metadata's ``Sectioned``).

    Lines are stripped; empty lines and ``#`` comments are skipped; ``[x]`` starts
    section x; a line without ``=`` is not an entry point.
    """
    found: list[EntryPoint] = []
    section: str | None = None
    for line in map(str.strip, text.splitlines()):
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line.strip("[]")
        elif section == group and "=" in line:
            name, value = line.split("=", 1)
            found.append(EntryPoint(name.strip(), value.strip()))
    return found


def _stdlib_entry_points(group: str) -> list[EntryPoint]:
    from importlib.metadata import entry_points as stdlib

    return [EntryPoint(e.name, e.value) for e in stdlib(group=group)]
