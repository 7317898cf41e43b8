# ruff: noqa: ASYNC110, ASYNC220, ASYNC230
# (a measuring harness: blocking set-up between timed sections is deliberate)
"""The harness's bus connection: calls, NameOwnerChanged waits, launching daemons."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from typing import Any

from bench.config import DBUS
from bench.targets import Target
from livefw.bus.backend import Message, MessageBus, MessageType
from livefw.testing import PrivateBus


class Harness:
    """The harness's bus connection, a NameOwnerChanged watcher and the daemons."""

    def __init__(self, bus: PrivateBus, scratch: str) -> None:
        self.private = bus
        self.scratch = scratch
        self.bus: Any = None
        self.waiters: list[tuple[str, bool, asyncio.Future[float]]] = []
        self.live: dict[int, subprocess.Popen[bytes]] = {}
        self.bus_pid = bus.proc.pid if bus.proc else None
        self.fd_bus: Any = None  # a connection that passes file descriptors (Install)
        self.payloads: dict[str, str] = {}

    async def connect(self) -> None:
        self.bus = await MessageBus(bus_address=self.private.address).connect()
        self.bus.add_message_handler(self._on_message)
        self.fd_bus = await MessageBus(
            bus_address=self.private.address, negotiate_unix_fd=True
        ).connect()

    def _on_message(self, msg: Any) -> None:
        if msg.message_type == MessageType.SIGNAL and msg.member == "NameOwnerChanged":
            now = time.perf_counter()
            name, _old, new = msg.body
            for waiter in list(self.waiters):
                if waiter[0] == name and bool(new) == waiter[1] and not waiter[2].done():
                    waiter[2].set_result(now)
                    self.waiters.remove(waiter)

    async def call(
        self,
        dest: str,
        path: str,
        iface: str,
        member: str,
        signature: str = "",
        body: Sequence[Any] = (),
        unix_fds: Sequence[int] = (),
        bus: Any = None,
        check: bool = True,
    ) -> Any:
        """The reply; an error reply raises RuntimeError unless ``check`` is false."""
        msg = Message(
            destination=dest,
            path=path,
            interface=iface,
            member=member,
            signature=signature,
            body=list(body),
            unix_fds=list(unix_fds),
        )
        reply = await (bus or self.bus).call(msg)
        if check and reply.message_type != MessageType.METHOD_RETURN:
            raise RuntimeError(f"{iface}.{member} on {dest}: {reply.error_name} {reply.body}")
        return reply

    async def watch(self, name: str) -> None:
        rule = (
            "type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',"
            f"member='NameOwnerChanged',arg0='{name}'"
        )
        await self.call(*DBUS, "AddMatch", "s", [rule])

    def expect(self, name: str, owned: bool) -> asyncio.Future[float]:
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiters.append((name, owned, fut))
        return fut

    async def launch(self, t: Target, log_name: str, argv: list[str] | None = None) -> Any:
        """Start ``t``; return (process, seconds from exec to its name being owned)."""
        owner = await self.call(*DBUS, "NameHasOwner", "s", [t.name])
        if owner.body[0]:
            raise RuntimeError(f"{t.name} is already owned before {t.key} starts")
        fut = self.expect(t.name, True)
        log_path = os.path.join(self.scratch, "logs", log_name)
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        with open(log_path, "wb") as logf:
            t0 = time.perf_counter()
            proc = subprocess.Popen(
                argv or t.argv,
                env=t.env,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.live[proc.pid] = proc
        deadline = t0 + 120
        while not fut.done():
            if proc.poll() is not None:
                self.live.pop(proc.pid, None)
                raise RuntimeError(f"{t.key} exited ({proc.returncode}) early; log {log_path}")
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{t.key} did not own {t.name} in 120 s; log {log_path}")
            await asyncio.wait([fut], timeout=0.05)
        return proc, fut.result() - t0

    async def stop(self, proc: subprocess.Popen[bytes], t: Target) -> float:
        gone = self.expect(t.name, False)
        t0 = time.perf_counter()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        while proc.poll() is None and time.perf_counter() - t0 < 15:
            await asyncio.sleep(0.005)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stopped = time.perf_counter() - t0
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(gone, 5)
        self.live.pop(proc.pid, None)
        return stopped

    def close(self, bus: PrivateBus) -> None:
        """Stop every daemon, the harness's connections, then the private bus."""
        self.kill_all()
        for connection in (self.bus, self.fd_bus):
            if connection is not None:
                connection.disconnect()  # before the bus goes: no EOF from its reader
        bus.stop()

    def kill_all(self) -> None:
        for proc in list(self.live.values()):
            if proc.poll() is None:
                proc.terminate()
        for proc in list(self.live.values()):
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.live.clear()
