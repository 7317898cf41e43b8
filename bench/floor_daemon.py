"""The start-up floor: a minimal Python D-Bus daemon on livefwd's libraries.

What any daemon written on asyncio, dbus-fast and structlog pays before it owns a
name, started the way livefwd starts (livefw.launch: the collector off, rich and
asyncio's TLS support kept out) and logging the way livefwd logs on a console
(livefw.logs.setup_logging: the same structlog processors, filtering bound logger and
print logger): it connects to the bus, exports one interface with ``GetDevices``
(an empty list) at ``/`` and requests ``org.freedesktop.fwupd``; SIGTERM stops it.
Nothing of livefw is imported, so livefwd's start cannot go under this one's
(bench/start_ab.py, the start-up table of ``make bench``).

``python bench/floor_daemon.py --bus-address ADDRESS`` (or the system bus address in
``DBUS_SYSTEM_BUS_ADDRESS``).
"""

import gc
import sys


def main() -> int:
    gc.disable()
    sys.modules["rich"] = None  # type: ignore[assignment]
    sys.modules["ssl"] = None  # type: ignore[assignment]
    try:
        import asyncio
    finally:
        del sys.modules["ssl"]
    import logging
    import os
    import signal

    import structlog
    from dbus_fast import BusType
    from dbus_fast.aio import MessageBus
    from dbus_fast.service import ServiceInterface, method

    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.format_exc_info,
            structlog.processors.TimeStamper(fmt="%H:%M:%S", utc=False),
            structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    log = structlog.get_logger("floor")
    argv = sys.argv[1:]
    address = argv[argv.index("--bus-address") + 1] if "--bus-address" in argv else None
    address = address or os.environ.get("DBUS_SYSTEM_BUS_ADDRESS")

    class Fwupd(ServiceInterface):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__("org.freedesktop.fwupd")

        @method()  # type: ignore[misc]
        def GetDevices(self) -> "aa{sv}":  # noqa: F722, N802
            return []

    async def run() -> None:
        bus = await MessageBus(bus_address=address, bus_type=BusType.SYSTEM).connect()
        bus.export("/", Fwupd())
        await bus.request_name("org.freedesktop.fwupd")
        gc.freeze()
        gc.enable()
        log.info("floor_ready")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        bus.disconnect()

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
