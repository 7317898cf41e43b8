"""The fast MS-CAB checksum equals cabarchive's and is the one its parser uses (issue 17.5)."""

from __future__ import annotations

import os

import cabarchive.parser
import cabarchive.utils
import pytest

from livefw import cabinet, cabinet_build


@pytest.mark.parametrize("size", [*range(0, 41), 4095, 32768, 32767, 32766, 32765])
def test_checksum_matches_cabarchive(size: int) -> None:
    data = os.urandom(size)
    for seed in (0, 0xDEADBEEF):
        want = cabarchive.utils._checksum_compute(data, seed)
        assert cabinet._ms_cab_checksum(data, seed) == want
        assert cabinet._ms_cab_checksum(memoryview(data), seed) == want


def test_parser_uses_it_and_still_rejects_a_corrupt_block() -> None:
    payload = os.urandom(100_000)
    cab = bytearray(cabinet_build.make_cabinet({"firmware.bin": payload}, compress=False))
    # installed when livefw first uses cabarchive (it is imported lazily)
    assert cabarchive.parser._checksum_compute is cabinet._ms_cab_checksum
    assert cabarchive.CabArchive(bytes(cab))["firmware.bin"].buf == payload
    cab[-10] ^= 0xFF  # inside the last CFDATA block's data
    with pytest.raises(cabarchive.errors.CorruptionError):
        cabarchive.CabArchive(bytes(cab))
