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

import json
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from guikit import (
    Processes,
    fit_window,
    fleet_daemon,
    gui_marks,
    gui_session,
    livefw_bin,
    screenshot,
    shots_dir,
    wait_for,
)

from livefw.testing import DaemonProcess, PrivateBus

TOOLS = ("gnome-firmware", "Xvfb", "import", "dbus-monitor", "fwupdmgr")

pytestmark = gui_marks(TOOLS, timeout=300)

DISPLAY = ":97"


def _screenshot_gnome_firmware(
    processes: Processes,
    private_bus: PrivateBus,
    env: dict[str, str],
    tmp_path: Path,
    member: str,
    settle: float,
    shot: Path,
) -> str:
    """Start gnome-firmware, wait for its ``member`` call, let it render ``settle``
    seconds, take ``shot``; the system bus traffic it caused (dbus-monitor's text)."""
    with gui_session(processes, private_bus.address, env, DISPLAY, tmp_path) as (
        gui_environment,
        monitor_log,
    ):
        gui = processes.start(["gnome-firmware"], tmp_path / "gnome-firmware.log", gui_environment)
        wait_for(
            lambda: f"member={member}" in monitor_log.read_text(errors="replace"),
            60,
            f"gnome-firmware never called {member}",
        )
        time.sleep(settle)  # let it render
        fit_window(gui_environment)
        screenshot(DISPLAY, shot, gui_environment)
        assert gui.poll() is None, (tmp_path / "gnome-firmware.log").read_text()
    return monitor_log.read_text(errors="replace")


def test_gnome_firmware_shows_livefw_devices_and_releases(
    daemon_factory: Callable[..., DaemonProcess],
    private_bus: PrivateBus,
    processes: Processes,
    tmp_path: Path,
) -> None:
    shots = shots_dir(tmp_path)
    # a trusted directory remote with two PFRU releases, so the device is "supported"
    env, _ = fleet_daemon(daemon_factory, private_bus, tmp_path, ("4", "5"))
    traffic = _screenshot_gnome_firmware(
        processes, private_bus, env, tmp_path, "GetReleases", 4, shots / "gnome-firmware-livefw.png"
    )
    for member in ("GetDevices", "GetRemotes", "GetReleases"):
        assert f"interface=org.freedesktop.fwupd; member={member}" in traffic, member
    errors = re.findall(r"^error .*error_name=(\S+)", traffic, re.MULTILINE)
    fwupd_errors = [e for e in errors if e.startswith("org.freedesktop.fwupd")]
    # only the LFA/uefi devices without releases may answer NotSupported/NothingToDo
    assert set(fwupd_errors) <= {"org.freedesktop.fwupd.NotSupported",
                                 "org.freedesktop.fwupd.NothingToDo"}, fwupd_errors  # fmt: skip


def test_gnome_firmware_shows_a_staged_pfru_update_waits_for_activation(
    daemon_factory: Callable[..., DaemonProcess],
    private_bus: PrivateBus,
    processes: Processes,
    tmp_path: Path,
) -> None:
    """Issue 18 item 9: gnome-firmware has no Activate button; the device says what to do."""
    shots = shots_dir(tmp_path)
    env, firmware = fleet_daemon(daemon_factory, private_bus, tmp_path, ("4",))
    subprocess.run(
        [livefw_bin(), "install", str(firmware / "pfru-4.cab")],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    traffic = _screenshot_gnome_firmware(
        processes, private_bus, env, tmp_path, "GetDevices", 6, shots / "gnome-firmware-staged.png"
    )
    # what the window shows for the selected (first) device, in the reply it got:
    # the Update Error row and the greyed Upgrade button (updatable is cleared)
    assert (
        "Firmware 4 is staged and waits for activation: run `fwupdmgr activate` or "
        "`livefw activate`" in traffic
    )
    assert "to switch to it without a reboot" in traffic  # the device's UpdateMessage


#: gnome-firmware 43.2's Upgrade button of the first release of a device without an
#: Update Error row, then its confirmation dialog's Upgrade (window fit to 1280x800)
UPGRADE_BUTTON = ("1074", "416")
CONFIRM_BUTTON = ("637", "105")


def test_gnome_firmware_upgrade_button_installs_from_a_directory_remote(
    daemon_factory: Callable[..., DaemonProcess],
    private_bus: PrivateBus,
    processes: Processes,
    tmp_path: Path,
) -> None:
    """gnome-firmware's Upgrade takes GetReleases' release as fwupd publishes it (the
    remote's RemoteId, file:///folder/x.cab): libfwupd's install_release looks the
    remote up, opens the file itself and calls Install (docs/compat.md, "Directory
    remotes: Remote ID")."""
    shots = shots_dir(tmp_path)
    env, _ = fleet_daemon(daemon_factory, private_bus, tmp_path, ("4",))
    log = tmp_path / "gnome-firmware.log"
    with gui_session(processes, private_bus.address, env, DISPLAY, tmp_path) as (
        gui_environment,
        monitor_log,
    ):
        gui = processes.start(["gnome-firmware"], log, gui_environment)
        wait_for(
            lambda: "member=GetReleases" in monitor_log.read_text(errors="replace"),
            60,
            "gnome-firmware never called GetReleases",
        )
        time.sleep(4)  # let it render
        fit_window(gui_environment)
        for button in (UPGRADE_BUTTON, CONFIRM_BUTTON):
            subprocess.run(
                ["xdotool", "mousemove", *button, "click", "1"],
                env=gui_environment, check=True, capture_output=True,
            )  # fmt: skip
            time.sleep(3)
        wait_for(
            lambda: "member=Install" in monitor_log.read_text(errors="replace"),
            60,
            "gnome-firmware never called Install: " + log.read_text(errors="replace")[-2000:],
        )

        def staged() -> bool:
            out = subprocess.run(
                [livefw_bin(), "get-devices", "--json"],
                env=env, capture_output=True, text=True, check=False,
            ).stdout  # fmt: skip
            devices = {d["Name"]: d for d in json.loads(out or "[]")}
            pfru = devices.get("Platform firmware runtime code injection", {})
            return bool(pfru.get("UpdateState") == "pending")

        wait_for(staged, 60, "the PFRU device was not staged")
        time.sleep(3)
        screenshot(DISPLAY, shots / "gnome-firmware-upgraded.png", gui_environment)
        assert gui.poll() is None, log.read_text(errors="replace")[-3000:]
    traffic = monitor_log.read_text(errors="replace")
    # install_release looked the remote up by the release's RemoteId
    between = traffic[traffic.index("member=GetReleases") : traffic.index("member=Install")]
    assert "member=GetRemotes" in between, "install_release did not look the remote up"
