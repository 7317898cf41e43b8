"""gnome-firmware (Debian 12, 43.2) under Xvfb against livefwd --fwupd-compat.

Not part of ``make test``: run with ``make test-gui`` (it installs gnome-firmware,
Xvfb, ImageMagick and xdotool and sets LIVEFW_GUI_TEST=1). gnome-firmware reaches
livefwd on a private system-type bus through DBUS_SYSTEM_BUS_ADDRESS, with a private
session bus for GtkApplication; no bus loads service directories. The test checks the
calls gnome-firmware makes (GetDevices, GetRemotes, GetReleases all answered without
an error, so no error dialog covers the window) and takes a screenshot of the window
showing livefw's devices and the PFRU releases; the screenshot is kept in
``$LIVEFW_GUI_SHOTS`` (default: the test's temp dir) for a person to look at.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from livefw.testing import DaemonProcess, PrivateBus

TOOLS = ("gnome-firmware", "Xvfb", "import", "dbus-monitor", "fwupdmgr")

pytestmark = [
    pytest.mark.skipif(
        os.environ.get("LIVEFW_GUI_TEST") != "1",
        reason="GUI test: run `make test-gui` (sets LIVEFW_GUI_TEST=1)",
    ),
    pytest.mark.skipif(
        any(shutil.which(tool) is None for tool in TOOLS),
        reason=f"needs {', '.join(TOOLS)} (`make test-gui` installs them)",
    ),
    pytest.mark.timeout(300),
]

DISPLAY = ":97"
PFRU_GUID = "b2f84b79-7b6e-4e45-885f-3fb9bb185402"


class Processes:
    """Background processes, stopped in reverse order by PID."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, command: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
        with open(log, "wb") as handle:
            proc = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


@pytest.fixture
def processes() -> Iterator[Processes]:
    procs = Processes()
    yield procs
    procs.stop()


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.1)


def test_gnome_firmware_shows_livefw_devices_and_releases(
    daemon_factory: Callable[..., DaemonProcess],
    private_bus: PrivateBus,
    processes: Processes,
    tmp_path: Path,
) -> None:
    shots = Path(os.environ.get("LIVEFW_GUI_SHOTS", str(tmp_path)))
    shots.mkdir(parents=True, exist_ok=True)
    # a trusted directory remote with two PFRU releases, so the device is "supported"
    firmware = tmp_path / "firmware"
    firmware.mkdir()
    (tmp_path / "remotes.d").mkdir()
    (tmp_path / "remotes.d" / "fleet.conf").write_text(
        f"[livefw Remote]\nTitle=Fleet\nPath={firmware}\nTrusted=true\n"
    )
    config = f'[install]\nremotes_dir = "{tmp_path / "remotes.d"}"\n'
    daemon = daemon_factory(extra_args=["--fwupd-compat"], config_text=config)
    private_bus.wait_for_name("org.freedesktop.fwupd", proc=daemon)
    livefw = os.path.join(os.path.dirname(sys.executable), "livefw")
    env = private_bus.env()
    env["LIVEFW_STATE_DIR"] = daemon.state_dir
    for version in ("4", "5"):
        payload = tmp_path / f"pfru-{version}.bin"
        subprocess.run(
            [livefw, "sim", "sample", "pfru/code-injection", "--version", version,
             "-o", str(payload)],
            env=env, check=True, capture_output=True,
        )  # fmt: skip
        subprocess.run(
            [livefw, "build-cabinet", str(payload), "--guid", PFRU_GUID, "--version", version,
             "--id", "org.example.pfru", "--name", f"Runtime fix {version}",
             "--vendor", "Example", "-o", str(firmware / f"pfru-{version}.cab")],
            env=env, check=True, capture_output=True,
        )  # fmt: skip

    session_dir = tmp_path / "session"
    session_dir.mkdir()
    session = PrivateBus(str(session_dir))
    session.start()
    try:
        monitor_log = tmp_path / "monitor.log"
        processes.start(
            ["dbus-monitor", "--address", private_bus.address], monitor_log, dict(os.environ)
        )
        processes.start(
            ["Xvfb", DISPLAY, "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
            tmp_path / "xvfb.log",
            dict(os.environ),
        )
        _wait(lambda: os.path.exists(f"/tmp/.X11-unix/X{DISPLAY[1:]}"), 20, "Xvfb did not start")
        gui_env = dict(env)
        gui_env.update(
            DISPLAY=DISPLAY,
            DBUS_SESSION_BUS_ADDRESS=session.address,
            GTK_A11Y="none",
            NO_AT_BRIDGE="1",
            GSETTINGS_BACKEND="memory",
            GIO_USE_VFS="local",
            LIBGL_ALWAYS_SOFTWARE="1",
            GSK_RENDERER="cairo",
            LANG="C.UTF-8",
            HOME=str(tmp_path),
            XDG_CACHE_HOME=str(tmp_path / "cache"),
        )
        gui = processes.start(["gnome-firmware"], tmp_path / "gnome-firmware.log", gui_env)
        _wait(
            lambda: "member=GetReleases" in monitor_log.read_text(errors="replace"),
            60,
            "gnome-firmware never asked for releases",
        )
        time.sleep(4)  # let it render
        if shutil.which("xdotool"):
            subprocess.run(
                ["xdotool", "search", "--onlyvisible", "--name", ".",
                 "windowmove", "%@", "0", "0", "windowsize", "%@", "1280", "800"],
                env=gui_env, capture_output=True, check=False,
            )  # fmt: skip
            time.sleep(2)
        shot = shots / "gnome-firmware-livefw.png"
        subprocess.run(
            ["import", "-display", DISPLAY, "-window", "root", str(shot)],
            env=gui_env, check=True, capture_output=True,
        )  # fmt: skip
        assert gui.poll() is None, (tmp_path / "gnome-firmware.log").read_text()
    finally:
        session.stop()

    traffic = monitor_log.read_text(errors="replace")
    for member in ("GetDevices", "GetRemotes", "GetReleases"):
        assert f"interface=org.freedesktop.fwupd; member={member}" in traffic, member
    errors = re.findall(r"^error .*error_name=(\S+)", traffic, re.MULTILINE)
    fwupd_errors = [e for e in errors if e.startswith("org.freedesktop.fwupd")]
    # only the LFA/uefi devices without releases may answer NotSupported/NothingToDo
    assert set(fwupd_errors) <= {"org.freedesktop.fwupd.NotSupported",
                                 "org.freedesktop.fwupd.NothingToDo"}, fwupd_errors  # fmt: skip
    colours = subprocess.run(
        ["identify", "-format", "%k", str(shot)], capture_output=True, text=True, check=True
    ).stdout
    assert int(colours) > 50, "the screenshot is blank"
