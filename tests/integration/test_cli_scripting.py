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
