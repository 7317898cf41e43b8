"""machine.json: a change serialises only the component it changed (issue 17 item 6).

At 10,000 simulated devices machine.json is ~20 MB, and an install with its cancel saved
it 16 times: the simulator, not the daemon, made an install among 10,000 devices slow.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from livefw.kernel.sim.machine import SimMachine
from livefw.kernel.sim.provider import SimProvider
from livefw.kernel.sim.uefi_capsule import UefiCapsuleComponent

ESP = "boot/efi"


def _count_dumps(monkeypatch: pytest.MonkeyPatch, machine: SimMachine) -> dict[str, int]:
    """Count each component's serialisations from now on."""
    counts = dict.fromkeys(machine.components, 0)
    for name, component in machine.components.items():
        cls = type(component.state)
        for method in ("model_dump_json", "model_dump"):
            original = getattr(cls, method)

            def counted(
                self: Any, *args: Any, _name: str = name, _o: Any = original, **kw: Any
            ) -> Any:
                counts[_name] += 1
                return _o(self, *args, **kw)

            monkeypatch.setattr(cls, method, counted)
    return counts


def _saved(machine: SimMachine) -> dict[str, Any]:
    raw: dict[str, Any] = json.loads((Path(machine.directory) / "machine.json").read_text())
    return raw


async def test_an_esp_write_serialises_only_the_uefi_component(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    machine = SimMachine.create(str(tmp_path / "sim"))
    before = _saved(machine)
    counts = _count_dumps(monkeypatch, machine)
    provider = SimProvider(machine)
    await provider.makedirs(f"{ESP}/EFI/x")
    await provider.write_file(f"{ESP}/EFI/x/file", b"contents", durable=True)
    assert counts["uefi_capsule"] > 0
    assert {name: n for name, n in counts.items() if name != "uefi_capsule" and n} == {}
    after = _saved(machine)
    assert "EFI/x/file" in after["components"]["uefi_capsule"]["esp_files"]
    # the sections not serialised again are the ones saved before, unchanged
    for name in machine.components:
        if name != "uefi_capsule":
            assert after["components"][name] == before["components"][name]
    assert after["boot_id"] == before["boot_id"]
    # and the file loads back into the same machine
    again = SimMachine.load(machine.directory)
    for name, component in machine.components.items():
        assert again.components[name].state == component.state


def test_an_unnamed_change_and_save_serialise_every_component(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    machine = SimMachine.create(str(tmp_path / "sim"))
    counts = _count_dumps(monkeypatch, machine)
    machine.clear_faults()  # the machine's own state: changed() without a name
    assert all(n == 1 for n in counts.values()), counts
    # a caller that changed a component's state directly and calls save()
    component = machine.components["uefi_capsule"]
    assert isinstance(component, UefiCapsuleComponent)
    component.state.esp_size = 123 << 20
    machine.save()
    assert all(n == 2 for n in counts.values()), counts
    assert _saved(machine)["components"]["uefi_capsule"]["esp_size"] == 123 << 20


def test_a_batch_serialises_each_changed_component_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    machine = SimMachine.create(str(tmp_path / "sim"))
    counts = _count_dumps(monkeypatch, machine)
    with machine.batch():
        machine.changed("lfa")
        machine.changed("lfa")
        machine.changed("pfru")
    assert counts["lfa"] == 1
    assert counts["pfru"] == 1
    assert sum(counts.values()) == 2
