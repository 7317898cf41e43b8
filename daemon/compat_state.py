"""What the fwupd-compatible API keeps beside the engine (livefw.bus.compat serves it).

Persistent, in the daemon's state directory, written atomically and never through a
link (livefw.statefiles): which history rows a client was notified of
(``fwupd-notified.json``: fwupd's ClearResults / ModifyDevice ``notified``). The
blocked and approved firmware checksums are the engine's (livefw.firmware_lists):
every install honours them, not only this API's.

fwupd's ModifyConfig/ResetConfig write livefw.conf's drop-in ``livefw.conf.d/fwupd.conf``
(:class:`FwupdConfig`), never the administrator's own file.

In memory: each client's hints and feature flags (:class:`ClientState`), who holds
which Inhibit (:class:`Inhibits`), and the device dicts GetDevices last built
(:class:`DeviceCache`). Nothing here knows D-Bus.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections import OrderedDict
from typing import Any

import structlog

from livefw.config import Config, dropin_dir, load_config, remove_dropin, write_dropin
from livefw.device import Device
from livefw.errors import ConfigError, Internal, InvalidArgument, NotSupported
from livefw.statefiles import StateDirError, read_private, write_atomic

__all__ = [
    "CLIENTS_MAX",
    "HINTS_MAX",
    "HINT_KEY_MAX",
    "HINT_VALUE_MAX",
    "ClientState",
    "CompatState",
    "DeviceCache",
    "FwupdConfig",
]

log = structlog.get_logger("livefw.compat")

#: the biggest state file read back.
STATE_FILE_MAX = 1 << 20


class CompatState:
    """The notified rows, kept in ``state_dir``.

    A missing, unreadable or malformed file reads as empty (a convenience of fwupd's
    clients, not a security boundary of livefwd's).
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


class FwupdConfig:
    """fwupd's ModifyConfig and ResetConfig, onto the drop-in ``fwupd.conf``.

    The drop-in holds only what fwupd's clients set; ResetConfig removes it. A
    change is validated with the whole configuration before it is written, and
    written atomically and never through a link (livefw.config.write_dropin).
    """

    DROPIN = "fwupd.conf"
    HEADER = (
        "Written by livefwd for fwupd's ModifyConfig (fwupdmgr modify-config); removed by\n"
        "ResetConfig (fwupdmgr reset-config fwupd). Read after livefw.conf: edit that instead."
    )

    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path

    def _dropin(self) -> dict[str, Any]:
        path = os.path.join(dropin_dir(self.config_path), self.DROPIN)
        try:
            with open(path, "rb") as handle:
                return tomllib.loads(handle.read(STATE_FILE_MAX).decode("utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            log.warning("fwupd_dropin_unreadable", path=path, error=str(error))
            return {}  # rewritten whole by the next change

    def modify(self, tables: tuple[str, ...], name: str, value: Any) -> Config:
        """Set ``tables.name`` to ``value`` (None: remove it); the configuration now.

        Raises:
            InvalidArgument: the configuration with the change is not valid.
            Internal: the drop-in could not be written.
        """
        table = self._dropin()
        node = table
        for part in tables:
            child = node.get(part)
            node[part] = child = dict(child) if isinstance(child, dict) else {}
            node = child
        if value is None:
            node.pop(name, None)
        else:
            node[name] = value
        table = _pruned(table)
        try:
            config = load_config(self.config_path, dropins={self.DROPIN: table or None})
        except ConfigError as error:
            raise InvalidArgument(error.message) from error
        try:
            if table:
                write_dropin(self.config_path, self.DROPIN, table, self.HEADER)
            else:
                remove_dropin(self.config_path, self.DROPIN)
        except (OSError, StateDirError, ConfigError) as error:
            raise Internal(
                f"cannot write {dropin_dir(self.config_path)}/{self.DROPIN}: {error}"
            ) from error
        return config

    def reset(self) -> Config:
        """Remove the drop-in; the configuration without it.

        Raises:
            InvalidArgument: livefw.conf itself is not valid.
            Internal: the drop-in could not be removed.
        """
        try:
            remove_dropin(self.config_path, self.DROPIN)
        except (OSError, ConfigError) as error:
            raise Internal(
                f"cannot remove {dropin_dir(self.config_path)}/{self.DROPIN}: {error}"
            ) from error
        try:
            return load_config(self.config_path)
        except ConfigError as error:
            raise InvalidArgument(error.message) from error


def _pruned(table: dict[str, Any]) -> dict[str, Any]:
    """``table`` without empty sub-tables."""
    result = {}
    for key, value in table.items():
        if isinstance(value, dict):
            value = _pruned(value)
            if not value:
                continue
        result[key] = value
    return result


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
    """

    def __init__(self) -> None:
        #: device ids a remote holds a release for (fwupd's ``supported`` flag).
        self.supported: set[str] = set()
        self._dicts: dict[str, tuple[Device, bool, Any]] = {}

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
        if device_id is None:
            self._dicts.clear()
        else:
            self._dicts.pop(device_id, None)
