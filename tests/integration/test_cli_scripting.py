"""What scripts rely on: ``livefw inspect`` and errors as JSON with ``--json``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from livefw.testing import Cli, DaemonProcess

BL31_GUID = "47d4086d-4cfe-9846-9b95-2950cbbd5a00"


def test_inspect_describes_a_cabinet_and_a_raw_file_without_the_daemon(
    cli: Cli, tmp_path: Path
) -> None:
    payload = tmp_path / "payload.bin"
    payload.write_bytes(b"\x01" * 4096)
    cab = tmp_path / "fw.cab"
    cli(
        "build-cabinet", str(payload), "--guid", BL31_GUID, "--version", "2.15",
        "--name", "BL31", "-o", str(cab),
    )  # fmt: skip
    info = json.loads(cli("inspect", str(cab), "--json").stdout)
    assert info["kind"] == "cabinet"
    assert info["sha256"] == hashlib.sha256(cab.read_bytes()).hexdigest()
    (release,) = info["releases"]
    assert release["version"] == "2.15"
    assert release["guids"] == [BL31_GUID]
    raw = json.loads(cli("inspect", str(payload), "--json").stdout)
    assert raw == {
        "kind": "raw",
        "size": 4096,
        "sha256": hashlib.sha256(payload.read_bytes()).hexdigest(),
    }
    broken = tmp_path / "broken.cab"
    broken.write_bytes(cab.read_bytes()[:200])
    result = cli("inspect", str(broken), check=False)
    assert result.returncode == 8
    assert "broken.cab" in result.stderr


def test_errors_are_one_json_line_with_json(
    daemon: DaemonProcess, cli: Cli, tmp_path: Path
) -> None:
    capsule = tmp_path / "code.bin"
    cli("sim", "sample", "pfru/code-injection", "--version", "3", "-o", str(capsule))
    result = cli("install", str(capsule), "--json", check=False)  # 3 is running
    assert result.returncode == 8
    error = json.loads(result.stderr.strip().splitlines()[-1])
    assert error["error"] == "VersionSame"
    assert error["exit_code"] == 8
    assert error["message"]
    plain = cli("install", str(capsule), check=False)
    assert plain.returncode == 8
    assert not plain.stderr.lstrip().startswith("{")


#: the simulated machine's system firmware (ESRT entry) and its running version.
SYSTEM_CLASS = "ddc0ee61-e7f0-4e7d-acc5-c070a398838e"


def test_install_without_a_device_names_the_closest_candidate_and_why(
    daemon: DaemonProcess, cli: Cli, tmp_path: Path
) -> None:
    """`livefw install FILE` with no device for the payload says which came closest and why."""
    devices = json.loads(cli("get-devices", "--json").stdout)
    system = next(d for d in devices if SYSTEM_CLASS in d["Guids"])
    older = str(int(system["Version"]) - 1)
    capsule = tmp_path / "older.cap"
    cli("sim", "sample", f"uefi_capsule/{SYSTEM_CLASS}", "--version", older, "-o", str(capsule))
    result = cli("install", str(capsule), "--json", check=False)
    assert result.returncode == 8
    error = json.loads(result.stderr.strip().splitlines()[-1])
    assert error["error"] == "VersionNewer"  # the closest device's own reason, by name
    assert error["message"].startswith("no device on this machine accepts this payload; ")
    assert f"closest: {system['Name']} (uefi_capsule): " in error["message"]
    assert "allow-older" in error["message"]
    # with the option the same file goes to that device
    staged = cli("install", str(capsule), "--allow-older", "--json")
    assert json.loads(staged.stdout)["DeviceId"] == system["Id"]

    downgrade = tmp_path / "code.cap"
    cli("sim", "sample", "pfru/code-injection", "--broken", "downgrade", "-o", str(downgrade))
    result = cli("install", str(downgrade), "--allow-older", check=False)
    assert result.returncode == 8
    assert "closest: " in result.stderr
    assert "(pfru): " in result.stderr
    assert "anti-rollback" in result.stderr

    other = tmp_path / "other-platform.cap"
    cli("sim", "sample", "pfru/code-injection", "--broken", "other-platform", "-o", str(other))
    result = cli("install", str(other), "--json", check=False)
    error = json.loads(result.stderr.strip().splitlines()[-1])
    assert error["error"] == "InvalidFile"
    assert "closest: Platform firmware runtime code injection (pfru): " in error["message"]
    assert "the capsule is for platform" in error["message"]
