"""livefwd's start path: what runs side by side while the daemon starts (issue 17 item 1).

The fwupd-compatible API reports the installed libfwupd's version, which livefwd asks
a child process for (livefw.libfwupd.fwupd_version). Asked when the compat API starts,
the start waited for it after everything else; it is asked first now, in a thread, and
the machine and the engine start meanwhile. Ordering, not time, is checked: the wrapper
records when the probe starts and when the engine starts.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from livefw.testing import PrivateBus

_WRAPPER = r"""
import functools, json, sys, threading, time
out = sys.argv[1]
events = []
lock = threading.Lock()
def record(what):
    with lock:
        events.append([what, time.monotonic()])
        with open(out, "w") as f:
            json.dump(events, f)
import livefw.libfwupd
@functools.cache
def fwupd_version():
    record("probe-start")
    time.sleep(0.5)  # a slow probe: the engine must not wait for it
    record("probe-end")
    return "2.0.20"
livefw.libfwupd.fwupd_version = fwupd_version
import livefw.engine
start = livefw.engine.Engine.start
async def recorded_start(self):
    record("engine-start")
    return await start(self)
livefw.engine.Engine.start = recorded_start
import livefw.bus.compat_connection
original = livefw.bus.compat_connection.CompatConnection.start
async def compat_start(self):
    record("compat-start")
    return await original(self)
livefw.bus.compat_connection.CompatConnection.start = compat_start
sys.argv = ["livefwd", *sys.argv[2:]]
from livefw.launch import main
raise SystemExit(main())
"""


def test_libfwupd_version_is_asked_while_the_engine_starts(
    private_bus: PrivateBus, tmp_path: Path
) -> None:
    out = tmp_path / "events.json"
    state = tmp_path / "state"
    state.mkdir()
    (state / "livefw.conf").write_text("")
    env = private_bus.env()
    env.pop("JOURNAL_STREAM", None)
    command = [
        sys.executable,
        "-c",
        _WRAPPER,
        str(out),
        "--simulate",
        "--fwupd-compat",
        "--state-dir",
        str(state),
        "--bus-address",
        private_bus.address,
        "--config",
        str(state / "livefw.conf"),
    ]
    with open(tmp_path / "livefwd.log", "wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=log, env=env)
    try:
        deadline = time.monotonic() + 90
        while proc.poll() is None and time.monotonic() < deadline:
            if private_bus.name_has_owner("org.freedesktop.fwupd"):
                break
            time.sleep(0.05)
        assert private_bus.name_has_owner("org.freedesktop.fwupd"), (
            tmp_path / "livefwd.log"
        ).read_text(errors="replace")[-3000:]
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    events = [what for what, _ in json.loads(out.read_text())]
    # one probe, started before the engine, and over before the compat API starts
    assert events.count("probe-start") == 1
    assert events.index("probe-start") < events.index("engine-start")
    assert events.index("probe-end") < events.index("compat-start")


async def test_start_up_exports_announce_nothing_a_later_device_is_announced(
    private_bus: PrivateBus, daemon_factory: Any, polkit: Any, cli: Any
) -> None:
    """livefwd's start-up exports send no InterfacesAdded; a hotplugged device does.

    The watcher's rule names no sender (the only kind that could see a signal before the
    name is owned: bus/signals.c ``match_rule_matches``); it is subscribed before
    livefwd starts and reads what arrived once the name is owned and a device is added.
    """
    from livefw.bus.backend import MessageBus, call_bus_driver, disconnect

    watcher = await MessageBus(bus_address=private_bus.address).connect()
    seen: list[tuple[str, str]] = []
    watcher.add_message_handler(
        lambda m: (
            seen.append((m.member, m.body[0]))
            if m.member in ("InterfacesAdded", "InterfacesRemoved")
            else None
        )
    )
    await call_bus_driver(watcher, "AddMatch", "s", ["type='signal',path='/org/livefw/Daemon1'"])
    try:
        daemon_factory()  # returns once org.livefw.Daemon1 is owned
        listed = json.loads(cli("fwctl", "list", "--json").stdout)
        assert listed, "the minimal machine has fwctl devices exported"
        cli("sim", "add", "fwctl", "type=mlx5", "pci=0000:09:00.0")
        for _ in range(250):
            if seen:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        assert [member for member, _path in seen] == ["InterfacesAdded"], seen
        assert seen[0][1].startswith("/org/livefw/Daemon1/devices/")
    finally:
        disconnect(watcher)
