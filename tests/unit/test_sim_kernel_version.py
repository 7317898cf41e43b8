"""The simulated machine's kernel-release option (version-dependent kernel behaviour)."""

from __future__ import annotations

from pathlib import Path

import pytest

from livefw.errors import InvalidArgument
from livefw.kernel.sim.control import execute
from livefw.kernel.sim.machine import (
    DEFAULT_KERNEL,
    SimMachine,
    parse_kernel_version,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("6.1", (6, 1)), ("6.19", (6, 19)), ("7.2.13", (7, 2)), ("6.18-rc3", (6, 18))],
)
def test_kernel_versions_parse(text: str, expected: tuple[int, int]) -> None:
    assert parse_kernel_version(text) == expected


@pytest.mark.parametrize("text", ["", "6", "six.one", "6.1;rm", "5.15", "../6.1"])
def test_bad_or_too_old_kernel_versions_are_refused(text: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_kernel_version(text)


def test_machine_keeps_its_kernel_across_load(tmp_path: Path) -> None:
    machine = SimMachine.create(str(tmp_path / "sim"), "default", kernel="6.1")
    assert machine.kernel_version == (6, 1)
    assert machine.kernel_at_least("6.1")
    assert not machine.kernel_at_least("6.19")
    again = SimMachine.load(str(tmp_path / "sim"))
    assert again.state.kernel == "6.1"
    assert execute(again, "status", {})["kernel"] == "6.1"


def test_default_kernel_is_the_newest_modelled(tmp_path: Path) -> None:
    machine = SimMachine.create(str(tmp_path / "sim"))
    assert machine.state.kernel == DEFAULT_KERNEL
    assert machine.kernel_at_least("6.19")


def test_create_refuses_a_bad_kernel(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument):
        SimMachine.create(str(tmp_path / "sim"), kernel="4.19")
