"""Cabinet installs through the engine, trust, and directory remotes (sim machine)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from livefw.cabinet import Requirement
from livefw.cabinet_build import make_cabinet, make_metainfo
from livefw.config import Config, InstallSection
from livefw.engine import Engine
from livefw.errors import InvalidFile, NotFound, NothingToDo, VersionNewer, VersionSame
from livefw.jcat import sign_files
from livefw.kernel.sim.machine import SimMachine
from livefw.kernel.sim.provider import SimProvider
from livefw.plugin import InstallOptions, Payload, UpdateState
from livefw.plugins.pfru import PfruPlugin
from livefw.plugins.uefi_capsule import UefiCapsulePlugin
from livefw.remotes import load_remotes

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")

CODE_INJECTION = "pfru/code-injection"


class Env:
    """An engine on the default sim machine with a test PKI and a remotes dir."""

    def __init__(self, tmp_path: Path, engine: Engine, cert: str, key: str) -> None:
        self.tmp = tmp_path
        self.engine = engine
        self.cert = cert
        self.key = key

    @property
    def machine(self) -> SimMachine:
        provider = self.engine.provider
        assert isinstance(provider, SimProvider)
        return provider.machine

    def device(self, plugin: str, name_part: str = "") -> Any:
        return next(
            d for d in self.engine.devices.values() if d.plugin == plugin and name_part in d.name
        )

    def capsule(self, component: str, key: str, version: str) -> bytes:
        return self.machine.components[component].sample(key, version, None)

    def cab(
        self,
        payload: bytes,
        guid: str,
        version: str,
        *,
        signed: bool = True,
        appstream_id: str = "org.example.pfru",
        **metainfo: Any,
    ) -> bytes:
        files = {
            "firmware.bin": payload,
            "firmware.metainfo.xml": make_metainfo(
                appstream_id=appstream_id,
                guids=[guid],
                version=version,
                payload_name="firmware.bin",
                payload=payload,
                **metainfo,
            ),
        }
        if signed:
            files["firmware.jcat"] = sign_files(files, self.cert, self.key)
        return make_cabinet(files)

    def pfru_cab(self, version: str, **kwargs: Any) -> bytes:
        device = self.device("pfru", "code injection")
        payload = self.capsule("pfru", CODE_INJECTION, version)
        return self.cab(payload, device.guids[0], version, **kwargs)

    def remote(self, name: str, trusted: bool, enabled: bool = True) -> Path:
        folder = self.tmp / "firmware" / name
        folder.mkdir(parents=True)
        (self.tmp / "remotes.d" / f"{name}.conf").write_text(
            f"[livefw Remote]\nEnabled={str(enabled).lower()}\nTitle={name} firmware\n"
            f"Path={folder}\nTrusted={str(trusted).lower()}\n"
        )
        return folder


@pytest.fixture
async def env(tmp_path: Path) -> Env:
    keys = tmp_path / "keys"
    keys.mkdir()
    cert, key = keys / "vendor.pem", keys / "vendor.key"
    subprocess.run(  # noqa: ASYNC221 - fixture setup, once
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=vendor", "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    pki = tmp_path / "pki"
    pki.mkdir()
    shutil.copy(cert, pki / "vendor.pem")
    (tmp_path / "remotes.d").mkdir()
    config = Config(
        install=InstallSection(pki_dir=str(pki), remotes_dir=str(tmp_path / "remotes.d"))
    )
    machine = SimMachine.create(str(tmp_path / "sim"), "default")
    engine = Engine(SimProvider(machine), config, str(tmp_path), [PfruPlugin, UefiCapsulePlugin])
    await engine.start()
    return Env(tmp_path, engine, str(cert), str(key))


async def install(env: Env, data: bytes, target: str = "", **options: bool) -> list[Any]:
    return await env.engine.install_file(target, Payload(data, "fw.cab"), InstallOptions(**options))


async def test_a_signed_cabinet_stages_a_pfru_update(env: Env) -> None:
    device = env.device("pfru", "code injection")
    assert device.version == "3"
    (entry,) = await install(env, env.pfru_cab("4", protocol="org.livefw.pfru"))
    assert entry.state == "staged"
    assert entry.data["appstream-id"] == "org.example.pfru"
    assert entry.data["trusted"] is True
    assert len(entry.data["cabinet-sha256"]) == 64
    assert device.update_state == UpdateState.PENDING
    assert "needs-activation" in device.flags
    await env.engine.activate(device.id)
    assert device.version == "4"


async def test_an_unsigned_cabinet_is_refused_and_nothing_is_written(env: Env) -> None:
    device = env.device("pfru", "code injection")
    with pytest.raises(InvalidFile, match="signature missing or not trusted"):
        await install(env, env.pfru_cab("4", signed=False))
    assert env.engine.history.entries() == []
    assert "needs-activation" not in device.flags


async def test_only_trusted_off_accepts_unsigned_cabinets(env: Env) -> None:
    env.engine.releases.only_trusted = False
    (entry,) = await install(env, env.pfru_cab("4", signed=False))
    assert entry.state == "staged"
    assert entry.data["trusted"] is False


async def test_a_cabinet_signed_by_an_unknown_key_is_refused(env: Env) -> None:
    shutil.rmtree(env.engine.releases.pki_dir)
    with pytest.raises(InvalidFile, match="not trusted"):
        await install(env, env.pfru_cab("4"))


async def test_version_rules_and_options(env: Env) -> None:
    with pytest.raises(VersionSame):
        await install(env, env.pfru_cab("3"))
    (entry,) = await install(env, env.pfru_cab("3"), allow_reinstall=True)
    assert entry.state == "staged"


async def test_older_is_refused(env: Env) -> None:
    with pytest.raises(VersionNewer):
        await install(env, env.pfru_cab("2"))
    assert env.engine.history.entries() == []


async def test_metainfo_and_payload_versions_must_agree(env: Env) -> None:
    device = env.device("pfru", "code injection")
    payload = env.capsule("pfru", CODE_INJECTION, "5")
    with pytest.raises(InvalidFile, match="inconsistent"):
        await install(env, env.cab(payload, device.guids[0], "4"))


async def test_requirements_are_honoured(env: Env) -> None:
    device = env.device("pfru", "code injection")
    payload = env.capsule("pfru", CODE_INJECTION, "4")
    needs_newer = env.cab(
        payload, device.guids[0], "4", requires=[Requirement("firmware", compare="ge", version="9")]
    )
    with pytest.raises(InvalidFile, match="requires ge 9"):
        await install(env, needs_newer)
    fine = env.cab(
        payload, device.guids[0], "4", requires=[Requirement("firmware", compare="ge", version="3")]
    )
    (entry,) = await install(env, fine)
    assert entry.state == "staged"


async def test_a_protocol_mismatch_is_refused(env: Env) -> None:
    with pytest.raises(Exception, match=r"protocol org\.uefi\.capsule"):
        await install(env, env.pfru_cab("4", protocol="org.uefi.capsule"))


async def test_a_cabinet_for_no_device(env: Env) -> None:
    payload = env.capsule("pfru", CODE_INJECTION, "4")
    with pytest.raises(NotFound, match="no device"):
        await install(env, env.cab(payload, "00000000-1111-2222-3333-444444444444", "4"))


async def test_a_uefi_cabinet_is_staged_for_the_reboot(env: Env) -> None:
    device = env.device("uefi_capsule", "System")
    new = str(int(device.version) + 1)
    payload = env.capsule("uefi_capsule", device.physical_id, new)
    cab = env.cab(payload, device.guids[0], new, appstream_id="org.example.bios")
    (entry,) = await install(env, cab, device.id)
    assert entry.state == "staged"
    assert device.update_state == UpdateState.NEEDS_REBOOT


async def test_raw_capsules_still_install(env: Env) -> None:
    (entry,) = await install(env, env.capsule("pfru", CODE_INJECTION, "4"))
    assert entry.state == "staged"
    assert "appstream-id" not in entry.data


async def test_a_trusted_directory_remote_feeds_upgrades(env: Env) -> None:
    folder = env.remote("fleet", trusted=True)
    for version in ("4", "5", "3"):
        (folder / f"pfru-{version}.cab").write_bytes(env.pfru_cab(version, signed=False))
    (folder / "broken.cab").write_bytes(b"MSCF broken")
    device = env.device("pfru", "code injection")
    releases = await env.engine.releases.releases(device)
    assert [c.release.version for c in releases] == ["5", "4", "3"]
    upgrades = await env.engine.releases.upgrades(device)
    assert [c.release.version for c in upgrades] == ["5", "4"]
    newest = upgrades[0]
    assert newest.trusted
    assert newest.remote is not None
    assert newest.remote.id == "fleet"
    data = await env.engine.releases.read_location(newest)
    (entry,) = await install(env, data, device.id)
    assert entry.version_new == "5"
    with pytest.raises(NothingToDo, match="waits for activation"):
        await env.engine.releases.upgrades(device)


async def test_an_untrusted_remote_offers_but_install_refuses(env: Env) -> None:
    folder = env.remote("inbox", trusted=False)
    (folder / "pfru-4.cab").write_bytes(env.pfru_cab("4", signed=False))
    device = env.device("pfru", "code injection")
    (candidate,) = await env.engine.releases.upgrades(device)
    assert not candidate.trusted
    with pytest.raises(InvalidFile, match="not trusted"):
        await install(env, await env.engine.releases.read_location(candidate), device.id)


async def test_no_releases_and_disabled_remotes(env: Env) -> None:
    folder = env.remote("off", trusted=True, enabled=False)
    (folder / "pfru-4.cab").write_bytes(env.pfru_cab("4"))
    device = env.device("pfru", "code injection")
    with pytest.raises(NothingToDo, match="no releases"):
        await env.engine.releases.releases(device)
    folder = env.remote("same", trusted=True)
    (folder / "pfru-3.cab").write_bytes(env.pfru_cab("3"))
    with pytest.raises(NothingToDo, match="3=same"):
        await env.engine.releases.upgrades(device)


def test_remote_files(tmp_path: Path) -> None:
    (tmp_path / "good.conf").write_text(
        "[fwupd Remote]\nEnabled=true\nTitle=Vendor\nMetadataURI=file:///srv/fw\n"
    )
    (tmp_path / "http.conf").write_text(
        "[fwupd Remote]\nMetadataURI=https://cdn.example/firmware.xml.zst\n"
    )
    (tmp_path / "bad.conf").write_text("[livefw Remote]\nPath=relative\n")
    remotes, errors = load_remotes(str(tmp_path))
    assert [(r.id, r.path, r.trusted, r.title) for r in remotes] == [
        ("good", "/srv/fw", False, "Vendor")
    ]
    assert "not a file:// folder" in errors[str(tmp_path / "http.conf")]
    assert "not absolute" in errors[str(tmp_path / "bad.conf")]


async def test_a_certificate_added_later_is_used_without_a_restart(env: Env) -> None:
    pki = env.engine.releases.pki_dir
    saved = os.path.join(env.tmp, "saved.pem")
    shutil.move(os.path.join(pki, "vendor.pem"), saved)
    cab = env.pfru_cab("4")
    with pytest.raises(InvalidFile, match="not trusted"):
        await install(env, cab)
    shutil.copy(saved, os.path.join(pki, "vendor.pem"))
    (entry,) = await install(env, cab)
    assert entry.data["trusted"] is True
