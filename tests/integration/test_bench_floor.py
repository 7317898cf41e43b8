"""bench/floor_daemon.py, the start-up floor of ``make bench`` and bench/start_ab.py.

The floor is only a floor if it does what a daemon must before it counts as started:
own its name and answer a call, then stop on SIGTERM. It must stay free of livefw.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from livefw.testing import PrivateBus, busctl

_FLOOR = Path(__file__).resolve().parents[2] / "bench" / "floor_daemon.py"


def test_floor_daemon_owns_the_name_answers_and_stops(private_bus: PrivateBus) -> None:
    env = private_bus.env()
    env.pop("JOURNAL_STREAM", None)
    # a wrapper that fails the start if the floor imported any of livefw
    wrapper = (
        "import runpy, sys\n"
        f"sys.argv = [{str(_FLOOR)!r}, '--bus-address', {private_bus.address!r}]\n"
        "try:\n"
        "    runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "finally:\n"
        "    assert not [m for m in sys.modules if m.split('.')[0] == 'livefw'], 'livefw'\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", wrapper],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        private_bus.wait_for_name("org.freedesktop.fwupd", timeout=60)
        reply = busctl(
            private_bus.address,
            "call",
            "org.freedesktop.fwupd",
            "/",
            "org.freedesktop.fwupd",
            "GetDevices",
        )
        assert reply.stdout.strip() == "aa{sv} 0"
        proc.terminate()
        out, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out.decode(errors="replace")
    assert b"floor_ready" in out
    assert not private_bus.name_has_owner("org.freedesktop.fwupd")
