"""A hostile bus client, run as an unprivileged uid (setpriv) by the robustness tests.

``python hostile_client.py ADDRESS`` reads commands from stdin, one per line, and
answers each with one JSON line on stdout:

* ``send KIND COUNT [PATH]``: COUNT messages of KIND (below), each carrying
  ``FDS`` descriptors of /dev/null (the client closes its own copies), then a
  ``Peer.Ping`` round trip so that livefwd has read everything before the answer;
  answers ``{"replies": {error name or "ok": count}}``.
* ``flood KIND COUNT``: COUNT calls of KIND at once (one fd each) over 4 connections;
  answers when every reply has come, with the same ``replies`` count.
* ``watch SECONDS [PATH...]``: the paths of the PropertiesChanged signals received so
  far (a match rule is added at start), once every PATH is among them or after
  SECONDS: ``{"paths": [...]}``.
* ``quit``.

It prints ``{"ready": true}`` once connected (and subscribed to PropertiesChanged).
It imports only the backend, so it runs with whichever D-Bus library the test picks.
Tests drive it through :class:`HostileClient` (``nobody`` under setpriv).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from livefw.bus.backend import Message, MessageBus, MessageType, Variant, call
from livefw.testing import NOBODY, PrivateBus, as_user

BUS = "org.livefw.Daemon1"
MANAGER_PATH = "/org/livefw/Daemon1"
MANAGER = "org.livefw.Daemon1.Manager"
FWUPD = "org.freedesktop.fwupd"
#: dbus-daemon's max_message_unix_fds on the system bus (and the libraries' recvmsg).
FDS = 16


def _message(kind: str, fds: list[int], path: str) -> Message:
    def method(
        member: str, interface: str = MANAGER, signature: str = "", body: Any = None
    ) -> Message:
        return Message(
            destination=BUS,
            path=path or MANAGER_PATH,
            interface=interface,
            member=member,
            signature=signature,
            body=body or [],
            unix_fds=fds,
        )

    if kind == "ping":
        return method("Ping", "org.freedesktop.DBus.Peer")
    if kind == "get-devices":
        return method("GetDevices")
    if kind == "unknown-method":
        return method("NoSuchMethod", signature="h", body=[0])
    if kind == "wrong-signature":
        return method("GetDevices", signature="hh", body=[0, 1])
    if kind == "properties-get":
        return method("Get", "org.freedesktop.DBus.Properties", "ss", [MANAGER, "Status"])
    if kind == "introspect":
        return method("Introspect", "org.freedesktop.DBus.Introspectable")
    if kind == "install":
        # one descriptor for the h argument, 15 more no one asked for: AuthFailed
        return method("Install", signature="sha{sv}", body=["", 0, {}])
    if kind == "install-nested":
        # and one named again inside an option variant: InvalidArgument
        return method("Install", signature="sha{sv}", body=["", 0, {"force": Variant("h", 3)}])
    if kind == "install-missing":
        # an h that refers to no attached descriptor (index 7 of none)
        return method("Install", signature="sha{sv}", body=["", 7, {}])
    if kind == "session-preserve":
        # another uid's session: the guard answers UnknownObject
        return method("Preserve", "org.livefw.Daemon1.LiveUpdateSession", "hta{sv}", [0, 1, {}])
    if kind == "compat-ping":
        message = method("Ping", "org.freedesktop.DBus.Peer")
        message.destination, message.path = FWUPD, "/"
        return message
    if kind == "compat-get-details":
        # fwupd's convention: the method takes the fd list; 16 is the wrong number
        message = method("GetDetails", FWUPD, "h", [0])
        message.destination, message.path = FWUPD, "/"
        return message
    if kind == "signal":
        return Message(
            message_type=MessageType.SIGNAL,
            destination=BUS,
            path="/org/example/Hostile",
            interface="org.example.Hostile",
            member="Boo",
            signature="h",
            body=[0],
            unix_fds=fds,
        )
    raise SystemExit(f"unknown kind {kind}")


async def _send(bus: MessageBus, kind: str, count: int, path: str) -> dict[str, Any]:
    replies: Counter[str] = Counter()
    for _ in range(count):
        fds = (
            []
            if kind == "install-missing"
            else [os.open(os.devnull, os.O_RDONLY) for _ in range(FDS)]
        )
        try:
            message = _message(kind, fds, path)
            if message.message_type == MessageType.SIGNAL:
                await bus.send(message)
            else:
                reply = await call(bus, message)
                replies[reply.error_name or "ok"] += 1
        finally:
            for fd in fds:
                os.close(fd)
    ping = Message(
        destination=BUS,
        path=MANAGER_PATH,
        interface="org.freedesktop.DBus.Peer",
        member="Ping",
    )
    await call(bus, ping)
    return {"replies": dict(replies)}


async def _flood(address: str, kind: str, count: int) -> dict[str, Any]:
    """COUNT calls of KIND at once, spread over 4 connections, each with one fd."""
    buses = [MessageBus(bus_address=address, negotiate_unix_fd=True) for _ in range(4)]
    for bus in buses:
        await bus.connect()

    async def one(index: int) -> str:
        fd = os.open(os.devnull, os.O_RDONLY)
        try:
            reply = await call(buses[index % len(buses)], _message(kind, [fd], ""))
            return str(reply.error_name or "ok")
        finally:
            os.close(fd)

    replies = Counter(await asyncio.gather(*(one(index) for index in range(count))))
    for bus in buses:
        bus.disconnect()
    return {"replies": dict(replies)}


async def main(address: str) -> None:
    bus = MessageBus(bus_address=address, negotiate_unix_fd=True)
    await bus.connect()
    seen: list[str] = []
    arrived = asyncio.Event()

    def on_message(message: Message) -> bool:
        if message.message_type == MessageType.SIGNAL and message.member == "PropertiesChanged":
            seen.append(str(message.path))
            arrived.set()
        return False

    bus.add_message_handler(on_message)
    await call(
        bus,
        Message(
            destination="org.freedesktop.DBus",
            path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus",
            member="AddMatch",
            signature="s",
            body=["type='signal',member='PropertiesChanged'"],
        ),
    )
    print(json.dumps({"ready": True}), flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        words = line.split()
        if not words or words[0] == "quit":
            break
        if words[0] == "send":
            path = words[3] if len(words) > 3 else ""
            result = await _send(bus, words[1], int(words[2]), path)
        elif words[0] == "flood":
            result = await _flood(address, words[1], int(words[2]))
        elif words[0] == "watch":
            # until every PATH given has been seen (or SECONDS have passed)
            deadline = loop.time() + float(words[1])
            while not set(words[2:]) <= set(seen) and loop.time() < deadline:
                arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(arrived.wait(), deadline - loop.time())
            result = {"paths": sorted(set(seen))}
        else:
            result = {"error": f"unknown command {words[0]}"}
        print(json.dumps(result), flush=True)
    bus.disconnect()


class HostileClient:
    """This program as ``nobody`` (setpriv; needs root), driven line by line.

    ``uid=None`` runs it as the test's own user instead (root: a privileged watcher).
    """

    def __init__(
        self, bus: PrivateBus, env: dict[str, str] | None = None, uid: int | None = NOBODY
    ) -> None:
        environment = bus.env()
        environment.update(env or {})
        environment["PYTHONDONTWRITEBYTECODE"] = "1"
        command = [sys.executable, str(Path(__file__).resolve()), bus.address]
        self.proc = subprocess.Popen(
            as_user(uid, command) if uid is not None else command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environment,
            cwd="/",
        )
        assert self._answer() == {"ready": True}

    def _answer(self) -> Any:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            assert self.proc.stderr is not None
            raise AssertionError(f"the hostile client died: {self.proc.stderr.read()}")
        return json.loads(line)

    def command(self, *words: object) -> Any:
        """Send one command line and return its JSON answer."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(" ".join(str(word) for word in words) + "\n")
        self.proc.stdin.flush()
        return self._answer()

    def close(self) -> None:
        """Tell the client to quit; kill it if it does not."""
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> HostileClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_fds(pid: int) -> int:
    """How many descriptors process ``pid`` has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def settled_fds(pid: int) -> int:
    """The fd count once it stops moving (a polkit or uid lookup may still be closing)."""
    count = open_fds(pid)
    for _ in range(20):
        time.sleep(0.05)
        again = open_fds(pid)
        if again == count:
            return count
        count = again
    return count


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
