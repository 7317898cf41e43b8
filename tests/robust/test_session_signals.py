"""Issue 13 item 8: another uid's live-update sessions do not leak through signals.

Session objects (``/org/livefw/Daemon1/liveupdate/sessions/<kernel name>``, the kernel
name carrying the owner's uid and the session's name) are hidden from other users'
calls; their PropertiesChanged must be too. Two sessions, root's and nobody's, come
back after a simulated kexec; each owner retrieves its own (State: incoming ->
retrieved, a PropertiesChanged on the session's path). A watcher running as nobody,
subscribed to every PropertiesChanged on a bus with the shipped policy, must see its
own session's signal and not root's; a watcher running as root sees both.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from hostile_client import HostileClient
from nobody_env import hostile

from livefw.testing import NOBODY, Cli, as_user, busctl

BUS = "org.livefw.Daemon1"
LIVEUPDATE = "org.livefw.Daemon1.LiveUpdate"
SESSIONS = "/org/livefw/Daemon1/liveupdate/sessions/"


def _sessions(cli: Cli, uid: int | None) -> dict[str, str]:
    rows = json.loads(cli("liveupdate", "list", "--json", uid=uid).stdout)
    return {row["name"]: row["path"] for row in rows}


def test_session_signals_reach_only_the_owner_and_root(bus_dir: str, state_dir: Path) -> None:
    with hostile(bus_dir, state_dir) as h:
        cli = Cli(h.bus, str(state_dir))
        h.polkit.set_allowed(["org.livefw.daemon1.liveupdate"])
        cli("liveupdate", "create", "rootsecret")
        cli("liveupdate", "create", "mine", uid=NOBODY)
        cli("sim", "kexec")
        assert h.daemon.wait_exit(30) == 0
        h.daemon.start()
        root_path = _sessions(cli, None)["rootsecret"]
        own_path = _sessions(cli, NOBODY)["mine"]
        assert root_path.startswith(SESSIONS)
        assert own_path.startswith(SESSIONS)
        devices = json.loads(cli("get-devices", "--json").stdout)
        (orchestrator,) = [d["Id"] for d in devices if d["Plugin"] == "liveupdate"]
        device = f"/org/livefw/Daemon1/devices/{orchestrator}"
        with HostileClient(h.bus) as stranger, HostileClient(h.bus, uid=None) as root:
            args = ("call", BUS, device, LIVEUPDATE, "RetrieveSession", "sa{sv}")
            busctl(h.bus.address, *args, "rootsecret", "0")
            retrieve = as_user(NOBODY, ["busctl", f"--address={h.bus.address}", *args, "mine", "0"])
            subprocess.run(retrieve, check=True, capture_output=True, timeout=60)
            seen_by_root = set(root.command("watch", 30, root_path, own_path)["paths"])
            # the stranger's copy of its own session's signal was sent with root's;
            # a broadcast of root's would have come before it
            seen_by_stranger = set(stranger.command("watch", 30, own_path)["paths"])
        assert {root_path, own_path} <= seen_by_root, seen_by_root
        assert own_path in seen_by_stranger, seen_by_stranger
        assert root_path not in seen_by_stranger, "root's session leaked to nobody"
        assert not any("rootsecret" in path for path in seen_by_stranger)
