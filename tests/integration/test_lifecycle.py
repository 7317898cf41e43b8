"""Packaging of the code, and the logind shutdown inhibitor during irreversible steps."""

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from livefw.testing import Cli, DaemonProcess, PolkitMock, PrivateBus, busctl

REPO = Path(__file__).resolve().parents[2]


def test_non_editable_install_has_package_plugins_and_scripts(tmp_path: Path) -> None:
    """``pip install .`` (not editable) gives the package, the lfa plugin and both scripts."""
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(target),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    assert (target / "bin" / "livefwd").exists()
    assert (target / "bin" / "livefw").exists()
    probe = (
        "import importlib.metadata as m, livefw, livefw.plugins.lfa, livefw.kernel.sim.lfa;"
        "eps = {e.name: e.value for e in m.entry_points(group='livefw.plugins')};"
        "print(livefw.__file__); print(eps['lfa'])"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    result = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            probe.replace(
                "import importlib",
                f"import sys;sys.path.insert(0, {str(target)!r});import importlib",
            ),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    first, second = result.stdout.splitlines()
    assert first.startswith(str(target))
    assert second == "livefw.plugins.lfa:LfaPlugin"
    assert (target / "livefw" / "py.typed").exists()


@pytest.fixture
def logind(private_bus: PrivateBus) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "tests/fixtures/fake_logind.py"), private_bus.address],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        private_bus.wait_for_name("org.freedesktop.login1")
        yield proc
    finally:
        proc.terminate()
        proc.wait(10)


def _inhibitors(bus: PrivateBus) -> list[list[object]]:
    reply = busctl(
        bus.address,
        "--json=short",
        "call",
        "org.freedesktop.login1",
        "/org/freedesktop/login1",
        "org.freedesktop.login1.Manager",
        "ListInhibitors",
    )
    return list(json.loads(reply.stdout)["data"][0])


def test_shutdown_inhibitor_is_held_only_during_the_activation(
    daemon_factory: Callable[..., DaemonProcess],
    polkit: PolkitMock,
    logind: subprocess.Popen[bytes],
    private_bus: PrivateBus,
    cli: Cli,
) -> None:
    daemon_factory()
    assert _inhibitors(private_bus) == []
    cli("sim", "set", "lfa", "activate_seconds=3")
    activation = cli.popen("activate", "bl31")
    deadline = time.monotonic() + 15
    while not _inhibitors(private_bus):
        assert time.monotonic() < deadline, "livefwd took no inhibitor"
        time.sleep(0.1)
    (what, who, why, mode, *_rest) = _inhibitors(private_bus)[0]
    assert (what, who, mode) == ("shutdown:sleep", "livefwd", "block")
    assert "Firmware" in str(why)
    assert activation.wait(60) == 0
    deadline = time.monotonic() + 10
    while _inhibitors(private_bus):
        assert time.monotonic() < deadline, "livefwd kept the inhibitor"
        time.sleep(0.1)
