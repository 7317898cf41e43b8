"""Update state, transient status and their allowed transitions.

As in fwupd, three things are kept apart: the persistent :class:`UpdateState` of a
device (what happened to the last update), the transient :class:`Status` of an
operation in flight with its percentage, and the device flags. A history row has a
:class:`HistoryState` of its own (livefw.history), with its own allowed transitions.
"""

from __future__ import annotations

from enum import StrEnum

from livefw.errors import Internal

__all__ = [
    "ALLOWED",
    "FLAGS",
    "HISTORY_ALLOWED",
    "HistoryState",
    "Status",
    "UpdateState",
    "history_transition",
    "transition",
]


class UpdateState(StrEnum):
    """What happened to a device's last update (wire value: kebab-case string)."""

    NONE = "none"
    PENDING = "pending"
    NEEDS_REBOOT = "needs-reboot"
    SUCCESS = "success"
    FAILED = "failed"
    FAILED_TRANSIENT = "failed-transient"


class Status(StrEnum):
    """What an operation is doing right now."""

    IDLE = "idle"
    LOADING = "loading"
    WAITING_FOR_AUTH = "waiting-for-auth"
    DEVICE_BUSY = "device-busy"
    DEVICE_READ = "device-read"
    DEVICE_WRITE = "device-write"
    DEVICE_VERIFY = "device-verify"
    DEVICE_ACTIVATE = "device-activate"
    SCHEDULING = "scheduling"
    SHUTDOWN = "shutdown"


_ANY_RESULT = frozenset({UpdateState.SUCCESS, UpdateState.FAILED, UpdateState.FAILED_TRANSIENT})

#: from -> the states a device may move to. ``transition`` refuses anything else.
ALLOWED: dict[UpdateState, frozenset[UpdateState]] = {
    UpdateState.NONE: _ANY_RESULT | {UpdateState.PENDING, UpdateState.NEEDS_REBOOT},
    # a device waits for one thing at a time: an activation or a reboot, not both
    UpdateState.PENDING: _ANY_RESULT | {UpdateState.NONE},
    UpdateState.NEEDS_REBOOT: _ANY_RESULT | {UpdateState.NONE},
    UpdateState.SUCCESS: _ANY_RESULT
    | {UpdateState.NONE, UpdateState.PENDING, UpdateState.NEEDS_REBOOT},
    UpdateState.FAILED: _ANY_RESULT
    | {UpdateState.NONE, UpdateState.PENDING, UpdateState.NEEDS_REBOOT},
    UpdateState.FAILED_TRANSIENT: _ANY_RESULT
    | {UpdateState.NONE, UpdateState.PENDING, UpdateState.NEEDS_REBOOT},
}


def transition(current: UpdateState, new: UpdateState) -> UpdateState:
    """Check a state change against :data:`ALLOWED`.

    Raises:
        Internal: the change is not allowed (a bug in the caller).
    """
    if new == current:
        return new
    if new not in ALLOWED[current]:
        raise Internal(f"update state cannot go from {current} to {new}")
    return new


class HistoryState(StrEnum):
    """The state of one history row (install or activate attempt); stored as this string."""

    #: written before the first irreversible step; the operation is running (or the
    #: daemon died during it: reconciliation decides at the next start)
    PENDING = "pending"
    #: the update is staged and waits for an activation or a reboot
    STAGED = "staged"
    SUCCESS = "success"
    FAILED = "failed"
    FAILED_TRANSIENT = "failed-transient"
    #: the staged update was cancelled (``Cancel``)
    CANCELLED = "cancelled"
    #: the staged update was replaced by a newer staging on the same device; it was
    #: never applied, and it did not fail
    SUPERSEDED = "superseded"

    @classmethod
    def of(cls, state: UpdateState) -> HistoryState:
        """The row state for a device state a reconciliation verdict gives.

        success, failed and failed-transient map to themselves; a verdict that is no
        outcome (none; pending and needs-reboot are handled as staged by the engine)
        tells nothing, so the row is failed rather than left in a state nobody reads.
        """
        return _HISTORY_OUTCOME.get(state, HistoryState.FAILED)


_HISTORY_OUTCOME = {
    UpdateState.SUCCESS: HistoryState.SUCCESS,
    UpdateState.FAILED: HistoryState.FAILED,
    UpdateState.FAILED_TRANSIENT: HistoryState.FAILED_TRANSIENT,
}

_ROW_OUTCOMES = frozenset(
    {HistoryState.SUCCESS, HistoryState.FAILED, HistoryState.FAILED_TRANSIENT}
)

#: from -> the states a history row may move to. Finished rows never change.
HISTORY_ALLOWED: dict[HistoryState, frozenset[HistoryState]] = {
    HistoryState.PENDING: _ROW_OUTCOMES | {HistoryState.STAGED},
    # staged -> staged: reconciliation or an activation failure restates the reason
    HistoryState.STAGED: _ROW_OUTCOMES
    | {HistoryState.STAGED, HistoryState.CANCELLED, HistoryState.SUPERSEDED},
    HistoryState.SUCCESS: frozenset(),
    HistoryState.FAILED: frozenset(),
    HistoryState.FAILED_TRANSIENT: frozenset(),
    HistoryState.CANCELLED: frozenset(),
    HistoryState.SUPERSEDED: frozenset(),
}

#: rows that still wait for an outcome (handed to plugins at start-up).
HISTORY_UNFINISHED = frozenset({HistoryState.PENDING, HistoryState.STAGED})


def history_transition(current: HistoryState, new: HistoryState) -> HistoryState:
    """Check a history row's state change against :data:`HISTORY_ALLOWED`.

    Raises:
        Internal: the change is not allowed (a bug in the caller).
    """
    if new not in HISTORY_ALLOWED[current]:
        raise Internal(f"a history row cannot go from {current} to {new}")
    return new


#: Device flags (wire: ``as`` of these words) with their meaning, for docs and the CLI.
FLAGS: dict[str, str] = {
    "updatable": "a payload can be installed through livefw",
    "needs-activation": "a new image is staged or pending and waits for Activate",
    "needs-reboot": "an update is staged and is applied at the next reboot",
    "activation-capable": "the firmware can activate a new image without a reboot",
    "may-reset-cpu": "activation may reset CPUs (the kernel refuses to activate it)",
    "cpu-rendezvous": "activation stops all CPUs while the firmware switches",
    "internal": "part of the platform, not a removable device",
    "locked": "refuses changes until unlocked",
    "signed-payload": "the device only accepts signed payloads",
    "unsigned-payload": "the device accepts unsigned payloads",
    "can-cancel": "a staged update or activation can be cancelled",
    "only-version-upgrade": "the firmware refuses older images, whatever the options",
}
