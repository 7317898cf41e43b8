"""livefw.sanitize, and where it is applied: device text, history, logs, the CLI's output."""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path

import pytest
import structlog

from livefw.cli.output import Output
from livefw.device import Device
from livefw.history import History
from livefw.logs import setup_logging
from livefw.sanitize import NAME_MAX, clean, escape_controls

HOSTILE = [
    "[/]",
    "[bold red]x",
    "\x1b[31mred\x1b]0;title\x07",
    "v1\n<2>forged",
    "\x9b31m\x85",
    "abc\u202etxt\u2066\u2028",
    "a\rb\tc\x7f\x00",
    "bad \udc80 surrogate",
    ":smile: :warning:",
]

_CONTROL = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029\ud800-\udfff]"
)


def test_escape_controls_writes_every_control_visibly() -> None:
    assert escape_controls("\x1b[1m") == "\\x1b[1m"
    assert escape_controls("a\nb\r\t") == "a\\nb\\r\\t"
    assert escape_controls("\x7f\x85\x9b") == "\\x7f\\x85\\x9b"
    assert (
        escape_controls("\u202e\u2066\u200f\u061c\u2028") == "\\u202e\\u2066\\u200f\\u061c\\u2028"
    )
    assert escape_controls("\udc80") == "\\udc80"
    assert escape_controls("[/] é ü 中 ✓") == "[/] é ü 中 ✓"
    assert escape_controls("a\nb\tc\x1b", keep="\n\t") == "a\nb\tc\\x1b"
    for text in HOSTILE:
        assert not _CONTROL.search(escape_controls(text).replace("\n", "")), text
        escape_controls(text).encode()  # valid UTF-8: sendable on D-Bus


def test_every_code_point_is_escaped_as_the_pattern_says() -> None:
    """The printable-text shortcut escapes exactly what the pattern alone escapes."""
    from livefw.sanitize import _UNSAFE, _escape

    # the shortcut holds if every character the pattern matches is not printable
    unsafe = [chr(code) for code in range(0x110000) if _UNSAFE.match(chr(code))]
    assert len(unsafe) == 0x20 + 0x21 + 14 + 0x800  # C0, DEL + C1, bidi, surrogates
    assert not any(char.isprintable() for char in unsafe)
    for text in [*HOSTILE, "plain", "é ü 中 ✓", "nbsp\u00a0", "private\ue000", ""]:
        assert escape_controls(text) == _UNSAFE.sub(_escape, text), text


def test_clean_caps_length_and_work() -> None:
    assert clean("x" * 10_000, 16) == "x" * 15 + "…"
    assert len(clean("\x1b" * 1_000_000, NAME_MAX)) == NAME_MAX
    assert clean(42) == "42"
    assert clean("short") == "short"


def test_device_text_is_sanitised_on_the_way_in() -> None:
    device = Device(
        "lfa",
        "phys\x1b",
        name="n\x1b[2J",
        vendor="v\n<2>x",
        summary="s" * 5000,
        version="1\u202e",
        metadata={"k\x1b": "v\x07", **{f"m{i}": "x" for i in range(100)}},
    )
    assert device.name == "n\\x1b[2J"
    assert device.vendor == "v\\n<2>x"
    assert len(device.summary) == 1024
    assert device.version == "1\\u202e"
    assert device.physical_id == "phys\x1b"  # a kernel key, kept for the plugin
    assert device.metadata["k\\x1b"] == "v\\x07"
    assert len(device.metadata) == 64
    changed = device.update(version_pending="2\n<2>forged", update_error="e\x1b")
    assert changed == {"version_pending", "update_error"}
    assert device.version_pending == "2\\n<2>forged"
    assert device.info().update_error == "e\\x1b"
    assert device.update(version="1\u202e") == frozenset()  # the same, once sanitised


def test_history_sanitises_what_it_stores_and_what_it_reads(tmp_path: Path) -> None:
    history = History(str(tmp_path / "history.db"))
    entry = history.begin(
        device_id="d",
        device_name="n\x1b[2J",
        plugin="p",
        physical_id="x",
        kind="install",
        version_old="1\n<2>",
        version_new="2\u202e",
        boot_id="b",
    )
    assert (entry.device_name, entry.version_old, entry.version_new) == (
        "n\\x1b[2J",
        "1\\n<2>",
        "2\\u202e",
    )
    done = history.set_state(entry.op_id, "failed", reason="r\x1b")
    assert done.reason == "r\\x1b"
    # a row written raw by an older livefwd is sanitised when read
    history._db.execute("UPDATE history SET reason = ? WHERE op_id = ?", ("\x1b[2J", entry.op_id))
    assert history.get(entry.op_id).reason == "\\x1b[2J"
    history.close()


@pytest.mark.parametrize("journal", [True, False])
def test_every_logged_value_stays_on_its_line(
    journal: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    try:
        setup_logging("debug", journal=journal)
        log = structlog.get_logger("test")
        log.info("lfa_image_added", name="a\x1b[31m", version="1.0\n<2>forged", items=["\u202e"])
        try:
            raise ValueError("boom\n<2>forged \x1b[2J")
        except ValueError:
            log.exception("failed", label="x" * 100_000)
    finally:
        structlog.reset_defaults()
    text = stream.getvalue()
    assert "\x1b" not in text
    assert "\u202e" not in text
    assert not re.search(r"^<[0-7]>forged", text, re.MULTILINE), text
    if journal:
        lines = text.splitlines()
        assert len(lines) == 2, text  # one line per event, tracebacks included
        assert lines[0].startswith("<6>")
        assert lines[1].startswith("<3>")
    assert len(text) < 20_000  # the 100,000-character value was capped


def test_output_prints_hostile_text_inert_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.delenv("NO_COLOR", raising=False)
    out = Output()
    assert out.out.is_terminal
    out.table(["Name", "Label"], [[str(i), text] for i, text in enumerate(HOSTILE)], title="[/]")
    out.fields([("Label", text) for text in HOSTILE], title=HOSTILE[0])
    for text in HOSTILE:
        out.info(text)
        out.error(text)
        out.warn(text)
    out.block("\n".join(HOSTILE))
    out.json({"labels": HOSTILE})
    captured = capsys.readouterr()
    for stream in (captured.out, captured.err):
        plain = re.sub(r"\x1b\[[0-9;]*m", "", stream)  # rich's own styling
        styling = re.findall(r"\x1b\[[0-9;]*m", stream)
        assert set(styling) <= {"\x1b[1m", "\x1b[0m", "\x1b[3m", "\x1b[31m", "\x1b[33m"}
        assert not _CONTROL.search(plain), repr(plain)
        assert not re.search(r"^<\d>", plain, re.MULTILINE)
        assert "\x1b[31mred" not in stream
        assert "\x1b]0;" not in stream
        assert "\x07" not in stream
    assert "[/]" in captured.out
    assert "[bold red]x" in captured.out
    assert ":smile:" in captured.out  # no emoji codes either
    assert "\\x1b[31mred" in captured.out


def test_cabinet_text_a_client_shows_is_sanitised() -> None:
    from livefw.cabinet import read_cabinet
    from livefw.cabinet_build import make_cabinet, make_metainfo

    payload = b"\x00" * 64
    metainfo = make_metainfo(
        appstream_id="org.example.hostile",
        guids=["12345678-1234-1234-1234-123456789abc"],
        version="2",
        payload_name="firmware.bin",
        payload=payload,
        name="Name\x9b31m\u202eexe",  # XML 1.0 allows C1 controls and bidi overrides
        summary="line one\nline two\x85",
        vendor="[bold]Vendor\x7f",
        description="<p>para\u2028graph \x9b2J</p>",
    )
    release = read_cabinet(
        make_cabinet({"firmware.metainfo.xml": metainfo, "firmware.bin": payload})
    ).releases[0]
    assert release.name == "Name\\x9b31m\\u202eexe"
    assert release.summary == "line one line two"  # whitespace (NEL too) collapsed
    assert release.vendor == "[bold]Vendor\\x7f"
    assert "\x9b" not in release.description
    assert "\u2028" not in release.description
