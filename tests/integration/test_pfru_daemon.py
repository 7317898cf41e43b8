"""PFRU over a private bus: CLI and busctl install, activate and telemetry."""

import asyncio
import hashlib
import json
import select
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

from livefw.cli.client import CallError, Client
from livefw.testing import NOBODY, Cli, DaemonProcess, PolkitMock

REPO = Path(__file__).resolve().parents[2]
BUS = "org.livefw.Daemon1"
MANAGER = "/org/livefw/Daemon1"
TELEMETRY = "org.livefw.Daemon1.Telemetry"
CODE_ID = hashlib.sha1(b"pfru:acpi_pfr_update0/code-injection").hexdigest()
DRIVER_ID = hashlib.sha1(b"pfru:acpi_pfr_update0/driver-update").hexdigest()
CODE_PATH = f"{MANAGER}/devices/{CODE_ID}"

Busctl = Callable[..., subprocess.CompletedProcess[str]]


def device(cli: Cli, device_id: str) -> dict[str, Any]:
    return dict(json.loads(cli("get-device", device_id, "--json").stdout))


def test_install_activate_and_telemetry_with_the_cli(
    daemon: DaemonProcess, cli: Cli, tmp_path: Path
) -> None:
    code = device(cli, CODE_ID)
    assert (code["Plugin"], code["Protocol"], code["Version"]) == ("pfru", "org.livefw.pfru", "3")
    assert device(cli, DRIVER_ID)["Version"] == "2"

    capsule = tmp_path / "code.cap"
    cli("sim", "sample", "pfru/code-injection", "--version", "6", "-o", str(capsule))
    cli("install", str(capsule))  # the device is found from the capsule
    staged = device(cli, CODE_ID)
    assert "needs-activation" in staged["Flags"]
    assert (staged["VersionPending"], staged["UpdateState"]) == ("6", "pending")

    result = cli("activate", "code injection")
    assert "success" in result.stdout
    assert device(cli, CODE_ID)["Version"] == "6"

    telemetry = json.loads(cli("telemetry", "code injection", "--json").stdout)
    assert telemetry["log_level"] == "info"
    assert "code-injection now runtime version 6" in telemetry["text"]
    assert telemetry["data_info"]["max-data-size"] > 0

    cli("telemetry", CODE_ID, "--set-level", "verbose", "--set-type", "history")
    info = json.loads(cli("telemetry", CODE_ID, "--json").stdout)
    assert (info["log_level"], info["log_type"]) == ("verbose", "history")
    assert "activate code-injection: 3 -> 6: success" in info["text"]

    history = json.loads(cli("history", "--json").stdout)
    assert [(e["Kind"], e["State"]) for e in history if e["Plugin"] == "pfru"] == [
        ("activate", "success"),
        ("install", "success"),
    ]


def test_bad_capsules_get_their_own_errors(daemon: DaemonProcess, cli: Cli, tmp_path: Path) -> None:
    expected = {
        "header-v3": "version 3",
        "other-platform": "for platform",
        "downgrade": "anti-rollback",
        "too-large": "EINVAL",
    }
    for kind, text in expected.items():
        path = tmp_path / f"{kind}.cap"
        cli("sim", "sample", "pfru/code-injection", "--broken", kind, "-o", str(path))
        result = cli("install", str(path), CODE_ID, "--allow-older", check=False)
        assert result.returncode == 8, (kind, result.stdout, result.stderr)
        assert text in result.stderr, (kind, result.stderr)
    empty = tmp_path / "empty.cap"
    empty.write_bytes(b"")
    result = cli("install", str(empty), CODE_ID, check=False)
    assert (result.returncode, "empty" in result.stderr) == (8, True)
    code = device(cli, CODE_ID)
    assert "needs-activation" not in code["Flags"]
    assert code["Version"] == "3"
    # only the kernel's EINVAL (too-large) got as far as a history row, and it is closed
    rows = json.loads(cli("history", "--json").stdout)
    assert [(r["State"], "communication buffer" in r["Reason"]) for r in rows] == [("failed", True)]
    assert cli("cancel", CODE_ID, check=False).returncode == 5
    no_telemetry = cli("telemetry", DRIVER_ID, check=False)
    assert no_telemetry.returncode == 5
    assert "no firmware telemetry" in no_telemetry.stderr


def test_livefwd_is_stricter_than_the_kernel_and_says_so(
    daemon: DaemonProcess, cli: Cli, tmp_path: Path
) -> None:
    """Capsules the kernel's applicable_image() accepts, livefwd refuses (issue 14.9)."""
    for kind in ("no-payload-count", "image-past-end", "truncated"):
        path = tmp_path / f"{kind}.cap"
        cli("sim", "sample", "pfru/code-injection", "--broken", kind, "-o", str(path))
        result = cli("install", str(path), CODE_ID, check=False)
        assert result.returncode == 8, (kind, result.stdout, result.stderr)
        message = " ".join(result.stderr.split())
        assert "applicable_image()) checks no lengths or counts and might accept it" in message
        assert "livefw refuses it" in message
    # refused before the kernel: no history row, nothing staged
    assert [r for r in json.loads(cli("history", "--json").stdout) if r["Plugin"] == "pfru"] == []
    assert "needs-activation" not in device(cli, CODE_ID)["Flags"]


def test_busctl_install_activate_and_read_since(
    daemon: DaemonProcess, cli: Cli, bctl: Busctl, tmp_path: Path
) -> None:
    capsule = tmp_path / "driver.cap"
    cli("sim", "sample", "pfru/driver-update", "-o", str(capsule))
    first = json.loads(bctl("--json=short", "call", BUS, CODE_PATH, TELEMETRY, "Read").stdout)
    cursor = first["data"][1]
    # busctl cannot send Unix fds ("UNIX file descriptor not supported as type"), so the
    # capsule is staged with the CLI and activated with busctl
    cli("install", str(capsule), DRIVER_ID)
    assert device(cli, DRIVER_ID)["VersionPending"] == "3"
    reply = bctl(
        "--json=short",
        "--timeout=120",
        "call",
        BUS,
        MANAGER,
        "org.livefw.Daemon1.Manager",
        "Activate",
        "sa{sv}",
        DRIVER_ID,
        "0",
    )
    assert json.loads(reply.stdout)["data"][0]["State"]["data"] == "success"
    assert device(cli, DRIVER_ID)["Version"] == "3"
    reply = json.loads(
        bctl(
            "--json=short", "call", BUS, CODE_PATH, TELEMETRY, "ReadSince", "t", str(cursor)
        ).stdout
    )
    data, new_cursor, lost = reply["data"]
    text = bytes(data).decode()
    assert "driver-update runtime version 8 staged" in text
    assert "boot:" not in text
    assert not lost
    assert new_cursor > cursor
    level = bctl("get-property", BUS, CODE_PATH, TELEMETRY, "LogLevel").stdout.strip()
    assert level == 's "info"'


def test_set_log_info_needs_authorization(
    daemon: DaemonProcess, polkit: PolkitMock, cli: Cli, bctl: Busctl
) -> None:
    polkit.allow_unknown(False)
    polkit.set_allowed([])
    result = cli("telemetry", CODE_ID, "--set-level", "error", check=False, uid=NOBODY)
    assert result.returncode == 4, result.stderr
    # reading needs org.livefw.daemon1.telemetry-read (issue 13.11)
    assert cli("telemetry", CODE_ID, check=False, uid=NOBODY).returncode == 4
    polkit.set_allowed(["org.livefw.daemon1.telemetry-read"])
    assert cli("telemetry", CODE_ID, uid=NOBODY).returncode == 0
    bad = bctl(
        "call",
        BUS,
        CODE_PATH,
        TELEMETRY,
        "SetLogInfo",
        "a{sv}",
        "1",
        "level",
        "s",
        "loud",
        check=False,
    )
    assert "unknown telemetry log level 'loud'" in bad.stderr

    async def error_name() -> str:
        client = await Client.connect(daemon.bus.address)
        try:
            await client.call("ReadSince", "t", [1 << 40], path=CODE_PATH, interface=TELEMETRY)
        except CallError as error:
            return error.name
        finally:
            await client.close()
        return ""

    assert asyncio.run(error_name()) == "org.livefw.Daemon1.Error.InvalidArgument"


def _members(xml_text: str, name: str = TELEMETRY) -> set[tuple[str, ...]]:
    root = ET.fromstring(xml_text)
    (iface,) = [i for i in root.iter("interface") if i.get("name") == name]
    members: set[tuple[str, ...]] = set()
    for element in iface:
        if element.tag == "property":
            members.add(("property", element.get("name", ""), element.get("type", "")))
        else:
            args = tuple(
                f"{a.get('direction', 'in')}:{a.get('name', '')}:{a.get('type')}"
                for a in element.findall("arg")
            )
            members.add((element.tag, element.get("name", ""), *args))
    return members


def test_telemetry_introspection_matches_the_contract(daemon: DaemonProcess, bctl: Busctl) -> None:
    reply = bctl(
        "--json=short", "call", BUS, CODE_PATH, "org.freedesktop.DBus.Introspectable", "Introspect"
    )
    live = json.loads(reply.stdout)["data"][0]
    contract = (REPO / "dbus" / f"{TELEMETRY}.xml").read_text()
    assert _members(live) == _members(contract)
    driver_path = f"{MANAGER}/devices/{DRIVER_ID}"
    reply = bctl(
        "--json=short",
        "call",
        BUS,
        driver_path,
        "org.freedesktop.DBus.Introspectable",
        "Introspect",
    )
    assert TELEMETRY not in json.loads(reply.stdout)["data"][0]


def test_follow_prints_what_the_firmware_appends(
    daemon: DaemonProcess, cli: Cli, tmp_path: Path
) -> None:
    capsule = tmp_path / "code.cap"
    cli("sim", "sample", "pfru/code-injection", "-o", str(capsule))
    follower = cli.popen("telemetry", CODE_ID, "--follow", "--json", "--interval", "0.2")
    try:
        assert follower.stdout is not None
        first = json.loads(_line(follower))
        assert "boot: runtime update service ready" in first["text"]
        cli("install", str(capsule), "--activate")
        seen = ""
        deadline = time.monotonic() + 30
        while "now runtime version 4" not in seen and time.monotonic() < deadline:
            chunk = json.loads(_line(follower))
            assert not chunk["lost"]
            assert chunk["cursor"] > first["cursor"]
            seen += chunk["text"]
        assert "now runtime version 4" in seen
        assert "boot:" not in seen  # only the delta
    finally:
        follower.terminate()
        follower.communicate(timeout=30)


def _line(process: subprocess.Popen[str], timeout: float = 30.0) -> str:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, "no output from livefw telemetry --follow"
    line = process.stdout.readline()
    assert line, process.stderr.read() if process.stderr else "EOF"
    return line


PFRU = "org.livefw.Daemon1.Pfru"


def test_pfru_revisions_over_the_bus_and_the_cli(
    daemon: DaemonProcess, polkit: PolkitMock, cli: Cli, bctl: Busctl
) -> None:
    """The _DSM revisions are user-settable (issue 14.16): bus contract, CLI, polkit."""
    for path in (CODE_PATH, f"{MANAGER}/devices/{DRIVER_ID}"):
        reply = bctl(
            "--json=short", "call", BUS, path, "org.freedesktop.DBus.Introspectable", "Introspect"
        )
        live = json.loads(reply.stdout)["data"][0]
        contract = (REPO / "dbus" / f"{PFRU}.xml").read_text()
        assert _members(live, PFRU) == _members(contract, PFRU)
    found = json.loads(cli("pfru-revision", CODE_ID, "--json").stdout)
    assert (found["revision"], found["kernel"], found["firmware"]) == (0, [1, 2], [1, 2])
    assert (found["telemetry-revision"], found["telemetry-firmware"]) == (1, [1, 2])
    # set on one PFRU device, seen on both (one update node)
    found = json.loads(cli("pfru-revision", DRIVER_ID, "--set", "2", "--json").stdout)
    assert found["revision"] == 2
    revision = bctl("get-property", BUS, CODE_PATH, PFRU, "Revision").stdout.strip()
    assert revision == "u 2"
    bad = cli("pfru-revision", CODE_ID, "--set", "3", check=False)
    assert bad.returncode != 0
    assert "1 or 2" in bad.stderr
    # the telemetry revision with the other telemetry settings
    cli("telemetry", CODE_ID, "--set-revision", "2")
    assert json.loads(cli("telemetry", CODE_ID, "--json").stdout)["log_revision"] == 2
    # firmware that implements revision 1 only: refused, and the revision stays
    cli("sim", "set", "pfru", "update_max_revision=1")
    refused = cli("pfru-revision", CODE_ID, "--set", "2", check=False)
    assert "does not answer the PFRU _DSM at revision 2" in " ".join(refused.stderr.split())
    # authorization: org.livefw.daemon1.pfru-configure
    polkit.allow_unknown(False)
    polkit.set_allowed(["org.livefw.daemon1.telemetry-read"])
    assert cli("pfru-revision", CODE_ID, check=False, uid=NOBODY).returncode == 4
    assert cli("pfru-revision", CODE_ID, "--set", "1", check=False).returncode == 4
    polkit.set_allowed(["org.livefw.daemon1.pfru-configure", "org.livefw.daemon1.telemetry-read"])
    cli("pfru-revision", CODE_ID, "--set", "1")
    assert bctl("get-property", BUS, CODE_PATH, PFRU, "Revision").stdout.strip() == "u 1"


def test_missing_pfru_is_probed_again_only_when_its_driver_binds(
    daemon_factory: Callable[..., DaemonProcess], polkit: PolkitMock, cli: Cli
) -> None:
    """Unrelated uevents (consoles, ttys, disks, NICs) probe nothing; the update
    driver binding (misc ``add``, DEVNAME=acpi_pfr_update0) loads the plugin."""
    cli("sim", "init", "--kernel", "7.2", "--force")
    cli("sim", "remove", "pfru/code-injection")  # the update driver is not bound
    daemon = daemon_factory()  # --verbose: every probe logs plugin_probed

    def pfru_probes() -> int:
        return sum(
            "plugin_probed" in line and "plugin=pfru" in line for line in daemon.log().splitlines()
        )

    assert pfru_probes() == 1
    assert "pfru" not in cli("get-devices", "--json").stdout
    noise = [
        ("devices/virtual/vc/vcs7", "vc", "DEVNAME=vcs7"),
        ("devices/virtual/tty/tty9", "tty", "DEVNAME=tty9"),
        ("devices/virtual/block/loop3", "block", "DEVNAME=loop3"),
        ("devices/virtual/net/veth1", "net", "INTERFACE=veth1"),
        ("devices/virtual/misc/rfkill", "misc", "DEVNAME=rfkill"),
    ]
    for devpath, subsystem, prop in noise:
        cli("sim", "uevent", "add", devpath, prop, "--subsystem", subsystem)
    # a loaded plugin's own hotplug, after the noise: once it is handled, so is the noise
    cli("sim", "add", "fwctl", "type=mlx5", "pci=0000:09:00.0")
    deadline = time.monotonic() + 60
    while "0000:09:00.0" not in cli("get-devices", "--json").stdout:
        assert time.monotonic() < deadline, daemon.log()
        time.sleep(0.1)
    assert pfru_probes() == 1

    cli("sim", "add", "pfru", "device=update")
    deadline = time.monotonic() + 60
    while CODE_ID not in cli("get-devices", "--json").stdout:
        assert time.monotonic() < deadline, daemon.log()
        time.sleep(0.1)
    assert pfru_probes() == 2
    assert "plugin_loaded_late" in daemon.log()
    assert device(cli, CODE_ID)["Plugin"] == "pfru"
