"""Large simulated file contents live in blob files, not in machine.json (issue 17 item 5)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

import livefw.engine
from livefw.config import Config
from livefw.engine import Engine
from livefw.errors import InvalidArgument
from livefw.kernel.provider import OpenFlags
from livefw.kernel.sim.machine import BLOB_DIR, INLINE_MAX, SimMachine
from livefw.kernel.sim.pfru import PfruComponent
from livefw.kernel.sim.pfru_capsule import build_capsule
from livefw.kernel.sim.provider import SimProvider
from livefw.kernel.sim.uefi_capsule import UefiCapsuleComponent
from livefw.kernel.uapi import pfru as pfru_uapi
from livefw.plugin import InstallOptions, Payload
from livefw.plugins.uefi_capsule import UefiCapsulePlugin
from livefw.plugins.uefi_capsule import plugin as uefi_plugin

ESP = "boot/efi"


def _blobs(machine: SimMachine) -> list[str]:
    directory = Path(machine.directory) / BLOB_DIR
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def _esp_state(machine: SimMachine) -> dict[str, str]:
    raw = json.loads((Path(machine.directory) / "machine.json").read_text())
    files: dict[str, str] = raw["components"]["uefi_capsule"]["esp_files"]
    return files


def _grow_esp(machine: SimMachine) -> None:
    component = machine.components["uefi_capsule"]
    assert isinstance(component, UefiCapsuleComponent)
    component.state.esp_size = 256 << 20
    machine.save()


async def test_large_esp_file_is_a_blob_written_once_and_survives_reload(tmp_path: Path) -> None:
    machine = SimMachine.create(str(tmp_path / "sim"))
    _grow_esp(machine)
    provider = SimProvider(machine)
    big = os.urandom(INLINE_MAX + 1)
    small = b"small file"
    await provider.makedirs(f"{ESP}/EFI/x")
    await provider.write_file(f"{ESP}/EFI/x/big.cap", big, durable=True)
    await provider.write_file(f"{ESP}/EFI/x/small", small)
    files = _esp_state(machine)
    assert files["EFI/x/big.cap"].startswith("blob:")
    assert len(json.dumps(files)) < INLINE_MAX  # the contents are not in machine.json
    assert not files["EFI/x/small"].startswith("blob:")
    [blob] = _blobs(machine)
    written = os.stat(Path(machine.directory) / BLOB_DIR / blob).st_mtime_ns
    # later saves and a rename keep the same blob: written once
    await provider.rename(f"{ESP}/EFI/x/big.cap", f"{ESP}/EFI/x/moved.cap")
    machine.clear_faults()
    assert _blobs(machine) == [blob]
    assert os.stat(Path(machine.directory) / BLOB_DIR / blob).st_mtime_ns == written
    reloaded = SimMachine.load(machine.directory)
    assert await SimProvider(reloaded).read_file(f"{ESP}/EFI/x/moved.cap") == big
    assert await SimProvider(reloaded).read_file(f"{ESP}/EFI/x/small") == small


async def test_blob_is_deleted_with_its_file_and_orphans_are_swept(tmp_path: Path) -> None:
    machine = SimMachine.create(str(tmp_path / "sim"))
    _grow_esp(machine)
    provider = SimProvider(machine)
    await provider.write_file(f"{ESP}/a.cap", os.urandom(INLINE_MAX * 2))
    assert len(_blobs(machine)) == 1
    await provider.unlink(f"{ESP}/a.cap")
    assert _blobs(machine) == []
    # a blob written by a process that died before saving the state referring to it
    orphan = Path(machine.directory) / BLOB_DIR / ("0" * 32)
    orphan.write_bytes(b"left by a crash")
    SimMachine.load(machine.directory).save()
    assert orphan.exists()  # an ordinary save leaves blobs other processes may own
    SimMachine.load(machine.directory).start()
    assert not orphan.exists()  # a daemon starting sweeps them


async def test_missing_blob_is_a_clear_error(tmp_path: Path) -> None:
    machine = SimMachine.create(str(tmp_path / "sim"))
    _grow_esp(machine)
    await SimProvider(machine).write_file(f"{ESP}/a.cap", os.urandom(INLINE_MAX * 2))
    for name in _blobs(machine):
        os.unlink(Path(machine.directory) / BLOB_DIR / name)
    with pytest.raises(InvalidArgument, match="missing"):
        SimMachine.load(machine.directory)


async def test_staging_inspects_the_capsule_once_and_saves_no_capsule_as_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    machine = SimMachine.create(str(tmp_path / "sim"))
    _grow_esp(machine)
    engine = Engine(SimProvider(machine), Config(), str(tmp_path), [UefiCapsulePlugin])
    await engine.start()
    device = next(d for d in engine.devices.values() if d.plugin == "uefi_capsule")
    calls = []
    inspect = uefi_plugin.efi.inspect_capsule

    def counting(data: bytes, classes: tuple[str, ...]) -> object:
        if len(data) > INLINE_MAX:
            calls.append(len(data))
        return inspect(data, classes)

    monkeypatch.setattr(uefi_plugin.efi, "inspect_capsule", counting)
    payload = Payload(os.urandom(4 << 20), "raw.bin")
    await engine.install(device.id, payload, InstallOptions())
    # checked before and under the engine's lock, then installed: inspected once (the
    # other call is the refresh reading the staged capsule, header added, back)
    assert calls.count(len(payload.data)) == 1
    assert max(len(v) for v in _esp_state(machine).values()) < INLINE_MAX * 2
    assert len(_blobs(machine)) == 1
    await engine.stop()


async def test_a_payload_read_from_a_descriptor_is_hashed_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """livefw.fdread hashes while it copies; the engine takes that digest for the
    history instead of hashing 4 MiB again (issue 17.5)."""
    machine = SimMachine.create(str(tmp_path / "sim"))
    _grow_esp(machine)
    engine = Engine(SimProvider(machine), Config(), str(tmp_path), [UefiCapsulePlugin])
    await engine.start()
    device = next(d for d in engine.devices.values() if d.plugin == "uefi_capsule")
    data = os.urandom(4 << 20)
    fd = os.memfd_create("capsule")
    try:
        os.write(fd, data)
        payload = await engine.read_payload(fd, "raw.bin")
    finally:
        os.close(fd)
    assert payload.sha256 == hashlib.sha256(data).hexdigest()
    hashed: list[int] = []

    class Counting:
        @staticmethod
        def sha256(buffer: bytes) -> object:
            hashed.append(len(buffer))
            return hashlib.sha256(buffer)

    monkeypatch.setattr(livefw.engine, "hashlib", Counting)
    entry = await engine.install(device.id, payload, InstallOptions())
    assert entry.data["payload-sha256"] == payload.sha256
    assert hashed == []
    # a payload nobody hashed yet is hashed by the engine
    await engine.cancel(device.id)
    entry = await engine.install(device.id, Payload(data, "raw.bin"), InstallOptions())
    assert entry.data["payload-sha256"] == payload.sha256
    assert hashed == [len(data)]
    await engine.stop()


async def test_the_pfru_buffer_is_a_blob_without_fsync_an_esp_file_with_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The PFRU communication buffer is memory on a real machine (pfru_write() is a
    memcpy): its blob outlives livefwd's process through the page cache, as machine.json
    does, with no fsync; an ESP file the daemon writes durably gets its one fsync, also
    when the same bytes were kept as a buffer first."""
    machine = SimMachine.create(str(tmp_path / "sim"))
    _grow_esp(machine)
    provider = SimProvider(machine)
    pfru = machine.components["pfru"]
    assert isinstance(pfru, PfruComponent)
    capsule = build_capsule(
        image_type=pfru_uapi.IMAGE_TYPES[pfru_uapi.UpdateType.CODE_INJECTION],
        rt_ver=pfru.state.code_rt_version + 1,
        svn_ver=0,
        platform_id=pfru.state.platform_id,
        body_size=INLINE_MAX * 2,
    )
    synced: list[str] = []
    real_fsync = os.fsync

    def counting(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting)
    handle = await provider.open(pfru_uapi.UPDATE_NODE, OpenFlags.RDWR)
    assert await handle.write(capsule) == len(capsule)
    await handle.close()
    [blob] = _blobs(machine)
    assert not [path for path in synced if BLOB_DIR in path]
    reloaded = SimMachine.load(machine.directory).components["pfru"]
    assert isinstance(reloaded, PfruComponent)
    assert reloaded._comm == capsule  # the buffer outlives the process all the same
    await provider.makedirs(f"{ESP}/EFI/x")
    await provider.write_file(f"{ESP}/EFI/x/same.cap", capsule, durable=True)
    assert _blobs(machine) == [blob]  # the same bytes: the same blob, not written again
    assert [path for path in synced if BLOB_DIR in path] == [
        str(Path(machine.directory) / BLOB_DIR / blob)
    ]
    big = os.urandom(INLINE_MAX + 1)
    await provider.write_file(f"{ESP}/EFI/x/big.cap", big, durable=True)
    assert len([path for path in synced if BLOB_DIR in path]) == 2
