"""The shipped polkit policy defines every action the bus layer asks for, with the
defaults the README documents for the PFRU, PFRT and LFA actions."""

import re
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
POLICY = REPO / "dbus" / "org.livefw.daemon1.policy"


def _actions() -> dict[str, dict[str, str]]:
    root = ET.parse(POLICY).getroot()
    found: dict[str, dict[str, str]] = {}
    for action in root.iter("action"):
        defaults = action.find("defaults")
        assert defaults is not None, action.get("id")
        found[action.get("id", "")] = {child.tag: (child.text or "") for child in defaults}
    return found


def test_every_action_the_bus_layer_checks_is_shipped() -> None:
    used: set[str] = set()
    for path in (REPO / "daemon" / "bus").glob("*.py"):
        used |= set(re.findall(r'"(org\.livefw\.daemon1\.[a-z-]+)"', path.read_text()))
    assert used, "the bus layer names its polkit actions"
    assert used <= set(_actions()), sorted(used - set(_actions()))


def test_telemetry_and_pfru_defaults() -> None:
    actions = _actions()
    # the kernel keeps the telemetry node root-only: the active local session reads
    # it, everyone else authenticates as an administrator (issue 13.11)
    assert actions["org.livefw.daemon1.telemetry-read"] == {
        "allow_any": "auth_admin_keep",
        "allow_inactive": "auth_admin_keep",
        "allow_active": "yes",
    }
    # the _DSM revision governs every later stage and activation (issue 14.16)
    assert set(actions["org.livefw.daemon1.pfru-configure"].values()) == {"auth_admin_keep"}
    readme = (REPO / "README.md").read_text()
    for action in ("telemetry-read", "pfru-configure", "telemetry-configure", "activate"):
        assert f"`org.livefw.daemon1.{action}`" in readme
