"""Per-client state of the fwupd-compatible API: bounded, and gone with the client."""

from __future__ import annotations

import pytest

from livefw.bus.compat import HINT_VALUE_MAX, HINTS_MAX, ClientState
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
