"""Output for people (rich tables, progress) and for scripts (``--json``)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["Output", "json_default"]


def json_default(value: Any) -> Any:
    """JSON for what D-Bus returns beyond JSON's types: ``ay`` as hex, the rest as text."""
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    return str(value)


class Output:
    """Writes results to stdout and messages to stderr."""

    def __init__(self, json_mode: bool = False) -> None:
        self.json_mode = json_mode
        self.out = Console(highlight=False, soft_wrap=True)
        if not self.out.is_terminal:
            # scripts and logs: no wrapping at an imaginary 80 columns
            self.out = Console(highlight=False, soft_wrap=True, width=200)
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)

    def json(self, value: Any) -> None:
        """Print ``value`` as indented JSON."""
        sys.stdout.write(json.dumps(value, indent=2, sort_keys=True, default=json_default) + "\n")
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
        table = Table(title=title, show_lines=False, header_style="bold")
        for column in columns:
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*("" if cell is None else str(cell) for cell in row))
        self.out.print(table)

    def fields(self, pairs: Iterable[tuple[str, Any]], title: str | None = None) -> None:
        """Print ``name: value`` lines."""
        if title:
            self.out.print(f"[bold]{title}[/bold]")
        pairs = list(pairs)
        width = max((len(name) for name, _ in pairs), default=0)
        for name, value in pairs:
            if isinstance(value, (list, tuple)):
                value = ", ".join(str(item) for item in value)
            self.out.print(f"  {name.ljust(width)}  {value}", markup=False)

    def info(self, text: str) -> None:
        """A line for people, on stdout."""
        self.out.print(text, markup=False)

    def error(self, text: str) -> None:
        """An error line, on stderr."""
        self.err.print("[red]error:[/red] ", end="")
        self.err.print(text, markup=False)
