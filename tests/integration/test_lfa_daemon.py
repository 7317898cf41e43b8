"""Arm LFA activation settings over a private bus: contract, CLI, polkit (issue 14.17)."""

import hashlib
import json
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

from livefw.testing import NOBODY, Cli, DaemonProcess, PolkitMock

REPO = Path(__file__).resolve().parents[2]
BUS = "org.livefw.Daemon1"
LFA = "org.livefw.Daemon1.Lfa"
BL31 = "47d4086d-4cfe-9846-9b95-2950cbbd5a00"
RMM = "6c0762a6-12f2-4b56-92cb-ba8f633606d9"
RMM_ID = hashlib.sha1(f"lfa:{RMM}".encode()).hexdigest()
BL31_ID = hashlib.sha1(f"lfa:{BL31}".encode()).hexdigest()
RMM_PATH = f"/org/livefw/Daemon1/devices/{RMM_ID}"

Busctl = Callable[..., subprocess.CompletedProcess[str]]


def _members(xml_text: str) -> set[tuple[str, ...]]:
    root = ET.fromstring(xml_text)
    (iface,) = [i for i in root.iter("interface") if i.get("name") == LFA]
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


def test_lfa_activation_options(
    daemon: DaemonProcess, polkit: PolkitMock, cli: Cli, bctl: Busctl
) -> None:
    reply = bctl(
        "--json=short", "call", BUS, RMM_PATH, "org.freedesktop.DBus.Introspectable", "Introspect"
    )
    live = json.loads(reply.stdout)["data"][0]
    assert _members(live) == _members((REPO / "dbus" / f"{LFA}.xml").read_text())

    shown = json.loads(cli("lfa-options", RMM_ID, "--json").stdout)
    assert shown == {
        "device_id": RMM_ID,
        "cpu-rendezvous-required": False,
        "force-cpu-rendezvous": True,
        "auto-activate": False,
    }
    changed = cli("lfa-options", RMM_ID, "--force-cpu-rendezvous", "off", "--json")
    assert json.loads(changed.stdout)["force-cpu-rendezvous"] is False
    metadata = json.loads(cli("get-device", RMM_ID, "--json").stdout)["Metadata"]
    assert metadata["activation-stops-cpus"] == "false"
    # the firmware requires a rendezvous for BL31: refused with the reason
    refused = cli("lfa-options", BL31_ID, "--force-cpu-rendezvous", "off", check=False)
    assert refused.returncode == 5, refused.stderr
    assert "requires a CPU rendezvous" in " ".join(refused.stderr.split())
    # changing them is an activation decision: org.livefw.daemon1.activate
    polkit.allow_unknown(False)
    polkit.set_allowed([])
    denied = cli("lfa-options", RMM_ID, "--auto-activate", "on", check=False, uid=NOBODY)
    assert denied.returncode == 4, denied.stderr
    assert cli("lfa-options", RMM_ID, uid=NOBODY).returncode == 0  # reading is public
    polkit.set_allowed(["org.livefw.daemon1.activate"])
    cli("lfa-options", RMM_ID, "--auto-activate", "on")
    assert cli("lfa-options", RMM_ID, "--json").stdout.count('"auto-activate": true') == 1


def _lfa_ids(cli: Cli) -> set[str]:
    devices = json.loads(cli("get-devices", "--json").stdout)
    return {d["Id"] for d in devices if d.get("Plugin") == "lfa"}


def test_images_change_only_on_the_triggers_a_real_kernel_gives(
    daemon: DaemonProcess, cli: Cli
) -> None:
    """lfa_fw.c sends no uevent for its images (docs/kernel.md, Uevents): livefwd sees
    an out-of-band change at `livefw refresh`, and follows a reload of lfa_fw.ko (the
    module's own ``remove``/``add``)."""
    new = "11111111-2222-3333-4444-555555555555"
    new_id = hashlib.sha1(f"lfa:{new}".encode()).hexdigest()
    before = _lfa_ids(cli)
    assert RMM_ID in before
    cli("sim", "add", "lfa", f"guid={new}", "pending=1.1")
    cli("sim", "remove", RMM[:8])
    # GetDevices is a reply to many clients, not a rescan; nothing else announced it
    assert _lfa_ids(cli) == before
    cli("refresh")
    assert _lfa_ids(cli) == (before - {RMM_ID}) | {new_id}

    cli("sim", "set", "lfa", "module_loaded=0")
    deadline = time.monotonic() + 30
    while _lfa_ids(cli):  # the daemon takes the module's `remove` when its loop gets to it
        assert time.monotonic() < deadline, "unloading lfa_fw left its images listed"
        time.sleep(0.05)
    cli("sim", "set", "lfa", "module_loaded=1")
    while _lfa_ids(cli) != (before - {RMM_ID}) | {new_id}:
        assert time.monotonic() < deadline, "loading lfa_fw did not bring its images back"
        time.sleep(0.05)
