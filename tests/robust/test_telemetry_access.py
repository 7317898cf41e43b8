"""Who may read the PFRT telemetry log through livefwd (issue 13.11).

The kernel keeps ``/dev/acpi_pfr_telemetry0`` root-only. livefwd reads it as root, so
it must not hand the log to every local user: ``GetDataInfo``, ``Read`` and
``ReadSince`` need the polkit action ``org.livefw.daemon1.telemetry-read`` (the
shipped policy allows the active local session and asks for an administrator
elsewhere), and without polkit only the uids in ``[auth] fallback_uids`` (root) may
read. The caller is a real unprivileged uid (``nobody`` through ``setpriv``) on a
private system-type bus that runs the shipped bus policy and nothing else, plus the
rule that lets the polkit mock own its name.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from livefw.testing import NOBODY, SYSTEM_DEFAULTS, DaemonProcess, PolkitMock, PrivateBus, as_user

REPO = Path(__file__).resolve().parents[2]
BUS = "org.livefw.Daemon1"
TELEMETRY = "org.livefw.Daemon1.Telemetry"
CODE_ID = hashlib.sha1(b"pfru:acpi_pfr_update0/code-injection").hexdigest()
CODE_PATH = f"/org/livefw/Daemon1/devices/{CODE_ID}"
READ_ACTION = "org.livefw.daemon1.telemetry-read"
AUTH_FAILED = "org.livefw.Daemon1.Error.AuthFailed"

#: polkitd's own policy, reduced: root owns the name, everyone may call it.
POLKIT_POLICY = """<!DOCTYPE busconfig PUBLIC
 "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <policy user="root"><allow own="org.freedesktop.PolicyKit1"/></policy>
  <policy context="default">
    <allow send_destination="org.freedesktop.PolicyKit1"/>
  </policy>
</busconfig>
"""


@pytest.fixture
def shipped_bus() -> Iterator[PrivateBus]:
    """A system-type bus with deny-by-default rules and the shipped livefw policy."""
    for tool in ("dbus-daemon", "busctl", "setpriv"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    if os.geteuid() != 0:
        pytest.skip("a client under another uid (setpriv) needs root")
    directory = tempfile.mkdtemp(prefix="livefw-telemetry-bus.")
    files = []
    for name, text in (("defaults.conf", SYSTEM_DEFAULTS), ("polkit.conf", POLKIT_POLICY)):
        path = Path(directory) / name
        path.write_text(text)
        files.append(str(path))
    files.append(str(REPO / "dbus" / "org.livefw.Daemon1.conf"))
    bus = PrivateBus(directory, policy_files=files, default_policy=False).start()
    yield bus
    bus.stop()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def telemetry_daemon(shipped_bus: PrivateBus, tmp_path: Path) -> Iterator[DaemonProcess]:
    daemon = DaemonProcess(shipped_bus, str(tmp_path / "state")).start()
    yield daemon
    daemon.stop()


def _busctl(
    bus: PrivateBus, *args: str, uid: int | None = None
) -> subprocess.CompletedProcess[str]:
    command = ["busctl", f"--address={bus.address}", *args]
    if uid is not None:
        command = as_user(uid, command)
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def _read(bus: PrivateBus, member: str, uid: int | None) -> subprocess.CompletedProcess[str]:
    extra = ["t", "0"] if member == "ReadSince" else []
    return _busctl(bus, "--json=short", "call", BUS, CODE_PATH, TELEMETRY, member, *extra, uid=uid)


def _refused(result: subprocess.CompletedProcess[str]) -> bool:
    return result.returncode != 0 and (
        AUTH_FAILED in result.stderr or "not authorized" in result.stderr.lower()
    )


def test_an_unprivileged_user_needs_telemetry_read(
    shipped_bus: PrivateBus, telemetry_daemon: DaemonProcess
) -> None:
    mock = PolkitMock(shipped_bus).start()
    try:
        mock.set_allowed([])
        for member in ("Read", "ReadSince", "GetDataInfo"):
            result = _read(shipped_bus, member, NOBODY)
            assert _refused(result), (member, result.returncode, result.stdout, result.stderr)
        # the cached level stays public: it is no log content
        level = _busctl(
            shipped_bus, "get-property", BUS, CODE_PATH, TELEMETRY, "LogLevel", uid=NOBODY
        )
        assert level.returncode == 0, level.stderr
        # the log itself never left the daemon
        assert "telemetry-read" in telemetry_daemon.log()

        mock.set_allowed([READ_ACTION])
        result = _read(shipped_bus, "Read", NOBODY)
        assert result.returncode == 0, result.stderr + telemetry_daemon.log()
        data = bytes(json.loads(result.stdout)["data"][0])
        assert b"runtime update service ready" in data
    finally:
        mock.stop()


def test_without_polkit_only_root_reads_telemetry(
    shipped_bus: PrivateBus, telemetry_daemon: DaemonProcess
) -> None:
    assert not shipped_bus.name_has_owner(PolkitMock.NAME)
    result = _read(shipped_bus, "Read", NOBODY)
    assert _refused(result), (result.returncode, result.stderr)
    assert "fallback_uids" in result.stderr
    root = _read(shipped_bus, "Read", None)
    assert root.returncode == 0, root.stderr + telemetry_daemon.log()
