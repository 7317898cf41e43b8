"""``livefw inspect FILE``: what a firmware file carries, read locally without livefwd.

Configuration management (the Ansible modules in ``ansible/``) asks this before an
install to stay idempotent: a cabinet names its release versions and the GUIDs of
the devices it is for, so a tool can compare them with ``livefw get-devices --json``
without staging anything. A raw capsule carries its version in a
technology-specific header that only livefwd's plugins read, so for those the
answer says ``"kind": "raw"`` and gives the size and SHA-256 only.

The cabinet is parsed in this process, as the invoking user, with the same limits
livefwd applies (daemon/cabinet.py): no privilege is involved.
"""

from __future__ import annotations

import argparse
import hashlib
import os
from typing import Any

from livefw.cli import exitcodes
from livefw.cli.output import Output

__all__ = ["inspect_file", "register"]

#: a larger file is no firmware livefw would install (Limits.max_size in daemon/cabinet.py).
MAX_SIZE = 256 * 1024 * 1024


def inspect_file(data: bytes) -> dict[str, Any]:
    """What ``data`` is: a cabinet's releases, or a raw payload's size and digest.

    Raises:
        InvalidFile: a cabinet livefwd would refuse (the message says why).
    """
    from livefw.cabinet import is_cabinet, read_cabinet

    result: dict[str, Any] = {
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    if not is_cabinet(data):
        result["kind"] = "raw"
        return result
    cabinet = read_cabinet(data)
    result["kind"] = "cabinet"
    result["releases"] = [
        {
            "appstream_id": release.appstream_id,
            "name": release.name,
            "version": release.version,
            "version_format": release.version_format,
            "protocol": release.protocol,
            "guids": list(release.guids),
            "payload": release.payload_name,
            "payload_size": release.size,
        }
        for release in cabinet.releases
    ]
    return result


def _read_bounded(path: str) -> bytes:
    """FILE's bytes, refusing anything larger than :data:`MAX_SIZE`."""
    with open(path, "rb") as handle:
        if os.fstat(handle.fileno()).st_size > MAX_SIZE:
            raise ValueError(f"larger than {MAX_SIZE // (1024 * 1024)} MiB")
        data = handle.read(MAX_SIZE + 1)
    if len(data) > MAX_SIZE:
        raise ValueError(f"larger than {MAX_SIZE // (1024 * 1024)} MiB")
    return data


async def cmd_inspect(client: None, args: argparse.Namespace, out: Output) -> int:
    """Read FILE (bounded), describe it."""
    from livefw.errors import LivefwError

    try:
        data = _read_bounded(args.file)
        result = inspect_file(data)
    except OSError as error:
        out.error(f"{args.file}: {error.strerror or error}")
        return exitcodes.INVALID
    except ValueError as error:
        out.error(f"{args.file}: {error}")
        return exitcodes.INVALID
    except LivefwError as error:
        out.error(f"{args.file}: {error.message}")
        return exitcodes.INVALID
    if args.json:
        out.json(result)
        return exitcodes.OK
    rows: list[tuple[str, Any]] = [
        ("Kind", result["kind"]),
        ("Size", result["size"]),
        ("SHA-256", result["sha256"]),
    ]
    for release in result.get("releases", []):
        rows += [
            ("Release", f"{release['name'] or release['appstream_id']} {release['version']}"),
            ("  GUIDs", release["guids"]),
            ("  Protocol", release["protocol"]),
        ]
    out.fields(rows, title=os.path.basename(args.file))
    return exitcodes.OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``livefw inspect``."""
    parser = sub.add_parser(
        "inspect",
        help="what a firmware file carries (cabinet releases, GUIDs), read locally",
    )
    parser.add_argument("file", help="a cabinet (.cab) or a raw capsule")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=cmd_inspect, offline=True)
