"""The uefi_capsule plugin on the simulated machine, through the engine (no bus)."""

from __future__ import annotations

import struct
import threading
from pathlib import Path
from typing import Any

import pytest

from livefw import planner
from livefw.config import Config
from livefw.engine import Engine
from livefw.errors import (
    Busy,
    InvalidFile,
    NoSpace,
    NothingToDo,
    NotSupported,
    PermissionDenied,
    VersionNewer,
    VersionSame,
)
from livefw.kernel.sim.machine import FaultSpec, SimMachine
from livefw.kernel.sim.provider import SimProvider
from livefw.kernel.sim.uefi_capsule import (
    DEVICE_FW_CLASS,
    SYSTEM_FW_CLASS,
    UefiCapsuleComponent,
)
from livefw.kernel.uapi import efi
from livefw.plugin import InstallOptions, Payload
from livefw.plugins.uefi_capsule import UefiCapsuleDevice, UefiCapsulePlugin
from livefw.plugins.uefi_capsule.efivars import EfiVars

GLOBAL = efi.EFI_GLOBAL_VARIABLE_GUID
SYSTEM_KEY = f"uefi_capsule/{SYSTEM_FW_CLASS}"
DEVICE_KEY = f"uefi_capsule/{DEVICE_FW_CLASS}"


class Killed(BaseException):
    """Stands for SIGKILL: nothing below the raise point runs, no except clause sees it."""


class Rig:
    """A state dir with a simulated machine; engines come and go like daemon processes."""

    def __init__(self, tmp_path: Path, profile: str = "default", config: Config | None = None):
        self.dir = tmp_path
        self.config = config or Config()
        self.machine = SimMachine.create(str(tmp_path / "sim"), profile)
        self.engine: Engine | None = None

    @property
    def sim(self) -> UefiCapsuleComponent:
        component = self.machine.components["uefi_capsule"]
        assert isinstance(component, UefiCapsuleComponent)
        return component

    async def start(self) -> Engine:
        """A new daemon process on the machine as it is on disk now."""
        await self.stop()
        self.machine = SimMachine.load(str(self.dir / "sim"))
        self.engine = Engine(
            SimProvider(self.machine), self.config, str(self.dir), [UefiCapsulePlugin]
        )
        await self.engine.start()
        return self.engine

    async def stop(self) -> None:
        """The daemon process ends (its history row states stay as they are)."""
        if self.engine is not None and not self.engine.stopping:
            await self.engine.stop()
        self.engine = None

    async def reboot(self) -> None:
        """``livefw sim reboot`` with no daemon running."""
        await self.stop()
        machine = SimMachine.load(str(self.dir / "sim"))
        machine.reboot()
        machine.save()

    def device(self, fw_class: str = SYSTEM_FW_CLASS) -> UefiCapsuleDevice:
        assert self.engine is not None
        found = [d for d in self.engine.devices.values() if d.physical_id == fw_class]
        assert len(found) == 1
        device = found[0]
        assert isinstance(device, UefiCapsuleDevice)
        return device

    def plugin(self) -> UefiCapsulePlugin:
        assert self.engine is not None
        plugin = self.engine.plugins["uefi_capsule"].plugin
        assert isinstance(plugin, UefiCapsulePlugin)
        return plugin

    def sample(self, key: str = SYSTEM_KEY, version: str | None = None, broken: str | None = None):
        return Payload(self.sim.sample(key, version, broken), "update.cap")

    def fault(self, kind: str, target: str = "*") -> None:
        self.machine.add_fault(FaultSpec(component="uefi_capsule", kind=kind, target=target))

    def snapshot(self) -> tuple[dict[str, Any], dict[str, str]]:
        state = self.sim.state
        return (
            {name: var.model_dump() for name, var in state.variables.items()},
            dict(state.esp_files),
        )

    async def install(self, payload: Payload, **options: bool) -> Any:
        assert self.engine is not None
        return await self.engine.install(
            self.device(_class_of(payload)).id, payload, InstallOptions(**options)
        )


def _class_of(payload: Payload) -> str:
    info = efi.inspect_capsule(payload.data, (SYSTEM_FW_CLASS, DEVICE_FW_CLASS))
    kind = info.images[0].image_type
    return kind if kind in (SYSTEM_FW_CLASS, DEVICE_FW_CLASS) else SYSTEM_FW_CLASS


def _var_names(rig: Rig) -> set[str]:
    return {name.rsplit("-", 5)[0] for name in rig.sim.state.variables}


LOADER = "EFI/debian/fwupdx64.efi"


def _nothing_staged(
    rig: Rig, before: tuple[dict[str, Any], dict[str, str]], *, loader_stays: bool = False
) -> None:
    """The machine is as it was: variables and ESP files (directories aside).

    After an update or a cancel the fwupd loader stays on the ESP, as with fwupd.
    """
    variables, files = rig.snapshot()
    assert variables == before[0]
    if loader_stays:
        assert LOADER in files
        files.pop(LOADER)
    assert files == before[1]


# ----------------------------------------------------------------- discovery


async def test_devices_from_the_esrt(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    engine = await rig.start()
    assert engine.plugins["uefi_capsule"].probe.result == "ok"
    system, other = rig.device(), rig.device(DEVICE_FW_CLASS)
    assert system.protocol == "org.uefi.capsule"
    assert system.guids == (SYSTEM_FW_CLASS,)
    assert system.version == "65586"
    assert system.version_lowest == "65536"
    assert system.flags == {"internal", "updatable"}
    assert other.flags == {"updatable"}
    assert system.metadata["update-method"] == "nvram"
    assert system.metadata["esp"] == "/boot/efi"
    assert system.metadata["efi-loader"] == "/usr/libexec/fwupd/efi/fwupdx64.efi"


@pytest.mark.parametrize(
    ("profile", "words"),
    [
        ("legacy", "legacy BIOS boot"),
        ("empty", "publishes no ESRT"),
    ],
)
async def test_no_esrt_says_why(tmp_path: Path, profile: str, words: str) -> None:
    rig = Rig(tmp_path, profile)
    engine = await rig.start()
    record = engine.plugins["uefi_capsule"]
    assert record.plugin is None
    assert record.probe.result == "unsupported"
    assert words in record.probe.reason
    assert engine.devices == {}


async def test_without_a_loader_only_capsule_on_disk(tmp_path: Path) -> None:
    rig = Rig(tmp_path, "minimal")
    engine = await rig.start()
    probe = engine.plugins["uefi_capsule"].probe
    assert probe.result == "ok"
    assert "capsule-on-disk mode only" in probe.reason
    assert "no fwupd EFI loader" in probe.reason
    device = rig.device()
    assert device.metadata["update-method"] == "capsule-on-disk"
    assert "fwupd-efi" in device.metadata["update-method-reason"]


async def test_secure_boot_picks_the_signed_loader(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.sim.configure("secure_boot", "true")
    rig.machine.save()
    await rig.start()
    assert rig.device().metadata["efi-loader"].endswith("fwupdx64.efi.signed")
    entry = await rig.install(rig.sample())
    assert entry.state == "staged"
    # through shim, which the firmware's db trusts; shim starts the Debian-signed loader
    (option,) = [
        efi.LoadOption.unpack(var[1])
        for name in _var_names(rig)
        if efi.parse_boot_var_name(name) is not None
        and (var := rig.sim.get_var(name, GLOBAL)) is not None
        and efi.LoadOption.unpack(var[1]).description == efi.FWUPD_BOOT_DESCRIPTION
    ]
    assert option.file_path_text() == "\\EFI\\debian\\shimx64.efi"
    assert option.optional_data == "\\fwupdx64.efi\0".encode("utf-16-le")
    assert rig.device().metadata["efi-shim"] == "/boot/efi/EFI/debian/shimx64.efi"
    await rig.reboot()
    await rig.start()
    assert rig.device().version == "65587"


async def test_secure_boot_without_shim_refuses_at_install(tmp_path: Path) -> None:
    """fwupd's rule: the firmware would refuse the directly started loader (VM lane)."""
    rig = Rig(tmp_path)
    rig.sim.configure("secure_boot", "true")
    rig.sim.state.esp_files.pop("EFI/debian/shimx64.efi")
    rig.sim.configure("capsule_on_disk", "false")  # else that method needs no loader
    rig.machine.save()
    await rig.start()
    before = rig.snapshot()
    device = rig.device()
    assert device.metadata["update-method"] == "none"
    assert (
        "shim is not installed to /boot/efi/EFI/debian/shimx64.efi"
        in (device.metadata["update-method-reason"])
    )
    with pytest.raises(NotSupported, match="Secure Boot is enabled, but shim"):
        await rig.install(rig.sample())
    _nothing_staged(rig, before)


async def test_secure_boot_refuses_a_directly_started_distribution_loader(
    tmp_path: Path,
) -> None:
    """The simulated firmware as OVMF with Microsoft's keys: db trusts shim, not the loader.

    A Boot#### that starts Debian's signed fwupd loader itself (what livefw did before
    it went through shim) is refused at boot, and the update never runs.
    """
    rig = Rig(tmp_path)
    rig.sim.configure("secure_boot", "true")
    rig.machine.save()
    await rig.start()
    await rig.install(rig.sample())
    number = struct.unpack("<H", rig.sim.get_var(efi.BOOT_NEXT, GLOBAL)[1])[0]  # type: ignore[index]
    name = efi.boot_var_name(number)
    option = efi.LoadOption.unpack(rig.sim.get_var(name, GLOBAL)[1])  # type: ignore[index]
    direct = efi.LoadOption(
        option.attributes,
        option.description,
        [option.file_path[0], efi.FilePathNode("\\EFI\\debian\\fwupdx64.efi")],
    )
    rig.sim.set_var(name, GLOBAL, direct.pack())
    rig.machine.save()
    await rig.reboot()
    assert any(
        "db does not trust" in line for line in _firmware_after_reboot(tmp_path).state.boot_log
    )
    engine = await rig.start()
    (row,) = engine.history.entries()
    assert row.state == "failed"
    assert "Secure Boot refused the loader" in row.reason
    assert rig.device().version == "65586"


async def test_configured_esp_and_loader(tmp_path: Path) -> None:
    config = Config.model_validate(
        {
            "plugins": {
                "uefi_capsule": {
                    "esp_path": "/boot/efi",
                    "efi_loader_path": "/usr/libexec/fwupd/efi/fwupdx64.efi.signed",
                }
            }
        }
    )
    rig = Rig(tmp_path, config=config)
    await rig.start()
    assert rig.device().metadata["efi-loader"].endswith(".signed")
    missing = Config.model_validate(
        {"plugins": {"uefi_capsule": {"efi_loader_path": "/nowhere/fwupdx64.efi"}}}
    )
    rig2 = Rig(tmp_path / "two", config=missing)
    await rig2.start()
    assert (
        "efi_loader_path /nowhere/fwupdx64.efi does not exist"
        in (rig2.device().metadata["update-method-reason"])
    )


# ------------------------------------------------------------------ checking


async def test_payload_checks_have_no_side_effects(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    await rig.start()
    before = rig.snapshot()
    device = rig.device()
    options = InstallOptions()
    # the version rules are the engine's (livefw.versions), applied to what the
    # device says the capsule carries
    with pytest.raises(VersionSame):
        planner.check(device, rig.sample(version="65586"), options)
    with pytest.raises(VersionNewer):
        planner.check(device, rig.sample(version="65580"), options)
    assert device.check_install(rig.sample(version="65580"), options) == "65580"
    assert planner.check(device, rig.sample(version="65580"), InstallOptions(allow_older=True))
    with pytest.raises(InvalidFile, match="below the lowest"):
        planner.check(device, rig.sample(broken="too-old"), InstallOptions(allow_older=True))
    with pytest.raises(InvalidFile, match="not System Firmware"):
        device.check_install(rig.sample(broken="wrong-guid"), options)
    for broken in ("truncated", "bad-header"):
        with pytest.raises(InvalidFile, match="not a valid UEFI capsule"):
            device.check_install(rig.sample(broken=broken), options)
    # no FMP payload header: the version is unknown (a cabinet's metainfo supplies it)
    assert device.check_install(rig.sample(broken="no-version"), options) == ""
    with pytest.raises(InvalidFile):
        device.check_install(rig.sample(DEVICE_KEY), options)
    _nothing_staged(rig, before)
    assert rig.engine is not None
    assert rig.engine.history.entries() == []


# --------------------------------------------------------------- the update


async def test_stage_reboot_success(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    await rig.start()
    before = rig.snapshot()
    entry = await rig.install(rig.sample())
    assert entry.state == "staged"
    assert entry.version_new == "65587"
    device = rig.device()
    assert {"needs-reboot", "can-cancel"} <= device.flags
    assert device.update_state == "needs-reboot"
    assert device.version_pending == "65587"
    # what fwupd-efi needs, in fwupd's format
    provider = SimProvider(rig.machine)
    variables = EfiVars(provider)
    next_boot = await variables.get_data("BootNext", GLOBAL)
    assert next_boot == struct.pack("<H", 3)  # Boot0000-0002 exist: lowest unused
    option = efi.LoadOption.unpack(await variables.get_data("Boot0003", GLOBAL) or b"")
    assert option.description == "Linux Firmware Updater"
    assert option.file_path_text() == "\\EFI\\debian\\fwupdx64.efi"
    raw = await variables.get_data(efi.update_info_name(SYSTEM_FW_CLASS), efi.FWUPDATE_GUID)
    info = efi.UpdateInfo.unpack(raw or b"")
    assert info.status == 1
    assert info.guid == SYSTEM_FW_CLASS
    assert info.capsule_flags == 0x8010
    assert info.file_path() == f"\\EFI\\debian\\fw\\fwupd-{SYSTEM_FW_CLASS}.cap"
    path = f"boot/efi/EFI/debian/fw/fwupd-{SYSTEM_FW_CLASS}.cap"
    assert await provider.read_file(path) == rig.sample().data
    assert await provider.get_immutable(
        efi.var_path(efi.update_info_name(SYSTEM_FW_CLASS), efi.FWUPDATE_GUID)
    )
    # one capsule per device and boot
    with pytest.raises(Busy, match="already has 65587 staged"):
        await rig.install(rig.sample(version="65590"))
    # a plain restart resolves nothing
    engine = await rig.start()
    (row,) = engine.history.entries()
    assert row.state == "staged"
    assert rig.device().update_state == "needs-reboot"
    assert "needs-reboot" in rig.device().flags
    # the reboot applies it; the next start reads the ESRT and cleans up
    await rig.reboot()
    engine = await rig.start()
    (row,) = engine.history.entries()
    assert row.state == "success", row.reason
    assert rig.device().version == "65587"
    assert rig.device().update_state == "success"
    assert "needs-reboot" not in rig.device().flags
    _nothing_staged(rig, before, loader_stays=True)


@pytest.mark.parametrize(
    ("fault", "state", "words"),
    [
        ("auth-error", "failed", "status 5 (authentication error)"),
        ("incorrect-version", "failed", "status 3 (incorrect version)"),
        ("ac-power", "failed-transient", "status 6 (AC power event"),
    ],
)
async def test_firmware_failure_codes(tmp_path: Path, fault: str, state: str, words: str) -> None:
    rig = Rig(tmp_path)
    await rig.start()
    before = rig.snapshot()
    await rig.install(rig.sample())
    rig.fault(fault, SYSTEM_KEY)
    await rig.reboot()
    engine = await rig.start()
    (row,) = engine.history.entries()
    assert row.state == state
    assert words in row.reason
    assert "to 65587" in row.reason
    assert row.version_new == "65587"  # the attempted version, not the running one
    assert rig.device().version == "65586"
    assert rig.device().update_state == state
    assert rig.device().metadata["last-attempt-version"] == "65587"
    _nothing_staged(rig, before, loader_stays=True)


async def test_bad_signature_is_the_firmwares_verdict(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    await rig.start()
    await rig.install(rig.sample(DEVICE_KEY, broken="bad-signature"))
    await rig.reboot()
    engine = await rig.start()
    (row,) = engine.history.entries()
    assert row.state == "failed"
    assert "authentication error" in row.reason


@pytest.mark.parametrize(
    ("fault", "words"),
    [
        ("bootnext-ignored", "never ran"),
        ("boot-entry-removed", "boot entry is missing"),
    ],
)
async def test_loader_never_ran(tmp_path: Path, fault: str, words: str) -> None:
    rig = Rig(tmp_path)
    await rig.start()
    before = rig.snapshot()
    await rig.install(rig.sample())
    rig.fault(fault)
    await rig.reboot()
    engine = await rig.start()
    (row,) = engine.history.entries()
    assert row.state == "failed"
    assert words in row.reason
    _nothing_staged(rig, before, loader_stays=True)


DEBUGGING = Config.model_validate({"plugins": {"uefi_capsule": {"efi_debugging": True}}})
FWUPD = efi.FWUPDATE_GUID


def _firmware_after_reboot(tmp_path: Path) -> UefiCapsuleComponent:
    """The simulated firmware as the reboot left it on disk."""
    component = SimMachine.load(str(tmp_path / "sim")).components["uefi_capsule"]
    assert isinstance(component, UefiCapsuleComponent)
    return component


async def test_a_capsule_the_firmware_refuses_quotes_fwupd_efi(tmp_path: Path) -> None:
    """OVMF (VM lane, capsule scenario): no FMP, UpdateCapsule answers Unsupported.

    The ESRT says nothing; with efi_debugging the row quotes fwupd-efi's own log.
    """
    rig = Rig(tmp_path, config=DEBUGGING)
    await rig.start()
    await rig.install(rig.sample())
    verbose = rig.sim.get_var(efi.FWUPDATE_VERBOSE, FWUPD)
    assert verbose is not None
    assert verbose[1] == b"\x01"
    rig.fault("no-fmp", SYSTEM_KEY)
    await rig.reboot()
    log = _firmware_after_reboot(tmp_path).get_var(efi.FWUPDATE_DEBUG_LOG, FWUPD)
    assert log is not None
    engine = await rig.start()
    (row,) = engine.history.entries()
    assert row.state == "failed"
    assert "the firmware recorded no attempt" in row.reason
    assert (
        "fwupd-efi logged: QueryCapsuleCapabilities failed, assuming EfiResetWarm: "
        "Unsupported; Could not apply capsule update: Unsupported" in row.reason
    )
    assert rig.device().version == "65586"


async def test_without_efi_debugging_the_loader_keeps_no_log(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    await rig.start()
    await rig.install(rig.sample())
    assert rig.sim.get_var(efi.FWUPDATE_VERBOSE, FWUPD) is None
    rig.fault("no-fmp", SYSTEM_KEY)
    await rig.reboot()
    assert _firmware_after_reboot(tmp_path).get_var(efi.FWUPDATE_DEBUG_LOG, FWUPD) is None
    engine = await rig.start()
    (row,) = engine.history.entries()
    assert row.state == "failed"
    assert "recorded no attempt" in row.reason
    assert "fwupd-efi logged" not in row.reason


async def test_a_successful_update_does_not_quote_the_log(tmp_path: Path) -> None:
    rig = Rig(tmp_path, config=DEBUGGING)
    await rig.start()
    await rig.install(rig.sample())
    await rig.reboot()
    log = _firmware_after_reboot(tmp_path).get_var(efi.FWUPDATE_DEBUG_LOG, FWUPD)
    assert log is not None
    assert "Reset System" in log[1].decode("utf-16-le")
    engine = await rig.start()
    (row,) = engine.history.entries()
    assert row.state == "success", row.reason
    assert "fwupd-efi" not in row.reason


async def test_a_hostile_loader_log_is_bounded_and_escaped(tmp_path: Path) -> None:
    """FWUPDATE_DEBUG_LOG is firmware-supplied: huge, control characters, many lines."""
    rig = Rig(tmp_path, config=DEBUGGING)
    await rig.start()
    await rig.install(rig.sample())
    rig.fault("no-fmp", SYSTEM_KEY)
    await rig.reboot()
    machine = SimMachine.load(str(tmp_path / "sim"))
    component = machine.components["uefi_capsule"]
    assert isinstance(component, UefiCapsuleComponent)
    hostile = "x.c:1:f(): Could not get variable 'FWUPDATE_DEBUG_LOG' for delete\n"
    hostile += "".join(f"x.c:1:f(): Could not \x1b[2J{i} " + "A" * 500 + "\n" for i in range(5000))
    component.set_var(efi.FWUPDATE_DEBUG_LOG, FWUPD, hostile.encode("utf-16-le"))
    machine.save()
    engine = await rig.start()
    (row,) = engine.history.entries()
    said = row.reason.partition("fwupd-efi logged: ")[2]
    assert said.count("Could not") == 4  # at most 4 lines
    assert len(said) < 4 * 170
    assert "\x1b" not in row.reason
    assert "FWUPDATE_DEBUG_LOG" not in row.reason  # the loader's own housekeeping


async def test_two_devices_share_the_boot_entry(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    await rig.start()
    before = rig.snapshot()
    await rig.install(rig.sample())
    await rig.install(rig.sample(DEVICE_KEY, version="45"))
    assert "Boot0003" in _var_names(rig)
    assert "Boot0004" not in _var_names(rig)
    # cancelling one keeps the entry and BootNext for the other
    assert rig.engine is not None
    await rig.engine.cancel(rig.device(DEVICE_FW_CLASS).id)
    assert {"Boot0003", "BootNext"} <= _var_names(rig)
    await rig.install(rig.sample(DEVICE_KEY, version="45"))
    await rig.reboot()
    engine = await rig.start()
    rows = {row.device_name: row for row in engine.history.entries()}
    assert [row.state for row in engine.history.entries()] == ["success", "cancelled", "success"]
    assert rig.device(DEVICE_FW_CLASS).version == "45"
    assert rows["System Firmware"].state == "success"
    _nothing_staged(rig, before, loader_stays=True)


async def test_cancel_removes_everything(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    await rig.start()
    before = rig.snapshot()
    device = rig.device()
    with pytest.raises(NothingToDo):
        device.check_cancel()
    await rig.install(rig.sample())
    assert rig.engine is not None
    await rig.engine.cancel(device.id)
    (row,) = rig.engine.history.entries()
    assert row.state == "cancelled"
    assert device.update_state == "none"
    assert "needs-reboot" not in device.flags
    _nothing_staged(rig, before, loader_stays=True)
    await rig.reboot()
    await rig.start()
    assert rig.device().version == "65586"


async def test_capsule_on_disk(tmp_path: Path) -> None:
    rig = Rig(tmp_path, "minimal")
    await rig.start()
    before = rig.snapshot()
    await rig.install(rig.sample())
    assert f"EFI/UpdateCapsule/fwupd-{SYSTEM_FW_CLASS}.cap" in rig.sim.state.esp_files
    variables = EfiVars(SimProvider(rig.machine))
    raw = await variables.get_data("OsIndications", GLOBAL)
    assert raw is not None
    assert struct.unpack("<Q", raw)[0] & 0x4
    assert "BootNext" not in _var_names(rig)
    assert "needs-reboot" in rig.device().flags
    await rig.reboot()
    engine = await rig.start()
    (row,) = engine.history.entries()
    assert row.state == "success", row.reason
    assert rig.device().version == "65587"
    names = _var_names(rig)
    assert {"Capsule0000", "CapsuleLast", "CapsuleMax"} <= names
    assert not [p for p in rig.sim.state.esp_files if p.startswith("EFI/UpdateCapsule/")]
    raw = await EfiVars(SimProvider(rig.machine)).get_data("OsIndications", GLOBAL)
    assert raw is not None
    assert not struct.unpack("<Q", raw)[0] & 0x4
    variables_before = set(before[0])
    assert {
        n for n in rig.sim.state.variables if not n.startswith(("Capsule", "OsIndications-"))
    } == {n for n in variables_before}


async def test_capsule_on_disk_cancel(tmp_path: Path) -> None:
    rig = Rig(tmp_path, "minimal")
    await rig.start()
    before = rig.snapshot()
    await rig.install(rig.sample())
    assert rig.engine is not None
    await rig.engine.cancel(rig.device().id)
    variables, files = rig.snapshot()
    assert files == before[1]
    osind = variables.pop(f"OsIndications-{GLOBAL}")
    assert (
        struct.unpack("<Q", efi.decode_var(__import__("base64").b64decode(osind["content"]))[1])[0]
        == 0
    )
    assert variables == before[0]


# ---------------------------------------------------------- failure without loss


@pytest.mark.parametrize(
    ("fault", "error", "words"),
    [
        ("esp-full", NoSpace, "EFI System Partition is full"),
        ("varstore-full", NoSpace, "variable store is full"),
        ("efivarfs-ro", PermissionDenied, "read-only"),
    ],
)
async def test_staging_failure_leaves_the_machine_as_it_was(
    tmp_path: Path, fault: str, error: type[Exception], words: str
) -> None:
    rig = Rig(tmp_path)
    await rig.start()
    before = rig.snapshot()
    rig.fault(fault)
    with pytest.raises(error, match=words):
        await rig.install(rig.sample())
    _nothing_staged(rig, before)
    assert rig.engine is not None
    (row,) = rig.engine.history.entries()
    assert row.state == "failed"
    assert words in row.reason
    assert rig.device().update_state == "failed"
    assert "needs-reboot" not in rig.device().flags
    # the next attempt works
    entry = await rig.install(rig.sample())
    assert entry.state == "staged"


async def test_variable_store_full_at_the_boot_entry(tmp_path: Path) -> None:
    """The store fills up after UPDATE_INFO: the capsule and UPDATE_INFO are taken back."""
    rig = Rig(tmp_path)
    await rig.start()
    before = rig.snapshot()
    free = await SimProvider(rig.machine).free_space(efi.EFIVARS_DIR)
    update_info = len(efi.update_info_name(SYSTEM_FW_CLASS)) * 2 + 52 + 42 + 4 + 4 + 2 * 60
    rig.sim.state.var_store_size -= free - update_info - 20
    rig.machine.save()
    await rig.start()
    before = rig.snapshot()
    with pytest.raises(
        NoSpace, match="variable store is full while writing the EFI variable Boot0003"
    ):
        await rig.install(rig.sample())
    _nothing_staged(rig, before)


async def test_immutable_variable_that_cannot_be_cleared(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    await rig.start()
    # a stale record from an earlier run (fwupd clears results to status 0)
    variables = EfiVars(SimProvider(rig.machine))
    stale = efi.UpdateInfo(
        SYSTEM_FW_CLASS, 0, [efi.FilePathNode("\\EFI\\debian\\fw\\old.cap")], status=0
    )
    name = efi.update_info_name(SYSTEM_FW_CLASS)
    await variables.set(name, efi.FWUPDATE_GUID, stale.pack())
    before = rig.snapshot()
    rig.fault("chattr-denied")
    with pytest.raises(PermissionDenied, match="immutable"):
        await rig.install(rig.sample())
    variables_now, files_now = rig.snapshot()
    assert files_now == before[1]
    # the stale record may be gone (it was never ours), nothing else changed
    key = efi.var_filename(name, efi.FWUPDATE_GUID)
    assert {k: v for k, v in variables_now.items() if k != key} == {
        k: v for k, v in before[0].items() if k != key
    }


async def test_efivarfs_mounted_read_only_is_not_updatable(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.sim.state.efivarfs_readonly = True
    rig.machine.save()
    await rig.start()
    device = rig.device()
    assert "updatable" not in device.flags
    assert "read-only" in device.metadata["update-method-reason"]
    with pytest.raises(NotSupported, match="read-only"):
        device.check_install(rig.sample(), InstallOptions())


async def test_esp_too_small_is_refused_before_anything(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.sim.state.esp_size = 64 * 1024
    rig.machine.save()
    await rig.start()
    before = rig.snapshot()
    with pytest.raises(NoSpace, match="twice the"):
        await rig.install(rig.sample())
    _nothing_staged(rig, before)


# ------------------------------------------------------------ killed mid-way


STEPS = ["fwupd-", "Boot0003", "BootNext"]


@pytest.mark.parametrize("step", STEPS)
async def test_killed_between_steps_is_repaired_at_the_next_start(
    tmp_path: Path, step: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = Rig(tmp_path)
    await rig.start()
    before = rig.snapshot()
    original = EfiVars.set

    async def dying_set(self: EfiVars, name: str, *args: Any, **kwargs: Any) -> None:
        if name.startswith(step):
            raise Killed
        await original(self, name, *args, **kwargs)

    monkeypatch.setattr(EfiVars, "set", dying_set)
    with pytest.raises(Killed):
        await rig.install(rig.sample())
    monkeypatch.setattr(EfiVars, "set", original)
    assert "BootNext" not in _var_names(rig)  # BootNext never points at half a staging
    engine = await rig.start()  # same boot id
    (row,) = engine.history.entries()
    assert row.state == "failed"
    assert "interrupted while staging" in row.reason
    _nothing_staged(rig, before)


async def test_killed_after_the_last_step_stays_staged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = Rig(tmp_path)
    await rig.start()

    async def dying_update(self: UefiCapsuleDevice) -> None:
        raise Killed

    original = UefiCapsuleDevice.update_properties
    monkeypatch.setattr(UefiCapsuleDevice, "update_properties", dying_update)
    with pytest.raises(Killed):
        await rig.install(rig.sample())
    monkeypatch.setattr(UefiCapsuleDevice, "update_properties", original)
    engine = await rig.start()  # same boot: the complete staging is kept
    (row,) = engine.history.entries()
    assert row.state == "staged"  # the staging was complete: the row owns it
    assert "needs-reboot" in rig.device().flags
    await rig.reboot()
    engine = await rig.start()
    (row,) = engine.history.entries()
    assert row.state == "success"
    assert rig.device().version == "65587"


async def test_killed_then_rebooted_resolves_from_the_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = Rig(tmp_path)
    await rig.start()
    before = rig.snapshot()
    original = EfiVars.set

    async def dying_set(self: EfiVars, name: str, *args: Any, **kwargs: Any) -> None:
        if name == "BootNext":
            raise Killed
        await original(self, name, *args, **kwargs)

    monkeypatch.setattr(EfiVars, "set", dying_set)
    with pytest.raises(Killed):
        await rig.install(rig.sample())
    monkeypatch.setattr(EfiVars, "set", original)
    await rig.reboot()  # no BootNext: the loader does not run
    engine = await rig.start()
    (row,) = engine.history.entries()
    assert row.state == "failed"
    assert "never ran" in row.reason
    _nothing_staged(rig, before)


async def test_configured_capsule_on_disk_and_systemd_boot_dir(tmp_path: Path) -> None:
    config = Config.model_validate({"plugins": {"uefi_capsule": {"update_method": "nvram"}}})
    rig = Rig(tmp_path, config=config)
    await SimProvider(rig.machine).makedirs("boot/efi/EFI/systemd")
    await rig.start()
    await rig.install(rig.sample())
    assert f"EFI/systemd/fw/fwupd-{SYSTEM_FW_CLASS}.cap" in rig.sim.state.esp_files
    assert "EFI/systemd/fwupdx64.efi" in rig.sim.state.esp_files

    forced = Config.model_validate(
        {"plugins": {"uefi_capsule": {"update_method": "capsule-on-disk"}}}
    )
    rig2 = Rig(tmp_path / "two", config=forced)
    await rig2.start()
    assert rig2.device().metadata["update-method"] == "capsule-on-disk"
    await rig2.install(rig2.sample())
    assert f"EFI/UpdateCapsule/fwupd-{SYSTEM_FW_CLASS}.cap" in rig2.sim.state.esp_files
    assert "BootNext" not in _var_names(rig2)


async def test_entry_gone_after_reboot_still_cleans_up(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    await rig.start()
    before = rig.snapshot()
    await rig.install(rig.sample(DEVICE_KEY, version="45"))
    await rig.stop()
    machine = SimMachine.load(str(tmp_path / "sim"))
    component = machine.components["uefi_capsule"]
    assert isinstance(component, UefiCapsuleComponent)
    component.state.entries = component.state.entries[:1]  # a firmware update dropped it
    machine.save()
    await rig.reboot()
    engine = await rig.start()
    (row,) = engine.history.entries()
    assert row.state == "failed"
    assert "no longer lists" in row.reason
    _nothing_staged(rig, before, loader_stays=True)


async def test_bare_payload_gets_fwupds_synthetic_header(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    await rig.start()
    bare = efi.FmpPayloadHeader(65590, 65536).pack() + b"\xaa" * 1000
    assert rig.engine is not None
    entry = await rig.engine.install(rig.device().id, Payload(bare, "raw.bin"), InstallOptions())
    assert entry.version_new == "65590"
    staged = SimProvider(rig.machine)
    data = await staged.read_file(f"boot/efi/EFI/debian/fw/fwupd-{SYSTEM_FW_CLASS}.cap")
    header = efi.inspect_capsule(data, (SYSTEM_FW_CLASS,)).header
    assert header is not None
    assert (header.guid, header.header_size, header.flags) == (SYSTEM_FW_CLASS, 4096, 0x8010)
    assert header.image_size == 4096 + len(bare) == len(data)
    assert data[4096:] == bare
    await rig.reboot()
    engine = await rig.start()
    (row,) = engine.history.entries()
    assert row.state == "success"
    assert rig.device().version == "65590"


async def test_a_bare_payload_is_checked_without_a_copy_and_joined_off_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checking a bare payload (the engine checks it twice before installing, and
    GetDetails checks it for anyone) walks it and copies nothing; its synthetic
    header is joined to it once, at install, in a thread: 13-45 ms for 64 MiB that
    held the event loop (bench/NOTES.md, staging)."""
    joined: list[str] = []
    real = UefiCapsuleDevice._staged_bytes

    def recording(self: UefiCapsuleDevice, data: bytes | memoryview) -> bytes:
        joined.append(threading.current_thread().name)
        return real(self, data)

    monkeypatch.setattr(UefiCapsuleDevice, "_staged_bytes", recording)
    rig = Rig(tmp_path)
    await rig.start()
    assert rig.engine is not None
    bare = Payload(efi.FmpPayloadHeader(65590, 65536).pack() + b"\xaa" * 1000, "raw.bin")
    device = rig.device()
    for _ in range(2):
        await rig.engine.plan(device.id, bare, InstallOptions())
    assert joined == []
    await rig.engine.install(device.id, bare, InstallOptions())
    (thread,) = joined
    assert thread != threading.main_thread().name
    # a capsule with its own header is staged as it came: nothing joined
    joined.clear()
    await rig.engine.cancel(device.id)
    await rig.install(rig.sample(DEVICE_KEY, version="46"))
    assert joined == []


async def test_capsule_without_version_is_staged_and_judged_by_the_firmware(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path)
    await rig.start()
    entry = await rig.install(rig.sample(broken="no-version"))
    assert entry.state == "staged"
    assert entry.version_new == ""
    assert "needs-reboot" in rig.device().flags
    await rig.reboot()
    engine = await rig.start()
    (row,) = engine.history.entries()
    assert row.state == "failed"
    assert "status 4 (invalid format)" in row.reason
