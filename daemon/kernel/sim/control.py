"""``livefw sim``: commands to the simulated machine.

A running ``livefwd --simulate`` serves them on ``<state dir>/sim/control.sock``
(JSON lines, root-only socket, never on the product bus API); with no daemon
running, the CLI loads the machine from the state dir, runs the same command and
saves it. ``reboot`` and ``kexec`` end the running daemon as the kernel would, after
the machine has written what survives.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import structlog

from livefw.errors import InvalidArgument, LivefwError
from livefw.kernel.provider import UEvent
from livefw.kernel.sim.machine import FaultSpec, SimMachine

__all__ = ["CONTROL_SOCKET", "ControlServer", "execute", "request"]

CONTROL_SOCKET = "control.sock"
#: lib/kobject_uevent.c ``kobject_actions``: the only ACTION values the kernel sends.
UEVENT_ACTIONS = ("add", "remove", "change", "move", "online", "offline", "bind", "unbind")
#: include/linux/kobject.h: a uevent's environment fits UEVENT_BUFFER_SIZE bytes in
#: at most UEVENT_NUM_ENVP variables; a foreign uevent is held to the same bounds.
UEVENT_BUFFER_SIZE = 2048
UEVENT_NUM_ENVP = 64
#: commands after which the daemon ends (the simulated kernel went away).
ENDS_DAEMON = ("reboot", "kexec")

log = structlog.get_logger("livefw.sim")


def execute(machine: SimMachine, command: str, args: dict[str, Any]) -> Any:
    """Run one ``livefw sim`` command on ``machine`` and return a JSON-able result.

    Raises:
        LivefwError: a bad command or argument, with a message for the user.
    """
    if command == "status":
        return {
            "profile": machine.state.profile,
            "kernel": machine.state.kernel,
            "boot_id": machine.state.boot_id,
            "boots": machine.state.boots,
            "components": sorted(machine.components),
            "devices": len(machine.devices()),
            "faults": [fault.model_dump() for fault in machine.state.faults],
        }
    if command == "devices":
        return [asdict(device) for device in machine.devices()]
    if command == "add":
        component = machine.component(str(args.get("component", "")))
        return asdict(component.add_device(dict(args.get("options", {}))))
    if command == "remove":
        component, device = machine.find_device(str(args.get("device", "")))
        component.remove_device(device.key)
        return {"removed": device.key}
    if command == "stage":
        component, device = machine.find_device(str(args.get("device", "")))
        return {"staged": component.stage(device.key, dict(args.get("options", {})))}
    if command == "fault":
        target = "*"
        component_name = str(args.get("component", ""))
        if args.get("device"):
            comp, device = machine.find_device(str(args["device"]))
            target, component_name = device.key, comp.name
        fault = FaultSpec(
            component=component_name,
            target=target,
            kind=str(args.get("kind", "")),
            count=int(args.get("count", 1)),
        )
        machine.add_fault(fault)
        return fault.model_dump()
    if command == "faults":
        return {
            "armed": [fault.model_dump() for fault in machine.state.faults],
            "available": {
                name: {k: v for k, v in comp.FAULTS.items() if comp.fault_problem(k) is None}
                for name, comp in machine.components.items()
            },
        }
    if command == "clear-faults":
        machine.clear_faults()
        return {"cleared": True}
    if command == "sample":
        component, device = machine.find_device(str(args.get("device", "")))
        broken = args.get("broken") or None
        if broken == "help":
            return {"broken": component.BROKEN, "component": component.name}
        if broken is not None and broken not in component.BROKEN:
            raise InvalidArgument(
                f"{component.name} has no broken kind {broken!r}; kinds: {sorted(component.BROKEN)}"
            )
        data = component.sample(device.key, args.get("version") or None, broken)
        return {"device": device.key, "data": base64.b64encode(data).decode()}
    if command == "set":
        component = machine.component(str(args.get("component", "")))
        with machine.lock:
            component.configure(str(args.get("key", "")), str(args.get("value", "")))
            machine.changed()
        return {"set": f"{component.name}.{args.get('key')}"}
    if command == "uevent":
        event = foreign_uevent(args)
        machine.emit(event)
        return {"action": event.action, "devpath": event.devpath, "subsystem": event.subsystem}
    if command == "reboot":
        return {"boot_id": machine.reboot()}
    if command == "kexec":
        return {"boot_id": machine.kexec()}
    raise InvalidArgument(f"unknown sim command {command!r}")


def foreign_uevent(args: dict[str, Any]) -> UEvent:
    """A uevent of hardware no component simulates (a tty, a disk, a network card).

    ``livefw sim uevent`` emits it, so that tests can show which uevents make
    livefwd work (probes, rescans) and which must not. Held to the kernel's own
    limits: an ACTION of lib/kobject_uevent.c, the environment's size and count.
    """
    action = str(args.get("action", ""))
    if action not in UEVENT_ACTIONS:
        raise InvalidArgument(f"uevent action must be one of {', '.join(UEVENT_ACTIONS)}")
    devpath = str(args.get("devpath", "")).strip("/")
    subsystem = str(args.get("subsystem", ""))
    raw = args.get("properties") or {}
    if not devpath or not isinstance(raw, dict):
        raise InvalidArgument("a uevent needs a DEVPATH (below /sys) and KEY=VALUE properties")
    properties = {str(k): str(v) for k, v in raw.items()}
    size = (
        len(action) + len(devpath) + len(subsystem) + 40
    )  # ACTION=, DEVPATH=, SUBSYSTEM=, SEQNUM=
    size += sum(len(k) + len(v) + 2 for k, v in properties.items())
    bad = [k for k in properties if not k or not k.replace("_", "").isalnum() or not k.isupper()]
    if bad:
        raise InvalidArgument(f"uevent property names are upper-case words: {bad[0][:40]!r}")
    if size > UEVENT_BUFFER_SIZE or len(properties) + 4 > UEVENT_NUM_ENVP:
        raise InvalidArgument(
            f"a uevent holds at most {UEVENT_BUFFER_SIZE} bytes in {UEVENT_NUM_ENVP} variables"
        )
    return UEvent(action, devpath, subsystem, properties)


class ControlServer:
    """Serves :func:`execute` on a Unix socket inside the running daemon."""

    def __init__(self, machine: SimMachine, on_end: Callable[[str], None]) -> None:
        self.machine = machine
        self.path = os.path.join(machine.directory, CONTROL_SOCKET)
        self._on_end = on_end
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        """Listen (replacing a stale socket)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        old = os.umask(0o077)
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=self.path)
        finally:
            os.umask(old)

    async def stop(self) -> None:
        """Stop listening and remove the socket."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        command = ""
        try:
            line = await reader.readline()
            message = json.loads(line or b"{}")
            command = str(message.get("command", ""))
            args = dict(message.get("args", {}))
            log.info("sim_command", command=command)
            try:
                result = await asyncio.to_thread(execute, self.machine, command, args)
                reply = {"ok": True, "result": result}
            except LivefwError as error:
                reply = {"ok": False, "error": error.message, "name": error.name}
                command = ""
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (json.JSONDecodeError, ConnectionError) as error:
            log.warning("sim_command_bad", error=str(error))
            command = ""
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        if command in ENDS_DAEMON:
            self._on_end(command)


def request(directory: str, command: str, args: dict[str, Any] | None = None) -> Any:
    """Send a command to the daemon serving ``directory``, or run it offline.

    Raises:
        LivefwError: the command failed (daemon or offline).
    """
    path = os.path.join(directory, CONTROL_SOCKET)
    args = args or {}
    if os.path.exists(path):
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(600)
                sock.connect(path)
                sock.sendall(json.dumps({"command": command, "args": args}).encode() + b"\n")
                data = b""
                while not data.endswith(b"\n"):
                    chunk = sock.recv(1 << 16)
                    if not chunk:
                        break
                    data += chunk
        except (ConnectionRefusedError, FileNotFoundError):
            pass  # stale socket: no daemon, fall through to offline
        else:
            reply = json.loads(data or b'{"ok": false, "error": "the daemon closed the socket"}')
            if not reply.get("ok"):
                error = LivefwError(str(reply.get("error", "sim command failed")))
                error.name = str(reply.get("name", "Internal"))  # type: ignore[misc]
                raise error
            return reply.get("result")
    machine = SimMachine.load(directory)
    result = execute(machine, command, args)
    machine.save()
    return result


def daemon_running(directory: str) -> bool:
    """Whether a daemon serves this simulated machine."""
    path = os.path.join(directory, CONTROL_SOCKET)
    if not os.path.exists(path):
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(path)
        except OSError:
            return False
    return True
