"""``org.livefw.Daemon1.Pfru``: the PFRU ``_DSM`` revision, on every PFRU device object.

The kernel lets user space choose the revision of the ``_DSM`` the update driver
evaluates (``PFRU_IOC_SET_REV``, 1 or 2; pfr_update.c ``pfru_valid_revid()``) and of
the telemetry ``_DSM`` (``PFRT_LOG_IOC_SET_INFO.log_revid``). The update revision
belongs to the update node, so both PFRU device objects show and change the same
value. Changing it or probing the revisions (``QueryRevisions`` switches the drivers'
revisions while it tries them) needs ``org.livefw.daemon1.pfru-configure``: every
later stage and activation talks to the firmware at that revision, which is an
administrator's decision like an install, and is not implied by the right to change
telemetry settings. The telemetry log revision is set with the other telemetry
settings (``Telemetry.SetLogInfo``, ``org.livefw.daemon1.telemetry-configure``).
"""

from livefw.bus.backend import PropertyAccess, ServiceInterface, Variant, dbus_property, method
from livefw.bus.context import BusContext
from livefw.bus.errors import dbus_errors
from livefw.device import Device
from livefw.errors import Internal
from livefw.plugins.pfru import PFRU_INTERFACE, PfruDevice, parse_revision

INTERFACE = PFRU_INTERFACE
ACTION_CONFIGURE = "org.livefw.daemon1.pfru-configure"


class PfruInterface(ServiceInterface):
    """The update ``_DSM`` revision: the one livefw set, and which ones answer."""

    #: every change is announced (PfruContext.set_rev calls the revision listeners):
    #: LivefwBus may keep the map and its GetManagedObjects bytes
    livefw_cache_properties = True

    def __init__(self, ctx: BusContext, device: PfruDevice) -> None:
        super().__init__(INTERFACE)
        self.ctx = ctx
        self.device = device
        device.add_revision_listener(self._changed)

    def _changed(self) -> None:
        self.emit_properties_changed({"Revision": self.device.revision})

    # ---------------------------------------------------------------- properties

    @dbus_property(access=PropertyAccess.READ)
    def Revision(self) -> "u":
        return self.device.revision

    # ------------------------------------------------------------------- methods

    @method()
    @dbus_errors
    async def SetRevision(self, revision: "u") -> None:
        parse_revision(revision)
        await self.ctx.authorize(ACTION_CONFIGURE)
        async with self.ctx.engine.exclusive(self.device, f"SetRevision on {self.device.name}"):
            await self.device.set_revision(revision)

    @method()
    @dbus_errors
    async def QueryRevisions(self) -> "a{sv}":
        await self.ctx.authorize(ACTION_CONFIGURE)
        # it switches the drivers' revisions while it tries them: a state change
        async with self.ctx.engine.exclusive(self.device, f"QueryRevisions on {self.device.name}"):
            found = await self.device.query_revisions()
        return {
            "revision": Variant("u", found.update_revision),
            "kernel": Variant("au", list(found.kernel)),
            "firmware": Variant("au", list(found.update_firmware)),
            "telemetry-revision": Variant("u", found.telemetry_revision),
            "telemetry-firmware": Variant("au", list(found.telemetry_firmware)),
        }


def build(ctx: BusContext, device: Device) -> ServiceInterface:
    """The Pfru interface of a PFRU update device."""
    if not isinstance(device, PfruDevice):
        raise Internal(f"{device.name} is not a PFRU device")
    return PfruInterface(ctx, device)
