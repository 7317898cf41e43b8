"""Compat GetDevices reuses device dicts, and a device change shows in the next call."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from livefw.bus.backend import Message, MessageBus, MessageType, Variant, call, disconnect
from livefw.cabinet_build import make_cabinet, make_metainfo
from livefw.testing import Cli, DaemonProcess, PolkitMock, PrivateBus

FWUPD = "org.freedesktop.fwupd"
PFRU_GUID = "b2f84b79-7b6e-4e45-885f-3fb9bb185402"


@pytest.fixture
def compat(
    daemon_factory: Callable[..., DaemonProcess],
    polkit: PolkitMock,
    private_bus: PrivateBus,
    tmp_path: Path,
) -> DaemonProcess:
    (tmp_path / "remotes.d").mkdir()
    config = (
        "[install]\n"
        f'pki_dir = "{tmp_path / "pki"}"\n'
        f'remotes_dir = "{tmp_path / "remotes.d"}"\n'
        "only_trusted = false\n"
    )
    daemon = daemon_factory(extra_args=["--fwupd-compat"], config_text=config)
    private_bus.wait_for_name(FWUPD, proc=daemon)
    return daemon


def _fwupd(address: str, member: str, signature: str = "", body: Any = (), fds: Any = ()) -> Any:
    async def run() -> Message:
        bus = MessageBus(bus_address=address, negotiate_unix_fd=True)
        await bus.connect()
        try:
            return await call(
                bus,
                Message(
                    destination=FWUPD,
                    path="/",
                    interface=FWUPD,
                    member=member,
                    signature=signature,
                    body=list(body),
                    unix_fds=list(fds),
                ),
            )
        finally:
            disconnect(bus)

    reply = asyncio.run(run())
    assert reply.message_type == MessageType.METHOD_RETURN, reply.body
    return reply.body


def _pfru(devices: list[dict[str, Any]]) -> dict[str, Any]:
    (device,) = [d for d in devices if PFRU_GUID in d.get("Guid", Variant("as", [])).value]
    return {key: variant.value for key, variant in device.items()}


def test_a_staged_update_shows_in_the_next_get_devices(
    compat: DaemonProcess, private_bus: PrivateBus, cli: Cli, tmp_path: Path
) -> None:
    before = _pfru(_fwupd(private_bus.address, "GetDevices")[0])
    assert _pfru(_fwupd(private_bus.address, "GetDevices")[0]) == before  # cached: the same
    sample = tmp_path / "pfru.bin"
    cli("sim", "sample", "pfru/code-injection", "--version", "4", "-o", str(sample))
    payload = sample.read_bytes()
    cab = tmp_path / "pfru.cab"
    metainfo = make_metainfo(
        appstream_id="org.example.pfru",
        guids=[PFRU_GUID],
        version="4",
        payload_name="firmware.bin",
        payload=payload,
    )
    cab.write_bytes(make_cabinet({"firmware.bin": payload, "firmware.metainfo.xml": metainfo}))
    options = {"reason": Variant("s", "user-action"), "install-flags": Variant("t", 0)}
    fd = os.open(cab, os.O_RDONLY)
    try:
        _fwupd(private_bus.address, "Install", "sha{sv}", ["*", 0, options], [fd])
    finally:
        os.close(fd)
    after = _pfru(_fwupd(private_bus.address, "GetDevices")[0])
    assert after != before
    assert after["Flags"] != before["Flags"]  # updatable -> updatable-hidden while staged


SUPPORTED = 0x20  # fwupd's FWUPD_DEVICE_FLAG_SUPPORTED
LFA_GUID = "11111111-2222-3333-4444-555555555555"


def _pfru_cabinet(cli: Cli, tmp_path: Path, version: str, guid: str = PFRU_GUID) -> bytes:
    sample = tmp_path / f"pfru-{version}.bin"
    cli("sim", "sample", "pfru/code-injection", "--version", version, "-o", str(sample))
    payload = sample.read_bytes()
    metainfo = make_metainfo(
        appstream_id="org.example.pfru",
        guids=[guid],
        version=version,
        payload_name="firmware.bin",
        payload=payload,
    )
    return make_cabinet({"firmware.bin": payload, "firmware.metainfo.xml": metainfo})


def test_a_remote_folder_change_shows_in_the_next_get_devices(
    compat: DaemonProcess, private_bus: PrivateBus, cli: Cli, tmp_path: Path
) -> None:
    """The remotes scan is kept between calls, never past a change (issue 17 item 3).

    Each step checks the very next call, without waiting: a kept scan that missed
    the change, or a kept reply body, fails here.
    """

    def supported() -> bool:
        return bool(_pfru(_fwupd(private_bus.address, "GetDevices")[0])["Flags"] & SUPPORTED)

    folder = tmp_path / "firmware"
    assert not supported()
    assert not supported()  # kept: still nothing
    # a remote appears whose folder does not exist yet
    (tmp_path / "remotes.d" / "local.conf").write_text(
        f"[fwupd Remote]\nEnabled=true\nPath={folder}\n"
    )
    assert not supported()
    folder.mkdir()
    assert not supported()
    cabinet = _pfru_cabinet(cli, tmp_path, "4")
    (folder / "pfru.cab").write_bytes(cabinet)
    assert supported()
    assert supported()
    # the cabinet rewritten in place for another device (another size: the store
    # knows a cabinet by path, mtime and size, and this rewrite may share the mtime)
    other = _pfru_cabinet(cli, tmp_path, "40", guid=LFA_GUID)
    assert len(other) != len(cabinet)
    (folder / "pfru.cab").write_bytes(other)
    assert not supported()
    (folder / "pfru.cab").write_bytes(cabinet)
    assert supported()
    # removed, renamed in, the remote disabled, the folder removed
    (folder / "pfru.cab").unlink()
    assert not supported()
    (tmp_path / "pfru.cab").write_bytes(cabinet)
    os.rename(tmp_path / "pfru.cab", folder / "pfru.cab")
    assert supported()
    (tmp_path / "remotes.d" / "local.conf").write_text(
        f"[fwupd Remote]\nEnabled=false\nPath={folder}\n"
    )
    assert not supported()
    (tmp_path / "remotes.d" / "local.conf").write_text(
        f"[fwupd Remote]\nEnabled=true\nPath={folder}\n"
    )
    assert supported()
    (folder / "pfru.cab").unlink()
    folder.rmdir()
    assert not supported()


def test_added_and_removed_devices_show_in_get_devices(
    compat: DaemonProcess, private_bus: PrivateBus, cli: Cli
) -> None:
    def lfa_images() -> int:
        devices = _fwupd(private_bus.address, "GetDevices")[0]
        return sum(LFA_GUID in d.get("Guid", Variant("as", [])).value for d in devices)

    assert lfa_images() == 0
    assert lfa_images() == 0  # the reply body is kept
    # the LFA driver sends no uevent for its images (docs/kernel.md, Uevents): the
    # daemon sees the change at its next rescan, here `livefw refresh`
    cli("sim", "add", "lfa", f"guid={LFA_GUID}", "pending=3.1")
    assert lfa_images() == 0
    cli("refresh")
    assert lfa_images() == 1
    cli("sim", "remove", LFA_GUID[:8])
    assert lfa_images() == 1
    cli("refresh")
    assert lfa_images() == 0
