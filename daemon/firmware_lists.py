"""The blocked and approved firmware checksums, honoured by every install.

fwupd's ``SetBlockedFirmware`` / ``SetApprovedFirmware`` (``fwupdmgr block-firmware``,
``set-approved-firmware``) fill them through the fwupd-compatible API; the engine
checks them when it plans an install (:meth:`livefw.engine.Engine.plan`), so the
native ``Install`` and ``livefw install`` refuse the same files with the same error
and message as the fwupd-compatible ``Install``.

A cabinet is known by the SHA-1 and SHA-256 of the ``.cab`` file (the checksums
fwupdmgr prints and fwupd keeps); a raw payload on the native API by those of the
file itself. Kept in the daemon's state directory (``fwupd-firmware-lists.json``),
written atomically and never through a link (livefw.statefiles).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import structlog

from livefw.errors import InvalidFile, NotSupported
from livefw.statefiles import StateDirError, read_private, write_atomic

if TYPE_CHECKING:
    from livefw.planner import Plan

__all__ = ["CHECKSUMS_MAX", "CHECKSUM_RE", "FirmwareLists", "checksums"]

log = structlog.get_logger("livefw.firmware_lists")

#: Set*Firmware: checksums in a list, and a checksum's shape (SHA-1 or SHA-256 hex).
CHECKSUMS_MAX = 1024
CHECKSUM_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
#: the biggest file read back (a full list of 1,024 SHA-256 sums is ~70 KiB).
LISTS_FILE_MAX = 1 << 20
LISTS_FILE = "fwupd-firmware-lists.json"


def checksums(values: Iterable[str]) -> set[str]:
    """Validate a checksum list (SHA-1 or SHA-256 hex) from Set*Firmware.

    Raises:
        InvalidFile: more than CHECKSUMS_MAX, or one that is not a checksum.
    """
    values = list(values)
    if len(values) > CHECKSUMS_MAX:
        raise InvalidFile(f"at most {CHECKSUMS_MAX} checksums")
    result = set()
    for value in values:
        text = value.strip().lower()
        if not CHECKSUM_RE.fullmatch(text):
            raise InvalidFile(f"{value[:80]!r} is not a SHA-1 or SHA-256 checksum")
        result.add(text)
    return result


def _sums(data: bytes | memoryview) -> tuple[str, str]:
    return hashlib.sha1(data).hexdigest(), hashlib.sha256(data).hexdigest()


class FirmwareLists:
    """The blocked and approved checksums in ``state_dir``.

    A missing, unreadable or malformed file reads as empty lists (and is logged).
    """

    def __init__(self, state_dir: str) -> None:
        self._path = os.path.join(state_dir, LISTS_FILE)
        self.blocked: set[str] = set()
        self.approved: set[str] = set()
        try:
            value: Any = json.loads(read_private(self._path, LISTS_FILE_MAX) or b"null")
        except (OSError, ValueError, StateDirError) as error:
            log.warning("firmware_lists_unreadable", path=self._path, error=str(error))
            value = None
        if isinstance(value, dict):
            self.blocked = self._valid(value.get("blocked"))
            self.approved = self._valid(value.get("approved"))

    @staticmethod
    def _valid(value: Any) -> set[str]:
        if not isinstance(value, list):
            return set()
        return {str(c) for c in value if CHECKSUM_RE.fullmatch(str(c))}

    def set(self, *, blocked: set[str] | None = None, approved: set[str] | None = None) -> None:
        """Replace the blocked and/or approved checksums; saved now."""
        if blocked is not None:
            self.blocked = blocked
        if approved is not None:
            self.approved = approved
        data = {"blocked": sorted(self.blocked), "approved": sorted(self.approved)}
        write_atomic(self._path, json.dumps(data).encode())

    def check(self, sha1: str, sha256: str) -> None:
        """Refuse a blocked file, or one not approved while an approved list is set.

        Raises:
            NotSupported: blocked, or not approved.
        """
        sums = {sha1, sha256}
        if sums & self.blocked:
            raise NotSupported(
                f"Firmware {sha1} is blocked (fwupdmgr unblock-firmware to allow it)"
            )
        if self.approved and not sums & self.approved:
            raise NotSupported(
                f"Firmware {sha1} is not in the approved list (fwupdmgr set-approved-firmware)"
            )

    async def check_plans(self, plans: Iterable[Plan]) -> None:
        """:meth:`check` each plan's file: its cabinet, or the raw payload itself.

        A raw payload is hashed (off the loop) only while a list is set.

        Raises:
            NotSupported: a plan's file is blocked or not approved.
        """
        if not self.blocked and not self.approved:
            return
        for plan in plans:
            if plan.candidate is not None:
                self.check(plan.candidate.cabinet.sha1, plan.candidate.cabinet.sha256)
            else:
                self.check(*await asyncio.to_thread(_sums, plan.payload.data))
