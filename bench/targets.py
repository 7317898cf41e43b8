# (a measuring harness: blocking set-up between timed sections is deliberate)
"""The daemons measured: fwupd and livefwd per backend, at one device count."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any

from bench.config import BACKENDS, FWUPD_BIN, FWUPD_NAME
from bench.fwupd import fwupd_root
from livefw.testing import PrivateBus


@dataclass
class Target:
    """One daemon configuration: how to start it, what it owns, what to call."""

    key: str
    label: str
    argv: list[str]
    env: dict[str, str]
    name: str  # the name whose ownership means "ready"
    state_dir: str  # wiped for an empty-state start
    devices_wanted: int
    is_peer: bool = False
    native: bool = False  # has livefw's own API (GetManagedObjects)
    backend: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def scratch_config(scratch: str) -> str:
    """livefwd's config for a run, written once in ``scratch``: never /etc/livefw, and
    unsigned cabinets allowed (the staging series' own)."""
    conf = os.path.join(scratch, "livefw.conf")
    if not os.path.exists(conf):
        os.makedirs(os.path.join(scratch, "remotes.d"), exist_ok=True)
        with open(conf, "w", encoding="utf-8") as f:
            f.write(
                f'[install]\npki_dir = "{scratch}/pki"\nremotes_dir = "{scratch}/remotes.d"\n'
                "only_trusted = false\n"
            )
    return conf


def livefw_profile(devices: int) -> tuple[str, int]:
    """Simulator profile giving about ``devices`` devices on the compat interface.

    minimal: 3 (PFRU, LFA, UEFI); default: 7; scale S: 7 + 2S (S LFA images, S ESRT
    entries; S fwctl nodes too, which fwupd clients do not see).
    """
    if devices <= 3:
        return "minimal", 0
    return "scale", max(0, round((devices - 7) / 2))


def livefw_devices(devices: int) -> int:
    """How many devices livefwd shows on the compat interface for ``devices`` asked."""
    profile, scale = livefw_profile(devices)
    return 3 if profile == "minimal" else 7 + 2 * scale


#: the start-up floor's row (bench/floor_daemon.py)
FLOOR_LABEL = "minimal Python D-Bus daemon (floor)"
FLOOR_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "floor_daemon.py")


def fwupd_target(
    scratch: str, bus: PrivateBus, devices: int, key: str = "", label: str = "fwupd"
) -> Target:
    """Debian's fwupd on its fake root, with as many devices as livefwd shows."""
    root = os.path.join(scratch, f"fwupd-{devices}")
    env = dict(bus.env())
    # the same device count as livefwd's: its ESRT entries plus the test webcam
    env.update(fwupd_root(root, max(1, livefw_devices(devices) - 1)))
    return Target(
        key=key or f"fwupd-{devices}",
        label=label,
        argv=[FWUPD_BIN],
        env=env,
        name=FWUPD_NAME,
        state_dir=os.path.join(root, "var"),
        devices_wanted=devices,
        is_peer=True,
    )


def livefw_target(
    scratch: str,
    bus: PrivateBus,
    devices: int,
    backend: str,
    python: str = sys.executable,
    key: str = "",
    label: str = "",
) -> Target:
    """livefwd ``--simulate --fwupd-compat`` on the profile giving ``devices`` devices,
    run by ``python`` (a tree's venv for an A/B), state in ``scratch/KEY``."""
    key = key or f"livefw-{backend}-{devices}"
    profile, scale = livefw_profile(devices)
    state = os.path.join(scratch, key)
    os.makedirs(state, exist_ok=True)
    conf = scratch_config(scratch)
    env = dict(bus.env())
    env["LIVEFW_DBUS_BACKEND"] = backend
    env.pop("JOURNAL_STREAM", None)
    argv = [python, "-m", "livefw", "--simulate", "--fwupd-compat", "--state-dir", state]
    argv += ["--bus-address", bus.address, "--config", conf]
    argv += ["--profile", profile, "--scale", str(scale)]
    return Target(
        key=key,
        label=label or f"livefwd ({'dbus-fast' if backend == 'fast' else 'dbus-next'})",
        argv=argv,
        env=env,
        name=FWUPD_NAME,  # owned last: both APIs are up then
        state_dir=state,
        devices_wanted=devices,
        native=True,
        backend=backend,
    )


def floor_target(
    scratch: str, bus: PrivateBus, python: str = sys.executable, key: str = "floor"
) -> Target:
    """The start-up floor (bench/floor_daemon.py): no devices, start-up only."""
    env = dict(bus.env())
    env.pop("JOURNAL_STREAM", None)
    state = os.path.join(scratch, key)
    os.makedirs(state, exist_ok=True)
    return Target(
        key=key,
        label=FLOOR_LABEL,
        argv=[python, FLOOR_SCRIPT, "--bus-address", bus.address],
        env=env,
        name=FWUPD_NAME,
        state_dir=state,  # empty: an empty-state start of the floor is a warm one
        devices_wanted=0,
        extra={"start_only": True},
    )


def make_targets(
    scratch: str, bus: PrivateBus, devices: int, fwupd_ok: bool, floor: bool = False
) -> list[Target]:
    targets = [fwupd_target(scratch, bus, devices)] if fwupd_ok else []
    targets += [livefw_target(scratch, bus, devices, backend) for backend in BACKENDS]
    if floor:
        targets.append(floor_target(scratch, bus, key=f"floor-{devices}"))
    return targets
