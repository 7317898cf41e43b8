"""``livefw``: drive livefwd from a shell.

Every command except ``sim`` talks to the daemon over D-Bus only. Technology
commands live in ``livefw.cli.cmd_<tech>`` modules (``register(subparsers)``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import pkgutil
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import livefw.cli
from livefw.bus.backend import Message, MessageType, call_bus_driver
from livefw.cli import exitcodes
from livefw.cli.client import (
    BUS_NAME,
    DEVICE_IFACE,
    LONG_TIMEOUT,
    MANAGER_PATH,
    CallError,
    Client,
    unwrap,
)
from livefw.cli.output import Output, json_default
from livefw.cli.sim import register as register_sim
from livefw.device_properties import cli_fields
from livefw.sanitize import escape_controls

Handler = Callable[[Client, argparse.Namespace, Output], Awaitable[int]]

#: how the CLI prints a device's most useful fields, in order: (D-Bus name, label),
#: the rows of the property table that have a label (livefw.device_properties).
DEVICE_FIELDS = cli_fields()


# ---------------------------------------------------------------------- progress


async def with_progress(
    client: Client, out: Output, label: str, coro: Awaitable[list[Any]]
) -> list[Any]:
    """Await a long call, showing the manager's Status/Percentage as a progress bar."""
    if out.json_mode or not out.err.is_terminal:
        return await coro
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

    rule = (
        f"type='signal',sender='{BUS_NAME}',path='{MANAGER_PATH}',"
        "interface='org.freedesktop.DBus.Properties',member='PropertiesChanged'"
    )
    await _add_match(client, rule)
    # markup=False: the label holds a device name and the status comes from the bus
    with Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[status]}", markup=False),
        console=out.err,
        transient=True,
    ) as progress:
        task = progress.add_task(escape_controls(label), total=100, status="waiting")

        def on_message(message: Message) -> None:
            if message.member != "PropertiesChanged" or message.path != MANAGER_PATH:
                return
            changed = unwrap(message.body[1])
            if "Percentage" in changed:
                progress.update(task, completed=int(changed["Percentage"]))
            if "Status" in changed:
                progress.update(task, status=escape_controls(str(changed["Status"])))

        client.bus.add_message_handler(on_message)
        try:
            return await coro
        finally:
            client.bus.remove_message_handler(on_message)


async def _add_match(client: Client, rule: str) -> None:
    await call_bus_driver(client.bus, "AddMatch", "s", [rule])


# ---------------------------------------------------------------------- commands


def _device_row(device: dict[str, Any]) -> list[str]:
    version = device["Version"]
    if device.get("VersionPending"):
        version += f" -> {device['VersionPending']}"
    return [
        device["Id"][:12],
        device["Name"],
        device["Plugin"],
        version,
        ", ".join(device["Flags"]),
        device["UpdateState"],
    ]


async def cmd_get_devices(client: Client, args: argparse.Namespace, out: Output) -> int:
    devices = await client.devices()
    if args.json:
        out.json(devices)
        return exitcodes.OK
    if not devices:
        out.info("No devices.")
        return exitcodes.OK
    out.table(
        ["Id", "Name", "Plugin", "Version", "Flags", "State"],
        [_device_row(device) for device in devices],
    )
    return exitcodes.OK


async def cmd_get_device(client: Client, args: argparse.Namespace, out: Output) -> int:
    device_id = await client.resolve_device(args.device)
    (device,) = await client.call("GetDevice", "s", [device_id])
    if args.json:
        out.json(device)
        return exitcodes.OK
    out.fields(
        [(label, device.get(key, "")) for key, label in DEVICE_FIELDS if device.get(key) != ""],
        title=device["Name"],
    )
    for key, value in sorted(device.get("Metadata", {}).items()):
        out.info(f"  {key}: {value}")
    return exitcodes.OK


def _print_entry(out: Output, entry: dict[str, Any], json_mode: bool) -> None:
    if json_mode:
        out.json(entry)
        return
    result = entry["State"]
    text = f"{entry['DeviceName']}: {entry['Kind']} {entry['VersionOld']} -> {entry['VersionNew']}"
    out.info(f"{text}: {result}" + (f" ({entry['Reason']})" if entry["Reason"] else ""))


async def _activate_one(
    client: Client, device: dict[str, Any], out: Output, json_mode: bool
) -> dict[str, Any]:
    label = f"Activating {device['Name']}"
    (entry,) = await with_progress(
        client,
        out,
        label,
        client.call("Activate", "sa{sv}", [device["Id"], {}], timeout=LONG_TIMEOUT),
    )
    _print_entry(out, entry, json_mode)
    return dict(entry)


async def cmd_activate(client: Client, args: argparse.Namespace, out: Output) -> int:
    if args.pending:
        return await _activate_pending(client, args, out)
    if not args.device:
        out.error("name a device, or use --pending for every device with a pending update")
        return exitcodes.USAGE
    device_id = await client.resolve_device(args.device)
    (device,) = await client.call("GetDevice", "s", [device_id])
    await _activate_one(client, device, out, args.json)
    return exitcodes.OK


async def _activate_pending(client: Client, args: argparse.Namespace, out: Output) -> int:
    """Activate every device with a pending update (the scheduled-activation timer)."""
    await client.call("Refresh")
    pending = [d for d in await client.devices() if "needs-activation" in d["Flags"]]
    if not pending:
        out.info("Nothing to activate.")
        return exitcodes.NOTHING_TO_DO
    failed = 0
    for device in pending:
        try:
            await _activate_one(client, device, out, args.json)
        except CallError as error:
            failed += 1
            out.error(f"{device['Name']}: {error.message}")
    return exitcodes.FAILURE if failed else exitcodes.OK


async def cmd_cancel(client: Client, args: argparse.Namespace, out: Output) -> int:
    device_id = await client.resolve_device(args.device)
    await client.call("Cancel", "sa{sv}", [device_id, {}], timeout=LONG_TIMEOUT)
    out.info("Cancelled.")
    return exitcodes.OK


async def cmd_install(client: Client, args: argparse.Namespace, out: Output) -> int:
    device_id = await client.resolve_device(args.device) if args.device else ""
    try:
        fd = os.open(args.file, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as error:
        out.error(f"{args.file}: {error.strerror}")
        return exitcodes.INVALID
    from livefw.bus.backend import Variant

    options = {
        "allow-older": Variant("b", args.allow_older),
        "allow-reinstall": Variant("b", args.allow_reinstall),
        "activate": Variant("b", args.activate),
        "filename": Variant("s", os.path.basename(args.file)),
    }
    try:
        (entry,) = await with_progress(
            client,
            out,
            f"Installing {os.path.basename(args.file)}",
            client.call(
                "Install",
                "sha{sv}",
                [device_id, 0, options],
                unix_fds=[fd],
                timeout=LONG_TIMEOUT,
            ),
        )
    finally:
        os.close(fd)
    _print_entry(out, entry, args.json)
    if not args.json and entry["State"] == "staged":
        out.info(entry["Reason"])
    return exitcodes.OK


async def cmd_refresh(client: Client, args: argparse.Namespace, out: Output) -> int:
    await client.call("Refresh", timeout=LONG_TIMEOUT)
    out.info(f"Refreshed {len(await client.devices())} devices.")
    return exitcodes.OK


def _time(value: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value)) if value else ""


async def cmd_history(client: Client, args: argparse.Namespace, out: Output) -> int:
    options: dict[str, Any] = {}
    from livefw.bus.backend import Variant

    if args.device:
        options["device-id"] = Variant("s", await client.resolve_device(args.device))
    if args.limit:
        options["limit"] = Variant("u", args.limit)
    (entries,) = await client.call("GetHistory", "a{sv}", [options])
    if args.json:
        out.json(entries)
        return exitcodes.OK
    if not entries:
        out.info("No history.")
        return exitcodes.OK
    out.table(
        ["When", "Device", "Kind", "From", "To", "Result", "Reason"],
        [
            [
                _time(e["Created"]),
                e["DeviceName"],
                e["Kind"],
                e["VersionOld"],
                e["VersionNew"],
                e["State"],
                e["Reason"],
            ]
            for e in entries
        ],
    )
    return exitcodes.OK


async def cmd_plugins(client: Client, args: argparse.Namespace, out: Output) -> int:
    (plugins,) = await client.call("GetPlugins")
    if args.json:
        out.json(plugins)
        return exitcodes.OK
    out.table(
        ["Plugin", "Result", "Devices", "Reason"],
        [[p["Name"], p["Result"], p["Devices"], p["Reason"]] for p in plugins],
    )
    return exitcodes.OK


async def cmd_monitor(client: Client, args: argparse.Namespace, out: Output) -> int:
    """Print the daemon's signals until interrupted (or ``--count`` events)."""
    await _add_match(client, f"type='signal',sender='{BUS_NAME}'")
    done = asyncio.Event()
    seen = 0

    def on_message(message: Message) -> None:
        nonlocal seen
        if message.message_type != MessageType.SIGNAL:
            return
        body = unwrap(list(message.body))
        if message.member == "InterfacesAdded":
            props = body[1].get(DEVICE_IFACE, {})
            line = f"added {body[0]}" + (f" ({props.get('Name')})" if props else "")
        elif message.member == "InterfacesRemoved":
            line = f"removed {body[0]}"
        elif message.member == "PropertiesChanged":
            values = " ".join(f"{k}={v}" for k, v in sorted(body[1].items()))
            line = f"changed {message.path} {values}"
        elif message.member == "NameOwnerChanged":
            return
        else:
            line = f"{message.member} {message.path} {body}"
        if args.json:  # one JSON object per line, for `jq` and line readers
            sys.stdout.write(
                json.dumps(
                    {"signal": message.member, "path": message.path, "body": body},
                    default=json_default,
                )
                + "\n"
            )
        else:
            out.info(line)
        sys.stdout.flush()
        seen += 1
        if args.count and seen >= args.count:
            done.set()

    client.bus.add_message_handler(on_message)
    if not args.json:
        out.info("Monitoring livefwd (Ctrl-C to stop)...")
        sys.stdout.flush()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, done.set)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), args.timeout or None)
    return exitcodes.OK


# ------------------------------------------------------------------------ parser


def _add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line, including technology and sim commands."""
    parser = argparse.ArgumentParser(
        prog="livefw",
        description="Client for livefwd, the runtime firmware update daemon.",
        epilog="Exit codes: 0 ok, 1 failed, 2 usage, 3 not found, 4 not authorized, "
        "5 not supported, 6 busy, 7 nothing to do, 8 invalid file or argument, "
        "69 daemon unavailable.",
    )
    parser.add_argument(
        "--bus-address",
        default=os.environ.get("LIVEFW_BUS_ADDRESS"),
        help="D-Bus address (default: $LIVEFW_BUS_ADDRESS, else the system bus)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("get-devices", help="list devices")
    _add_json(p)
    p.set_defaults(func=cmd_get_devices)

    p = sub.add_parser("get-device", help="show one device (re-reads its live state)")
    p.add_argument("device", help="device Id, unique Id prefix or name")
    _add_json(p)
    p.set_defaults(func=cmd_get_device)

    p = sub.add_parser("activate", help="activate a pending or staged update")
    p.add_argument("device", nargs="?", help="device Id, unique Id prefix or name")
    p.add_argument(
        "--pending", action="store_true", help="activate every device with a pending update"
    )
    _add_json(p)
    p.set_defaults(func=cmd_activate)

    p = sub.add_parser("cancel", help="cancel a staged update")
    p.add_argument("device", help="device Id, unique Id prefix or name")
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser("install", help="install a firmware payload")
    p.add_argument("file", help="payload file (capsule)")
    p.add_argument("device", nargs="?", help="device (found from the file when not given)")
    p.add_argument("--allow-older", action="store_true", help="allow a downgrade")
    p.add_argument("--allow-reinstall", action="store_true", help="allow the same version")
    p.add_argument("--activate", action="store_true", help="activate right after staging")
    _add_json(p)
    p.set_defaults(func=cmd_install)

    p = sub.add_parser("refresh", help="re-scan devices and re-read their state")
    p.set_defaults(func=cmd_refresh)

    p = sub.add_parser("history", help="show install and activation history")
    p.add_argument("--device", help="only this device")
    p.add_argument("--limit", type=int, default=0, help="newest N entries")
    _add_json(p)
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("plugins", help="list plugins and why they did or did not load")
    _add_json(p)
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("monitor", help="print device and daemon signals as they come")
    p.add_argument("--count", type=int, default=0, help="exit after N signals")
    p.add_argument("--timeout", type=float, default=0, help="exit after SECONDS")
    _add_json(p)
    p.set_defaults(func=cmd_monitor)

    register_sim(sub)
    for info in pkgutil.iter_modules(livefw.cli.__path__):
        if info.name.startswith("cmd_"):
            module = importlib.import_module(f"livefw.cli.{info.name}")
            module.register(sub)
    return parser


async def run(args: argparse.Namespace, out: Output) -> int:
    """Connect and run the chosen command."""
    handler: Handler = args.func
    if getattr(args, "offline", False):
        return await handler(None, args, out)  # type: ignore[arg-type]
    try:
        client = await Client.connect(args.bus_address)
    except (OSError, ValueError) as error:
        out.error(f"cannot connect to the bus ({error}); is livefwd running?")
        return exitcodes.UNAVAILABLE
    try:
        return await handler(client, args, out)
    finally:
        await client.close()


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point."""
    parser = build_parser()
    args = parser.parse_args(argv)
    out = Output(json_mode=bool(getattr(args, "json", False)))
    try:
        return asyncio.run(run(args, out))
    except CallError as error:
        if error.name in (
            "org.freedesktop.DBus.Error.ServiceUnknown",
            "org.freedesktop.DBus.Error.NameHasNoOwner",
        ):
            out.error("livefwd is not running (org.livefw.Daemon1 has no owner on this bus)")
            return exitcodes.UNAVAILABLE
        code = exitcodes.for_error(error.short)
        if out.json_mode:
            # scripts (the Ansible modules) tell VersionSame from InvalidFile by name
            out.json_error(error.short, error.message, code)
        else:
            out.error(error.message)
        return code
    except TimeoutError:
        out.error("livefwd did not answer in time")
        return exitcodes.FAILURE
    except KeyboardInterrupt:
        return 130
