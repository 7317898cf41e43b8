"""livefw.statefiles: private modes, no links followed, atomic replacement."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from livefw.errors import Internal
from livefw.plugin import PluginContext
from livefw.statefiles import (
    StateDirError,
    check_state_dir,
    open_private,
    read_private,
    write_atomic,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_write_atomic_is_private_whatever_the_umask(tmp_path: Path) -> None:
    target = tmp_path / "registry.json"
    old = os.umask(0)
    try:
        write_atomic(str(target), b"one")
        write_atomic(str(target), b"two")
    finally:
        os.umask(old)
    assert target.read_bytes() == b"two"
    assert _mode(target) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["registry.json"]


def test_write_atomic_replaces_a_symlink_instead_of_following_it(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    target = tmp_path / "state.json"
    target.symlink_to(victim)
    write_atomic(str(target), b"new")
    assert victim.read_bytes() == b"precious"
    assert not target.is_symlink()
    assert target.read_bytes() == b"new"


def test_write_atomic_leaves_the_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    write_atomic(str(target), b"old")
    with pytest.raises(TypeError):
        write_atomic(str(target), "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_reads_refuse_links_and_big_files(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"secret")
    link = tmp_path / "link"
    link.symlink_to(victim)
    with pytest.raises(StateDirError, match="symbolic link"):
        read_private(str(link), 100)
    hard = tmp_path / "hard"
    os.link(victim, hard)
    with pytest.raises(StateDirError, match="hard links"):
        read_private(str(hard), 100)
    big = tmp_path / "big"
    big.write_bytes(b"x" * 101)
    with pytest.raises(StateDirError, match="more than"):
        read_private(str(big), 100)
    assert read_private(str(tmp_path / "missing"), 100) is None
    loose = tmp_path / "loose"
    loose.write_bytes(b"ok")
    loose.chmod(0o644)
    os.close(open_private(str(loose), os.O_RDONLY))
    assert _mode(loose) == 0o600


def test_check_state_dir(tmp_path: Path) -> None:
    fresh = tmp_path / "a" / "state"
    check_state_dir(str(fresh))
    assert _mode(fresh) == 0o700
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    with pytest.raises(StateDirError, match="writable by others"):
        check_state_dir(str(open_dir))
    loose = tmp_path / "loose"
    loose.mkdir()
    loose.chmod(0o755)
    check_state_dir(str(loose))
    assert _mode(loose) == 0o700
    (loose / "x").symlink_to("/etc/passwd")
    with pytest.raises(StateDirError, match="symbolic link"):
        check_state_dir(str(loose))


def test_plugin_state_files_are_plain_names(tmp_path: Path) -> None:
    ctx = PluginContext("p", None, {}, str(tmp_path), print, print, list)  # type: ignore[arg-type]
    ctx.write_state("registry.json", b"{}")
    assert ctx.read_state("registry.json") == b"{}"
    assert ctx.read_state("absent") is None
    for name in ("../x", "a/b", "..", ""):
        with pytest.raises(ValueError, match="one path component"):
            ctx.write_state(name, b"")
    (tmp_path / "link").symlink_to(tmp_path / "registry.json")
    with pytest.raises(Internal, match="symbolic link"):
        ctx.read_state("link")
