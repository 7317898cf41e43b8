"""Real fwupd clients against livefwd's org.freedesktop.fwupd on a private bus.

Debian's ``fwupd`` package provides fwupdmgr (and libfwupd); only its client runs:
the fwupd daemon is never started, and the test bus loads no service directories,
so it cannot be activated. Skipped when fwupdmgr is not installed (``make test``
installs it in CI; ``make test-compat`` installs and runs these on demand).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from livefw.testing import Cli, DaemonProcess, PolkitMock, PrivateBus

pytestmark = [
    pytest.mark.skipif(
        shutil.which("fwupdmgr") is None,
        reason="fwupdmgr is not installed (Debian package fwupd; `make test-compat` installs it)",
    ),
    pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed"),
]

PFRU_CODE_INJECTION_GUID = "b2f84b79-7b6e-4e45-885f-3fb9bb185402"
SYSTEM_FIRMWARE_GUID = "ddc0ee61-e7f0-4e7d-acc5-c070a398838e"


class Compat:
    """livefwd --fwupd-compat with a test PKI, plus helpers to run fwupdmgr."""

    def __init__(self, bus: PrivateBus, daemon: DaemonProcess, cli: Cli, work: Path) -> None:
        self.bus = bus
        self.daemon = daemon
        self.cli = cli
        self.work = work
        self.cert = str(work / "keys" / "vendor.pem")
        self.key = str(work / "keys" / "vendor.key")

    def fwupdmgr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = self.bus.env()
        env["XDG_CACHE_HOME"] = str(self.work / "cache")
        env["HOME"] = str(self.work)
        env.pop("FWUPD_DBUS_SOCKET", None)
        result = subprocess.run(
            ["fwupdmgr", *args],
            capture_output=True,
            text=True,
            env=env,
            stdin=subprocess.DEVNULL,
            timeout=180,
            cwd=self.work,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"fwupdmgr {' '.join(args)} exited {result.returncode}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}\n"
                f"----- livefwd log -----\n{self.daemon.log()[-4000:]}"
            )
        return result

    def devices(self) -> dict[str, dict[str, Any]]:
        out = self.fwupdmgr("get-devices", "--json").stdout
        return {d["Name"]: d for d in json.loads(out)["Devices"]}

    def cabinet(self, device: str, guid: str, version: str, name: str, signed: bool = True) -> str:
        payload = str(self.work / f"{name}.bin")
        self.cli("sim", "sample", device, "--version", version, "-o", payload)
        cab = str(self.work / f"{name}.cab")
        sign = ["--sign-cert", self.cert, "--sign-key", self.key] if signed else []
        self.cli(
            "build-cabinet", payload, "--guid", guid, "--version", version,
            "--id", f"org.example.{name}", "--name", name, *sign, "-o", cab,
        )  # fmt: skip
        return cab


@pytest.fixture
def compat(
    daemon_factory: Callable[..., DaemonProcess],
    polkit: PolkitMock,
    private_bus: PrivateBus,
    cli: Cli,
    tmp_path: Path,
) -> Compat:
    keys = tmp_path / "keys"
    keys.mkdir()
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=vendor", "-keyout", str(keys / "vendor.key"),
            "-out", str(keys / "vendor.pem"),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    (tmp_path / "pki").mkdir()
    shutil.copy(keys / "vendor.pem", tmp_path / "pki" / "vendor.pem")
    (tmp_path / "remotes.d").mkdir()
    config = (
        f'[install]\npki_dir = "{tmp_path / "pki"}"\nremotes_dir = "{tmp_path / "remotes.d"}"\n'
    )
    daemon = daemon_factory(extra_args=["--fwupd-compat"], config_text=config)
    private_bus.wait_for_name("org.freedesktop.fwupd", proc=daemon)
    return Compat(private_bus, daemon, cli, tmp_path)


def test_get_devices_shows_the_simulated_devices(compat: Compat, cli: Cli) -> None:
    devices = compat.devices()
    native = {d["Name"]: d for d in json.loads(cli("get-devices", "--json").stdout)}
    pfru = devices["Platform firmware runtime code injection"]
    assert pfru["Version"] == native[pfru["Name"]]["Version"] == "3"
    assert pfru["DeviceId"] == native[pfru["Name"]]["Id"]
    assert pfru["Plugin"] == "pfru"
    assert pfru["Protocols"] == ["org.livefw.pfru"]
    assert set(pfru["Flags"]) == {"internal", "updatable"}
    assert PFRU_CODE_INJECTION_GUID in pfru["Guid"]
    system = devices["System Firmware"]
    assert set(system["Flags"]) == {"internal", "updatable"}  # needs-reboot once scheduled
    assert system["Version"] == native["System Firmware"]["Version"]
    lfa = devices["TF-A BL31 runtime"]
    assert "needs-activation" in lfa["Flags"]
    assert "needs-reboot" not in lfa["Flags"]
    # an image the platform staged: gnome-firmware and fwupdmgr say what to run
    assert lfa["UpdateError"].startswith("Firmware 2.14 is staged and waits for activation")
    plugins = {d["Plugin"] for d in devices.values()}
    assert plugins == {"pfru", "uefi_capsule", "lfa"}  # fwctl and liveupdate stay off


def test_install_cabinets_activate_and_history(compat: Compat) -> None:
    pfru_cab = compat.cabinet("pfru/code-injection", PFRU_CODE_INJECTION_GUID, "4", "pfru")
    bios_cab = compat.cabinet(SYSTEM_FIRMWARE_GUID, SYSTEM_FIRMWARE_GUID, "65587", "bios")
    assert compat.fwupdmgr("install", pfru_cab, "--no-reboot-check", "--json").stdout == ""
    compat.fwupdmgr("install", bios_cab, "--no-reboot-check")
    devices = compat.devices()
    pfru = devices["Platform firmware runtime code injection"]
    assert set(pfru["Flags"]) == {"internal", "needs-activation", "updatable-hidden"}
    assert pfru["UpdateState"] == 1  # pending: waits for Activate
    system = devices["System Firmware"]
    assert "needs-reboot" in system["Flags"]
    assert system["UpdateState"] == 4  # needs-reboot

    out = compat.fwupdmgr("activate", pfru["DeviceId"]).stdout
    assert "Activating firmware update for Platform firmware runtime code injection" in out
    pfru = compat.devices()["Platform firmware runtime code injection"]
    assert pfru["Version"] == "4"
    assert set(pfru["Flags"]) == {"internal", "updatable"}

    history = json.loads(compat.fwupdmgr("get-history", "--json").stdout)["Devices"]
    by_name = {d["Name"]: d for d in history}
    assert by_name["Platform firmware runtime code injection"]["UpdateState"] == 2
    (release,) = by_name["Platform firmware runtime code injection"]["Releases"]
    assert release["AppstreamId"] == "org.example.pfru"
    assert release["Version"] == "4"
    assert by_name["System Firmware"]["UpdateState"] == 4
    assert by_name["System Firmware"]["Releases"][0]["Version"] == "65587"
    assert "historical" in by_name["System Firmware"]["Flags"]

    # the simulated reboot applies the capsule; the next livefwd settles the row
    compat.cli("sim", "reboot")
    compat.daemon.wait_exit(60)
    compat.daemon.start()
    compat.bus.wait_for_name("org.freedesktop.fwupd", proc=compat.daemon)
    assert compat.devices()["System Firmware"]["Version"] == "65587"
    history = json.loads(compat.fwupdmgr("get-history", "--json").stdout)["Devices"]
    assert {d["Name"]: d for d in history}["System Firmware"]["UpdateState"] == 2


def test_a_staged_update_says_how_to_activate_it(compat: Compat) -> None:
    """A PFRU capsule staged, waiting for activation: what fwupdmgr get-devices shows.

    As fwupd 2.0.20 for a device with needs-activation (checked with peer-bench):
    updatable swapped for updatable-hidden, "Device update needs activation"; plus
    livefw's Update Error saying what to run, and no problem (fwupdmgr would print
    the problem instead of the error). The device's first Release carries the
    UpdateMessage gnome-software 43.5 shows after its Install (tests/gui).
    """
    cab = compat.cabinet("pfru/code-injection", PFRU_CODE_INJECTION_GUID, "4", "pfru")
    compat.fwupdmgr("install", cab, "--no-reboot-check")
    text = compat.fwupdmgr("get-devices").stdout
    block = text[text.index("Platform firmware runtime code injection") :]
    block = block[: block.index("Platform firmware runtime driver update")]
    assert "Device update needs activation" in block, text
    assert "Update State:       Pending" in block, text
    assert "Firmware 4 is staged and waits for activation: run" in block, text
    pfru = compat.devices()["Platform firmware runtime code injection"]
    assert "Problems" not in pfru
    # libfwupd reads the device's Release (gnome-software's dialog); fwupdmgr --json
    # lists it with the releases it asks GetReleases for
    assert any(
        "fwupdmgr activate" in release.get("UpdateMessage", "")
        for release in pfru.get("Releases", [])
    ), pfru
    compat.fwupdmgr("activate", pfru["DeviceId"])
    pfru = compat.devices()["Platform firmware runtime code injection"]
    assert "UpdateError" not in pfru
    assert "needs-activation" not in pfru["Flags"]
    assert not pfru.get("Releases")


def test_the_same_cabinet_twice_is_version_same(compat: Compat) -> None:
    cab = compat.cabinet("pfru/code-injection", PFRU_CODE_INJECTION_GUID, "3", "same")
    result = compat.fwupdmgr("install", cab, "--no-reboot-check", "--json", check=False)
    assert result.returncode != 0
    error = json.loads(result.stdout)["Error"]
    assert error["Code"] == 2, error  # FWUPD_ERROR_VERSION_SAME


def test_an_unsigned_cabinet_is_refused_as_invalid_file(compat: Compat) -> None:
    cab = compat.cabinet("pfru/code-injection", PFRU_CODE_INJECTION_GUID, "4", "u", signed=False)
    result = compat.fwupdmgr("install", cab, "--no-reboot-check", "--json", check=False)
    assert result.returncode == 1
    error = json.loads(result.stdout)["Error"]
    assert error["Code"] == 7, error  # FWUPD_ERROR_INVALID_FILE
    assert "not trusted" in error["Message"]
    assert (
        "needs-activation"
        not in compat.devices()["Platform firmware runtime code injection"]["Flags"]
    )


def test_blocked_and_approved_lists_bind_both_apis(compat: Compat) -> None:
    """fwupdmgr's lists refuse the file on fwupd's Install and on livefw's (issue 18.4)."""
    import hashlib

    cab = compat.cabinet("pfru/code-injection", PFRU_CODE_INJECTION_GUID, "4", "listed")
    data = Path(cab).read_bytes()
    sha1, sha256 = hashlib.sha1(data).hexdigest(), hashlib.sha256(data).hexdigest()
    refusals = {
        "blocked": f"Firmware {sha1} is blocked (fwupdmgr unblock-firmware to allow it)",
        "unapproved": f"Firmware {sha1} is not in the approved list",
    }

    def refused(why: str) -> None:
        fwupd = compat.fwupdmgr("install", cab, "--no-reboot-check", "--json", check=False)
        assert fwupd.returncode == 1, fwupd
        error = json.loads(fwupd.stdout)["Error"]
        assert error["Code"] == 10, error  # FWUPD_ERROR_NOT_SUPPORTED
        assert refusals[why] in error["Message"]
        native = compat.cli("install", cab, check=False)
        assert native.returncode != 0, native
        assert refusals[why] in native.stderr, native.stderr
        as_json = json.loads(compat.cli("install", cab, "--json", check=False).stderr)
        assert as_json["error"] == "NotSupported", as_json
        flags = compat.devices()["Platform firmware runtime code injection"]["Flags"]
        assert "needs-activation" not in flags

    compat.fwupdmgr("block-firmware", sha256)
    refused("blocked")
    compat.fwupdmgr("unblock-firmware", sha256)
    compat.fwupdmgr("set-approved-firmware", "b" * 64)
    refused("unapproved")
    compat.fwupdmgr("set-approved-firmware", f"{'b' * 64},{sha1}")
    compat.cli("install", cab)  # approved: the native API installs it
    flags = compat.devices()["Platform firmware runtime code injection"]["Flags"]
    assert "needs-activation" in flags


def test_modify_config_writes_a_dropin_and_applies_it_at_once(
    compat: Compat, polkit: PolkitMock
) -> None:
    """fwupdmgr modify-config/reset-config onto livefw.conf.d/fwupd.conf (issue 18.4)."""
    assert compat.daemon.config is not None
    admin = Path(compat.daemon.config).read_text()
    dropin = Path(compat.daemon.config + ".d") / "fwupd.conf"
    unsigned = compat.cabinet("pfru/code-injection", PFRU_CODE_INJECTION_GUID, "4", "u", False)

    def install() -> subprocess.CompletedProcess[str]:
        return compat.fwupdmgr("install", unsigned, "--no-reboot-check", "--json", check=False)

    assert install().returncode == 1  # only_trusted (the default) refuses it
    compat.fwupdmgr("modify-config", "fwupd", "OnlyTrusted", "false")
    assert "only_trusted = false" in dropin.read_text()
    assert Path(compat.daemon.config).read_text() == admin  # the admin's file untouched
    assert install().returncode == 0, "applied without a restart"
    compat.fwupdmgr("reset-config", "fwupd")
    assert not dropin.exists()
    again = compat.cabinet("pfru/code-injection", PFRU_CODE_INJECTION_GUID, "5", "u5", False)
    result = compat.fwupdmgr("install", again, "--no-reboot-check", "--json", check=False)
    assert json.loads(result.stdout)["Error"]["Code"] == 7  # InvalidFile: untrusted again

    # what fwupd 2.0.20 answers (run against it with the peer-bench tool; docs/compat.md)
    for args, code, says in [
        (("fwupd", "Foo", "bar"), 3, "key Foo not supported for [fwupd]"),
        (("nosuch", "Foo", "bar"), 3, "no plugin nosuch found"),
        (("pfru", "Foo", "bar"), 1, "config key Foo not supported"),
        (("fwupd", "IdleTimeout", "10"), 1, "livefwd has no idle exit"),
        (("fwupd", "OnlyTrusted", "banana"), 1, "OnlyTrusted must be true or false"),
    ]:
        result = compat.fwupdmgr("modify-config", *args, check=False)
        assert (result.returncode, says in result.stdout + result.stderr) == (code, True), result
    assert not dropin.exists()

    polkit.allow_unknown(False)
    polkit.set_allowed(["org.freedesktop.fwupd.reset-config"])
    result = compat.fwupdmgr(
        "modify-config", "fwupd", "OnlyTrusted", "false", "--json", check=False
    )
    assert json.loads(result.stdout)["Error"]["Code"] == 4  # FWUPD_ERROR_AUTH_FAILED
    assert not dropin.exists()


def test_install_checks_fwupds_polkit_action(compat: Compat, polkit: PolkitMock) -> None:
    cab = compat.cabinet("pfru/code-injection", PFRU_CODE_INJECTION_GUID, "4", "auth")
    polkit.allow_unknown(False)
    polkit.set_allowed(["org.livefw.daemon1.install"])  # livefw's own id does not count
    result = compat.fwupdmgr("install", cab, "--no-reboot-check", "--json", check=False)
    assert result.returncode == 1
    assert json.loads(result.stdout)["Error"]["Code"] == 4  # FWUPD_ERROR_AUTH_FAILED
    polkit.set_allowed(["org.freedesktop.fwupd.update-internal-trusted"])
    compat.fwupdmgr("install", cab, "--no-reboot-check", "--json")


def test_a_directory_remote_feeds_get_updates(compat: Compat, cli: Cli) -> None:
    folder = compat.work / "fleet firmware%20#1"  # a URL must not change the path
    folder.mkdir()
    for version in ("4", "5"):
        cab = compat.cabinet(
            "pfru/code-injection", PFRU_CODE_INJECTION_GUID, version, f"pfru{version}", False
        )
        shutil.copy(cab, folder)
    (compat.work / "remotes.d" / "fleet.conf").write_text(
        f"[livefw Remote]\nEnabled=true\nTitle=Fleet\nPath={folder}\nTrusted=true\n"
    )
    updates = json.loads(compat.fwupdmgr("get-updates", "--json").stdout)["Devices"]
    (device,) = updates
    assert device["Name"] == "Platform firmware runtime code injection"
    assert "supported" in device["Flags"]
    assert [r["Version"] for r in device["Releases"]] == ["5", "4"]
    newest = device["Releases"][0]
    # issue 18 item 8: a URL libfwupd's downloader takes (gnome-software downloads
    # Locations[0]; file:/// fails "network is unreachable"), and no RemoteId, so
    # install_release downloads it too instead of cutting "file://" off a path
    encoded = str(folder).replace("%", "%25").replace(" ", "%20").replace("#", "%23")
    assert newest["Locations"] == [f"file://localhost{encoded}/pfru5.cab"]
    assert "RemoteId" not in newest
    (compat.work / "pfru5.cab").unlink()  # fwupdmgr downloads into its working dir
    download = compat.fwupdmgr("download", newest["Locations"][0], check=False)
    assert download.returncode == 0, download
    assert (compat.work / "pfru5.cab").read_bytes() == (folder / "pfru5.cab").read_bytes()
    remotes = json.loads(compat.fwupdmgr("get-remotes", "--json").stdout)["Remotes"]
    assert [r["Id"] for r in remotes] == ["fleet", "lvfs"]  # lvfs: offered disabled

    # get-releases (GetReleases, which gnome-software never calls) has fwupd's form:
    # the remote's id, and file:/// that libfwupd's install_release opens as a path
    pfru_id = device["DeviceId"]
    releases = json.loads(compat.fwupdmgr("get-releases", pfru_id, "--json").stdout)
    by_version = {r["Version"]: r for r in releases["Releases"]}
    assert by_version["4"]["RemoteId"] == "fleet"
    assert by_version["4"]["Locations"] == [f"file://{folder}/pfru4.cab"]
    assert "Remote ID:          fleet" in compat.fwupdmgr("get-releases", pfru_id).stdout
    # install DEVICE VERSION takes that release: install_release opens the file
    # itself (a space, '%' and '#' in the folder's name) and passes a memfd
    compat.fwupdmgr("install", pfru_id, "4", "--no-reboot-check", "--json")
    assert compat.devices()[device["Name"]]["UpdateState"] == 1
    compat.fwupdmgr("activate", pfru_id)

    native = json.loads(cli("get-updates", "--json").stdout)
    assert [r["Version"] for r in native["Devices"][0]["Releases"]] == ["5"]
    out = cli("update").stdout
    assert "4 -> 5: staged" in out
    result = cli("get-updates", check=False)
    assert result.returncode == 7  # NOTHING_TO_DO
    assert "waits for activation" in result.stdout
