"""The one error hierarchy of livefw.

Every error a client can receive is a subclass of :class:`LivefwError` with a
``dbus_name`` under ``org.livefw.Daemon1.Error.``. The bus layer maps them to D-Bus
error replies; anything else becomes ``Error.Internal``. Messages are written for the
person at the other end: they say what went wrong and what to do about it.
"""

from __future__ import annotations

import errno as errno_mod
import os
from typing import ClassVar

ERROR_PREFIX = "org.livefw.Daemon1.Error."


class LivefwError(Exception):
    """Base of every error livefw reports to a client.

    Attributes:
        name: the short error name; the D-Bus name is ``ERROR_PREFIX + name``.
    """

    name: ClassVar[str] = "Internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def dbus_name(self) -> str:
        """The full D-Bus error name."""
        return ERROR_PREFIX + self.name


class Internal(LivefwError):
    """A bug or an unexpected condition inside livefwd."""

    name = "Internal"


class NotFound(LivefwError):
    """No device, history entry, session or file of that name or id."""

    name = "NotFound"


class InvalidFile(LivefwError):
    """A payload that cannot be installed: wrong format, truncated, for another device."""

    name = "InvalidFile"


class PayloadMismatch(InvalidFile):
    """A payload for this kind of device that this one refuses (D-Bus name: InvalidFile).

    Another platform, another update type. A plugin raises it instead of plain
    InvalidFile when the payload is of its format but not for this device, so that
    ``livefw install FILE`` names this device as the closest candidate
    (livefw.planner).
    """


class InvalidArgument(LivefwError):
    """A method argument out of range or of the wrong form."""

    name = "InvalidArgument"


class NotSupported(LivefwError):
    """The device or machine cannot do what was asked."""

    name = "NotSupported"


class AuthFailed(LivefwError):
    """The caller is not authorized for the action."""

    name = "AuthFailed"


class Busy(LivefwError):
    """The device or firmware is busy; try again later."""

    name = "Busy"


class VersionNewer(LivefwError):
    """The device already runs a newer version than the payload."""

    name = "VersionNewer"


class VersionSame(LivefwError):
    """The device already runs the payload's version."""

    name = "VersionSame"


class NothingToDo(LivefwError):
    """The request is valid but there is nothing to do (no pending image, no update)."""

    name = "NothingToDo"


class NoSpace(LivefwError):
    """A kernel or firmware store is full (ESP, variable store, buffer)."""

    name = "NoSpace"


class ActivationFailed(LivefwError):
    """The firmware refused or failed an activation; the old firmware keeps running."""

    name = "ActivationFailed"


class PermissionDenied(LivefwError):
    """The kernel refused the operation (EPERM/EACCES) even though the caller is authorized."""

    name = "PermissionDenied"


class Timeout(LivefwError):
    """The kernel or firmware did not answer in time."""

    name = "Timeout"


class ConfigError(LivefwError):
    """The configuration file is invalid; the message names the key."""

    name = "InvalidArgument"


#: errno -> error class used by :class:`KernelError` for its D-Bus name.
_ERRNO_NAMES: dict[int, str] = {
    errno_mod.EBUSY: Busy.name,
    errno_mod.EAGAIN: Busy.name,
    errno_mod.ENOENT: NotFound.name,
    errno_mod.ENODEV: NotFound.name,
    errno_mod.ENXIO: NotFound.name,
    errno_mod.EPERM: PermissionDenied.name,
    errno_mod.EACCES: PermissionDenied.name,
    errno_mod.EROFS: PermissionDenied.name,
    errno_mod.EINVAL: InvalidArgument.name,
    errno_mod.E2BIG: InvalidArgument.name,
    errno_mod.EMSGSIZE: InvalidArgument.name,
    errno_mod.ENOSPC: NoSpace.name,
    errno_mod.ENOTTY: NotSupported.name,
    errno_mod.EOPNOTSUPP: NotSupported.name,
    errno_mod.ECANCELED: ActivationFailed.name,
    errno_mod.ETIMEDOUT: Timeout.name,
}


class KernelError(LivefwError):
    """A kernel interface returned an errno.

    The provider raises this for every failed system call, so plugins can map the
    errno to what it means for their technology (``error.errno``). Unmapped, its D-Bus
    name follows the errno (EBUSY -> Busy, ENOSPC -> NoSpace, ...).

    Attributes:
        errno: the errno the kernel returned.
        op: the operation (``read``, ``write``, ``ioctl``, ``open`` ...).
        path: the provider-relative path.
    """

    def __init__(self, err: int, op: str, path: str, detail: str = "") -> None:
        self.errno = err
        self.op = op
        self.path = path
        text = f"{op} {path or '(fd)'}: {os.strerror(err)} ({errno_mod.errorcode.get(err, err)})"
        if detail:
            text += f": {detail}"
        super().__init__(text)

    @property
    def dbus_name(self) -> str:  # noqa: D102 (documented on the base class)
        return ERROR_PREFIX + _ERRNO_NAMES.get(self.errno, Internal.name)


#: Every error name a client can receive, for documentation and the contract test.
ALL_ERRORS: tuple[type[LivefwError], ...] = (
    Internal,
    NotFound,
    InvalidFile,
    InvalidArgument,
    NotSupported,
    AuthFailed,
    Busy,
    VersionNewer,
    VersionSame,
    NothingToDo,
    NoSpace,
    ActivationFailed,
    PermissionDenied,
    Timeout,
)
