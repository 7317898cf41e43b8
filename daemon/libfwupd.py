"""The installed libfwupd's version, which the fwupd-compatible API reports.

Its own module, not :mod:`livefw.releases`: livefwd asks for it while it starts
(livefw.daemon), and releases (cabinets, remotes, signatures) is needed only once a
client asks for releases or installs (issue 17 item 1, tests/integration/
test_import_budget.py).
"""

from __future__ import annotations

import functools
import subprocess
import sys

__all__ = ["fwupd_version"]

_FWUPD_VERSION_PROBE = """
import ctypes
for soname in ("libfwupd.so.3", "libfwupd.so.2"):
    try:
        function = ctypes.CDLL(soname).fwupd_version_string
    except (OSError, AttributeError):
        continue
    function.restype = ctypes.c_char_p
    print((function() or b"").decode())
    break
"""


@functools.cache
def fwupd_version() -> str:
    """The installed libfwupd's version (``fwupd_version_string()``), or ``""``.

    Asked in a child process, so libfwupd and GLib are never loaded into livefwd.
    """
    try:
        result = subprocess.run(
            [sys.executable, "-c", _FWUPD_VERSION_PROBE],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    version = result.stdout.strip()
    return version if result.returncode == 0 and len(version) < 64 else ""
