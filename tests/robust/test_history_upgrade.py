"""Opening history databases written by earlier layouts loses nothing."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from livefw.history import SCHEMA_VERSION, History

#: the released schema 1, written out here as the previous release created it (the
#: test must not take it from livefw.history, or a change there would go unnoticed).
RELEASED_V1 = """
CREATE TABLE history (
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
CREATE INDEX history_state ON history(state);
CREATE INDEX history_device ON history(device_id);
PRAGMA user_version=1;
"""

#: a layout from before the schema was versioned (user_version 0): no physical id,
#: caller, boot id, device name or recorded data.
UNVERSIONED = """
CREATE TABLE history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    op_id TEXT NOT NULL UNIQUE,
    device_id TEXT NOT NULL,
    plugin TEXT NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    version_old TEXT NOT NULL DEFAULT '',
    version_new TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    finished REAL
);
"""


def _write(path: Path, schema: str, rows: list[dict[str, object]]) -> None:
    db = sqlite3.connect(path)
    db.executescript(schema)
    for row in rows:
        columns = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        db.execute(f"INSERT INTO history ({columns}) VALUES ({marks})", list(row.values()))
    db.commit()
    db.close()


def test_released_v1_database_opens_with_every_row(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    _write(
        path,
        RELEASED_V1,
        [
            dict(
                op_id="a" * 32,
                device_id="d1",
                device_name="BL31",
                plugin="lfa",
                physical_id="g",
                kind="activate",
                state="success",
                version_old="1",
                version_new="2",
                boot_id="b",
                caller_uid=0,
                created=1.0,
                finished=2.0,
                data=json.dumps({"x": 1}),
            ),
            dict(
                op_id="b" * 32,
                device_id="d2",
                plugin="pfru",
                kind="install",
                state="staged",
                version_old="3",
                version_new="4",
                created=3.0,
                data=json.dumps({"payload-sha256": "00"}),
            ),
        ],
    )
    history = History(str(path))
    try:
        rows = history.entries()
        assert [r.op_id for r in rows] == ["b" * 32, "a" * 32]
        assert rows[1].data == {"x": 1}
        assert rows[1].caller_uid == 0
        assert [r.op_id for r in history.entries(unfinished=True)] == ["b" * 32]
        entry = history.begin(
            device_id="d3",
            device_name="n",
            plugin="lfa",
            physical_id="p",
            kind="activate",
            version_old="1",
            version_new="2",
            boot_id="b2",
            caller_uid=5,
            data={"k": "v"},
        )
        assert history.get(entry.op_id).data == {"k": "v"}
    finally:
        history.close()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_unversioned_layout_is_upgraded_in_place(tmp_path: Path) -> None:
    """Without the fix, CREATE TABLE IF NOT EXISTS kept the old table and stamped it v1:
    every later begin() failed (no such column) and the daemon could record nothing."""
    path = tmp_path / "history.db"
    _write(
        path,
        UNVERSIONED,
        [
            dict(
                op_id="c" * 32,
                device_id="d1",
                plugin="lfa",
                kind="activate",
                state="failed",
                version_old="1",
                version_new="2",
                reason="agent busy",
                created=1.0,
                finished=2.0,
            ),
            dict(
                op_id="e" * 32,
                device_id="d2",
                plugin="pfru",
                kind="install",
                state="pending",
                version_old="3",
                version_new="4",
                created=3.0,
            ),
        ],
    )
    history = History(str(path))
    try:
        old = history.get("c" * 32)
        assert (old.state, old.reason, old.data, old.caller_uid) == ("failed", "agent busy", {}, -1)
        assert [r.op_id for r in history.entries(unfinished=True)] == ["e" * 32]
        entry = history.begin(
            device_id="d1",
            device_name="n",
            plugin="lfa",
            physical_id="p",
            kind="activate",
            version_old="1",
            version_new="2",
            boot_id="b",
            caller_uid=0,
            data={"k": 1},
        )
        history.record(entry.op_id, {"more": True})
        assert history.get(entry.op_id).data == {"k": 1, "more": True}
    finally:
        history.close()


def test_newer_schema_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    _write(path, RELEASED_V1.replace("user_version=1", f"user_version={SCHEMA_VERSION + 1}"), [])
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="newer"):
        History(str(path))
    assert path.read_bytes() == before


def test_a_failed_migration_changes_nothing(tmp_path: Path) -> None:
    """A layout the migration cannot bring up is refused with the database as it was."""
    path = tmp_path / "history.db"
    _write(path, "CREATE TABLE history (op_id TEXT, created REAL);", [])
    with pytest.raises(RuntimeError, match="history"):
        History(str(path))
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 0
    columns = [row[1] for row in db.execute("PRAGMA table_info(history)")]
    assert columns == ["op_id", "created"]
