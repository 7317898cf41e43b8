"""``livefw liveupdate ...``: Live Update Orchestrator sessions through livefwd.

    livefw liveupdate create NAME [--label TEXT]
    livefw liveupdate list [--json]
    livefw liveupdate preserve SESSION FILE --token N [--label TEXT]
    livefw liveupdate tokens SESSION [--json]
    livefw liveupdate retrieve SESSION [--token N -o FILE]
    livefw liveupdate finish SESSION [--force]
    livefw liveupdate drop SESSION
    livefw liveupdate kexec

SESSION is the name given to ``create``, the kernel name (``livefw.<uid>.<name>``)
or the object path. ``preserve`` copies FILE into a new memfd and passes that; after
the kexec, ``retrieve`` first retrieves the session (once) and writes the file
preserved under the token to ``-o`` (``-`` for stdout). A preserved memfd is frozen
by the kernel (it can no longer grow or shrink); ``finish`` refuses while files were
never retrieved unless ``--force`` is given, which releases them for good.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from livefw.bus.backend import Message, MessageType, Variant
from livefw.cli import exitcodes
from livefw.cli.client import BUS_NAME, DEFAULT_TIMEOUT, CallError, Client, unwrap
from livefw.cli.output import Output
from livefw.errors import ERROR_PREFIX

IFACE = "org.livefw.Daemon1.LiveUpdate"
SESSION_IFACE = "org.livefw.Daemon1.LiveUpdateSession"
PLUGIN = "liveupdate"
#: reply errors meaning livefwd went away while handling Kexec (the kernel switched).
_GONE = (
    "org.freedesktop.DBus.Error.NoReply",
    "org.freedesktop.DBus.Error.Disconnected",
)


async def _device_path(client: Client) -> str:
    objects = await client.managed_objects()
    for path, interfaces in objects.items():
        if IFACE in interfaces:
            return path
    raise CallError(
        ERROR_PREFIX + "NotSupported",
        "livefwd has no Live Update Orchestrator device (see `livefw plugins`)",
    )


async def _sessions(client: Client) -> list[dict[str, Any]]:
    (rows,) = await client.call("ListSessions", path=await _device_path(client), interface=IFACE)
    return [
        {"name": name, "state": state, "owner": owner, "label": label, "path": path}
        for name, state, owner, label, path in rows
    ]


async def _resolve(client: Client, query: str) -> dict[str, Any]:
    sessions = await _sessions(client)
    for matcher in (
        lambda s: s["path"] == query,
        lambda s: s["path"].rsplit("/", 1)[-1] == query,
        lambda s: f"livefw.{s['owner']}.{s['name']}" == query,
        lambda s: s["name"] == query,
    ):
        hits = [s for s in sessions if matcher(s)]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            names = ", ".join(f"livefw.{s['owner']}.{s['name']}" for s in hits)
            raise CallError(
                ERROR_PREFIX + "InvalidArgument",
                f"{query!r} matches several sessions ({names}); use the kernel name",
            )
    raise CallError(
        ERROR_PREFIX + "NotFound", f"no session {query!r}; see `livefw liveupdate list`"
    )


async def _raw_call(
    client: Client,
    path: str,
    member: str,
    signature: str = "",
    body: list[Any] | None = None,
    unix_fds: list[int] | None = None,
) -> Message:
    """A call whose reply may carry fds (Client.call drops them)."""
    import asyncio

    reply = await asyncio.wait_for(
        client.bus.call(
            Message(
                destination=BUS_NAME,
                path=path,
                interface=SESSION_IFACE,
                member=member,
                signature=signature,
                body=body or [],
                unix_fds=unix_fds or [],
            )
        ),
        DEFAULT_TIMEOUT,
    )
    if reply is None:
        raise CallError(ERROR_PREFIX + "Internal", f"no reply to {member}")
    if reply.message_type == MessageType.ERROR:
        text = reply.body[0] if reply.body else reply.error_name
        raise CallError(str(reply.error_name), str(text))
    return reply


def _options(label: str | None) -> dict[str, Variant]:
    return {"label": Variant("s", label)} if label else {}


async def cmd_create(client: Client, args: argparse.Namespace, out: Output) -> int:
    (path,) = await client.call(
        "CreateSession",
        "sa{sv}",
        [args.name, _options(args.label)],
        path=await _device_path(client),
        interface=IFACE,
    )
    out.info(f"created session {args.name} ({path})")
    return exitcodes.OK


async def cmd_list(client: Client, args: argparse.Namespace, out: Output) -> int:
    sessions = await _sessions(client)
    if args.json:
        out.json(sessions)
        return exitcodes.OK
    if not sessions:
        out.info("no live-update sessions")
        return exitcodes.OK
    out.table(
        ("Name", "State", "Owner", "Label"),
        [(s["name"], s["state"], s["owner"], s["label"]) for s in sessions],
    )
    return exitcodes.OK


def _memfd_from(path: str) -> int:
    """A memfd holding the contents of ``path`` (``-``: stdin), positioned at 0."""
    if path == "-":
        data = sys.stdin.buffer.read()
    else:
        with open(path, "rb") as handle:
            data = handle.read()
    fd = os.memfd_create(os.path.basename(path) or "stdin", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


async def cmd_preserve(client: Client, args: argparse.Namespace, out: Output) -> int:
    session = await _resolve(client, args.session)
    try:
        fd = _memfd_from(args.file)
    except OSError as error:
        out.error(f"cannot read {args.file}: {error.strerror}")
        return exitcodes.INVALID
    try:
        await _raw_call(
            client,
            session["path"],
            "Preserve",
            "hta{sv}",
            [0, args.token, _options(args.label)],
            unix_fds=[fd],
        )
    finally:
        os.close(fd)
    out.info(
        f"preserved {args.file} in session {session['name']} as token {args.token} "
        "(the kernel keeps the copy frozen: its size no longer changes)"
    )
    return exitcodes.OK


async def cmd_tokens(client: Client, args: argparse.Namespace, out: Output) -> int:
    session = await _resolve(client, args.session)
    reply = await _raw_call(client, session["path"], "ListTokens")
    tokens = [int(token) for token in unwrap(reply.body[0])]
    if args.json:
        out.json(tokens)
    elif tokens:
        for token in tokens:
            out.info(str(token))
    else:
        out.info(f"no files preserved in session {session['name']}")
    return exitcodes.OK


async def cmd_retrieve(client: Client, args: argparse.Namespace, out: Output) -> int:
    session = await _resolve(client, args.session)
    if session["state"] == "outgoing":
        out.error(
            f"session {session['name']} was created in this boot; its files come back "
            "after the kexec"
        )
        return exitcodes.INVALID
    if session["state"] == "incoming":
        await client.call(
            "RetrieveSession",
            "sa{sv}",
            [session["name"], {}],
            path=await _device_path(client),
            interface=IFACE,
        )
        out.info(f"retrieved session {session['name']}")
    if args.token is None:
        return exitcodes.OK
    if not args.output:
        out.error("give -o FILE (or -o - for stdout) to write the retrieved file")
        return exitcodes.USAGE
    reply = await _raw_call(client, session["path"], "Retrieve", "t", [args.token])
    if not reply.unix_fds:
        out.error("livefwd returned no file descriptor")
        return exitcodes.FAILURE
    fds = list(reply.unix_fds)
    try:
        fd = fds[int(reply.body[0])]
        size = os.fstat(fd).st_size
        chunks, offset = [], 0
        while offset < size:
            chunk = os.pread(fd, min(1 << 20, size - offset), offset)
            if not chunk:
                break
            chunks.append(chunk)
            offset += len(chunk)
        data = b"".join(chunks)
    finally:
        for item in fds:
            os.close(item)
    if args.output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        _write_file(args.output, data)
        out.info(f"wrote token {args.token} ({len(data)} bytes) to {args.output}")
    return exitcodes.OK


def _write_file(path: str, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)


async def cmd_finish(client: Client, args: argparse.Namespace, out: Output) -> int:
    session = await _resolve(client, args.session)
    options = {"force": Variant("b", True)} if args.force else {}
    await _raw_call(client, session["path"], "Finish", "a{sv}", [options])
    out.info(f"finished session {session['name']}")
    return exitcodes.OK


async def cmd_drop(client: Client, args: argparse.Namespace, out: Output) -> int:
    session = await _resolve(client, args.session)
    await _raw_call(client, session["path"], "Drop")
    out.info(f"dropped session {session['name']}")
    return exitcodes.OK


async def cmd_kexec(client: Client, args: argparse.Namespace, out: Output) -> int:
    path = await _device_path(client)
    try:
        await client.call("Kexec", "a{sv}", [{}], path=path, interface=IFACE, timeout=120)
    except CallError as error:
        if error.name not in _GONE:
            raise
    out.info("livefwd is switching to the new kernel; sessions are carried across")
    return exitcodes.OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``livefw liveupdate ...``."""
    parser = sub.add_parser(
        "liveupdate",
        help="Live Update Orchestrator sessions (keep memfds across a kexec)",
        description="Keep files across a kexec-based kernel update through livefwd.",
    )
    cmds = parser.add_subparsers(dest="liveupdate_command", metavar="ACTION")
    cmds.required = True

    p = cmds.add_parser("create", help="create a session")
    p.add_argument("name", help="1-45 characters of [A-Za-z0-9._-]")
    p.add_argument("--label", help="a free text label stored with the session")
    p.set_defaults(func=cmd_create)

    p = cmds.add_parser("list", help="list your sessions (root: all)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_list)

    p = cmds.add_parser(
        "preserve",
        help="preserve a copy of FILE (as a memfd) under a token",
        description="Copy FILE into a new memfd and preserve it. The kernel freezes a "
        "preserved memfd: it can no longer grow or shrink and no hole can be punched into "
        "it (EPERM; mm/memfd_luo.c), and its size now is the size carried across the "
        "kexec.",
    )
    p.add_argument("session")
    p.add_argument("file", help="file to copy into a memfd (- for stdin)")
    p.add_argument("--token", type=int, required=True, help="unsigned 64-bit token")
    p.add_argument("--label", help="a label for this file")
    p.set_defaults(func=cmd_preserve)

    p = cmds.add_parser("tokens", help="list the tokens preserved in a session")
    p.add_argument("session")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_tokens)

    p = cmds.add_parser(
        "retrieve", help="after a kexec: retrieve a session, and a file with --token"
    )
    p.add_argument("session")
    p.add_argument("--token", type=int, help="the file's token")
    p.add_argument("-o", "--output", help="where to write the file (- for stdout)")
    p.set_defaults(func=cmd_retrieve)

    p = cmds.add_parser(
        "finish",
        help="finish a session from before the kexec",
        description="Finish a session from before the kexec: the kernel releases its "
        "files. Refused while files were never retrieved (their tokens are listed) "
        "unless --force; VFIO devices must be retrieved and bound first in any case.",
    )
    p.add_argument("session")
    p.add_argument(
        "--force",
        action="store_true",
        help="finish even if files were never retrieved (they are released for good)",
    )
    p.set_defaults(func=cmd_finish)

    p = cmds.add_parser("drop", help="release a session (its files are no longer preserved)")
    p.add_argument("session")
    p.set_defaults(func=cmd_drop)

    p = cmds.add_parser("kexec", help="switch to the kernel loaded with `kexec -l -s` now")
    p.set_defaults(func=cmd_kexec)
