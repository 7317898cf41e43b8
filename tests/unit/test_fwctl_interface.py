"""org.livefw.Daemon1.Fwctl.Rpc without a bus: which engine entry point each scope uses.

daemon/bus/ext_fwctl.py runs configuration, debug-write and debug-write-full RPCs
inside Engine.exclusive (docs/architecture.md, "Engine entry points") and debug-read
RPCs beside it; the device's own checks run before polkit is asked.
"""

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from livefw.bus.backend import DBusError
from livefw.bus.ext_fwctl import FwctlInterface
from livefw.engine import Engine
from livefw.kernel.sim.fwctl import FwctlComponent
from livefw.kernel.uapi import fwctl as uapi
from livefw.plugins.fwctl import FwctlDevice, FwctlPlugin

MEDIA = "6b0c3a2e-6f1d-4c1e-9a53-1f2d3c4b5a60"  # reset-only effects: debug-write


class _Context:
    """The parts of BusContext the interface uses: the engine, the caller, polkit."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.actions: list[str] = []

    async def caller_uid(self) -> int:
        return 1000

    async def authorize(self, action_id: str, details: dict[str, str] | None = None) -> int:
        self.actions.append(action_id)
        return 1000


async def _rpc(interface: FwctlInterface, scope: str, request: bytes) -> list[Any]:
    """The method as the bus calls it (the D-Bus decorator hides the return value)."""
    result: list[Any] = await FwctlInterface.Rpc.__wrapped__(  # type: ignore[attr-defined]
        interface, scope, request, {}
    )
    return result


def _device(engine: Engine, type_name: str) -> FwctlDevice:
    return next(
        d
        for d in engine.devices.values()
        if isinstance(d, FwctlDevice) and d.type_name == type_name
    )


def _sent(engine: Engine) -> int:
    component = engine.provider.machine.components["fwctl"]  # type: ignore[attr-defined]
    assert isinstance(component, FwctlComponent)
    return sum(component.rpc_counts.values())


@pytest.fixture
async def engine(make_engine: Callable[..., Any]) -> Engine:
    return await make_engine([FwctlPlugin])  # type: ignore[no-any-return]


async def test_write_scope_rpc_waits_for_the_change_in_flight(engine: Engine) -> None:
    cxl, mlx5 = _device(engine, "cxl"), _device(engine, "mlx5")
    context = _Context(engine)
    interface = FwctlInterface(context, cxl)  # type: ignore[arg-type]
    write = uapi.pack_set_feature(MEDIA, b"\x07" * 4, version=1)
    before = _sent(engine)
    async with engine.exclusive(mlx5, "another change"):
        task = asyncio.create_task(_rpc(interface, "debug-write", write))
        await asyncio.sleep(0.05)
        assert not task.done()
        assert f"1 more waiting (fwctl debug-write RPC on {cxl.name})" in engine.in_flight()
        assert _sent(engine) == before  # authorized, but nothing sent yet
        assert context.actions == ["org.livefw.daemon1.fwctl-debug-write"]
    _response, info = await asyncio.wait_for(task, 10)
    assert info["device-status-name"].value == "success"
    assert _sent(engine) == before + 1
    assert not engine.busy


async def test_debug_read_rpc_runs_beside_a_change_in_flight(engine: Engine) -> None:
    cxl, mlx5 = _device(engine, "cxl"), _device(engine, "mlx5")
    interface = FwctlInterface(_Context(engine), cxl)  # type: ignore[arg-type]
    read = uapi.pack_get_feature(MEDIA, 0, 4)
    async with engine.exclusive(mlx5, "another change"):
        _response, info = await asyncio.wait_for(_rpc(interface, "debug-read", read), 10)
    assert info["command"].value == "GET_FEATURE"


async def test_refused_request_asks_no_polkit_and_takes_no_lock(engine: Engine) -> None:
    cxl = _device(engine, "cxl")
    context = _Context(engine)
    interface = FwctlInterface(context, cxl)  # type: ignore[arg-type]
    escalation = uapi.pack_set_feature(MEDIA, b"\x07", version=1)
    with pytest.raises(DBusError) as raised:
        await _rpc(interface, "debug-read", escalation)
    assert raised.value.type == "org.livefw.Daemon1.Error.PermissionDenied"
    assert context.actions == []
    assert engine.in_flight() == "nothing is in flight"
