"""Demo: firmware cabinets and a local remote (the air-gapped / fleet path).

Called by tools/demo.py as ``run(demo)`` after the core steps.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

DEVICE = "code injection"
PFRU_KEY = "pfru/code-injection"


def _device(demo: Any) -> dict[str, Any]:
    """The PFRU device's properties, read quietly (not a demo step)."""
    result = subprocess.run(
        [demo.livefw, "get-device", DEVICE, "--json"],
        env=demo.env(),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return dict(json.loads(result.stdout))


def run(demo: Any) -> None:
    """Pack capsules into cabinets, refuse an unsigned one, serve them from a remote."""
    work = os.path.join(demo.workdir, "firmware")
    os.makedirs(work, exist_ok=True)
    device = _device(demo)
    if "needs-activation" in device["Flags"]:
        demo.cli("activate", DEVICE)
        device = _device(demo)
    guid = device["Guids"][0]
    current = int(device["Version"])

    demo.say("Firmware packages: pack two PFRU capsules into cabinets (metainfo.xml + payload)")
    for version in (current + 1, current + 2):
        payload = os.path.join(demo.workdir, f"pfru-{version}.bin")
        demo.sim("sample", PFRU_KEY, "--version", str(version), "-o", payload)
        demo.cli(
            "build-cabinet", payload, "--guid", guid, "--version", str(version),
            "--id", "org.example.pfru.code-injection", "--name", "Example runtime fix",
            "--protocol", "org.livefw.pfru", "-o", os.path.join(work, f"pfru-{version}.cab"),
        )  # fmt: skip

    demo.say("An unsigned cabinet is refused (OnlyTrusted is on by default); nothing is staged")
    demo.cli("install", os.path.join(work, f"pfru-{current + 1}.cab"), expect=8)

    demo.say("A local remote: the folder is trusted (only root can write it)")
    remotes = os.path.join(demo.workdir, "remotes.d")
    os.makedirs(remotes, exist_ok=True)
    with open(os.path.join(remotes, "fleet.conf"), "w", encoding="utf-8") as handle:
        handle.write(
            f"[livefw Remote]\nEnabled=true\nTitle=Fleet firmware\nPath={work}\nTrusted=true\n"
        )
    with open(demo.config, "a", encoding="utf-8") as handle:
        handle.write(f'\n[install]\nremotes_dir = "{remotes}"\n')
    demo.restart_daemon()
    demo.cli("get-releases", DEVICE)
    demo.cli("get-updates")

    demo.say("Update to the newest allowed release, then activate it without a reboot")
    demo.cli("update", DEVICE)
    demo.cli("get-updates", expect=7)
    demo.cli("activate", DEVICE)
    demo.cli("history")
