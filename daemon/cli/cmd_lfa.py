"""``livefw lfa-options``: an Arm LFA image's activation settings (org.livefw.Daemon1.Lfa)."""

from __future__ import annotations

import argparse

from livefw.bus.backend import Variant
from livefw.cli import exitcodes
from livefw.cli.client import CallError, Client, device_path
from livefw.cli.output import Output

LFA_IFACE = "org.livefw.Daemon1.Lfa"
_ON = {"on": True, "1": True, "yes": True, "true": True}
_OFF = {"off": False, "0": False, "no": False, "false": False}
_NO_INTERFACE = (
    "org.freedesktop.DBus.Error.UnknownMethod",
    "org.freedesktop.DBus.Error.UnknownInterface",
    "org.freedesktop.DBus.Error.UnknownObject",
    "org.freedesktop.DBus.Error.UnknownProperty",
    "org.freedesktop.DBus.Error.InvalidArgs",
)


def _switch(text: str) -> bool:
    value = {**_ON, **_OFF}.get(text.strip().lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"use on or off, not {text!r}")
    return value


async def cmd_lfa_options(client: Client, args: argparse.Namespace, out: Output) -> int:
    device_id = await client.resolve_device(args.device)
    path = device_path(device_id)
    options: dict[str, Variant] = {}
    if args.force_cpu_rendezvous is not None:
        options["force-cpu-rendezvous"] = Variant("b", args.force_cpu_rendezvous)
    if args.auto_activate is not None:
        options["auto-activate"] = Variant("b", args.auto_activate)
    try:
        if options:
            await client.call(
                "SetActivationOptions", "a{sv}", [options], path=path, interface=LFA_IFACE
            )
        current = await client.get_property(path, LFA_IFACE, "ActivationOptions")
    except CallError as error:
        if error.name in _NO_INTERFACE:
            raise CallError(
                "org.livefw.Daemon1.Error.NotSupported",
                "this device has no LFA activation settings (only Arm LFA images do)",
            ) from error
        raise
    if args.json:
        out.json({"device_id": device_id, **{k: current[k] for k in sorted(current)}})
        return exitcodes.OK

    def shown(key: str) -> str:
        if key not in current:
            return "not offered by this kernel's LFA driver"
        return "on" if current[key] else "off"

    out.fields(
        [
            (
                "firmware requires CPU rendezvous",
                "yes" if current["cpu-rendezvous-required"] else "no",
            ),
            ("force CPU rendezvous", shown("force-cpu-rendezvous")),
            ("auto-activate", shown("auto-activate")),
        ],
        title="LFA activation settings",
    )
    return exitcodes.OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``lfa-options``."""
    parser = sub.add_parser(
        "lfa-options",
        help="show or change an Arm LFA image's activation settings",
        description="force-cpu-rendezvous off lets the kernel activate the image without "
        "stopping every CPU when the firmware does not require it; auto-activate on lets "
        "the kernel activate a new pending image by itself when the platform signals it. "
        "Changing them needs org.livefw.daemon1.activate.",
    )
    parser.add_argument("device", metavar="DEVICE", help="an LFA image: id, id prefix or name")
    parser.add_argument(
        "--force-cpu-rendezvous", metavar="on|off", type=_switch, help="stop every CPU always"
    )
    parser.add_argument(
        "--auto-activate", metavar="on|off", type=_switch, help="activate new images by itself"
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=cmd_lfa_options)
