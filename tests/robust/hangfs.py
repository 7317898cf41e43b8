"""A FUSE file system whose one file never answers a read: a hung file system in a test.

Served by a thread of the test process straight over ``/dev/fuse`` (no libfuse): it
answers INIT, LOOKUP, GETATTR, OPEN, FLUSH and RELEASE and keeps every READ of
``hang`` unanswered, as a FUSE server that stopped (or a user's malicious one; any
user can mount FUSE through fusermount) would. :meth:`HangFS.stop` closes the device,
which aborts the connection: every waiting read then fails with ENOTCONN.

Needs root (mount(2) with ``allow_other``, so that ``nobody`` can open the file).
Protocol structures: include/uapi/linux/fuse.h (fuse_in_header, fuse_out_header,
fuse_init_out, fuse_entry_out, fuse_attr_out, fuse_open_out, fuse_attr).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import select
import stat
import struct
import threading

FUSE_LOOKUP, FUSE_FORGET, FUSE_GETATTR = 1, 2, 3
FUSE_OPEN, FUSE_READ, FUSE_RELEASE, FUSE_FLUSH = 14, 15, 18, 25
FUSE_INIT, FUSE_INTERRUPT, FUSE_DESTROY, FUSE_BATCH_FORGET = 26, 36, 38, 42
FOPEN_DIRECT_IO = 1 << 0
ROOT, FILE = 1, 2
SIZE = 64 * 1024
_IN_HEADER = struct.Struct("<IIQQIIIHH")  # 40 bytes
_NO_REPLY = {FUSE_FORGET, FUSE_BATCH_FORGET, FUSE_INTERRUPT}
MNT_DETACH = 2


def _attr(node: int) -> bytes:
    mode = (stat.S_IFDIR | 0o755) if node == ROOT else (stat.S_IFREG | 0o644)
    size = 0 if node == ROOT else SIZE
    return struct.pack(
        "<QQQQQQIIIIIIIIII", node, size, 0, 0, 0, 0, 0, 0, 0, mode, 1, 0, 0, 0, 4096, 0
    )


class HangFS:
    """Mount at ``directory``; ``directory/hang`` hangs every read (``reads`` counts them)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.path = os.path.join(directory, "hang")
        self.reads = 0
        self._fd = -1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> HangFS:
        os.makedirs(self.directory, exist_ok=True)
        self._fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
        libc = ctypes.CDLL(None, use_errno=True)
        options = f"fd={self._fd},rootmode=40000,user_id=0,group_id=0,allow_other"
        if libc.mount(b"livefw-hangfs", self.directory.encode(), b"fuse", 0, options.encode()):
            error = ctypes.get_errno()
            os.close(self._fd)
            raise OSError(error, f"mount fuse on {self.directory}: {os.strerror(error)}")
        self._thread = threading.Thread(target=self._serve, name="hangfs", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Abort the connection (waiting reads fail) and unmount."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        libc = ctypes.CDLL(None, use_errno=True)
        libc.umount2(self.directory.encode(), MNT_DETACH)
        if self._fd >= 0:
            os.close(self._fd)  # fuse_dev_release(): aborts every pending request
            self._fd = -1

    def __enter__(self) -> HangFS:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------------- serving

    def _reply(self, unique: int, error: int = 0, payload: bytes = b"") -> None:
        header = struct.pack("<IiQ", 16 + len(payload), -error, unique)
        with contextlib.suppress(OSError):  # ENOENT: the request was interrupted
            os.write(self._fd, header + payload)

    def _serve(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        while not self._stop.is_set():
            if not poller.poll(100):
                continue
            try:
                request = os.read(self._fd, 1 << 17)
            except OSError as error:
                if error.errno in (errno.EINTR, errno.EAGAIN, errno.ENOENT):
                    continue
                return  # ENODEV: unmounted
            _, opcode, unique, node, *_ = _IN_HEADER.unpack_from(request)
            body = request[_IN_HEADER.size :]
            self._handle(opcode, unique, node, body)

    def _handle(self, opcode: int, unique: int, node: int, body: bytes) -> None:
        if opcode in _NO_REPLY:
            return
        if opcode == FUSE_INIT:
            _major, minor, readahead, _flags = struct.unpack_from("<IIII", body)
            init = struct.pack(
                "<IIIIHHIIHHII24x", 7, min(minor, 31), readahead, 0, 16, 12, 4096, 1, 0, 0, 0, 0
            )
            self._reply(unique, 0, init)
        elif opcode == FUSE_LOOKUP:
            name = body.split(b"\0", 1)[0]
            if node == ROOT and name == b"hang":
                entry = struct.pack("<QQQQII", FILE, 1, 3600, 3600, 0, 0) + _attr(FILE)
                self._reply(unique, 0, entry)
            else:
                self._reply(unique, errno.ENOENT)
        elif opcode == FUSE_GETATTR:
            self._reply(unique, 0, struct.pack("<QII", 3600, 0, 0) + _attr(node))
        elif opcode == FUSE_OPEN:
            self._reply(unique, 0, struct.pack("<QII", 1, FOPEN_DIRECT_IO, 0))
        elif opcode == FUSE_READ:
            self.reads += 1  # never answered
        elif opcode in (FUSE_FLUSH, FUSE_RELEASE, FUSE_DESTROY):
            self._reply(unique)
        else:
            self._reply(unique, errno.ENOSYS)
