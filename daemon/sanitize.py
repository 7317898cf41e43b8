r"""Make text from firmware and from other users safe to log, publish and print.

Strings livefwd did not write itself (device names, vendors, versions and summaries
read from firmware, metadata, live-update labels from clients) can carry terminal
escape sequences, line breaks that forge log lines (journald reads a ``<N>`` at the
start of a line as the priority), bidi overrides that reorder what a person reads,
and any length. One function decides what is left of them everywhere:
:func:`escape_controls` writes each such character as a visible escape, and
:func:`clean` also caps the length. The daemon applies :func:`clean` where strings
become device properties (``livefw.device``), to live-update labels and to every
logged value (``livefw.logs``); the CLI applies :func:`escape_controls` to
everything it prints (``livefw.cli.output``), so a daemon of another version
cannot reach the terminal either.

What "sanitised" means (README, Reliability):

* C0 controls (U+0000-U+001F, including tab and newline), DEL (U+007F) and C1
  controls (U+0080-U+009F) become ``\xNN`` (``\n``, ``\r``, ``\t`` for those
  three), so ESC (U+001B) and the 8-bit CSI (U+009B) never reach a terminal.
* Bidi embedding, override and isolate controls (U+202A-U+202E, U+2066-U+2069),
  the marks U+200E, U+200F, U+061C and the line and paragraph separators
  U+2028, U+2029 become ``\uNNNN``; a lone surrogate (not encodable as UTF-8,
  so not sendable on D-Bus) also becomes ``\uNNNN``.
* The result is capped at ``limit`` characters, ending in ``…`` when cut.

Everything else is kept as it was (a backslash too: the escapes are for people,
not a reversible encoding). Rich markup such as ``[bold]`` is not a control
character: the CLI prints text as text instead (no markup interpretation).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "LABEL_MAX",
    "LOG_VALUE_MAX",
    "NAME_MAX",
    "TEXT_MAX",
    "clean",
    "escape_controls",
]

#: names, vendors, versions, protocols: one table cell.
NAME_MAX = 256
#: summaries, update errors, metadata values, labels.
TEXT_MAX = 1024
#: a live-update session or token label (the plugin refuses longer ones).
LABEL_MAX = 256
#: one value in one log line.
LOG_VALUE_MAX = 4096

_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029"
_UNSAFE = re.compile(f"[\x00-\x1f\x7f-\x9f{_BIDI}\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    if char in _NAMED:
        return _NAMED[char]
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str, keep: str = "") -> str:
    r"""``text`` with every control, bidi and separator character written as an escape.

    Args:
        text: any string.
        keep: characters left as they are (e.g. ``"\n"`` for multi-line text that
            is printed, never logged).
    """
    if text.isprintable():
        # every character escaped here is one str.isprintable() refuses (Cc, Cf, Cs,
        # Zl, Zp): most text has none, and this test costs a quarter of the regex's
        # (43,000 strings while a 999-device machine starts; bench/NOTES.md item 14)
        return text
    if keep:
        return _UNSAFE.sub(lambda m: m.group() if m.group() in keep else _escape(m), text)
    return _UNSAFE.sub(_escape, text)


def clean(value: Any, limit: int = NAME_MAX) -> str:
    """``str(value)`` escaped (:func:`escape_controls`) and capped at ``limit`` characters."""
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:  # bound the work on a huge input before escaping it
        text = text[:limit]
        cut = True
    else:
        cut = False
    text = escape_controls(text)
    if cut or len(text) > limit:
        text = text[: limit - 1] + "…"
    return text
