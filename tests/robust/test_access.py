"""Access: every privileged method refuses a denied caller, and nothing changes.

The daemon runs on a private bus with the polkit mock denying every action; the
caller is root, so the denial is polkit's, not a uid check. For each privileged
method of every interface (Manager, Telemetry, Pfru, Lfa, Fwctl, LiveUpdate,
LiveUpdateSession, and the fwupd-compatible API) the call must fail with AuthFailed and leave the
simulated machine, the history and the session list as they were. Caller-supplied
names and paths (session names, the Install ``filename`` option, device ids, sim
device keys) are refused or used as names only, never as paths.

Tested elsewhere, not repeated here: another uid cannot see or use a live-update
session (tests/integration/test_liveupdate_bus.py,
test_another_uid_cannot_see_or_use_a_session); the shipped bus policy in a private
dbus-daemon with a non-root connection (tests/integration/test_install.py,
test_policy_only_root_owns_the_name_and_anyone_reads).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from livefw.bus.backend import Variant
from livefw.cabinet_build import make_cabinet, make_metainfo
from livefw.cli.client import CallError, Client
from livefw.kernel.uapi.fwctl import pack_get_supported_features
from livefw.testing import Cli, DaemonProcess, PolkitMock, PrivateBus

MANAGER = "org.livefw.Daemon1.Manager"
DEVICES = "/org/livefw/Daemon1/devices/"
TELEMETRY = "org.livefw.Daemon1.Telemetry"
FWCTL = "org.livefw.Daemon1.Fwctl"
LIVEUPDATE = "org.livefw.Daemon1.LiveUpdate"
SESSION = "org.livefw.Daemon1.LiveUpdateSession"
AUTH_FAILED = "org.livefw.Daemon1.Error.AuthFailed"
FWUPD_AUTH_FAILED = "org.freedesktop.fwupd.AuthFailed"

CONFIG = "[install]\nonly_trusted = false\n[plugins.fwctl]\nallow_full_debug = true\n"


def _state(state_dir: Path) -> str:
    """The simulated machine and the history, as a digest."""
    machine = json.loads((state_dir / "sim" / "machine.json").read_text())
    machine.pop("faults", None)
    digest = hashlib.sha256(json.dumps(machine, sort_keys=True).encode())
    return digest.hexdigest()


async def _history(client: Client) -> list[Any]:
    (rows,) = await client.call("GetHistory", "a{sv}", [{}])
    return list(rows)


def _mlx5(opcode: int) -> bytes:
    """A 16-byte mlx5 mailbox header (opcode big-endian) and no body."""
    return opcode.to_bytes(2, "big") + bytes(14)


def _tree(directory: Path) -> list[str]:
    return sorted(str(p) for p in directory.rglob("*"))


def _device(devices: list[dict[str, Any]], plugin: str, words: str) -> dict[str, Any]:
    found = [d for d in devices if d["Plugin"] == plugin and words in d["Name"].lower()]
    assert found, (plugin, words, [d["Name"] for d in devices])
    return found[0]


@pytest.fixture
def denied(
    daemon_factory: Callable[..., DaemonProcess], private_bus: PrivateBus, state_dir: Path
) -> tuple[DaemonProcess, PolkitMock]:
    mock = PolkitMock(private_bus).start()
    mock.allow_unknown(True)
    process = daemon_factory(["--fwupd-compat"], config_text=CONFIG)
    yield process, mock
    mock.stop()


async def test_denied_caller_changes_nothing(
    denied: tuple[DaemonProcess, PolkitMock],
    private_bus: PrivateBus,
    state_dir: Path,
    cli: Cli,
    tmp_path: Path,
) -> None:
    _, mock = denied
    # a session to call the session methods on, made while polkit still allows
    cli("liveupdate", "create", "keep")
    payload = tmp_path / "pfru.cap"
    cli("sim", "sample", "pfru/code-injection", "-o", str(payload))
    client = await Client.connect(private_bus.address)
    try:
        devices = await client.devices()
        lfa = _device(devices, "lfa", "bl31")
        pfru = _device(devices, "pfru", "code injection")
        telemetry = _device(devices, "pfru", "code injection")
        orchestrator = DEVICES + _device(devices, "liveupdate", "live update")["Id"]
        fwctl = _device(devices, "fwctl", "cxl")
        (sessions,) = await client.call("ListSessions", path=orchestrator, interface=LIVEUPDATE)
        (session,) = [row[4] for row in sessions if row[0] == "keep"]
        cab = tmp_path / "pfru.cab"
        cab.write_bytes(
            make_cabinet(
                {
                    "firmware.metainfo.xml": make_metainfo(
                        appstream_id="org.example.pfru",
                        guids=list(pfru["Guids"]),
                        version="4",
                        payload_name="firmware.bin",
                        payload=payload.read_bytes(),
                    ),
                    "firmware.bin": payload.read_bytes(),
                }
            )
        )

        mock.allow_unknown(False)
        mock.set_allowed([])
        before = (_state(state_dir), await _history(client), sessions)

        def fd(path: Path) -> int:
            return os.open(path, os.O_RDONLY)

        lfa_id, pfru_id = lfa["Id"], pfru["Id"]
        calls: list[tuple[str, str, str, str, list[Any], list[int]]] = [
            ("/org/livefw/Daemon1", MANAGER, "Activate", "sa{sv}", [lfa_id, {}], []),
            ("/org/livefw/Daemon1", MANAGER, "Cancel", "sa{sv}", [pfru_id, {}], []),
            ("/org/livefw/Daemon1", MANAGER, "Install", "sha{sv}", [pfru_id, 0, {}], [fd(payload)]),
            (
                "/org/livefw/Daemon1",
                MANAGER,
                "Install",
                "sha{sv}",
                ["", 0, {"activate": Variant("b", True)}],
                [fd(payload)],
            ),
            (
                DEVICES + telemetry["Id"],
                TELEMETRY,
                "SetLogInfo",
                "a{sv}",
                [{"level": Variant("s", "verbose")}],
                [],
            ),
            (DEVICES + telemetry["Id"], TELEMETRY, "Read", "", [], []),
            (DEVICES + telemetry["Id"], TELEMETRY, "ReadSince", "t", [0], []),
            (DEVICES + telemetry["Id"], TELEMETRY, "GetDataInfo", "", [], []),
            (DEVICES + pfru_id, "org.livefw.Daemon1.Pfru", "SetRevision", "u", [2], []),
            (DEVICES + pfru_id, "org.livefw.Daemon1.Pfru", "QueryRevisions", "", [], []),
            (
                DEVICES + lfa_id,
                "org.livefw.Daemon1.Lfa",
                "SetActivationOptions",
                "a{sv}",
                [{"force-cpu-rendezvous": Variant("b", False)}],
                [],
            ),
            (orchestrator, LIVEUPDATE, "CreateSession", "sa{sv}", ["new", {}], []),
            (orchestrator, LIVEUPDATE, "RetrieveSession", "sa{sv}", ["keep", {}], []),
            (orchestrator, LIVEUPDATE, "Kexec", "a{sv}", [{}], []),
            (session, SESSION, "Preserve", "hta{sv}", [0, 7, {}], [fd(payload)]),
            (session, SESSION, "ListTokens", "", [], []),
            (session, SESSION, "Retrieve", "t", [7], []),
            (session, SESSION, "Finish", "a{sv}", [{}], []),
            (session, SESSION, "Drop", "", [], []),
            (session, SESSION, "GetSessionFd", "", [], []),
        ]
        # every fwctl scope, each with a request that needs exactly that scope
        mlx5 = DEVICES + _device(devices, "fwctl", "mlx5")["Id"]
        for path, scope, request in (
            (DEVICES + fwctl["Id"], "configuration", pack_get_supported_features(64, 0)),
            (mlx5, "debug-read", _mlx5(0x107)),  # QUERY_PAGES
            (mlx5, "debug-write", _mlx5(0x820)),  # SET_DIAGNOSTIC_PARAMS
            (mlx5, "debug-write-full", _mlx5(0xFFF)),  # not in the kernel's table
        ):
            calls.append((path, FWCTL, "Rpc", "saya{sv}", [scope, request, {}], []))
        for path, interface, member, signature, body, fds in calls:
            with pytest.raises(CallError) as info:
                await client.call(
                    member, signature, body, path=path, interface=interface, unix_fds=fds
                )
            for descriptor in fds:
                os.close(descriptor)
            assert info.value.name == AUTH_FAILED, (member, info.value.name, info.value.message)
        # the fwupd-compatible API: fwupd's own error names
        for member, signature, body, fds in (
            ("Install", "sha{sv}", [pfru_id, 0, {"filename": Variant("s", "pfru.cab")}], [fd(cab)]),
            ("Activate", "s", [lfa_id], []),
        ):
            with pytest.raises(CallError) as info:
                await client.call(
                    member,
                    signature,
                    body,
                    path="/",
                    interface="org.freedesktop.fwupd",
                    destination="org.freedesktop.fwupd",
                    unix_fds=fds,
                )
            for descriptor in fds:
                os.close(descriptor)
            assert info.value.name == FWUPD_AUTH_FAILED, (member, info.value.message)
        (after_sessions,) = await client.call(
            "ListSessions", path=orchestrator, interface=LIVEUPDATE
        )
        assert (_state(state_dir), await _history(client), after_sessions) == before
    finally:
        await client.close()


async def test_fwctl_scope_escalation_is_refused(
    daemon: DaemonProcess, polkit: PolkitMock, private_bus: PrivateBus, cli: Cli, state_dir: Path
) -> None:
    """Allowed the configuration scope only: a debug-write RPC is refused by polkit,
    and a request that needs more than the scope it is sent at never reaches the
    device (the kernel's rule, checked before anything is sent)."""
    polkit.allow_unknown(False)
    polkit.set_allowed(["org.livefw.daemon1.fwctl-configuration"])
    client = await Client.connect(private_bus.address)
    try:
        fwctl = _device(await client.devices(), "fwctl", "mlx5")
        path = DEVICES + fwctl["Id"]
        before = _state(state_dir)
        # mlx5 SET_DIAGNOSTIC_PARAMS (0x820) needs debug-write; sent at configuration
        request = bytes.fromhex("08200000000000000000000000000000")
        with pytest.raises(CallError) as info:
            await client.call(
                "Rpc", "saya{sv}", ["configuration", request, {}], path=path, interface=FWCTL
            )
        assert info.value.short == "PermissionDenied", info.value.message
        with pytest.raises(CallError) as info:
            await client.call(
                "Rpc", "saya{sv}", ["debug-write", request, {}], path=path, interface=FWCTL
            )
        assert info.value.name == AUTH_FAILED
        assert _state(state_dir) == before
    finally:
        await client.close()


#: (a NUL cannot be sent at all: D-Bus strings exclude it and the bus drops the sender)
TRAVERSALS = ["../../etc/passwd", "/etc/passwd", "a/../../b", "..", ".", "", "a" * 300]


async def test_caller_names_never_become_paths(
    daemon: DaemonProcess, private_bus: PrivateBus, cli: Cli, state_dir: Path, tmp_path: Path
) -> None:
    client = await Client.connect(private_bus.address)
    outside = tmp_path / "outside"
    outside.mkdir()
    try:
        before = _tree(state_dir)
        devices = await client.devices()
        orchestrator = DEVICES + _device(devices, "liveupdate", "live update")["Id"]
        for name in TRAVERSALS:
            # session names: refused (kernel names are bounded and have no slash)
            with pytest.raises(CallError) as info:
                await client.call(
                    "CreateSession",
                    "sa{sv}",
                    [name, {}],
                    path=orchestrator,
                    interface=LIVEUPDATE,
                )
            assert info.value.short in ("InvalidArgument", "NotFound"), (name, info.value.message)
            # device ids: never looked up as a path
            for member in ("GetDevice", "GetReleases"):
                with pytest.raises(CallError) as info:
                    await client.call(member, "s", [name])
                assert info.value.short in ("NotFound", "InvalidArgument"), (member, name)
        # Install's filename option is a label in the history, not a path to open or write
        payload = tmp_path / "pfru.cap"
        cli("sim", "sample", "pfru/code-injection", "-o", str(payload))
        pfru = _device(devices, "pfru", "code injection")
        descriptor = os.open(payload, os.O_RDONLY)
        try:
            await client.call(
                "Install",
                "sha{sv}",
                [pfru["Id"], 0, {"filename": Variant("s", f"../../{outside.name}/evil")}],
                unix_fds=[descriptor],
            )
        finally:
            os.close(descriptor)
        assert list(outside.iterdir()) == []
        after = _tree(state_dir)
        created = set(after) - set(before)
        assert all(p.startswith(str(state_dir)) for p in created)
        # sim device keys: a traversal is no device
        for key in ("../../etc", "/etc/passwd"):
            result = cli("sim", "remove", key, check=False)
            assert result.returncode == 3, result.stderr
    finally:
        await client.close()
