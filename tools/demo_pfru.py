"""``make demo`` walkthrough for PFRU: stage a capsule, activate it, read the telemetry."""

from __future__ import annotations

import os
from typing import Any

CODE = "code injection"


def run(demo: Any) -> None:
    """The main job of PFRU with the CLI."""
    good = os.path.join(demo.workdir, "pfru-code-injection.cap")
    older = os.path.join(demo.workdir, "pfru-downgrade.cap")
    demo.say("PFRU: platform firmware updated at runtime (ACPI PFRU, /dev/acpi_pfr_update0)")
    demo.cli("get-device", CODE)
    demo.say("A capsule for the code-injection image (the sim signs it as the firmware expects)")
    demo.sim("sample", "pfru/code-injection", "-o", good)
    demo.say("Install without naming the device: livefw finds it from the capsule, stages it")
    demo.cli("install", good)
    demo.say("Activate the staged capsule: the new runtime version runs, no reboot")
    demo.cli("activate", CODE)
    demo.cli("get-device", CODE)
    demo.say("Anti-rollback: an older capsule is refused whatever the options")
    demo.sim("sample", "pfru/code-injection", "--broken", "downgrade", "-o", older)
    demo.cli("install", older, "--allow-older", expect=8)
    demo.say("The firmware's telemetry log (PFRT ring buffer) shows what it did")
    demo.cli("telemetry", CODE, "--info")
