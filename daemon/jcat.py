"""Jcat signature files (``firmware.jcat`` in LVFS cabinets).

A ``.jcat`` is gzip-compressed JSON::

    {"JcatVersionMajor": 0, "JcatVersionMinor": 1,
     "Items": [{"Id": "<basename>", "Blobs": [{"Kind": 3, "Flags": 1, "Data": "..."}]}]}

LVFS files carry 8 extra bytes (``IHATECDN``) after the gzip member, so they are
read with ``zlib.decompressobj`` and the trailing bytes are ignored.

PKCS#7 blobs (what the LVFS ships) are detached signatures of the item's file; they
are verified with ``openssl cms -verify`` against every certificate in the PKI
directory (``/etc/livefw/pki/`` by default): the ``cryptography`` library has no
public PKCS#7 verification. Checksum blobs (SHA-1/256/512) must match when present.
"""

from __future__ import annotations

import base64
import binascii
import glob
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

import structlog

from livefw.errors import InvalidFile

__all__ = [
    "KIND_PKCS7",
    "KIND_SHA256",
    "JcatBlob",
    "JcatFile",
    "make_jcat",
    "parse_jcat",
    "sign_files",
    "sign_pkcs7",
    "trusted_files",
    "verify_pkcs7",
]

log = structlog.get_logger("livefw.jcat")

#: JcatBlobKind (libjcat jcat-common.h).
KIND_SHA256 = 1
KIND_GPG = 2
KIND_PKCS7 = 3
KIND_SHA1 = 4
KIND_SHA512 = 10
_CHECKSUM_KINDS = {KIND_SHA256: "sha256", KIND_SHA1: "sha1", KIND_SHA512: "sha512"}
#: JcatBlobFlags: the data is UTF-8 text (else base64).
FLAG_IS_UTF8 = 1

#: largest decompressed .jcat accepted (real ones are a few KiB).
MAX_JCAT = 4 * 1024 * 1024
#: seconds one openssl verification may take.
OPENSSL_TIMEOUT = 30


@dataclass(frozen=True)
class JcatBlob:
    """One signature or checksum of an item."""

    kind: int
    flags: int
    data: bytes
    target: int = 0


@dataclass(frozen=True)
class JcatFile:
    """Items by id (the file basename they sign)."""

    items: Mapping[str, tuple[JcatBlob, ...]]


def parse_jcat(blob: bytes) -> JcatFile:
    """Read a .jcat (gzip JSON, trailing bytes ignored).

    Raises:
        InvalidFile: not gzip, too big, not JSON, or not the Jcat shape.
    """
    inflater = zlib.decompressobj(wbits=31)
    try:
        text = inflater.decompress(blob, MAX_JCAT + 1)
    except zlib.error as error:
        raise InvalidFile(f"the .jcat file is not gzip data: {error}") from error
    if len(text) > MAX_JCAT or inflater.unconsumed_tail:
        raise InvalidFile(f"the .jcat file unpacks to more than {MAX_JCAT} bytes")
    if not inflater.eof:
        raise InvalidFile("the .jcat file is truncated")
    try:
        document = json.loads(text)
    except RecursionError as error:
        # json's C scanner recurses per array/object level; a few MiB of "[[[[..."
        # exhaust the interpreter's recursion limit (a real .jcat nests 4 deep)
        raise InvalidFile("the .jcat file is nested too deeply to be a Jcat file") from error
    except ValueError as error:
        # JSONDecodeError, UnicodeDecodeError, and int() refusing a number of more
        # than sys.get_int_max_str_digits() digits (also a ValueError)
        raise InvalidFile(f"the .jcat file is not JSON: {str(error)[:200]}") from error
    if not isinstance(document, dict) or not isinstance(document.get("Items", []), list):
        raise InvalidFile("the .jcat file has no Items list")
    items: dict[str, tuple[JcatBlob, ...]] = {}
    for item in document.get("Items", []):
        if not isinstance(item, dict) or not isinstance(item.get("Id"), str):
            raise InvalidFile("a .jcat item has no Id")
        blobs = []
        for raw in item.get("Blobs", []):
            if not isinstance(raw, dict):
                raise InvalidFile("a .jcat blob is not an object")
            kind, flags, data = raw.get("Kind"), raw.get("Flags", 0), raw.get("Data", "")
            if not isinstance(kind, int) or not isinstance(flags, int) or not isinstance(data, str):
                raise InvalidFile(f"a .jcat blob of {item['Id']} has the wrong types")
            if flags & FLAG_IS_UTF8:
                decoded = data.encode()
            else:
                try:
                    decoded = base64.b64decode(data, validate=True)
                except binascii.Error as error:
                    raise InvalidFile(f"a .jcat blob of {item['Id']} is not base64") from error
            target = raw.get("Target", 0)
            blobs.append(JcatBlob(kind, flags, decoded, target if isinstance(target, int) else 0))
        items[item["Id"]] = items.get(item["Id"], ()) + tuple(blobs)
    return JcatFile(items)


def _certificates(pki_dir: str) -> list[str]:
    paths = []
    for pattern in ("*.pem", "*.crt"):
        paths += glob.glob(os.path.join(glob.escape(pki_dir), pattern))
    return sorted(paths)


def verify_pkcs7(content: bytes, signature: bytes, pki_dir: str) -> bool:
    """Whether ``signature`` (detached PKCS#7, PEM or DER) signs ``content``.

    The signer's chain must end in a certificate of ``pki_dir``. Returns False when
    there are no certificates or openssl is missing (logged), never raises for a bad
    signature.
    """
    certificates = _certificates(pki_dir)
    openssl = shutil.which("openssl")
    if not certificates or openssl is None:
        log.warning(
            "pkcs7_unverifiable",
            pki_dir=pki_dir,
            certificates=len(certificates),
            openssl=openssl is not None,
        )
        return False
    with tempfile.TemporaryDirectory(prefix="livefw-jcat.") as work:
        bundle = os.path.join(work, "ca.pem")
        with open(bundle, "wb") as out:
            for path in certificates:
                with open(path, "rb") as cert:
                    out.write(cert.read().rstrip(b"\n") + b"\n")
        content_path = os.path.join(work, "content")
        signature_path = os.path.join(work, "signature")
        with open(content_path, "wb") as out:
            out.write(content)
        with open(signature_path, "wb") as out:
            out.write(signature)
        pem = signature.lstrip().startswith(b"-----BEGIN")
        command = [
            openssl,
            "cms",
            "-verify",
            "-binary",
            "-inform",
            "PEM" if pem else "DER",
            "-in",
            signature_path,
            "-content",
            content_path,
            "-CAfile",
            bundle,
            "-purpose",
            "any",
            "-out",
            os.devnull,
        ]
        try:
            result = subprocess.run(
                command, capture_output=True, timeout=OPENSSL_TIMEOUT, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            log.error("pkcs7_verify_failed", error=str(error))
            return False
    if result.returncode != 0:
        log.info("pkcs7_not_trusted", detail=result.stderr.decode(errors="replace")[-300:])
    return result.returncode == 0


def trusted_files(files: Mapping[str, bytes], jcat: JcatFile, pki_dir: str) -> set[str]:
    """The files of a cabinet that a PKCS#7 blob in ``jcat`` signs with a trusted key.

    Raises:
        InvalidFile: a checksum blob does not match its file (tampering).
    """
    trusted: set[str] = set()
    for name, blobs in jcat.items.items():
        content = files.get(name)
        if content is None:
            continue
        for blob in blobs:
            algorithm = _CHECKSUM_KINDS.get(blob.kind)
            if algorithm is None or blob.target:
                continue
            expected = blob.data.decode(errors="replace").strip().lower()
            if hashlib.new(algorithm, content).hexdigest() != expected:
                raise InvalidFile(f"the .jcat {algorithm} of {name} does not match the file")
        for blob in blobs:
            if (
                blob.kind == KIND_PKCS7
                and not blob.target
                and verify_pkcs7(content, blob.data, pki_dir)
            ):
                trusted.add(name)
                break
    return trusted


def make_jcat(items: Mapping[str, list[tuple[int, bytes]]], trailer: bytes = b"IHATECDN") -> bytes:
    """A .jcat with ``items[name] = [(kind, data)]`` (data stored as UTF-8 text).

    ``trailer`` is appended after the gzip member, as the LVFS does.
    """
    import gzip
    import time

    document = {
        "JcatVersionMajor": 0,
        "JcatVersionMinor": 1,
        "Items": [
            {
                "Id": name,
                "Blobs": [
                    {
                        "Kind": kind,
                        "Flags": FLAG_IS_UTF8,
                        "Timestamp": int(time.time()),
                        "Data": data.decode(),
                    }
                    for kind, data in blobs
                ],
            }
            for name, blobs in items.items()
        ],
    }
    return gzip.compress(json.dumps(document).encode()) + trailer


def sign_pkcs7(content: bytes, certificate: str, key: str) -> bytes:
    """A detached PEM PKCS#7 signature of ``content`` (``openssl cms -sign``).

    Raises:
        InvalidFile: openssl failed (bad key or certificate).
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        raise InvalidFile("openssl is not installed")
    with tempfile.TemporaryDirectory(prefix="livefw-sign.") as work:
        content_path = os.path.join(work, "content")
        with open(content_path, "wb") as out:
            out.write(content)
        result = subprocess.run(
            [
                openssl,
                "cms",
                "-sign",
                "-binary",
                "-in",
                content_path,
                "-signer",
                certificate,
                "-inkey",
                key,
                "-outform",
                "PEM",
            ],
            capture_output=True,
            timeout=OPENSSL_TIMEOUT,
            check=False,
        )
    if result.returncode != 0:
        raise InvalidFile(f"signing failed: {result.stderr.decode(errors='replace')[-300:]}")
    return result.stdout


def sign_files(files: Mapping[str, bytes], certificate: str, key: str) -> bytes:
    """A .jcat with a SHA-256 and a PKCS#7 blob for each file (what the LVFS ships)."""
    return make_jcat(
        {
            name: [
                (KIND_SHA256, hashlib.sha256(data).hexdigest().encode()),
                (KIND_PKCS7, sign_pkcs7(data, certificate, key)),
            ]
            for name, data in files.items()
        }
    )
