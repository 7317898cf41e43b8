"""Private buses and daemons for tests, the demo and anyone evaluating livefw.

:class:`PrivateBus` starts a system-type ``dbus-daemon`` on a socket in a temporary
directory (no service directories, so nothing is ever activated); :class:`DaemonProcess`
runs ``livefwd --simulate`` on it; :class:`PolkitMock` runs python-dbusmock's polkitd
template there. Every process is stopped by ``stop()`` (and by the context managers).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

__all__ = [
    "NOBODY",
    "SYSTEM_DEFAULTS",
    "Cli",
    "DaemonProcess",
    "PolkitMock",
    "PrivateBus",
    "as_user",
    "busctl",
    "raw_message",
    "wait_for",
]

#: the uid tests run unprivileged clients as (``nobody``).
NOBODY = 65534

#: The default policy of Debian's /usr/share/dbus-1/system.conf (the part that matters
#: to tests of the shipped policy): connect, no owning, no method calls unless a policy
#: file allows them. Written beside a PrivateBus started with default_policy=False.
SYSTEM_DEFAULTS = """<!DOCTYPE busconfig PUBLIC
 "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
</busconfig>
"""

_BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow receive_sender="*"/>
    <allow eavesdrop="true"/>
  </policy>
{extra}
</busconfig>
"""


class _Process:
    proc: subprocess.Popen[bytes] | None = None

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit status."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL at once."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def __enter__(self) -> _Process:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class PrivateBus(_Process):
    """A system-type dbus-daemon on a private socket.

    Args:
        directory: where the socket and config go (a new temp dir by default; made
            world-readable so a client under another uid can reach the socket).
        policy_files: extra ``<include>``d policy files (e.g. dbus/*.conf).
        default_policy: allow everything (tests); False keeps only the included policy.
    """

    def __init__(
        self,
        directory: str | None = None,
        policy_files: Sequence[str] = (),
        default_policy: bool = True,
    ) -> None:
        self.directory = directory or tempfile.mkdtemp(prefix="livefw-bus.")
        self._own_dir = directory is None
        os.chmod(self.directory, 0o755)
        self.socket = os.path.join(self.directory, "bus.sock")
        self.address = f"unix:path={self.socket}"
        self.policy_files = list(policy_files)
        self.default_policy = default_policy

    def start(self) -> PrivateBus:
        """Start dbus-daemon and wait until its socket answers."""
        dbus_daemon = shutil.which("dbus-daemon")
        if dbus_daemon is None:
            raise RuntimeError("dbus-daemon is not installed (apt-get install dbus-daemon)")
        extra = "\n".join(f"  <include>{path}</include>" for path in self.policy_files)
        config = _BUS_CONFIG.format(socket=self.socket, extra=extra)
        if not self.default_policy:
            start = config.index('  <policy context="default">')
            end = config.index("</policy>", start) + len("</policy>")
            config = config[:start] + config[end:]
        config_path = os.path.join(self.directory, "bus.conf")
        with open(config_path, "w", encoding="utf-8") as handle:
            handle.write(config)
        self.proc = subprocess.Popen(
            [dbus_daemon, f"--config-file={config_path}", "--nofork", "--nopidfile"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not os.path.exists(self.socket):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("dbus-daemon did not start")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 10.0) -> int | None:
        """Stop the bus and remove its directory if we made it."""
        status = super().stop(timeout)
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)
        return status

    def env(self) -> dict[str, str]:
        """Environment for clients of this bus (livefw CLI, busctl, fwupdmgr)."""
        env = dict(os.environ)
        env["DBUS_SYSTEM_BUS_ADDRESS"] = self.address
        env["LIVEFW_BUS_ADDRESS"] = self.address
        return env

    def name_has_owner(self, name: str) -> bool:
        """Whether ``name`` is owned on this bus."""
        result = busctl(
            self.address,
            "call",
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "NameHasOwner",
            "s",
            name,
            check=False,
        )
        return result.stdout.strip() == "b true"

    def wait_for_name(self, name: str, timeout: float = 30.0, proc: _Process | None = None) -> None:
        """Block until ``name`` is owned (or the owning process died)."""
        deadline = time.monotonic() + timeout
        while not self.name_has_owner(name):
            if proc is not None and (proc.proc is None or proc.proc.poll() is not None):
                raise RuntimeError(f"the process that should own {name} exited")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} was not owned within {timeout} s")
            time.sleep(0.05)


async def wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    """Wait on the running loop until ``predicate()`` holds; AssertionError after ``timeout``.

    A deadline, not a count of sleeps: on a loaded machine a uevent can take seconds.
    """
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


def busctl(
    address: str, *args: str, check: bool = True, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """Run ``busctl --address=ADDRESS ARGS`` and return the completed process."""
    return subprocess.run(
        ["busctl", f"--address={address}", *args],
        capture_output=True,
        text=True,
        check=check,
        timeout=timeout,
    )


class DaemonProcess(_Process):
    """``livefwd --simulate`` on a private bus, logging to ``<state dir>/livefwd.log``."""

    def __init__(
        self,
        bus: PrivateBus,
        state_dir: str,
        extra_args: Sequence[str] = (),
        config: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.bus = bus
        self.state_dir = state_dir
        self.extra_args = list(extra_args)
        self.config = config
        self.env = env or {}
        self.log_path = os.path.join(state_dir, "livefwd.log")

    def start(self, wait: bool = True) -> DaemonProcess:
        """Start the daemon and wait until it owns org.livefw.Daemon1."""
        os.makedirs(self.state_dir, exist_ok=True)
        config = self.config or os.path.join(self.state_dir, "livefw.conf")
        if self.config is None and not os.path.exists(config):
            with open(config, "w", encoding="utf-8"):
                pass  # an empty config: defaults, never /etc/livefw
        command = [
            sys.executable,
            "-m",
            "livefw",
            "--simulate",
            "--state-dir",
            self.state_dir,
            "--bus-address",
            self.bus.address,
            "--config",
            config,
            "--verbose",
            *self.extra_args,
        ]
        env = self.bus.env()
        env.pop("JOURNAL_STREAM", None)
        env.update(self.env)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        try:
            self.proc = subprocess.Popen(command, stdout=log, stderr=log, env=env)
        finally:
            log.close()
        if wait:
            self.bus.wait_for_name("org.livefw.Daemon1", proc=self)
        return self

    def wait_exit(self, timeout: float = 30.0) -> int:
        """Wait for the daemon to exit by itself (sim reboot/kexec)."""
        assert self.proc is not None
        status = self.proc.wait(timeout)
        self.proc = None
        return status

    def log(self) -> str:
        """The daemon's log so far."""
        with contextlib.suppress(FileNotFoundError), open(self.log_path, errors="replace") as f:
            return f.read()
        return ""


class PolkitMock(_Process):
    """python-dbusmock's polkitd template on a private bus.

    ``allowed``: actions to allow (SetAllowed); ``None`` allows everything.
    """

    NAME = "org.freedesktop.PolicyKit1"
    PATH = "/org/freedesktop/PolicyKit1/Authority"

    def __init__(self, bus: PrivateBus) -> None:
        self.bus = bus

    def start(self) -> PolkitMock:
        """Start the mock and wait for its name."""
        env = self.bus.env()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dbusmock", "--system", "--template", "polkitd"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.bus.wait_for_name(self.NAME, proc=self)
        return self

    def set_allowed(self, actions: Sequence[str]) -> None:
        """Allow exactly these actions (everything else is denied)."""
        busctl(
            self.bus.address,
            "call",
            self.NAME,
            self.PATH,
            "org.freedesktop.DBus.Mock",
            "SetAllowed",
            "as",
            str(len(actions)),
            *actions,
        )

    def allow_unknown(self, value: bool = True) -> None:
        """Allow every action the mock was not told about."""
        busctl(
            self.bus.address,
            "call",
            self.NAME,
            self.PATH,
            "org.freedesktop.DBus.Mock",
            "AllowUnknown",
            "b",
            "true" if value else "false",
        )


def as_user(uid: int, command: list[str]) -> list[str]:
    """Wrap ``command`` to run under ``uid`` with ``setpriv`` (needs root; no logind)."""
    if os.geteuid() != 0:
        raise PermissionError("running a client under another uid needs root")
    if shutil.which("setpriv") is None:
        raise RuntimeError("setpriv is not installed (util-linux)")
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *command]


def raw_message(
    *,
    big_endian: bool = False,
    kind: int = 1,
    flags: int = 0,
    serial: int = 1,
    path: str = "/org/livefw/Daemon1",
    interface: str | None = "org.livefw.Daemon1.Manager",
    member: str = "Ping",
    destination: str | None = "org.livefw.Daemon1",
    sender: str | None = None,
    text: str | None = None,
    blob: int = 0,
    fds: int = 0,
    reply_serial: int = 0,
    error_name: str | None = None,
    sender_first: bool = False,
    body_bytes: tuple[str, bytes] | None = None,
) -> bytes:
    """A D-Bus message marshalled by hand, in either byte order (framing tests).

    The libraries marshal little-endian only. ``kind``: 1 call, 2 return, 3 error, 4
    signal; ``flags`` 1 is NO_REPLY_EXPECTED. The body is the string ``text``
    (signature ``s``), or ``blob`` bytes (``ay``), or ``body_bytes`` (a signature and
    a body marshalled in that byte order), or empty. ``fds``: the UNIX_FDS header
    field (the fds themselves go as SCM_RIGHTS with the bytes).
    """
    order = ">" if big_endian else "<"
    signature = "s" if text is not None else ("ay" if blob else "")
    body = bytearray()
    if body_bytes is not None:
        signature, marshalled = body_bytes
        body += marshalled
    elif text is not None:
        encoded = text.encode()
        body += struct.pack(order + "I", len(encoded)) + encoded + b"\0"
    elif blob:
        body += struct.pack(order + "I", blob) + b"\x5a" * blob
    fields: list[tuple[int, str, Any]] = [(1, "o", path)]
    if interface is not None:
        fields.append((2, "s", interface))
    fields.append((3, "s", member))
    if error_name is not None:
        fields.append((4, "s", error_name))
    if reply_serial:
        fields.append((5, "u", reply_serial))
    if destination is not None:
        fields.append((6, "s", destination))
    if signature:
        fields.append((8, "g", signature))
    if fds:
        fields.append((9, "u", fds))
    if sender is not None:
        fields.insert(0 if sender_first else len(fields), (7, "s", sender))
    message = bytearray(b"B" if big_endian else b"l")
    message += bytes([kind, flags, 1])
    message += struct.pack(order + "III", len(body), serial, 0)
    for code, type_code, value in fields:
        message += b"\0" * (-len(message) & 7)
        message += bytes([code, 1]) + type_code.encode() + b"\0"
        if type_code in "so":
            message += b"\0" * (-len(message) & 3)
            encoded = value.encode()
            message += struct.pack(order + "I", len(encoded)) + encoded + b"\0"
        elif type_code == "g":
            message += bytes([len(value)]) + value.encode() + b"\0"
        else:
            message += b"\0" * (-len(message) & 3)
            message += struct.pack(order + "I", value)
    struct.pack_into(order + "I", message, 12, len(message) - 16)
    message += b"\0" * (-len(message) & 7)
    return bytes(message + body)


class Cli:
    """Runs the ``livefw`` CLI against a private bus and state dir."""

    def __init__(self, bus: PrivateBus, state_dir: str) -> None:
        self.bus = bus
        self.state_dir = state_dir
        self.program = os.path.join(os.path.dirname(sys.executable), "livefw")

    def env(self) -> dict[str, str]:
        """The environment the CLI runs with."""
        env = self.bus.env()
        env["LIVEFW_STATE_DIR"] = self.state_dir
        env["COLUMNS"] = "200"
        return env

    def __call__(
        self, *args: str, check: bool = True, uid: int | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run ``livefw ARGS``; raise AssertionError on a non-zero exit when ``check``."""
        command = [self.program, *args]
        if uid is not None:
            command = as_user(uid, command)
        result = subprocess.run(
            command, capture_output=True, text=True, env=self.env(), timeout=timeout
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"livefw {' '.join(args)} exited {result.returncode}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}"
            )
        return result

    def popen(self, *args: str) -> subprocess.Popen[str]:
        """Start ``livefw ARGS`` in the background (stdout/stderr piped)."""
        return subprocess.Popen(
            [self.program, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env(),
        )


def main(argv: list[str] | None = None) -> int:
    """``python -m livefw.testing [--state-dir DIR] [COMMAND ...]``.

    Starts a private bus and ``livefwd --simulate`` on it, runs COMMAND (default: your
    shell) with ``LIVEFW_BUS_ADDRESS``, ``DBUS_SYSTEM_BUS_ADDRESS`` and
    ``LIVEFW_STATE_DIR`` set, and stops both when it exits. The daemon allows the
    calling user privileged methods (there is no polkit on this bus).
    """
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m livefw.testing",
        description="Run a command (default: a shell) next to livefwd --simulate on a private bus.",
    )
    parser.add_argument("--state-dir", help="keep the daemon's state here (default: a temp dir)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="command to run")
    args = parser.parse_args(argv)
    workdir = tempfile.mkdtemp(prefix="livefw-try.")
    state_dir = os.path.abspath(args.state_dir or os.path.join(workdir, "state"))
    os.makedirs(state_dir, exist_ok=True)
    config = os.path.join(workdir, "livefw.conf")
    with open(config, "w", encoding="utf-8") as handle:
        handle.write(f"[auth]\nfallback_uids = [0, {os.getuid()}]\n")
    os.makedirs(os.path.join(workdir, "bus"))
    bus = PrivateBus(os.path.join(workdir, "bus")).start()
    daemon = DaemonProcess(bus, state_dir, config=config)
    try:
        daemon.start()
        env = bus.env()
        env["LIVEFW_STATE_DIR"] = state_dir
        # the livefw next to this interpreter first, even from an unactivated venv
        env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
        command = args.command or [os.environ.get("SHELL", "/bin/sh")]
        sys.stderr.write(
            f"livefwd --simulate is on {bus.address} (log: {daemon.log_path});\n"
            "livefw and busctl --address=$DBUS_SYSTEM_BUS_ADDRESS reach it. Exit to stop.\n"
        )
        return subprocess.call(command, env=env)
    finally:
        daemon.stop()
        bus.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
