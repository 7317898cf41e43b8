"""livefw: a runtime firmware update daemon on D-Bus."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("livefw")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
