"""Text from another user or from firmware reaches root's terminal and the log as text.

Issue 13, item 7. An unprivileged client (uid nobody, through ``setpriv``) labels
live-update sessions with rich markup, terminal escape sequences, C1 controls, bidi
overrides and a newline followed by ``<2>`` (journald's critical priority); a
simulated firmware image reports such a version. Root's ``livefw`` then lists them
with and without a terminal (``script`` gives it a pty): it exits 0, no markup is
interpreted, no control character other than the CLI's own styling reaches the
terminal, no line starts with a forged priority, and the daemon publishes and logs
the strings sanitised (``livefw.sanitize``).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from livefw.sanitize import escape_controls
from livefw.testing import Cli, DaemonProcess, PolkitMock

HOSTILE = {
    "markup": "[/]",
    "style": "[bold red]x",
    "link": "[link=file:///etc/shadow]click[/link]",
    "esc": "\x1b[31mred\x1b]0;pwned\x07\x1b[2J",
    "journal": "v1\n<2>forged critical",
    "prio": "<2>forged at the start of a line",
    "c1": "\x9b31mcsi\x85nel",
    "bidi": "abc\u202etxt.exe\u2066",
    "cr": "visible\rhidden",
}

#: the only escape sequences rich itself writes for a table on a terminal (bold header,
#: reset); everything else would have come from the data.
RICH_SGR = re.compile(r"\x1b\[(?:0|1|3|31|33)?m")


def _no_control_left(text: str) -> None:
    """No control, bidi or separator character in ``text`` (line breaks between lines aside)."""
    stripped = RICH_SGR.sub("", text).replace("\r\n", "\n")
    for line in stripped.split("\n"):
        assert escape_controls(line) == line, repr(line)
    assert not re.search(r"^<\d>", stripped, re.MULTILINE), stripped


def _terminal(cli: Cli, *args: str) -> subprocess.CompletedProcess[str]:
    """``livefw ARGS`` on a pseudo-terminal (util-linux ``script``)."""
    if shutil.which("script") is None:
        pytest.skip("script (util-linux) is not installed")
    env = {**cli.env(), "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    return subprocess.run(
        ["script", "-qec", shlex.join([cli.program, *args]), "/dev/null"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def _sessions(cli: Cli) -> dict[str, dict[str, Any]]:
    rows = json.loads(cli("liveupdate", "list", "--json").stdout)
    return {row["name"]: row for row in rows}


def test_hostile_labels_from_another_user_print_as_text(
    daemon: DaemonProcess, cli: Cli, nobody: int
) -> None:
    for name, label in HOSTILE.items():
        cli("liveupdate", "create", name, "--label", label, uid=nobody)

    # published sanitised: what root gets on the bus is one printable line
    listed = _sessions(cli)
    assert set(listed) == set(HOSTILE)
    for name, label in HOSTILE.items():
        assert listed[name]["label"] == escape_controls(label), name
    assert listed["markup"]["label"] == "[/]"  # markup is not a control character

    # without a terminal: exit 0, markup shown as it is
    piped = cli("liveupdate", "list")
    assert piped.returncode == 0
    for text in ("[/]", "[bold red]x", "[link=file:///etc/shadow]click[/link]"):
        assert text in piped.stdout, piped.stdout
    assert "\\x1b[31mred" in piped.stdout
    _no_control_left(piped.stdout + piped.stderr)

    # on a terminal: the same, and nothing but rich's own styling
    term = _terminal(cli, "liveupdate", "list")
    assert term.returncode == 0, term.stdout + term.stderr
    assert "[/]" in term.stdout, term.stdout
    assert "[bold red]x" in term.stdout, term.stdout
    _no_control_left(term.stdout)

    # the nobody user's own view, and root's JSON, carry no raw control either
    own = cli("liveupdate", "list", uid=nobody)
    _no_control_left(own.stdout + own.stderr)
    raw = cli("liveupdate", "list", "--json").stdout
    assert "\x1b" not in raw
    assert "\u202e" not in raw
    assert "\n<2>" not in raw

    # errors quoting the user's text are printed as text too
    missing = cli("liveupdate", "drop", "[/]\x1b[2J", check=False)
    assert missing.returncode == 3
    assert "Traceback" not in missing.stderr
    _no_control_left(missing.stderr)

    log = daemon.log()
    assert "\x1b" not in log
    assert "\u202e" not in log
    assert not re.search(r"^<\d>", log, re.MULTILINE)


@pytest.mark.parametrize("journal", [False, True], ids=["console-log", "journal-log"])
def test_hostile_firmware_strings_are_published_and_logged_sanitised(
    daemon_factory: Callable[..., DaemonProcess],
    polkit: PolkitMock,
    cli: Cli,
    state_dir: Path,
    journal: bool,
) -> None:
    env = {}
    if journal:  # stderr "is" the journal: livefwd writes <N>key=value lines
        log_file = state_dir / "livefwd.log"
        log_file.touch()
        info = log_file.stat()
        env["JOURNAL_STREAM"] = f"{info.st_dev}:{info.st_ino}"
    daemon = daemon_factory(env=env)
    version = "1.0\x1b[2J\x9b1m\u202e"
    pending = "2.0\n<2>forged critical"
    cli("sim", "add", "lfa", f"version={version}", f"pending={pending}")
    cli("refresh")  # no uevent for LFA images: the daemon rescans on Refresh
    devices = json.loads(cli("get-devices", "--json").stdout)
    (device,) = [d for d in devices if d["Version"].startswith("1.0\\x1b")]
    assert device["Version"] == escape_controls(version)
    assert device["VersionPending"] == escape_controls(pending)

    for args in (("get-devices",), ("get-device", device["Id"])):
        for result in (cli(*args), _terminal(cli, *args)):
            assert result.returncode == 0, result.stdout + result.stderr
            assert "<2>forged" in result.stdout
            _no_control_left(result.stdout + result.stderr)

    # the scheduled-activation timer's command: its output goes to the journal
    timer = cli("activate", "--pending", check=False)
    assert timer.returncode in (0, 1), timer.stdout + timer.stderr
    assert "<2>forged" in timer.stdout + timer.stderr
    _no_control_left(timer.stdout + timer.stderr)
    history = cli("history")
    _no_control_left(history.stdout + history.stderr)

    log = daemon.log()
    if journal:
        assert log.startswith("<"), log[:200]
        lines = log.splitlines()
        assert all(re.match(r"<[3-7]>event=", line) for line in lines), lines
    assert "forged critical" in log  # the value was logged ...
    assert "\x1b" not in log
    assert "\x9b" not in log
    assert "\u202e" not in log
    if not journal:  # ... on its own line (in the journal: each line one event, above)
        assert not re.search(r"^<\d>", log, re.MULTILINE)


def test_progress_shows_a_hostile_file_name_as_text(
    daemon: DaemonProcess, cli: Cli, tmp_path: Any
) -> None:
    payload = tmp_path / "[reverse]x\x1b[2J.cap"  # (a file name cannot hold the "/" of "[/]")
    cli("sim", "sample", "pfru/code-injection", "-o", str(payload))
    result = _terminal(cli, "install", str(payload))
    assert result.returncode == 0, result.stdout
    assert "Traceback" not in result.stdout
    assert "\x1b[2J" not in result.stdout  # the name's own sequence never reaches the pty
    assert "Installing [reverse]x\\x1b[2J.cap" in result.stdout, result.stdout
