r"""Output for people (rich tables, progress) and for scripts (``--json``).

Everything printed here may come from another user (live-update labels) or from
firmware (device names, versions, telemetry) through the daemon, so it is printed
as text: the consoles interpret no markup and no emoji codes, every value becomes
a ``rich.text.Text`` (a ``[bold]`` or ``[/]`` in a label is shown as it is), and
control characters (C0, C1, DEL, bidi overrides, line separators) are written as
visible escapes by :func:`livefw.sanitize.escape_controls` before they reach the
terminal, so an ``ESC`` sequence cannot drive it and a newline cannot start a line
(under a systemd service, a line of its own starting with ``<2>`` would be logged
at critical priority). ``--json`` output is JSON with ``\u`` escapes for all of
those characters.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from livefw.sanitize import escape_controls

__all__ = ["Output", "inert", "json_default", "plain"]


def json_default(value: Any) -> Any:
    """JSON for what D-Bus returns beyond JSON's types: ``ay`` as hex, the rest as text."""
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    return str(value)


#: a syslog priority prefix at the start of a line, as journald and syslog read it
_PRIORITY = re.compile(r"^<(\d{1,3}>)", re.MULTILINE)


def inert(text: str, keep: str = "") -> str:
    r"""``text`` with control characters escaped and no line starting with ``<N>``.

    Under a systemd service stdout goes to the journal, which reads a ``<N>`` at the
    start of a line as its priority (unless the unit sets ``SyslogLevelPrefix=no``,
    as ``livefw-activate.service`` does); such a ``<`` is written as ``\x3c``.
    """
    return _PRIORITY.sub(r"\\x3c\1", escape_controls(text, keep=keep))


def plain(value: Any, style: str = "") -> Text:
    """``value`` as inert text: no markup, control characters escaped."""
    return Text(inert("" if value is None else str(value)), style=style)


def _console(**kwargs: Any) -> Console:
    return Console(highlight=False, soft_wrap=True, markup=False, emoji=False, **kwargs)


class Output:
    """Writes results to stdout and messages to stderr."""

    def __init__(self, json_mode: bool = False) -> None:
        self.json_mode = json_mode
        self.out = _console()
        if not self.out.is_terminal:
            # scripts and logs: no wrapping at an imaginary 80 columns
            self.out = _console(width=200)
        self.err = _console(stderr=True)

    def json(self, value: Any) -> None:
        """Print ``value`` as indented JSON (non-ASCII and control characters escaped)."""
        text = json.dumps(value, indent=2, sort_keys=True, default=json_default, ensure_ascii=True)
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    def json_error(self, name: str, message: str, exit_code: int) -> None:
        """An error as one JSON line on stderr (``--json``): name, message, exit code."""
        line = {"error": name, "message": message, "exit_code": exit_code}
        sys.stderr.write(json.dumps(line, sort_keys=True) + "\n")
        sys.stderr.flush()

    def table(
        self, columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None
    ) -> None:
        """Print a table."""
        table = Table(title=plain(title) if title else None, show_lines=False, header_style="bold")
        for column in columns:
            table.add_column(plain(column), overflow="fold")
        for row in rows:
            table.add_row(*(plain(cell) for cell in row))
        self.out.print(table)

    def fields(self, pairs: Iterable[tuple[str, Any]], title: str | None = None) -> None:
        """Print ``name: value`` lines."""
        if title:
            self.out.print(plain(title, style="bold"))
        pairs = list(pairs)
        width = max((len(name) for name, _ in pairs), default=0)
        for name, value in pairs:
            if isinstance(value, (list, tuple)):
                value = ", ".join(str(item) for item in value)
            self.out.print(plain(f"  {name.ljust(width)}  {value}"))

    def info(self, text: str) -> None:
        """A line for people, on stdout."""
        self.out.print(plain(text))

    def block(self, text: str) -> None:
        """Multi-line text (a firmware log) ending with a newline.

        Line breaks and tabs are kept, every other control character is escaped.
        """
        if not text:
            return
        text = inert(text, keep="\n\t")
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        sys.stdout.flush()

    def warn(self, text: str) -> None:
        """A note on stderr (yellow on a terminal)."""
        self.err.print(plain(text, style="yellow"))

    def error(self, text: str) -> None:
        """An error line, on stderr."""
        self.err.print(Text.assemble(("error:", "red"), " ", plain(text)))
