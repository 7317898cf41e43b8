"""One unprivileged user cannot take every live-update session livefwd brokers.

Issue 13 in spirit: livefwd brokers at most SESSIONS_MAX sessions, and any uid that
polkit lets use ``org.livefw.daemon1.liveupdate`` could take them all.
``[plugins.liveupdate] sessions_per_user`` bounds what one non-root uid holds. Here
polkit grants only that action; ``nobody`` (through ``setpriv``) creates sessions with
the CLI until it is refused, another uid and root are not affected, and a dropped
session makes room again.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable

import pytest

from livefw.testing import NOBODY, Cli, DaemonProcess, PolkitMock

OTHER = 2  # bin: a second unprivileged uid (the bus wants one with a passwd entry)


@pytest.fixture
def nobody() -> int:
    if os.geteuid() != 0:
        pytest.skip("needs root to run a client as nobody (setpriv)")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    return NOBODY


def _names(cli: Cli, uid: int | None = None) -> list[str]:
    rows = json.loads(cli("liveupdate", "list", "--json", uid=uid).stdout)
    return sorted(row["name"] for row in rows)


def test_one_user_is_held_to_sessions_per_user(
    daemon_factory: Callable[..., DaemonProcess],
    polkit: PolkitMock,
    cli: Cli,
    nobody: int,
) -> None:
    polkit.allow_unknown(False)
    polkit.set_allowed(["org.livefw.daemon1.liveupdate"])
    daemon = daemon_factory(config_text="[plugins.liveupdate]\nsessions_per_user = 3\n")
    for name in ("a", "b", "c"):
        cli("liveupdate", "create", name, uid=nobody)
    refused = cli("liveupdate", "create", "d", uid=nobody, check=False)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "you hold 3 live-update sessions" in refused.stderr, refused.stderr
    assert "at most 3" in refused.stderr
    assert "sessions_per_user" in refused.stderr
    assert _names(cli, nobody) == ["a", "b", "c"]  # the refusal changed nothing

    cli("liveupdate", "create", "other", uid=OTHER)  # another user has its own quota
    for name in ("r1", "r2", "r3", "r4"):
        cli("liveupdate", "create", name)  # root is exempt
    cli("liveupdate", "drop", "b", uid=nobody)
    cli("liveupdate", "create", "d", uid=nobody)  # a dropped session made room
    assert _names(cli, nobody) == ["a", "c", "d"]
    assert len(_names(cli)) == 3 + 1 + 4
    assert "Traceback" not in daemon.log()
