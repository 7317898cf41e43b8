"""The kernel boundary: providers, uAPI definitions and the simulated machine."""

from livefw.errors import KernelError
from livefw.kernel.provider import (
    BOOT_ID_PATH,
    Handle,
    KernelProvider,
    MountEntry,
    OpenFlags,
    UEvent,
    normalize,
)

__all__ = [
    "BOOT_ID_PATH",
    "Handle",
    "KernelError",
    "KernelProvider",
    "MountEntry",
    "OpenFlags",
    "UEvent",
    "normalize",
]
