"""The fd store client (sd_notify FDSTORE=1, LISTEN_FDS) and its test stand-in."""

import os
from pathlib import Path

import pytest

from livefw.kernel.fdstore import LISTEN_FDS_START, FdStore, LocalFdStore, valid_fdname


def test_fdnames() -> None:
    assert valid_fdname("luo.livefw.1000.vm")
    assert not valid_fdname("")
    assert not valid_fdname("a:b")
    assert not valid_fdname("x" * 256)
    assert not valid_fdname("tab\there")


def test_inherited_fds_are_parsed_and_the_environment_cleaned() -> None:
    env = {
        "LISTEN_FDS": "3",
        "LISTEN_PID": str(os.getpid()),
        "LISTEN_FDNAMES": "luo.a:other:luo.b",
    }
    store = FdStore(env)
    assert "LISTEN_FDS" not in env
    assert "LISTEN_FDNAMES" not in env
    assert store.take("luo.") == [("luo.a", LISTEN_FDS_START), ("luo.b", LISTEN_FDS_START + 2)]
    assert store.take("luo.") == []
    assert store.take("") == [("other", LISTEN_FDS_START + 1)]


def test_fds_for_another_pid_are_ignored() -> None:
    store = FdStore({"LISTEN_FDS": "2", "LISTEN_PID": "1", "LISTEN_FDNAMES": "a:b"})
    assert store.take() == []


def test_without_a_service_manager_nothing_is_stored() -> None:
    store = FdStore({})
    assert not store.available
    read_end, write_end = os.pipe()
    assert store.push("x", [read_end]) is False
    with pytest.raises(ValueError, match="invalid"):
        store.push("a:b", [read_end])
    os.close(read_end)
    os.close(write_end)


def test_local_store_keeps_dedups_and_removes(tmp_path: Path) -> None:
    local = LocalFdStore(str(tmp_path / "notify"))
    try:
        client = FdStore({"NOTIFY_SOCKET": local.path})
        memfd = os.memfd_create("m")
        os.write(memfd, b"kept")
        assert client.push("one", [memfd])
        assert client.push("one", [memfd])  # same file again: systemd keeps one
        other = os.memfd_create("o")
        assert client.push("two", [other])
        local.wait_idle()
        assert local.names() == ["one", "two"]
        os.close(memfd)
        inherited = local.client().take("one")
        assert [name for name, _ in inherited] == ["one"]
        assert os.pread(inherited[0][1], 4, 0) == b"kept"
        assert client.remove("one")
        local.wait_idle()
        assert local.names() == ["two"]
        env, fds = local.environment()
        assert env["LISTEN_FDS"] == "1"
        assert env["LISTEN_FDNAMES"] == "two"
        assert len(fds) == 1
    finally:
        local.close()


async def test_real_provider_memfd_adopt_and_store(tmp_path: Path) -> None:
    import fcntl

    from livefw.kernel.real import RealProvider
    from livefw.kernel.uapi import liveupdate as uapi

    local = LocalFdStore(str(tmp_path / "notify"))
    try:
        provider = RealProvider(str(tmp_path), FdStore({"NOTIFY_SOCKET": local.path}))
        handle = await provider.create_memfd("reg", b"registry", seals=uapi.F_SEAL_WRITE)
        assert os.lseek(handle.fileno(), 0, os.SEEK_CUR) == 0
        assert fcntl.fcntl(handle.fileno(), fcntl.F_GET_SEALS) & fcntl.F_SEAL_WRITE
        with pytest.raises(PermissionError):
            os.write(handle.fileno(), b"x")
        assert await provider.store_fds("luo.x", [handle])
        local.wait_idle()
        adopted = await provider.adopt_fd(os.dup(handle.fileno()), "copy")
        assert await adopted.read() == b"registry"
        await adopted.close()
        await handle.close()
        inherited = local.client()
        again = RealProvider(str(tmp_path), inherited)
        (stored,) = (await again.stored_fds("luo."))["luo.x"]
        assert os.pread(stored.fileno(), 8, 0) == b"registry"
        await stored.close()
        await provider.unstore_fds("luo.x")
        local.wait_idle()
        assert local.names() == []
    finally:
        local.close()
