"""Helpers of the GUI tests: background processes, Xvfb, the GUI's environment."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


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


def gui_marks(tools: tuple[str, ...], timeout: int) -> list[pytest.MarkDecorator]:
    """A GUI test module's marks: only under `make test-gui`, only with its ``tools``."""
    return [
        pytest.mark.skipif(
            os.environ.get("LIVEFW_GUI_TEST") != "1",
            reason="GUI test: run `make test-gui` (sets LIVEFW_GUI_TEST=1)",
        ),
        pytest.mark.skipif(
            any(shutil.which(tool) is None for tool in tools),
            reason=f"needs {', '.join(tools)} (`make test-gui` installs them)",
        ),
        pytest.mark.timeout(timeout),
    ]


def shots_dir(tmp_path: Path) -> Path:
    """Where screenshots go: ``$LIVEFW_GUI_SHOTS`` (build/gui/ under make), else ``tmp_path``."""
    shots = Path(os.environ.get("LIVEFW_GUI_SHOTS", str(tmp_path)))
    shots.mkdir(parents=True, exist_ok=True)
    return shots


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; TimeoutError(what) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.1)


def start_xvfb(processes: Processes, display: str, log: Path) -> None:
    """Xvfb on ``display`` (1280x800), waited for."""
    processes.start(
        ["Xvfb", display, "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
        log,
        dict(os.environ),
    )
    wait_for(lambda: os.path.exists(f"/tmp/.X11-unix/X{display[1:]}"), 20, "Xvfb did not start")


def gui_env(base: dict[str, str], display: str, session: str, home: Path) -> dict[str, str]:
    """A GTK program's environment: private session bus, no a11y, settings in memory."""
    env = dict(base)
    env.update(
        DISPLAY=display,
        DBUS_SESSION_BUS_ADDRESS=session,
        GTK_A11Y="none",
        NO_AT_BRIDGE="1",
        GSETTINGS_BACKEND="memory",
        GIO_USE_VFS="local",
        LIBGL_ALWAYS_SOFTWARE="1",
        GSK_RENDERER="cairo",
        LANG="C.UTF-8",
        HOME=str(home),
        XDG_CACHE_HOME=str(home / "cache"),
    )
    return env


def screenshot(display: str, path: Path, env: dict[str, str]) -> None:
    """The whole screen of ``display`` as a PNG; fails on a blank one."""
    subprocess.run(
        ["import", "-display", display, "-window", "root", str(path)],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    colours = subprocess.run(
        ["identify", "-format", "%k", str(path)], capture_output=True, text=True, check=True
    ).stdout
    assert int(colours) > 50, f"the screenshot {path} is blank"


PFRU_GUID = "b2f84b79-7b6e-4e45-885f-3fb9bb185402"


def pfru_cabinets(env: dict[str, str], folder: Path, versions: tuple[str, ...]) -> None:
    """Signed-by-nobody PFRU code-injection cabinets ``pfru-V.cab`` in ``folder``.

    ``env`` reaches the simulating livefwd (its bus and LIVEFW_STATE_DIR); the folder
    is a remote marked Trusted, so no signature is needed.
    """
    livefw = livefw_bin()
    for version in versions:
        payload = folder.parent / f"pfru-{version}.bin"
        subprocess.run(
            [livefw, "sim", "sample", "pfru/code-injection", "--version", version,
             "-o", str(payload)],
            env=env, check=True, capture_output=True,
        )  # fmt: skip
        subprocess.run(
            [livefw, "build-cabinet", str(payload), "--guid", PFRU_GUID, "--version", version,
             "--id", "org.example.pfru", "--name", f"Runtime fix {version}",
             "--vendor", "Example", "-o", str(folder / f"pfru-{version}.cab")],
            env=env, check=True, capture_output=True,
        )  # fmt: skip


def livefw_bin() -> str:
    """The ``livefw`` CLI of this virtualenv."""
    import sys

    return os.path.join(os.path.dirname(sys.executable), "livefw")


def fleet_daemon(
    daemon_factory: Callable[..., Any], private_bus: Any, tmp_path: Path, versions: tuple[str, ...]
) -> tuple[dict[str, str], Path]:
    """livefwd --fwupd-compat with a trusted directory remote holding PFRU ``versions``.

    Returns the environment that reaches it (bus, LIVEFW_STATE_DIR) and the folder.
    """
    firmware = tmp_path / "firmware"
    firmware.mkdir()
    (tmp_path / "remotes.d").mkdir()
    (tmp_path / "remotes.d" / "fleet.conf").write_text(
        f"[livefw Remote]\nTitle=Fleet\nPath={firmware}\nTrusted=true\n"
    )
    config = f'[install]\nremotes_dir = "{tmp_path / "remotes.d"}"\n'
    daemon = daemon_factory(extra_args=["--fwupd-compat"], config_text=config)
    private_bus.wait_for_name("org.freedesktop.fwupd", proc=daemon)
    env: dict[str, str] = private_bus.env()
    env["LIVEFW_STATE_DIR"] = daemon.state_dir
    pfru_cabinets(env, firmware, versions)
    return env, firmware


@contextlib.contextmanager
def gui_session(
    processes: Processes, system_bus: str, env: dict[str, str], display: str, tmp_path: Path
) -> Iterator[tuple[dict[str, str], Path]]:
    """A private session bus, dbus-monitor on the system bus, Xvfb: the GUI's env and
    the monitor's log; the session bus stops on exit (the rest with ``processes``)."""
    from livefw.testing import PrivateBus

    session_dir = tmp_path / "session"
    session_dir.mkdir()
    session = PrivateBus(str(session_dir))
    session.start()
    try:
        monitor_log = tmp_path / "monitor.log"
        processes.start(["dbus-monitor", "--address", system_bus], monitor_log, dict(os.environ))
        start_xvfb(processes, display, tmp_path / "xvfb.log")
        yield gui_env(env, display, session.address, tmp_path), monitor_log
    finally:
        session.stop()


def fit_window(env: dict[str, str]) -> None:
    """Move the visible windows to 0,0 and size them 1280x800 (if xdotool is there)."""
    if shutil.which("xdotool"):
        subprocess.run(
            ["xdotool", "search", "--onlyvisible", "--name", ".",
             "windowmove", "%@", "0", "0", "windowsize", "%@", "1280", "800"],
            env=env, capture_output=True, check=False,
        )  # fmt: skip
        time.sleep(2)
