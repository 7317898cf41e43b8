"""``make demo`` walkthrough for UEFI capsules: stage, reboot, read the ESRT result."""

from __future__ import annotations

import os
from typing import Any

SYSTEM = "uefi_capsule/ddc0ee61-e7f0-4e7d-acc5-c070a398838e"
DEVICE = "9a3878b2"  # Id prefix of the system firmware (sha1 of uefi_capsule:<fw_class>)


def run(demo: Any) -> None:
    """The main job of the uefi_capsule plugin with the CLI."""
    good = os.path.join(demo.workdir, "system-firmware.cap")
    unsigned = os.path.join(demo.workdir, "system-firmware-bad-signature.cap")
    demo.say("UEFI: system firmware listed in the ESRT, updated by a capsule at the next boot")
    demo.cli("esp")
    demo.say("A signed FMP capsule with the next version")
    demo.sim("sample", SYSTEM, "-o", good)
    demo.say("Install stages it like fwupd: capsule on the ESP, UPDATE_INFO, Boot####, BootNext")
    demo.cli("install", good, DEVICE)
    demo.cli("get-device", DEVICE)
    demo.say("Reboot: the firmware follows BootNext to the fwupd loader, which applies it")
    demo.sim("reboot")
    demo.restart_daemon()
    demo.cli("get-device", DEVICE)
    demo.say("A capsule whose signature the firmware rejects: staged, then status 5 after reboot")
    demo.sim("sample", SYSTEM, "--version", "65600", "--broken", "bad-signature", "-o", unsigned)
    demo.cli("install", unsigned, DEVICE)
    demo.sim("reboot")
    demo.restart_daemon()
    demo.cli("history")
