"""What the LFA images share: the agent's inventory as the kernel enumerated it.

The posted driver (``drivers/firmware/smccc/lfa_fw.c``; docs/kernel.md, Arm LFA)
creates one directory per image under ``/sys/firmware/lfa/`` and enumerates the
agent's inventory again after every successful activation
(``update_fw_images_tree()``, ``remove_invalid_fw_images()``): activating one image
can add or remove others. So the inventory is the state the devices share, and an
:class:`LfaDevice` re-reads it through its :class:`LfaContext` after activating,
without knowing its plugin. The plugin creates the one context and calls it from
coldplug, uevents and refresh.
"""

from __future__ import annotations

import errno
import uuid

from livefw.errors import KernelError
from livefw.kernel.uapi import lfa as uapi
from livefw.plugin import DeviceContext, PluginContext
from livefw.plugins.lfa.device import LfaDevice

__all__ = ["LfaContext"]


class LfaContext(DeviceContext):
    """The images under ``/sys/firmware/lfa``, one :class:`LfaDevice` each.

    Attributes:
        images: the registered devices by directory GUID.
    """

    def __init__(self, plugin: PluginContext) -> None:
        super().__init__(plugin)
        self.images: dict[str, LfaDevice] = {}

    async def guids(self) -> list[str]:
        """The image directories, in the kernel's order; anything else is logged."""
        guids = []
        for entry in await self.provider.listdir(uapi.LFA_SYSFS):
            try:
                guids.append(str(uuid.UUID(entry)))
            except ValueError:
                self.log.warning("lfa_unexpected_entry", entry=entry)
        return guids

    async def add_image(self, guid: str) -> None:
        """Create, read and register the device of ``guid`` unless it exists."""
        if guid in self.images:
            return
        base = f"{uapi.LFA_SYSFS}/{guid}"
        if not await self.provider.is_dir(base):
            return
        name = (await self.provider.read_attr(f"{base}/{uapi.ATTR_NAME}")).strip()
        if not name or name in (uapi.UNKNOWN_NAME_RFC, guid):
            # RFC postings print "(unknown)", v2+ the GUID (lfa_fw.c fw_images_uuids)
            name = f"LFA image {guid}"
        device = LfaDevice(self, guid, name)
        await device.read_options()
        await device.refresh()
        if guid in self.images:
            # registered while this one read the image: the rescan an activation runs
            # (LfaDevice.activate) and the uevent of the same enumeration race
            return
        self.images[guid] = device
        self.plugin.add_device(device)
        self.log.debug("lfa_image_added", guid=guid, name=name, version=device.version)

    def remove_image(self, guid: str) -> None:
        """Unregister the device of ``guid`` if there is one."""
        device = self.images.pop(guid, None)
        if device is not None:
            self.plugin.remove_device(device.id)
            self.log.info("lfa_image_removed", guid=guid)

    async def rescan(self) -> None:
        """Follow the kernel's enumeration: drop vanished images, add new ones, re-read all."""
        if not await self.provider.exists(uapi.LFA_SYSFS):
            for guid in list(self.images):
                self.remove_image(guid)
            return
        present = set(await self.guids())
        for guid in list(self.images):
            if guid not in present:
                self.remove_image(guid)
        for guid in sorted(present):
            if guid in self.images:
                try:
                    await self.images[guid].refresh()
                except KernelError as error:
                    if error.errno not in (errno.ENOENT, errno.ENODEV):
                        raise
                    self.remove_image(guid)
            else:
                await self.add_image(guid)
