"""Giving freed heap memory back to the kernel after large transient allocations.

glibc's allocator keeps what Python frees in its heap: only the top of the heap is
returned on its own, and after a large block served by ``mmap`` is freed it raises its
mmap threshold to that size, so the next large transient buffers come from the heap
too. Building a large kept reply (GetManagedObjects at 1,000 devices: the property maps
of ~1,500 objects, each entry marshalled, the 2 MB body joined and copied) leaves
megabytes of free pages between the objects that stay. ``malloc_trim(0)`` returns the
free pages anywhere in the heap (``madvise(MADV_DONTNEED)``), in ~0.2-0.4 ms at that
size (bench/NOTES.md, issue 17 item 2: 1.5-2.7 MiB of RSS at 999 devices).

:func:`trim` is called after start-up and after a large reply body is built, never per
call; where the C library has no ``malloc_trim`` (musl) it does nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["TRIM_AFTER_BYTES", "trim"]

#: a reply body at least this large is followed by :func:`trim` (livefw.bus.prebuilt)
TRIM_AFTER_BYTES = 256 * 1024

_malloc_trim: Callable[[int], Any] | None = None
_looked_up = False


def _lookup() -> Callable[[int], Any] | None:
    try:
        import ctypes  # once, after start-up (livefw.fswatch imports it by then too)

        function: Callable[[int], Any] = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, ImportError):
        return None
    return function


def trim() -> bool:
    """Return the heap's free pages to the kernel; False where that is not possible."""
    global _malloc_trim, _looked_up
    if not _looked_up:
        _malloc_trim, _looked_up = _lookup(), True
    if _malloc_trim is None:
        return False
    _malloc_trim(0)
    return True
