"""Jcat files and PKCS#7 trust (openssl cms), with a test CA made at test time."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import subprocess
import zlib
from pathlib import Path

import pytest

from livefw.errors import InvalidFile
from livefw.jcat import (
    KIND_PKCS7,
    KIND_SHA256,
    make_jcat,
    parse_jcat,
    sign_files,
    sign_pkcs7,
    trusted_files,
    verify_pkcs7,
)

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")


def make_ca(directory: Path, name: str) -> tuple[str, str]:
    """A self-signed signing certificate and its key."""
    key, cert = directory / f"{name}.key", directory / f"{name}.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return str(cert), str(key)


@pytest.fixture
def pki(tmp_path: Path) -> tuple[str, str, str]:
    """(pki dir holding the trusted certificate, certificate, key)."""
    keys = tmp_path / "keys"
    keys.mkdir()
    cert, key = make_ca(keys, "vendor")
    pki_dir = tmp_path / "pki"
    pki_dir.mkdir()
    shutil.copy(cert, pki_dir / "vendor.pem")
    return str(pki_dir), cert, key


def test_lvfs_trailer_after_the_gzip_member_is_ignored() -> None:
    blob = make_jcat({"firmware.bin": [(KIND_SHA256, b"ab")]})
    assert blob.endswith(b"IHATECDN")
    with pytest.raises((OSError, EOFError, zlib.error)):
        gzip.decompress(blob)  # what a naive reader does
    parsed = parse_jcat(blob)
    assert parsed.items["firmware.bin"][0].kind == KIND_SHA256
    assert parsed.items["firmware.bin"][0].data == b"ab"


def test_garbage_and_bombs_are_refused() -> None:
    with pytest.raises(InvalidFile, match="not gzip"):
        parse_jcat(b"not a jcat")
    with pytest.raises(InvalidFile, match="more than"):
        parse_jcat(gzip.compress(b" " * (5 * 1024 * 1024)))
    with pytest.raises(InvalidFile, match="not JSON"):
        parse_jcat(gzip.compress(b"{"))
    with pytest.raises(InvalidFile, match="truncated"):
        parse_jcat(gzip.compress(b'{"Items": []}')[:-9])


def test_a_signature_from_a_trusted_key_verifies(pki: tuple[str, str, str]) -> None:
    pki_dir, cert, key = pki
    signature = sign_pkcs7(b"payload", cert, key)
    assert signature.startswith(b"-----BEGIN")
    assert verify_pkcs7(b"payload", signature, pki_dir)
    assert not verify_pkcs7(b"tampered", signature, pki_dir)


def test_a_signature_from_another_key_does_not(pki: tuple[str, str, str], tmp_path: Path) -> None:
    pki_dir, _, _ = pki
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    cert, key = make_ca(other_dir, "stranger")
    assert not verify_pkcs7(b"payload", sign_pkcs7(b"payload", cert, key), pki_dir)


def test_no_certificates_means_nothing_is_trusted(
    pki: tuple[str, str, str], tmp_path: Path
) -> None:
    _, cert, key = pki
    empty = tmp_path / "empty"
    empty.mkdir()
    assert not verify_pkcs7(b"payload", sign_pkcs7(b"payload", cert, key), str(empty))


def test_trusted_files_of_a_cabinet(pki: tuple[str, str, str]) -> None:
    pki_dir, cert, key = pki
    files = {"firmware.bin": b"payload", "firmware.metainfo.xml": b"<component/>"}
    jcat = parse_jcat(sign_files(files, cert, key))
    assert trusted_files(files, jcat, pki_dir) == set(files)
    changed = dict(files, **{"firmware.bin": b"other"})
    with pytest.raises(InvalidFile, match="does not match"):
        trusted_files(changed, jcat, pki_dir)


def test_a_signature_over_other_bytes_is_not_trusted(pki: tuple[str, str, str]) -> None:
    pki_dir, cert, key = pki
    files = {"firmware.bin": b"payload"}
    jcat = parse_jcat(make_jcat({"firmware.bin": [(KIND_PKCS7, sign_pkcs7(b"x", cert, key))]}))
    assert trusted_files(files, jcat, pki_dir) == set()
    sha = hashlib.sha256(b"payload").hexdigest().encode()
    only_checksum = parse_jcat(make_jcat({"firmware.bin": [(KIND_SHA256, sha)]}))
    assert trusted_files(files, only_checksum, pki_dir) == set()
