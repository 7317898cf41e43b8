"""livefwd's entry point (``livefwd``, ``python -m livefw``): the daemon's start path.

Start-up is exec until the bus name is owned, and every module imported before that
counts (issue 17 item 1; tests/integration/test_import_budget.py keeps the set). The
one import this module keeps off the path is rich: structlog imports it, when it is
installed, only to format tracebacks on a terminal, and it costs ~45 ms and ~5 MiB.
The CLI (``livefw``) keeps its rich output; the daemon's console renderer falls back
to plain tracebacks. ``None`` in :data:`sys.modules` makes ``import rich`` raise
ImportError, which structlog handles (a documented import-system rule).
"""

from __future__ import annotations

import sys


def main() -> int:
    """Run livefwd (see livefw.daemon.main)."""
    if "rich" not in sys.modules:
        sys.modules["rich"] = None  # type: ignore[assignment]
    from livefw.daemon import main as daemon_main

    return daemon_main()
