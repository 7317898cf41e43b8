"""``livefw fwctl``: list fwctl devices, show their info, decode CXL features, raw RPCs."""

from __future__ import annotations

import argparse
from typing import Any

from livefw.bus.backend import Variant
from livefw.cli import exitcodes
from livefw.cli.client import DEVICE_IFACE, Client, device_path
from livefw.cli.output import Output
from livefw.kernel.uapi import fwctl as uapi

FWCTL_IFACE = "org.livefw.Daemon1.Fwctl"
_PAGE = 32  # features per Get Supported Features request
#: ``fwctl list``: column title and the device property it shows (after the short Id).
_LIST_COLUMNS = (
    ("Node", "Node"),
    ("Type", "DeviceType"),
    ("Parent", "Parent"),
    ("PCI address", "PciAddress"),
    ("Driver", "Driver"),
    ("Name", "Name"),
)


def _plain(value: Any) -> Any:
    """JSON-friendly values (bytes as hex)."""
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


async def _fwctl_devices(client: Client) -> list[dict[str, Any]]:
    objects = await client.managed_objects()
    result = []
    for interfaces in objects.values():
        if FWCTL_IFACE in interfaces and DEVICE_IFACE in interfaces:
            result.append({**interfaces[DEVICE_IFACE], **interfaces[FWCTL_IFACE]})
    return sorted(result, key=lambda d: (d["Node"], d["Id"]))


async def _properties(client: Client, device_id: str, interface: str) -> dict[str, Any]:
    (values,) = await client.call(
        "GetAll",
        "s",
        [interface],
        path=device_path(device_id),
        interface="org.freedesktop.DBus.Properties",
    )
    return dict(values)


async def rpc(
    client: Client, device_id: str, scope: str, request: bytes, response_size: int | None = None
) -> tuple[bytes, dict[str, Any]]:
    """Call ``Rpc`` on a device; returns the response and the info dict."""
    options = {} if response_size is None else {"response-size": Variant("u", response_size)}
    response, info = await client.call(
        "Rpc",
        "saya{sv}",
        [scope, request, options],
        path=device_path(device_id),
        interface=FWCTL_IFACE,
    )
    return bytes(response), dict(info)


async def cmd_list(client: Client, args: argparse.Namespace, out: Output) -> int:
    devices = await _fwctl_devices(client)
    if args.json:
        out.json(_plain(devices))
        return exitcodes.OK
    if not devices:
        out.info("no fwctl devices")
        return exitcodes.OK
    out.table(
        ("Id", *(title for title, _ in _LIST_COLUMNS)),
        ((d["Id"][:8], *(d[key] for _, key in _LIST_COLUMNS)) for d in devices),
    )
    return exitcodes.OK


async def cmd_info(client: Client, args: argparse.Namespace, out: Output) -> int:
    device_id = await client.resolve_device(args.device)
    device = await _properties(client, device_id, DEVICE_IFACE)
    fwctl = await _properties(client, device_id, FWCTL_IFACE)
    if args.json:
        out.json(_plain({**device, **fwctl}))
        return exitcodes.OK
    info = fwctl.get("Info", {})
    pairs: list[tuple[str, Any]] = [
        ("Id", device_id),
        ("Name", device["Name"]),
        ("Vendor", device["Vendor"]),
        ("Node", fwctl["Node"]),
        ("Device type", fwctl["DeviceType"]),
        ("Parent", fwctl["Parent"]),
        ("Parent driver", fwctl["Driver"]),
        ("PCI address", fwctl["PciAddress"]),
    ]
    for key, value in sorted(info.items()):
        pairs.append((f"Info {key}", _plain(value) if value != b"" else "(none)"))
    out.fields(pairs, title=device["Name"])
    return exitcodes.OK


def _effects_text(effects: int) -> str:
    words = []
    if effects & uapi.CXL_CMD_IMMEDIATE_MASK:
        words.append("immediate")
    if effects & uapi.CXL_CMD_RESET_MASK:
        words.append("after-reset")
    if effects & uapi.CXL_CMD_BACKGROUND:
        words.append("background")
    return ",".join(words) or "-"


def _set_scope(entry: uapi.CxlFeatureEntry) -> str:
    if not entry.changeable:
        return "kernel-owned" if entry.name else "read-only"
    needed = uapi.cxl_set_feature_min_scope(entry.effects)
    return uapi.SCOPE_NAMES[needed] if needed is not None else "never"


def _feature_dict(entry: uapi.CxlFeatureEntry) -> dict[str, Any]:
    return {
        "index": entry.index,
        "uuid": entry.uuid,
        "name": entry.name,
        "get-size": entry.get_size,
        "set-size": entry.set_size,
        "flags": entry.flags,
        "changeable": entry.changeable,
        "get-version": entry.get_version,
        "set-version": entry.set_version,
        "effects": entry.effects,
        "set-scope": _set_scope(entry),
        # cxl_set_feature() (drivers/cxl/core/features.c) always sets "saved across reset"
        "set-saved-across-reset": entry.changeable,
    }


async def read_features(client: Client, device_id: str) -> list[uapi.CxlFeatureEntry]:
    """All supported features through Rpc at the configuration scope."""
    head, _ = await rpc(client, device_id, "configuration", uapi.pack_get_supported_features(0, 0))
    total = uapi.unpack_supported_features(head).supported
    entries: list[uapi.CxlFeatureEntry] = []
    while len(entries) < total:
        count = min(_PAGE, total - len(entries))
        request = uapi.pack_get_supported_features(count * uapi.CXL_FEAT_ENTRY_SIZE, len(entries))
        size = uapi.CXL_RPC_OUT_SIZE + uapi.CXL_GET_SUP_OUT_SIZE + count * uapi.CXL_FEAT_ENTRY_SIZE
        response, _ = await rpc(client, device_id, "configuration", request, size)
        page = uapi.unpack_supported_features(response)
        if not page.entries:
            break
        entries.extend(page.entries)
    return entries


async def cmd_features(client: Client, args: argparse.Namespace, out: Output) -> int:
    device_id = await client.resolve_device(args.device)
    kind = await client.get_property(device_path(device_id), FWCTL_IFACE, "DeviceType")
    if kind != "cxl":
        out.error(f"features are a CXL concept; this device is of type {kind}")
        return exitcodes.NOT_SUPPORTED
    entries = await read_features(client, device_id)
    if args.json:
        out.json([_feature_dict(entry) for entry in entries])
        return exitcodes.OK
    out.table(
        ("#", "UUID", "Name", "Get", "Set", "Changeable", "Effects", "Set needs"),
        (
            (
                e.index,
                e.uuid,
                e.name,
                e.get_size,
                e.set_size,
                "yes" if e.changeable else "no",
                _effects_text(e.effects),
                _set_scope(e),
            )
            for e in entries
        ),
        title=f"{len(entries)} CXL features",
    )
    if any(e.changeable for e in entries):
        out.info(
            "Set Feature through fwctl is always saved across reset, and the kernel moves "
            "the data in mailbox-sized pieces itself (transfer flags in a request are ignored)"
        )
    return exitcodes.OK


async def cmd_rpc(client: Client, args: argparse.Namespace, out: Output) -> int:
    try:
        request = bytes.fromhex(args.request.replace(":", "").replace(" ", ""))
    except ValueError:
        out.error("REQUEST must be hex bytes, e.g. 0d08000000000000 0000000000000000")
        return exitcodes.INVALID
    device_id = await client.resolve_device(args.device)
    response, info = await rpc(client, device_id, args.scope, request, args.response_size)
    if args.json:
        out.json({"response": response.hex(), "info": _plain(info)})
        return exitcodes.OK
    out.fields([(key, value) for key, value in sorted(info.items())], title="RPC")
    shown = response
    if "payload-length" in info:  # CXL: header + size bytes, then the kernel's zeros
        shown = response[: 8 + int(info["payload-length"])]
    elif info.get("response-length-exact") is False:
        # the whole buffer came back (mlx5): leave out the zeros after the output
        shown = response.rstrip(b"\0")
        if len(shown) < len(response):
            out.info(f"({len(response) - len(shown)} trailing zero bytes not shown)")
    out.info(shown.hex())
    for note in rpc_notes(info):
        out.info(note)
    return exitcodes.OK


def rpc_notes(info: dict[str, Any]) -> list[str]:
    """What a person should know about a reply, from its info."""
    notes = []
    if info.get("response-length-exact") is False and "payload-length" in info:
        notes.append(
            f"note: the reply is 8 + payload-length = {8 + int(info['payload-length'])} bytes; "
            "the kernel's response-length counts 8 more (sizeof struct fwctl_rpc_cxl_out)"
        )
    elif info.get("response-length-exact") is False:
        notes.append(
            f"note: the driver does not report how long the answer is (mlx5); the response is "
            f"the whole {info.get('response-length', 0)}-byte buffer offered: the command's "
            "output, then zeros"
        )
    if info.get("saved-across-reset"):
        count = info.get("mailbox-commands")
        carried = f" in {count} mailbox command(s)" if count else ""
        notes.append(
            "note: the kernel saved this Set Feature across reset and sent the data"
            f"{carried} itself (cxl_set_feature); transfer flags are not the caller's to set"
        )
    return notes


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``livefw fwctl ...``."""
    parser = sub.add_parser("fwctl", help="device firmware RPC (fwctl) devices")
    commands = parser.add_subparsers(dest="fwctl_command", metavar="COMMAND")
    commands.required = True

    p = commands.add_parser("list", help="list fwctl devices")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_list)

    p = commands.add_parser("info", help="show a fwctl device and its FWCTL_INFO data")
    p.add_argument("device", help="device id, id prefix or name")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_info)

    p = commands.add_parser("features", help="decode a CXL device's supported features")
    p.add_argument("device", help="device id, id prefix or name")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_features)

    p = commands.add_parser("rpc", help="send a raw RPC (hex) at a scope")
    p.add_argument("device", help="device id, id prefix or name")
    p.add_argument("scope", choices=list(uapi.SCOPES_BY_NAME), help="the RPC's scope")
    p.add_argument("request", help="the request as hex bytes")
    p.add_argument("--response-size", type=int, default=None, help="response buffer, bytes")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_rpc)
