"""fwctl over a private bus: properties, Rpc, polkit per scope, errors, hotplug, CLI."""

import asyncio
import hashlib
import json
import re
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from livefw.bus.backend import Variant
from livefw.cli.client import CallError, Client
from livefw.kernel.uapi import fwctl as uapi
from livefw.testing import DaemonProcess, PolkitMock

REPO = Path(__file__).resolve().parents[2]
BUS = "org.livefw.Daemon1"
IFACE = "org.livefw.Daemon1.Fwctl"
CXL_ID = hashlib.sha1(b"fwctl:cxl@0000:0d:00.0").hexdigest()
MLX5_ID = hashlib.sha1(b"fwctl:mlx5@0000:08:00.0").hexdigest()
CXL_PATH = f"/org/livefw/Daemon1/devices/{CXL_ID}"
MLX5_PATH = f"/org/livefw/Daemon1/devices/{MLX5_ID}"
MEDIA = "6b0c3a2e-6f1d-4c1e-9a53-1f2d3c4b5a60"
SET_MEDIA = uapi.pack_set_feature(MEDIA, b"\x07\x07", version=1)


def rpc(
    daemon: DaemonProcess,
    path: str,
    scope: str,
    request: bytes,
    options: dict[str, Variant] | None = None,
) -> Any:
    """Call Rpc; return [response, info] or the CallError."""

    async def run() -> Any:
        client = await Client.connect(daemon.bus.address)
        try:
            return await client.call(
                "Rpc", "saya{sv}", [scope, request, options or {}], path=path, interface=IFACE
            )
        except CallError as error:
            return error
        finally:
            await client.close()

    return asyncio.run(run())


def sim_rpcs(cli: Any) -> tuple[int, bool]:
    """(RPCs that reached the simulated kernel, kernel tainted) from `livefw sim devices`."""
    total, tainted = 0, False
    for device in json.loads(cli("sim", "devices", "--json").stdout):
        if device["component"] == "fwctl":
            total += int(re.search(r"(\d+) RPCs", device["summary"]).group(1))  # type: ignore[union-attr]
            tainted = tainted or "kernel tainted" in device["summary"]
    return total, tainted


def test_list_info_and_features_through_the_cli(daemon: DaemonProcess, cli: Any) -> None:
    listed = json.loads(cli("fwctl", "list", "--json").stdout)
    assert [(d["Id"], d["DeviceType"], d["Node"]) for d in listed] == [
        (CXL_ID, "cxl", "/dev/fwctl/fwctl0"),
        (MLX5_ID, "mlx5", "/dev/fwctl/fwctl1"),
    ]
    assert listed[0]["Parent"] == "mem0"
    assert listed[0]["PciAddress"] == "0000:0d:00.0"
    # mlx5ctl_probe registers fwctl under the PCI function (drivers/fwctl/mlx5/main.c)
    assert (listed[1]["Parent"], listed[1]["Driver"]) == ("0000:08:00.0", "mlx5_core")
    assert listed[1]["Plugin"] == "fwctl"
    table = cli("fwctl", "list").stdout.splitlines()
    header = next(line for line in table if "Node" in line)
    assert [title in header for title in ("Id", "Type", "Parent", "Driver")] == [True] * 4
    row = next(line for line in table if CXL_ID[:8] in line)
    assert [cell in row for cell in ("/dev/fwctl/fwctl0", "cxl", "mem0")] == [True] * 3
    info = json.loads(cli("fwctl", "info", "mlx5", "--json").stdout)
    assert info["Info"]["uctx-caps"] == uapi.MLX5_UCTX_CAP_TOOLS_RESOURCES
    features = json.loads(cli("fwctl", "features", CXL_ID[:8], "--json").stdout)
    assert len(features) == 6
    by_uuid = {f["uuid"]: f for f in features}
    assert by_uuid[MEDIA]["set-scope"] == "debug-write"
    assert by_uuid["96dad7d6-fde8-482b-a733-75774e06db8a"]["set-scope"] == "kernel-owned"
    assert by_uuid[MEDIA]["set-saved-across-reset"] is True
    table = cli("fwctl", "features", "CXL memory").stdout
    assert "patrol scrub control" in table
    assert "always saved across reset" in table
    assert cli("fwctl", "features", "mlx5", check=False).returncode == 5


def test_introspection_matches_the_xml_contract(
    daemon: DaemonProcess, bctl: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    def members(text: str) -> set[tuple[str, ...]]:
        (iface,) = [i for i in ET.fromstring(text).iter("interface") if i.get("name") == IFACE]
        found: set[tuple[str, ...]] = set()
        for element in iface:
            args = tuple(
                f"{a.get('direction', 'in')}:{a.get('name', '')}:{a.get('type')}"
                for a in element.findall("arg")
            )
            found.add((element.tag, element.get("name", ""), element.get("type", ""), *args))
        return found

    reply = bctl("--json=short", "call", BUS, CXL_PATH, "org.freedesktop.DBus.Introspectable",
                 "Introspect")  # fmt: skip
    live = json.loads(reply.stdout)["data"][0]
    contract = (REPO / "dbus" / f"{IFACE}.xml").read_text()
    assert members(live) == members(contract)


def test_rpc_over_the_bus_reports_taint_and_length(daemon: DaemonProcess, cli: Any) -> None:
    request = uapi.pack_get_supported_features(48 * 6, 0)
    response, info = rpc(daemon, CXL_PATH, "configuration", request,
                         {"response-size": Variant("u", 40)})  # fmt: skip
    assert len(response) == 40
    assert info["response-length"] == 24 + 6 * 48  # + sizeof(struct fwctl_rpc_cxl_out)
    assert info["tainted"] is False
    response, info = rpc(daemon, CXL_PATH, "debug-write", SET_MEDIA)
    assert info["device-status-name"] == "success"
    assert info["tainted"] is True
    assert sim_rpcs(cli) == (2 + 2, True)  # two at coldplug reading the feature table


def test_bad_input_is_refused_with_nothing_sent(daemon: DaemonProcess, cli: Any) -> None:
    before = sim_rpcs(cli)
    cases = [
        (CXL_PATH, "root", SET_MEDIA, {}, "InvalidArgument"),
        (CXL_PATH, "debug-read", SET_MEDIA, {}, "PermissionDenied"),  # escalation
        (MLX5_PATH, "debug-read", uapi.pack_mlx5_in(0x820), {}, "PermissionDenied"),
        (CXL_PATH, "configuration", b"\x00" * 70000, {}, "InvalidArgument"),
        (CXL_PATH, "configuration", b"", {}, "InvalidArgument"),
        (CXL_PATH, "configuration", SET_MEDIA, {"bogus": Variant("b", True)}, "InvalidArgument"),
        (CXL_PATH, "configuration", SET_MEDIA, {"response-size": Variant("s", "1")},
         "InvalidArgument"),
        (CXL_PATH, "debug-write-full", SET_MEDIA, {}, "NotSupported"),
    ]  # fmt: skip
    for path, scope, request, options, name in cases:
        error = rpc(daemon, path, scope, request, options)
        assert isinstance(error, CallError), (scope, name)
        assert error.name == f"org.livefw.Daemon1.Error.{name}", (scope, error.message)
    assert sim_rpcs(cli) == before
    assert before[1] is False
    result = cli("fwctl", "rpc", "CXL memory", "debug-read", SET_MEDIA.hex(), check=False)
    assert result.returncode == 4  # PermissionDenied: not permitted at this scope
    assert "needs the debug-write scope" in result.stderr


def test_unauthorized_caller_gets_auth_failed_and_nothing_is_sent(
    daemon: DaemonProcess, polkit: PolkitMock, cli: Any
) -> None:
    polkit.allow_unknown(False)
    polkit.set_allowed(["org.livefw.daemon1.fwctl-configuration"])
    before = sim_rpcs(cli)
    error = rpc(daemon, CXL_PATH, "debug-write", SET_MEDIA)
    assert isinstance(error, CallError)
    assert error.name == "org.livefw.Daemon1.Error.AuthFailed"
    assert "fwctl-debug-write" in error.message
    assert sim_rpcs(cli) == before
    # the allowed scope still works
    _response, info = rpc(daemon, MLX5_PATH, "configuration", uapi.pack_mlx5_in(0x101))
    assert info["device-status-name"] == "ok"
    result = cli("fwctl", "rpc", "CXL memory", "debug-write", SET_MEDIA.hex(), check=False)
    assert result.returncode == 4


def test_hotplug_adds_and_removes_objects_while_clients_watch(
    daemon: DaemonProcess, cli: Any
) -> None:
    # one InterfacesAdded carrying both interfaces (Device, Fwctl), one InterfacesRemoved
    monitor = cli.popen("monitor", "--json", "--count", "2", "--timeout", "30")
    time.sleep(0.5)  # let the monitor subscribe
    cli("sim", "add", "fwctl", "type=mlx5", "pci=0000:09:00.0")
    new_id = hashlib.sha1(b"fwctl:mlx5@0000:09:00.0").hexdigest()
    listed = json.loads(cli("fwctl", "list", "--json").stdout)
    assert new_id in [d["Id"] for d in listed]
    cli("sim", "remove", "fwctl/fwctl2")
    out, err = monitor.communicate(timeout=60)
    assert monitor.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines() if line.strip()]
    added = [e for e in events if e["signal"] == "InterfacesAdded"]
    assert len(added) == 1
    assert added[0]["body"][0] == f"/org/livefw/Daemon1/devices/{new_id}"
    assert set(added[0]["body"][1]) == {
        "org.livefw.Daemon1.Device",
        "org.livefw.Daemon1.Fwctl",
    }
    removed = [e for e in events if e["signal"] == "InterfacesRemoved"]
    assert removed[0]["body"][0] == f"/org/livefw/Daemon1/devices/{new_id}"
    # a request to the removed device: nothing to send it to
    error = rpc(daemon, f"/org/livefw/Daemon1/devices/{new_id}", "configuration",
                uapi.pack_mlx5_in(0x101))  # fmt: skip
    assert isinstance(error, CallError)
    result = cli("fwctl", "info", new_id, check=False)
    assert result.returncode == 3


@pytest.mark.parametrize("scope", ["debug-write-full"])
def test_full_debug_enabled_by_configuration(
    daemon_factory: Callable[..., DaemonProcess], polkit: PolkitMock, cli: Any, scope: str
) -> None:
    daemon = daemon_factory(config_text="[plugins.fwctl]\nallow_full_debug = true\n")
    thermal = uapi.pack_set_feature("a7c3d1e4-0b2f-4e7a-8c19-5d6e7f809112", b"\x01", version=1)
    _response, info = rpc(daemon, CXL_PATH, scope, thermal)
    assert info["device-status-name"] == "success"
    assert info["tainted"] is True


def test_busctl_can_call_rpc(
    daemon: DaemonProcess, bctl: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    request = uapi.pack_get_supported_features(0, 0)
    reply = bctl("--json=short", "call", BUS, CXL_PATH, IFACE, "Rpc", "saya{sv}",
                 "configuration", str(len(request)), *(str(b) for b in request),
                 "1", "response-size", "u", "16")  # fmt: skip
    response, info = json.loads(reply.stdout)["data"]
    decoded = uapi.unpack_supported_features(bytes(response))
    assert decoded.supported == 6
    assert info["tainted"]["data"] is False
    denied = bctl("call", BUS, CXL_PATH, IFACE, "Rpc", "saya{sv}", "sudo", "0", "0", check=False)
    assert denied.returncode != 0
    assert "unknown fwctl scope" in denied.stderr


def test_cli_rpc_says_what_the_kernel_did(daemon: DaemonProcess, cli: Any) -> None:
    """Set Feature: saved across reset, carried by the kernel; mlx5: length unknown (14)."""
    shown = cli("fwctl", "rpc", "CXL memory", "debug-write", SET_MEDIA.hex()).stdout
    assert "saved-across-reset" in shown
    assert "saved this Set Feature across reset" in shown
    assert "in 1 mailbox command(s)" in shown
    assert "the reply is 8 + payload-length = 8 bytes" in shown
    done = json.loads(cli("fwctl", "rpc", "CXL memory", "debug-write", SET_MEDIA.hex(),
                          "--json").stdout)  # fmt: skip
    assert done["info"]["saved-across-reset"] is True
    query = uapi.pack_mlx5_in(uapi.MLX5_OP_QUERY_ISSI).hex()
    shown = cli("fwctl", "rpc", "mlx5", "debug-read", query, "--response-size", "256").stdout
    assert "does not report how long the answer is" in shown
    assert "whole 256-byte buffer" in shown
    assert "(156 trailing zero bytes not shown)" in shown  # QUERY_ISSI answers 100 bytes
    # transfer flags the kernel would ignore are refused before anything is sent
    before = sim_rpcs(cli)
    abort = uapi.pack_set_feature(MEDIA, b"\x07", version=1, flags=4).hex()
    refused = cli("fwctl", "rpc", "CXL memory", "debug-write", abort, check=False)
    assert refused.returncode == 8
    assert "ignores transfer flags" in refused.stderr
    assert sim_rpcs(cli)[0] == before[0]


@pytest.mark.parametrize(("kernel", "expected"), [("6.17", "NotSupported"), ("6.18", None)])
def test_mlx5_allow_list_follows_the_kernel_release(
    daemon_factory: Callable[..., DaemonProcess],
    polkit: PolkitMock,
    kernel: str,
    expected: str | None,
) -> None:
    daemon = daemon_factory(["--sim-kernel", kernel])
    modify = uapi.pack_mlx5_in(uapi.MLX5_OP_MODIFY_CONG_STATUS)
    reply = rpc(daemon, MLX5_PATH, "configuration", modify)
    if expected is None:
        assert reply[1]["device-status-name"] == "bad-operation"  # reached the firmware
    else:
        assert isinstance(reply, CallError)
        assert reply.name == f"org.livefw.Daemon1.Error.{expected}"
        assert "Linux 6.18" in reply.message
