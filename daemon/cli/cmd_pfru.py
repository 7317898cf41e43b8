"""``livefw telemetry`` and ``livefw pfru-revision``: PFRU/PFRT over the bus.

``telemetry`` reads the firmware's telemetry log (org.livefw.Daemon1.Telemetry);
``pfru-revision`` shows and sets the ``_DSM`` revisions (org.livefw.Daemon1.Pfru).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from livefw.bus.backend import Variant
from livefw.cli import exitcodes
from livefw.cli.client import CallError, Client, device_path
from livefw.cli.output import Output

TELEMETRY_IFACE = "org.livefw.Daemon1.Telemetry"
PFRU_IFACE = "org.livefw.Daemon1.Pfru"
_NO_INTERFACE = (
    "org.freedesktop.DBus.Error.UnknownMethod",
    "org.freedesktop.DBus.Error.UnknownInterface",
    "org.freedesktop.DBus.Error.UnknownObject",
)


def _text(data: bytes) -> str:
    # the firmware writes text records; unused buffer space is NUL.
    return bytes(data).replace(b"\x00", b"").decode("utf-8", "replace")


async def _call(
    client: Client,
    device_id: str,
    member: str,
    signature: str = "",
    body: Any = None,
    interface: str = TELEMETRY_IFACE,
) -> list[Any]:
    try:
        return await client.call(
            member,
            signature,
            body,
            path=device_path(device_id),
            interface=interface,
        )
    except CallError as error:
        if error.name in _NO_INTERFACE:
            what = (
                "firmware telemetry (only the PFRU device carries it)"
                if interface == TELEMETRY_IFACE
                else "PFRU _DSM revision (only PFRU devices have one)"
            )
            raise CallError(
                "org.livefw.Daemon1.Error.NotSupported", f"this device has no {what}"
            ) from error
        raise


async def cmd_telemetry(client: Client, args: argparse.Namespace, out: Output) -> int:
    if args.interval <= 0:
        out.error("--interval must be a positive number of seconds")
        return exitcodes.USAGE
    device_id = await client.resolve_device(args.device)
    options: dict[str, Variant] = {}
    if args.set_level is not None:
        options["level"] = Variant("s", args.set_level)
    if args.set_type is not None:
        options["type"] = Variant("s", args.set_type)
    if args.set_revision is not None:
        options["revision"] = Variant("u", args.set_revision)
    if options:
        await _call(client, device_id, "SetLogInfo", "a{sv}", [options])
    (info,) = await _call(client, device_id, "GetDataInfo")
    path = device_path(device_id)
    level = await client.get_property(path, TELEMETRY_IFACE, "LogLevel")
    log_type = await client.get_property(path, TELEMETRY_IFACE, "LogType")
    log_revision = await client.get_property(path, TELEMETRY_IFACE, "LogRevision")
    data, cursor = await _call(client, device_id, "Read")
    if args.json:
        document = {
            "device_id": device_id,
            "log_level": level,
            "log_type": log_type,
            "log_revision": log_revision,
            "data_info": info,
            "cursor": cursor,
            "text": _text(data),
        }
        if args.follow:
            _json_line(document)
        else:
            out.json(document)
    else:
        if options or args.info:
            out.fields(
                [
                    ("log level", level),
                    ("log type", log_type),
                    ("log revision", log_revision),
                    ("buffer", f"{info['max-data-size']} bytes"),
                    ("chunk1/chunk2", f"{info['chunk1-size']} / {info['chunk2-size']} bytes"),
                    ("rollover", info["rollover-count"]),
                    ("reset", info["reset-count"]),
                ],
                title="telemetry",
            )
        if not info.get("started", True):
            out.info("(the firmware's telemetry service has not produced data yet)")
        out.block(_text(data))
    if not args.follow:
        return exitcodes.OK
    while True:
        await asyncio.sleep(args.interval)
        data, cursor, lost = await _call(client, device_id, "ReadSince", "t", [cursor])
        if args.json:
            if data or lost:
                _json_line({"cursor": cursor, "lost": lost, "text": _text(data)})
            continue
        if lost:
            out.warn("(records were overwritten before they could be read)")
        out.block(_text(data))


def _json_line(value: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(value, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``telemetry``."""
    parser = sub.add_parser(
        "telemetry",
        help="show the platform firmware's telemetry log (PFRU/PFRT)",
        description="Print the firmware's telemetry log; --follow keeps printing what the "
        "firmware appends (polling every --interval seconds) until Ctrl-C.",
    )
    parser.add_argument("device", metavar="DEVICE", help="device id, id prefix or name")
    parser.add_argument("--follow", "-f", action="store_true", help="keep printing new records")
    parser.add_argument(
        "--interval", type=float, default=1.0, help="seconds between polls with --follow"
    )
    parser.add_argument("--info", action="store_true", help="also print level, type and sizes")
    parser.add_argument(
        "--set-level",
        metavar="LEVEL",
        help="set the firmware log level: error, warning, info or verbose",
    )
    parser.add_argument(
        "--set-type",
        metavar="TYPE",
        help="select the log to read: execution or history",
    )
    parser.add_argument(
        "--set-revision",
        metavar="N",
        type=_revision,
        help="set the telemetry _DSM revision (1 or 2)",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=cmd_telemetry)

    revision = sub.add_parser(
        "pfru-revision",
        help="show or set the PFRU _DSM revisions (which ones the firmware answers)",
        description="Probe which _DSM revisions the kernel accepts and the firmware answers "
        "on the PFRU update and telemetry devices (this switches the drivers' revisions "
        "while it tries them and puts them back); --set changes the update revision. "
        "Needs org.livefw.daemon1.pfru-configure. The telemetry revision is set with "
        "`livefw telemetry DEVICE --set-revision N`.",
    )
    revision.add_argument("device", metavar="DEVICE", help="a PFRU device: id, id prefix or name")
    revision.add_argument("--set", metavar="N", type=_revision, help="set the update revision")
    revision.add_argument("--json", action="store_true", help="machine-readable output")
    revision.set_defaults(func=cmd_pfru_revision)


def _revision(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from error
    if not 0 <= value < 1 << 32:
        raise argparse.ArgumentTypeError(f"out of range: {text!r}")
    return value


async def cmd_pfru_revision(client: Client, args: argparse.Namespace, out: Output) -> int:
    device_id = await client.resolve_device(args.device)
    if args.set is not None:
        await _call(client, device_id, "SetRevision", "u", [args.set], interface=PFRU_IFACE)
    (found,) = await _call(client, device_id, "QueryRevisions", interface=PFRU_IFACE)
    if args.json:
        out.json({"device_id": device_id, **{k: found[k] for k in sorted(found)}})
        return exitcodes.OK

    def listed(values: list[int]) -> str:
        return ", ".join(str(v) for v in values) or "none"

    set_by_livefw = found["revision"]
    out.fields(
        [
            (
                "update revision",
                set_by_livefw or "not set by livefw (the driver starts at 1)",
            ),
            ("kernel accepts", listed(found["kernel"])),
            ("firmware answers", listed(found["firmware"])),
            ("telemetry revision", found["telemetry-revision"] or "no telemetry device"),
            ("telemetry answers", listed(found["telemetry-firmware"])),
        ],
        title="PFRU _DSM revisions",
    )
    return exitcodes.OK
