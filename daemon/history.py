"""The history of every install and activation attempt, in SQLite.

A row is written (and committed) *before* the first irreversible step of an
operation, in state ``pending``; it is completed afterwards. A daemon killed in
between leaves the row pending, and the next start hands it to the plugin to
reconcile (ARCHITECTURE.md, Decisions: Reconciliation).
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Mapping
from typing import Any

import structlog

from livefw.errors import NotFound
from livefw.model import Model
from livefw.sanitize import NAME_MAX, TEXT_MAX, clean
from livefw.state import HISTORY_UNFINISHED, HistoryState, history_transition
from livefw.statefiles import prepare_database

__all__ = ["SCHEMA_VERSION", "History", "HistoryEntry", "HistoryState"]

log = structlog.get_logger("livefw.history")

#: rows that still wait for an outcome (handed to plugins at start-up).
UNFINISHED_STATES = tuple(sorted(HISTORY_UNFINISHED))

#: PRAGMA user_version of the current schema; migrations below bring older ones up.
SCHEMA_VERSION = 1

_SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    op_id TEXT NOT NULL UNIQUE,
    device_id TEXT NOT NULL,
    device_name TEXT NOT NULL DEFAULT '',
    plugin TEXT NOT NULL,
    physical_id TEXT NOT NULL DEFAULT '',
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    version_old TEXT NOT NULL DEFAULT '',
    version_new TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL DEFAULT '',
    boot_id TEXT NOT NULL DEFAULT '',
    caller_uid INTEGER NOT NULL DEFAULT -1,
    created REAL NOT NULL,
    finished REAL,
    data TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS history_state ON history(state);
CREATE INDEX IF NOT EXISTS history_device ON history(device_id);
"""

#: columns every history table has had (a table without them is not livefw's).
_V1_REQUIRED = ("id", "op_id", "device_id", "plugin", "kind", "state", "created")
#: columns schema 1 added to the unversioned layout, with their definitions.
_V1_ADDED = {
    "device_name": "TEXT NOT NULL DEFAULT ''",
    "physical_id": "TEXT NOT NULL DEFAULT ''",
    "version_old": "TEXT NOT NULL DEFAULT ''",
    "version_new": "TEXT NOT NULL DEFAULT ''",
    "reason": "TEXT NOT NULL DEFAULT ''",
    "boot_id": "TEXT NOT NULL DEFAULT ''",
    "caller_uid": "INTEGER NOT NULL DEFAULT -1",
    "finished": "REAL",
    "data": "TEXT NOT NULL DEFAULT '{}'",
}


class HistoryEntry(Model, frozen=True):
    """One row of the history.

    Attributes:
        state: ``pending`` while the operation runs; ``staged`` when it left an
            update waiting for an activation or a reboot; then ``success``,
            ``failed``, ``failed-transient``, ``cancelled`` or ``superseded``
            (:class:`~livefw.state.HistoryState`, transitions in
            :data:`~livefw.state.HISTORY_ALLOWED`).
        data: what the operation recorded for reconciliation (staged paths ...).
    """

    id: int
    op_id: str
    device_id: str
    device_name: str
    plugin: str
    physical_id: str
    kind: str
    state: HistoryState
    version_old: str
    version_new: str
    reason: str
    boot_id: str
    caller_uid: int
    created: float
    finished: float | None
    data: dict[str, Any]

    @property
    def unfinished(self) -> bool:
        """Still waiting for an outcome."""
        return self.state in HISTORY_UNFINISHED


class History:
    """The history database (``<state dir>/history.db``)."""

    def __init__(self, path: str) -> None:
        prepare_database(path)  # 0600, not through a link (livefw.statefiles)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        # FULL: a committed row survives a power cut, which is the point of writing it
        # before the irreversible step.
        self._db.execute("PRAGMA synchronous=FULL")
        try:
            self._migrate()
        except BaseException:
            self._db.close()
            raise
        # after the migration: a database refused above is left byte for byte as it was
        self._db.execute("PRAGMA journal_mode=WAL")

    def _migrate(self) -> None:
        """Bring an older database up to :data:`SCHEMA_VERSION`, all or nothing.

        Raises:
            RuntimeError: the database is newer than this livefwd, or its layout cannot
                be upgraded; it is left unchanged.
        """
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"{self.path} has schema {version}, newer than this livefwd ({SCHEMA_VERSION})"
            )
        if version == SCHEMA_VERSION:
            return
        # one transaction: a crash or a refusal half-way leaves the old database
        # (executescript would commit early, so statements run one by one)
        self._db.execute("BEGIN IMMEDIATE")
        try:
            if version < 1:
                self._upgrade_to_v1()
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self._db.execute("COMMIT")
        except sqlite3.Error as error:
            self._db.execute("ROLLBACK")
            raise RuntimeError(
                f"{self.path}: cannot upgrade the history from schema {version}: {error}"
            ) from error

    def _upgrade_to_v1(self) -> None:
        """Create schema 1, or add its columns to a table from before versioning."""
        exists = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'history'"
        ).fetchone()
        if exists:
            # CREATE TABLE IF NOT EXISTS would keep the old columns and every later
            # INSERT would fail: add what is missing (every added column has a default)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(history)")}
            missing = [name for name in _V1_REQUIRED if name not in columns]
            if missing:
                raise sqlite3.DatabaseError(
                    f"the history table lacks {', '.join(missing)} and is not livefw's"
                )
            for name, definition in _V1_ADDED.items():
                if name not in columns:
                    self._db.execute(f"ALTER TABLE history ADD COLUMN {name} {definition}")
        for statement in _SCHEMA_V1.split(";"):
            if statement.strip():
                self._db.execute(statement)

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def begin(
        self,
        *,
        device_id: str,
        device_name: str,
        plugin: str,
        physical_id: str,
        kind: str,
        version_old: str,
        version_new: str,
        boot_id: str,
        caller_uid: int = -1,
        data: Mapping[str, Any] | None = None,
    ) -> HistoryEntry:
        """Write a ``pending`` row, durably, and return it."""
        op_id = uuid.uuid4().hex
        self._db.execute(
            "INSERT INTO history (op_id, device_id, device_name, plugin, physical_id, kind,"
            " state, version_old, version_new, boot_id, caller_uid, created, data)"
            " VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?)",
            (
                op_id,
                device_id,
                clean(device_name, NAME_MAX),
                plugin,
                physical_id,
                kind,
                clean(version_old, NAME_MAX),
                clean(version_new, NAME_MAX),
                boot_id,
                caller_uid,
                time.time(),
                json.dumps(dict(data or {})),
            ),
        )
        return self.get(op_id)

    def record(self, op_id: str, data: Mapping[str, Any]) -> None:
        """Merge ``data`` into a row's data, durably."""
        entry = self.get(op_id)
        merged = {**entry.data, **data}
        self._db.execute("UPDATE history SET data = ? WHERE op_id = ?", (json.dumps(merged), op_id))

    def set_state(
        self,
        op_id: str,
        state: HistoryState,
        *,
        reason: str = "",
        version_new: str | None = None,
        finished: bool = True,
    ) -> HistoryEntry:
        """Set a row's outcome (or ``staged``, with ``finished=False``).

        Raises:
            Internal: :data:`~livefw.state.HISTORY_ALLOWED` has no such change (a
                finished row never changes again).
        """
        entry = self.get(op_id)
        new = history_transition(entry.state, HistoryState(state))
        self._db.execute(
            "UPDATE history SET state = ?, reason = ?, version_new = ?, finished = ?"
            " WHERE op_id = ?",
            (
                str(new),
                clean(reason, TEXT_MAX),
                entry.version_new if version_new is None else clean(version_new, NAME_MAX),
                time.time() if finished else None,
                op_id,
            ),
        )
        return self.get(op_id)

    def get(self, op_id: str) -> HistoryEntry:
        """One row by operation id."""
        row = self._db.execute("SELECT * FROM history WHERE op_id = ?", (op_id,)).fetchone()
        if row is None:
            raise NotFound(f"no history entry {op_id}")
        return _entry(row)

    def entries(
        self, *, device_id: str | None = None, limit: int = 0, unfinished: bool = False
    ) -> list[HistoryEntry]:
        """Rows, newest first, optionally for one device or only unfinished ones."""
        query, args = "SELECT * FROM history", []
        where = []
        if device_id:
            where.append("device_id = ?")
            args.append(device_id)
        if unfinished:
            where.append(f"state IN ({', '.join('?' * len(UNFINISHED_STATES))})")
            args.extend(UNFINISHED_STATES)
        if where:
            query += " WHERE " + " AND ".join(where)
        query += " ORDER BY id DESC"
        if limit > 0:
            query += f" LIMIT {int(limit)}"
        return [_entry(row) for row in self._db.execute(query, args)]

    def delete(self, op_id: str) -> None:
        """Remove a row (only for an operation refused before any side effect)."""
        self._db.execute("DELETE FROM history WHERE op_id = ?", (op_id,))


def _entry(row: sqlite3.Row) -> HistoryEntry:
    values = dict(row)
    # rows written before text was sanitised on the way in (livefw.sanitize)
    for key, limit in (
        ("device_name", NAME_MAX),
        ("version_old", NAME_MAX),
        ("version_new", NAME_MAX),
        ("reason", TEXT_MAX),
    ):
        if isinstance(values.get(key), str):
            values[key] = clean(values[key], limit)
    values["data"] = json.loads(values["data"] or "{}")
    if values.get("state") not in HistoryState.__members__.values():
        # not a state this livefwd knows (a hand-edited database): an outcome nobody can
        # tell, which reconciliation never touches again
        log.warning("history_state_unknown", op_id=values.get("op_id"), state=values.get("state"))
        values["reason"] = clean(
            f"unknown state {values.get('state')!r}; {values['reason']}", TEXT_MAX
        )
        values["state"] = HistoryState.FAILED
    return HistoryEntry.model_validate(values)
