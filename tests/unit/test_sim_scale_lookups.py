"""Simulated fwctl nodes and LFA images are found by index, not by a scan per lookup.

A scan per lookup made starting a daemon on a 10,000-device machine quadratic (more
than two minutes; bench/scale.py, issue 17 item 6). Counted, not timed: looking every
device up walks each list once (to build the index), and again only after it changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from livefw.kernel.sim.fwctl import FwctlComponent
from livefw.kernel.sim.lfa import LfaComponent
from livefw.kernel.sim.machine import SimMachine


class CountingList(list[Any]):
    """A list that counts how often it is iterated."""

    iterations = 0

    def __iter__(self) -> Any:
        type(self).iterations += 1
        return super().__iter__()

    def __reversed__(self) -> Any:
        type(self).iterations += 1
        return super().__reversed__()


def test_fwctl_and_lfa_lookups_walk_the_list_once(tmp_path: Path) -> None:
    machine = SimMachine.create(str(tmp_path / "sim"), "scale", 50)
    fwctl = machine.components["fwctl"]
    lfa = machine.components["lfa"]
    assert isinstance(fwctl, FwctlComponent)
    assert isinstance(lfa, LfaComponent)
    nodes = CountingList(fwctl.state.nodes)
    images = CountingList(lfa.state.images)
    fwctl.state.nodes = nodes
    lfa.state.images = images
    CountingList.iterations = 0
    minors = [node.minor for node in list.__iter__(nodes)]
    guids = [image.guid for image in list.__iter__(images)]
    assert len(minors) >= 50
    assert len(guids) >= 50
    for minor in minors:
        assert fwctl._node(minor) is not None
    for guid in guids:
        assert lfa._image(guid) is not None
    assert CountingList.iterations == 2  # one index per list, not one scan per lookup
    assert fwctl._node(10**6) is None
    removed = minors[0]
    fwctl.state.nodes = CountingList(n for n in list.__iter__(nodes) if n.minor != removed)
    assert fwctl._node(removed) is None  # a replaced list is indexed again


async def test_fwctl_coldplug_scans_pci_functions_once_when_memdevs_are_beyond_the_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Memdevs past PCI_SCAN_MAX functions stay unresolved without a rescan per node."""
    from livefw.config import Config
    from livefw.engine import Engine
    from livefw.kernel.sim.provider import SimProvider
    from livefw.kernel.uapi import fwctl as uapi
    from livefw.plugins.fwctl import FwctlPlugin
    from livefw.plugins.fwctl import plugin as fwctl_plugin

    machine = SimMachine.create(str(tmp_path / "sim"), "scale", 40)
    monkeypatch.setattr(uapi, "PCI_SCAN_MAX", 10)
    scans = 0
    original = fwctl_plugin.FwctlPlugin._scan_memdevs

    async def counting(self: Any) -> dict[str, str]:
        nonlocal scans
        scans += 1
        found: dict[str, str] = await original(self)
        return found

    monkeypatch.setattr(fwctl_plugin.FwctlPlugin, "_scan_memdevs", counting)
    engine = Engine(SimProvider(machine), Config(), str(tmp_path), [FwctlPlugin])
    await engine.start()
    try:
        assert len([d for d in engine.devices.values() if d.plugin == "fwctl"]) >= 40
        assert scans == 1
    finally:
        await engine.stop()
