"""Versions as fwupd reads and compares them.

fwupd's ``fu_version_compare`` and ``fu_version_from_uint32``: a version without a
dot is a raw integer shown in the device's version format (triplet, quad, pair, bcd,
hex); ``plain`` compares text, ``hex`` numbers, and every other format part by part.
The engine's install rules (livefw.versions, livefw.planner) and the ``<requires>``
of a cabinet (livefw.requires) compare with these.
"""

from __future__ import annotations

import re

__all__ = ["compare_versions", "normalize_version"]

_PART = re.compile(r"^(-?\d*)(.*)$")


def normalize_version(version: str, version_format: str) -> str:
    """A version without dots, on a device that uses dotted versions, as fwupd formats it.

    fwupd treats a release version with no dot as the raw integer and formats it
    with the version format (triplet ``0xAABBCCDD`` -> ``AA.BB.CCDD``).
    """
    if "." in version or not version.isdigit():
        return version
    value = int(version)
    fmt = version_format.lower()
    if fmt == "triplet":
        return f"{(value >> 24) & 0xFF}.{(value >> 16) & 0xFF}.{value & 0xFFFF}"
    if fmt == "quad":
        parts = [(value >> s) & 0xFF for s in (24, 16, 8, 0)]
        return ".".join(str(p) for p in parts)
    if fmt == "pair":
        return f"{(value >> 16) & 0xFFFF}.{value & 0xFFFF}"
    if fmt == "bcd":
        return f"{(value >> 4) & 0xF}{value & 0xF}"
    if fmt == "hex":
        return f"0x{value:08x}"
    return version


def _split(part: str) -> tuple[int, str]:
    match = _PART.match(part)
    assert match is not None  # the pattern matches every string
    number, rest = match.groups()
    try:
        return (int(number) if number not in ("", "-") else 0), rest
    except ValueError:
        return 0, part


def _compare_rest(a: str, b: str) -> int:
    """Character-wise, with ``~`` before everything, including the end of the text."""
    for i in range(max(len(a), len(b))):
        ca = a[i] if i < len(a) else ""
        cb = b[i] if i < len(b) else ""
        if ca == cb:
            continue
        if ca == "~":
            return -1
        if cb == "~":
            return 1
        if not ca:
            return -1
        if not cb:
            return 1
        return -1 if ca < cb else 1
    return 0


def compare_versions(a: str, b: str, version_format: str = "") -> int:
    """Fwupd's comparison: -1, 0 or 1.

    ``plain`` compares text; ``hex`` parses; everything else splits on ``.``,
    compares each part as an integer and then the text after it; a version with
    fewer parts is older.
    """
    fmt = version_format.lower()
    if fmt == "plain":
        return (a > b) - (a < b)
    if fmt == "hex":
        try:
            x, y = int(a, 16), int(b, 16)
            return (x > y) - (x < y)
        except ValueError:
            pass
    parts_a, parts_b = a.split("."), b.split(".")
    for i in range(max(len(parts_a), len(parts_b))):
        if i >= len(parts_a):
            return -1
        if i >= len(parts_b):
            return 1
        num_a, rest_a = _split(parts_a[i])
        num_b, rest_b = _split(parts_b[i])
        if num_a != num_b:
            return -1 if num_a < num_b else 1
        result = _compare_rest(rest_a, rest_b)
        if result:
            return result
    return 0
