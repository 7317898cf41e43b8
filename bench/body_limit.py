#!/usr/bin/env python3
# (a measuring script: blocking set-up between timed sections is deliberate)
"""What the bus body limit saves: ``make bench-limits`` (about 1-2 min; nothing asserted).

1. **Unmarshal cost** (in process, no bus): the time each D-Bus library takes to
   unmarshal one message body of the costliest shape for its size (an array of byte
   variants, ``av``: 4 bytes a value) at sizes around livefwd's limit (MAX_BODY) and
   beyond. Without the limit, this is what one message from any local user holds
   livefwd's event loop for.
2. **Skipping** (in process): a 30 MiB message read through :class:`BoundedSocket`
   from a socketpair: the longest single call of the reader and the total.
3. **On a bus** (private dbus-daemon, ``livefwd --simulate``, per backend): a root
   client's ``Peer.Ping`` round trips while another connection sends 30 MiB
   GetDevice calls back to back (each answered LimitsExceeded): median and slowest.

Figures are min of 3 (1, 2) or median/max (3); the machine is shared, read them as
orders of magnitude.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import io
import os
import select
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from typing import Any

from livefw.bus.backend import MAX_BODY, Message, MessageBus, call
from livefw.bus.framing import BoundedSocket
from livefw.testing import DaemonProcess, PrivateBus

BACKENDS = ("next", "fast")
SIZES = (64 * 1024, MAX_BODY, 1024 * 1024, 4 * 1024 * 1024)


def _library(backend: str) -> tuple[Any, Any, Any]:
    package = "dbus_next" if backend == "next" else "dbus_fast"
    message = importlib.import_module(f"{package}.message").Message
    variant = importlib.import_module(f"{package}.signature").Variant
    unmarshaller = importlib.import_module(f"{package}._private.unmarshaller").Unmarshaller
    return message, variant, unmarshaller


def unmarshal_cost(backend: str, size: int) -> float:
    message_class, variant, unmarshaller = _library(backend)
    body = [[variant("y", 1)] * (size // 4)]
    message = message_class(
        destination="org.livefw.Daemon1",
        path="/org/livefw/Daemon1",
        interface="org.livefw.Daemon1.Manager",
        member="GetDevice",
        signature="av",
        body=body,
        serial=1,
    )
    data = bytes(message._marshall(False))
    best = float("inf")
    for _ in range(3):
        stream = io.BytesIO(data)
        reader = unmarshaller(stream) if backend == "next" else unmarshaller(stream, None, False)
        started = time.perf_counter()
        reader.unmarshall()
        best = min(best, time.perf_counter() - started)
    return best


def skip_cost(size: int = 30 * 1024 * 1024) -> tuple[float, float, int]:
    """(longest reader call, total, calls) for one ``size`` message through the guard."""
    message_class, _variant, _unmarshaller = _library("fast" if _has("dbus_fast") else "next")
    data = bytes(
        message_class(
            destination="org.livefw.Daemon1",
            path="/org/livefw/Daemon1",
            interface="org.livefw.Daemon1.Manager",
            member="GetDevice",
            signature="ay",
            body=[b"x" * size],
            serial=1,
            sender=":1.7",
        )._marshall(False)
    )
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    done: list[int] = []
    guard = BoundedSocket(ours, MAX_BODY, 16 * 1024, lambda refused: done.append(1))
    writer = threading.Thread(target=theirs.sendall, args=(data,))
    writer.start()
    longest, total, calls = 0.0, 0.0, 0
    while not done:
        select.select([ours], [], [])
        started = time.perf_counter()
        with contextlib.suppress(BlockingIOError):
            guard.recvmsg(16, 64)
        spent = time.perf_counter() - started
        longest, total, calls = max(longest, spent), total + spent, calls + 1
    writer.join()
    ours.close()
    theirs.close()
    return longest, total, calls


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


#: the attacking client: its own process (marshalling 30 MiB must not hold the
#: pinging client's loop); prints how many of its calls were refused
ATTACK = """
import asyncio, sys
from livefw.bus.backend import Message, MessageBus, call

async def main():
    bus = await MessageBus(bus_address=sys.argv[1]).connect()
    big, refused = "x" * (30 * 1024 * 1024), 0
    loop = asyncio.get_running_loop()
    end = loop.time() + float(sys.argv[2])
    while loop.time() < end:
        reply = await call(bus, Message(
            destination="org.livefw.Daemon1", path="/org/livefw/Daemon1",
            interface="org.livefw.Daemon1.Manager", member="GetDevice",
            signature="s", body=[big]))
        refused += reply.error_name == "org.freedesktop.DBus.Error.LimitsExceeded"
    print(refused)

asyncio.run(main())
"""


async def pings_under_attack(backend: str, seconds: float = 8.0) -> tuple[float, float, int]:
    """(median, slowest ping in seconds, refused big calls) with livefwd on ``backend``."""
    scratch = tempfile.mkdtemp(prefix="livefw-bench-limits.")
    bus = PrivateBus().start()
    state = os.path.join(scratch, "state")
    daemon = DaemonProcess(bus, state, env={"LIVEFW_DBUS_BACKEND": backend})
    try:
        daemon.start()
        pinger = await MessageBus(bus_address=bus.address).connect()
        attacker = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            ATTACK,
            bus.address,
            str(seconds),
            stdout=asyncio.subprocess.PIPE,
        )
        latencies: list[float] = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            started = time.monotonic()
            await call(
                pinger,
                Message(
                    destination="org.livefw.Daemon1",
                    path="/",
                    interface="org.freedesktop.DBus.Peer",
                    member="Ping",
                ),
            )
            latencies.append(time.monotonic() - started)
            await asyncio.sleep(0.02)
        output, _ = await attacker.communicate()
        pinger.disconnect()
        return statistics.median(latencies), max(latencies), int(output or 0)
    finally:
        daemon.stop()
        bus.stop()
        shutil.rmtree(scratch, ignore_errors=True)


def main() -> None:
    backends = [b for b in BACKENDS if _has("dbus_next" if b == "next" else "dbus_fast")]
    print(f"livefwd's body limit (MAX_BODY): {MAX_BODY} bytes\n")
    print("1. unmarshal one body of byte variants (av), ms")
    print("| size | " + " | ".join(backends) + " |")
    print("|---|" + "---|" * len(backends))
    for size in SIZES:
        costs = [f"{unmarshal_cost(b, size) * 1000:.1f}" for b in backends]
        print(f"| {size // 1024} KiB | " + " | ".join(costs) + " |")
    longest, total, calls = skip_cost()
    print(
        f"\n2. skipping a 30 MiB message: {calls} reader calls, longest "
        f"{longest * 1000:.1f} ms, {total * 1000:.0f} ms in all"
    )
    print("\n3. root's Peer.Ping while another client sends 30 MiB calls back to back")
    for backend in backends:
        median, slowest, refused = asyncio.run(pings_under_attack(backend))
        print(
            f"   {backend}: median {median * 1000:.1f} ms, slowest {slowest * 1000:.1f} ms, "
            f"{refused} calls refused"
        )


if __name__ == "__main__":
    main()
