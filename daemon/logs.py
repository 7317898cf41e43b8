"""structlog set-up: journal format under systemd, a readable console otherwise.

Under systemd (``$JOURNAL_STREAM`` names our stderr) each event is one line of
``key=value`` pairs prefixed with the ``<N>`` syslog priority that journald parses;
elsewhere structlog's console renderer writes to stderr. No ``print`` anywhere.

Every event passes :func:`_sanitize` before it is rendered: keys and string values
are escaped and capped with :func:`livefw.sanitize.clean`, so a value read from
firmware or sent by a client (a version with a newline and ``<2>``, an escape
sequence) stays inside its own line and cannot forge a journal entry or drive a
terminal. On a console a traceback keeps its line breaks; in the journal it does not.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import structlog

from livefw.sanitize import LOG_VALUE_MAX, clean, escape_controls

__all__ = ["setup_logging", "under_journal"]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
#: structlog level -> syslog priority (sd-daemon(3) prefixes).
_PRIORITY = {
    "debug": 7,
    "info": 6,
    "warning": 4,
    "warn": 4,
    "error": 3,
    "critical": 2,
    "exception": 3,
}


def under_journal() -> bool:
    """Whether stderr is connected to the journal (systemd.exec(5), $JOURNAL_STREAM)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    if not stream:
        return False
    try:
        device, inode = (int(part) for part in stream.split(":"))
        info = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError):
        return False
    return info.st_dev == device and info.st_ino == inode


#: multi-line values structlog itself makes from a traceback (format_exc_info, stack_info).
_TRACEBACK_KEYS = frozenset({"exception", "stack"})


def _sanitizer(journal: bool) -> Any:
    r"""The processor that keeps every event on its own line (see the module docstring).

    In the journal, string values are only capped: the renderer writes each value
    with ``repr()``, which already escapes every character that is not printable
    (a superset of what :func:`livefw.sanitize.escape_controls` escapes), and escaping
    twice would show ``\\n``. On a console strings are escaped here; a traceback
    keeps its line breaks but each of its lines is escaped and indented, so no line
    of it starts where a log line does.
    """

    def _sanitize(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in event.items():
            key = key if key.isidentifier() else clean(key, 64)
            if isinstance(value, str):
                if journal:
                    value = value[:LOG_VALUE_MAX]
                elif key in _TRACEBACK_KEYS:
                    lines = value[-LOG_VALUE_MAX * 4 :].split("\n")
                    value = "\n".join("  " + escape_controls(line) for line in lines)
                else:
                    value = clean(value, LOG_VALUE_MAX)
            elif not isinstance(value, (int, float, bool, type(None))):
                # both renderers print other values with repr(), which escapes every
                # character that is not printable; only the length needs a cap
                text = repr(value)
                if len(text) > LOG_VALUE_MAX:
                    value = clean(text, LOG_VALUE_MAX)
            result[key] = value
        return result

    return _sanitize


def _journal_prefix(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    event["_priority"] = _PRIORITY.get(method, 6)
    return event


class _JournalRenderer:
    def __init__(self) -> None:
        self._kv = structlog.processors.KeyValueRenderer(
            key_order=["event"], sort_keys=True, drop_missing=True
        )

    def __call__(self, logger: Any, method: str, event: dict[str, Any]) -> str:
        priority = event.pop("_priority", 6)
        return f"<{priority}>{self._kv(logger, method, event)}"


def setup_logging(level: str = "info", journal: bool | None = None) -> None:
    """Configure structlog for the daemon (idempotent)."""
    journal = under_journal() if journal is None else journal
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.format_exc_info,
        _sanitizer(journal),
    ]
    if journal:
        processors += [_journal_prefix, _JournalRenderer()]
    else:
        processors += [
            structlog.processors.TimeStamper(fmt="%H:%M:%S", utc=False),
            structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()),
        ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
