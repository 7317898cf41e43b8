"""Issue 13, the residual: a message over livefwd's size limit is never unmarshalled.

The system bus lets any local user send messages of up to 32 MiB (dbus-daemon's
``max_message_size``); both D-Bus libraries read and unmarshal the whole body on the
event loop before livefwd sees it (main: 0.1-0.5 s per multi-MiB message with
dbus-next, RSS tens of MiB higher). Here ``nobody`` (setpriv, the shipped bus policy)
sends 30 MiB calls to real methods (the compatible SetHints, GetDevice, Install with 16
fds), each followed by a small call, then big signals and big calls that expect no
reply. Both D-Bus backends:

* each big call gets ``org.freedesktop.DBus.Error.LimitsExceeded`` naming its size and
  the limit, each small call after it is answered normally (the framing holds);
* livefwd's peak RSS over all 20 big calls stays within a few MiB of where it started
  (main: at least the 30 MiB body, twice: read buffer and parsed value);
* no descriptor that came with them stays open;
* signals and no-reply calls are dropped and logged, throttled (fewer lines than
  messages);
* a client without a D-Bus library (raw_client.py) sends big and small messages of
  both byte orders, with and without fds, back to back: each call gets its own reply
  (dbus-daemon passes big-endian messages on as they are).
* with ``[plugins.fwctl] max_request_size`` raised to 1 MiB, only fwctl's ``Rpc``
  request may be that big: GetDevice, Introspect, Rpc's options and ``Rpc`` on
  another interface still get LimitsExceeded at 96 KiB (main let every call on the
  native connection carry 1 MiB + 4 KiB), and so does SetHints on the fwupd
  connection (never raised).

tests/unit/test_bus_framing.py shows the same structurally: the library's own
unmarshallers are never handed a byte of an oversized message.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from pathlib import Path

import pytest
from hostile_client import settled_fds
from nobody_env import hostile, parse_lines

from livefw.bus.backend import MAX_BODY
from livefw.cli.client import Client
from livefw.daemon import RPC_ARGUMENTS
from livefw.testing import NOBODY, as_user

CONFIG = "[install]\nonly_trusted = false\n"
BIG = 30 * 1024 * 1024
#: livefwd's peak RSS may grow this much over the 20 big calls (main: 30 MiB and more)
RSS_SLACK_KIB = 12 * 1024

BIG_CALLS = """
client = await Client.connect(ADDRESS)
big = "x" * {size}
results = []
for i in range({count}):
    kind = i % 3
    if kind == 0:
        hints = [{{"k": big}}]
        results.append(await outcome(client.call("SetHints", "a{{ss}}", hints, **FWUPD)))
        hints = [{{"locale": "C"}}]
        results.append(await outcome(client.call("SetHints", "a{{ss}}", hints, **FWUPD)))
    elif kind == 1:
        results.append(await outcome(client.call("GetDevice", "s", [big])))
        results.append(await outcome(client.call("GetDevice", "s", [{device!r}])))
    else:
        fds = [os.open(os.devnull, os.O_RDONLY) for _ in range(16)]
        try:
            results.append(await outcome(
                client.call("Install", "sha{{sv}}", [big, 0, {{}}], unix_fds=fds)))
        finally:
            for fd in fds:
                os.close(fd)
        results.append(await outcome(client.call("GetDevices")))
await client.close()
print(json.dumps(results))
"""

BIG_DROPPED = """
from livefw.bus.backend import Message, MessageFlag, MessageType
client = await Client.connect(ADDRESS)
big = b"y" * {size}
for i in range({count}):
    await client.bus.send(Message(
        message_type=MessageType.SIGNAL, destination="org.livefw.Daemon1",
        path="/org/example/Hostile", interface="org.example.Hostile", member="Boo",
        signature="ay", body=[big]))
    await client.bus.send(Message(
        destination="org.livefw.Daemon1", path="/org/livefw/Daemon1",
        interface="org.livefw.Daemon1.Manager", member="GetDevice", signature="s",
        body=[big.decode()], flags=MessageFlag.NO_REPLY_EXPECTED))
print(json.dumps(await outcome(client.call("GetDevices"))))
await client.close()
"""


def _backends() -> list[object]:
    fast = importlib.util.find_spec("dbus_fast") is not None
    return [
        "next",
        pytest.param(
            "fast",
            marks=pytest.mark.skipif(not fast, reason="dbus-fast is not installed ([fast])"),
        ),
    ]


def _refusal_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if "bus_message_refused" in line]


@pytest.mark.parametrize("backend", _backends())
async def test_big_calls_are_refused_unread_and_small_ones_still_answered(
    bus_dir: str, state_dir: Path, backend: str
) -> None:
    with hostile(bus_dir, state_dir, CONFIG, env={"LIVEFW_DBUS_BACKEND": backend}) as h:
        client = await Client.connect(h.bus.address)
        try:
            device = (await client.devices())[0]["Id"]
        finally:
            await client.close()
        fds = settled_fds(h.pid)
        h.reset_peak()
        baseline = h.status("VmRSS")
        out = await h.attack(BIG_CALLS.format(size=BIG, count=20, device=device), timeout=300)
        peak = h.status("VmHWM")
        # first what main fails on: it read and unmarshalled every 30 MiB body
        assert peak - baseline < RSS_SLACK_KIB, (
            f"livefwd's RSS peaked {(peak - baseline) // 1024} MiB over its baseline"
        )
        (results,) = parse_lines(out)
        assert isinstance(results, list)
        refused, answered = results[::2], results[1::2]
        assert len(refused) == 20
        for result in refused:
            assert str(result).startswith("LimitsExceeded: message body of "), result
            assert f"is over livefwd's limit of {MAX_BODY} bytes" in str(result), result
        assert answered == ["ok"] * 20, answered
        assert settled_fds(h.pid) == fds
        lines = _refusal_lines(h.daemon.log())
        assert 1 <= len(lines) < 20, lines
        assert "SetHints" in lines[0]
        assert "answered=True" in lines[0]
        assert "Traceback" not in h.daemon.log()


@pytest.mark.parametrize("backend", _backends())
async def test_big_signals_and_no_reply_calls_are_dropped_and_logged_throttled(
    bus_dir: str, state_dir: Path, backend: str
) -> None:
    with hostile(bus_dir, state_dir, CONFIG, env={"LIVEFW_DBUS_BACKEND": backend}) as h:
        out = await h.attack(BIG_DROPPED.format(size=MAX_BODY * 8, count=10), timeout=120)
        # the connection is still usable: the call after them is answered
        assert parse_lines(out) == ["ok"]
        lines = _refusal_lines(h.daemon.log())
        assert 1 <= len(lines) < 20, lines
        assert "kind=signal" in lines[0]
        assert "answered=False" in lines[0]
        refusals = json.dumps(lines)
        assert "Traceback" not in h.daemon.log(), refusals


RAW_CLIENT = str(Path(__file__).resolve().parent / "raw_client.py")
PEER = {"interface": "org.freedesktop.DBus.Peer", "member": "Ping"}
#: big and small messages of both byte orders, with and without fds, sent back to back
#: by a client without a D-Bus library (raw_client.py); serial -> the reply expected
RAW_PLAN: list[dict[str, object]] = [
    {"big_endian": True, "member": "GetDevice", "text_size": 4 * 1024 * 1024},
    PEER,
    {"big_endian": True, "member": "GetDevice", "text_size": 3 * 1024 * 1024, "send_fds": 16},
    {"big_endian": True, **PEER, "send_fds": 2},
    {
        "kind": 4,
        "path": "/org/example/Hostile",
        "interface": "org.example.Hostile",
        "member": "Boo",
        "blob": 2 * 1024 * 1024,
        "send_fds": 3,
    },
    {"big_endian": True, "flags": 1, "member": "GetDevice", "text_size": 2 * 1024 * 1024},
    {"big_endian": True, "member": "GetDevice", "text": "no-such-device"},
    {"member": "GetDevice", "text_size": MAX_BODY + 1},
    {"big_endian": True, **PEER},
]
LIMIT = "org.freedesktop.DBus.Error.LimitsExceeded: message body of "
RAW_EXPECTED = {
    "2": LIMIT,
    "3": "ok",
    "4": LIMIT,
    "5": "ok",
    "8": "org.livefw.Daemon1.Error.NotFound",
    "9": LIMIT,
    "10": "ok",
}


@pytest.mark.parametrize("backend", _backends())
async def test_framing_holds_for_both_byte_orders_interleaved_with_fds(
    bus_dir: str, state_dir: Path, backend: str
) -> None:
    with hostile(bus_dir, state_dir, CONFIG, env={"LIVEFW_DBUS_BACKEND": backend}) as h:
        fds = settled_fds(h.pid)
        script = RAW_CLIENT
        proc = await asyncio.create_subprocess_exec(
            *as_user(NOBODY, [sys.executable, script, h.bus.address, json.dumps(RAW_PLAN)]),
            env={**h.bus.env(), "PYTHONDONTWRITEBYTECODE": "1"},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd="/",
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), 180)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert proc.returncode == 0, err.decode(errors="replace")
        replies = json.loads(out)
        assert set(replies) == set(RAW_EXPECTED), replies
        for serial, expected in RAW_EXPECTED.items():
            assert replies[serial].startswith(expected), (serial, replies[serial])
        assert settled_fds(h.pid) == fds
        # dbus-daemon passes a big-endian message on as it is: livefwd's reader saw one
        lines = _refusal_lines(h.daemon.log())
        assert "byte_order=big" in lines[0], lines
        assert "Traceback" not in h.daemon.log()


#: [plugins.fwctl] max_request_size raised to 1 MiB: fwctl's Rpc may carry that much
RAISED = 1024 * 1024
RAISED_CONFIG = CONFIG + f"[plugins.fwctl]\nmax_request_size = {RAISED}\n"
FWCTL = "org.livefw.Daemon1.Fwctl"

RAISED_CALLS = """
client = await Client.connect(ADDRESS)
path = {path!r}
half = 512 * 1024
results = {{}}
rpc = dict(path=path, interface={fwctl!r})
# other members keep the default limit, whatever the Rpc allowance
results["GetDevice"] = await outcome(client.call("GetDevice", "s", ["x" * half]))
results["SetHints"] = await outcome(
    client.call("SetHints", "a{{ss}}", [{{"k": "x" * half}}], **FWUPD))
results["Introspect"] = await outcome(client.call(
    "Introspect", "s", ["x" * half], path=path,
    interface="org.freedesktop.DBus.Introspectable"))
# Rpc's request may be big; its options may not
request = bytes.fromhex("08000000000000000000000000000000") + bytes(half)
results["Rpc"] = await outcome(
    client.call("Rpc", "saya{{sv}}", ["debug-read", request, {{}}], **rpc))
options = {{"x": Variant("s", "x" * half)}}
results["Rpc options"] = await outcome(
    client.call("Rpc", "saya{{sv}}", ["debug-read", b"", options], **rpc))
# the same member name on another interface, and Rpc over its own allowance
results["Rpc elsewhere"] = await outcome(
    client.call("Rpc", "saya{{sv}}", ["debug-read", request, {{}}]))  # the Manager
results["Rpc too big"] = await outcome(
    client.call("Rpc", "saya{{sv}}", ["debug-read", bytes(2 * {raised}), {{}}], **rpc))
results["after"] = await outcome(client.call("GetDevices"))
await client.close()
print(json.dumps(results))
"""


@pytest.mark.parametrize("backend", _backends())
async def test_a_raised_fwctl_request_size_raises_the_limit_of_rpc_only(
    bus_dir: str, state_dir: Path, backend: str
) -> None:
    """``[plugins.fwctl] max_request_size = 1 MiB``: main let every member of every
    interface on the native connection carry 1 MiB + 4 KiB; now only fwctl's Rpc
    request may, every other member (and Rpc's other arguments) keep MAX_BODY,
    refused unread."""
    with hostile(bus_dir, state_dir, RAISED_CONFIG, env={"LIVEFW_DBUS_BACKEND": backend}) as h:
        h.polkit.set_allowed(["org.livefw.daemon1.fwctl-debug-read"])
        client = await Client.connect(h.bus.address)
        try:
            devices = await client.devices()
        finally:
            await client.close()
        fwctl = next(d for d in devices if d["Plugin"] == "fwctl")
        path = "/org/livefw/Daemon1/devices/" + fwctl["Id"]
        fds = settled_fds(h.pid)
        source = RAISED_CALLS.format(path=path, fwctl=FWCTL, raised=RAISED)
        (results,) = parse_lines(await h.attack(source, timeout=120))
        assert isinstance(results, dict)
        default = f"is over livefwd's limit of {MAX_BODY} bytes"
        # first what main fails on: 512 KiB reached GetDevice and Introspect
        for member in ("GetDevice", "SetHints", "Introspect"):
            assert results[member].startswith("LimitsExceeded: message body of "), results
            assert default in results[member], results
        # the big request reached Rpc: the device answered it (main too)
        assert results["Rpc"].split(":")[0] in {"ok", "NotSupported", "InvalidArgument"}, results
        assert default in results["Rpc options"], results
        assert f"only the ay argument of {FWCTL}.Rpc may be bigger" in results["Rpc options"]
        assert default in results["Rpc elsewhere"], results
        assert f"over livefwd's limit of {RAISED + RPC_ARGUMENTS} bytes" in results["Rpc too big"]
        assert results["after"] == "ok"
        assert settled_fds(h.pid) == fds
        assert "Traceback" not in h.daemon.log()
