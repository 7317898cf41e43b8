"""livefwd's entry point (``livefwd``, ``python -m livefw``): the daemon's start path.

Start-up is exec until the bus name is owned, and every module imported before that
counts (issue 17 item 1; tests/integration/test_import_budget.py keeps the set). The
one import this module keeps off the path is rich: structlog imports it, when it is
installed, only to format tracebacks on a terminal, and it costs ~45 ms and ~5 MiB.
The CLI (``livefw``) keeps its rich output; the daemon's console renderer falls back
to plain tracebacks. ``None`` in :data:`sys.modules` makes ``import rich`` raise
ImportError, which structlog handles (a documented import-system rule).

asyncio is imported here with ``ssl`` blocked the same way: asyncio imports ssl only
to offer TLS transports (``try: import ssl except ImportError: ssl = None`` in
asyncio.sslproto, base_events and selector_events), livefwd never opens one, and ssl
with _ssl (libssl, and ~20 IntEnums converted from its constants at import) was
~10 ms and ~1 MiB of a 3-device start (bench/NOTES.md, issue 17). The block is
lifted right after, so a later ``import ssl`` elsewhere still works; only asyncio's
own TLS support stays off in livefwd.

The cyclic garbage collector is off from here until the daemon serves
(livefw.daemon.Daemon.run then freezes what start-up built and turns it back on).
Start-up allocates the modules, the devices and their property maps, all of which
live as long as the process; with the collector on, every full collection walked all
of them again while they were built (at 10,000 devices 11 full collections, 3-6 s of
a 7 s start) and, later, while a large reply was built (~1 s per full collection).
Start-up leaves about 2,000 unreachable objects whatever the device count (imports);
they stay frozen rather than paying a full collection at the end of start-up.
"""

from __future__ import annotations

import gc
import sys


def main() -> int:
    """Run livefwd (see livefw.daemon.main)."""
    gc.disable()
    if "rich" not in sys.modules:
        sys.modules["rich"] = None  # type: ignore[assignment]
    if "ssl" not in sys.modules and "asyncio" not in sys.modules:
        sys.modules["ssl"] = None  # type: ignore[assignment]
        try:
            import asyncio  # noqa: F401 (imported without TLS support, see above)
        finally:
            del sys.modules["ssl"]
    from livefw.daemon import main as daemon_main

    return daemon_main()
