"""livefw.fdread: a client's fd read in a child process, with a deadline and a bound."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

import livefw.fdread
from livefw.errors import Busy, Timeout
from livefw.fdread import FdReader, TooLarge

#: a reader that never answers (as one blocked on a hung file system)
STUCK = "import time\ntime.sleep(60)\n"


async def test_reads_a_regular_file_and_keeps_the_callers_fd(tmp_path: Path) -> None:
    path = tmp_path / "payload"
    path.write_bytes(b"x" * 3_000_000)
    fd = os.open(path, os.O_RDONLY)
    try:
        reader = FdReader("payload")
        assert await reader.read(fd, 3_000_000) == b"x" * 3_000_000
        os.fstat(fd)  # still ours
        with pytest.raises(TooLarge, match="3000000 bytes, over the limit of 100"):
            await reader.read(fd, 100)
    finally:
        os.close(fd)
    await asyncio.sleep(0.6)
    assert reader.busy == 0


async def test_a_stalled_read_times_out_and_the_child_is_reaped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(livefw.fdread, "_CHILD", STUCK)
    path = tmp_path / "payload"
    path.write_bytes(b"x")
    fd = os.open(path, os.O_RDONLY)
    reader = FdReader("payload", slots=1, stall=0.3)
    try:
        first = asyncio.ensure_future(reader.read(fd, 10))
        await asyncio.sleep(0.1)
        with pytest.raises(Busy, match="stuck"):  # the one slot is taken
            await reader.read(fd, 10)
        with pytest.raises(Timeout, match="no progress"):
            await first
    finally:
        os.close(fd)
    for _ in range(20):
        if not reader.busy:
            break
        await asyncio.sleep(0.1)
    assert reader.busy == 0
