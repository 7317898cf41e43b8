"""``livefwd``: the daemon's entry point."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import signal
import sys
from typing import Any

import structlog

import livefw
from livefw import memory
from livefw.bus.backend import (
    MAX_BODY,
    BusType,
    DBusError,
    LivefwBus,
    Message,
    MessageType,
    call,
    disconnect,
    wait_for_disconnect,
)
from livefw.bus.framing import LargeCall
from livefw.bus.polkit import Authorizer
from livefw.bus.service import MANAGER_PATH, DaemonService
from livefw.config import Config, load_config
from livefw.engine import Engine
from livefw.errors import ConfigError, LivefwError
from livefw.kernel.provider import KernelProvider
from livefw.kernel.uapi.fwctl import MAX_RPC_LEN
from livefw.logs import setup_logging
from livefw.statefiles import EX_STATE_DIR, StateDirError, check_state_dir

log = structlog.get_logger("livefw.daemon")

DEFAULT_STATE_DIR = "/var/lib/livefw"

#: exit codes (sysexits.h): configuration error, unavailable resource; an unsafe
#: state dir is livefw.statefiles.EX_STATE_DIR (73, EX_CANTCREAT).
EX_CONFIG = 78
EX_UNAVAILABLE = 69


def terminal_columns() -> int:
    """The terminal width as ``shutil.get_terminal_size().columns`` gives it.

    ``$COLUMNS``, else stdout's terminal, else 80; without importing shutil (see
    :class:`HelpFormatter`).
    """
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class HelpFormatter(argparse.HelpFormatter):
    """argparse's help formatter at the width argparse would pick.

    argparse builds a formatter for every ``add_argument`` and, without a width, each
    one imports shutil for the terminal's size; shutil brings zlib, bz2, lzma and
    fnmatch, ~2 ms of a start that never prints help (issue 17 item 1).
    """

    def __init__(
        self,
        prog: str,
        indent_increment: int = 2,
        max_help_position: int = 24,
        width: int | None = None,
    ) -> None:
        if width is None:
            width = terminal_columns() - 2  # what argparse.HelpFormatter does
        super().__init__(prog, indent_increment, max_help_position, width)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="livefwd",
        description="Runtime firmware update daemon (D-Bus: org.livefw.Daemon1)",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--config", help="configuration file (default /etc/livefw/livefw.conf)")
    parser.add_argument(
        "--simulate",
        action="store_true",
        help="run on the simulated machine kept in STATE_DIR/sim (created when missing)",
    )
    parser.add_argument(
        "--state-dir",
        default=DEFAULT_STATE_DIR,
        help=f"state directory (default {DEFAULT_STATE_DIR})",
    )
    parser.add_argument("--bus-address", help="D-Bus address to use instead of the system bus")
    parser.add_argument("--root", default="/", help="root of the real kernel interfaces (tests)")
    parser.add_argument(
        "--profile",
        default="default",
        help="profile of a new simulated machine (default, scale, ...)",
    )
    parser.add_argument(
        "--scale", type=int, default=0, help="synthetic devices for --profile scale"
    )
    parser.add_argument(
        "--sim-kernel",
        default=None,
        metavar="MAJOR.MINOR",
        help="kernel release a new simulated machine follows (default: the newest modelled)",
    )
    parser.add_argument(
        "--fwupd-compat",
        action="store_true",
        help="also own org.freedesktop.fwupd (fwupd clients drive livefwd; "
        "[daemon] fwupd_compat in livefw.conf)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"livefwd {livefw.__version__}")
    return parser.parse_args(argv)


#: room for an fwctl Rpc's scope and options beside its request bytes
RPC_ARGUMENTS = 4096
#: fwctl's Rpc (interface, member, signature: daemon/bus/ext_fwctl.py), the one method
#: that carries a request inline that may be bigger than MAX_BODY
FWCTL_RPC = ("org.livefw.Daemon1.Fwctl", "Rpc", "saya{sv}")


def bus_large_calls(config: Config) -> tuple[LargeCall, ...]:
    """The method calls the native bus connection allows a body over ``MAX_BODY``.

    fwctl ``Rpc`` carries its request inline (``ay``), up to ``[plugins.fwctl]
    max_request_size`` (64 KiB by default; the kernel's MAX_RPC_LEN, 2 MiB, at most:
    drivers/fwctl/main.c ``fwctl_cmd_rpc``: EMSGSIZE). Configured over what
    MAX_BODY leaves room for, ``Rpc`` alone may be that size plus RPC_ARGUMENTS, and
    only its request bytes may be big (its scope and options stay within
    RPC_ARGUMENTS); every other member of every interface keeps MAX_BODY
    (livefw.bus.framing.LargeCall).
    """
    size = config.plugins.for_plugin("fwctl").get("max_request_size")
    if type(size) is int and 0 < size <= MAX_RPC_LEN and size + RPC_ARGUMENTS > MAX_BODY:
        interface, member, signature = FWCTL_RPC
        return (
            LargeCall(
                interface=interface,
                member=member,
                signature=signature,
                max_body=size + RPC_ARGUMENTS,
                rest=RPC_ARGUMENTS,
            ),
        )
    return ()


class Daemon:
    """One livefwd process."""

    def __init__(self, args: argparse.Namespace, config: Config) -> None:
        self.args = args
        self.config = config
        self.stop_event = asyncio.Event()
        self.exit_code = 0
        self._inhibitor_fd: int | None = None
        self._hard_exit: str | None = None
        self.bus: LivefwBus | None = None
        self.control: Any = None

    def _provider(self) -> KernelProvider:
        if self.args.simulate:
            from livefw.kernel.sim.machine import DEFAULT_KERNEL, SimMachine
            from livefw.kernel.sim.provider import SimProvider

            sim_dir = os.path.join(self.args.state_dir, "sim")
            if os.path.exists(os.path.join(sim_dir, "machine.json")):
                machine = SimMachine.load(sim_dir)
            else:
                machine = SimMachine.create(
                    sim_dir,
                    self.args.profile,
                    self.args.scale,
                    self.args.sim_kernel or DEFAULT_KERNEL,
                )
            machine.exit_hook = self.end_as_kernel
            machine.start()
            return SimProvider(machine)
        from livefw.kernel.real import RealProvider

        return RealProvider(self.args.root)

    def end_as_kernel(self, why: str) -> None:
        """The simulated kernel rebooted or kexec'd: this process ends at once."""
        log.warning("sim_kernel_gone", why=why)
        self._hard_exit = why
        self.stop_event.set()

    async def run(self) -> int:
        """Start, serve until SIGTERM/SIGINT, stop."""
        compat_on = self.args.fwupd_compat or self.config.daemon.fwupd_compat
        version_probe = None
        if compat_on and not self.config.daemon.fwupd_version:
            # The fwupd-compatible API reports the installed libfwupd's version, asked
            # once in a child process (livefw.libfwupd.fwupd_version, cached): ~25 ms
            # of a 3-device start spent waiting for it. Asked in a thread now, it runs
            # while the machine is loaded and the engine starts.
            from livefw.libfwupd import fwupd_version

            version_probe = asyncio.get_running_loop().run_in_executor(None, fwupd_version)
        provider = self._provider()
        engine = Engine(provider, self.config, self.args.state_dir)
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(_exception_handler)
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)

        bus = LivefwBus(
            bus_address=self.args.bus_address,
            bus_type=BusType.SYSTEM,
            object_manager_path=MANAGER_PATH,
            large_calls=bus_large_calls(self.config),
            announce=False,  # until the name is requested (LivefwBus.start_announcing)
        )
        try:
            await bus.connect()
        except (OSError, ValueError) as error:
            log.error("bus_connect_failed", address=self.args.bus_address, error=str(error))
            return EX_UNAVAILABLE
        self.bus = bus
        authorizer = Authorizer(bus, self.config.auth)
        engine.on_irreversible = self._inhibit
        await engine.start()
        service = DaemonService(engine, bus, authorizer)
        await service.start()
        if self.args.simulate:
            from livefw.kernel.sim.control import ControlServer
            from livefw.kernel.sim.provider import SimProvider

            assert isinstance(provider, SimProvider)
            self.control = ControlServer(provider.machine, self.end_as_kernel)
            await self.control.start()
        try:
            await service.own_name()
        except LivefwError as error:
            log.error("bus_name_taken", error=error.message)
            await engine.stop()
            return EX_UNAVAILABLE
        compat = None
        if compat_on:
            # issue 7: the fwupd-compatible API on a connection of its own
            from livefw.bus.compat_connection import CompatConnection

            if version_probe is not None:
                await version_probe  # done by now; CompatConnection reads the cached answer

            compat = CompatConnection(
                engine, authorizer, self.args.bus_address, self.args.state_dir, self.args.config
            )
            await compat.start()
        # What start-up built lives as long as the process: out of the collector's
        # reach from now on, so a full collection walks only what changed since
        # (livefw.launch turned the collector off for start-up).
        gc.freeze()
        gc.enable()
        memory.trim()  # start-up's freed pages (livefw.memory)
        log.info(
            "livefwd_ready",
            version=livefw.__version__,
            simulate=self.args.simulate,
            devices=len(engine.devices),
        )
        disconnected = asyncio.ensure_future(wait_for_disconnect(bus))
        stop = asyncio.ensure_future(self.stop_event.wait())
        await asyncio.wait({disconnected, stop}, return_when=asyncio.FIRST_COMPLETED)
        if self._hard_exit is not None:
            # As after a reboot: nothing of this process may write state any more.
            log.warning("livefwd_killed_by_sim", why=self._hard_exit)
            sys.stderr.flush()
            os._exit(0)
        if disconnected.done() and not stop.done():
            log.error("bus_disconnected")
            self.exit_code = EX_UNAVAILABLE
        stop.cancel()
        log.info("livefwd_stopping")
        if compat is not None:
            compat.stop()
        await engine.stop()
        if self.control is not None:
            await self.control.stop()
        await provider.close()
        if bus.connected:
            disconnect(bus)
        log.info("livefwd_stopped")
        return self.exit_code

    def _on_signal(self, signum: int) -> None:
        log.info("signal", signal=signal.Signals(signum).name)
        self.stop_event.set()

    async def _inhibit(self, active: bool) -> None:
        """Hold a logind shutdown inhibitor while an irreversible step runs."""
        if not active:
            if self._inhibitor_fd is not None:
                os.close(self._inhibitor_fd)
                self._inhibitor_fd = None
                log.debug("inhibitor_released")
            return
        if self.bus is None:
            return
        reply = await call(
            self.bus,
            Message(
                destination="org.freedesktop.login1",
                path="/org/freedesktop/login1",
                interface="org.freedesktop.login1.Manager",
                member="Inhibit",
                signature="ssss",
                body=["shutdown:sleep", "livefwd", "Firmware update in progress", "block"],
            ),
        )
        if reply.message_type == MessageType.ERROR:
            log.debug("inhibitor_unavailable", error=reply.error_name)
            return
        if reply.unix_fds:
            self._inhibitor_fd = reply.unix_fds[0]
            log.info("inhibitor_taken")


def _exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    # dbus-next re-raises a method's DBusError after it has sent the error reply.
    if isinstance(context.get("exception"), DBusError):
        return
    loop.default_exception_handler(context)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point."""
    args = parse_args(argv)
    try:
        config = load_config(args.config, required=args.config is not None)
    except ConfigError as error:
        sys.stderr.write(f"livefwd: {error.message}\n")
        return EX_CONFIG
    try:
        check_state_dir(args.state_dir)
    except StateDirError as error:
        sys.stderr.write(f"livefwd: {error}\n")
        return EX_STATE_DIR
    setup_logging("debug" if args.verbose else config.daemon.log_level)
    daemon = Daemon(args, config)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            return asyncio.run(daemon.run())
    except StateDirError as error:  # a state file found unsafe after the start checks
        sys.stderr.write(f"livefwd: {error}\n")
        return EX_STATE_DIR
    return 0
