"""The service manager's file-descriptor store (systemd ``FileDescriptorStoreMax=``).

A service keeps descriptors across its own restart by sending them to systemd with
``sd_notify("FDSTORE=1", "FDNAME=<name>")`` (two lines) and ``SCM_RIGHTS`` on ``$NOTIFY_SOCKET``;
systemd hands them back to the next process as fds 3.. with ``LISTEN_FDS``,
``LISTEN_PID`` and ``LISTEN_FDNAMES`` (sd_listen_fds(3), sd_pid_notify_with_fds(3),
systemd 252 semantics). ``FDSTOREREMOVE=1`` drops every fd of a name.

:class:`FdStore` is the client side, used by both kernel providers (the provider is
the one place that talks to the operating system). :class:`LocalFdStore` plays
systemd's part in tests and the demo: it listens on a notify socket in a thread,
keeps what it receives (deduplicated like systemd) and can hand it to a new process.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import os
import socket
import stat
import threading
from collections.abc import Mapping, MutableMapping, Sequence

import structlog

__all__ = ["LISTEN_FDS_START", "FdStore", "LocalFdStore", "valid_fdname"]

log = structlog.get_logger("livefw.fdstore")

#: SD_LISTEN_FDS_START: the first inherited descriptor.
LISTEN_FDS_START = 3
#: systemd refuses FDNAMEs longer than this (FDNAME_MAX).
FDNAME_MAX = 255


def valid_fdname(name: str) -> bool:
    """Whether systemd accepts ``name`` as FDNAME: printable ASCII, no ``:``, 1..255 chars."""
    return (
        0 < len(name) <= FDNAME_MAX
        and all(0x20 <= ord(char) < 0x7F for char in name)
        and ":" not in name
    )


class FdStore:
    """Client of the fd store: push and remove descriptors, take back inherited ones.

    The inherited descriptors are read from the environment once, at construction,
    and the ``LISTEN_*`` variables are removed so child processes do not see them.
    ``LISTEN_PID`` must name this process when it is set (systemd sets it; the test
    helper may leave it out).
    """

    def __init__(self, environ: MutableMapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.notify_socket = env.get("NOTIFY_SOCKET", "")
        self._inherited: list[tuple[str, int]] = []
        count = env.get("LISTEN_FDS", "")
        pid = env.get("LISTEN_PID", "")
        names = env.get("LISTEN_FDNAMES", "")
        if count.isdigit() and (not pid or pid == str(os.getpid())):
            split = names.split(":") if names else []
            for index in range(int(count)):
                name = split[index] if index < len(split) else "unknown"
                self._inherited.append((name, LISTEN_FDS_START + index))
                with contextlib.suppress(OSError):
                    os.set_inheritable(LISTEN_FDS_START + index, False)
        for key in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
            env.pop(key, None)

    @property
    def available(self) -> bool:
        """A service manager listens (``$NOTIFY_SOCKET`` is set)."""
        return bool(self.notify_socket)

    def _send(self, text: str, fds: Sequence[int] = ()) -> bool:
        if not self.notify_socket:
            return False
        address = self.notify_socket
        if address.startswith("@"):
            address = "\0" + address[1:]
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            ancdata = []
            if fds:
                ancdata = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", list(fds)))]
            try:
                sock.sendmsg([text.encode()], ancdata, 0, address)
            except OSError as error:
                log.warning("fdstore_send_failed", error=str(error), socket=self.notify_socket)
                return False
        return True

    def push(self, name: str, fds: Sequence[int]) -> bool:
        """``FDSTORE=1`` with ``FDNAME=name``; True when a service manager took them.

        Raises:
            ValueError: the name is not a valid FDNAME.
        """
        if not valid_fdname(name):
            raise ValueError(f"invalid fd store name {name!r}")
        if not fds:
            return self.available
        return self._send(f"FDSTORE=1\nFDNAME={name}\n", fds)

    def remove(self, name: str) -> bool:
        """``FDSTOREREMOVE=1`` for every fd stored under ``name``."""
        if not valid_fdname(name):
            raise ValueError(f"invalid fd store name {name!r}")
        return self._send(f"FDSTOREREMOVE=1\nFDNAME={name}\n")

    def take(self, prefix: str = "") -> list[tuple[str, int]]:
        """Remove and return the inherited ``(name, fd)`` pairs with names under ``prefix``."""
        taken = [(name, fd) for name, fd in self._inherited if name.startswith(prefix)]
        self._inherited = [
            (name, fd) for name, fd in self._inherited if not name.startswith(prefix)
        ]
        return taken


def _same_file(a: int, b: int) -> bool:
    """Two descriptors for the same open file (systemd's same_fd(), approximated by inode)."""
    try:
        sa, sb = os.fstat(a), os.fstat(b)
    except OSError:
        return False
    if (sa.st_dev, sa.st_ino) != (sb.st_dev, sb.st_ino):
        return False
    # eventfds and other anonymous inodes share one inode: compare the descriptors'
    # targets too, and treat anonymous files as distinct unless they are one fd.
    if not stat.S_ISREG(sa.st_mode):
        return a == b
    return True


class LocalFdStore:
    """A stand-in for systemd's fd store (tests, the demo).

    Listens on a datagram socket (give its path to the daemon as ``NOTIFY_SOCKET``),
    keeps received fds per name in arrival order, drops duplicates of an fd already
    stored, honours ``FDSTOREREMOVE=1``, and produces the ``LISTEN_*`` environment and
    ``pass_fds`` for the next daemon process (or, in one process, a :class:`FdStore`).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.entries: list[tuple[str, int]] = []
        self._lock = threading.Lock()
        self._markers: list[threading.Event] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self._sock.bind(path)
        os.chmod(path, 0o666)
        self._stop = False
        self._thread = threading.Thread(target=self._serve, name="fdstore", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        fd_size = array.array("i").itemsize
        while not self._stop:
            try:
                data, ancdata, _flags, _addr = self._sock.recvmsg(
                    4096, socket.CMSG_SPACE(253 * fd_size)
                )
            except OSError:
                return
            fds: list[int] = []
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    received = array.array("i")
                    received.frombytes(payload[: len(payload) - len(payload) % fd_size])
                    fds.extend(received)
            self.handle(data.decode(errors="replace"), fds)

    def handle(self, text: str, fds: list[int]) -> None:
        """Apply one notify message (also usable directly, without the socket)."""
        fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        name = fields.get("FDNAME", "stored")
        with self._lock:
            if fields.get("LIVEFW_SYNC") == "1" and self._markers:
                self._markers.pop(0).set()
            if fields.get("FDSTOREREMOVE") == "1":
                for entry_name, fd in list(self.entries):
                    if entry_name == name:
                        os.close(fd)
                        self.entries.remove((entry_name, fd))
            if fields.get("FDSTORE") == "1":
                for fd in fds:
                    if any(_same_file(fd, kept) for _, kept in self.entries):
                        os.close(fd)
                    else:
                        self.entries.append((name, fd))
                return
        for fd in fds:
            os.close(fd)

    def names(self) -> list[str]:
        """The names currently stored, in order (with repeats)."""
        with self._lock:
            return [name for name, _ in self.entries]

    def wait_idle(self, timeout: float = 5.0) -> None:
        """Return once every message sent to the socket before this call is applied."""
        marker = threading.Event()
        with self._lock:
            self._markers.append(marker)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(b"LIVEFW_SYNC=1\n", self.path)
        marker.wait(timeout)

    def environment(self) -> tuple[dict[str, str], list[int]]:
        """``LISTEN_FDS``/``LISTEN_FDNAMES`` and the fds, in order, for a new process.

        The fds must arrive at 3, 4, ... in the child: see :meth:`command`.
        """
        with self._lock:
            names = [name for name, _ in self.entries]
            fds = [fd for _, fd in self.entries]
        env = {"NOTIFY_SOCKET": self.path}
        if fds:
            env["LISTEN_FDS"] = str(len(fds))
            env["LISTEN_FDNAMES"] = ":".join(names)
        return env, fds

    def command(self, command: Sequence[str]) -> tuple[list[str], list[int], dict[str, str]]:
        """``(argv, pass_fds, env)`` to start ``command`` with the stored fds inherited.

        Run it with ``subprocess.Popen(argv, pass_fds=pass_fds, env=os.environ | env)``.
        """
        import sys

        with self._lock:
            names = [name for name, _ in self.entries]
            fds = [fd for _, fd in self.entries]
        argv = [sys.executable, "-m", "livefw.kernel.fdstore"]
        argv += ["--fds", ",".join(map(str, fds)), "--names", ":".join(names), "--", *command]
        return argv, fds, {"NOTIFY_SOCKET": self.path}

    def client(self) -> FdStore:
        """An in-process :class:`FdStore` that inherits duplicates of the stored fds.

        Used by unit tests to play "the next daemon process" without forking: the
        duplicates are not at 3.. so the inherited list is filled directly.
        """
        store = FdStore({"NOTIFY_SOCKET": self.path})
        with self._lock:
            store._inherited = [(name, os.dup(fd)) for name, fd in self.entries]
        return store

    def close(self) -> None:
        """Stop listening and close every stored fd."""
        self._stop = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(timeout=2)
        with self._lock:
            for _, fd in self.entries:
                with contextlib.suppress(OSError):
                    os.close(fd)
            self.entries.clear()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def inherited_names(environ: Mapping[str, str]) -> list[str]:
    """The ``LISTEN_FDNAMES`` list of an environment (diagnostics)."""
    names = environ.get("LISTEN_FDNAMES", "")
    return names.split(":") if names else []


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m livefw.kernel.fdstore --fds 7,9 --names a:b -- COMMAND...``.

    Starts COMMAND the way systemd starts a service with a non-empty fd store: the
    given fds (inherited from the caller) become 3, 4, ... and ``LISTEN_FDS``,
    ``LISTEN_FDNAMES`` and ``LISTEN_PID`` (this pid, which exec keeps) are set.
    Used by tests and the demo together with :class:`LocalFdStore`.
    """
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m livefw.kernel.fdstore")
    parser.add_argument("--fds", default="", help="comma-separated inherited fds")
    parser.add_argument("--names", default="", help="colon-separated FDNAMEs")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = [part for part in args.command if part != "--"] if args.command else []
    if not command:
        parser.error("give a command after --")
    fds = [int(fd) for fd in args.fds.split(",") if fd]
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 1024) for fd in fds]
    for index, fd in enumerate(high):
        os.dup2(fd, LISTEN_FDS_START + index, inheritable=True)
        os.close(fd)
    env = dict(os.environ)
    if fds:
        env["LISTEN_FDS"] = str(len(fds))
        env["LISTEN_FDNAMES"] = args.names
        env["LISTEN_PID"] = str(os.getpid())
    sys.stdout.flush()
    os.execvpe(command[0], command, env)


if __name__ == "__main__":
    raise SystemExit(main())
