"""livefw.fdread: a client's fd read in a child process, with a deadline and a bound."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

import livefw.fdread
from livefw.errors import Busy, InvalidFile, Timeout
from livefw.fdread import FdReader, TooLarge

#: a reader that never answers (as one blocked on a hung file system)
STUCK = "import time\ntime.sleep(60)\n"


async def test_reads_a_regular_file_and_keeps_the_callers_fd(tmp_path: Path) -> None:
    path = tmp_path / "payload"
    path.write_bytes(b"x" * 3_000_000)
    fd = os.open(path, os.O_RDONLY)
    try:
        reader = FdReader("payload")
        assert (await reader.read(fd, 3_000_000)).data == b"x" * 3_000_000
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


async def test_a_large_file_is_read_whole_and_the_callers_offset_kept(
    tmp_path: Path,
) -> None:
    """The child reads at explicit offsets: the caller's file position is untouched."""
    path = tmp_path / "payload"
    data = os.urandom(5 << 20)
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.lseek(fd, 1234, os.SEEK_SET)
        assert (await FdReader("payload").read(fd, len(data))).data == data
        assert os.lseek(fd, 0, os.SEEK_CUR) == 1234
    finally:
        os.close(fd)


async def test_a_memfd_payload_and_a_tiny_limit_report_the_size() -> None:
    """A memfd payload (what clients send most); the size is reported whole."""
    fd = os.memfd_create("payload")
    try:
        os.write(fd, b"abc" * 1000)
        reader = FdReader("payload")
        assert (await reader.read(fd, 3000)).data == b"abc" * 1000
        with pytest.raises(TooLarge, match="3000 bytes, over the limit of 2 "):
            await reader.read(fd, 2)
        with pytest.raises(TooLarge):
            await reader.read(fd, 2999)
    finally:
        os.close(fd)


async def test_a_pipe_is_refused(tmp_path: Path) -> None:
    r, w = os.pipe()
    try:
        os.write(w, b"x")
        with pytest.raises(InvalidFile, match="regular file or a memfd"):
            await FdReader("payload").read(r, 10)
    finally:
        os.close(r)
        os.close(w)


async def test_the_sha256_is_computed_in_the_same_pass(tmp_path: Path) -> None:
    """The child hashes each chunk while it copies it (issue 17.5: nobody reads the
    64 MiB again to hash them); a change to the client's file after the read is not
    seen (livefwd has its own copy)."""
    data = os.urandom(3 << 20)
    fd = os.memfd_create("payload")
    try:
        os.write(fd, data)
        contents = await FdReader("payload").read(fd, len(data))
        os.pwrite(fd, b"changed", 0)
    finally:
        os.close(fd)
    assert contents.sha256 == hashlib.sha256(data).hexdigest()
    assert contents.data == data
    assert type(contents.data) is bytes
    # livefwd keeps no descriptor of the read
    assert not [n for n in os.listdir("/proc/self/fd") if "livefw-" in _link(int(n))]


def _link(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


_TWO_CHUNKS = r"""
import hashlib, os, sys, time
sums = int(sys.argv[2])
data = bytes(range(256)) * 4096
os.write(1, data)          # the first MiB, then a pause the daemon's reads can see
time.sleep(0.6)
os.write(1, data)
os.write(sums, hashlib.sha256(data + data).hexdigest().encode())
"""


async def test_the_memfd_is_read_while_the_child_still_writes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon's copy overlaps the child's (bench/NOTES.md item 11): a read of the
    first part happens before the child wrote the rest, and the bytes come out whole."""
    monkeypatch.setattr(livefw.fdread, "_CHILD", _TWO_CHUNKS)
    reads: list[int] = []
    real = livefw.fdread._Drain._read_to

    def recorded(self: livefw.fdread._Drain, size: int) -> bool:
        read = real(self, size)
        if read:
            reads.append(size)
        return read

    monkeypatch.setattr(livefw.fdread._Drain, "_read_to", recorded)
    path = tmp_path / "payload"
    path.write_bytes(b"x")
    fd = os.open(path, os.O_RDONLY)
    try:
        contents = await FdReader("payload", stall=5).read(fd, 4 << 20)
    finally:
        os.close(fd)
    chunk = bytes(range(256)) * 4096
    assert contents.data == chunk + chunk
    assert contents.sha256 == hashlib.sha256(chunk + chunk).hexdigest()
    # a read before the second MiB was written (tmpfs grows page by page: maybe part of it)
    assert 0 < reads[0] <= len(chunk), reads
    assert reads[-1] == 2 * len(chunk)
