"""Firmware cabinets (.cab) as vendors and the LVFS ship them.

A cabinet is a Microsoft Cabinet archive holding one or more ``*.metainfo.xml``
AppStream components (which devices a payload is for, by GUID, and which version it
carries), the payload(s) and optionally a ``.jcat`` file with signatures
(:mod:`livefw.jcat`). This module:

* checks the archive's headers for bomb shapes (declared sizes, file and folder
  counts, names with directories) **before** anything is decompressed;
* reads it itself (no compression or MSZIP, as fwupd; ``cabarchive`` only writes,
  :mod:`livefw.cabinet_build`), each block checked and no payload copied twice;
* parses each metainfo with ``defusedxml`` (no DTDs, no entity expansion) under a
  size cap;
* verifies payload checksums and declared sizes.

Versions compare in :mod:`livefw.vercmp`, a release's ``<requires>`` is evaluated in
:mod:`livefw.requires`, and cabinets are written (for tests, the bench and ``livefw
remotes``) by :mod:`livefw.cabinet_build`.

Nothing here touches the disk: a cabinet is bytes in, frozen objects out.
"""

from __future__ import annotations

import functools
import hashlib
import io
import re
import struct
import threading
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from livefw.errors import InvalidFile
from livefw.fdread import TooLarge
from livefw.lazy import lazy_module
from livefw.sanitize import NAME_MAX, TEXT_MAX, clean

if TYPE_CHECKING:
    # only for annotations: the engine imports this module for its version rules
    # at start, before livefwd owns its bus name (tests/integration/test_import_budget.py)
    from xml.etree.ElementTree import Element

__all__ = [
    "CAB_MAGIC",
    "Cabinet",
    "Limits",
    "Release",
    "Requirement",
    "is_cabinet",
    "load_cabarchive",
    "read_cabinet",
]

#: MS-CAB signature (Microsoft Cabinet Format, CFHEADER.signature).
CAB_MAGIC = b"MSCF"

#: CFHEADER flags (Microsoft Cabinet Format).
_CFHDR_PREV_CABINET = 0x0001
_CFHDR_NEXT_CABINET = 0x0002
_CFHDR_RESERVE_PRESENT = 0x0004
#: CFFOLDER.typeCompress low nibble: 0 none, 1 MSZIP (2 Quantum, 3 LZX: refused, as fwupd).
_COMPRESSION_OK = {0, 1}
#: a CFDATA block never holds more than 32 KiB of uncompressed data (MS-CAB).
_CFDATA_MAX = 0x8000
#: an ``int`` that does not fit fwupd's signed parts (fwupd compares as gint64).


def _ms_cab_checksum(buf: bytes | memoryview, seed: int = 0) -> int:
    """The MS-CAB CFDATA checksum, as cabarchive's ``_checksum_compute`` computes it.

    cabarchive XORs the block's little-endian 32-bit words one by one in Python:
    5.7 of 8.3 s reading a 64 MiB cabinet (bench/REPORT.md, staging). The same XOR
    is done here on integers: the block's 4 KiB pieces XORed onto each other (word
    alignment is kept, so the XOR of all words is too), then that one integer
    folded in halves down to one word (each step one C-level operation), then the
    spec's 1-3 byte tail as cabarchive does it (big-endian order, a quirk of the
    format). A test compares both on random blocks of every tail length.
    """
    view = memoryview(buf)
    whole = len(view) // 4 * 4
    chunk = 4096
    value = 0
    for at in range(0, whole, chunk):
        value ^= int.from_bytes(view[at : min(at + chunk, whole)], "little")
    words = min(whole, chunk) // 4
    while words > 1:
        half = (words + 1) // 2
        value = (value & ((1 << (32 * half)) - 1)) ^ (value >> (32 * half))
        words = half
    csum = seed ^ value
    left = len(view) - whole
    if left == 3:
        csum ^= (view[whole] << 16) | (view[whole + 1] << 8) | view[whole + 2]
    elif left == 2:
        csum ^= (view[whole] << 8) | view[whole + 1]
    elif left == 1:
        csum ^= view[whole]
    return csum


# cabarchive and defusedxml are imported on first use: livefwd imports this module
# at start (the bus layer's install path), and parsing a cabinet is the first use
# (tests/integration/test_import_budget.py keeps them off the start path).
SafeET: Any = lazy_module("defusedxml.ElementTree")
defusedxml: Any = lazy_module("defusedxml")


@functools.cache
def load_cabarchive() -> Any:
    """cabarchive, with its parser and writer using :func:`_ms_cab_checksum`."""
    import cabarchive
    import cabarchive.parser
    import cabarchive.writer

    # they import the function by name
    for module in (cabarchive.parser, cabarchive.writer):
        setattr(module, "_checksum_compute", _ms_cab_checksum)  # noqa: B010
    return cabarchive


_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@dataclass(frozen=True)
class Limits:
    """What a cabinet may be; anything bigger is refused before it is unpacked."""

    #: the whole .cab, bytes.
    max_size: int = 256 * 1024 * 1024
    #: sum of the files' declared uncompressed sizes, bytes.
    max_unpacked: int = 512 * 1024 * 1024
    #: files in the archive (fwupd allows 1024; real cabinets hold 2-5).
    max_files: int = 64
    #: folders (compression units) in the archive.
    max_folders: int = 16
    #: characters in a file name.
    max_name: int = 255
    #: one metainfo.xml, bytes.
    max_metainfo: int = 1024 * 1024
    #: components over all metainfo files.
    max_components: int = 32
    #: ``<requires>`` children of one component (real cabinets have a handful).
    max_requirements: int = 16


@dataclass(frozen=True)
class Requirement:
    """One ``<requires>`` child: ``kind`` is ``id``, ``firmware``, ``hardware`` ..."""

    kind: str
    text: str = ""
    compare: str = ""
    version: str = ""
    depth: str = ""


@dataclass(frozen=True)
class Release:
    """The release of one component of a cabinet (fwupd uses the first ``<release>``).

    Attributes:
        appstream_id: the component ``<id>``.
        guids: the GUIDs of ``<provides><firmware type="flashed">``, lowercase.
        version: the release version as the metainfo writes it.
        version_format: ``LVFS::VersionFormat`` or ``""``.
        protocol: ``LVFS::UpdateProtocol`` or ``""``.
        payload_name: the payload file inside the cabinet.
        payload: the payload bytes (checksums verified).
        payload_sha256: its SHA-256, hex.
        metainfo_name: the metainfo file the component came from.
    """

    appstream_id: str
    name: str
    summary: str
    description: str
    vendor: str
    license: str
    homepage: str
    guids: tuple[str, ...]
    version: str
    version_format: str
    protocol: str
    release_id: str
    created: int
    urgency: str
    install_duration: int
    details_url: str
    update_message: str
    payload_name: str
    payload: bytes = field(repr=False)
    metainfo_name: str
    requirements: tuple[Requirement, ...] = ()
    #: the payload's SHA-256 (hex), computed when its checksums were verified.
    payload_sha256: str = ""

    @property
    def size(self) -> int:
        """Payload size in bytes."""
        return len(self.payload)

    def provides(self, guids: tuple[str, ...] | list[str]) -> bool:
        """Whether one of ``guids`` is among the GUIDs this release provides."""
        return bool({g.lower() for g in guids} & set(self.guids))


@dataclass(frozen=True)
class Cabinet:
    """A parsed, checksum-verified cabinet.

    Attributes:
        files: every file by basename.
        releases: one per component.
        sha1, sha256: of the whole archive (the release ``Checksum`` fwupd reports).
    """

    files: Mapping[str, bytes] = field(repr=False)
    releases: tuple[Release, ...]
    sha1: str
    sha256: str
    size: int

    @property
    def jcat_names(self) -> list[str]:
        """The ``.jcat`` files in the archive."""
        return sorted(name for name in self.files if name.lower().endswith(".jcat"))


def is_cabinet(data: bytes | memoryview) -> bool:
    """Whether ``data`` starts like an MS-CAB archive."""
    return bytes(data[:4]) == CAB_MAGIC


# ------------------------------------------------------------------ archive shape


def _precheck(data: bytes | memoryview, limits: Limits) -> None:
    """Walk CFHEADER, CFFOLDER, CFFILE and CFDATA headers without decompressing.

    Raises:
        InvalidFile: not a cabinet, truncated, or over one of ``limits``.
    """
    if len(data) > limits.max_size:
        raise TooLarge(
            f"the cabinet is {len(data)} bytes, over the limit of {limits.max_size} bytes"
        )
    if not is_cabinet(data):
        raise InvalidFile("not a cabinet archive (no MSCF signature)")
    try:
        (_, _, cb_cabinet, _, coff_files, _, _, _, folders, files, flags, _, _) = (
            struct.unpack_from("<4sIIIIIBBHHHHH", data, 0)
        )
        offset = 36
        folder_reserve = data_reserve = 0
        if flags & (_CFHDR_PREV_CABINET | _CFHDR_NEXT_CABINET):
            raise InvalidFile("multi-volume cabinets are not supported")
        if flags & _CFHDR_RESERVE_PRESENT:
            header_reserve, folder_reserve, data_reserve = struct.unpack_from("<HBB", data, offset)
            offset += 4 + header_reserve
        if cb_cabinet != len(data):
            raise InvalidFile(
                f"the cabinet declares {cb_cabinet} bytes but is {len(data)} bytes long"
            )
        if folders == 0 or files == 0:
            raise InvalidFile("the cabinet is empty")
        if files > limits.max_files:
            raise InvalidFile(
                f"the cabinet holds {files} files, over the limit of {limits.max_files}"
            )
        if folders > limits.max_folders:
            raise InvalidFile(
                f"the cabinet holds {folders} folders, over the limit of {limits.max_folders}"
            )
        unpacked_blocks = 0
        for _ in range(folders):
            coff_start, blocks, compression = struct.unpack_from("<IHH", data, offset)
            offset += 8 + folder_reserve
            if compression & 0x000F not in _COMPRESSION_OK:
                raise InvalidFile(
                    "the cabinet uses LZX or Quantum compression; only none and MSZIP are "
                    "supported (as by fwupd)"
                )
            block = coff_start
            for _ in range(blocks):
                _, cb_data, cb_uncomp = struct.unpack_from("<IHH", data, block)
                if cb_uncomp > _CFDATA_MAX:
                    raise InvalidFile("a cabinet data block declares more than 32 KiB")
                unpacked_blocks += cb_uncomp
                block += 8 + data_reserve + cb_data
                if block > len(data):
                    raise InvalidFile("the cabinet is truncated (a data block runs past its end)")
        declared = 0
        offset = coff_files
        for _ in range(files):
            cb_file, _, _, _, _, _ = struct.unpack_from("<IIHHHH", data, offset)
            offset += 16
            raw = bytes(data[offset : offset + limits.max_name + 1])
            end = raw.index(b"\0")  # ValueError: none within max_name
            name = raw[:end].decode("utf-8", "replace")
            offset += end + 1
            if "/" in name or "\\" in name or name in ("", ".", ".."):
                raise InvalidFile(
                    f"the cabinet holds {name!r}: firmware cabinets are flat (no folders)"
                )
            declared += cb_file
    except struct.error as error:
        raise InvalidFile("the cabinet is truncated or corrupt") from error
    except ValueError as error:  # no NUL within max_name
        raise InvalidFile(
            f"a file name in the cabinet is longer than {limits.max_name} characters"
        ) from error
    if declared > limits.max_unpacked or unpacked_blocks > limits.max_unpacked:
        raise TooLarge(
            f"the cabinet unpacks to {max(declared, unpacked_blocks)} bytes, over the limit "
            f"of {limits.max_unpacked} bytes"
        )


def _unpack(data: bytes | memoryview, limits: Limits) -> dict[str, bytes]:
    """Every file of a cabinet :func:`_precheck` passed, CFDATA checksums verified.

    The archive's own reader, not cabarchive's parser: that one copied every block,
    joined each folder and sliced each file out of it (three copies of a 64 MiB
    payload) and summed checksums word by word (bench/NOTES.md, staging). Here a
    stored (uncompressed) block is a view of ``data``, an MSZIP block is inflated
    once (bounded by its declared size), and each file is written once, block by
    block as its folder is read, into a buffer that becomes its bytes (no block
    list, no join: a 64 MiB MSZIP payload is held once, not twice). The rules are
    cabarchive's: version 1.3, no chained cabinets, stored blocks with equal sizes,
    MSZIP blocks with the ``CK`` prefix and the previous block as dictionary,
    checksums where non-zero, each block's declared size, each file inside its
    folder; :func:`_precheck` has bounded every count and size before.
    """
    view = memoryview(data)
    try:
        return _extract(data, view, limits.max_name)
    except (struct.error, IndexError, ValueError, zlib.error) as error:
        raise InvalidFile(f"corrupt cabinet: {error or type(error).__name__}") from error


def _extract(data: bytes | memoryview, view: memoryview, max_name: int) -> dict[str, bytes]:
    (_, _, _, _, coff_files, _, minor, major, folders, files, flags, _, index) = struct.unpack_from(
        "<4sIIIIIBBHHHHH", data, 0
    )
    if (major, minor) != (1, 3):
        raise InvalidFile(f"unsupported cabinet: version {major}.{minor} (only 1.3)")
    if index != 0:
        raise InvalidFile("unsupported cabinet: a chained cabinet")
    offset = 36
    folder_reserve = data_reserve = 0
    if flags & _CFHDR_RESERVE_PRESENT:
        header_reserve, folder_reserve, data_reserve = struct.unpack_from("<HBB", data, offset)
        offset += 4 + header_reserve
    folder_list = []
    for _ in range(folders):
        coff_start, blocks, compression = struct.unpack_from("<IHH", data, offset)
        offset += 8 + folder_reserve
        if blocks == 0:
            raise InvalidFile("corrupt cabinet: a folder without data blocks")
        folder_list.append((coff_start, blocks, compression & 0x000F))
    # each file as (start, end, sink) in its folder; written block by block as the
    # folder is read, so that no more than one block is held besides the files
    wanted: list[list[tuple[int, int, io.BytesIO]]] = [[] for _ in folder_list]
    sinks: dict[str, tuple[int, io.BytesIO]] = {}
    offset = coff_files
    for _ in range(files):
        size, start, folder, _, _, _ = struct.unpack_from("<IIHHHH", data, offset)
        offset += 16
        raw = view[offset : offset + max_name + 1].tobytes()  # _precheck found the NUL
        end = raw.index(b"\0")
        name = raw[:end].decode()  # strict UTF-8, as cabarchive
        offset += end + 1
        if folder >= len(folder_list):  # 0xFFFD-0xFFFF: continued across cabinets
            raise InvalidFile(f"corrupt cabinet: {name!r} is in no folder of this cabinet")
        if name in sinks:
            raise InvalidFile(f"the cabinet holds {name!r} twice")
        sink = io.BytesIO()
        sinks[name] = (size, sink)
        wanted[folder].append((start, start + size, sink))
    for (at, blocks, compression), parts in zip(folder_list, wanted, strict=True):
        for position, block in _folder(data, view, at, blocks, compression, data_reserve):
            for first, last, sink in parts:
                if first < position + len(block) and position < last:
                    sink.write(memoryview(block)[max(first - position, 0) : last - position])
    out: dict[str, bytes] = {}
    for name, (size, sink) in sinks.items():
        if sink.tell() != size:
            raise InvalidFile(f"corrupt cabinet: {name} is {size} bytes but its folder ends first")
        out[name] = sink.getvalue()  # the buffer itself, not a copy, when it is not shared
    return out


def _folder(
    data: bytes | memoryview, view: memoryview, at: int, blocks: int, compression: int, reserve: int
) -> Iterator[tuple[int, bytes | memoryview]]:
    """One folder's blocks, checksums and sizes verified, with their uncompressed offsets."""
    zdict = b""
    position = 0
    for _ in range(blocks):
        checksum, packed, unpacked = struct.unpack_from("<IHH", data, at)
        body = view[at + 8 + reserve : at + 8 + reserve + packed]
        if len(body) != packed:
            raise InvalidFile("the cabinet is truncated (a data block runs past its end)")
        if (
            checksum
            and _ms_cab_checksum(struct.pack("<HH", packed, unpacked), _ms_cab_checksum(body))
            != checksum
        ):
            raise InvalidFile(
                f"corrupt cabinet: the checksum of the data block at byte {at} does not match"
            )
        block: bytes | memoryview
        if compression == 0:
            if packed != unpacked:
                raise InvalidFile(f"corrupt cabinet: a stored block at byte {at} changes size")
            block = body
        else:
            if body[:2].tobytes() != b"CK":
                raise InvalidFile(f"corrupt cabinet: the MSZIP block at byte {at} has no CK")
            inflate = zlib.decompressobj(-zlib.MAX_WBITS, zdict=zdict)
            block = inflate.decompress(body[2:], unpacked + 1)  # never past its size
            if len(block) <= unpacked:
                block += inflate.flush(unpacked + 1 - len(block))
            if len(block) != unpacked:
                raise InvalidFile(
                    f"corrupt cabinet: the MSZIP block at byte {at} inflates to "
                    f"{len(block)} bytes, not {unpacked}"
                )
            zdict = block
        yield position, block
        position += unpacked
        at += 8 + reserve + packed


# ----------------------------------------------------------------------- metainfo


def _text(node: Element | None) -> str:
    return (node.text or "").strip() if node is not None else ""


def _shown(text: str, limit: int = NAME_MAX) -> str:
    """Text a client shows (names, summaries): one line, sanitised (livefw.sanitize).

    XML 1.0 keeps out C0 controls but allows C1 (an 8-bit CSI), DEL, bidi
    overrides and line breaks.
    """
    return clean(" ".join(text.split()), limit)


def _description(node: Element | None) -> str:
    """AppStream description markup, re-serialised as plain ``<p>``/``<li>`` text."""
    if node is None:
        return ""
    parts = []
    for child in node.iter():
        if child.tag in ("p", "li") and (child.text or "").strip():
            tag = child.tag
            parts.append(f"<{tag}>{_shown(child.text or '', TEXT_MAX)}</{tag}>")
    return "".join(parts)


def _parse_metainfo(name: str, blob: bytes, limits: Limits) -> list[Element]:
    if len(blob) > limits.max_metainfo:
        raise InvalidFile(
            f"{name} is {len(blob)} bytes, over the limit of {limits.max_metainfo} bytes"
        )
    try:
        root = SafeET.fromstring(blob, forbid_dtd=True, forbid_entities=True)
    except defusedxml.DefusedXmlException as error:
        raise InvalidFile(f"{name} uses a DTD or entities, which are refused") from error
    except SafeET.ParseError as error:
        raise InvalidFile(f"{name} is not well-formed XML: {error}") from error
    except (LookupError, ValueError) as error:
        # expat raises these for an XML declaration naming an unknown encoding
        raise InvalidFile(f"{name} declares an encoding that cannot be read: {error}") from error
    if root.tag == "component":
        components = [root]
    elif root.tag == "components":
        components = list(root.findall("component"))
    else:
        raise InvalidFile(f"{name} has no AppStream <component>")
    return [c for c in components if c.get("type") == "firmware"]


def _children(node: Element | None) -> list[Element]:
    return list(node) if node is not None else []


def _custom(component: Element) -> dict[str, str]:
    values = {}
    for value in component.findall("custom/value"):
        key = value.get("key")
        if key:
            values[key] = _text(value)
    return values


_ALGORITHMS = {"sha1": "sha1", "sha256": "sha256", "sha512": "sha512"}
#: strongest first: the first of these that a metainfo lists is the one verified.
_STRENGTH = ("sha512", "sha256", "sha1")
_KIND_NAMES = {"sha1": "SHA-1", "sha256": "SHA-256", "sha512": "SHA-512"}


def _strongest(checksums: list[tuple[str, str]]) -> tuple[str, list[str]]:
    """The strongest algorithm among ``checksums`` (kind, hex) and its listed values.

    The rule (README, "fwupd compatibility"; docs/compat.md): of the checksums a
    metainfo lists for a file, the strongest kind is verified (SHA-512 over SHA-256
    over SHA-1), every value listed for that kind must match, and the weaker kinds
    are not computed: a collision that fools SHA-256 or SHA-512 is out of reach, so a
    weaker checksum adds no assurance, only a pass over the payload (bench/NOTES.md,
    staging). fwupd
    checks one, the first content checksum listed whatever its kind
    (libfwupdplugin/fu-cabinet.c ``fu_cabinet_parse_release()``), so this is at least
    as strict. ``("", [])`` when none of a known kind is listed.
    """
    listed: dict[str, list[str]] = {}
    for kind, value in checksums:
        algorithm = _ALGORITHMS.get(kind.strip().lower())
        if algorithm is not None:
            listed.setdefault(algorithm, []).append(value.strip().lower())
    for algorithm in _STRENGTH:
        if algorithm in listed:
            return algorithm, listed[algorithm]
    return "", []


def _digests(data: bytes | memoryview, algorithms: list[str]) -> Callable[[], dict[str, str]]:
    """Start hashing ``data`` with each of ``algorithms`` in a thread; call to wait.

    hashlib lets go of the GIL while it hashes, so the digests of a 64 MiB cabinet
    and of its payload are computed while the archive is unpacked and the other
    digest runs, not one after the other (bench/NOTES.md, staging).
    """
    found: dict[str, str] = {}
    failed: list[BaseException] = []
    if not algorithms:
        return lambda: found

    def run() -> None:
        try:
            for name in algorithms:
                found[name] = hashlib.new(name, data).hexdigest()
        except BaseException as error:  # MemoryError: raised in the waiting thread
            failed.append(error)

    thread = threading.Thread(target=run, name="livefw-cabinet-hash", daemon=True)
    thread.start()

    def wait() -> dict[str, str]:
        thread.join()
        if failed:
            raise failed[0]
        return found

    return wait


def _release_of(
    component: Element, metainfo_name: str, files: Mapping[str, bytes], limits: Limits
) -> Release:
    appstream_id = _text(component.find("id"))
    if not appstream_id:
        raise InvalidFile(f"{metainfo_name}: the component has no <id>")
    guids = tuple(
        _text(node).lower()
        for node in component.findall("provides/firmware")
        if node.get("type") == "flashed" and _text(node)
    )
    if not guids:
        raise InvalidFile(f"{metainfo_name}: {appstream_id} provides no firmware GUID")
    for guid in guids:
        if not _GUID.match(guid):
            raise InvalidFile(f"{metainfo_name}: {guid!r} is not a GUID")
    release = component.find("releases/release")
    if release is None:
        raise InvalidFile(f"{metainfo_name}: {appstream_id} has no <release>")
    version = (release.get("version") or "").strip()
    if not version:
        raise InvalidFile(f"{metainfo_name}: the release of {appstream_id} has no version")
    # payload name and checksums: artifacts first (newer metainfo), then <checksum>
    payload_name = ""
    checksums: list[tuple[str, str]] = []
    for artifact in release.findall("artifacts/artifact"):
        if artifact.get("type") == "source":
            payload_name = _text(artifact.find("filename"))
            checksums += [(c.get("type") or "", _text(c)) for c in artifact.findall("checksum")]
            break
    if not payload_name:
        for checksum in release.findall("checksum"):
            if checksum.get("target") == "content":
                payload_name = payload_name or (checksum.get("filename") or "")
                checksums.append((checksum.get("type") or "", _text(checksum)))
    payload_name = payload_name or "firmware.bin"
    if "/" in payload_name or "\\" in payload_name:
        raise InvalidFile(f"{metainfo_name}: payload name {payload_name!r} has a folder")
    payload = files.get(payload_name)
    if payload is None:
        raise InvalidFile(
            f"{metainfo_name}: the payload {payload_name} is missing from the cabinet"
        )
    # the strongest listed checksum is verified, the weaker ones are not computed
    # (_strongest); SHA-256 is always computed (the engine's history records it),
    # another algorithm at the same time in a thread
    algorithm, expected = _strongest(checksums)
    waiting = _digests(payload, [algorithm] if algorithm not in ("", "sha256") else [])
    try:
        sha256 = hashlib.sha256(payload).hexdigest()
    finally:
        found = waiting()
    found["sha256"] = sha256
    for value in expected:
        if found[algorithm] != value:
            raise InvalidFile(
                f"{payload_name}: the {_KIND_NAMES[algorithm]} checksum does not match the "
                "metainfo; the cabinet is damaged or was tampered with"
            )
    for size in release.findall("size"):
        if size.get("type") == "installed":
            try:
                declared = int(_text(size))
            except ValueError as error:
                raise InvalidFile(f"{metainfo_name}: <size> is not a number") from error
            if declared != len(payload):
                raise InvalidFile(
                    f"{payload_name} is {len(payload)} bytes but the metainfo says {declared}"
                )
    created = 0
    if release.get("timestamp", "").isdigit():
        created = int(release.get("timestamp", "0"))
    try:
        duration = int(release.get("install_duration") or 0)
    except ValueError:
        duration = 0
    custom = _custom(component)
    details_url = next((_text(u) for u in release.findall("url") if u.get("type") == "details"), "")
    homepage = next((_text(u) for u in component.findall("url") if u.get("type") == "homepage"), "")
    requires = _children(component.find("requires"))
    if len(requires) > limits.max_requirements:
        raise InvalidFile(
            f"{metainfo_name}: {appstream_id} has {len(requires)} requirements, over the "
            f"limit of {limits.max_requirements}"
        )
    requirements = tuple(
        Requirement(
            kind=node.tag,
            text=_text(node),
            compare=node.get("compare") or "",
            version=node.get("version") or "",
            depth=node.get("depth") or "",
        )
        for node in requires
    )
    return Release(
        appstream_id=appstream_id,
        name=_shown(_text(component.find("name"))),
        summary=_shown(_text(component.find("summary")), TEXT_MAX),
        description=_description(release.find("description"))
        or _description(component.find("description")),
        vendor=_shown(_text(component.find("developer_name"))),
        license=_shown(_text(component.find("project_license"))),
        homepage=homepage,
        guids=guids,
        version=version,
        version_format=custom.get("LVFS::VersionFormat", ""),
        protocol=custom.get("LVFS::UpdateProtocol", ""),
        release_id=release.get("id") or "",
        created=created,
        urgency=release.get("urgency") or "",
        install_duration=max(0, duration),
        details_url=details_url,
        update_message=_shown(custom.get("LVFS::UpdateMessage", ""), TEXT_MAX),
        payload_name=payload_name,
        payload=payload,
        payload_sha256=found["sha256"],
        metainfo_name=metainfo_name,
        requirements=requirements,
    )


def read_cabinet(
    data: bytes | memoryview, limits: Limits | None = None, *, sha256: str = ""
) -> Cabinet:
    """Parse and verify a cabinet.

    ``sha256``: the archive's SHA-256 when the caller knows it already (livefw.fdread
    computes it while it reads a client's file), so that it is not computed again.

    Raises:
        InvalidFile: not a cabinet, a bomb shape, unsafe or invalid metainfo, no
            firmware component, a missing payload, a checksum or size mismatch.
    """
    limits = limits or Limits()
    _precheck(data, limits)  # the shape first: a refused archive costs no hashing
    whole = _digests(data, ["sha1"] if sha256 else ["sha1", "sha256"])
    try:
        files = _unpack(data, limits)
        releases = _releases(files, limits)
    except BaseException:
        whole()  # the thread ends within this call: a refused cabinet costs no more
        raise
    sums = whole()
    return Cabinet(
        files=files,
        releases=tuple(releases),
        sha1=sums["sha1"],
        sha256=sha256 or sums["sha256"],
        size=len(data),
    )


def _releases(files: dict[str, bytes], limits: Limits) -> list[Release]:
    metainfos = sorted(n for n in files if n.lower().endswith(".metainfo.xml"))
    if not metainfos:
        raise InvalidFile("the cabinet has no *.metainfo.xml: it is not a firmware package")
    releases: list[Release] = []
    for name in metainfos:
        for component in _parse_metainfo(name, files[name], limits):
            releases.append(_release_of(component, name, files, limits))
            if len(releases) > limits.max_components:
                raise InvalidFile(
                    f"the cabinet has more than {limits.max_components} firmware components"
                )
    if not releases:
        raise InvalidFile('the metainfo has no <component type="firmware">')
    return releases
