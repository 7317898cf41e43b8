"""Shared fixtures.

Unit tests build an in-process engine on a simulated machine (``make_engine``).
Integration tests start their own ``dbus-daemon`` on a socket in a temp dir, the
polkitd mock, and ``livefwd --simulate`` as subprocesses; every process is stopped
by the fixture, and the daemon log is printed when a test fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from livefw.config import Config
from livefw.engine import Engine
from livefw.kernel.sim.machine import DEFAULT_KERNEL, SimMachine
from livefw.kernel.sim.provider import SimProvider
from livefw.plugin import Plugin
from livefw.testing import Cli, DaemonProcess, PolkitMock, PrivateBus, busctl

REPO = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------ unit helpers


@pytest.fixture
def make_engine(tmp_path: Path) -> Callable[..., Any]:
    """``await make_engine([Plugin], profile=..., config=...)`` -> started Engine."""
    engines: list[Engine] = []

    async def factory(
        plugins: Sequence[type[Plugin]],
        profile: str = "default",
        config: Config | None = None,
        machine: SimMachine | None = None,
        state_dir: Path | None = None,
        kernel: str | None = None,
    ) -> Engine:
        directory = state_dir or tmp_path
        if machine is None:
            sim_dir = directory / "sim"
            if (sim_dir / "machine.json").exists():
                machine = SimMachine.load(str(sim_dir))
            else:
                machine = SimMachine.create(str(sim_dir), profile, kernel=kernel or DEFAULT_KERNEL)
        engine = Engine(SimProvider(machine), config or Config(), str(directory), plugins)
        await engine.start()
        engines.append(engine)
        return engine

    yield factory
    # engines are stopped by the tests that need a clean stop; close the rest
    for engine in engines:
        if not engine.stopping:
            engine.history.close()


# ----------------------------------------------------------- integration helpers


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, "rep_" + report.when, report)


def _require(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (make test installs it)")


@pytest.fixture
def bus_dir() -> Iterator[str]:
    """A world-readable temp dir for the bus socket (reachable by another uid)."""
    directory = tempfile.mkdtemp(prefix="livefw-test-bus.")
    os.chmod(directory, 0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def private_bus(bus_dir: str) -> Iterator[PrivateBus]:
    """A system-type dbus-daemon on a private socket."""
    _require("dbus-daemon")
    bus = PrivateBus(bus_dir).start()
    yield bus
    bus.stop()


@pytest.fixture
def polkit(private_bus: PrivateBus) -> Iterator[PolkitMock]:
    """python-dbusmock's polkitd template, allowing every action by default."""
    mock = PolkitMock(private_bus).start()
    mock.allow_unknown(True)
    yield mock
    mock.stop()


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """The daemon's state dir (history, simulated machine)."""
    path = tmp_path / "state"
    path.mkdir()
    return path


@pytest.fixture
def daemon_factory(
    request: pytest.FixtureRequest, private_bus: PrivateBus, state_dir: Path
) -> Iterator[Callable[..., DaemonProcess]]:
    """Start ``livefwd --simulate`` processes; stops them and dumps logs on failure."""
    started: list[DaemonProcess] = []

    def factory(
        extra_args: Sequence[str] = (),
        config_text: str | None = None,
        wait: bool = True,
        env: dict[str, str] | None = None,
    ) -> DaemonProcess:
        config = None
        if config_text is not None:
            config = str(state_dir / "test.conf")
            Path(config).write_text(config_text)
        process = DaemonProcess(private_bus, str(state_dir), extra_args, config, env)
        started.append(process)
        return process.start(wait=wait)

    yield factory
    for process in started:
        process.stop()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed and started:
        sys.stderr.write("\n----- livefwd log -----\n" + started[-1].log() + "\n")


@pytest.fixture
def daemon(daemon_factory: Callable[..., DaemonProcess], polkit: PolkitMock) -> DaemonProcess:
    """A running daemon with polkit allowing everything."""
    return daemon_factory()


@pytest.fixture
def cli(private_bus: PrivateBus, state_dir: Path) -> Cli:
    """The ``livefw`` CLI bound to the test bus; ``uid=`` runs it under another uid."""
    return Cli(private_bus, str(state_dir))


@pytest.fixture
def bctl(private_bus: PrivateBus) -> Callable[..., subprocess.CompletedProcess[str]]:
    """The real ``busctl --address=...`` on the test bus."""
    _require("busctl")

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return busctl(private_bus.address, *args, check=check)

    return run
