"""``livefw metrics`` against livefwd on a private bus, scraped by a real node_exporter."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from livefw.testing import Cli, DaemonProcess

NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"


def parse(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return found


def only(found: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    hits = [
        value
        for have, value in found.get(name, [])
        if all(have.get(key) == want for key, want in labels.items())
    ]
    assert len(hits) == 1, (name, labels, found.get(name))
    return hits[0]


def test_metrics_follow_the_devices_and_the_history(daemon: DaemonProcess, cli: Cli) -> None:
    cli("activate", "bl31")
    cli("sim", "stage", "rmm", "--version", "0.8")
    cli("refresh")
    cli("sim", "fault", "lfa", "activation-failed", "--device", "rmm")
    assert cli("activate", "rmm", check=False).returncode == 1
    found = parse(cli("metrics").stdout)
    devices = json.loads(cli("get-devices", "--json").stdout)
    assert only(found, "livefw_up") == 1
    assert only(found, "livefw_daemon_info")  # version, simulated, boot id as labels
    assert only(found, "livefw_kernel_tainted") == 0
    assert abs(only(found, "livefw_start_time_seconds") - time.time()) < 600
    for device in devices:
        info = [
            labels
            for labels, _ in found["livefw_device_info"]
            if labels["device_id"] == device["Id"]
        ]
        assert info, device
        assert info[0]["version"] == device["Version"]
        assert info[0]["name"] == device["Name"]
        assert (
            only(
                found,
                "livefw_device_update_state",
                device_id=device["Id"],
                livefw_device_update_state=device["UpdateState"],
            )
            == 1
        )
    bl31 = next(d["Id"] for d in devices if "BL31" in d["Name"])
    rmm = next(d["Id"] for d in devices if "RMM" in d["Name"])
    assert only(found, "livefw_device_last_operation_success", device_id=bl31, kind="activate") == 1
    assert only(found, "livefw_device_last_operation_success", device_id=rmm, kind="activate") == 0
    assert only(found, "livefw_operations_total", kind="activate", state="success") == 1
    assert only(found, "livefw_operations_total", kind="activate", state="failed") == 1
    # PFRT telemetry: the simulated firmware logs at info level from the start
    assert sum(value for _, value in found["livefw_telemetry_records"]) > 0


def test_a_staged_update_shows_when_it_was_staged(
    daemon: DaemonProcess, cli: Cli, tmp_path: Path
) -> None:
    capsule = tmp_path / "code.bin"
    cli("sim", "sample", "pfru/code-injection", "--version", "6", "-o", str(capsule))
    before = time.time()
    cli("install", str(capsule))
    found = parse(cli("metrics", "--format", "openmetrics").stdout)
    staged = found["livefw_device_staged_timestamp_seconds"]
    assert len(staged) == 1
    assert staged[0][1] >= before - 2
    device_id = staged[0][0]["device_id"]
    assert only(found, "livefw_device_pending", device_id=device_id) == 1
    info = next(
        labels for labels, _ in found["livefw_device_info"] if labels["device_id"] == device_id
    )
    assert info["version_pending"] == "6"


def test_output_file_is_replaced_atomically_and_readable(
    daemon: DaemonProcess, cli: Cli, tmp_path: Path
) -> None:
    target = tmp_path / "textfile" / "livefw.prom"
    target.parent.mkdir()
    target.write_text("old\n")
    old_inode = target.stat().st_ino
    cli("metrics", "--output", str(target))
    assert target.stat().st_ino != old_inode  # renamed over, never rewritten in place
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert os.listdir(target.parent) == ["livefw.prom"]  # no temporary file left
    assert only(parse(target.read_text()), "livefw_up") == 1
    result = cli("metrics", "--output", str(tmp_path / "missing" / "x.prom"), check=False)
    assert result.returncode == 1
    assert "cannot write" in result.stderr


def test_without_livefwd_the_metrics_say_down(cli: Cli) -> None:
    result = cli("metrics", check=False)
    assert result.returncode == 0, result.stderr
    assert parse(result.stdout) == {"livefw_up": [({}, 0.0)]}
    assert "did not answer" in result.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_node_exporter_serves_the_textfile(daemon: DaemonProcess, cli: Cli, tmp_path: Path) -> None:
    if not os.access(NODE_EXPORTER, os.X_OK):
        if os.environ.get("CI") == "true":
            pytest.fail("prometheus-node-exporter is missing although `make test` installs it")
        pytest.skip("prometheus-node-exporter is not installed (make install-node-exporter)")
    textfile_dir = tmp_path / "node-exporter"
    textfile_dir.mkdir()
    cli("activate", "bl31")
    cli("metrics", "--output", str(textfile_dir / "livefw.prom"))
    port = _free_port()
    exporter = subprocess.Popen(
        [
            NODE_EXPORTER,
            f"--web.listen-address=127.0.0.1:{port}",
            "--collector.disable-defaults",
            "--collector.textfile",
            f"--collector.textfile.directory={textfile_dir}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        body = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
                    body = reply.read().decode()
                break
            except OSError:
                time.sleep(0.2)
        assert body, "node_exporter did not answer"
    finally:
        exporter.terminate()
        try:
            exporter.wait(timeout=10)
        except subprocess.TimeoutExpired:
            exporter.kill()
            exporter.wait()
    found = parse(body)
    # node_exporter read our file without errors and serves our samples unchanged
    assert only(found, "node_textfile_scrape_error") == 0
    assert only(found, "livefw_up") == 1
    devices = json.loads(cli("get-devices", "--json").stdout)
    served = {labels["device_id"]: labels["version"] for labels, _ in found["livefw_device_info"]}
    assert served == {d["Id"]: d["Version"] for d in devices}
    bl31 = next(d["Id"] for d in devices if "BL31" in d["Name"])
    assert only(found, "livefw_device_last_operation_success", device_id=bl31, kind="activate") == 1
    assert shutil.which(NODE_EXPORTER)
