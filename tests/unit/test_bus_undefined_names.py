"""No undefined global names in livefw.bus.

ruff's F821 and mypy's name-defined are off in ``bus/`` because of D-Bus signature
strings in annotations (``-> "a{sv}"``), so a name used without its import slipped
through both (``HIDDEN_PLUGINS`` in compat.py: GetHistory answered Internal/NameError).
This runs F821 anyway and ignores only what is a D-Bus signature.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import livefw.bus

#: the characters of a D-Bus type signature (dbus-specification, "Type System").
SIGNATURE = re.compile(r"[ybnqiuxtdsogharv{}()]+")


def test_bus_modules_use_no_undefined_names() -> None:
    ruff = Path(sys.executable).with_name("ruff")
    result = subprocess.run(
        [str(ruff), "check", "--isolated", "--select", "F821", "--output-format", "json",
         str(Path(livefw.bus.__file__).parent)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    found = [
        f"{Path(item['filename']).name}:{item['location']['row']}: {item['message']}"
        for item in json.loads(result.stdout)
        if not SIGNATURE.fullmatch(item["message"].split("`")[1])
    ]
    assert found == []
