"""Reading a file descriptor a client passed, without trusting the file system behind it.

A payload fd can point into a file system that never answers: a FUSE mount whose
server does not reply (any user can mount one), a hung NFS share. A ``read()`` (even
an ``fstat()``) on it blocks; on the event loop that stops every client, and in a
thread of livefwd that thread and the descriptor are gone for as long as the hang
lasts, and the daemon can no longer exit (a thread blocked in the kernel is not
interrupted by SIGTERM, and FUSE waits out a request its server has already read
even on SIGKILL: ``fs/fuse/dev.c``, ``request_wait_answer()``).

So the read happens in a short-lived child process (``python -I -S``, a few dozen
lines): it gets the descriptor as its stdin, checks it is a regular file (or memfd)
within the size limit and copies it into a memfd that livefwd created and handed it
as its stdout; livefwd reads the memfd once, after the child has exited (no pipe, so
no 64 KiB wake-ups on the event loop and no buffer grown chunk by chunk). The child
computes the file's SHA-256 in the same pass, on each chunk while it is in the
cache, and hands it over in a second memfd: nobody hashes the 64 MiB again (the
engine's history records it; bench/NOTES.md, staging).
The child copies with ``pread``, not ``sendfile(2)``: on a FUSE file a ``sendfile`` stuck in
the file system holds the inode lock, so even the client's own ``close()`` of the
file would hang behind livefwd's killed reader. livefwd watches the memfd's size for
progress and the child's pidfd for its exit. No progress for ``stall`` seconds, or no
end after ``total`` seconds, and the child is killed and the call fails with
:class:`~livefw.errors.Timeout`. livefwd itself keeps neither a thread nor a
descriptor for it; the child is reaped by a timer whenever the kernel lets it go. A
pool allows ``slots`` children at once, counting killed ones that have not exited
yet, so a stuck file system can pin at most that many processes; past that, reads
fail at once with :class:`~livefw.errors.Busy`.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import structlog

from livefw.errors import Busy, InvalidFile, Timeout

__all__ = ["Contents", "FdReader", "TooLarge"]

log = structlog.get_logger("livefw.fdread")

#: exit statuses of the child (100 + errno: fstat or read failed).
_NOT_REGULAR, _EMPTY, _TOO_LARGE, _GREW = 3, 4, 5, 6
_ERRNO_BASE = 100

_CHILD = r"""
import hashlib, os, stat, sys
limit, sums = int(sys.argv[1]), int(sys.argv[2])
try:
    info = os.fstat(0)
except OSError as error:
    sys.exit(100 + min(error.errno or 0, 150))
if not stat.S_ISREG(info.st_mode):
    sys.exit(3)
if info.st_size == 0:
    sys.exit(4)
if info.st_size > limit:
    os.write(1, str(info.st_size).encode())
    sys.exit(5)
digest = hashlib.sha256()
buf = bytearray(1 << 20)
total = 0
while True:
    try:
        size = os.preadv(0, [memoryview(buf)[: min(len(buf), limit + 1 - total)]], total)
    except OSError as error:
        sys.exit(100 + min(error.errno or 0, 150))
    if not size:
        break
    total += size
    if total > limit:
        sys.exit(6)
    view = memoryview(buf)[:size]
    digest.update(view)
    while view:
        view = view[os.write(1, view):]
if total == 0:
    sys.exit(4)
os.write(sums, digest.hexdigest().encode())
"""


#: how often the memfd's size is checked for progress (s)
_TICK = 0.2


def _too_large_size(out: int) -> int:
    """The file size the child wrote as digits when the file was over the limit."""
    text = os.pread(out, 24, 0)
    return int(text) if text.isdigit() and len(text) < 24 else 0


@dataclass(frozen=True)
class Contents:
    """A file read by :meth:`FdReader.read`.

    Attributes:
        data: the bytes, read from the memfd while the child writes it (:class:`_Drain`).
        sha256: their SHA-256 (hex), computed by the reader while it copied them.
    """

    data: bytes
    sha256: str


class _Drain:
    """Reads the memfd ``out`` in a thread while the child still writes it.

    Read, not mapped: a mapping would keep a duplicate of the memfd's descriptor
    (Python's mmap holds one) for as long as anything refers to the payload, and a
    refused payload lingers in exception tracebacks until the cyclic collector runs,
    which showed as descriptors left open after a burst of hostile GetDetails
    (tests/robust/test_hostile_install.py). The read was one ``pread`` once the child
    had exited, ~45 ms for 64 MiB (mostly page faults of the new buffer) after the
    child's copy; here each range the memfd's size shows is read as soon as it is
    there, into an ``io.BytesIO`` grown to fit (through ``getbuffer()``), so on two
    cores the read overlaps the child's copy and what is left at its exit is the last
    chunk (bench/NOTES.md, staging). ``getvalue()`` then hands the buffer over as the
    payload's bytes without a copy: still the one copy livefwd makes. A memfd read
    never blocks (tmpfs), so the thread always ends when told; it backs off while
    the memfd does not grow (a stalled reader costs a few wake-ups a second).
    """

    def __init__(self, out: int) -> None:
        self._out = out
        self._buffer = io.BytesIO()
        self._have = 0
        self._done = threading.Event()
        self._failed: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, name="livefw-fdread", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        pause = 0.001
        try:
            while True:
                done = self._done.is_set()  # before the size: then that size is the last
                if self._read_to(os.fstat(self._out).st_size):
                    pause = 0.001
                elif done:
                    return
                else:
                    self._done.wait(pause)
                    pause = min(pause * 2, 0.05)
        except BaseException as error:  # MemoryError: raised by finish()
            self._failed.append(error)

    def _read_to(self, size: int) -> bool:
        """Read up to ``size``; whether anything was read."""
        if size <= self._have:
            return False
        buffer = self._buffer
        buffer.seek(size - 1)
        buffer.write(b"\0")  # grows the buffer (the new part zeroed)
        with buffer.getbuffer() as view:
            while self._have < size:
                got = os.preadv(self._out, [view[self._have : size]], self._have)
                if not got:  # cannot shrink: the child only appends; be safe anyway
                    buffer.truncate(self._have)
                    return True
                self._have += got
        return True

    def finish(self) -> bytes:
        """Everything the child wrote (call once it has exited)."""
        self._done.set()
        self._thread.join()
        if self._failed:
            raise self._failed[0]
        self._read_to(os.fstat(self._out).st_size)  # nothing left, normally
        return self._buffer.getvalue()[: self._have]

    def stop(self) -> None:
        """End the thread; nothing is kept."""
        self._done.set()
        self._thread.join()
        self._buffer = io.BytesIO()


class TooLarge(InvalidFile):
    """A file or cabinet over the limit it was allowed (``size`` bytes, if known).

    Callers that parse for someone not yet authorized catch it to authorize first and
    then read with the full limits (the fwupd-compatible Install).
    """

    def __init__(self, message: str, size: int = 0) -> None:
        super().__init__(message)
        self.size = size


def _spawn(fd: int, out: int, sums: int, limit: int) -> subprocess.Popen[bytes]:
    """Start the reader (a vfork and exec: it returns once the child runs, in ~1 ms)."""
    return subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", _CHILD, str(limit), str(sums)],
        stdin=fd,
        stdout=out,
        stderr=subprocess.DEVNULL,
        close_fds=True,
        pass_fds=(sums,),
        env={"LC_ALL": "C"},
    )


class FdReader:
    """Reads client descriptors through child processes; see the module docstring.

    Args:
        name: for logs and messages ("payload", "unauthenticated payload").
        slots: children at once (running or killed and not yet exited).
        stall: seconds without a byte before the read is given up.
        total: seconds the whole read may take.
    """

    def __init__(self, name: str, slots: int = 2, stall: float = 30.0, total: float = 300.0):
        self.name = name
        self.slots = slots
        self.stall = stall
        self.total = total
        self._children: set[subprocess.Popen[bytes]] = set()

    @property
    def busy(self) -> int:
        """Children not yet exited (running or killed)."""
        return len(self._children)

    async def read(self, fd: int, limit: int) -> Contents:
        """The whole regular file (or memfd) behind ``fd``, at most ``limit`` bytes.

        ``fd`` stays the caller's (it is duplicated into the child).

        Raises:
            InvalidFile: not a regular file or memfd, empty, unreadable.
            TooLarge: over ``limit`` (or grew past it while read).
            Timeout: no progress for ``stall`` s, or not done after ``total`` s.
            Busy: ``slots`` earlier reads are still stuck in the kernel.
        """
        if len(self._children) >= self.slots:
            raise Busy(
                f"{len(self._children)} earlier {self.name} reads are stuck on a file system "
                "that does not answer; try again later or from another file system"
            )
        loop = asyncio.get_running_loop()
        try:
            out = os.memfd_create(f"livefw-{self.name}", os.MFD_CLOEXEC)
        except OSError as error:  # EMFILE, ENOMEM
            raise Busy(f"cannot start a {self.name} reader: {error.strerror}") from error
        try:
            try:
                sums = os.memfd_create("livefw-sha256", os.MFD_CLOEXEC)
            except OSError as error:
                raise Busy(f"cannot start a {self.name} reader: {error.strerror}") from error
            try:
                try:
                    child = _spawn(fd, out, sums, limit)
                except OSError as error:  # EAGAIN (process limit), EMFILE, ENOMEM
                    raise Busy(f"cannot start a {self.name} reader: {error.strerror}") from error
                self._children.add(child)
                drain = _Drain(out)
                try:
                    try:
                        status = await self._wait(loop, child, out)
                    finally:
                        if child.poll() is None:
                            child.kill()
                        self._reap(child)
                    self._check(status, out, limit)
                    digest = os.pread(sums, 65, 0).decode("ascii", "replace")
                    if len(digest) != 64:  # the child exits 0 only after writing it
                        raise InvalidFile(f"reading the {self.name} failed (no checksum)")
                    return Contents(drain.finish(), digest)
                finally:
                    drain.stop()  # the thread has ended before ``out`` is closed
            finally:
                os.close(sums)
        finally:
            os.close(out)

    async def _wait(
        self, loop: asyncio.AbstractEventLoop, child: subprocess.Popen[bytes], out: int
    ) -> int:
        """The child's exit status; Timeout when it stalls or runs past ``total``."""
        exited = asyncio.Event()
        try:
            pidfd: int | None = os.pidfd_open(child.pid)
        except OSError:  # a kernel before 5.3: poll instead
            pidfd = None
        if pidfd is not None:
            loop.add_reader(pidfd, exited.set)
        started = last = time.monotonic()
        size = 0
        try:
            while (status := child.poll()) is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(exited.wait(), _TICK)
                now = time.monotonic()
                grown = os.fstat(out).st_size
                if grown != size:
                    size, last = grown, now
                if child.poll() is not None:
                    continue
                if now - last >= self.stall or now - started >= self.total:
                    waited = now - started
                    log.warning("fd_read_stuck", what=self.name, seconds=round(waited, 1))
                    raise Timeout(
                        f"reading the {self.name} made no progress for "
                        f"{min(self.stall, now - last):.0f} s: the file system that holds it "
                        "does not answer; copy the file to a local disk and try again"
                    )
            return status
        finally:
            if pidfd is not None:
                loop.remove_reader(pidfd)
                os.close(pidfd)

    def _reap(self, child: subprocess.Popen[bytes]) -> None:
        """Forget ``child`` once it has exited (a killed reader may linger in the kernel)."""
        if child.poll() is not None:
            self._children.discard(child)
            return
        asyncio.get_running_loop().call_later(0.5, self._reap, child)

    def _check(self, status: int, out: int, limit: int) -> None:
        """Raise what the child's exit ``status`` means; return when it read the file."""
        what = self.name
        if status == 0 and os.fstat(out).st_size <= limit:
            return
        if status == _NOT_REGULAR:
            raise InvalidFile(
                f"the {what} must be a regular file or a memfd, not a pipe, socket or device"
            )
        if status == _EMPTY:
            raise InvalidFile(f"the {what} file is empty")
        if status == _TOO_LARGE:
            size = _too_large_size(out)
            raise TooLarge(f"the {what} is {size} bytes, over the limit of {limit} bytes", size)
        if status in (0, _GREW):
            raise TooLarge(f"the {what} grew past the limit of {limit} bytes while read")
        if status >= _ERRNO_BASE:
            reason = os.strerror(status - _ERRNO_BASE)
            raise InvalidFile(f"reading the {what} failed: {reason}")
        raise InvalidFile(f"reading the {what} failed (reader exit status {status})")
