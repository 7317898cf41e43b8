"""A user-mounted vfat partition is never taken for the ESP (issue 13 item 6).

A local user can plug in a USB stick whose partition carries the ESP type GUID (udisks
mounts it below /media/<user> with uid=/gid=), or loop-mount an image with that type.
When the real ESP is on an MBR disk (type 0xef) or behind systemd's not-yet-triggered
automount at /efi, livefw's old ESP search scored the stick highest and staged the
capsule, the loader and the Boot#### entry on a partition the user can write: code of
the user's choosing at the next boot when Secure Boot is off. livefwd runs here on the
simulated machine with such mounts; the capsule must land on the real ESP and
`livefw esp` must say why each other mount was rejected.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from livefw.kernel.sim.machine import SimMachine
from livefw.testing import Cli, DaemonProcess, PolkitMock

SYSTEM_ID = "9a3878b215be0fd3ae94aa02e96ffb857437d0f4"
SYSTEM_CLASS = "ddc0ee61-e7f0-4e7d-acc5-c070a398838e"


def _machine(state_dir: Path, **knobs: Any) -> None:
    machine = SimMachine.create(str(state_dir / "sim"))
    for key, value in knobs.items():
        setattr(machine.components["uefi_capsule"].state, key, value)
    machine.save()


def _esp_files(state_dir: Path) -> dict[str, bytes]:
    state = json.loads((state_dir / "sim" / "machine.json").read_text())
    files = state["components"]["uefi_capsule"]["esp_files"]
    return {path: base64.b64decode(data) for path, data in files.items()}


@pytest.mark.parametrize(
    ("knobs", "esp", "staged_at"),
    [
        # the real ESP on an MBR disk (type 0xef)
        (
            {"esp_mbr": True, "hostile_mounts": "udisks-usb,loop-esp,home"},
            "/boot/efi",
            f"EFI/debian/fw/fwupd-{SYSTEM_CLASS}.cap",
        ),
        # the real ESP behind systemd's automount at /efi, not mounted yet
        (
            {"esp_automount": True, "hostile_mounts": "udisks-usb,loop-esp"},
            "/efi",
            f"EFI/debian/fw/fwupd-{SYSTEM_CLASS}.cap",
        ),
    ],
)
def test_user_mounts_are_never_the_esp(
    daemon_factory: Callable[..., DaemonProcess],
    polkit: PolkitMock,
    cli: Cli,
    state_dir: Path,
    tmp_path: Path,
    knobs: dict[str, Any],
    esp: str,
    staged_at: str,
) -> None:
    _machine(state_dir, **knobs)
    daemon_factory()
    shown = json.loads(cli("esp", "--json").stdout)
    assert shown["environment"]["esp"] == esp
    verdicts = {c["mount"]: c["verdict"] for c in shown["esp_candidates"]}
    assert verdicts[esp] == "chosen"
    assert "below /media" in verdicts["/media/alice/ESPSTICK"]
    assert "user-owned mount (uid=1000)" in verdicts["/media/alice/ESPSTICK"]
    assert "on a removable disk" in verdicts["/media/alice/ESPSTICK"]
    assert "loop device" in verdicts["/mnt/esp-image"]
    if "home" in knobs["hostile_mounts"]:
        assert "below /home" in verdicts["/home/alice/esp"]
    text = cli("esp").stdout
    assert "ESPSTICK" in text
    assert "rejected" in text
    # the capsule goes to the real ESP
    capsule = tmp_path / "system.cap"
    cli("sim", "sample", f"uefi_capsule/{SYSTEM_CLASS}", "-o", str(capsule))
    cli("install", str(capsule), SYSTEM_ID)
    assert _esp_files(state_dir)[staged_at] == capsule.read_bytes()


async def test_a_udisks_stick_beside_an_mbr_esp_is_not_chosen(tmp_path: Path) -> None:
    """The same attack built by hand on the rendered machine (no simulator knobs).

    On the main branch before the fix this chose /media/alice/STICK: its ESP type GUID
    (+4) and EFI directory (+1) outscored the real ESP, whose MBR type 0xef counted
    for nothing (/boot/efi +2, EFI +1).
    """
    from livefw.kernel.provider import MountEntry
    from livefw.kernel.sim.provider import SimProvider
    from livefw.kernel.sim.vfs import Attr, File
    from livefw.plugins.uefi_capsule.environment import detect

    machine = SimMachine.create(str(tmp_path / "sim"))
    esp = machine.udev_table[("block", 259, 1)]
    esp.update(ID_PART_ENTRY_SCHEME="dos", ID_PART_ENTRY_TYPE="0xef")
    stick = machine.root.mkdirs("media/alice/STICK")
    stick.mkdirs("EFI/BOOT").children["BOOTX64.EFI"] = File(data=b"MZ")
    machine.mount_table.append(
        MountEntry(
            "/media/alice/STICK",
            "vfat",
            "/dev/sda1",
            8,
            1,
            ("rw", "nosuid", "nodev", "uid=1000", "gid=1000"),
        )
    )
    machine.root.mkdirs("sys/dev/block/8:0").children["removable"] = Attr(read=lambda: "1\n")
    machine.udev_table[("block", 8, 1)] = {
        "DEVNAME": "/dev/sda1",
        "ID_PART_ENTRY_SCHEME": "gpt",
        "ID_PART_ENTRY_DISK": "8:0",
        "ID_PART_ENTRY_TYPE": "c12a7328-f81f-11d2-ba4b-00a0c93ec93b",
        "ID_PART_ENTRY_UUID": "0d0b3a6e-1b7e-4f4c-9a55-2b4f0f2e9c01",
    }
    env = await detect(SimProvider(machine), {})
    assert env.esp == "boot/efi"
    assert env.partition is None or env.partition.partition_signature != (
        "0d0b3a6e-1b7e-4f4c-9a55-2b4f0f2e9c01"
    )
