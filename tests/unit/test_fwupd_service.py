"""fwupd's API on the engine without D-Bus (livefw.fwupd_service, livefw.compat_state).

A fake plugin with one updatable device that stages (``needs-activation``) and one
plugin fwupd's clients must not see; cabinets unsigned, ``only_trusted`` off.
"""

from __future__ import annotations

import dataclasses
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from livefw.cabinet_build import make_cabinet, make_metainfo
from livefw.compat_state import INHIBITS_PER_SENDER, Inhibits, latest_rows
from livefw.config import load_config
from livefw.device import Device
from livefw.engine import Engine
from livefw.errors import (
    AuthFailed,
    InvalidFile,
    NotFound,
    NothingToDo,
    NotSupported,
    PermissionDenied,
)
from livefw.fwupd_service import FwupdEvents, FwupdService
from livefw.history import HistoryEntry
from livefw.kernel.sim.machine import SimMachine
from livefw.kernel.sim.provider import SimProvider
from livefw.plugin import InstallOptions, InstallResult, Operation, Payload, Plugin, Probe
from livefw.state import HistoryState, Status, UpdateState

GUID = "2a4f4e2b-7d6c-4b8a-9c1d-0e5f6a7b8c9d"
OTHER_GUID = "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a"


class StagingDevice(Device):
    """Takes ``STAGE:<version>`` and stages it until an activation."""

    def check_install(self, payload: Payload, options: InstallOptions) -> str:
        magic, _, version = payload.data.decode(errors="replace").partition(":")
        if magic != "STAGE" or not version:
            raise InvalidFile("not a staging payload")
        return version

    async def install(
        self, payload: Payload, options: InstallOptions, op: Operation
    ) -> InstallResult:
        version = self.check_install(payload, options)
        self.update(version_pending=version, flags=self.flags | {"needs-activation"})
        return InstallResult(UpdateState.PENDING, version)

    def check_activate(self) -> None:
        if "needs-activation" not in self.flags:
            raise NothingToDo("nothing staged")

    async def activate(self, op: Operation) -> str:
        self.update(version=self.version_pending, version_pending="",
                    flags=self.flags - {"needs-activation"})  # fmt: skip
        return self.version


class FakePlugin(Plugin):
    name = "fake"

    async def probe(self) -> Probe:
        return Probe.ok()

    async def coldplug(self) -> None:
        self.ctx.add_device(
            StagingDevice(
                "fake", "dev0", name="Fake firmware", flags=["updatable", "internal"],
                guids=[GUID], version="1.0",
            )
        )  # fmt: skip


class HiddenPlugin(Plugin):
    """Named like a plugin fwupd's clients do not see."""

    name = "fwctl"

    async def probe(self) -> Probe:
        return Probe.ok()

    async def coldplug(self) -> None:
        self.ctx.add_device(
            StagingDevice("fwctl", "ctl0", name="Hidden", flags=["updatable"], guids=[OTHER_GUID])
        )


class Recorder(FwupdEvents):
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def device_added(self, device: Device) -> None:
        self.seen.append(("added", device.name))

    def device_removed(self, device: Device) -> None:
        self.seen.append(("removed", device.name))

    def device_changed(self, device: Device) -> None:
        self.seen.append(("changed", device.name))

    def changed(self) -> None:
        self.seen.append(("changed", ""))

    def progress_changed(self, names: frozenset[str]) -> None:
        self.seen.append(("progress", ",".join(sorted(names))))


class Polkit:
    """An ``authorize`` that records the actions and refuses those in ``refuse``."""

    def __init__(self, *refuse: str) -> None:
        self.asked: list[str] = []
        self.refuse = set(refuse)

    async def __call__(self, action: str) -> int:
        self.asked.append(action)
        if action in self.refuse:
            raise AuthFailed(f"not allowed: {action}")
        return 1000


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[FwupdService]:
    (tmp_path / "remotes.d").mkdir()
    conf = tmp_path / "livefw.conf"
    conf.write_text(f'[install]\nonly_trusted = false\nremotes_dir = "{tmp_path / "remotes.d"}"\n')
    machine = SimMachine.create(str(tmp_path / "sim"), "default")
    engine = Engine(SimProvider(machine), load_config(str(conf)), str(tmp_path),
                    [FakePlugin, HiddenPlugin])  # fmt: skip
    await engine.start()
    fwupd = FwupdService(engine, str(tmp_path), str(conf))
    yield fwupd
    await engine.stop()


def fake(service: FwupdService) -> Device:
    return next(d for d in service.engine.devices.values() if d.plugin == "fake")


def cabinet(version: str, guid: str = GUID, name: str = "Fake firmware") -> bytes:
    payload = b"STAGE:" + version.encode()
    metainfo = make_metainfo(appstream_id="org.example.fake", guids=[guid], version=version,
                             payload_name="firmware.bin", payload=payload, name=name)  # fmt: skip
    return make_cabinet({"firmware.bin": payload, "firmware.metainfo.xml": metainfo})


@pytest.fixture
def fd_of(tmp_path: Path) -> Iterator[Any]:
    opened: list[int] = []

    def open_bytes(data: bytes) -> int:
        path = tmp_path / f"file{len(opened)}.cab"
        path.write_bytes(data)
        opened.append(os.open(path, os.O_RDONLY))
        return opened[-1]

    yield open_bytes
    for fd in opened:
        os.close(fd)


async def test_clients_see_only_devices_of_plugins_fwupd_has(service: FwupdService) -> None:
    assert [d.name for d in await service.devices()] == ["Fake firmware"]
    hidden = next(d for d in service.engine.devices.values() if d.plugin == "fwctl")
    with pytest.raises(NotFound, match="Failed to find"):
        service.device(hidden.id)
    with pytest.raises(NotFound) as info:
        service.device("x" * 10_000)
    assert len(info.value.message) < 128  # a caller's string is not echoed whole
    service.engine.devices.clear()
    with pytest.raises(NothingToDo, match="No detected devices"):
        await service.devices()


async def test_events_drop_cached_dicts_and_reach_clients_for_visible_devices(
    service: FwupdService,
) -> None:
    events = Recorder()
    service.attach(events)
    device = fake(service)
    hidden = next(d for d in service.engine.devices.values() if d.plugin == "fwctl")
    service.cache.put(device, "old dict")
    device.update(summary="new words")
    hidden.update(summary="new words")
    assert events.seen == [("changed", "Fake firmware")]
    assert service.cache.get(device) is None
    service.cache.put(device, "old dict")
    inhibit = service.inhibit(":1.5", "backup running")
    assert service.cache.get(device) is None  # an inhibit shows on every updatable device
    service.uninhibit(":1.5", inhibit)
    service.engine._set_progress(Status.DEVICE_WRITE, 10)
    assert events.seen[1:] == [("changed", ""), ("changed", ""), ("progress", "percentage,status")]


async def test_install_plans_the_cabinet_then_asks_the_action_of_each_plan(
    service: FwupdService, fd_of: Any
) -> None:
    events = Recorder()
    service.attach(events)
    polkit = Polkit()
    job = await service.plan_install("*", fd_of(cabinet("1.1")), "fw.cab", InstallOptions(), polkit)
    assert polkit.asked == []  # nothing asked before the cabinet says what it installs
    assert [plan.device.name for plan in job.plans] == ["Fake firmware"]
    await service.install(job, polkit)
    # unsigned, on an internal device: fwupd's action without -trusted
    assert polkit.asked == ["org.freedesktop.fwupd.update-internal"]
    assert ("changed", "") in events.seen
    assert fake(service).version_pending == "1.1"
    with pytest.raises(InvalidFile, match="not a firmware cabinet"):
        await service.plan_install("", fd_of(b"STAGE:1.2"), "raw.bin", InstallOptions(), polkit)
    hidden_cab = cabinet("2", OTHER_GUID)  # only the hidden device takes it
    with pytest.raises(NotFound, match="No supported devices"):
        await service.plan_install("*", fd_of(hidden_cab), "", InstallOptions(), polkit)


async def test_a_refused_action_installs_nothing(service: FwupdService, fd_of: Any) -> None:
    polkit = Polkit("org.freedesktop.fwupd.update-internal")
    job = await service.plan_install("", fd_of(cabinet("1.1")), "", InstallOptions(), polkit)
    with pytest.raises(AuthFailed):
        await service.install(job, polkit)
    assert fake(service).version_pending == ""
    assert service.engine.history.entries() == []


async def test_a_big_cabinet_asks_the_targets_action_before_it_is_read(
    service: FwupdService, fd_of: Any
) -> None:
    releases = service.engine.releases
    releases.untrusted_limits = dataclasses.replace(releases.untrusted_limits, max_size=64)
    refused = Polkit("org.freedesktop.fwupd.update-internal-trusted")
    with pytest.raises(AuthFailed):
        await service.plan_install("", fd_of(cabinet("1.1")), "", InstallOptions(), refused)
    assert refused.asked == ["org.freedesktop.fwupd.update-internal-trusted"]
    polkit = Polkit()
    job = await service.plan_install("", fd_of(cabinet("1.1")), "", InstallOptions(), polkit)
    await service.install(job, polkit)
    assert polkit.asked == [
        "org.freedesktop.fwupd.update-internal-trusted",
        "org.freedesktop.fwupd.update-internal",
    ]
    with pytest.raises(InvalidFile, match="GetDetails inspects cabinets of up to"):
        await service.details(fd_of(cabinet("1.1")))


async def test_activate_needs_a_staged_update_and_fwupds_activate_action(
    service: FwupdService, fd_of: Any
) -> None:
    device = fake(service)
    polkit = Polkit()
    with pytest.raises(NotSupported, match="does not need activation"):
        await service.activate(device.id, polkit)
    assert polkit.asked == []
    job = await service.plan_install("", fd_of(cabinet("1.1")), "", InstallOptions(), polkit)
    await service.install(job, polkit)
    await service.activate(device.id, polkit)
    assert polkit.asked[-1] == "org.freedesktop.fwupd.device-activate"
    assert device.version == "1.1"


async def test_details_name_the_device_a_release_is_for(service: FwupdService, fd_of: Any) -> None:
    (found,) = await service.details(fd_of(cabinet("0.9")))
    assert found.device is fake(service)
    assert found.order == -1  # older than the running 1.0
    assert not found.supported  # no remote holds it
    (missing,) = await service.details(fd_of(cabinet("2", OTHER_GUID)))  # a hidden device's
    assert missing.device is None
    assert missing.order is None


async def test_history_is_one_row_per_device_with_results_to_clear(
    service: FwupdService, fd_of: Any
) -> None:
    with pytest.raises(NothingToDo, match="No history"):
        service.history()
    device = fake(service)
    polkit = Polkit()
    for version in ("1.1", "1.2"):
        job = await service.plan_install("", fd_of(cabinet(version)), "", InstallOptions(), polkit)
        await service.install(job, polkit)
    await service.activate(device.id, polkit)
    (row,) = service.history()
    assert row.entry.kind == "install"  # the install row, the latest one
    assert row.entry.version_new == "1.2"
    assert row.device is device
    assert not row.notified
    result = service.result(device.id)
    assert result.entry.op_id == row.entry.op_id
    service.clear_results(device.id)
    with pytest.raises(NothingToDo, match="already notified"):
        service.result(device.id)
    with pytest.raises(NothingToDo, match="already cleared"):
        service.clear_results(device.id)
    service.modify_device(device.id, "Flags", "~notified")
    assert service.result(device.id).entry.op_id == row.entry.op_id
    with pytest.raises(NotSupported):
        service.modify_device(device.id, "Name", "x")
    with pytest.raises(NotFound):
        service.modify_device("nope", "Flags", "notified")
    # kept across a restart
    service.clear_results(device.id)
    again = FwupdService(service.engine, service.engine.state_dir)
    assert again.history()[0].notified


def _entry(device_id: str, kind: str, created: float, plugin: str = "fake") -> HistoryEntry:
    return HistoryEntry(
        id=int(created), op_id=f"{device_id}-{kind}-{created}", device_id=device_id,
        device_name=device_id, plugin=plugin, physical_id="", kind=kind,
        state=HistoryState.SUCCESS, version_old="1", version_new="2", reason="", boot_id="",
        caller_uid=0, created=created, finished=None, data={},
    )  # fmt: skip


def test_latest_rows_prefer_installs_and_keep_the_newest() -> None:
    rows = latest_rows([
        _entry("a", "install", 1), _entry("a", "activate", 5), _entry("a", "install", 3),
        _entry("b", "activate", 2), _entry("b", "activate", 4), _entry("c", "telemetry", 6),
    ])  # fmt: skip
    assert [(e.device_id, e.kind, e.created) for e in rows] == [
        ("a", "install", 3),
        ("b", "activate", 4),
    ]


async def test_inhibits_are_the_holders_and_go_with_them(service: FwupdService) -> None:
    first = service.inhibit(":1.5", "x" * 10_000)
    assert len(service.engine.inhibits[first]) == 256
    with pytest.raises(PermissionDenied):
        service.uninhibit(":1.6", first)
    with pytest.raises(NotFound):
        service.uninhibit(":1.5", "dbus-999999")
    service.inhibit(":1.5", "")
    assert service.engine.inhibits[first] != service.engine.inhibits.get("dbus-000002")
    assert service.forget_client(":1.5")
    assert service.engine.inhibits == {}
    assert not service.forget_client(":1.5")
    inhibits = Inhibits()
    for _ in range(INHIBITS_PER_SENDER):
        inhibits.add(":1.7")
    with pytest.raises(NotSupported, match="per client"):
        inhibits.add(":1.7")
    inhibits.add(":1.8")


async def test_modify_config_answers_as_fwupd_before_polkit_is_asked(
    service: FwupdService, tmp_path: Path
) -> None:
    polkit = Polkit()
    with pytest.raises(NotSupported, match="not supported"):
        await service.modify_config("fake", "Foo", "1", polkit, ":1.5")  # a plugin's section
    with pytest.raises(NotFound, match="no plugin nope found"):
        await service.modify_config("nope", "Foo", "1", polkit, ":1.5")
    with pytest.raises(NotFound, match="key Foo not supported"):
        await service.modify_config("fwupd", "Foo", "1", polkit, ":1.5")
    assert polkit.asked == []
    await service.modify_config("fwupd", "OnlyTrusted", "true", polkit, ":1.5")
    assert polkit.asked == ["org.freedesktop.fwupd.modify-config"]
    assert service.engine.config.install.only_trusted is True  # applied at once
    assert service.engine.releases.only_trusted is True
    assert (tmp_path / "livefw.conf.d" / "fwupd.conf").exists()
    await service.reset_config("fwupd", polkit, ":1.5")
    assert service.engine.config.install.only_trusted is False
    assert not (tmp_path / "livefw.conf.d" / "fwupd.conf").exists()


async def test_firmware_lists_are_checked_before_polkit_and_bind_the_engine(
    service: FwupdService,
) -> None:
    polkit = Polkit()
    with pytest.raises(InvalidFile):
        await service.set_firmware_list(["nope"], polkit, approved=False)
    assert polkit.asked == []
    await service.set_firmware_list(["A" * 40], polkit, approved=False)
    await service.set_firmware_list(["b" * 64], polkit, approved=True)
    assert service.engine.firmware_lists.blocked == {"a" * 40}
    assert service.engine.firmware_lists.approved == {"b" * 64}
    assert polkit.asked == ["org.freedesktop.fwupd.set-approved-firmware"] * 2


async def test_releases_from_a_remote_mark_the_device_supported(
    service: FwupdService, tmp_path: Path
) -> None:
    folder = tmp_path / "firmware"
    folder.mkdir()
    (folder / "older.cab").write_bytes(cabinet("0.9"))
    (folder / "newer.cab").write_bytes(cabinet("1.1", name="Fake firmware with a fix"))
    (tmp_path / "remotes.d" / "local.conf").write_text(
        f"[livefw Remote]\nEnabled=true\nTitle=local\nPath={folder}\n"
    )
    device = fake(service)
    await service.devices()
    assert service.supported(device)
    assert [(c.release.version, order) for c, order in await service.releases(device.id)] == [
        ("1.1", 1),
        ("0.9", -1),
    ]
    assert [c.release.version for c in await service.upgrades(device.id)] == ["1.1"]
    assert [c.release.version for c in await service.downgrades(device.id)] == ["0.9"]
    device.update(flags=device.flags | {"only-version-upgrade"})  # anti-rollback firmware
    with pytest.raises(NothingToDo, match="No downgrades"):
        await service.downgrades(device.id)
    assert [c.release.version for c in await service.search("  WITH A FIX ")] == ["1.1"]
    with pytest.raises(NothingToDo):
        await service.search("  ")
    assert [r.id for r in service.remotes()] == ["local"]
    with pytest.raises(NothingToDo, match="no cached metadata"):
        service.clean_remote("lvfs")
    with pytest.raises(NotFound):
        service.clean_remote("elsewhere")


async def test_quit_is_ignored_while_an_update_runs(
    service: FwupdService, monkeypatch: pytest.MonkeyPatch
) -> None:
    raised: list[int] = []
    monkeypatch.setattr(signal, "raise_signal", raised.append)
    polkit = Polkit()
    async with service.engine.guard.held("install of something"):
        await service.quit(polkit, ":1.5")
    assert raised == []
    await service.quit(polkit, ":1.5")
    assert raised == [signal.SIGTERM]
    assert polkit.asked == ["org.freedesktop.fwupd.quit"] * 2


async def test_the_device_list_is_kept_until_a_device_or_supported_changes(
    service: FwupdService, tmp_path: Path
) -> None:
    """GetDevices reuses its body while the same list comes (issue 17 item 3)."""
    service.attach(Recorder())
    device = fake(service)
    first = await service.devices()
    assert await service.devices() is first
    device.update(name="Renamed firmware")
    renamed = await service.devices()
    assert renamed is not first
    assert [d.name for d in renamed] == ["Renamed firmware"]
    assert await service.devices() is renamed
    assert not service.supported(device)
    # a release for it lands in a remote: supported, and a new list
    folder = tmp_path / "firmware"
    folder.mkdir()
    (tmp_path / "remotes.d" / "local.conf").write_text(f"[fwupd Remote]\nPath={folder}\n")
    (folder / "fake.cab").write_bytes(cabinet("2.0", name="Renamed firmware"))
    supported = await service.devices()
    assert supported is not renamed
    assert service.supported(device)
    assert await service.devices() is supported
    (folder / "fake.cab").unlink()
    assert await service.devices() is not supported
    assert not service.supported(device)
    # an inhibit changes every updatable device's dict
    kept = await service.devices()
    inhibit = service.inhibit(":1.5", "backup running")
    assert await service.devices() is not kept
    service.uninhibit(":1.5", inhibit)
