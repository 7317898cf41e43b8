"""``livefw esp``: how UEFI capsules are staged on this machine (ESP, loader, method).

Reads the uefi_capsule devices' metadata from the daemon; changes nothing.
"""

from __future__ import annotations

import argparse
from typing import Any

from livefw.cli import exitcodes
from livefw.cli.client import Client
from livefw.cli.output import Output

_FIELDS = (
    ("Update method", "update-method"),
    ("ESP", "esp"),
    ("ESP PARTUUID", "esp-partuuid"),
    ("EFI loader", "efi-loader"),
    ("Secure Boot", "secure-boot"),
    ("Capsule on disk", "capsule-on-disk"),
    ("Why", "update-method-reason"),
)


async def cmd_esp(client: Client, args: argparse.Namespace, out: Output) -> int:
    devices = [d for d in await client.devices() if d["Plugin"] == "uefi_capsule"]
    if not devices:
        out.error("no ESRT devices: see `livefw plugins` for why the uefi_capsule plugin is off")
        return exitcodes.NOT_SUPPORTED
    metadata: dict[str, Any] = dict(devices[0].get("Metadata", {}))
    rows = [
        {
            "Id": d["Id"],
            "Name": d["Name"],
            "Version": d["Version"],
            "VersionLowest": d.get("VersionLowest", ""),
            "VersionPending": d.get("VersionPending", ""),
            "LastAttempt": dict(d.get("Metadata", {})).get("last-attempt-status", ""),
        }
        for d in devices
    ]
    if args.json:
        out.json({"environment": {k: metadata.get(k, "") for _, k in _FIELDS}, "devices": rows})
        return exitcodes.OK
    out.fields(
        [(label, metadata[key]) for label, key in _FIELDS if metadata.get(key)],
        title="UEFI capsule staging",
    )
    out.table(
        ("Id", "Device", "Version", "Lowest", "Staged", "Last attempt"),
        [
            (
                r["Id"][:8],
                r["Name"],
                r["Version"],
                r["VersionLowest"],
                r["VersionPending"],
                r["LastAttempt"],
            )
            for r in rows
        ],
    )
    return exitcodes.OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``livefw esp``."""
    parser = sub.add_parser(
        "esp", help="show the ESP, the fwupd EFI loader and how UEFI capsules are staged"
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=cmd_esp)
