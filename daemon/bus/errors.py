"""Domain errors -> D-Bus error replies: one table, one decorator per API.

Every error class a client can receive has one row in :data:`ERROR_TABLE`: its name
on livefw's API (``org.livefw.Daemon1.Error.<Name>``, the class's ``name``) and on
the fwupd-compatible API (``org.freedesktop.fwupd.<Name>``, which has fewer names:
no InvalidArgument, Busy or NoSpace). An API picks its column
(:func:`livefw_error_name`, :func:`fwupd_error_name`) and its decorator
(:func:`dbus_errors`, :func:`fwupd_errors`); both decorators behave alike.
"""

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog

from livefw.bus.backend import DBusError
from livefw.errors import (
    ERROR_PREFIX,
    ActivationFailed,
    AuthFailed,
    Busy,
    Internal,
    InvalidArgument,
    InvalidFile,
    LivefwError,
    NoSpace,
    NotFound,
    NothingToDo,
    NotSupported,
    PermissionDenied,
    Timeout,
    VersionNewer,
    VersionSame,
)

__all__ = [
    "ERROR_TABLE",
    "FWUPD_ERROR_PREFIX",
    "FWUPD_NAMES",
    "dbus_errors",
    "error_replies",
    "fwupd_error_name",
    "fwupd_errors",
    "livefw_error_name",
]

log = structlog.get_logger("livefw.bus")

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

#: fwupd's error domain on D-Bus (libfwupd/fwupd-error.c: fwupd_error_to_string()).
FWUPD_ERROR_PREFIX = "org.freedesktop.fwupd."

#: Every error class a client can receive -> its fwupd name (FwupdError). Its livefw
#: name is the class's ``name``. Where fwupd has no such error, the closest one a
#: fwupd client acts on: a bad option is a bad request (InvalidFile), a busy device
#: means "try later" (AlreadyPending), a full store a failed write (Write).
ERROR_TABLE: dict[type[LivefwError], str] = {
    Internal: "Internal",
    NotFound: "NotFound",
    InvalidFile: "InvalidFile",
    InvalidArgument: "InvalidFile",
    NotSupported: "NotSupported",
    AuthFailed: "AuthFailed",
    Busy: "AlreadyPending",
    VersionNewer: "VersionNewer",
    VersionSame: "VersionSame",
    NothingToDo: "NothingToDo",
    NoSpace: "Write",
    ActivationFailed: "Internal",
    PermissionDenied: "PermissionDenied",
    Timeout: "Internal",
}

#: livefw short name (``Busy``) -> fwupd short name (``AlreadyPending``): the column a
#: reply renamer picks by the livefw name an error replied with.
FWUPD_NAMES: dict[str, str] = {cls.name: fwupd for cls, fwupd in ERROR_TABLE.items()}


def livefw_error_name(error: LivefwError) -> str:
    """The error's full name on livefw's API (``org.livefw.Daemon1.Error.Busy``)."""
    return error.dbus_name


def fwupd_error_name(error: LivefwError) -> str:
    """The error's full name on the fwupd-compatible API (``org.freedesktop.fwupd.X``).

    It follows the livefw name the error replies with, so a :class:`KernelError`
    for EBUSY is ``AlreadyPending`` on both APIs' terms; a name without a row is
    ``Internal``.
    """
    short = error.dbus_name.removeprefix(ERROR_PREFIX)
    return FWUPD_ERROR_PREFIX + FWUPD_NAMES.get(short, "Internal")


def error_replies(name_of: Callable[[LivefwError], str]) -> Callable[[F], F]:
    """A decorator that turns a method's exceptions into D-Bus error replies.

    A refused call (a LivefwError: bad argument, bad file, not found, ...) is one
    log line, ``method_refused``, with the error's name and message, and the reply
    ``name_of(error)``. Anything else is a bug: the API's ``Internal`` with a short
    message, and the traceback goes to the log (``method_failed``), never to the
    client.
    """

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return await fn(*args, **kwargs)
            except DBusError:
                raise
            except LivefwError as error:
                log.info(
                    "method_refused", method=fn.__name__, error=error.name, reason=error.message
                )
                raise DBusError(name_of(error), error.message) from error
            except Exception as error:
                log.exception("method_failed", method=fn.__name__)
                internal = Internal(f"internal error in {fn.__name__}: {type(error).__name__}")
                raise DBusError(name_of(internal), internal.message) from error

        return wrapper  # type: ignore[return-value]

    return decorate


#: livefw's API: ``org.livefw.Daemon1.Error.<Name>``. Put it under ``@method()``.
dbus_errors = error_replies(livefw_error_name)
#: the fwupd-compatible API: ``org.freedesktop.fwupd.<Name>``, never livefw's names.
fwupd_errors = error_replies(fwupd_error_name)
