"""UEFI capsules end to end: stage with the CLI, `livefw sim reboot`, restart, read the result."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from livefw.testing import Cli, DaemonProcess, PolkitMock

SYSTEM_ID = "9a3878b215be0fd3ae94aa02e96ffb857437d0f4"  # sha1("uefi_capsule:ddc0ee61-...")
SYSTEM_CLASS = "ddc0ee61-e7f0-4e7d-acc5-c070a398838e"


def _device(cli: Cli) -> dict[str, Any]:
    listed = {d["Id"]: d for d in json.loads(cli("get-devices", "--json").stdout)}
    return listed[SYSTEM_ID]


def _history(cli: Cli) -> list[dict[str, Any]]:
    return [e for e in json.loads(cli("history", "--json").stdout) if e["Plugin"] == "uefi_capsule"]


def _stage(cli: Cli, tmp_path: Path) -> None:
    capsule = tmp_path / "system.cap"
    cli("sim", "sample", f"uefi_capsule/{SYSTEM_CLASS}", "-o", str(capsule))
    result = cli("install", str(capsule), SYSTEM_ID)
    assert "staged" in result.stdout
    device = _device(cli)
    assert "needs-reboot" in device["Flags"]
    assert device["VersionPending"] == "65587"
    assert device["Protocol"] == "org.uefi.capsule"
    assert device["Plugin"] == "uefi_capsule"


def _reboot(cli: Cli, daemon: DaemonProcess) -> str:
    """`livefw sim reboot`; what it printed (stdout and stderr)."""
    result = cli("sim", "reboot")
    daemon.wait_exit()
    return result.stdout + result.stderr


@pytest.mark.parametrize(
    ("fault", "state", "words"),
    [
        (None, "success", "applied version 65587"),
        ("auth-error", "failed", "status 5 (authentication error)"),
        ("insufficient-resources", "failed", "status 2 (insufficient resources)"),
        ("battery-low", "failed-transient", "status 7 (battery power event"),
    ],
)
def test_stage_reboot_restart(
    daemon_factory: Callable[..., DaemonProcess],
    polkit: PolkitMock,
    cli: Cli,
    tmp_path: Path,
    fault: str | None,
    state: str,
    words: str,
) -> None:
    daemon = daemon_factory()
    _stage(cli, tmp_path)
    # a plain restart changes nothing
    daemon.stop()
    daemon = daemon_factory()
    (entry,) = _history(cli)
    assert entry["State"] == "staged"
    assert "needs-reboot" in _device(cli)["Flags"]
    if fault is not None:
        cli("sim", "fault", "uefi_capsule", fault)
    said = _reboot(cli, daemon)
    assert "Simulated reboot done" in said
    assert "HUNG" not in said  # the loader ran; only a hang is reported
    daemon_factory()
    (entry,) = _history(cli)
    assert entry["State"] == state
    assert words in entry["Reason"]
    device = _device(cli)
    assert device["Version"] == ("65587" if state == "success" else "65586")
    assert "needs-reboot" not in device["Flags"]
    assert device["UpdateState"] == state


def test_cancel_over_the_bus(
    daemon_factory: Callable[..., DaemonProcess], polkit: PolkitMock, cli: Cli, tmp_path: Path
) -> None:
    daemon = daemon_factory()
    shown = cli("esp").stdout
    assert "/boot/efi" in shown
    assert "nvram" in shown
    assert "/usr/libexec/fwupd/efi/fwupdx64.efi" in shown
    _stage(cli, tmp_path)
    staged = json.loads(cli("esp", "--json").stdout)
    assert {d["Id"]: d["VersionPending"] for d in staged["devices"]}[SYSTEM_ID] == "65587"
    cli("cancel", SYSTEM_ID)
    assert "needs-reboot" not in _device(cli)["Flags"]
    (entry,) = _history(cli)
    assert entry["State"] == "cancelled"
    _reboot(cli, daemon)
    daemon_factory()
    assert _device(cli)["Version"] == "65586"


@pytest.mark.parametrize(
    ("profile", "settings", "words"),
    [
        ("legacy", (), "legacy BIOS boot"),
        # a Xen dom0 shows the ESRT from Linux 6.3 on (esrt.c accepts EFI_PARAVIRT)
        ("xen-dom0", (), "kernels before 6.3 never expose the ESRT under Xen"),
        # before 6.5 the ESRT needs CAP_SYS_ADMIN; without the unit's copy, say so
        ("default", ("esrt_snapshot=false",), "CAP_SYS_ADMIN"),
    ],
)
def test_plugins_says_why_there_is_no_esrt(
    daemon_factory: Callable[..., DaemonProcess],
    polkit: PolkitMock,
    cli: Cli,
    profile: str,
    settings: tuple[str, ...],
    words: str,
) -> None:
    cli("sim", "init", "--profile", profile, "--kernel", "6.1", "--force")
    daemon = daemon_factory()
    if settings:
        for setting in settings:
            cli("sim", "set", "uefi_capsule", setting)
        daemon.stop()
        daemon_factory()
    assert words in cli("plugins").stdout
    result = cli("esp", check=False)
    assert result.returncode == 5
    assert "livefw plugins" in result.stderr


def test_a_wrong_hd_node_hangs_the_boot_visibly(
    daemon_factory: Callable[..., DaemonProcess],
    polkit: PolkitMock,
    cli: Cli,
    tmp_path: Path,
) -> None:
    """fwupd-efi 1.4 hangs when the HD() node does not match the disk (issue 14.12, 14.13).

    The disk is given 4096-byte logical blocks after staging (as if it were swapped),
    so the staged HD() node no longer matches: the simulated loader starts (OVMF
    matches by partition number and GUID), cannot open the capsule and hangs.
    """
    daemon = daemon_factory()
    _stage(cli, tmp_path)
    cli("sim", "set", "uefi_capsule", "logical_block_size=4096")
    said = _reboot(cli, daemon)
    # `sim reboot` itself says what hung, why, and what to do (issue 14 residual)
    assert "THE BOOT HUNG in the fwupd EFI loader" in said
    assert f"fwupd-{SYSTEM_CLASS}-0: could not find or open" in said
    assert "in the disk's 4096-byte logical blocks" in said
    assert "livefw esp" in said
    assert "install again" in said
    shown = json.loads(cli("sim", "devices", "--json").stdout)
    summary = next(d["summary"] for d in shown if d["key"] == f"uefi_capsule/{SYSTEM_CLASS}")
    assert "LAST BOOT HUNG IN THE LOADER" in summary
    daemon_factory()
    (entry,) = _history(cli)
    assert entry["State"] == "failed"
    assert "never ran" in entry["Reason"]
    assert "crashed" in entry["Reason"]
    assert _device(cli)["Version"] == "65586"
