"""livefw: a runtime firmware update daemon on D-Bus.

``livefw.__version__`` is read on first use from the installed distribution's
metadata file, without ``importlib.metadata``: that module pulls in email, zipfile
and csv parsing (tens of ms and several MiB) that the daemon's start path does not
otherwise need (issue 17 item 1). ``importlib.metadata`` remains the fallback.
"""

from __future__ import annotations

import os
import sys

__all__ = ["__version__"]

_version: str | None = None


def _read_version() -> str:
    """The version in ``livefw-<version>.dist-info/METADATA`` on ``sys.path``."""
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            if not (name.startswith("livefw-") and name.endswith(".dist-info")):
                continue
            try:
                with open(os.path.join(entry, name, "METADATA"), encoding="utf-8") as handle:
                    for line in handle:
                        if line.startswith("Version:"):
                            return line.split(":", 1)[1].strip()
                        if not line.strip():
                            break
            except OSError:
                continue
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("livefw")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0.0.0+unknown"


def __getattr__(name: str) -> str:
    global _version
    if name == "__version__":
        if _version is None:
            _version = _read_version()
        return _version
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
