"""gnome-software (Debian 12, 43.5) under Xvfb: its Update button on a directory remote.

Not part of ``make test``: ``make test-gui`` runs it (LIVEFW_GUI_TEST=1).

gnome-software does not use libfwupd's ``install_release``: it downloads the
release's first location into its own cache with libfwupd's downloader and then
calls ``Install`` with that file. Against fwupd 2.0.20 a directory remote's release
is ``file:///folder/x.cab``; libfwupd's downloader asks GLib whether the (empty) host
is reachable first, so the download fails with "network is unreachable" and the
button stays "Installing" (shown with the fwupd daemon itself: docs/compat.md).
livefwd publishes ``file://localhost/folder/x.cab`` and no RemoteId instead: the
download is a local copy, and gnome-software hands the cabinet to Install.

The test clicks Update, checks that the Install call came, that the PFRU device is
staged and that gnome-software says the update waits for activation (a dialog with
the staged release's UpdateMessage, issue 18's "Up to Date" gap), and keeps two
screenshots in ``$LIVEFW_GUI_SHOTS``.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from guikit import (
    Processes,
    fleet_daemon,
    gui_marks,
    gui_session,
    livefw_bin,
    screenshot,
    shots_dir,
    wait_for,
)

from livefw.testing import DaemonProcess, PrivateBus

TOOLS = ("gnome-software", "Xvfb", "import", "xdotool", "dbus-monitor")

pytestmark = gui_marks(TOOLS, timeout=400)

DISPLAY = ":96"
PFRU_NAME = "Platform firmware runtime code injection"
#: the Update button of the first row of "Device Firmware" in gnome-software 43.5's
#: updates page (its default 1050x600 window at 0,0 on a 1280x800 screen)
UPDATE_BUTTON = ("751", "167")


def visible_windows(pid: int, env: dict[str, str]) -> list[str]:
    """The X ids of the visible top-level windows of process ``pid``."""
    result = subprocess.run(
        ["xdotool", "search", "--onlyvisible", "--pid", str(pid)],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    return result.stdout.split()


def test_gnome_software_updates_from_a_directory_remote(
    daemon_factory: Callable[..., DaemonProcess],
    private_bus: PrivateBus,
    processes: Processes,
    tmp_path: Path,
) -> None:
    shots = shots_dir(tmp_path)
    env, _ = fleet_daemon(daemon_factory, private_bus, tmp_path, ("4",))
    gs_log = tmp_path / "gnome-software.log"
    with gui_session(processes, private_bus.address, env, DISPLAY, tmp_path) as (
        gui_environment,
        monitor_log,
    ):
        gui = processes.start(
            ["gnome-software", "--mode=updates", "--verbose"], gs_log, gui_environment
        )
        wait_for(
            lambda: (
                "Runtime fix 4" in gs_log.read_text(errors="replace")
                or "org.example.pfru" in gs_log.read_text(errors="replace")
            ),
            120,
            "gnome-software never listed the PFRU update",
        )
        time.sleep(8)  # let it render the updates page
        screenshot(DISPLAY, shots / "gnome-software-update.png", gui_environment)
        subprocess.run(
            ["xdotool", "mousemove", *UPDATE_BUTTON, "click", "1"],
            env=gui_environment, check=True, capture_output=True,
        )  # fmt: skip
        wait_for(
            lambda: "member=Install" in monitor_log.read_text(errors="replace"),
            60,
            "gnome-software never called Install:\n"
            + "\n".join(
                line
                for line in gs_log.read_text(errors="replace").splitlines()
                if "fwupd" in line.lower() or "error" in line.lower()
            )[-3000:],
        )

        def staged() -> bool:
            out = subprocess.run(
                [livefw_bin(), "get-devices", "--json"],
                env=env, capture_output=True, text=True, check=False,
            ).stdout  # fmt: skip
            devices = {d["Name"]: d for d in json.loads(out or "[]")}
            return devices.get(PFRU_NAME, {}).get("UpdateState") == "pending"

        wait_for(staged, 60, "the PFRU device was not staged")
        # the staged firmware waits for activation: gnome-software reads the device
        # again after Install and shows its first Release's UpdateMessage in a dialog
        # over the window (gs_page_show_update_message); without it the page just says
        # "Up to Date"
        wait_for(
            lambda: len(visible_windows(gui.pid, gui_environment)) >= 2,
            60,
            "gnome-software showed no dialog about the pending activation",
        )
        time.sleep(3)  # let it render
        screenshot(DISPLAY, shots / "gnome-software-installed.png", gui_environment)
        assert gui.poll() is None, gs_log.read_text(errors="replace")[-3000:]
    text = gs_log.read_text(errors="replace")
    assert "network is unreachable" not in text
    assert "downloading file://localhost" in text.lower() or "file://localhost" in text
