"""Every fwupdmgr 2.0.20 subcommand against livefwd --fwupd-compat (issue 18).

One private bus and one ``livefwd --simulate --fwupd-compat`` serve the whole sweep;
the cases run in the order listed (some leave state the next ones read: a staged
PFRU update, history). Each case states the exit code fwupdmgr ends with and a
phrase of its output; docs/compat.md has the same table with what fwupd does and,
where livefw differs, why. ``quit`` and ``inhibit`` get daemons of their own.

Marked slow (about a minute): ``make test-compat`` runs it, ``make test`` does not.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from livefw.testing import Cli, DaemonProcess, PrivateBus

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("fwupdmgr") is None,
        reason="fwupdmgr is not installed (Debian package fwupd; `make test-compat` installs it)",
    ),
]

PFRU_GUID = "b2f84b79-7b6e-4e45-885f-3fb9bb185402"
PFRU_NAME = "Platform firmware runtime code injection"
LFA_NAME = "TF-A BL31 runtime"
CHECKSUM = "0123456789abcdef0123456789abcdef01234567"


class Sweep:
    """The shared daemon, its bus and helpers to run fwupdmgr and livefw."""

    def __init__(self, work: Path) -> None:
        self.work = work
        (work / "bus").mkdir()
        (work / "remotes.d").mkdir()
        (work / "firmware").mkdir()
        self.config = work / "livefw.conf"
        self.config.write_text(
            f"[auth]\nfallback_uids = [0, {os.getuid()}]\n"
            f'[install]\nonly_trusted = false\nremotes_dir = "{work / "remotes.d"}"\n'
        )
        self.bus = PrivateBus(str(work / "bus")).start()
        self.daemon = DaemonProcess(
            self.bus, str(work / "state"), ["--fwupd-compat"], str(self.config)
        )
        self.cli = Cli(self.bus, str(work / "state"))
        self.ids: dict[str, str] = {}

    def start(self) -> None:
        self.daemon.start()
        self.bus.wait_for_name("org.freedesktop.fwupd", proc=self.daemon)

    def stop(self) -> None:
        self.daemon.stop()
        self.bus.stop()

    def env(self) -> dict[str, str]:
        env = self.bus.env()
        env["HOME"] = str(self.work)
        env["XDG_CACHE_HOME"] = str(self.work / "cache")
        env.pop("FWUPD_DBUS_SOCKET", None)
        return env

    def fwupdmgr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["fwupdmgr", *args],
            capture_output=True,
            text=True,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            cwd=self.work,
        )

    def cabinet(self, version: str, folder: Path | None = None) -> str:
        payload = str(self.work / f"pfru{version}.bin")
        self.cli("sim", "sample", "pfru/code-injection", "--version", version, "-o", payload)
        cab = str((folder or self.work) / f"pfru{version}.cab")
        self.cli(
            "build-cabinet", payload, "--guid", PFRU_GUID, "--version", version,
            "--id", "org.example.pfru", "--name", f"PFRU {version}", "-o", cab,
        )  # fmt: skip
        return cab


@pytest.fixture(scope="module")
def sweep() -> Iterator[Sweep]:
    work = Path(tempfile.mkdtemp(prefix="livefw-sweep."))
    state = Sweep(work)
    try:
        state.start()
        devices = json.loads(state.fwupdmgr("get-devices", "--json").stdout)["Devices"]
        state.ids = {d["Name"]: d["DeviceId"] for d in devices}
        state.cabinet("4")
        for version in ("5", "6"):
            state.cabinet(version, work / "firmware")
        yield state
    finally:
        if os.environ.get("LIVEFW_SWEEP_LOG"):
            print(state.daemon.log()[-8000:])
        state.stop()
        shutil.rmtree(work, ignore_errors=True)


@dataclass(frozen=True)
class Case:
    """One subcommand run: arguments, fwupdmgr's exit code, a phrase of its output."""

    args: tuple[str, ...]
    code: int
    says: str = ""
    #: write the directory remote before this case
    remote: bool = False

    @property
    def id(self) -> str:
        return " ".join(self.args)[:60]


def case(*args: str, code: int = 0, says: str = "", remote: bool = False) -> Case:
    return Case(args, code, says, remote)


#: In order. {pfru} and {lfa} are the devices' ids; {cab4} a PFRU cabinet (version 4).
CASES = [
    case("--version", says="runtime   org.freedesktop.fwupd"),
    case("get-devices", says=PFRU_NAME),
    case("get-topology", says=PFRU_NAME),
    case("get-plugins"),
    case("hwids", says="Manufacturer + Family + ProductName"),
    case("security", says="Host Security ID: "),
    case("get-remotes", says="lvfs"),
    case("refresh"),
    case("report-devices", code=2, says="no URI set"),
    case("get-history", code=2, says="No history"),
    case("report-history", code=2, says="No history"),
    case("report-export", code=2, says="No history"),
    case("get-results", "{pfru}", code=2, says="no results"),
    case("get-updates", code=2, says="No updatable devices"),
    case("get-releases", "{pfru}", code=2, says="no releases for"),
    case("search", "PFRU", code=2, says="No releases match"),
    case("get-details", "{cab4}", says=PFRU_NAME),
    case("local-install", "{cab4}", "--no-reboot-check", says="Successfully"),
    case("get-devices", says="Firmware 4 is staged"),
    case("check-reboot-needed", code=2, says="No reboot is necessary"),
    case("reinstall", "{pfru}", code=2, says="no releases for"),
    case("activate", "{pfru}", says=f"Activating firmware update for {PFRU_NAME}"),
    case("activate", says=f"Activating firmware update for {LFA_NAME}"),
    case("activate", code=2, says="No firmware to activate"),
    case("get-history", says="PFRU 4 Update:"),  # the release's name, not "(null)"
    case("get-results", "{pfru}", says="Success"),
    case("report-export", says="Saved report"),
    case("report-history", code=2, says="No reports require uploading"),
    case("clear-results", "{pfru}"),
    case("clear-results", "{pfru}", code=2, says="already cleared"),
    case("get-updates", says="PFRU 6", remote=True),
    case("get-upgrades", says="PFRU 6"),
    case("get-releases", "{pfru}", says="PFRU 5"),
    case("search", "PFRU", says="PFRU 6"),
    case("upgrade", "{pfru}", "--no-reboot-check", "-y", says="Successfully"),
    case("activate", "{pfru}", says="Activating"),
    case("update", "{pfru}", "--no-reboot-check", "-y", says="the latest available firmware"),
    # issue 18 item 6: a reinstall of the running version stays activatable
    case("reinstall", "{pfru}", "--no-reboot-check", "-y", says="Successfully"),
    case("activate", "{pfru}", says=f"Activating firmware update for {PFRU_NAME}"),
    case("downgrade", "{pfru}", code=2, says="No downgrades"),
    case("switch-branch", "{pfru}", code=1, says="already on branch default"),
    case("sync", code=2, says="No devices required modification"),
    case("sync-bkc", code=2, says="No devices required modification"),
    case("verify", "{pfru}", code=1, says="cannot read their firmware back"),
    case("verify-update", "{pfru}", code=1, says="cannot be read back"),
    case("unlock", "{pfru}", code=1, says="is not locked"),
    case("device-wait", "{pfru}", says=""),
    case("get-approved-firmware", says="There is no approved firmware"),
    case("set-approved-firmware", CHECKSUM),
    case("get-approved-firmware", says=CHECKSUM),
    case("get-blocked-firmware", says="There are no blocked firmware files"),
    case("block-firmware", CHECKSUM, says="Blocking firmware"),
    case("get-blocked-firmware", says=CHECKSUM),
    case("unblock-firmware", CHECKSUM, says="Unblocking firmware"),
    case("get-bios-settings", code=1, says="does not manage BIOS settings"),
    case("get-bios-setting", code=1, says="does not manage BIOS settings"),
    case("set-bios-setting", "Name", "Value", code=1, says="does not manage BIOS settings"),
    case("security-fix", "org.fwupd.hsi.Uefi.SecureBoot", code=1, says="only reports it"),
    case("security-undo", "org.fwupd.hsi.Uefi.SecureBoot", code=1, says="nothing to undo"),
    case("modify-config", "fwupd", "Foo", "bar", code=3, says="key Foo not supported for [fwupd]"),
    case("modify-config", "fwupd", "OnlyTrusted", "true", says="Restart the daemon"),
    case("reset-config", "fwupd", says="Restart the daemon"),
    case("clean-remote", "lvfs", code=2, says="no cached metadata"),
    case("enable-remote", "lvfs", code=1, says="edit lvfs.conf"),
    case("disable-remote", "fleet", code=1, says="edit fleet.conf"),
    case("modify-remote", "fleet", "Enabled", "false", code=1, says="edit fleet.conf"),
    case("emulation-tag", "{pfru}", code=1, says="is not supported"),
    case("emulation-untag", "{pfru}", code=1, says="is not supported"),
    case("emulation-save", "emulation.zip", code=1, says="no device emulation"),
    case("emulation-load", "emulation.zip", code=1, says="no device emulation"),
    case("device-emulate", "device.json", code=1, says="device.json"),
    case("device-test", "device.json", code=1, says="device.json"),
    case("download", "file:///nonexistent/firmware.cab", code=101, says="network is unreachable"),
    case("install", "{pfru}", "7", code=1, says="Unable to locate release 7"),
]


@pytest.mark.parametrize("spec", CASES, ids=[c.id for c in CASES])
def test_subcommand(sweep: Sweep, spec: Case) -> None:
    if spec.remote:
        (sweep.work / "remotes.d" / "fleet.conf").write_text(
            f"[livefw Remote]\nEnabled=true\nTitle=Fleet\nPath={sweep.work / 'firmware'}\n"
        )
    names = {"pfru": sweep.ids[PFRU_NAME], "lfa": sweep.ids[LFA_NAME]}
    names["cab4"] = str(sweep.work / "pfru4.cab")
    args = [a.format(**names) for a in spec.args]
    result = sweep.fwupdmgr(*args)
    output = result.stdout + result.stderr
    assert (result.returncode, spec.says in output) == (spec.code, True), (
        f"fwupdmgr {' '.join(args)} exited {result.returncode}, wanted {spec.code} "
        f"saying {spec.says!r}\n{output}\n----- livefwd log -----\n{sweep.daemon.log()[-3000:]}"
    )


def test_every_subcommand_has_a_case() -> None:
    """The sweep covers each subcommand of the installed fwupdmgr's --help."""
    helptext = subprocess.run(
        ["fwupdmgr", "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    listed = {
        line.split()[0]
        for line in helptext.splitlines()
        if line.startswith("  ") and not line.startswith("   ") and line.split()[0][0].isalpha()
    }
    listed.discard("fwupdmgr")  # the usage line
    covered = {c.args[0] for c in CASES} | {"quit", "inhibit", "uninhibit"}
    assert listed - covered == set()


@pytest.fixture
def own() -> Iterator[Sweep]:
    work = Path(tempfile.mkdtemp(prefix="livefw-own."))
    state = Sweep(work)
    try:
        state.start()
        devices = json.loads(state.fwupdmgr("get-devices", "--json").stdout)["Devices"]
        state.ids = {d["Name"]: d["DeviceId"] for d in devices}
        yield state
    finally:
        state.stop()
        shutil.rmtree(work, ignore_errors=True)


def test_quit_stops_livefwd(own: Sweep) -> None:
    result = own.fwupdmgr("quit")
    assert result.returncode == 0, result.stderr
    assert own.daemon.wait_exit(30) == 0
    assert "quit_requested" in own.daemon.log()


def test_inhibit_blocks_installs_on_both_apis_until_the_client_leaves(own: Sweep) -> None:
    cab = own.cabinet("4")
    holder = subprocess.Popen(
        ["fwupdmgr", "inhibit", "kernel upgrade in progress"],
        env=own.env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        devices: dict[str, dict[str, object]] = {}
        while time.monotonic() < deadline:
            out = own.fwupdmgr("get-devices", "--json").stdout
            devices = {d["Name"]: d for d in json.loads(out)["Devices"]}
            if "system-inhibit" in devices[PFRU_NAME].get("Problems", []):
                break
            time.sleep(0.5)
        assert "kernel upgrade in progress" in str(devices[PFRU_NAME].get("UpdateError"))
        refused = own.fwupdmgr("local-install", cab, "--no-reboot-check")
        assert refused.returncode == 1
        assert "inhibited" in refused.stdout + refused.stderr
        native = own.cli("install", cab, own.ids[PFRU_NAME], check=False)
        assert native.returncode == 6  # busy
        assert "kernel upgrade in progress" in native.stdout + native.stderr
        lfa = own.cli("activate", LFA_NAME, check=False)
        assert lfa.returncode == 6
        state = subprocess.run(
            ["busctl", f"--address={own.bus.address}", "--json=short", "call",
             "org.livefw.Daemon1", "/org/livefw/Daemon1", "org.livefw.Daemon1.Manager",
             "GetHostState"],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        inhibits = json.loads(state.stdout)["data"][0]["Inhibits"]["data"]
        assert list(inhibits.values()) == ["kernel upgrade in progress"]
    finally:
        holder.send_signal(signal.SIGINT)
        holder.wait(30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if own.cli("install", cab, own.ids[PFRU_NAME], check=False).returncode == 0:
            break
        time.sleep(0.5)
    else:
        pytest.fail("the inhibit outlived its client")


def test_get_details_marks_supported_only_when_a_remote_has_the_release(own: Sweep) -> None:
    cab = own.cabinet("4")

    def flags() -> list[str]:
        out = own.fwupdmgr("get-details", cab, "--json").stdout
        (device,) = [d for d in json.loads(out)["Devices"] if d.get("Name") == PFRU_NAME]
        return list(device["Flags"])

    assert "supported" not in flags()
    folder = own.work / "firmware"
    shutil.copy(cab, folder)
    (own.work / "remotes.d" / "fleet.conf").write_text(
        f"[livefw Remote]\nEnabled=true\nTitle=Fleet\nPath={folder}\n"
    )
    assert "supported" in flags()
