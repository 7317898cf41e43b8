"""Per-client state of the fwupd-compatible API: bounded, and gone with the client."""

from __future__ import annotations

from pathlib import Path

import pytest

from livefw.compat_state import HINT_VALUE_MAX, HINTS_MAX, ClientState
from livefw.errors import NotSupported


def test_hints_are_capped_in_count_and_size() -> None:
    clients = ClientState()
    clients.set_hints(":1.1", {"locale": "de_DE.UTF-8"})
    with pytest.raises(NotSupported, match="too many hints"):
        clients.set_hints(":1.1", {f"k{i}": "" for i in range(HINTS_MAX + 1)})
    with pytest.raises(NotSupported, match="too long"):
        clients.set_hints(":1.1", {"locale": "x" * (HINT_VALUE_MAX + 1)})
    with pytest.raises(NotSupported, match="too long"):
        clients.set_hints(":1.1", {"k" * 65: ""})
    assert clients.hints == {":1.1": {"locale": "de_DE.UTF-8"}}


def test_the_least_recent_clients_are_dropped_past_the_cap() -> None:
    clients = ClientState(clients_max=3)
    for n in range(5):
        clients.set_hints(f":1.{n}", {"locale": "C"})
        clients.set_features(f":1.{n}", n)
    assert list(clients.hints) == [":1.2", ":1.3", ":1.4"]
    assert list(clients.features) == [":1.2", ":1.3", ":1.4"]


def test_a_client_that_leaves_is_forgotten() -> None:
    clients = ClientState()
    clients.set_hints(":1.7", {"locale": "C"})
    clients.set_features(":1.7", 233)
    assert clients.forget(":1.7")
    assert not clients.forget(":1.7")
    assert not clients.hints
    assert not clients.features


def test_compat_state_persists_notified_rows(tmp_path: Path) -> None:
    from livefw.compat_state import CompatState

    state = CompatState(str(tmp_path))
    state.set_notified("op1")
    assert CompatState(str(tmp_path)).notified == {"op1"}
    state.set_notified("op1", False)
    assert CompatState(str(tmp_path)).notified == set()
    # a damaged file reads as empty, it does not stop the daemon
    (tmp_path / "fwupd-notified.json").write_text("[not json")
    assert CompatState(str(tmp_path)).notified == set()


def test_firmware_lists_persist_and_refuse(tmp_path: Path) -> None:
    from livefw.errors import InvalidFile
    from livefw.firmware_lists import FirmwareLists, checksums

    lists = FirmwareLists(str(tmp_path))
    sha1, sha256 = "a" * 40, "b" * 64
    lists.check(sha1, sha256)  # no list set: anything goes
    lists.set(blocked=checksums([sha1.upper()]))
    again = FirmwareLists(str(tmp_path))
    assert again.blocked == {sha1}
    with pytest.raises(NotSupported, match=f"Firmware {sha1} is blocked"):
        again.check(sha1, sha256)
    again.set(blocked=set(), approved={"c" * 64})
    with pytest.raises(NotSupported, match="not in the approved list"):
        again.check(sha1, sha256)
    again.check(sha1, "c" * 64)
    with pytest.raises(InvalidFile, match="not a SHA-1 or SHA-256"):
        checksums(["xyz"])
    # a damaged file reads as empty, it does not stop the daemon
    (tmp_path / "fwupd-firmware-lists.json").write_text("{not json")
    assert FirmwareLists(str(tmp_path)).approved == set()


async def test_fwupd_errors_answer_with_fwupd_names() -> None:
    from livefw.bus.backend import DBusError
    from livefw.bus.errors import fwupd_errors
    from livefw.errors import Busy, InvalidArgument

    @fwupd_errors
    async def refuse(error: Exception) -> None:
        raise error

    cases = [
        (Busy("in flight"), "org.freedesktop.fwupd.AlreadyPending", "in flight"),
        (InvalidArgument("bad"), "org.freedesktop.fwupd.InvalidFile", "bad"),
        (RuntimeError("bug"), "org.freedesktop.fwupd.Internal", "internal error in refuse"),
        (DBusError("org.freedesktop.fwupd.NotFound", "as is"), "org.freedesktop.fwupd.NotFound",
         "as is"),
    ]  # fmt: skip
    for raised, name, text in cases:
        with pytest.raises(DBusError) as info:
            await refuse(raised)
        assert info.value.type == name
        assert str(info.value.text).startswith(text)
