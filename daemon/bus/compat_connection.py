"""The connection that owns ``org.freedesktop.fwupd`` and serves livefw.bus.compat at ``/``.

Started by livefwd with ``--fwupd-compat`` (or ``[daemon] fwupd_compat``). It also
follows clients leaving the bus, so their hints, feature flags and inhibits go with
them (livefw.fwupd_service.FwupdService.forget_client).
"""

import structlog

from livefw.bus.backend import (
    BusType,
    LivefwBus,
    Message,
    MessageType,
    NameFlag,
    RequestNameReply,
    call_bus_driver,
    disconnect,
)
from livefw.bus.compat import BUS_NAME, INTERFACE, PATH, CompatInterface
from livefw.bus.context import BusContext
from livefw.bus.polkit import Authorizer
from livefw.engine import Engine
from livefw.fwupd_service import FwupdService

log = structlog.get_logger("livefw.compat")

#: a unique name losing its owner: the client disconnected.
_DEPARTURES = (
    "type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',"
    "member='NameOwnerChanged',path='/org/freedesktop/DBus',arg2=''"
)


class CompatConnection:
    """A second bus connection that owns ``org.freedesktop.fwupd`` and serves ``/``.

    A connection of its own keeps fwupd's name, object and signals apart from
    ``org.livefw.Daemon1`` (no stray InterfacesAdded on the native ObjectManager).
    """

    def __init__(
        self,
        engine: Engine,
        authorizer: Authorizer,
        bus_address: str | None,
        state_dir: str,
        config_path: str | None = None,
    ) -> None:
        self.engine = engine
        self.config_path = config_path
        self.authorizer = authorizer
        self.bus_address = bus_address
        self.state_dir = state_dir
        self.bus: LivefwBus | None = None
        self.service: FwupdService | None = None
        self.interface: CompatInterface | None = None

    async def start(self) -> bool:
        """Connect, export ``/`` and request the name; False if it is taken."""
        bus = LivefwBus(
            bus_address=self.bus_address, bus_type=BusType.SYSTEM, object_manager_path=PATH
        )
        try:
            await bus.connect()
        except (OSError, ValueError) as error:
            log.error("fwupd_compat_unavailable", error=str(error))
            return False
        self.bus = bus
        ctx = BusContext(self.engine, bus, self.authorizer)
        service = self.service = FwupdService(self.engine, self.state_dir, self.config_path)
        self.interface = CompatInterface(ctx, service)
        bus.hand_over_fd_list(INTERFACE)  # fwupd's fd convention: see CompatInterface._fd
        await service.load_host()
        bus.export(PATH, self.interface)
        service.attach(self.interface)
        await self._follow_departures(bus)
        reply = await bus.request_name(BUS_NAME, NameFlag.DO_NOT_QUEUE)
        if reply not in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
            log.error(
                "fwupd_name_taken",
                name=BUS_NAME,
                hint="fwupd.service (or another livefwd) owns it: stop and mask fwupd.service "
                "to use livefwd's fwupd-compatible API",
            )
            return False
        log.info("bus_name_owned", name=BUS_NAME)
        return True

    async def _follow_departures(self, bus: LivefwBus) -> None:
        """Forget a client's hints and flags when its unique name leaves the bus."""
        reply = await call_bus_driver(bus, "AddMatch", "s", [_DEPARTURES])
        if reply.message_type == MessageType.ERROR:
            log.warning("fwupd_departures_not_followed", error=reply.error_name)
            return
        bus.add_message_handler(self._on_message)

    def _on_message(self, msg: Message) -> None:
        if (
            msg.message_type != MessageType.SIGNAL
            or msg.member != "NameOwnerChanged"
            or msg.sender != "org.freedesktop.DBus"
            or msg.signature != "sss"
            or self.service is None
        ):
            return
        name, _old, new = msg.body
        if new == "" and str(name).startswith(":") and self.service.forget_client(str(name)):
            log.debug("fwupd_client_forgotten", sender=str(name))

    def stop(self) -> None:
        """Disconnect."""
        if self.bus is not None and self.bus.connected:
            disconnect(self.bus)
        self.bus = None
