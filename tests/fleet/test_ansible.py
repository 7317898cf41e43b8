"""The livefw.firmware Ansible collection against a fleet of simulated hosts.

Eight hosts, each its own ``livefwd --simulate`` on its own private bus and state
dir; seven are reached with Ansible's local connection, one through a real sshd on a
loopback port (module transfer and remote execution over SSH). The modules run with
Debian's /usr/bin/python3 (the target's own Python) and call the livefw CLI.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from livefw.testing import DaemonProcess, PrivateBus

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LIVEFW = str(BIN / "livefw")
TARGET_PYTHON = "/usr/bin/python3"
SSHD = "/usr/sbin/sshd"
HOSTS = 8
SSH_HOST = "host8"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _need(path: str, how: str) -> None:
    if not os.access(path, os.X_OK):
        if os.environ.get("CI") == "true":
            pytest.fail(f"{path} is missing although `make test-fleet` installs it")
        pytest.skip(f"{path} is not installed ({how})")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Host:
    name: str
    bus: PrivateBus
    daemon: DaemonProcess

    def livefw(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = self.bus.env()
        env["LIVEFW_STATE_DIR"] = self.daemon.state_dir
        return subprocess.run(
            [LIVEFW, *args], env=env, capture_output=True, text=True, check=check, timeout=120
        )

    def json(self, *args: str) -> Any:
        return json.loads(self.livefw(*args, "--json").stdout)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fleet")


@pytest.fixture(scope="module")
def collections(workdir: Path) -> Path:
    """The collection built with ansible-galaxy and installed into a private path."""
    galaxy = str(BIN / "ansible-galaxy")
    built = workdir / "built"
    subprocess.run(
        [galaxy, "collection", "build", str(REPO / "ansible"), "--output-path", str(built)],
        check=True,
        capture_output=True,
        text=True,
    )
    (tarball,) = built.glob("livefw-firmware-*.tar.gz")
    path = workdir / "collections"
    subprocess.run(
        [galaxy, "collection", "install", "-p", str(path), str(tarball)],
        check=True,
        capture_output=True,
        text=True,
    )
    assert (path / "ansible_collections/livefw/firmware/plugins/modules/livefw_install.py").exists()
    return path


@pytest.fixture(scope="module")
def sshd(workdir: Path) -> Iterator[dict[str, str]]:
    """A real sshd on a loopback port that lets root in with a key made here."""
    _need(SSHD, "make install-fleet-packages")
    ssh_dir = workdir / "ssh"
    ssh_dir.mkdir(mode=0o700)
    for key in ("host_key", "client_key"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ssh_dir / key)], check=True
        )
    (ssh_dir / "authorized_keys").write_text((ssh_dir / "client_key.pub").read_text())
    port = _free_port()
    config = ssh_dir / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {ssh_dir / 'host_key'}\n"
        f"PidFile {ssh_dir / 'sshd.pid'}\nAuthorizedKeysFile {ssh_dir / 'authorized_keys'}\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        "Subsystem sftp internal-sftp\n"
    )
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation dir
    proc = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"sshd did not start: {err}")
            time.sleep(0.1)
        yield {"port": str(port), "key": str(ssh_dir / "client_key")}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def fleet(workdir: Path) -> Iterator[dict[str, Host]]:
    hosts: dict[str, Host] = {}
    try:
        for index in range(1, HOSTS + 1):
            name = f"host{index}"
            root = workdir / name
            (root / "bus").mkdir(parents=True)
            # the test's cabinet is unsigned (fleets sign theirs: /etc/livefw/pki)
            config = root / "livefw.conf"
            (root / "firmware").mkdir()
            (root / "remotes.d").mkdir()
            (root / "remotes.d/fleet.conf").write_text(
                f"[livefw Remote]\nEnabled=true\nTitle=Fleet\nPath={root / 'firmware'}\n"
            )
            config.write_text(
                f'[install]\nonly_trusted = false\nremotes_dir = "{root / "remotes.d"}"\n'
            )
            bus = PrivateBus(str(root / "bus")).start()
            daemon = DaemonProcess(bus, str(root / "state"), config=str(config))
            daemon.start(wait=False)
            hosts[name] = Host(name, bus, daemon)
        for host in hosts.values():
            host.bus.wait_for_name("org.livefw.Daemon1", proc=host.daemon)
        yield hosts
    finally:
        for host in hosts.values():
            host.daemon.stop()
            host.bus.stop()


def _inventory(workdir: Path, fleet: dict[str, Host], ssh: dict[str, str]) -> Path:
    lines = ["[firmware_fleet]"]
    for name, host in fleet.items():
        common = (
            f"livefw_bus_address={host.bus.address} livefw_path={LIVEFW} "
            f"ansible_python_interpreter={TARGET_PYTHON}"
        )
        if name == SSH_HOST:
            lines.append(
                f"{name} ansible_connection=ssh ansible_host=127.0.0.1 "
                f"ansible_port={ssh['port']} ansible_user=root "
                f"ansible_ssh_private_key_file={ssh['key']} "
                "ansible_ssh_common_args='-o StrictHostKeyChecking=no "
                "-o UserKnownHostsFile=/dev/null' " + common
            )
        else:
            lines.append(f"{name} ansible_connection=local " + common)
    path = workdir / "inventory.ini"
    path.write_text("\n".join(lines) + "\n")
    return path


def _play(
    workdir: Path, collections: Path, inventory: Path, cabinet: Path, run: str
) -> tuple[int, dict[str, Any], str]:
    env = dict(os.environ)
    env.update(
        ANSIBLE_COLLECTIONS_PATH=str(collections),
        ANSIBLE_CALLBACK_PLUGINS=str(Path(__file__).parent / "callback_plugins"),
        ANSIBLE_CALLBACKS_ENABLED="livefw_record",
        LIVEFW_RECORD=str(workdir / f"ansible-{run}.json"),
        ANSIBLE_HOST_KEY_CHECKING="False",
        ANSIBLE_LOCAL_TEMP=str(workdir / "ansible-local"),
        ANSIBLE_REMOTE_TEMP=str(workdir / "ansible-remote"),
        ANSIBLE_FORKS="8",
        ANSIBLE_RETRY_FILES_ENABLED="False",
        ANSIBLE_NOCOLOR="1",
    )
    env.pop("LIVEFW_BUS_ADDRESS", None)
    env.pop("DBUS_SYSTEM_BUS_ADDRESS", None)
    result = subprocess.run(
        [
            str(BIN / "ansible-playbook"),
            "-i",
            str(inventory),
            "livefw.firmware.canary",
            "--diff",
            "-e",
            f"firmware_file={cabinet}",
            "-e",
            json.dumps({"health_checks": ["test -d /"]}),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        cwd=workdir,
    )
    (workdir / f"ansible-{run}.log").write_text(result.stdout + result.stderr)
    record = workdir / f"ansible-{run}.json"
    assert record.exists(), f"ansible-playbook recorded nothing: {result.stdout}{result.stderr}"
    return result.returncode, json.loads(record.read_text()), result.stdout


def _task_results(report: dict[str, Any], task: str) -> dict[str, dict[str, Any]]:
    """Per host, the result of the task called ``task`` (over every batch).

    A looped task records the loop's aggregate (``changed``, ``failed``, ``results``).
    """
    return dict(report["tasks"].get(task, {}))


def test_canary_rollout_stops_at_the_failed_batch_and_resumes(
    workdir: Path, collections: Path, sshd: dict[str, str], fleet: dict[str, Host]
) -> None:
    _need(TARGET_PYTHON, "python3")
    first = fleet["host1"]
    code = next(
        d for d in first.json("get-devices") if d["Name"].endswith("runtime code injection")
    )
    capsule = workdir / "code-6.bin"
    first.livefw("sim", "sample", "pfru/code-injection", "--version", "6", "-o", str(capsule))
    cabinet = workdir / "platform-6.cab"
    first.livefw(
        "build-cabinet", str(capsule), "--guid", code["Guids"][0], "--version", "6",
        "--protocol", "org.livefw.pfru", "--name", "Platform runtime code", "-o", str(cabinet),
    )  # fmt: skip
    inventory = _inventory(workdir, fleet, sshd)
    # serial [1, "20%", "100%"] over 8 hosts: host1, then host2, then host3..host8
    fleet["host2"].livefw("sim", "fault", "pfru", "activate-fail")

    status, report, stderr = _play(workdir, collections, inventory, cabinet, "canary")
    assert status != 0, stderr
    versions = {n: h.json("get-device", code["Id"])["Version"] for n, h in fleet.items()}
    assert versions["host1"] == "6"  # the canary went through
    assert versions["host2"] == "3"  # its activation failed ...
    assert fleet["host2"].json("get-device", code["Id"])["VersionPending"] == "6"  # still staged
    failed = _task_results(report, "Activate it")["host2"]
    assert failed.get("failed")
    assert "livefw:" in json.dumps(failed)  # livefw's message reaches the operator
    for name in (f"host{i}" for i in range(3, HOSTS + 1)):
        # the play stopped before the third batch: nothing touched these hosts
        assert versions[name] == "3", name
        assert fleet[name].json("history") == [], name
    history1 = {(e["Kind"], e["State"]) for e in fleet["host1"].json("history")}
    assert ("activate", "success") in history1
    history2 = [(e["Kind"], e["State"]) for e in fleet["host2"].json("history")]
    assert history2[0] == ("activate", "failed")
    assert ("install", "staged") in history2

    # the operator fixed host2; the same play converges the fleet and changes host1 no more
    fleet["host2"].livefw("sim", "clear-faults")
    status, report, stderr = _play(workdir, collections, inventory, cabinet, "resume")
    assert status == 0, stderr
    for name, host in fleet.items():
        assert host.json("get-device", code["Id"])["Version"] == "6", name
    install = _task_results(report, "Stage the update")
    activate = _task_results(report, "Activate it")
    assert install["host1"]["changed"] is False  # already running 6
    assert activate["host1"]["changed"] is False
    assert install["host2"]["changed"] is False  # already staged
    assert activate["host2"]["changed"] is True
    for name in (f"host{i}" for i in range(3, HOSTS + 1)):
        assert install[name]["changed"] is True, name
        assert activate[name]["changed"] is True, name
    assert SSH_HOST in install  # reached over SSH like the others
    assert "(staged 6)" in json.dumps(install["host3"].get("diff"))
    stats = report["stats"]
    assert all(s["failures"] == 0 and s["unreachable"] == 0 for s in stats.values())


def test_modules_check_mode_diff_and_errors(
    workdir: Path, collections: Path, fleet: dict[str, Host]
) -> None:
    host = fleet["host1"]
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(collections), ANSIBLE_NOCOLOR="1")
    env.pop("LIVEFW_BUS_ADDRESS", None)

    def module(name: str, args: dict[str, Any], *extra: str) -> dict[str, Any]:
        result = subprocess.run(
            [
                str(BIN / "ansible"),
                "localhost",
                "-c",
                "local",
                "-o",
                "-e",
                f"ansible_python_interpreter={TARGET_PYTHON}",
                "-m",
                f"livefw.firmware.{name}",
                "-a",
                json.dumps(args),
                *extra,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        text = result.stdout
        reply = dict(json.loads(text[text.index("{") :]))
        # "localhost | FAILED! => {...}", "| CHANGED =>", "| SUCCESS =>"
        reply["failed"] = "| FAILED!" in text[: text.index("{")]
        return reply

    common = {"bus_address": host.bus.address, "livefw_path": LIVEFW}
    facts = module("livefw_facts", common)["ansible_facts"]["livefw"]
    assert {p["Name"] for p in facts["plugins"]} >= {"pfru", "lfa", "uefi_capsule"}
    lfa = next(d for d in facts["devices"] if "RMM" in d["Name"])
    host.livefw("sim", "stage", "rmm", "--version", "0.9")
    host.livefw("refresh")
    planned = module("livefw_activate", {**common, "pending": True}, "--check")
    assert planned["changed"] is True
    assert {r["state"] for r in planned["results"]} == {"would-activate"}
    assert lfa["Id"] in {r["device_id"] for r in planned["results"]}
    assert host.json("get-device", lfa["Id"])["Version"] == "0.7"  # check mode changed nothing
    done = module("livefw_activate", {**common, "device": lfa["Id"]})
    assert done["results"][0]["state"] == "success"
    again = module("livefw_activate", {**common, "device": lfa["Id"]})
    assert again["changed"] is False
    missing = module("livefw_activate", {**common, "device": "no-such-device"})
    assert missing["failed"] is True
    assert missing["rc"] == 3
    assert missing["msg"].startswith("livefw: ")
    luo = {**common, "name": "vmm-guests", "label": "test"}
    assert module("livefw_liveupdate", luo)["changed"] is True
    assert module("livefw_liveupdate", luo)["changed"] is False
    listed = module("livefw_liveupdate", {**common, "state": "query"})["sessions"]
    assert [s["name"] for s in listed] == ["vmm-guests"]
    assert module("livefw_liveupdate", {**luo, "state": "absent"})["changed"] is True
    code = next(d for d in facts["devices"] if d["Name"].endswith("runtime code injection"))
    capsule = workdir / "code-7.bin"
    host.livefw("sim", "sample", "pfru/code-injection", "--version", "7", "-o", str(capsule))
    install = {**common, "src": str(capsule), "device": code["Id"], "version": "7"}
    before = host.json("history")
    planned = module("livefw_install", install, "--check")
    assert planned["changed"] is True
    assert planned["targets"][0]["action"] == "install"
    assert host.json("history") == before  # check mode staged nothing
    staged = module("livefw_install", install)
    assert staged["changed"] is True
    assert staged["entry"]["State"] == "staged"
    assert module("livefw_install", install)["changed"] is False  # already staged
    broken = workdir / "broken.cab"
    broken.write_bytes(b"MSCF" + bytes(60))
    refused = module("livefw_install", {**common, "src": str(broken)})
    assert refused["failed"] is True
    assert refused["rc"] == 8

    # from the host's own directory remote: the newest release, idempotent
    capsule8 = workdir / "code-8.bin"
    host.livefw("sim", "sample", "pfru/code-injection", "--version", "8", "-o", str(capsule8))
    host.livefw(
        "build-cabinet", str(capsule8), "--guid", code["Guids"][0], "--version", "8",
        "--protocol", "org.livefw.pfru", "-o", str(workdir / "host1/firmware/code-8.cab"),
    )  # fmt: skip
    # a device with a staged update is offered nothing newer until it is activated
    assert module("livefw_activate", {**common, "device": code["Id"]})["changed"] is True
    remote = {**common, "from_remote": True}
    planned = module("livefw_install", remote, "--check")
    assert planned["changed"] is True, planned
    assert [t["version"] for t in planned["targets"] if t["device_id"] == code["Id"]] == ["8"]
    done = module("livefw_install", remote)
    assert done["changed"] is True
    assert host.json("get-device", code["Id"])["VersionPending"] == "8"
    assert module("livefw_install", remote)["changed"] is False
