"""Compat GetDevices reuses device dicts, and a device change shows in the next call."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from livefw.bus.backend import Message, MessageBus, MessageType, Variant, call, disconnect
from livefw.cabinet import make_cabinet, make_metainfo
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
