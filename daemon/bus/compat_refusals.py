"""The fwupd methods livefw has no equivalent for, and what it answers to them.

fwupd's clients call them (fwupdmgr's subcommands, the GUIs at start), so each is
declared with fwupd's signature and answers an empty list where fwupd would list
nothing, or fwupd's ``NotSupported`` with why (``NotFound`` first for a device fwupd's
clients do not see); an fd a call carries is closed.
docs/compat.md has each beside what fwupd does. livefw.bus.compat.CompatInterface
adds the methods livefw serves.
"""

import os

from livefw.bus.backend import ServiceInterface, method
from livefw.bus.context import BusContext
from livefw.bus.errors import fwupd_errors
from livefw.errors import NotSupported
from livefw.fwupd_service import FwupdService

NO_BIOS_SETTINGS = "livefw does not manage BIOS settings (/sys/class/firmware-attributes)"
NO_READ_BACK = "livefw devices cannot read their firmware back"
NO_EMULATION = "livefw has no device emulation; use the simulated machine (livefwd --simulate)"


class CompatRefusals(ServiceInterface):
    """The part of ``org.freedesktop.fwupd`` livefw refuses (or answers with nothing)."""

    ctx: BusContext
    service: FwupdService

    def _fds(self) -> list[int]:
        """The fds the call carries (fd 0 is the ``h`` argument's, whatever its value)."""
        return [int(fd) for fd in self.ctx.message().unix_fds or []]

    def _close_fds(self) -> None:
        for fd in self._fds():
            os.close(fd)

    @method()
    @fwupd_errors
    async def GetPlugins(self) -> "aa{sv}":
        return []

    @method()
    @fwupd_errors
    async def ModifyRemote(self, remote_id: "s", key: "s", value: "s") -> None:
        raise NotSupported(
            "livefw remotes are configured in files (remotes_dir in livefw.conf); edit "
            f"{remote_id[:64]}.conf there"
        )

    @method()
    @fwupd_errors
    async def UpdateMetadata(self, remote_id: "s", data: "h", signature: "h") -> None:
        self._close_fds()
        raise NotSupported(
            "livefw has no download remotes; drop cabinets into a directory remote instead"
        )

    @method()
    @fwupd_errors
    async def GetHostSecurityEvents(self, limit: "u") -> "aa{sv}":
        return []  # livefw records no HSI change events (nothing to list)

    @method()
    @fwupd_errors
    async def FixHostSecurityAttr(self, appstream_id: "s") -> None:
        raise NotSupported(f"livefw cannot change {appstream_id[:64]}: it only reports it")

    @method()
    @fwupd_errors
    async def UndoHostSecurityAttr(self, appstream_id: "s") -> None:
        raise NotSupported(f"livefw never changed {appstream_id[:64]}: there is nothing to undo")

    @method()
    @fwupd_errors
    async def GetBiosSettings(self) -> "aa{sv}":
        raise NotSupported(NO_BIOS_SETTINGS)

    @method()
    @fwupd_errors
    async def SetBiosSettings(self, settings: "a{ss}") -> None:
        raise NotSupported(NO_BIOS_SETTINGS)

    @method()
    @fwupd_errors
    async def SelfSign(self, data: "s", options: "a{sv}") -> "s":
        raise NotSupported("livefw has no client certificate to sign reports with")

    @method()
    @fwupd_errors
    async def EmulationLoad(self, handle: "h") -> None:
        self._close_fds()
        raise NotSupported(NO_EMULATION)

    @method()
    @fwupd_errors
    async def EmulationSave(self, handle: "h") -> None:
        self._close_fds()
        raise NotSupported(NO_EMULATION)

    @method()
    @fwupd_errors
    async def Unlock(self, device_id: "s") -> None:
        self.service.device(device_id)
        raise NotSupported(f"Device {device_id} is not locked")

    @method()
    @fwupd_errors
    async def Verify(self, device_id: "s") -> None:
        self.service.device(device_id)
        raise NotSupported(NO_READ_BACK)

    @method()
    @fwupd_errors
    async def VerifyUpdate(self, device_id: "s") -> None:
        device = self.service.device(device_id)
        raise NotSupported(
            f"{device.name} cannot be read back (the kernel interface has no firmware "
            "read), so there is no checksum to store"
        )
