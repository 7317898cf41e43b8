"""Issue 13 item 9: bad wire values answer InvalidArgument / InvalidFile, not Internal.

As ``nobody`` on a bus with the shipped policy (polkit denying): GetHistory with a
``limit`` of the wrong type or sign, a ``device-id`` of the wrong type, and a variant
nested 50 deep in place of either; and the same nesting and wrong types in every other
``a{sv}`` options parser of the bus layer (Activate, Cancel, Install, Telemetry
SetLogInfo, Lfa SetActivationOptions, Fwctl Rpc, LiveUpdate CreateSession,
RetrieveSession, Kexec). Options are
checked before polkit is asked, so each answers InvalidArgument, and livefwd logs one
``method_refused`` line per call and no traceback. A Jcat file nested 100,000 deep in a
cabinet (through the fwupd-compatible GetDetails, which parses before any
authorization) answers InvalidFile the same way.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from nobody_env import hostile

from livefw.cabinet_build import make_cabinet, make_metainfo
from livefw.errors import InvalidFile
from livefw.jcat import parse_jcat

CONFIG = "[install]\nonly_trusted = false\n[plugins.fwctl]\nallow_full_debug = true\n"

#: the attack: every call, with its outcome ("InvalidArgument: ..." or "ok")
ATTACK = """
client = await Client.connect(ADDRESS)
devices = await client.devices()
def device(plugin, words=""):
    return next(d for d in devices if d["Plugin"] == plugin and words in d["Name"].lower())
base = "/org/livefw/Daemon1/devices/"
lfa, pfru = device("lfa")["Id"], device("pfru", "code injection")["Id"]
fwctl = base + device("fwctl", "cxl")["Id"]
orchestrator = base + device("liveupdate")["Id"]
deep = Variant("u", 1)
for _ in range(50):
    deep = Variant("v", deep)
history = [
    {"limit": Variant("s", "ten")},
    {"limit": Variant("t", 2**64 - 1)},
    {"limit": Variant("x", -5)},
    {"limit": Variant("i", 3)},
    {"limit": Variant("d", 1e300)},
    {"limit": deep},
    {"device-id": Variant("i", 3)},
    {"device-id": Variant("as", ["x"])},
    {"device-id": Variant("a{sv}", {"x": deep})},
    {"device-id": deep},
    {"colour": Variant("s", "blue")},
]
results = {}
for index, options in enumerate(history):
    results[f"GetHistory {index}"] = await outcome(client.call("GetHistory", "a{sv}", [options]))
null = os.open(os.devnull, os.O_RDONLY)
calls = {
    "Activate": dict(member="Activate", signature="sa{sv}", body=[lfa, {"force": deep}]),
    "Cancel": dict(member="Cancel", signature="sa{sv}", body=[pfru, {"x": Variant("s", "")}]),
    "Install activate": dict(
        member="Install", signature="sha{sv}", body=[pfru, 0, {"activate": deep}],
        unix_fds=[null],
    ),
    "Install filename": dict(
        member="Install", signature="sha{sv}", body=[pfru, 0, {"filename": Variant("u", 1)}],
        unix_fds=[null],
    ),
    "SetLogInfo": dict(
        member="SetLogInfo", signature="a{sv}", body=[{"level": deep}],
        path=base + pfru, interface="org.livefw.Daemon1.Telemetry",
    ),
    "SetLogInfo revision": dict(
        member="SetLogInfo", signature="a{sv}", body=[{"revision": Variant("s", "2")}],
        path=base + pfru, interface="org.livefw.Daemon1.Telemetry",
    ),
    "SetActivationOptions": dict(
        member="SetActivationOptions", signature="a{sv}", body=[{"auto-activate": deep}],
        path=base + lfa, interface="org.livefw.Daemon1.Lfa",
    ),
    "Rpc": dict(
        member="Rpc", signature="saya{sv}", body=["configuration", b"", {"response-size": deep}],
        path=fwctl, interface="org.livefw.Daemon1.Fwctl",
    ),
    "CreateSession": dict(
        member="CreateSession", signature="sa{sv}", body=["s", {"label": deep}],
        path=orchestrator, interface="org.livefw.Daemon1.LiveUpdate",
    ),
    "RetrieveSession": dict(
        member="RetrieveSession", signature="sa{sv}", body=["s", {"label": Variant("i", 1)}],
        path=orchestrator, interface="org.livefw.Daemon1.LiveUpdate",
    ),
    "Kexec": dict(
        member="Kexec", signature="a{sv}", body=[{"when": deep}],
        path=orchestrator, interface="org.livefw.Daemon1.LiveUpdate",
    ),
}
for name, call in calls.items():
    results[name] = await outcome(client.call(**call))
os.close(null)
results["valid"] = await outcome(
    client.call("GetHistory", "a{sv}", [{"limit": Variant("u", 4294967295),
                                         "device-id": Variant("s", lfa)}])
)
print(json.dumps(results))
await client.close()
"""

DETAILS = """
client = await Client.connect(ADDRESS)
fd = os.open(CABINET, os.O_RDONLY)
result = await outcome(client.call("GetDetails", "h", [0], unix_fds=[fd], **FWUPD))
os.close(fd)
print(json.dumps(result))
await client.close()
"""


async def test_bad_option_values_are_invalid_arguments(bus_dir: str, state_dir: Path) -> None:
    with hostile(bus_dir, state_dir, CONFIG) as h:
        before = h.daemon.log().count("method_refused")
        (results,) = [json.loads(line) for line in (await h.attack(ATTACK)).splitlines()]
        assert results.pop("valid") == "ok"
        wrong = {name: text for name, text in results.items() if not text.startswith("Invalid")}
        assert wrong == {}, wrong
        assert all(text.startswith("InvalidArgument: ") for text in results.values()), results
        log = h.daemon.log()
        assert "Traceback" not in log
        assert "method_failed" not in log
        # one line per refused call
        assert log.count("method_refused") - before == len(results), log[-4000:]


def _deep_jcat() -> bytes:
    return gzip.compress(b"[" * 100_000 + b"]" * 100_000)


def test_a_deeply_nested_jcat_is_an_invalid_file() -> None:
    with pytest.raises(InvalidFile, match="nested too deeply"):
        parse_jcat(_deep_jcat())
    with pytest.raises(InvalidFile, match="not JSON"):
        parse_jcat(gzip.compress(b'{"Items": [' + b"7" * 5000 + b"]}"))


async def test_a_deeply_nested_jcat_from_nobody_is_refused(bus_dir: str, state_dir: Path) -> None:
    with hostile(bus_dir, state_dir, CONFIG) as h:
        payload = b"\x00" * 64
        cabinet = make_cabinet(
            {
                "firmware.metainfo.xml": make_metainfo(
                    appstream_id="org.example.deep",
                    guids=["b2f84b79-7b6e-4e45-885f-3fb9bb185402"],
                    version="9",
                    payload_name="firmware.bin",
                    payload=payload,
                ),
                "firmware.bin": payload,
                "firmware.jcat": _deep_jcat(),
            }
        )
        path = h.file("deep.cab", cabinet)
        before = h.daemon.log().count("Traceback")
        source = DETAILS.replace("CABINET", repr(path))
        (result,) = [json.loads(line) for line in (await h.attack(source)).splitlines()]
        assert result.startswith("InvalidFile: "), result
        assert "nested too deeply" in result
        assert h.daemon.log().count("Traceback") == before
