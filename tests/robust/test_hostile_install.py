"""A hostile local user and hostile files against Install, GetDetails and SetHints (issue 13).

Every attack runs as ``nobody`` on a bus with the shipped policy (see nobody_env.py).
Each test would fail without its fix:

* Install with ``activate`` needs the activate permission too (item 2);
* fwupd-compatible SetHints is capped and forgotten when the sender leaves (item 3);
* cabinets parsed for a caller not yet authorized have a small budget, one at a time,
  off the default executor (item 4);
* ``<requires>`` regular expressions cannot hang the daemon (item 5);
* a payload whose read never finishes holds neither the loop nor a thread or a
  descriptor of livefwd (item 12).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from hangfs import HangFS
from nobody_env import Hostile, hostile, parse_lines, probe

from livefw.cabinet import Requirement
from livefw.cabinet_build import make_cabinet, make_metainfo
from livefw.cli.client import Client
from livefw.testing import Cli

FWUPD = "org.freedesktop.fwupd"

CONFIG = "[install]\nonly_trusted = false\n"
INSTALL = "org.livefw.daemon1.install"
ACTIVATE = "org.livefw.daemon1.activate"


def _machine(state_dir: Path) -> str:
    """The simulated machine as a digest (faults left out)."""
    machine = json.loads((state_dir / "sim" / "machine.json").read_text())
    machine.pop("faults", None)
    return hashlib.sha256(json.dumps(machine, sort_keys=True).encode()).hexdigest()


async def _pfru(h: Hostile) -> dict[str, Any]:
    client = await Client.connect(h.bus.address)
    try:
        devices = await client.devices()
    finally:
        await client.close()
    (device,) = [
        d for d in devices if d["Plugin"] == "pfru" and "code injection" in d["Name"].lower()
    ]
    return device


async def _history(h: Hostile) -> list[Any]:
    client = await Client.connect(h.bus.address)
    try:
        (rows,) = await client.call("GetHistory", "a{sv}", [{}])
    finally:
        await client.close()
    return list(rows)


def _capsule(h: Hostile, state_dir: Path) -> str:
    path = os.path.join(h.files, "code.cap")
    Cli(h.bus, str(state_dir))("sim", "sample", "pfru/code-injection", "-o", path)
    os.chmod(path, 0o644)
    return path


def _read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def _cabinet(
    device: dict[str, Any], payload: bytes, requires: tuple[Requirement, ...] = ()
) -> bytes:
    return make_cabinet(
        {
            "firmware.metainfo.xml": make_metainfo(
                appstream_id="org.example.pfru",
                guids=list(device["Guids"]),
                version="4",
                payload_name="firmware.bin",
                payload=payload,
                requires=requires,
            ),
            "firmware.bin": payload,
        }
    )


# ------------------------------------------------------------------ item 2


NATIVE_INSTALL = """
client = await Client.connect(ADDRESS)
fd = os.open({path!r}, os.O_RDONLY)
options = {{"activate": Variant("b", True)}}
print(json.dumps(await outcome(client.call(
    "Install", "sha{{sv}}", [{device!r}, 0, options], unix_fds=[fd], timeout=120))))
"""


async def test_install_with_activate_needs_the_activate_permission(
    bus_dir: str, state_dir: Path
) -> None:
    with hostile(bus_dir, state_dir, CONFIG) as h:
        capsule = _capsule(h, state_dir)
        pfru = await _pfru(h)
        attack = NATIVE_INSTALL.format(path=capsule, device=pfru["Id"])
        before = (_machine(state_dir), await _history(h))
        # install alone, or activate alone: refused before anything is written
        for allowed in ([INSTALL], [ACTIVATE]):
            h.polkit.set_allowed(allowed)
            (result,) = parse_lines(await h.attack(attack))
            assert str(result).startswith("AuthFailed"), (allowed, result)
            assert (_machine(state_dir), await _history(h)) == before, allowed
        # both: staged and activated at once
        h.polkit.set_allowed([INSTALL, ACTIVATE])
        (result,) = parse_lines(await h.attack(attack))
        assert result == "ok", result
        rows = await _history(h)
        assert rows[0]["Kind"] == "install", rows[0]
        assert rows[0]["State"] == "success", rows[0]
        assert "needs-activation" not in (await _pfru(h))["Flags"]


COMPAT_INSTALL = """
client = await Client.connect(ADDRESS)
fd = os.open({path!r}, os.O_RDONLY)
options = {{"activate": Variant("b", True), "filename": Variant("s", "code.cab")}}
print(json.dumps(await outcome(client.call(
    "Install", "sha{{sv}}", [{device!r}, 0, options], unix_fds=[fd], timeout=120, **FWUPD))))
print(json.dumps(await outcome(client.call("Activate", "s", [{device!r}], **FWUPD))))
"""


async def test_compat_install_never_activates_and_activate_needs_device_activate(
    bus_dir: str, state_dir: Path
) -> None:
    """fwupd's Install has no activation: an ``activate`` option is ignored, the
    capsule is only staged, and going live takes Activate with device-activate."""
    with hostile(bus_dir, state_dir, CONFIG) as h:
        pfru = await _pfru(h)
        cab = h.file("code.cab", _cabinet(pfru, _read(_capsule(h, state_dir))))
        h.polkit.set_allowed(["org.freedesktop.fwupd.update-internal"])
        install, activate = parse_lines(
            await h.attack(COMPAT_INSTALL.format(path=cab, device=pfru["Id"]))
        )
        assert install == "ok", install
        assert str(activate).startswith("AuthFailed"), activate
        rows = await _history(h)
        assert rows[0]["State"] == "staged", rows[0]
        assert "needs-activation" in (await _pfru(h))["Flags"]


# ------------------------------------------------------------------ item 5

COMPAT_INSTALL_PLAIN = """
client = await Client.connect(ADDRESS)
fd = os.open({path!r}, os.O_RDONLY)
print(json.dumps(await outcome(client.call(
    "Install", "sha{{sv}}", [{device!r}, 0, {{}}], unix_fds=[fd], timeout={timeout}, **FWUPD))))
"""

#: Python's re tries 100**6 ways of matching "2.0.20" (hours); RE2 is linear.
REGEX_BOMB = "^(?:" + "|".join(["."] * 100) + ")*X"


async def test_a_backtracking_requires_regex_neither_hangs_nor_holds_the_loop(
    bus_dir: str, state_dir: Path
) -> None:
    with hostile(bus_dir, state_dir, CONFIG) as h:
        pfru = await _pfru(h)
        bomb = Requirement("id", "org.freedesktop.fwupd", "regex", REGEX_BOMB)
        cab = h.file("regex.cab", _cabinet(pfru, _read(_capsule(h, state_dir)), (bomb,)))
        before = (_machine(state_dir), await _history(h))
        attack = COMPAT_INSTALL_PLAIN.format(path=cab, device=pfru["Id"], timeout=20)
        async with probe(h.bus.address) as pings:
            (result,) = parse_lines(await h.attack(attack, timeout=40))
        # refused (the requirement is not met), before polkit was even asked
        assert str(result).startswith("InvalidFile"), result
        assert "requires regex" in str(result), result
        pings.check()
        assert (_machine(state_dir), await _history(h)) == before


# ------------------------------------------------------------------ item 3

#: 32 hints of 128 KiB each: 4 MiB a message; main kept every one of them for good.
#: Now the bus layer refuses the message unread (over MAX_BODY), and a message within
#: it with one hint too long is refused by SetHints itself.
BIG_HINTS = """
import resource
sent = []
for _ in range({connections}):
    client = await Client.connect(ADDRESS)
    hints = {{f"key{{i}}": chr(97 + i % 26) * (128 * 1024) for i in range(32)}}
    sent.append(await outcome(client.call("SetHints", "a{{ss}}", [hints], **FWUPD)))
    sent.append(await outcome(client.call("SetHints", "a{{ss}}", [{{"key": "v" * 257}}], **FWUPD)))
    await client.close()
print(json.dumps(sorted(set(sent))))
"""

SMALL_HINTS = """
client = await Client.connect(ADDRESS)
hints = {"locale": "C.UTF-8", **{f"x-{i}": "v" * 256 for i in range(31)}}
print(json.dumps([client.bus.unique_name,
                  await outcome(client.call("SetHints", "a{ss}", [hints], **FWUPD)),
                  await outcome(client.call("SetFeatureFlags", "t", [233], **FWUPD))]))
await client.close()
"""


async def test_set_hints_is_bounded_and_forgotten_when_the_client_leaves(
    bus_dir: str, state_dir: Path
) -> None:
    with hostile(bus_dir, state_dir, CONFIG) as h:
        # two rounds of 20 clients each sending 32 hints of 128 KiB (4 MiB a
        # message): main keeps all of it (80 MiB more after every round). Since the
        # bus layer refuses such messages unread (MAX_BODY) they cost next to nothing;
        # the growth of the second round is what kept hints would make 80 MiB.
        rss = [h.status("VmRSS")]
        async with probe(h.bus.address, destination="org.freedesktop.fwupd") as pings:
            for _ in range(2):
                (outcomes,) = parse_lines(await h.attack(BIG_HINTS.format(connections=20), 240))
                rss.append(h.status("VmRSS"))
        second = (rss[2] - rss[1]) // 1024
        assert second < 40, f"livefwd grew by {second} MiB in the second round: {rss} KiB"
        total = (rss[2] - rss[0]) // 1024
        assert total < 200, f"livefwd grew by {total} MiB: {rss} KiB"
        assert len(outcomes) == 2, outcomes
        too_big, too_long = sorted(outcomes, key=lambda text: not str(text).startswith("Limits"))
        assert str(too_big).startswith("LimitsExceeded: message body of "), outcomes
        assert str(too_long).startswith("NotSupported"), outcomes
        assert "too long" in str(too_long), outcomes
        # every ping answered (the 4 MiB messages are never unmarshalled: test_bus_limits.py)
        assert not pings.failures, pings.failures
        # hints within the limits are taken, and dropped once the client is gone
        name, hinted, flagged = parse_lines(await h.attack(SMALL_HINTS))[0]  # type: ignore[misc]
        assert (hinted, flagged) == ("ok", "ok")
        for _ in range(50):
            if f"sender={name}" in h.daemon.log():
                break
            await asyncio.sleep(0.1)
        assert "fwupd_client_forgotten" in h.daemon.log()
        assert f"sender={name}" in h.daemon.log()


# ------------------------------------------------------------------ item 12

HUNG_DETAILS = """
client = await Client.connect(ADDRESS)
fd = os.open({path!r}, os.O_RDONLY)
print(json.dumps(await outcome(client.call(
    "GetDetails", "h", [0], unix_fds=[fd], timeout=30, **FWUPD))))
"""

HUNG_INSTALL = """
client = await Client.connect(ADDRESS)
fd = os.open({path!r}, os.O_RDONLY)
print(json.dumps(await outcome(client.call(
    "Install", "sha{{sv}}", [{device!r}, 0, {{}}], unix_fds=[fd], timeout=30))))
"""


def _children(pid: int) -> list[str]:
    found: list[str] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as handle:
            found += handle.read().split()
    return found


async def test_a_payload_read_that_never_finishes_holds_nothing(
    bus_dir: str, state_dir: Path
) -> None:
    """A FUSE file whose reads are never answered, handed to GetDetails (no
    authorization) and to Install (authorized): both fail after the stall deadline,
    the loop answers throughout, and livefwd keeps no thread or descriptor for them."""
    config = CONFIG + "payload_read_timeout = 2\n"
    with hostile(bus_dir, state_dir, config) as h:
        pfru = await _pfru(h)
        h.polkit.set_allowed([INSTALL])
        with HangFS(os.path.join(h.files, "mnt")) as fs:
            fds, threads = h.fds(), h.threads()
            async with probe(h.bus.address) as pings:
                details, install = await asyncio.gather(
                    h.attack(HUNG_DETAILS.format(path=fs.path), timeout=40),
                    h.attack(HUNG_INSTALL.format(path=fs.path, device=pfru["Id"]), timeout=40),
                )
            pings.check()
            ((details,), (install,)) = parse_lines(details), parse_lines(install)
            assert fs.reads >= 2
            assert str(details).startswith("Internal"), details  # fwupd has no Timeout
            assert "no progress" in str(details), details
            assert str(install).startswith("Timeout"), install
            assert h.fds() == fds
            assert h.threads() == threads
            # the killed readers wait in the kernel (FUSE waits out a read its server
            # has taken) and still count: a second one on the authorized pool, then
            # the pool is full and the next read is refused at once
            (second,) = parse_lines(
                await h.attack(HUNG_INSTALL.format(path=fs.path, device=pfru["Id"]))
            )
            assert str(second).startswith("Timeout"), second
            (third,) = parse_lines(
                await h.attack(HUNG_INSTALL.format(path=fs.path, device=pfru["Id"]))
            )
            assert str(third).startswith("Busy"), third
            assert len(_children(h.pid)) == 3
            assert h.fds() == fds
        # the file system is gone: the killed readers exit and are reaped
        for _ in range(50):
            if not _children(h.pid):
                break
            await asyncio.sleep(0.1)
        assert not _children(h.pid)
        assert h.fds() == fds


# ------------------------------------------------------------------ item 4

BOMBS = """
paths = {paths!r}
clients = [await Client.connect(ADDRESS) for _ in paths]

async def details(client, path):
    fd = os.open(path, os.O_RDONLY)
    try:
        return await outcome(client.call(
            "GetDetails", "h", [0], unix_fds=[fd], timeout=120, **FWUPD))
    finally:
        os.close(fd)

print(json.dumps(await asyncio.gather(*(details(c, p) for c, p in zip(clients, paths)))))
"""


def _bomb(mib: int) -> bytes:
    """A cabinet of a few dozen KiB that unpacks to ``mib`` MiB (MSZIP of zeros)."""
    payload = bytes(mib << 20)
    return make_cabinet(
        {
            "firmware.metainfo.xml": make_metainfo(
                appstream_id="org.example.bomb",
                guids=["2b6f2f48-7f11-4f1a-9a43-4c2f10a1d0c5"],
                version="1",
                payload_name="firmware.bin",
                payload=payload,
            ),
            "firmware.bin": payload,
        }
    )


async def test_unauthenticated_cabinet_parsing_is_small_serial_and_off_the_default_executor(
    bus_dir: str, state_dir: Path
) -> None:
    """GetDetails needs no permission. Ten at once, of cabinets that unpack to 30 MiB
    (just under what an unauthorized caller may have parsed) and to 100 MiB (over it):
    main unpacked them all at once on asyncio's default executor, with the full
    512 MiB allowance. Here: one at a time, the big ones refused before anything is
    decompressed, memory within one parse's worth, and the compatible GetDevices
    (remote folders are scanned in an executor too) not starved."""
    with hostile(bus_dir, state_dir, CONFIG) as h:
        small = h.file("small.cab", _bomb(30))
        big = h.file("big.cab", _bomb(100))
        paths = [small] * 6 + [big] * 2
        # The first GetDevices opens the remotes' inotify watch (kept for the daemon's
        # life, livefw.fswatch): open it before counting what the attack may leave.
        client = await Client.connect(h.bus.address)
        try:
            await client.call("GetDevices", path="/", interface=FWUPD, destination=FWUPD)
        finally:
            await client.close()
        fds = h.fds()
        h.reset_peak()
        before = h.status("VmRSS")
        waits: list[float] = []
        async with probe(h.bus.address) as pings:
            attack = asyncio.ensure_future(h.attack(BOMBS.format(paths=paths), timeout=180))
            client = await Client.connect(h.bus.address)
            try:
                while not attack.done():
                    started = asyncio.get_running_loop().time()
                    await client.call("GetDevices", path="/", interface=FWUPD, destination=FWUPD)
                    waits.append(asyncio.get_running_loop().time() - started)
                    await asyncio.sleep(0.05)
            finally:
                await client.close()
            (outcomes,) = parse_lines(await attack)
        peak = (h.status("VmHWM") - before) // 1024
        assert peak < 160, f"livefwd's memory peaked {peak} MiB above where it was"
        assert max(waits) < 1.0, sorted(waits)[-3:]
        pings.check()
        assert isinstance(outcomes, list)
        for path, result in zip(paths, outcomes, strict=True):
            if path == big:
                assert str(result).startswith("InvalidFile"), result
                assert "livefw inspect" in str(result), result
            else:  # parsed: no device has the GUID
                assert result == "ok", result
        assert h.fds() == fds


BIG_INSTALL = """
client = await Client.connect(ADDRESS)
fd = os.open({path!r}, os.O_RDONLY)
print(json.dumps(await outcome(client.call(
    "Install", "sha{{sv}}", ["*", 0, {{}}], unix_fds=[fd], timeout=120, **FWUPD))))
"""


async def test_a_cabinet_over_the_unauthenticated_budget_is_authorized_before_it_is_parsed(
    bus_dir: str, state_dir: Path
) -> None:
    """The compatible Install parses a cabinet before it can pick fwupd's action; one
    over the budget of an unauthorized caller (here 100 MiB unpacked) first needs
    update-internal-trusted: refused without it, and then parsed in full with it."""
    with hostile(bus_dir, state_dir, CONFIG) as h:
        big = h.file("big.cab", _bomb(100))
        h.reset_peak()
        before = h.status("VmRSS")
        (denied,) = parse_lines(await h.attack(BIG_INSTALL.format(path=big)))
        peak = (h.status("VmHWM") - before) // 1024
        assert str(denied).startswith("AuthFailed"), denied
        assert "update-internal-trusted" in str(denied), denied
        assert peak < 32, f"livefwd's memory peaked {peak} MiB above where it was"
        h.polkit.set_allowed(["org.freedesktop.fwupd.update-internal-trusted"])
        (parsed,) = parse_lines(await h.attack(BIG_INSTALL.format(path=big)))
        assert str(parsed).startswith("NotFound"), parsed  # no device has its GUID
