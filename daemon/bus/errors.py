"""Domain errors -> D-Bus error replies, in one decorator."""

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog

from livefw.bus.backend import DBusError
from livefw.errors import Internal, LivefwError

log = structlog.get_logger("livefw.bus")

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def dbus_errors(fn: F) -> F:
    """Map :class:`LivefwError` to ``org.livefw.Daemon1.Error.<Name>``.

    A refused call (a LivefwError: bad argument, bad file, not found, ...) is one
    log line, ``method_refused``, with the error's name and message. Anything else
    is a bug: ``Error.Internal`` with a short message, and the traceback goes to the
    log, never to the client. Put it under ``@method()``.
    """

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(*args, **kwargs)
        except DBusError:
            raise
        except LivefwError as error:
            log.info("method_refused", method=fn.__name__, error=error.name, reason=error.message)
            raise DBusError(error.dbus_name, error.message) from error
        except Exception as error:
            log.exception("method_failed", method=fn.__name__)
            internal = Internal(f"internal error in {fn.__name__}: {type(error).__name__}")
            raise DBusError(internal.dbus_name, internal.message) from error

    return wrapper  # type: ignore[return-value]
