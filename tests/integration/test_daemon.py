"""livefwd on a private bus: CLI, busctl, polkit, hotplug, history across kills."""

import json
import os
import signal
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from livefw.testing import NOBODY, Cli, DaemonProcess, PolkitMock, PrivateBus

REPO = Path(__file__).resolve().parents[2]
BUS = "org.livefw.Daemon1"
MANAGER = "/org/livefw/Daemon1"
MANAGER_IFACE = "org.livefw.Daemon1.Manager"
BL31_ID = "dd56bc21c39001b82ba491d91322037136f95e90"  # sha1("lfa:47d4086d-...")
BL33_ID = "0900a46cf2b97d970659fb9ce51b4931866ebde1"
DEVICE_PATH = f"{MANAGER}/devices/{BL31_ID}"


def devices(cli: Cli) -> dict[str, dict[str, Any]]:
    """The LFA devices (the default machine has every technology's devices)."""
    listed = json.loads(cli("get-devices", "--json").stdout)
    return {d["Name"]: d for d in listed if d["Plugin"] == "lfa"}


def history(cli: Cli) -> list[dict[str, Any]]:
    return list(json.loads(cli("history", "--json").stdout))


# ----------------------------------------------------------------------- CLI


def test_cli_lists_shows_activates_and_records_history(daemon: DaemonProcess, cli: Cli) -> None:
    listed = devices(cli)
    assert set(listed) == {"TF-A BL31 runtime", "TF-RMM", "BL33 non-secure payload"}
    bl31 = listed["TF-A BL31 runtime"]
    assert bl31["Id"] == BL31_ID
    assert bl31["Plugin"] == "lfa"
    assert bl31["VersionPending"] == "2.14"
    assert "needs-activation" in bl31["Flags"]

    shown = cli("get-device", "bl31").stdout
    assert "TF-A BL31 runtime" in shown
    assert "2.14" in shown

    result = cli("activate", BL31_ID[:8])
    assert "activate 2.13 -> 2.14: success" in result.stdout
    assert devices(cli)["TF-A BL31 runtime"]["Version"] == "2.14"

    (entry,) = history(cli)
    assert (entry["State"], entry["VersionOld"], entry["VersionNew"]) == ("success", "2.13", "2.14")
    assert entry["CallerUid"] == os.geteuid()
    assert "TF-A BL31 runtime" in cli("history").stdout


@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        (("activate", "BL33"), 5, "not activation-capable"),
        (("activate", "TF-RMM"), 7, "no pending image"),
        (("get-device", "no-such-device"), 3, "no device matches"),
        (("activate",), 2, "name a device"),
        (("cancel", "bl31"), 7, "no activation in progress"),
    ],
)
def test_cli_exit_codes(
    daemon: DaemonProcess, cli: Cli, args: tuple[str, ...], code: int, text: str
) -> None:
    result = cli(*args, check=False)
    assert result.returncode == code, result.stderr
    assert text in result.stderr
    assert history(cli) == []


def test_cli_without_daemon_exits_unavailable(private_bus: PrivateBus, cli: Cli) -> None:
    result = cli("get-devices", check=False)
    assert result.returncode == 69
    assert "livefwd is not running" in result.stderr


def test_plugins_command_lists_probe_results(daemon: DaemonProcess, cli: Cli) -> None:
    plugins = {p["Name"]: p for p in json.loads(cli("plugins", "--json").stdout)}
    assert plugins["lfa"]["Result"] == "ok"
    assert plugins["lfa"]["Devices"] == 3


def test_activate_pending_activates_every_pending_device(daemon: DaemonProcess, cli: Cli) -> None:
    cli("sim", "stage", "rmm", "--version", "0.8")
    result = cli("activate", "--pending")
    assert result.stdout.count(": success") == 2
    assert cli("activate", "--pending", check=False).returncode == 7


# -------------------------------------------------------------------- busctl


def test_busctl_tree_introspect_properties_and_activate(
    daemon: DaemonProcess, bctl: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    tree = bctl("tree", BUS).stdout
    assert DEVICE_PATH in tree

    introspection = bctl("introspect", BUS, DEVICE_PATH).stdout
    assert "org.livefw.Daemon1.Device" in introspection
    assert ".VersionPending" in introspection

    assert bctl("get-property", BUS, MANAGER, MANAGER_IFACE, "Status").stdout.strip() == (
        's "idle"'
    )
    version = bctl("get-property", BUS, DEVICE_PATH, "org.livefw.Daemon1.Device", "Version")
    assert version.stdout.strip() == 's "2.13"'

    reply = bctl(
        "--timeout=120",
        "--json=short",
        "call",
        BUS,
        MANAGER,
        MANAGER_IFACE,
        "Activate",
        "sa{sv}",
        BL31_ID,
        "0",
    )
    entry = json.loads(reply.stdout)["data"][0]
    assert entry["State"]["data"] == "success"
    version = bctl("get-property", BUS, DEVICE_PATH, "org.livefw.Daemon1.Device", "Version")
    assert version.stdout.strip() == 's "2.14"'


def test_errors_have_livefw_names(
    daemon: DaemonProcess, bctl: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    result = bctl(
        "call", BUS, MANAGER, MANAGER_IFACE, "Activate", "sa{sv}", BL33_ID, "0", check=False
    )
    assert result.returncode != 0
    assert "not activation-capable" in result.stderr
    result = bctl(
        "call",
        BUS,
        MANAGER,
        MANAGER_IFACE,
        "Activate",
        "sa{sv}",
        BL31_ID,
        "1",
        "bogus",
        "b",
        "true",
        check=False,
    )
    assert "unknown options" in result.stderr


def test_busctl_reports_error_names(
    daemon: DaemonProcess, bctl: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    """busctl prints only messages; check the names with a monitor-free raw call."""
    import asyncio

    from livefw.cli.client import CallError, Client

    async def run() -> list[str]:
        client = await Client.connect(daemon.bus.address)
        names = []
        try:
            for args in ((BL33_ID, {}), ("0" * 40, {})):
                try:
                    await client.call("Activate", "sa{sv}", list(args))
                except CallError as error:
                    names.append(error.name)
        finally:
            await client.close()
        return names

    assert asyncio.run(run()) == [
        "org.livefw.Daemon1.Error.NotSupported",
        "org.livefw.Daemon1.Error.NotFound",
    ]


# ------------------------------------------------------------------ contract


def _members(xml_text: str, name: str) -> set[tuple[str, ...]]:
    root = ET.fromstring(xml_text)
    (iface,) = [i for i in root.iter("interface") if i.get("name") == name]
    members: set[tuple[str, ...]] = set()
    for element in iface:
        if element.tag == "property":
            members.add(
                (
                    "property",
                    element.get("name", ""),
                    element.get("type", ""),
                    element.get("access", ""),
                )
            )
        elif element.tag in ("method", "signal"):
            args = tuple(
                f"{a.get('direction', 'out' if element.tag == 'signal' else 'in')}:"
                f"{a.get('name', '')}:{a.get('type')}"
                for a in element.findall("arg")
            )
            members.add((element.tag, element.get("name", ""), *args))
    return members


@pytest.mark.parametrize(
    ("path", "interface"),
    [(MANAGER, "org.livefw.Daemon1.Manager"), (DEVICE_PATH, "org.livefw.Daemon1.Device")],
)
def test_introspection_matches_the_xml_contract(
    daemon: DaemonProcess,
    bctl: Callable[..., subprocess.CompletedProcess[str]],
    path: str,
    interface: str,
) -> None:
    reply = bctl(
        "--json=short", "call", BUS, path, "org.freedesktop.DBus.Introspectable", "Introspect"
    )
    live = json.loads(reply.stdout)["data"][0]
    contract = (REPO / "dbus" / f"{interface}.xml").read_text()
    assert _members(live, interface) == _members(contract, interface)


def test_object_manager_signals_come_from_the_manager_path(daemon: DaemonProcess, cli: Cli) -> None:
    monitor = cli.popen("monitor", "--count", "2", "--timeout", "30")
    time.sleep(0.5)  # let the monitor subscribe
    # no uevent for LFA images (docs/kernel.md, Uevents): `livefw refresh` rescans
    cli("sim", "add", "lfa", "guid=11111111-2222-3333-4444-555555555555", "pending=3.1")
    cli("refresh")
    cli("sim", "remove", "11111111")
    cli("refresh")
    out, err = monitor.communicate(timeout=60)
    assert "added /org/livefw/Daemon1/devices/" in out, err
    assert "(LFA image 11111111-2222-3333-4444-555555555555)" in out
    assert "removed /org/livefw/Daemon1/devices/" in out


def test_property_changes_are_signalled(daemon: DaemonProcess, cli: Cli) -> None:
    monitor = cli.popen("monitor", "--json", "--timeout", "20")
    time.sleep(0.5)
    cli("activate", "bl31")
    time.sleep(0.5)
    monitor.send_signal(signal.SIGINT)
    out, _ = monitor.communicate(timeout=30)
    events = [json.loads(chunk) for chunk in _json_objects(out)]
    changes = [e for e in events if e["signal"] == "PropertiesChanged"]
    assert any(e["path"] == DEVICE_PATH and e["body"][1].get("Version") == "2.14" for e in changes)
    assert any(e["path"] == MANAGER and "Percentage" in e["body"][1] for e in changes)


def _json_objects(text: str) -> list[str]:
    decoder, index, found = json.JSONDecoder(), 0, []
    while index < len(text):
        if text[index].isspace():
            index += 1
            continue
        _, end = decoder.raw_decode(text, index)
        found.append(text[index:end])
        index = end
    return found


# --------------------------------------------------------------- authorization


def test_polkit_denied_caller_gets_auth_failed_and_nothing_changes(
    daemon: DaemonProcess, polkit: PolkitMock, cli: Cli
) -> None:
    polkit.allow_unknown(False)
    polkit.set_allowed([])
    result = cli("activate", "bl31", check=False)
    assert result.returncode == 4
    assert "not authorized" in result.stderr
    assert devices(cli)["TF-A BL31 runtime"]["Version"] == "2.13"
    assert history(cli) == []
    polkit.set_allowed(["org.livefw.daemon1.activate"])
    cli("activate", "bl31")
    assert devices(cli)["TF-A BL31 runtime"]["Version"] == "2.14"


def test_without_polkit_only_uid_0_may_activate(
    daemon_factory: Callable[..., DaemonProcess], cli: Cli
) -> None:
    daemon_factory()
    denied = cli("activate", "bl31", check=False, uid=NOBODY)
    assert denied.returncode == 4
    assert "polkit is not available" in denied.stderr
    assert history(cli) == []
    # reading needs no authorization
    assert "TF-A BL31 runtime" in cli("get-devices", uid=NOBODY).stdout
    cli("activate", "bl31")
    assert history(cli)[0]["State"] == "success"


def test_polkit_required_refuses_without_polkit(
    daemon_factory: Callable[..., DaemonProcess], cli: Cli
) -> None:
    daemon_factory(config_text='[auth]\npolkit = "required"\n')
    result = cli("activate", "bl31", check=False)
    assert result.returncode == 4
    assert "needs polkit" in result.stderr


# ------------------------------------------------------ config, kills, shutdown


def test_bad_config_is_one_line_naming_the_key(private_bus: PrivateBus, state_dir: Path) -> None:
    config = state_dir / "bad.conf"
    config.write_text("[daemon]\nshutdown_timeout = -5\n")
    process = DaemonProcess(private_bus, str(state_dir), config=str(config))
    process.start(wait=False)
    assert process.wait_exit(30) == 78
    lines = process.log().strip().splitlines()
    assert lines == [lines[0]]
    assert "daemon.shutdown_timeout" in lines[0]


def test_sigkill_mid_activation_is_reconciled_at_next_start(
    daemon_factory: Callable[..., DaemonProcess], polkit: PolkitMock, cli: Cli
) -> None:
    daemon = daemon_factory()
    cli("sim", "set", "lfa", "activate_seconds=30")
    activation = cli.popen("activate", "bl31")
    deadline = time.monotonic() + 20
    while not history(cli):
        assert time.monotonic() < deadline, "no pending history row appeared"
        time.sleep(0.1)
    assert history(cli)[0]["State"] == "pending"  # written before the irreversible step
    daemon.kill()
    activation.wait(30)
    cli("sim", "set", "lfa", "activate_seconds=0")
    daemon_factory()
    (entry,) = history(cli)
    assert entry["State"] == "failed"
    assert "did not complete" in entry["Reason"]
    assert "interrupted" not in entry["Reason"]
    assert devices(cli)["TF-A BL31 runtime"]["UpdateState"] == "failed"


def test_sigterm_lets_an_activation_in_flight_finish(
    daemon_factory: Callable[..., DaemonProcess], polkit: PolkitMock, cli: Cli
) -> None:
    daemon = daemon_factory()
    cli("sim", "set", "lfa", "activate_seconds=2")
    activation = cli.popen("activate", "bl31")
    deadline = time.monotonic() + 20
    while not history(cli):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.wait_exit(60) == 0
    out, err = activation.communicate(timeout=30)
    assert activation.returncode == 0, err
    assert "success" in out
    assert "shutdown_waiting" in daemon.log()
    daemon_factory()
    assert history(cli)[0]["State"] == "success"
