"""fwupd's UPDATE_INFO record: what fwupd-efi reads to deliver a capsule at the next boot.

Source: fwupd-efi ``efi/fwup-efi.h`` (the record, its version and status values) and
``efi/fwupdate.c`` (the checks before it trusts a record); the variables live under
:data:`~livefw.kernel.uapi.efi.names.FWUPDATE_GUID`.
"""

from __future__ import annotations

import struct

from livefw.kernel.uapi.capsule import guid_from_efi, guid_to_efi
from livefw.kernel.uapi.efi.efitime import EfiTime
from livefw.kernel.uapi.efi.load_option import (
    DevicePathNode,
    FilePathNode,
    decode_device_path,
    encode_device_path,
)
from livefw.record import Frozen

__all__ = [
    "BOOTLOADER_SUPPORTS_FWUPD",
    "FWUPDATE_DEBUG_LOG",
    "FWUPDATE_MAX_RECORDS",
    "FWUPDATE_VERBOSE",
    "UPDATE_INFO_HEADER",
    "UPDATE_INFO_MIN_EXCLUSIVE",
    "UPDATE_INFO_STATUS_ATTEMPTED",
    "UPDATE_INFO_STATUS_ATTEMPT_UPDATE",
    "UPDATE_INFO_STATUS_UNKNOWN",
    "UPDATE_INFO_VERSION",
    "UpdateInfo",
    "update_info_name",
]

#: fwupd-efi fwup-efi.h: the record version fwupd writes.
UPDATE_INFO_VERSION = 7
#: header: update_info_version, guid, capsule_flags, hw_inst, time_attempted, status.
UPDATE_INFO_HEADER = struct.Struct("<I16sIQ16sI")
#: fwupd-efi rejects records of this size or less (header plus one 4-byte node;
#: efi/fwupdate.c, the record size check before it trusts the device path).
UPDATE_INFO_MIN_EXCLUSIVE = 60
UPDATE_INFO_STATUS_UNKNOWN = 0
UPDATE_INFO_STATUS_ATTEMPT_UPDATE = 1
UPDATE_INFO_STATUS_ATTEMPTED = 2
#: fwupd-efi reads these under the fwupd GUID and never treats them as records.
FWUPDATE_VERBOSE = "FWUPDATE_VERBOSE"
FWUPDATE_DEBUG_LOG = "FWUPDATE_DEBUG_LOG"
BOOTLOADER_SUPPORTS_FWUPD = "BootloaderSupportsFwupd"
#: fwupd-efi handles at most this many records.
FWUPDATE_MAX_RECORDS = 128


def update_info_name(fw_class: str, hw_instance: int = 0) -> str:
    """``fwupd-<fw_class>-<hw_instance>``: the UPDATE_INFO variable's name."""
    return f"fwupd-{fw_class.lower()}-{hw_instance}"


#: the default time_attempted (all zero), one instance as the dataclass's default was
_NO_TIME = EfiTime()


class UpdateInfo(Frozen):
    """fwupd's UPDATE_INFO record (``fwupd-<guid>-0`` under :data:`FWUPDATE_GUID`)."""

    _FIELDS = (
        "guid",
        "capsule_flags",
        "device_path",
        "hw_inst",
        "time_attempted",
        "status",
        "version",
    )
    guid: str
    capsule_flags: int
    device_path: list[DevicePathNode]
    hw_inst: int = 0
    time_attempted: EfiTime = _NO_TIME
    status: int = UPDATE_INFO_STATUS_ATTEMPT_UPDATE
    version: int = UPDATE_INFO_VERSION

    def __init__(
        self,
        guid: str,
        capsule_flags: int,
        device_path: list[DevicePathNode],
        hw_inst: int = 0,
        time_attempted: EfiTime = _NO_TIME,
        status: int = UPDATE_INFO_STATUS_ATTEMPT_UPDATE,
        version: int = UPDATE_INFO_VERSION,
    ) -> None:
        _set = object.__setattr__
        _set(self, "guid", guid)
        _set(self, "capsule_flags", capsule_flags)
        _set(self, "device_path", device_path)
        _set(self, "hw_inst", hw_inst)
        _set(self, "time_attempted", time_attempted)
        _set(self, "status", status)
        _set(self, "version", version)

    def pack(self) -> bytes:
        """The 52-byte header followed by the capsule file's device path."""
        return UPDATE_INFO_HEADER.pack(
            self.version,
            guid_to_efi(self.guid),
            self.capsule_flags,
            self.hw_inst,
            self.time_attempted.pack(),
            self.status,
        ) + encode_device_path(self.device_path)

    @classmethod
    def unpack(cls, data: bytes) -> UpdateInfo:
        """Decode and validate as fwupd-efi does; raises ValueError when malformed."""
        if len(data) <= UPDATE_INFO_MIN_EXCLUSIVE:
            raise ValueError(
                f"UPDATE_INFO of {len(data)} bytes is too small (must exceed "
                f"{UPDATE_INFO_MIN_EXCLUSIVE})"
            )
        version, guid, flags, hw_inst, stamp, status = UPDATE_INFO_HEADER.unpack_from(data)
        nodes = decode_device_path(bytes(data[UPDATE_INFO_HEADER.size :]))
        return cls(
            guid=guid_from_efi(guid),
            capsule_flags=flags,
            device_path=nodes,
            hw_inst=hw_inst,
            time_attempted=EfiTime.unpack(stamp),
            status=status,
            version=version,
        )

    def file_path(self) -> str:
        """The capsule's path on the ESP (backslashes), or ``""``."""
        return next((n.path for n in self.device_path if isinstance(n, FilePathNode)), "")
