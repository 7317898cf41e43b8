"""``livefw sim``: the simulated machine (only meaningful with ``livefwd --simulate``).

Commands go to a running daemon's simulated kernel through its control socket in
the state dir, or edit the state dir directly when no daemon runs. They never use
the product's D-Bus API.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
from typing import Any

from livefw.cli import exitcodes
from livefw.cli.output import Output
from livefw.errors import LivefwError

DEFAULT_STATE_DIR = "/var/lib/livefw"


def _sim_dir(args: argparse.Namespace) -> str:
    return os.path.join(args.state_dir, "sim")


def _request(args: argparse.Namespace, command: str, **kwargs: Any) -> Any:
    from livefw.kernel.sim.control import request

    return request(_sim_dir(args), command, kwargs)


def _options(pairs: list[str]) -> dict[str, str]:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise LivefwError(f"expected KEY=VALUE, got {pair!r}")
        options[key] = value
    return options


async def _run(args: argparse.Namespace, out: Output) -> int:
    try:
        return await asyncio.to_thread(_dispatch, args, out)
    except LivefwError as error:
        out.error(error.message)
        return exitcodes.for_error(error.name)


def _dispatch(args: argparse.Namespace, out: Output) -> int:
    verb = args.sim_command
    if verb == "init":
        from livefw.kernel.sim.control import daemon_running
        from livefw.kernel.sim.machine import DEFAULT_KERNEL, STATE_FILE, SimMachine

        directory = _sim_dir(args)
        if daemon_running(directory):
            out.error("livefwd is running on this machine; stop it before `sim init`")
            return exitcodes.BUSY
        if os.path.exists(os.path.join(directory, STATE_FILE)) and not args.force:
            out.error(f"{directory} already holds a simulated machine (use --force to replace)")
            return exitcodes.INVALID
        machine = SimMachine.create(
            directory, args.profile, args.scale, args.kernel or DEFAULT_KERNEL
        )
        out.info(
            f"Created a {args.profile} machine (kernel {machine.state.kernel}) in {directory}: "
            f"{len(machine.devices())} devices"
        )
        return exitcodes.OK
    if verb == "status":
        result = _request(args, "status")
        if args.json:
            out.json(result)
        else:
            out.fields(sorted(result.items()), title="Simulated machine")
        return exitcodes.OK
    if verb == "devices":
        devices = _request(args, "devices")
        if args.json:
            out.json(devices)
        else:
            out.table(
                ["Key", "Name", "Component", "Summary"],
                [[d["key"], d["name"], d["component"], d["summary"]] for d in devices],
            )
        return exitcodes.OK
    if verb == "add":
        device = _request(args, "add", component=args.component, options=_options(args.options))
        out.info(f"Added {device['key']} ({device['name']})")
        return exitcodes.OK
    if verb == "remove":
        result = _request(args, "remove", device=args.device)
        out.info(f"Removed {result['removed']}")
        return exitcodes.OK
    if verb == "stage":
        options = _options(args.options)
        if args.version:
            options["version"] = args.version
        result = _request(args, "stage", device=args.device, options=options)
        out.info(f"Staged {result['staged']}")
        return exitcodes.OK
    if verb == "fault":
        component = args.target if not args.device else ""
        fault = _request(
            args,
            "fault",
            component=component,
            device=args.device or "",
            kind=args.kind,
            count=args.count,
        )
        out.info(f"Armed fault {fault['kind']} on {fault['component']}:{fault['target']}")
        return exitcodes.OK
    if verb == "faults":
        result = _request(args, "faults")
        if args.json:
            out.json(result)
            return exitcodes.OK
        rows = [
            [component, kind, description]
            for component, kinds in sorted(result["available"].items())
            for kind, description in sorted(kinds.items())
        ]
        out.table(["Component", "Fault", "What it does"], rows, title="Available faults")
        armed = result["armed"]
        out.info(
            "Armed: "
            + (
                ", ".join(f"{f['component']}:{f['target']}:{f['kind']}x{f['count']}" for f in armed)
                or "none"
            )
        )
        return exitcodes.OK
    if verb == "clear-faults":
        _request(args, "clear-faults")
        out.info("All faults cleared.")
        return exitcodes.OK
    if verb == "sample":
        result = _request(
            args, "sample", device=args.device, version=args.version, broken=args.broken
        )
        if args.broken == "help":
            out.table(
                ["Kind", "What is broken"],
                sorted(result["broken"].items()),
                title=f"Broken {result['component']} samples",
            )
            return exitcodes.OK
        if not args.output:
            out.error("-o FILE is required")
            return exitcodes.USAGE
        data = base64.b64decode(result["data"])
        with open(args.output, "wb") as handle:
            handle.write(data)
        out.info(f"Wrote {len(data)} bytes for {result['device']} to {args.output}")
        return exitcodes.OK
    if verb == "set":
        key, sep, value = args.setting.partition("=")
        if not sep:
            out.error("expected KEY=VALUE")
            return exitcodes.USAGE
        _request(args, "set", component=args.component, key=key, value=value)
        out.info(f"Set {args.component}.{key} = {value}")
        return exitcodes.OK
    if verb == "uevent":
        result = _request(
            args,
            "uevent",
            action=args.action,
            devpath=args.devpath,
            subsystem=args.subsystem,
            properties=_options(args.properties),
        )
        out.info(f"Sent uevent {result['action']} /{result['devpath']} ({result['subsystem']})")
        return exitcodes.OK
    if verb in ("reboot", "kexec"):
        result = _request(args, verb)
        out.info(f"Simulated {verb} done; new boot id {result['boot_id']}")
        if verb == "reboot":
            from livefw.kernel.sim.uefi_model import saved_boot_report

            # the firmware's part of the boot is over; a hang is what a person would see
            report = saved_boot_report(_sim_dir(args))
            if report:
                out.warn(report)
        return exitcodes.OK
    out.error(f"unknown sim command {verb}")
    return exitcodes.USAGE


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``livefw sim`` and its subcommands."""
    sim = sub.add_parser(
        "sim", help="control the simulated machine (livefwd --simulate)", description=__doc__
    )
    sim.add_argument(
        "--state-dir",
        default=os.environ.get("LIVEFW_STATE_DIR", DEFAULT_STATE_DIR),
        help="the daemon's state dir (default: $LIVEFW_STATE_DIR or /var/lib/livefw)",
    )
    sim.set_defaults(func=lambda client, args, out: _run(args, out), offline=True)
    verbs = sim.add_subparsers(dest="sim_command", metavar="SIM_COMMAND")
    verbs.required = True

    p = verbs.add_parser("init", help="create a simulated machine")
    p.add_argument(
        "--profile", default="default", help="default, minimal, rfc, scale, empty, legacy, xen-dom0"
    )
    p.add_argument("--scale", type=int, default=0, help="synthetic devices for --profile scale")
    p.add_argument(
        "--kernel",
        default=None,
        metavar="MAJOR.MINOR",
        help="kernel release whose behaviour the simulated kernel follows "
        "(6.1 or newer; default: the newest one modelled, see docs/kernel.md)",
    )
    p.add_argument("--force", action="store_true", help="replace an existing machine")

    p = verbs.add_parser("status", help="boot id, profile, faults")
    p.add_argument("--json", action="store_true")
    p = verbs.add_parser("devices", help="list simulated devices and their keys")
    p.add_argument("--json", action="store_true")

    p = verbs.add_parser("add", help="hot-add a device (uevent add; lfa: none, as its driver)")
    p.add_argument("component", help="lfa, pfru, fwctl, ...")
    p.add_argument("options", nargs="*", help="KEY=VALUE options of the component")

    p = verbs.add_parser(
        "remove", help="hot-remove a device (uevent remove; lfa: none, as its driver)"
    )
    p.add_argument("device", help="sim device key, key prefix or name")

    p = verbs.add_parser("stage", help="a new image arrives out of band (e.g. from a BMC)")
    p.add_argument("device", help="sim device key, key prefix or name")
    p.add_argument("--version", help="the new image's version")
    p.add_argument("options", nargs="*", help="KEY=VALUE options")

    p = verbs.add_parser("fault", help="arm a fault in the simulated kernel or firmware")
    p.add_argument("target", help="component name (any device), or with --device")
    p.add_argument("kind", help="fault kind (see `livefw sim faults`)")
    p.add_argument("--device", help="only for this device")
    p.add_argument("--count", type=int, default=1, help="how many times (-1: always)")

    p = verbs.add_parser("faults", help="list available and armed faults")
    p.add_argument("--json", action="store_true")
    verbs.add_parser("clear-faults", help="disarm every fault")

    p = verbs.add_parser("sample", help="write a valid or deliberately broken payload")
    p.add_argument("device", help="sim device key, key prefix or name")
    p.add_argument("--version", help="version the payload carries")
    p.add_argument("--broken", help="kind of breakage; `help` lists them")
    p.add_argument("-o", "--output", help="file to write")

    p = verbs.add_parser("set", help="set a knob of a simulated component")
    p.add_argument("component")
    p.add_argument("setting", help="KEY=VALUE")

    p = verbs.add_parser(
        "uevent", help="send a uevent of hardware nothing simulates (a tty, a disk, a NIC)"
    )
    p.add_argument("action", help="add, remove, change, move, online, offline, bind, unbind")
    p.add_argument("devpath", help="below /sys, e.g. devices/virtual/tty/tty5")
    p.add_argument("properties", nargs="*", help="KEY=VALUE, e.g. DEVNAME=tty5")
    p.add_argument("--subsystem", default="", help="SUBSYSTEM, e.g. tty, block, net")

    verbs.add_parser("reboot", help="reboot: firmware runs at boot, the daemon ends")
    verbs.add_parser("kexec", help="kexec: preserved files carried over, the daemon ends")
