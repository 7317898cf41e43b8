"""Exit codes of ``livefw`` (documented in the README; scripts rely on them)."""

OK = 0
FAILURE = 1  # the operation failed (activation failed, internal error, ...)
USAGE = 2  # bad command line (argparse)
NOT_FOUND = 3  # no such device, session, history entry
AUTH = 4  # not authorized (polkit), or not permitted (the kernel or the scope policy)
NOT_SUPPORTED = 5  # the device cannot do that
BUSY = 6  # try again later
NOTHING_TO_DO = 7  # valid request, nothing to do (no pending image, no update)
INVALID = 8  # the file or an argument was refused (InvalidFile, VersionNewer, ...)
UNAVAILABLE = 69  # livefwd is not running or not reachable (EX_UNAVAILABLE)

#: D-Bus error short names -> exit codes.
BY_ERROR = {
    "NotFound": NOT_FOUND,
    "AuthFailed": AUTH,
    "PermissionDenied": AUTH,
    "NotSupported": NOT_SUPPORTED,
    "Busy": BUSY,
    "NothingToDo": NOTHING_TO_DO,
    "InvalidFile": INVALID,
    "InvalidArgument": INVALID,
    "VersionNewer": INVALID,
    "VersionSame": INVALID,
}


def for_error(short_name: str) -> int:
    """The exit code for a D-Bus error short name."""
    return BY_ERROR.get(short_name, FAILURE)
