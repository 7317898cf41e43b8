"""Issue 13 item 1: no message leaves a file descriptor open in livefwd.

An unprivileged client (``nobody`` under setpriv, hostile_client.py) on a bus with the
shipped policy (nobody_env.py) sends messages that carry 16 Unix fds each (dbus-daemon's
per-message maximum on the system bus) that no ``h`` argument consumes, or only one of
them does: Peer.Ping, GetDevices, an unknown method, a known method with the wrong
signature, Properties.Get, Introspect, a unicast signal, Install (polkit denies), Install
with a descriptor named again inside an option, a Preserve on root's session (the guard
refuses it), and on the fwupd-compatible connection Ping and GetDetails. livefwd's open
descriptors (/proc/PID/fd) must be the same before and after each kind, with both D-Bus
backends. Also: an Install whose ``h`` names a descriptor the call does not carry is
refused with InvalidArgument and touches none of livefwd's own descriptors (dbus-fast
handed the raw index to the method, which read and then closed the daemon's fd of that
number: the daemon lost its signal wake-up pipe or its bus socket).

Calls that have not replied hold at most MAX_FDS_PER_SENDER fds per connection (a
flood of Installs while polkit hangs gets Busy beyond). ``make robust`` also runs the
long variant: 1,200 messages (19,200 descriptors, 19 times a 1,024-entry table), after
which root's own install still works.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import time
from pathlib import Path

import pytest
from hostile_client import HostileClient, open_fds, settled_fds
from nobody_env import Hostile, hostile

from livefw.bus.backend import MAX_FDS_IN_FLIGHT, MAX_FDS_PER_SENDER, _top_level_types
from livefw.plugins.liveupdate.records import SESSIONS_MAX
from livefw.testing import Cli

SESSIONS = "/org/livefw/Daemon1/liveupdate/sessions/"
AUTH_FAILED = "org.livefw.Daemon1.Error.AuthFailed"
INVALID_ARGUMENT = "org.livefw.Daemon1.Error.InvalidArgument"
CONFIG = "[install]\nonly_trusted = false\n"

#: kind -> the reply the client must get to each message (signals get none)
KINDS = {
    "ping": "ok",
    "get-devices": "ok",
    "unknown-method": "org.freedesktop.DBus.Error.UnknownMethod",
    "wrong-signature": "org.freedesktop.DBus.Error.UnknownMethod",
    "properties-get": "ok",
    "introspect": "ok",
    "signal": None,
    "install": AUTH_FAILED,
    "install-nested": INVALID_ARGUMENT,
    "session-preserve": "org.freedesktop.DBus.Error.UnknownObject",
    "compat-ping": "ok",
    "compat-get-details": "org.freedesktop.fwupd.Internal",
}
#: messages of each kind in the quick test (4 x 16 fds x 12 kinds stays below 1,024)
COUNT = 4


def _backends() -> list[object]:
    fast = importlib.util.find_spec("dbus_fast") is not None
    return [
        "next",
        pytest.param(
            "fast",
            marks=pytest.mark.skipif(not fast, reason="dbus-fast is not installed ([fast])"),
        ),
    ]


def _root_session(h: Hostile, state_dir: Path) -> str:
    """A session of root's (polkit allows the action just for this)."""
    h.polkit.set_allowed(["org.livefw.daemon1.liveupdate"])
    cli = Cli(h.bus, str(state_dir))
    cli("liveupdate", "create", "rootsecret")
    h.polkit.set_allowed([])
    (row,) = json.loads(cli("liveupdate", "list", "--json").stdout)
    assert row["path"].startswith(SESSIONS)
    return str(row["path"])


@pytest.mark.parametrize("backend", _backends())
def test_descriptors_no_method_takes_are_closed(
    bus_dir: str, state_dir: Path, backend: str
) -> None:
    env = {"LIVEFW_DBUS_BACKEND": backend}
    with hostile(bus_dir, state_dir, CONFIG, env=env) as h:
        session = _root_session(h, state_dir)
        leaks: dict[str, int] = {}
        with HostileClient(h.bus, env) as client:
            client.command("send", "ping", 1)  # warm up: the caller's uid gets looked up
            for kind, expected in KINDS.items():
                before = settled_fds(h.pid)
                path = session if kind == "session-preserve" else ""
                answer = client.command("send", kind, COUNT, path)
                if expected is not None:
                    assert answer["replies"] == {expected: COUNT}, (kind, answer)
                leaks[kind] = settled_fds(h.pid) - before
            assert leaks == dict.fromkeys(leaks, 0), leaks
            # an h naming a descriptor the call does not carry: refused, and none of
            # livefwd's own descriptors is touched (nor is the daemon killed)
            before = settled_fds(h.pid)
            answer = client.command("send", "install-missing", COUNT)
            assert answer["replies"] == {INVALID_ARGUMENT: COUNT}, answer
            assert settled_fds(h.pid) == before
        # root's own reads are unaffected, the session is still there
        cli = Cli(h.bus, str(state_dir))
        assert json.loads(cli("get-devices", "--json").stdout)
        assert "rootsecret" in cli("liveupdate", "list").stdout
        assert "Traceback" not in h.daemon.log()


@pytest.mark.slow
@pytest.mark.parametrize("backend", _backends())
def test_a_thousand_messages_with_descriptors_change_nothing(
    bus_dir: str, state_dir: Path, tmp_path: Path, backend: str
) -> None:
    """1,200 fd-carrying messages (19,200 fds), then root's install still works."""
    env = {"LIVEFW_DBUS_BACKEND": backend}
    with hostile(bus_dir, state_dir, CONFIG, env=env) as h:
        with HostileClient(h.bus, env) as client:
            client.command("send", "ping", 1)
            before = settled_fds(h.pid)
            for kind in ("ping", "get-devices", "unknown-method", "signal", "install"):
                client.command("send", kind, 240)
            assert settled_fds(h.pid) == before
        cli = Cli(h.bus, str(state_dir))
        payload = tmp_path / "pfru.cap"
        cli("sim", "sample", "pfru/code-injection", "-o", str(payload))
        h.polkit.set_allowed(["org.livefw.daemon1.install"])
        cli("install", str(payload))
        assert "Traceback" not in h.daemon.log()


#: the sessions livefwd brokers at most (the kernel's LUO_SESSION_MAX up to 7.1, 744
#: with 4 KiB pages; 7.2 has no limit, livefwd keeps this one), outgoing, and as many
#: incoming after a kexec.
LUO_SESSION_MAX = SESSIONS_MAX


def test_the_unit_leaves_room_for_the_sessions_livefwd_brokers() -> None:
    unit = Path(__file__).resolve().parents[2] / "systemd" / "livefwd.service"
    values = [
        line.split("=", 1)[1].strip()
        for line in unit.read_text().splitlines()
        if line.startswith("LimitNOFILE=")
    ]
    assert len(values) == 1, "one explicit LimitNOFILE= (soft = hard)"
    (limit,) = values
    assert ":" not in limit
    # every session twice (outgoing, incoming), livefwd's own 64, the calls in flight
    assert int(limit) >= 2 * LUO_SESSION_MAX + 64 + MAX_FDS_IN_FLIGHT


@pytest.mark.parametrize("backend", _backends())
def test_descriptors_of_calls_in_flight_are_bounded_and_returned(
    bus_dir: str, state_dir: Path, backend: str
) -> None:
    """400 Installs at once (one fd each, over 4 connections) while polkit hangs:
    livefwd holds at most MAX_FDS_PER_SENDER fds per connection in calls that have not
    replied, refuses the rest with Busy (their fds closed at once), and every held fd
    is closed once polkit answers. Without the cap, ~350 were held at once."""
    env = {"LIVEFW_DBUS_BACKEND": backend}
    with hostile(bus_dir, state_dir, CONFIG, env=env) as h:
        assert h.polkit.proc is not None
        with HostileClient(h.bus, env) as client:
            client.command("send", "ping", 1)
            before = settled_fds(h.pid)
            os.kill(h.polkit.proc.pid, signal.SIGSTOP)
            try:
                assert client.proc.stdin is not None
                client.proc.stdin.write("flood install 400\n")
                client.proc.stdin.flush()
                peak, deadline = 0, time.monotonic() + 4
                while time.monotonic() < deadline:
                    peak = max(peak, open_fds(h.pid))
                    time.sleep(0.02)
            finally:
                os.kill(h.polkit.proc.pid, signal.SIGCONT)
            answer = client._answer()
        replies = answer["replies"]
        assert sum(replies.values()) == 400, answer
        held = replies.get(AUTH_FAILED, 0)
        assert 0 < held <= 4 * MAX_FDS_PER_SENDER, answer
        assert replies.get("org.livefw.Daemon1.Error.Busy", 0) >= 400 - held - 60, answer
        assert before < peak <= before + 4 * MAX_FDS_PER_SENDER + 4, (before, peak, answer)
        assert settled_fds(h.pid) == before


@pytest.mark.parametrize(
    ("signature", "types"),
    [
        ("", []),
        ("h", ["h"]),
        ("sha{sv}", ["s", "h", "a{sv}"]),
        ("hta{sv}", ["h", "t", "a{sv}"]),
        ("a(hh)ha{s(ah)}v", ["a(hh)", "h", "a{s(ah)}", "v"]),
        ("(s(hh))aah", ["(s(hh))", "aah"]),
    ],
)
def test_only_top_level_h_arguments_take_descriptors(signature: str, types: list[str]) -> None:
    """The bus layer hands a method the fds its top-level ``h`` arguments name; an ``h``
    inside a container or a variant is not one (its fd is closed on arrival)."""
    assert _top_level_types(signature) == types
