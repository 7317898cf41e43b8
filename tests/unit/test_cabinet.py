"""Cabinets: archive shape, metainfo safety, checksums, versions, requirements."""

from __future__ import annotations

import hashlib
import os
import re
import struct
import time
from typing import Any

import cabarchive
import pytest

import livefw.cabinet
from livefw.cabinet import Limits, Requirement, read_cabinet
from livefw.cabinet_build import make_cabinet, make_metainfo
from livefw.errors import InvalidFile, NotFound, NotSupported
from livefw.requires import check_requirements
from livefw.vercmp import compare_versions, normalize_version

GUID = "b2f84b79-7b6e-4e45-885f-3fb9bb185402"
PAYLOAD = bytes(range(256)) * 64


def _metainfo(**overrides: object) -> bytes:
    args: dict[str, object] = {
        "appstream_id": "org.example.firmware",
        "guids": [GUID],
        "version": "4",
        "payload_name": "firmware.bin",
        "payload": PAYLOAD,
        "name": "Example",
    }
    args.update(overrides)
    return make_metainfo(**args)  # type: ignore[arg-type]


def _cab(metainfo: bytes | None = None, payload: bytes = PAYLOAD, **extra: bytes) -> bytes:
    files = {"firmware.bin": payload, "firmware.metainfo.xml": metainfo or _metainfo()}
    files.update(extra)
    return make_cabinet(files)


def test_a_valid_cabinet_is_read_with_its_release() -> None:
    cabinet = read_cabinet(_cab())
    (release,) = cabinet.releases
    assert release.appstream_id == "org.example.firmware"
    assert release.guids == (GUID,)
    assert release.version == "4"
    assert release.payload == PAYLOAD
    assert release.provides([GUID.upper()])
    assert not release.provides(["00000000-0000-0000-0000-000000000000"])
    assert len(cabinet.sha1) == 40
    assert len(cabinet.sha256) == 64


def test_an_uncompressed_cabinet_is_read_too() -> None:
    files = {"firmware.bin": PAYLOAD, "firmware.metainfo.xml": _metainfo()}
    assert read_cabinet(make_cabinet(files, compress=False)).releases[0].payload == PAYLOAD


def test_a_payload_checksum_mismatch_is_refused() -> None:
    tampered = bytearray(PAYLOAD)
    tampered[10] ^= 0xFF
    with pytest.raises(InvalidFile, match="checksum does not match"):
        read_cabinet(_cab(payload=bytes(tampered)))


def test_a_size_mismatch_is_refused() -> None:
    metainfo = _metainfo().replace(
        f'<size type="installed">{len(PAYLOAD)}</size>'.encode(), b'<size type="installed">5</size>'
    )
    with pytest.raises(InvalidFile, match="metainfo says 5"):
        read_cabinet(_cab(metainfo))


def test_a_missing_payload_is_refused() -> None:
    metainfo = _metainfo(payload_name="other.bin")
    with pytest.raises(InvalidFile, match=r"other\.bin is missing"):
        read_cabinet(_cab(metainfo))


def test_a_cabinet_without_metainfo_is_refused() -> None:
    with pytest.raises(InvalidFile, match=r"no \*\.metainfo\.xml"):
        read_cabinet(make_cabinet({"firmware.bin": PAYLOAD}))


def test_a_component_without_guid_is_refused() -> None:
    metainfo = _metainfo().replace(f'<firmware type="flashed">{GUID}</firmware>'.encode(), b"")
    with pytest.raises(InvalidFile, match="provides no firmware GUID"):
        read_cabinet(_cab(metainfo))


def test_entities_are_never_expanded() -> None:
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE c [<!ENTITY a "aaaaaaaaaa">'
        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
        b'<component type="firmware"><id>&b;</id></component>'
    )
    with pytest.raises(InvalidFile, match="DTD or entities"):
        read_cabinet(_cab(bomb))


def test_an_oversized_metainfo_is_refused() -> None:
    with pytest.raises(InvalidFile, match="over the limit"):
        read_cabinet(_cab(), Limits(max_metainfo=100))


def test_malformed_xml_is_refused() -> None:
    with pytest.raises(InvalidFile, match="not well-formed"):
        read_cabinet(_cab(b"<component type='firmware'>"))


def test_not_a_cabinet() -> None:
    with pytest.raises(InvalidFile, match="no MSCF"):
        read_cabinet(b"\x00" * 100)


def test_too_many_files_are_refused_before_unpacking() -> None:
    data = _cab(extra=b"x")
    with pytest.raises(InvalidFile, match="3 files, over the limit of 2"):
        read_cabinet(data, Limits(max_files=2))


def _first_cffile(data: bytes) -> int:
    (coff_files,) = struct.unpack_from("<I", data, 16)
    return int(coff_files)


def test_a_huge_declared_size_is_refused_before_unpacking() -> None:
    data = bytearray(_cab())
    struct.pack_into("<I", data, _first_cffile(bytes(data)), 0xFFFFFFF0)
    with pytest.raises(InvalidFile, match="unpacks to"):
        read_cabinet(bytes(data))


def test_a_name_with_a_folder_is_refused() -> None:
    data = _cab()
    patched = data.replace(b"firmware.bin\x00", b"../mware.bin\x00", 1)
    with pytest.raises(InvalidFile, match="flat"):
        read_cabinet(patched)


def test_a_truncated_cabinet_is_refused() -> None:
    data = _cab()
    with pytest.raises(InvalidFile):
        read_cabinet(data[: len(data) // 2])


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("1.2.3", "1.2.3", 0),
        ("1.2.3", "1.2.10", -1),
        ("1.10", "1.9", 1),
        ("1.2", "1.2.1", -1),
        ("1.2~rc1", "1.2", -1),
        ("1.2a", "1.2", 1),
        ("65587", "65586", 1),
        ("4", "3", 1),
    ],
)
def test_versions_compare_like_fwupd(a: str, b: str, expected: int) -> None:
    assert compare_versions(a, b) == expected
    assert compare_versions(b, a) == -expected


def test_raw_versions_are_formatted() -> None:
    assert normalize_version("65587", "triplet") == "0.1.51"
    assert normalize_version("16909060", "quad") == "1.2.3.4"
    assert normalize_version("65537", "pair") == "1.1"
    assert normalize_version("1.2.3", "triplet") == "1.2.3"
    assert normalize_version("7", "number") == "7"


def _release(*requirements: Requirement) -> object:
    return read_cabinet(_cab(_metainfo(requires=list(requirements)))).releases[0]


RUNTIMES = {"org.freedesktop.fwupd": "2.0.20", "org.livefw.daemon": "0.1.0"}


def test_firmware_version_requirements() -> None:
    release = _release(Requirement("firmware", compare="ge", version="3"))
    check_requirements(release, "3", "number", RUNTIMES)  # type: ignore[arg-type]
    with pytest.raises(InvalidFile, match="requires ge 3"):
        check_requirements(release, "2", "number", RUNTIMES)  # type: ignore[arg-type]


def test_runtime_requirements() -> None:
    ok = _release(Requirement("id", "org.freedesktop.fwupd", "ge", "1.9.0"))
    check_requirements(ok, "1", "number", RUNTIMES)  # type: ignore[arg-type]
    newer = _release(Requirement("id", "org.freedesktop.fwupd", "ge", "3.0.0"))
    with pytest.raises(InvalidFile, match=r"org\.freedesktop\.fwupd version 2\.0\.20"):
        check_requirements(newer, "1", "number", RUNTIMES)  # type: ignore[arg-type]
    unknown = _release(Requirement("id", "com.example.other", "ge", "1"))
    with pytest.raises(NotFound):
        check_requirements(unknown, "1", "number", RUNTIMES)  # type: ignore[arg-type]


def test_requirements_livefw_cannot_check_are_refused() -> None:
    release = _release(Requirement("hardware", "6de5d951-d755-576b-bd09-c5cf66b27234"))
    with pytest.raises(NotSupported, match="cannot check"):
        check_requirements(release, "1", "number", RUNTIMES)  # type: ignore[arg-type]


def test_a_backtracking_regex_requirement_is_matched_in_linear_time() -> None:
    """``^(?:.|.|...)*X`` backtracks for hours in Python's re; RE2 answers at once."""
    bomb = "^(?:" + "|".join(["."] * 100) + ")*X"
    release = _release(Requirement("id", "org.freedesktop.fwupd", "regex", bomb))
    started = time.monotonic()
    with pytest.raises(InvalidFile, match="requires regex"):
        check_requirements(release, "1", "number", RUNTIMES)  # type: ignore[arg-type]
    assert time.monotonic() - started < 0.5
    fine = _release(Requirement("id", "org.freedesktop.fwupd", "regex", r"^2\.0\.\d+$"))
    check_requirements(fine, "1", "number", RUNTIMES)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("pattern", "why"),
    [(r"(2)\1", "cannot be used"), ("(?=2)2", "cannot be used"), ("x" * 300, "at most 256")],
)
def test_regex_requirements_re2_cannot_bound_are_refused(pattern: str, why: str) -> None:
    release = _release(Requirement("id", "org.freedesktop.fwupd", "regex", pattern))
    with pytest.raises(InvalidFile, match=why):
        check_requirements(release, "1", "number", RUNTIMES)  # type: ignore[arg-type]


def test_glob_requirements_are_fwupd_simple_patterns() -> None:
    for pattern, matches in (("2.0.*", True), ("2.?.20", True), ("2.0", False), ("[2].*", False)):
        release = _release(Requirement("id", "org.freedesktop.fwupd", "glob", pattern))
        if matches:
            check_requirements(release, "1", "number", RUNTIMES)  # type: ignore[arg-type]
        else:
            with pytest.raises(InvalidFile, match="requires glob"):
                check_requirements(release, "1", "number", RUNTIMES)  # type: ignore[arg-type]


def test_too_many_requirements_are_refused() -> None:
    many = [Requirement("firmware", compare="ge", version="1")] * 17
    with pytest.raises(InvalidFile, match="17 requirements, over the limit of 16"):
        _release(*many)


def _blocks(cab: bytes) -> list[int]:
    """The offsets of the CFDATA headers of a one-folder cabinet."""
    coff_start, count, _ = struct.unpack_from("<IHH", cab, 36)
    out, at = [], coff_start
    for _ in range(count):
        out.append(at)
        at += 8 + struct.unpack_from("<IHH", cab, at)[1]
    return out


@pytest.mark.parametrize("compress", [True, False])
def test_livefws_reader_unpacks_every_file_without_cabarchives_parser(
    compress: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The archive's own reader (issue 17.5: cabarchive copied a 64 MiB payload three
    times): several files across many 32 KiB blocks, stored or MSZIP, byte for byte."""
    payload = os.urandom(300_000)
    extra = b"x" * 70_000  # a second file that starts inside a block
    data = make_cabinet(
        {
            "firmware.bin": payload,
            "notes.txt": extra,
            "firmware.metainfo.xml": _metainfo(payload=payload),
        },
        compress=compress,
    )
    monkeypatch.setattr(cabarchive, "CabArchive", None)  # not used to read any more
    cabinet = read_cabinet(memoryview(data))
    assert cabinet.files["firmware.bin"] == payload
    assert cabinet.files["notes.txt"] == extra
    assert cabinet.releases[0].payload == payload
    assert cabinet.releases[0].payload_sha256 == hashlib.sha256(payload).hexdigest()
    assert cabinet.sha256 == hashlib.sha256(data).hexdigest()
    assert cabinet.sha1 == hashlib.sha1(data).hexdigest()
    # a digest the caller already has (livefw.fdread's) is taken, not computed again
    assert read_cabinet(data, sha256="ab" * 32).sha256 == "ab" * 32


@pytest.mark.parametrize("compress", [True, False])
def test_a_corrupt_data_block_is_refused(compress: bool) -> None:
    data = bytearray(
        _cab(payload=os.urandom(100_000))
        if compress
        else make_cabinet(
            {"firmware.bin": os.urandom(100_000), "firmware.metainfo.xml": _metainfo()},
            compress=False,
        )
    )
    data[_blocks(bytes(data))[1] + 100] ^= 0xFF
    with pytest.raises(InvalidFile, match="checksum of the data block"):
        read_cabinet(bytes(data))


def test_an_mszip_block_inflating_past_its_declared_size_is_refused() -> None:
    """A block is inflated at most one byte past what it declares (a bomb stops there)."""
    data = bytearray(_cab(payload=bytes(100_000)))
    at = _blocks(bytes(data))[0]
    _, packed, unpacked = struct.unpack_from("<IHH", data, at)
    struct.pack_into("<IHH", data, at, 0, packed, unpacked - 1000)  # checksum 0: none
    with pytest.raises(InvalidFile, match="corrupt cabinet"):
        read_cabinet(bytes(data))


def test_a_file_twice_in_the_directory_is_refused() -> None:
    """cabarchive kept the last of two files of one name; livefw refuses the archive."""
    data = make_cabinet(
        {
            "firmware.bin": PAYLOAD,
            "firmware.metainfo.xml": _metainfo(),
            "a.bin": b"1",
            "b.bin": b"2",
        }
    )
    with pytest.raises(InvalidFile, match="twice"):
        read_cabinet(data.replace(b"b.bin\x00", b"a.bin\x00", 1))


# ---------------------------------------------- which listed checksum is verified


def _listing(*checksums: tuple[str, str]) -> bytes:
    """The metainfo with exactly ``checksums`` (kind, hex) for the payload."""
    text = re.sub(rb"<checksum [^>]*>[0-9a-f]*</checksum>", b"", _metainfo())
    attrs = 'filename="firmware.bin" target="content"'
    listed = b"".join(
        f'<checksum type="{kind}" {attrs}>{value}</checksum>'.encode() for kind, value in checksums
    )
    return text.replace(b'<size type="installed">', listed + b'<size type="installed">', 1)


def _sum(kind: str, data: bytes = PAYLOAD) -> str:
    return hashlib.new(kind, data).hexdigest()


WRONG_SHA1 = "0" * 40


class _CountingHashlib:
    """livefw.cabinet's hashlib, counting which algorithms hash the payload."""

    def __init__(self) -> None:
        self.payload_passes: list[str] = []

    def _count(self, name: str, data: object) -> None:
        if isinstance(data, bytes | memoryview) and bytes(data) == PAYLOAD:
            self.payload_passes.append(name)

    def new(self, name: str, data: bytes = b"") -> Any:
        self._count(name, data)
        return hashlib.new(name, data)

    def sha256(self, data: bytes = b"") -> Any:
        self._count("sha256", data)
        return hashlib.sha256(data)


def test_only_the_strongest_listed_checksum_is_computed(monkeypatch: pytest.MonkeyPatch) -> None:
    """SHA-1 and SHA-256 listed: the payload is hashed once, with SHA-256; the SHA-1
    (wrong here, so that checking it would refuse) is not computed."""
    counting = _CountingHashlib()
    monkeypatch.setattr(livefw.cabinet, "hashlib", counting)
    data = _cab(_listing(("sha1", WRONG_SHA1), ("sha256", _sum("sha256"))))
    (release,) = read_cabinet(data).releases
    assert counting.payload_passes == ["sha256"]
    assert release.payload_sha256 == _sum("sha256")


def test_sha1_alone_is_verified() -> None:
    (release,) = read_cabinet(_cab(_listing(("sha1", _sum("sha1"))))).releases
    assert release.payload == PAYLOAD
    assert release.payload_sha256 == _sum("sha256")  # the history's digest all the same
    with pytest.raises(InvalidFile, match="SHA-1 checksum does not match"):
        read_cabinet(_cab(_listing(("sha1", WRONG_SHA1))))


def test_a_mismatching_strongest_checksum_is_refused_whatever_the_weaker_say() -> None:
    wrong_sha256 = _sum("sha256", PAYLOAD + b"x")
    with pytest.raises(InvalidFile, match="SHA-256 checksum does not match"):
        read_cabinet(_cab(_listing(("sha1", _sum("sha1")), ("sha256", wrong_sha256))))
    wrong_sha512 = _sum("sha512", PAYLOAD + b"x")
    listed = (("sha256", _sum("sha256")), ("sha512", wrong_sha512))
    with pytest.raises(InvalidFile, match="SHA-512 checksum does not match"):
        read_cabinet(_cab(_listing(*listed)))
    # every value listed for the strongest kind must match, not only one of them
    twice = (("sha256", _sum("sha256")), ("SHA256", wrong_sha256))
    with pytest.raises(InvalidFile, match="SHA-256 checksum does not match"):
        read_cabinet(_cab(_listing(*twice)))


def test_sha512_is_verified_over_sha256(monkeypatch: pytest.MonkeyPatch) -> None:
    counting = _CountingHashlib()
    monkeypatch.setattr(livefw.cabinet, "hashlib", counting)
    listed = (("sha1", WRONG_SHA1), ("sha256", _sum("sha256")), ("sha512", _sum("sha512")))
    (release,) = read_cabinet(_cab(_listing(*listed))).releases
    assert sorted(counting.payload_passes) == ["sha256", "sha512"]  # SHA-256 for the history
    assert release.payload_sha256 == _sum("sha256")
