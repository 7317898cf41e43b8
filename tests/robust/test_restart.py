"""Killing the daemon in the middle of a client's session, and starting it again.

A client runs ``livefw activate`` on an LFA image whose firmware takes a few seconds;
the daemon is SIGKILLed while the activation runs. The client must get an answer
(an error, never a hang); a new daemon must reconcile the interrupted row from the
firmware's state (never leave it pending), keep every earlier row, and serve the
same client session's next calls.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from livefw.testing import Cli, DaemonProcess, PolkitMock


def _history(cli: Cli) -> list[dict[str, object]]:
    return list(json.loads(cli("history", "--json").stdout))


def test_kill_mid_activation_then_restart(
    daemon_factory: Callable[..., DaemonProcess],
    polkit: PolkitMock,
    cli: Cli,
    tmp_path: Path,
) -> None:
    daemon = daemon_factory()
    # an earlier, finished operation that must survive the kill
    payload = tmp_path / "pfru.cap"
    cli("sim", "sample", "pfru/code-injection", "-o", str(payload))
    cli("install", str(payload), "code injection")
    before = _history(cli)
    assert len(before) == 1
    cli("sim", "set", "lfa", "activate_seconds=4")
    client = cli.popen("activate", "TF-A BL31")
    deadline = time.monotonic() + 30
    while not any(row["State"] == "pending" for row in _history(cli)):
        assert time.monotonic() < deadline, "the activation never started"
        time.sleep(0.1)
    daemon.kill()
    # the client is answered (the bus tells it the daemon went away), never left hanging
    _, err = client.communicate(timeout=30)
    assert client.returncode not in (0, None), err
    daemon.start()
    rows = _history(cli)
    assert len(rows) == 2
    assert before[0]["Id"] in {r["Id"] for r in rows}
    interrupted = next(r for r in rows if r["Kind"] == "activate")
    assert interrupted["State"] in ("failed", "success"), interrupted
    device = json.loads(cli("get-device", "TF-A BL31", "--json").stdout)
    if interrupted["State"] == "failed":
        # the firmware never switched: still the old version, still pending
        assert device["Version"] == interrupted["VersionOld"], (device, interrupted)
        assert device["VersionPending"], device
        assert interrupted["Reason"], interrupted
    else:
        assert device["Version"] == interrupted["VersionNew"], (device, interrupted)
    # the earlier row is untouched, and the client can carry on
    earlier = next(r for r in rows if r["Kind"] == "install")
    assert earlier == before[0]
    cli("sim", "set", "lfa", "activate_seconds=0")
    cli("activate", "TF-A BL31")
    assert json.loads(cli("get-device", "TF-A BL31", "--json").stdout)["Version"] == "2.14"
