"""The state dir is private to livefwd and no file in it is reached through a link.

Issue 13, item 10. Outside systemd livefwd used to create ``history.db`` and
``registry.json`` with the process umask and open every state file (and its
temporary file) through whatever symlink sat at its path. Here livefwd starts
under umask 000 and every file and directory it made is 0600/0700; an existing
state dir is tightened; a state dir writable by others or owned by another user,
and a symlink or hard link at any state file path (or at the temporary paths the
old code used) make it refuse to start with one line and exit code 73, leaving the
link's target untouched.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from livefw.statefiles import EX_STATE_DIR
from livefw.testing import NOBODY, DaemonProcess, PrivateBus


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture
def start(private_bus: PrivateBus, state_dir: Path) -> Iterator[Callable[..., DaemonProcess]]:
    """Start livefwd on ``state_dir``; the config and log live outside it."""
    started: list[DaemonProcess] = []
    outside = state_dir.parent / "outside"
    outside.mkdir(exist_ok=True)
    config = outside / "livefw.conf"
    config.write_text("")

    def factory(wait: bool = True) -> DaemonProcess:
        process = DaemonProcess(private_bus, str(state_dir), config=str(config))
        process.log_path = str(outside / "livefwd.log")
        started.append(process)
        return process.start(wait=wait)

    yield factory
    for process in started:
        process.stop()


def _refused(process: DaemonProcess, *words: str) -> str:
    assert process.wait_exit(20) == EX_STATE_DIR, process.log()
    lines = [line for line in process.log().splitlines() if line.strip()]
    assert len(lines) == 1, lines  # one line, no traceback
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def test_files_are_private_under_umask_000(
    start: Callable[..., DaemonProcess], state_dir: Path
) -> None:
    state_dir.chmod(0o755)  # an existing state dir, as made by hand: tightened
    old = os.umask(0)
    try:
        daemon = start()
    finally:
        os.umask(old)
    daemon.stop()
    assert _mode(state_dir) == 0o700
    history = state_dir / "history.db"
    registry = state_dir / "plugins" / "liveupdate" / "registry.json"
    assert history.exists()
    assert registry.exists()
    for path in (history, registry, *state_dir.glob("history.db-*")):
        assert _mode(path) == 0o600, path
    for path in (state_dir / "plugins", *(state_dir / "plugins").iterdir()):
        assert _mode(path) == 0o700, path
    assert not list(state_dir.rglob("*.tmp"))
    # and everything else livefwd made (the simulated machine in sim/ is the simulator's)
    for path in state_dir.rglob("*"):
        if path.relative_to(state_dir).parts[0] != "sim":
            assert _mode(path) == (0o700 if path.is_dir() else 0o600), path


def test_existing_files_are_tightened(start: Callable[..., DaemonProcess], state_dir: Path) -> None:
    start().stop()
    history = state_dir / "history.db"
    registry = state_dir / "plugins" / "liveupdate" / "registry.json"
    history.chmod(0o644)
    registry.chmod(0o644)
    (state_dir / "plugins").chmod(0o755)
    start().stop()
    assert _mode(history) == 0o600
    assert _mode(registry) == 0o600
    assert _mode(state_dir / "plugins") == 0o700


@pytest.mark.parametrize("mode", [0o777, 0o722, 0o1777])
def test_state_dir_writable_by_others_is_refused(
    start: Callable[..., DaemonProcess], state_dir: Path, mode: int
) -> None:
    state_dir.chmod(mode)
    _refused(start(wait=False), str(state_dir), "writable by others")
    assert not (state_dir / "history.db").exists()
    assert _mode(state_dir) == mode  # left for a person to look at


def test_state_dir_of_another_user_is_refused(
    start: Callable[..., DaemonProcess], state_dir: Path
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to chown the state dir")
    os.chown(state_dir, NOBODY, NOBODY)
    _refused(start(wait=False), str(state_dir), f"uid {NOBODY}")
    assert not (state_dir / "history.db").exists()


def test_symlinked_state_dir_is_refused(
    start: Callable[..., DaemonProcess], state_dir: Path, tmp_path: Path
) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    state_dir.rmdir()
    state_dir.symlink_to(target)
    _refused(start(wait=False), "symbolic link")
    assert list(target.iterdir()) == []


#: every path livefwd writes under the state dir, and the temporary paths of old.
LINKED = [
    "history.db",
    "history.db-wal",
    "history.db-shm",
    "history.db-journal",
    "plugins/liveupdate/registry.json",
    "plugins/liveupdate/registry.tmp",
    "fwupd-notified.json",
    "fwupd-notified.json.tmp",
]


@pytest.mark.parametrize("name", LINKED)
@pytest.mark.parametrize("kind", ["symlink", "hardlink"])
def test_link_at_a_state_file_is_refused(
    start: Callable[..., DaemonProcess], state_dir: Path, tmp_path: Path, name: str, kind: str
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    victim.chmod(0o644)
    link = state_dir / name
    link.parent.mkdir(parents=True, exist_ok=True)
    if kind == "symlink":
        link.symlink_to(victim)
    else:
        os.link(victim, link)
    _refused(start(wait=False), str(link))
    assert victim.read_text() == "precious\n"
    assert _mode(victim) == 0o644
