"""org.freedesktop.fwupd on the wire: exact types, error names, fd 0 (no fwupdmgr needed)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from livefw.bus.backend import Message, MessageBus, MessageType, Variant, call, disconnect
from livefw.cabinet_build import make_cabinet, make_metainfo
from livefw.testing import Cli, DaemonProcess, PolkitMock, PrivateBus

FWUPD = "org.freedesktop.fwupd"
PFRU_GUID = "b2f84b79-7b6e-4e45-885f-3fb9bb185402"

Bctl = Callable[..., subprocess.CompletedProcess[str]]


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
        "[daemon]\n"
        'fwupd_version = "9.9.9"\n'
    )
    daemon = daemon_factory(extra_args=["--fwupd-compat"], config_text=config)
    private_bus.wait_for_name(FWUPD, proc=daemon)
    return daemon


def fwupd_call(bctl: Bctl, member: str, *args: str) -> Any:
    reply = bctl("--json=short", "call", FWUPD, "/", FWUPD, member, *args)
    return json.loads(reply.stdout)


def test_properties_and_device_dict_types(compat: DaemonProcess, bctl: Bctl) -> None:
    reply = bctl(
        "--json=short", "call", FWUPD, "/", "org.freedesktop.DBus.Properties", "GetAll", "s", FWUPD
    )
    props = json.loads(reply.stdout)["data"][0]
    assert props["DaemonVersion"] == {"type": "s", "data": "9.9.9"}
    assert props["Status"] == {"type": "u", "data": 1}
    assert props["BatteryLevel"] == {"type": "u", "data": 101}
    assert props["OnlyTrusted"] == {"type": "b", "data": False}
    devices = fwupd_call(bctl, "GetDevices")["data"][0]
    plugins = {d["Plugin"]["data"] for d in devices}
    assert plugins == {"pfru", "uefi_capsule", "lfa"}
    for device in devices:
        assert device["DeviceId"]["type"] == "s"
        assert len(device["DeviceId"]["data"]) == 40
        assert device["Flags"]["type"] == "t"
        assert device["Created"]["type"] == "t"
        assert device["Guid"]["type"] == "as"
        assert device["Icon"]["type"] == "as"
        assert device["VersionFormat"]["type"] == "u"
        assert device["UpdateState"]["type"] == "u"
    capsule = next(d for d in devices if d["Plugin"]["data"] == "uefi_capsule")
    # needs-reboot only once an update is scheduled (as fwupd; check-reboot-needed reads it)
    assert not capsule["Flags"]["data"] & 0x100
    assert capsule["Protocol"] == {"type": "s", "data": "org.uefi.capsule"}


def _error(address: str, member: str, signature: str = "", *body: Any) -> tuple[str, str]:
    reply = _raw_call(address, member, signature, list(body), [])
    assert reply.message_type == MessageType.ERROR, reply.body
    return str(reply.error_name), str(reply.body[0])


def test_empty_results_and_error_names(
    compat: DaemonProcess, bctl: Bctl, private_bus: PrivateBus
) -> None:
    address = private_bus.address
    # no directory remote: only the disabled LVFS remote fwupdmgr looks for (issue 18)
    (lvfs,) = fwupd_call(bctl, "GetRemotes")["data"][0]
    assert lvfs["RemoteId"]["data"] == "lvfs"
    assert lvfs["Enabled"]["data"] is False
    assert lvfs["Type"]["data"] == 1  # download
    assert fwupd_call(bctl, "GetPlugins")["data"] == [[]]
    assert _error(address, "GetHistory") == ("org.freedesktop.fwupd.NothingToDo", "No history")
    name, _ = _error(address, "GetReleases", "s", "0" * 40)
    assert name == "org.freedesktop.fwupd.NotFound"
    devices = fwupd_call(bctl, "GetDevices")["data"][0]
    pfru = next(d for d in devices if d["Plugin"]["data"] == "pfru")["DeviceId"]["data"]
    name, text = _error(address, "Activate", "s", pfru)
    assert name == "org.freedesktop.fwupd.NotSupported"
    assert "does not need activation" in text
    name, text = _error(address, "GetUpgrades", "s", pfru)
    assert name == "org.freedesktop.fwupd.NothingToDo"
    assert "no releases" in text
    fwctl = json.loads(
        bctl(
            "--json=short",
            "call",
            "org.livefw.Daemon1",
            "/org/livefw/Daemon1",
            "org.livefw.Daemon1.Manager",
            "GetDevices",
        ).stdout
    )["data"][0]
    hidden = [d["Id"]["data"] for d in fwctl if d["Plugin"]["data"] in ("fwctl", "liveupdate")]
    assert hidden
    name, _ = _error(address, "GetReleases", "s", hidden[0])
    assert name == "org.freedesktop.fwupd.NotFound"  # not on this interface at all


def _raw_call(
    bus_address: str, member: str, signature: str, body: list[Any], fds: list[int]
) -> Message:
    async def run() -> Message:
        bus = MessageBus(bus_address=bus_address, negotiate_unix_fd=True)
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
                    body=body,
                    unix_fds=fds,
                ),
            )
        finally:
            disconnect(bus)

    return asyncio.run(run())


def test_install_uses_fd_0_whatever_the_handle_says(
    compat: DaemonProcess, private_bus: PrivateBus, cli: Cli, tmp_path: Path
) -> None:
    sample = tmp_path / "pfru.bin"
    cli("sim", "sample", "pfru/code-injection", "--version", "4", "-o", str(sample))
    payload = sample.read_bytes()
    cab = tmp_path / "pfru.cab"
    cab.write_bytes(
        make_cabinet(
            {
                "firmware.bin": payload,
                "firmware.metainfo.xml": make_metainfo(
                    appstream_id="org.example.pfru",
                    guids=[PFRU_GUID],
                    version="4",
                    payload_name="firmware.bin",
                    payload=payload,
                ),
            }
        )
    )
    options = {"reason": Variant("s", "user-action"), "install-flags": Variant("t", 0)}
    # libfwupd puts its own fd number (here 8) into the h slot, with one fd attached
    fd = os.open(cab, os.O_RDONLY)
    try:
        reply = _raw_call(private_bus.address, "Install", "sha{sv}", ["*", 8, options], [fd])
    finally:
        os.close(fd)
    assert reply.message_type == MessageType.METHOD_RETURN, reply.body
    history = json.loads(cli("history", "--json").stdout)
    assert history[0]["State"] == "staged"

    # GetDetails: the same fd rule; one device dict per component with its release
    fd = os.open(cab, os.O_RDONLY)
    try:
        reply = _raw_call(private_bus.address, "GetDetails", "h", [5], [fd])
    finally:
        os.close(fd)
    assert reply.message_type == MessageType.METHOD_RETURN, reply.body
    (details,) = reply.body[0]
    assert details["Name"].value == "Platform firmware runtime code injection"
    (release,) = details["Release"].value
    assert release["AppstreamId"].value == "org.example.pfru"
    assert release["Version"].value == "4"

    # no fd at all: fwupd's "wrong number of file descriptors"
    reply = _raw_call(private_bus.address, "Install", "sha{sv}", ["*", 0, options], [])
    assert reply.message_type == MessageType.ERROR
    assert reply.error_name == "org.freedesktop.fwupd.Internal"

    # a raw capsule is not a cabinet
    fd = os.open(sample, os.O_RDONLY)
    try:
        reply = _raw_call(private_bus.address, "Install", "sha{sv}", ["*", 3, options], [fd])
    finally:
        os.close(fd)
    assert reply.error_name == "org.freedesktop.fwupd.InvalidFile"
    assert "not a firmware cabinet" in reply.body[0]


def test_the_native_api_has_no_stray_objects(compat: DaemonProcess, cli: Cli) -> None:
    devices = json.loads(cli("get-devices", "--json").stdout)
    assert devices  # the native API is unaffected by the compat connection


def _members(xml_text: str) -> set[tuple[str, ...]]:
    import xml.etree.ElementTree as ET

    root = ET.fromstring(xml_text)
    (iface,) = [i for i in root.iter("interface") if i.get("name") == FWUPD]
    members: set[tuple[str, ...]] = set()
    for element in iface:
        args = tuple(
            f"{a.get('direction', 'out' if element.tag == 'signal' else 'in')}:"
            f"{a.get('name', '')}:{a.get('type')}"
            for a in element.findall("arg")
        )
        members.add((element.tag, element.get("name", ""), element.get("type", ""), *args))
    return members


def test_introspection_matches_the_xml_contract(compat: DaemonProcess, bctl: Bctl) -> None:
    reply = bctl(
        "--json=short", "call", FWUPD, "/", "org.freedesktop.DBus.Introspectable", "Introspect"
    )
    live = json.loads(reply.stdout)["data"][0]
    repo = Path(__file__).resolve().parents[2]
    contract = (repo / "dbus" / "org.freedesktop.fwupd.xml").read_text()
    assert _members(live) == _members(contract)


def test_the_bus_policy_lets_only_root_own_the_name(bus_dir: str) -> None:
    from livefw.testing import NOBODY, as_user

    if os.geteuid() != 0:
        pytest.skip("needs root to run a client as another uid")
    repo = Path(__file__).resolve().parents[2]
    bus = PrivateBus(bus_dir, policy_files=[str(repo / "dbus" / "org.freedesktop.fwupd.conf")])
    bus.start()
    try:
        owner = (
            "import asyncio, sys\n"
            "from dbus_next.aio import MessageBus\n"
            "async def main():\n"
            "    bus = await MessageBus(bus_address=sys.argv[1]).connect()\n"
            "    try:\n"
            "        print(await bus.request_name('org.freedesktop.fwupd'))\n"
            "    except Exception as error:\n"
            "        print(type(error).__name__, error)\n"
            "asyncio.run(main())\n"
        )
        command = [sys.executable, "-c", owner, bus.address]
        as_root = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert "PRIMARY_OWNER" in as_root.stdout, as_root
        as_nobody = subprocess.run(
            as_user(NOBODY, command), capture_output=True, text=True, timeout=60
        )
        assert "not allowed to own" in as_nobody.stdout, as_nobody
    finally:
        bus.stop()
