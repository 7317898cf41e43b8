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
from collections.abc import Callable
from pathlib import Path

import pytest
from nobody_env import hostile, parse_lines

from livefw.plugins.liveupdate.records import (
    REGISTRY_SESSIONS,
    SESSIONS_MAX,
    SESSIONS_PER_USER,
    SESSIONS_RESERVED_FOR_ROOT,
)
from livefw.testing import NOBODY, Cli, DaemonProcess, PolkitMock

OTHER = 2  # bin: a second unprivileged uid (the bus wants one with a passwd entry)
THIRD = 1  # daemon: a third one


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


#: creates sessions as the attack's uid until livefwd refuses one (at most ``limit``)
FILL = """
client = await Client.connect(ADDRESS)
objects = await client.managed_objects()
(path,) = [p for p, interfaces in objects.items() if LIVEUPDATE in interfaces]
made, refusal = 0, None
for index in range({limit}):
    try:
        await client.call("CreateSession", "sa{{sv}}", [f"{prefix}{{index}}", {{}}],
                          path=path, interface=LIVEUPDATE)
    except CallError as error:
        refusal = error.name.rsplit(".", 1)[-1] + ": " + error.message
        break
    made += 1
await client.close()
print(json.dumps([made, refusal]))
"""


#: 7.1 in `make robust` only (slow): ~750 sessions take 15-50 s on the shared machine
@pytest.mark.parametrize("kernel", ["7.2", pytest.param("7.1", marks=pytest.mark.slow)])
async def test_several_users_together_leave_root_its_sessions(
    bus_dir: str, state_dir: Path, kernel: str
) -> None:
    """Three uids, each within sessions_per_user, cannot take the sessions kept for
    root: with the default limits (256 per user, 248 of the 744 kept for root) main
    let nobody, bin and daemon take all 744, and root (the VMM manager) got NoSpace.

    Up to 7.1 the kernel's own 744 (luo_session.c LUO_SESSION_MAX) also counts
    livefwd's registry sessions: the registry rewrite after root's 247th session
    finds no room, so root gets 246 there (the refusal names the registry session).
    """
    with hostile(bus_dir, state_dir, extra_args=("--sim-kernel", kernel)) as h:
        h.polkit.set_allowed(["org.livefw.daemon1.liveupdate"])

        async def fill(uid: int, limit: int = SESSIONS_MAX) -> tuple[int, str | None]:
            source = "LIVEUPDATE = 'org.livefw.Daemon1.LiveUpdate'\n" + FILL.format(
                limit=limit, prefix=f"u{uid}-"
            )
            (result,) = parse_lines(await h.attack(source, timeout=600, uid=uid))
            assert isinstance(result, list)
            return result[0], result[1]

        users = SESSIONS_MAX - SESSIONS_RESERVED_FOR_ROOT
        nobody, other, third = await fill(NOBODY), await fill(OTHER), await fill(THIRD)
        root_made, root_refusal = await fill(0)
        # first what main fails on: the three users took all 744, root got none
        if kernel == "7.1":
            assert root_made == SESSIONS_RESERVED_FOR_ROOT - len(REGISTRY_SESSIONS), (
                nobody,
                other,
                third,
                root_refusal,
            )
            assert str(root_refusal).startswith(
                f"NoSpace: creating session {REGISTRY_SESSIONS[0]}: the kernel has no room"
            )
        else:
            assert root_made == SESSIONS_RESERVED_FOR_ROOT, (nobody, other, third, root_refusal)
            assert str(root_refusal).startswith(f"NoSpace: livefwd already brokers {SESSIONS_MAX} ")
        assert nobody == (
            SESSIONS_PER_USER,
            f"NoSpace: you hold {SESSIONS_PER_USER} live-update sessions and one user "
            f"may hold at most {SESSIONS_PER_USER} ([plugins.liveupdate] sessions_per_user "
            "in livefw.conf); finish or drop sessions you no longer need",
        )
        together = (
            f"NoSpace: users other than root hold {users} live-update sessions together "
            f"and may hold at most {users}: livefwd keeps {SESSIONS_RESERVED_FOR_ROOT} of "
            f"its {SESSIONS_MAX} for root ([plugins.liveupdate] sessions_reserved_for_root "
            "in livefw.conf)"
        )
        assert other[0] == users - SESSIONS_PER_USER, other
        assert str(other[1]).startswith(together), other
        assert third[0] == 0, third
        assert str(third[1]).startswith(together), third
        assert "Traceback" not in h.daemon.log()
