"""What the fwupd-compatible API keeps beside the engine (livefw.fwupd_service uses it).

Persistent, in the daemon's state directory, written atomically and never through a
link (livefw.statefiles): which history rows a client was notified of
(``fwupd-notified.json``), and with it fwupd's view of the history, one row per
device (:class:`CompatState`: GetHistory, GetResults, ClearResults, ModifyDevice
``notified``). The blocked and approved firmware checksums are the engine's
(livefw.firmware_lists): every install honours them, not only this API's. fwupd's
ModifyConfig/ResetConfig write a livefw.conf drop-in (livefw.fwupd_config).

In memory: each client's hints and feature flags (:class:`ClientState`), who holds
which Inhibit (:class:`Inhibits`), and the device dicts GetDevices last built
(:class:`DeviceCache`). Nothing here knows D-Bus.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import structlog

from livefw.device import Device
from livefw.errors import NotFound, NothingToDo, NotSupported, PermissionDenied
from livefw.history import HistoryEntry
from livefw.statefiles import StateDirError, read_private, write_atomic

__all__ = [
    "CLIENTS_MAX",
    "HINTS_MAX",
    "HINT_KEY_MAX",
    "HINT_VALUE_MAX",
    "INHIBITS_MAX",
    "INHIBITS_PER_SENDER",
    "ClientState",
    "CompatState",
    "DeviceCache",
    "Inhibits",
    "latest_rows",
]

log = structlog.get_logger("livefw.compat")

#: the biggest state file read back.
STATE_FILE_MAX = 1 << 20
#: the history states fwupd reports as a result (GetResults of every device).
RESULT_STATES = frozenset({"success", "failed", "failed-transient"})
#: ModifyDevice's ``Flags`` values fwupd takes (``reported`` is accepted and not kept).
DEVICE_FLAG_VALUES = frozenset({"notified", "reported", "~notified", "~reported"})


def latest_rows(entries: Iterable[HistoryEntry]) -> list[HistoryEntry]:
    """Fwupd's history: the latest row per device, install rows preferred, oldest first.

    fwupd keeps one row per device; livefw keeps every install and activation. Rows
    of other kinds are left out.
    """
    rows: dict[str, HistoryEntry] = {}
    for entry in entries:
        if entry.kind not in ("install", "activate"):
            continue
        current = rows.get(entry.device_id)
        if (
            current is None
            or (current.kind != "install" and entry.kind == "install")
            or (current.kind == entry.kind and entry.created > current.created)
        ):
            rows[entry.device_id] = entry
    return sorted(rows.values(), key=lambda e: e.created)


class CompatState:
    """The notified rows, kept in ``state_dir``, and fwupd's results on them.

    A missing, unreadable or malformed file reads as empty (a convenience of fwupd's
    clients, not a security boundary of livefwd's). The methods that take ``rows``
    take fwupd's history (:func:`latest_rows`).
    """

    def __init__(self, state_dir: str) -> None:
        self._notified_path = os.path.join(state_dir, "fwupd-notified.json")
        self.notified: set[str] = set()
        value = self._load(self._notified_path)
        if isinstance(value, list):
            self.notified = {str(item) for item in value}

    @staticmethod
    def _load(path: str) -> Any:
        try:
            return json.loads(read_private(path, STATE_FILE_MAX) or b"null")
        except (OSError, ValueError, StateDirError) as error:
            log.warning("compat_state_unreadable", path=path, error=str(error))
            return None

    def set_notified(self, op_id: str, notified: bool = True) -> None:
        """Mark (or unmark) a history row as one the user was told about; saved now."""
        if notified:
            self.notified.add(op_id)
        else:
            self.notified.discard(op_id)
        write_atomic(self._notified_path, json.dumps(sorted(self.notified)).encode())

    def result(self, rows: list[HistoryEntry], device_id: str) -> HistoryEntry:
        """GetResults: the row of ``device_id`` (``*``: the oldest finished) to tell about.

        Raises:
            NothingToDo: no row, the user was already notified, or it still runs.
            NotFound: the row is not from a cabinet (fwupd's results are releases').
        """
        if device_id == "*":
            rows = [e for e in rows if e.state in RESULT_STATES]
        else:
            rows = [e for e in rows if e.device_id == device_id]
        if not rows:
            raise NothingToDo(f"no results for {device_id}")
        entry = rows[0] if device_id == "*" else rows[-1]
        if entry.op_id in self.notified:
            raise NothingToDo("the user was already notified")
        if entry.state == "pending":
            raise NothingToDo("in progress")
        if not entry.data.get("appstream-id"):
            raise NotFound(f"{entry.device_name} was not updated from a cabinet (no AppStream id)")
        return entry

    def clear_result(self, rows: list[HistoryEntry], device_id: str) -> None:
        """ClearResults: mark the row of ``device_id`` notified.

        Raises:
            NothingToDo: no row, or it was cleared already.
        """
        mine = [e for e in rows if e.device_id == device_id]
        if not mine:
            raise NothingToDo(f"no results for {device_id}")
        if mine[-1].op_id in self.notified:
            raise NothingToDo(f"the results for {device_id} were already cleared")
        self.set_notified(mine[-1].op_id)

    def modify_flags(self, rows: list[HistoryEntry], device_id: str, key: str, value: str) -> None:
        """ModifyDevice: ``Flags`` = ``notified``/``~notified`` on the device's row.

        Raises:
            NotSupported: another key or value (fwupd's answer).
            NotFound: the device has no row.
        """
        if key != "Flags" or value not in DEVICE_FLAG_VALUES:
            raise NotSupported(f"key {key[:64]} value {value[:64]} is not supported")
        mine = [e for e in rows if e.device_id == device_id]
        if not mine:
            raise NotFound(f"no history for {device_id[:64]}")
        if value in ("notified", "~notified"):
            self.set_notified(mine[-1].op_id, value == "notified")


#: Inhibit: per sender and in total (fwupd main's limits).
INHIBITS_PER_SENDER, INHIBITS_MAX = 10, 100


class Inhibits:
    """Who holds which Inhibit id (the reasons are the engine's, ``Engine.inhibits``)."""

    def __init__(self) -> None:
        self._seq = 0
        #: inhibit id -> the unique bus name of the client that holds it.
        self.owners: dict[str, str] = {}

    def add(self, sender: str) -> str:
        """A new id held by ``sender``.

        Raises:
            NotSupported: ``sender`` holds INHIBITS_PER_SENDER, or INHIBITS_MAX are held.
        """
        if sum(1 for owner in self.owners.values() if owner == sender) >= INHIBITS_PER_SENDER:
            raise NotSupported(f"at most {INHIBITS_PER_SENDER} inhibits per client")
        if len(self.owners) >= INHIBITS_MAX:
            raise NotSupported(f"at most {INHIBITS_MAX} inhibits")
        self._seq += 1
        inhibit_id = f"dbus-{self._seq:06d}"
        self.owners[inhibit_id] = sender
        return inhibit_id

    def remove(self, inhibit_id: str, sender: str) -> None:
        """Drop ``inhibit_id``, which ``sender`` must hold.

        Raises:
            NotFound: no such id.
            PermissionDenied: another client holds it.
        """
        owner = self.owners.get(inhibit_id)
        if owner is None:
            raise NotFound(f"Cannot find inhibit ID {inhibit_id[:64]}")
        if owner != sender:
            raise PermissionDenied(f"{inhibit_id[:64]} was set by another client")
        del self.owners[inhibit_id]

    def forget(self, sender: str) -> list[str]:
        """Drop every id ``sender`` holds (it left the bus); those ids."""
        dropped = [key for key, owner in self.owners.items() if owner == sender]
        for key in dropped:
            del self.owners[key]
        return dropped


#: SetHints: hints per client (fwupd refuses more than 32), and the longest key and
#: value accepted (fwupd reads only ``locale``, a ``LANG`` value).
HINTS_MAX = 32
HINT_KEY_MAX = 64
HINT_VALUE_MAX = 256
#: clients whose hints and feature flags are kept; the least recently seen is dropped
#: past this (a client that left the bus is dropped at once: NameOwnerChanged).
CLIENTS_MAX = 256


class ClientState:
    """Per-client hints and feature flags, bounded in count and size.

    Every local user can call SetHints; fwupd keeps what it is sent for as long as
    the daemon runs. Here a client's state goes when it leaves the bus
    (:meth:`forget`, from NameOwnerChanged) or when more than ``CLIENTS_MAX`` clients
    have some: at most about 32 x 320 bytes x 256 clients, a few MiB.
    """

    def __init__(self, clients_max: int = CLIENTS_MAX) -> None:
        self.clients_max = clients_max
        self.hints: OrderedDict[str, dict[str, str]] = OrderedDict()
        self.features: OrderedDict[str, int] = OrderedDict()

    def set_hints(self, sender: str, hints: dict[str, str]) -> None:
        """Keep ``hints`` for ``sender``.

        Raises:
            NotSupported: more than HINTS_MAX hints, or a key or value too long.
        """
        if len(hints) > HINTS_MAX:
            raise NotSupported(f"too many hints: {len(hints)}, at most {HINTS_MAX}")
        for key, value in hints.items():
            if len(key) > HINT_KEY_MAX or len(value) > HINT_VALUE_MAX:
                raise NotSupported(
                    f"hint {key[:HINT_KEY_MAX]!r} is too long: keys may have {HINT_KEY_MAX} "
                    f"characters, values {HINT_VALUE_MAX}"
                )
        self._put(self.hints, sender, dict(hints))

    def set_features(self, sender: str, flags: int) -> None:
        """Keep the feature flags of ``sender``."""
        self._put(self.features, sender, flags)

    def _put(self, table: OrderedDict[str, Any], sender: str, value: Any) -> None:
        if not sender:
            return
        table[sender] = value
        table.move_to_end(sender)
        while len(table) > self.clients_max:
            table.popitem(last=False)

    def forget(self, sender: str) -> bool:
        """Drop what ``sender`` set (it left the bus); whether it had anything."""
        had_hints = self.hints.pop(sender, None) is not None
        had_features = self.features.pop(sender, None) is not None
        return had_hints or had_features


class DeviceCache:
    """The device dicts GetDevices built, rebuilt only after the device changed.

    At 1,000 devices building them was a third of the call (bench/REPORT.md,
    profile). An entry is valid for the same device object with the same
    ``supported`` answer; :meth:`drop` on every change of the device.
    :attr:`generation` counts drops and ``supported`` changes: while it stays the
    same, no device's dict changed, nor which devices there are (the engine's
    device events drop their device too).
    """

    def __init__(self) -> None:
        self._supported: set[str] = set()
        self._dicts: dict[str, tuple[Device, bool, Any]] = {}
        self.generation = 0

    @property
    def supported(self) -> set[str]:
        """Device ids a remote holds a release for (fwupd's ``supported`` flag)."""
        return self._supported

    @supported.setter
    def supported(self, ids: set[str]) -> None:
        if ids != self._supported:
            self.generation += 1
        self._supported = ids

    def get(self, device: Device) -> Any | None:
        """The cached dict of ``device``, or None."""
        cached = self._dicts.get(device.id)
        if (
            cached is not None
            and cached[0] is device
            and cached[1] == (device.id in self.supported)
        ):
            return cached[2]
        return None

    def put(self, device: Device, value: Any) -> None:
        """Keep ``value`` as the dict of ``device`` as it is now."""
        self._dicts[device.id] = (device, device.id in self.supported, value)

    def drop(self, device_id: str | None = None) -> None:
        """Forget one device's dict (it changed), or every dict."""
        self.generation += 1
        if device_id is None:
            self._dicts.clear()
        else:
            self._dicts.pop(device_id, None)

    def lookup(self, device: Device, build: Callable[[], Any]) -> Any:
        """The cached dict of ``device``; ``build()`` made and kept when there is none."""
        value = self.get(device)
        if value is None:
            value = build()
            self.put(device, value)
        return value
