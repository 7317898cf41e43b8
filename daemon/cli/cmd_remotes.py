"""Firmware packages: ``get-releases``, ``get-updates``, ``update``, ``build-cabinet``.

Releases come from local remotes (folders of .cab files configured in
``/etc/livefw/remotes.d/``); ``update`` installs the newest allowed release of each
device the way fwupdmgr does: the client opens the cabinet and passes its fd.
``build-cabinet`` packs a payload into a cabinet (metainfo.xml, payload and an
optional signed .jcat) for operators and tests; it runs locally, without the daemon.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import Any

from livefw.bus.backend import Variant
from livefw.cli import exitcodes
from livefw.cli.client import LONG_TIMEOUT, CallError, Client
from livefw.cli.output import Output

__all__ = ["register"]


def _release_row(device: dict[str, Any], release: dict[str, Any]) -> list[str]:
    order = {1: "newer", 0: "current", -1: "older"}.get(int(release["Order"]), "")
    return [
        device["Id"][:12],
        device["Name"],
        device["Version"],
        release["Version"],
        order,
        release["RemoteId"],
        "yes" if release["Trusted"] else "no",
        os.path.basename(release["Location"]),
    ]


_COLUMNS = ["Id", "Device", "Running", "Release", "", "Remote", "Trusted", "File"]


async def _device(client: Client, query: str) -> dict[str, Any]:
    device_id = await client.resolve_device(query)
    return next(d for d in await client.devices() if d["Id"] == device_id)


async def cmd_get_releases(client: Client, args: argparse.Namespace, out: Output) -> int:
    device = await _device(client, args.device)
    (releases,) = await client.call("GetReleases", "s", [device["Id"]])
    if args.json:
        out.json(releases)
        return exitcodes.OK
    out.table(_COLUMNS, [_release_row(device, r) for r in releases], title="Releases")
    return exitcodes.OK


async def _upgrades(
    client: Client, devices: list[dict[str, Any]]
) -> tuple[list[tuple[dict[str, Any], list[dict[str, Any]]]], dict[str, str]]:
    found, reasons = [], {}
    for device in devices:
        try:
            (upgrades,) = await client.call("GetUpgrades", "s", [device["Id"]])
        except CallError as error:
            if error.short not in ("NothingToDo", "NotSupported"):
                raise
            reasons[device["Id"]] = error.message
            continue
        found.append((device, upgrades))
    return found, reasons


async def _targets(client: Client, query: str | None) -> list[dict[str, Any]]:
    if query:
        return [await _device(client, query)]
    return [d for d in await client.devices() if "updatable" in d["Flags"]]


async def cmd_get_updates(client: Client, args: argparse.Namespace, out: Output) -> int:
    found, reasons = await _upgrades(client, await _targets(client, args.device))
    if args.json:
        out.json(
            {
                "Devices": [
                    {"Id": d["Id"], "Name": d["Name"], "Version": d["Version"], "Releases": u}
                    for d, u in found
                ],
                "NoUpdates": reasons,
            }
        )
        return exitcodes.OK if found else exitcodes.NOTHING_TO_DO
    if not found:
        out.info("No updates available.")
        for device_id, reason in reasons.items():
            out.info(f"  {device_id[:12]}  {reason}")
        return exitcodes.NOTHING_TO_DO
    out.table(
        _COLUMNS, [_release_row(d, u) for d, ups in found for u in ups], title="Updates available"
    )
    return exitcodes.OK


async def cmd_update(client: Client, args: argparse.Namespace, out: Output) -> int:
    found, reasons = await _upgrades(client, await _targets(client, args.device))
    if not found:
        out.info("No updates available.")
        for device_id, reason in reasons.items():
            out.info(f"  {device_id[:12]}  {reason}")
        return exitcodes.NOTHING_TO_DO
    results, failed = [], False
    for device, upgrades in found:
        release = upgrades[0]
        location = release["Location"]
        try:
            fd = os.open(location, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as error:
            out.error(f"{device['Name']}: cannot open {location}: {error.strerror}")
            failed = True
            continue
        options = {
            "allow-reinstall": Variant("b", False),
            "allow-older": Variant("b", False),
            "activate": Variant("b", bool(args.activate)),
            "filename": Variant("s", os.path.basename(location)),
        }
        try:
            (entry,) = await client.call(
                "Install",
                "sha{sv}",
                [device["Id"], 0, options],
                unix_fds=[fd],
                timeout=LONG_TIMEOUT,
            )
        except CallError as error:
            out.error(f"{device['Name']}: {error.message}")
            failed = True
            continue
        finally:
            os.close(fd)
        results.append(entry)
        if not args.json:
            out.info(
                f"{device['Name']}: {device['Version']} -> {release['Version']}: "
                f"{entry['State']}{' (' + entry['Reason'] + ')' if entry['Reason'] else ''}"
            )
    if args.json:
        out.json(results)
    return exitcodes.FAILURE if failed else exitcodes.OK


def _read_file(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def _write_file(path: str, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)


async def cmd_build_cabinet(client: Client | None, args: argparse.Namespace, out: Output) -> int:
    from livefw.cabinet import read_cabinet
    from livefw.cabinet_build import make_cabinet, make_metainfo
    from livefw.errors import LivefwError
    from livefw.jcat import sign_files

    try:
        payload = await asyncio.to_thread(_read_file, args.payload)
    except OSError as error:
        out.error(f"{args.payload}: {error.strerror}")
        return exitcodes.INVALID
    name = os.path.basename(args.payload)
    files = {
        name: payload,
        "firmware.metainfo.xml": make_metainfo(
            appstream_id=args.id,
            guids=args.guid,
            version=args.version,
            payload_name=name,
            payload=payload,
            name=args.name or args.id,
            vendor=args.vendor or "",
            protocol=args.protocol or "",
            version_format=args.version_format or "",
        ),
    }
    try:
        if args.sign_cert or args.sign_key:
            if not (args.sign_cert and args.sign_key):
                out.error("--sign-cert and --sign-key go together")
                return exitcodes.USAGE
            files["firmware.jcat"] = sign_files(files, args.sign_cert, args.sign_key)
        data = make_cabinet(files)
        read_cabinet(data)  # what we write must read back
    except LivefwError as error:
        out.error(error.message)
        return exitcodes.INVALID
    await asyncio.to_thread(_write_file, args.output, data)
    out.info(f"Wrote {len(data)} bytes to {args.output}")
    return exitcodes.OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the firmware-package commands."""
    p = sub.add_parser("get-releases", help="releases the local remotes offer for a device")
    p.add_argument("device", help="device id, id prefix or name")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_get_releases)

    p = sub.add_parser("get-updates", help="newer releases in the local remotes")
    p.add_argument("device", nargs="?", help="only this device")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_get_updates)

    p = sub.add_parser("update", help="install the newest release of each device (or one)")
    p.add_argument("device", nargs="?", help="only this device")
    p.add_argument(
        "--activate", action="store_true", help="activate at once where the device can (PFRU)"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_update)

    p = sub.add_parser(
        "build-cabinet", help="pack a payload into a firmware cabinet (.cab), locally"
    )
    p.add_argument("payload", help="the payload file (capsule)")
    p.add_argument("--guid", action="append", required=True, help="device GUID (repeatable)")
    p.add_argument("--version", required=True, help="the version the payload carries")
    p.add_argument("--id", default="org.livefw.local.firmware", help="AppStream component id")
    p.add_argument("--name", help="display name")
    p.add_argument("--vendor", help="vendor name")
    p.add_argument("--protocol", help="LVFS::UpdateProtocol (e.g. org.livefw.pfru)")
    p.add_argument("--version-format", help="LVFS::VersionFormat (number, triplet, ...)")
    p.add_argument("--sign-cert", help="certificate (PEM) to sign the .jcat with")
    p.add_argument("--sign-key", help="key of --sign-cert")
    p.add_argument("-o", "--output", required=True, help="the .cab to write")
    p.set_defaults(func=cmd_build_cabinet, offline=True)
