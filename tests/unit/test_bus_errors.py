"""The one error table: livefw and fwupd names per error class, one decorator per API."""

import errno

import pytest
from structlog.testing import capture_logs

from livefw.bus.backend import DBusError
from livefw.bus.errors import (
    ERROR_TABLE,
    FWUPD_ERROR_PREFIX,
    FWUPD_NAMES,
    dbus_errors,
    fwupd_error_name,
    fwupd_errors,
    livefw_error_name,
)
from livefw.errors import (
    ALL_ERRORS,
    Busy,
    ConfigError,
    InvalidArgument,
    KernelError,
    LivefwError,
    NoSpace,
    NotFound,
    Timeout,
)

#: what the fwupd-compatible interface has replied with since it exists
FWUPD = {
    "Internal": "Internal",
    "NotFound": "NotFound",
    "InvalidFile": "InvalidFile",
    "InvalidArgument": "InvalidFile",
    "NotSupported": "NotSupported",
    "AuthFailed": "AuthFailed",
    "Busy": "AlreadyPending",
    "VersionNewer": "VersionNewer",
    "VersionSame": "VersionSame",
    "NothingToDo": "NothingToDo",
    "NoSpace": "Write",
    "ActivationFailed": "Internal",
    "PermissionDenied": "PermissionDenied",
    "Timeout": "Internal",
}


def test_every_client_visible_error_has_one_row() -> None:
    assert set(ERROR_TABLE) == set(ALL_ERRORS)
    assert {cls.name: fwupd for cls, fwupd in ERROR_TABLE.items()} == FWUPD == FWUPD_NAMES


@pytest.mark.parametrize("cls", ALL_ERRORS)
def test_each_api_picks_its_column(cls: type[LivefwError]) -> None:
    error = cls("x")
    assert livefw_error_name(error) == "org.livefw.Daemon1.Error." + cls.name
    assert fwupd_error_name(error) == FWUPD_ERROR_PREFIX + FWUPD[cls.name]


def test_subclasses_and_kernel_errors_go_by_the_name_they_reply_with() -> None:
    assert fwupd_error_name(ConfigError("bad key")) == FWUPD_ERROR_PREFIX + "InvalidFile"
    busy = KernelError(errno.EBUSY, "ioctl", "dev/x")
    assert livefw_error_name(busy).endswith(".Busy")
    assert fwupd_error_name(busy) == FWUPD_ERROR_PREFIX + "AlreadyPending"
    odd = KernelError(errno.EIO, "read", "sys/x")
    assert fwupd_error_name(odd) == FWUPD_ERROR_PREFIX + "Internal"


@pytest.mark.parametrize(
    ("decorator", "error", "name"),
    [
        (dbus_errors, NotFound("no such device"), "org.livefw.Daemon1.Error.NotFound"),
        (dbus_errors, Busy("later"), "org.livefw.Daemon1.Error.Busy"),
        (fwupd_errors, Busy("later"), "org.freedesktop.fwupd.AlreadyPending"),
        (fwupd_errors, NoSpace("ESP full"), "org.freedesktop.fwupd.Write"),
        (fwupd_errors, InvalidArgument("bad"), "org.freedesktop.fwupd.InvalidFile"),
        (fwupd_errors, Timeout("slow"), "org.freedesktop.fwupd.Internal"),
    ],
)
async def test_refusals_reply_with_the_apis_name_and_the_message(
    decorator: object, error: LivefwError, name: str
) -> None:
    @decorator  # type: ignore[misc,operator]
    async def Method() -> None:
        raise error

    with capture_logs() as logs, pytest.raises(DBusError) as raised:
        await Method()
    assert (raised.value.type, raised.value.text) == (name, error.message)
    assert [entry["event"] for entry in logs] == ["method_refused"]


@pytest.mark.parametrize(
    ("decorator", "name"),
    [
        (dbus_errors, "org.livefw.Daemon1.Error.Internal"),
        (fwupd_errors, "org.freedesktop.fwupd.Internal"),
    ],
)
async def test_bugs_are_internal_without_a_traceback(decorator: object, name: str) -> None:
    @decorator  # type: ignore[misc,operator]
    async def Method() -> None:
        raise KeyError("secret detail")

    with capture_logs() as logs, pytest.raises(DBusError) as raised:
        await Method()
    assert raised.value.type == name
    assert raised.value.text == "internal error in Method: KeyError"
    assert "secret" not in raised.value.text
    assert [entry["event"] for entry in logs] == ["method_failed"]


async def test_dbus_errors_pass_through() -> None:
    @dbus_errors
    async def Method() -> None:
        raise DBusError("org.example.Mine", "as it is")

    with pytest.raises(DBusError) as raised:
        await Method()
    assert raised.value.type == "org.example.Mine"
