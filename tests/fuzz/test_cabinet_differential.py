"""livefw's own MS-CAB reader checked against cabarchive's parser, the library it replaced.

livefw reads cabinets itself (livefw.cabinet._unpack: cabarchive's parser copied a
64 MiB payload three times, issue 17 item 5) but keeps cabarchive to write them. A
hand-written parser of hostile files answers to the well-kept one: on archives
cabarchive writes, and on mutations of them (a flipped byte, a truncation, an
overwritten field), whatever livefw accepts cabarchive accepts with the same files and
the same bytes. livefw may refuse more (a name twice in the directory, sizes over its
limits): never less.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from livefw import cabinet
from livefw.cabinet_build import make_cabinet
from livefw.errors import LivefwError

NAMES = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x2FF, exclude_characters="/\\"),
    min_size=1,
    max_size=12,
)
# cabarchive cannot read back an empty file it wrote (a folder without blocks).
FILES = st.dictionaries(NAMES, st.binary(min_size=1, max_size=70_000), min_size=1, max_size=4)


def _livefw(data: bytes) -> dict[str, bytes] | None:
    limits = cabinet.Limits()
    try:
        cabinet._precheck(data, limits)
        return cabinet._unpack(data, limits)
    except (LivefwError, ValueError):
        return None


def _cabarchive(data: bytes) -> dict[str, bytes] | None:
    cab: Any = cabinet.load_cabarchive()
    try:
        archive = cab.CabArchive(data)
    except Exception:  # any refusal of the library counts as a refusal
        return None
    return {name: bytes(item.buf) for name, item in archive.items()}


@settings(max_examples=60, deadline=None)
@given(files=FILES, compress=st.booleans())
def test_what_cabarchive_writes_livefw_reads_alike(files: dict[str, bytes], compress: bool) -> None:
    data = make_cabinet(files, compress=compress)
    assert _livefw(data) == _cabarchive(data) == files


@settings(max_examples=300, deadline=None)
@given(
    files=FILES,
    compress=st.booleans(),
    edits=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=4),
    cut=st.one_of(st.none(), st.integers(min_value=0)),
)
def test_a_mutated_cabinet_livefw_accepts_cabarchive_reads_the_same(
    files: dict[str, bytes], compress: bool, edits: list[tuple[int, int]], cut: int | None
) -> None:
    data = bytearray(make_cabinet(files, compress=compress))
    for at, value in edits:
        data[at % len(data)] = value
    if cut is not None:
        del data[cut % len(data) :]
    ours = _livefw(bytes(data))
    if ours is not None:
        assert ours == _cabarchive(bytes(data))
