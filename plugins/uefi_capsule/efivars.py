"""EFI variables through efivarfs, with its rules (fs/efivarfs/; docs/kernel.md).

One ``write()`` is one SetVariable; files outside the kernel's whitelist are
immutable and are made mutable just for the write or the unlink, then made
immutable again (as fwupd does). Errors become livefw errors that tell a person
what to do.
"""

from __future__ import annotations

import errno

from livefw.errors import (
    Internal,
    InvalidArgument,
    KernelError,
    LivefwError,
    NoSpace,
    PermissionDenied,
)
from livefw.kernel import KernelProvider, OpenFlags
from livefw.kernel.uapi import efi


def map_var_error(error: KernelError, what: str) -> LivefwError:
    """An efivarfs errno as a livefw error naming the variable."""
    if error.errno == errno.ENOSPC:
        return NoSpace(
            f"the EFI variable store is full while writing {what}: delete unused variables "
            "(old Boot#### entries, FWUPDATE_DEBUG_LOG, dump-* crash records) and retry"
        )
    if error.errno == errno.EROFS:
        return PermissionDenied(
            f"efivarfs refused to write {what}: it is mounted read-only or the firmware "
            "write-protects the variable; remount /sys/firmware/efi/efivars read-write"
        )
    if error.errno in (errno.EPERM, errno.EACCES):
        return PermissionDenied(
            f"the kernel refused to change {what}: it is immutable and the flag could not be "
            "cleared (livefwd needs CAP_LINUX_IMMUTABLE), or the firmware denied access"
        )
    if error.errno == errno.EINVAL:
        return InvalidArgument(f"the kernel or firmware rejected the contents of {what}")
    if error.errno == errno.EIO:
        # fs/efivarfs/file.c efivarfs_file_write(): EFI_NOT_FOUND from SetVariable
        # (nothing to delete or append to) and EFI_DEVICE_ERROR both arrive as EIO
        return Internal(
            f"the firmware failed the SetVariable call for {what} (EIO: EFI_NOT_FOUND or a "
            "device error); check the firmware log and retry after a reboot"
        )
    return error


def map_delete_error(error: KernelError, what: str) -> LivefwError:
    """An errno from unlink() in efivarfs as a livefw error.

    fs/efivarfs/inode.c ``efivarfs_unlink()`` answers EINVAL for *any* failed delete
    (the firmware's EFI_WRITE_PROTECTED, EFI_SECURITY_VIOLATION, a device error), so
    EINVAL here is the firmware refusing, not bad data from livefw.
    """
    if error.errno == errno.EINVAL:
        return PermissionDenied(
            f"the firmware refused to delete {what} (efivarfs reports every failed delete "
            "as EINVAL: the variable is write-protected or the firmware failed); delete it "
            "from the firmware setup or with efibootmgr, then retry"
        )
    return map_var_error(error, what)


class EfiVars:
    """Read, write and delete EFI variables through a kernel provider."""

    def __init__(self, provider: KernelProvider) -> None:
        self.provider = provider

    async def get(self, name: str, guid: str) -> tuple[int, bytes] | None:
        """``(attributes, data)`` or None when the variable does not exist."""
        path = efi.var_path(name, guid)
        try:
            raw = await self.provider.read_file(path)
        except KernelError as error:
            if error.errno == errno.ENOENT:
                return None
            raise
        if len(raw) < 4:
            return None  # created but never written: not a variable yet
        return efi.decode_var(raw)

    async def get_data(self, name: str, guid: str) -> bytes | None:
        """Only the data."""
        found = await self.get(name, guid)
        return found[1] if found is not None else None

    async def names(self, guid: str) -> list[str]:
        """Variable names under ``guid``."""
        try:
            files = await self.provider.listdir(efi.EFIVARS_DIR)
        except KernelError as error:
            if error.errno in (errno.ENOENT, errno.ENOTDIR):
                return []
            raise
        names = []
        for filename in files:
            try:
                name, var_guid = efi.parse_var_filename(filename)
            except ValueError:
                continue
            if var_guid == guid.lower():
                names.append(name)
        return names

    async def set(
        self, name: str, guid: str, data: bytes, attributes: int = efi.EFI_VARIABLE_DEFAULT
    ) -> None:
        """SetVariable: one write of attributes + data, clearing ``immutable`` around it.

        Raises:
            NoSpace, PermissionDenied, InvalidArgument: see :func:`map_var_error`.
        """
        path = efi.var_path(name, guid)
        what = f"the EFI variable {name}"
        was_immutable = False
        existed = False
        try:
            existed = await self.provider.exists(path)
            if existed:
                was_immutable = await self.provider.get_immutable(path)
                if was_immutable:
                    await self.provider.set_immutable(path, False)
            handle = await self.provider.open(path, OpenFlags.WRITE | OpenFlags.CREATE)
            try:
                content = efi.encode_var(attributes, data)
                written = await handle.write(content)
                if written != len(content):
                    raise KernelError(errno.EIO, "write", path, "short write")
            finally:
                await handle.close()
            if was_immutable:
                await self.provider.set_immutable(path, True)
        except KernelError as error:
            if not existed:
                await self._drop_uncommitted(path)
            raise map_var_error(error, what) from error

    async def _drop_uncommitted(self, path: str) -> None:
        """Remove the empty inode a failed first write leaves behind (best effort)."""
        try:
            if await self.provider.exists(path) and not await self.provider.read_file(path):
                await self.provider.unlink(path)
        except KernelError:
            pass

    async def delete(self, name: str, guid: str) -> bool:
        """Delete with unlink (works for every variable); False when it did not exist."""
        path = efi.var_path(name, guid)
        try:
            if not await self.provider.exists(path):
                return False
            if await self.provider.get_immutable(path):
                await self.provider.set_immutable(path, False)
            await self.provider.unlink(path)
        except KernelError as error:
            if error.errno == errno.ENOENT:
                return False
            raise map_delete_error(error, f"the EFI variable {name}") from error
        return True
