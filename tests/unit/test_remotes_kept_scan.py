"""The remotes scan is kept until inotify sees a change (issue 17 item 3; livefw.fswatch)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from livefw import releases
from livefw.cabinet_build import make_cabinet, make_metainfo
from livefw.config import Config, InstallSection
from livefw.fswatch import MAX_FOLDERS, FolderWatch
from livefw.releases import ReleaseService

GUID = "b2f84b79-7b6e-4e45-885f-3fb9bb185402"


def _watch() -> FolderWatch:
    watch = FolderWatch.create()
    assert watch is not None
    return watch


def test_a_change_in_a_folder_is_seen_and_reading_it_is_not(tmp_path: Path) -> None:
    (tmp_path / "a.cab").write_bytes(b"old")
    watch = _watch()
    try:
        assert watch.add(str(tmp_path))
        assert not watch.changed()
        (tmp_path / "a.cab").read_bytes()  # the scan's own reads
        os.listdir(tmp_path)
        assert not watch.changed()
        with open(tmp_path / "a.cab", "r+b") as handle:  # rewritten in place
            handle.write(b"new")
        assert watch.changed()
        assert watch.changed()  # sticky
    finally:
        watch.close()


@pytest.mark.parametrize("change", ["create", "delete", "rename", "chmod", "rmdir"])
def test_each_kind_of_change_is_seen(tmp_path: Path, change: str) -> None:
    folder = tmp_path / "remote"
    folder.mkdir()
    (folder / "a.cab").write_bytes(b"x")
    watch = _watch()
    try:
        assert watch.add(str(folder))
        if change == "create":
            (folder / "b.cab").write_bytes(b"y")
        elif change == "delete":
            (folder / "a.cab").unlink()
        elif change == "rename":
            (tmp_path / "c.cab").write_bytes(b"z")
            os.rename(tmp_path / "c.cab", folder / "c.cab")
        elif change == "chmod":
            os.chmod(folder / "a.cab", 0o600)
        else:
            (folder / "a.cab").unlink()
            folder.rmdir()
        assert watch.changed()
    finally:
        watch.close()


def test_a_missing_folder_is_watched_through_its_parent(tmp_path: Path) -> None:
    watch = _watch()
    try:
        assert watch.add(str(tmp_path / "not" / "yet"))
        assert watch.folders == {str(tmp_path)}
        assert not watch.changed()
        (tmp_path / "not").mkdir()
        assert watch.changed()
    finally:
        watch.close()


def test_paths_through_links_and_too_many_folders_are_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    watch = _watch()
    try:
        assert not watch.add(str(tmp_path / "link"))
        for index in range(MAX_FOLDERS):
            (tmp_path / f"d{index}").mkdir()
            assert watch.add(str(tmp_path / f"d{index}"))
        (tmp_path / "one-more").mkdir()
        assert not watch.add(str(tmp_path / "one-more"))
    finally:
        watch.close()


def _service(tmp_path: Path) -> ReleaseService:
    remotes = tmp_path / "remotes.d"
    remotes.mkdir()
    (tmp_path / "pki").mkdir()
    config = Config(
        install=InstallSection(
            remotes_dir=str(remotes), pki_dir=str(tmp_path / "pki"), only_trusted=False
        )
    )
    return ReleaseService(config)


def _cabinet(version: str, compress: bool = True) -> bytes:
    payload = b"firmware " + version.encode()
    metainfo = make_metainfo(
        appstream_id="org.example.test",
        guids=[GUID],
        version=version,
        payload_name="firmware.bin",
        payload=payload,
    )
    return make_cabinet(
        {"firmware.bin": payload, "firmware.metainfo.xml": metainfo}, compress=compress
    )


async def test_the_scan_is_kept_until_a_folder_changes(tmp_path: Path) -> None:
    service = _service(tmp_path)
    folder = tmp_path / "firmware"
    folder.mkdir()
    (tmp_path / "remotes.d" / "local.conf").write_text(f"[fwupd Remote]\nPath={folder}\n")
    (folder / "one.cab").write_bytes(_cabinet("1"))
    first = await service.available()
    assert [c.release.version for c in first] == ["1"]
    assert service.scans == 1
    assert await service.available() is first  # nothing changed: no thread, no scan
    assert service.scans == 1
    (folder / "two.cab").write_bytes(_cabinet("2"))
    assert sorted(c.release.version for c in await service.available()) == ["1", "2"]
    assert service.scans == 2
    await service.available()
    assert service.scans == 2
    # the remote's file itself: disabled
    (tmp_path / "remotes.d" / "local.conf").write_text(
        f"[fwupd Remote]\nEnabled=false\nPath={folder}\n"
    )
    assert await service.available() == []
    # a certificate added: trust is worked out again
    (tmp_path / "pki" / "ca.pem").write_bytes(b"-----")
    await service.available()
    assert service.scans == 4
    # a new size limit decides which cabinets parse
    service.reconfigure(service.config)
    await service.available()
    assert service.scans == 5
    service.drop_kept_scan()


async def test_kept_no_longer_than_the_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """inotify does not see another machine's changes on a network file system."""
    service = _service(tmp_path)
    await service.available()
    await service.available()
    assert service.scans == 1
    monkeypatch.setattr(releases, "REMOTES_MAX_AGE", 0.0)
    await service.available()
    assert service.scans == 2
    service.drop_kept_scan()


async def test_linked_cabinets_are_scanned_on_every_call(tmp_path: Path) -> None:
    service = _service(tmp_path)
    folder = tmp_path / "firmware"
    folder.mkdir()
    (tmp_path / "elsewhere.cab").write_bytes(_cabinet("1"))
    os.symlink(tmp_path / "elsewhere.cab", folder / "one.cab")
    (tmp_path / "remotes.d" / "local.conf").write_text(f"[fwupd Remote]\nPath={folder}\n")
    for _ in range(3):
        assert [c.release.version for c in await service.available()] == ["1"]
    assert service.scans == 3  # the link's target can change without an event here


async def test_a_cabinet_renamed_over_with_the_same_size_and_mtime_is_read_again(
    tmp_path: Path,
) -> None:
    """rsync -t: a new file renamed into place keeps the old one's mtime (and here size)."""
    service = _service(tmp_path)
    folder = tmp_path / "firmware"
    folder.mkdir()
    (tmp_path / "remotes.d" / "local.conf").write_text(f"[fwupd Remote]\nPath={folder}\n")
    old, new = _cabinet("1", compress=False), _cabinet("2", compress=False)
    assert len(old) == len(new)
    (folder / "fw.cab").write_bytes(old)
    assert [c.release.version for c in await service.available()] == ["1"]
    before = os.stat(folder / "fw.cab")
    (tmp_path / "fw.cab.tmp").write_bytes(new)
    os.utime(tmp_path / "fw.cab.tmp", ns=(before.st_atime_ns, before.st_mtime_ns))
    os.rename(tmp_path / "fw.cab.tmp", folder / "fw.cab")
    assert os.stat(folder / "fw.cab").st_mtime_ns == before.st_mtime_ns
    assert [c.release.version for c in await service.available()] == ["2"]
    service.drop_kept_scan()
