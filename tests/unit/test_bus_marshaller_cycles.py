"""Marshalling leaves no garbage for the cyclic collector (issue 17 item 2).

Start-up runs without the collector and freezes what it built (livefw.launch,
livefw.daemon), so a reference cycle per message sent at start-up stays for the
process's life: dbus-next's Marshaller was one (its ``writers`` dict of its own bound
methods), ~12 MiB at 1,000 devices. Each backend is checked in a process of its own
(the backend is chosen once, at import).
"""

import importlib.util
import os
import subprocess
import sys

import pytest

_SCRIPT = """
import gc
gc.disable()
from livefw.bus.dbuslib import Message, Variant, marshal, marshal_body
gc.collect()
for serial in range(1, 101):
    message = Message.new_signal(
        "/org/livefw/Daemon1", "org.freedesktop.DBus.ObjectManager", "InterfacesAdded",
        "oa{sa{sv}}", ["/o/%d" % serial, {"org.example.I": {"P": Variant("s", "x")}}],
    )
    message.serial = serial
    marshal(message)
    marshal_body("a{sv}", [{"Q": Variant("as", ["a", "b"])}])
print(gc.collect())
"""


@pytest.mark.parametrize("backend", ["next", "fast"])
def test_marshalling_leaves_no_cycles(backend: str) -> None:
    module = "dbus_next" if backend == "next" else "dbus_fast"
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed")
    env = dict(os.environ, LIVEFW_DBUS_BACKEND=backend)
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, check=True
    )
    # 100 messages and 100 bodies: a cycle per marshaller would be thousands of objects
    assert int(out.stdout.strip()) < 20, out.stdout
