"""``livefw esp``: how UEFI capsules are staged on this machine (ESP, loader, method).

Reads the uefi_capsule devices' metadata from the daemon; changes nothing.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from livefw.cli import exitcodes
from livefw.cli.client import Client
from livefw.cli.output import Output

_FIELDS = (
    ("Update method", "update-method"),
    ("ESP", "esp"),
    ("ESP PARTUUID", "esp-partuuid"),
    ("ESP logical block size", "esp-logical-block-size"),
    ("EFI loader", "efi-loader"),
    ("Secure Boot", "secure-boot"),
    ("Capsule on disk", "capsule-on-disk"),
    ("Why", "update-method-reason"),
)


def _candidates(metadata: dict[str, Any]) -> list[dict[str, str]]:
    """The vfat mounts considered as the ESP and each verdict (``esp-candidates``)."""
    try:
        found = json.loads(str(metadata.get("esp-candidates", "") or "[]"))
    except ValueError:
        return []
    if not isinstance(found, list):
        return []
    return [
        {key: str(item.get(key, "")) for key in ("mount", "source", "verdict")}
        for item in found[:64]
        if isinstance(item, dict)
    ]


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
        out.json(
            {
                "environment": {k: metadata.get(k, "") for _, k in _FIELDS},
                "esp_candidates": _candidates(metadata),
                "devices": rows,
            }
        )
        return exitcodes.OK
    out.fields(
        [(label, metadata[key]) for label, key in _FIELDS if metadata.get(key)],
        title="UEFI capsule staging",
    )
    candidates = _candidates(metadata)
    if candidates:
        out.table(
            ("ESP candidate", "Device", "Verdict"),
            [(c["mount"], c["source"], c["verdict"]) for c in candidates],
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
