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

import asyncio
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
        """The image directories (at most :data:`uapi.MAX_IMAGES`); others are logged."""
        guids: list[str] = []
        skipped = 0
        for entry in await self.provider.listdir(uapi.LFA_SYSFS):
            try:
                guid = str(uuid.UUID(entry))
            except ValueError:
                self.log.warning("lfa_unexpected_entry", entry=entry[:64])
                continue
            if len(guids) >= uapi.MAX_IMAGES:
                skipped += 1
                continue
            guids.append(guid)
        if skipped:
            self.log.warning("lfa_too_many_images", limit=uapi.MAX_IMAGES, skipped=skipped)
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
        try:
            await device.read_options()
            await device.read_state()
        except KernelError as error:
            if error.errno not in _GONE:
                raise
            return  # removed by a re-enumeration while it was read
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

    async def await_removals(self) -> None:
        """After an activation: let the driver delete the images it dropped, bounded.

        The v1+ driver invalidates every image, re-enumerates, and deletes those the
        agent no longer lists from a workqueue (lfa_fw.c ``update_fw_images_tree()``,
        ``remove_invalid_fw_images()``), possibly after the write to ``activate`` has
        returned. A rescan in that window would show them with the invalidated values
        (version 0.0, not capable), so the directories that read exactly those are
        waited for, at most :data:`uapi.REMOVAL_WAIT_S`; one still there is kept.
        """
        waiting = [guid for guid in list(self.images) if await self._invalidated(guid)]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + uapi.REMOVAL_WAIT_S
        while waiting and loop.time() < deadline:
            await asyncio.sleep(uapi.RETRY_INTERVAL_S)
            waiting = [
                guid for guid in waiting if await self.provider.is_dir(f"{uapi.LFA_SYSFS}/{guid}")
            ]
        if waiting:
            self.log.warning("lfa_invalidated_image_stays", guids=waiting[:8])

    async def _invalidated(self, guid: str) -> bool:
        base = f"{uapi.LFA_SYSFS}/{guid}"
        values = []
        for name in (
            uapi.ATTR_ACTIVATION_CAPABLE,
            uapi.ATTR_MAY_RESET_CPU,
            uapi.ATTR_CPU_RENDEZVOUS,
            uapi.ATTR_CURRENT_VERSION,
        ):
            try:
                values.append((await self.provider.read_attr(f"{base}/{name}")).strip())
            except KernelError as error:
                if error.errno not in _GONE:
                    raise
                return False  # gone already, or a posting without current_version
            if values[-1] != uapi.INVALIDATED[len(values) - 1]:
                return False
        return True

    async def rescan(self, *, options: bool = False) -> None:
        """Follow the kernel's enumeration: drop vanished images, add new ones, re-read all.

        The driver names each directory by the image's GUID and, re-enumerating after
        an activation, keeps the directories whose GUID the agent still lists, adds
        the new ones and removes the rest (lfa_fw.c ``update_fw_image_node()``,
        ``remove_invalid_fw_images()``); a device is matched to its directory the same
        way. Nothing announces such a change (docs/kernel.md, Uevents), so this runs
        on the triggers the plugin's module docstring lists. Bounded: at most
        :data:`uapi.MAX_IMAGES` images, one page per attribute read.

        Args:
            options: also re-read ``force_cpu_rendezvous`` and ``auto_activate``
                (``Refresh``, a module reload: only the administrator changes them).
        """
        if not await self.provider.exists(uapi.LFA_SYSFS):
            for guid in list(self.images):
                self.remove_image(guid)
            return
        present = await self.guids()
        listed = set(present)
        for guid in list(self.images):
            if guid not in listed:
                self.remove_image(guid)
        for guid in present:
            device = self.images.get(guid)
            if device is None:
                await self.add_image(guid)
                continue
            try:
                if options:
                    await device.read_options()
                await device.read_state()
            except KernelError as error:
                if error.errno not in _GONE:
                    raise
                self.remove_image(guid)


#: errnos of an image directory that vanished while it was read.
_GONE = (errno.ENOENT, errno.ENODEV)
