"""Fault injection around the kernel provider, shared by the fault-matrix tests.

:class:`FaultyProvider` wraps a :class:`SimProvider` and numbers every kernel call a
plugin makes while it is armed (sysfs reads and writes, file writes, renames, ioctls,
mmaps ...). A :class:`Plan` makes call number ``at`` fail with an errno, remove the
simulated device first (device removed mid-operation), or SIGKILL the process right
after the call returned. That is how the matrix reaches *every* step of every install
and activation path without knowing the plugins' code.

Scenarios (:data:`SCENARIOS`) say how to set a machine up for an operation, run it,
and what on the simulated machine counts as a staged artefact.
"""

from __future__ import annotations

import errno
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from livefw.config import Config
from livefw.engine import Engine
from livefw.errors import KernelError
from livefw.history import HistoryEntry
from livefw.kernel.sim.machine import SimMachine
from livefw.kernel.sim.provider import SimProvider
from livefw.kernel.sim.uefi_capsule import UefiCapsuleComponent
from livefw.plugin import InstallOptions, Payload, Plugin
from livefw.plugins.lfa import LfaPlugin
from livefw.plugins.pfru import PfruPlugin
from livefw.plugins.uefi_capsule import UefiCapsulePlugin

#: the errnos the matrix injects ("removed" also takes the simulated device away).
ERRNOS: dict[str, int] = {
    "EIO": errno.EIO,
    "EBUSY": errno.EBUSY,
    "ENOSPC": errno.ENOSPC,
    "EPERM": errno.EPERM,
    "EINVAL": errno.EINVAL,
    "removed": errno.ENODEV,
}


@dataclass
class Plan:
    """What to do at kernel call number ``at`` (None: only record the trace)."""

    at: int | None = None
    fault: str = ""  # an ERRNOS key, or "SIGKILL"
    armed: bool = False
    trace: list[str] = field(default_factory=list)
    fired: bool = False
    remove: Callable[[], None] | None = None
    kill_pending: bool = False


class FaultyHandle:
    """A provider handle whose calls count as steps."""

    def __init__(self, inner: Any, provider: FaultyProvider, path: str) -> None:
        self._inner = inner
        self._provider = provider
        self._path = path

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def fileno(self) -> int:
        return int(self._inner.fileno())

    async def read(self, size: int = -1) -> bytes:
        self._provider.step("read", self._path)
        result = bytes(await self._inner.read(size))
        self._provider.after()
        return result

    async def write(self, data: bytes) -> int:
        self._provider.step("write", self._path)
        result = int(await self._inner.write(data))
        self._provider.after()
        return result

    async def ioctl(self, request: int, arg: Any = None, **kwargs: Any) -> Any:
        self._provider.step(f"ioctl {request:#x}", self._path)
        result = await self._inner.ioctl(request, arg, **kwargs)
        self._provider.after()
        return result

    async def mmap(self, length: int) -> memoryview:
        self._provider.step("mmap", self._path)
        result: memoryview = await self._inner.mmap(length)
        self._provider.after()
        return result

    async def close(self) -> None:
        await self._inner.close()


class FaultyProvider:
    """A SimProvider whose kernel calls can fail on plan."""

    STEPPED = (
        "listdir",
        "read_attr",
        "write_attr",
        "read_file",
        "write_file",
        "unlink",
        "rename",
        "makedirs",
        "get_immutable",
        "set_immutable",
        "free_space",
        "kexec",
        "create_memfd",
    )

    def __init__(self, inner: SimProvider, plan: Plan) -> None:
        self.inner = inner
        self.plan = plan
        self.machine = inner.machine

    def step(self, op: str, path: str) -> None:
        """Before kernel call: record it; fail it with an errno if the plan says so."""
        plan = self.plan
        if not plan.armed:
            return
        index = len(plan.trace)
        plan.trace.append(f"{op} {path}")
        if plan.at != index or plan.fired:
            return
        plan.fired = True
        if plan.fault == "SIGKILL":
            plan.kill_pending = True
            return
        if plan.fault == "removed" and plan.remove is not None:
            plan.remove()
        raise KernelError(ERRNOS[plan.fault], op.split()[0], path, "injected by the fault matrix")

    def after(self) -> None:
        """After a kernel call returned: SIGKILL here if the plan says so."""
        if self.plan.kill_pending:
            self.plan.kill_pending = False
            os.kill(os.getpid(), signal.SIGKILL)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name not in self.STEPPED:
            return attr

        async def stepped(path: str = "", *args: Any, **kwargs: Any) -> Any:
            self.step(name, path)
            result = await attr(path, *args, **kwargs)
            self.after()
            return result

        return stepped

    async def open(self, path: str, *args: Any, **kwargs: Any) -> FaultyHandle:
        self.step("open", path)
        handle = FaultyHandle(await self.inner.open(path, *args, **kwargs), self, path)
        self.after()
        return handle

    async def adopt_fd(self, fd: int, path: str) -> FaultyHandle:
        return FaultyHandle(await self.inner.adopt_fd(fd, path), self, path)


# ------------------------------------------------------------------ scenarios


@dataclass(frozen=True)
class Scenario:
    """One install or activation path of one plugin.

    Attributes:
        plugin: the plugin name.
        plugins: plugin classes the engine loads.
        key: the simulated device key of the device under test.
        prepare: runs on a started engine before the operation (not faulted).
        run: the operation.
        artefacts: what the simulated machine holds staged for the device now.
    """

    name: str
    plugin: str
    plugins: Sequence[type[Plugin]]
    key: str
    run: Callable[[Engine, str], Awaitable[Any]]
    artefacts: Callable[[SimMachine], set[str]]
    prepare: Callable[[Engine, str], Awaitable[Any]] | None = None


def sim_payload(engine: Engine, key: str) -> Payload:
    machine = engine.provider.machine  # type: ignore[attr-defined]
    component, device = machine.find_device(key)
    return Payload(component.sample(device.key, None, None), "update.cap")


def _pfru_artefacts(machine: SimMachine) -> set[str]:
    staged = machine.components["pfru"].state.staged  # type: ignore[attr-defined]
    return {f"pfru staged rt {staged.rt_ver}"} if staged is not None else set()


def _uefi_artefacts(machine: SimMachine) -> set[str]:
    """Variables and ESP files a new machine does not have (the loader aside)."""
    state = machine.components["uefi_capsule"].state
    fresh = UefiCapsuleComponent.default_state("default", 0)
    base = {f"var {name}" for name in fresh.variables} | {f"esp {p}" for p in fresh.esp_files}
    found = {f"var {name}" for name in state.variables} | {f"esp {p}" for p in state.esp_files}
    # the fwupd loader stays on the ESP after an update, as with fwupd
    return {a for a in found - base if not a.endswith(".efi")}


def _no_artefacts(machine: SimMachine) -> set[str]:
    return set()


async def _activate(engine: Engine, device_id: str) -> Any:
    return await engine.activate(device_id)


async def _install_only(engine: Engine, device_id: str) -> Any:
    return await engine.install(device_id, _payload_for(engine, device_id), InstallOptions())


async def _install_activate(engine: Engine, device_id: str) -> Any:
    return await engine.install(
        device_id, _payload_for(engine, device_id), InstallOptions(activate=True)
    )


def _payload_for(engine: Engine, device_id: str) -> Payload:
    return sim_payload(engine, SCENARIO_KEYS[device_id])


#: device id -> sim key, filled in by :func:`device_for`.
SCENARIO_KEYS: dict[str, str] = {}

PFRU_CODE = "pfru/code-injection"
UEFI_SYSTEM = "uefi_capsule/ddc0ee61-e7f0-4e7d-acc5-c070a398838e"
LFA_BL31 = "lfa/47d4086d-4cfe-9846-9b95-2950cbbd5a00"

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("lfa-activate", "lfa", [LfaPlugin], LFA_BL31, _activate, _no_artefacts),
        Scenario("pfru-install", "pfru", [PfruPlugin], PFRU_CODE, _install_only, _pfru_artefacts),
        Scenario(
            "pfru-activate",
            "pfru",
            [PfruPlugin],
            PFRU_CODE,
            _activate,
            _pfru_artefacts,
            prepare=_install_only,
        ),
        Scenario(
            "pfru-install-activate",
            "pfru",
            [PfruPlugin],
            PFRU_CODE,
            _install_activate,
            _pfru_artefacts,
        ),
        Scenario(
            "uefi_capsule-install",
            "uefi_capsule",
            [UefiCapsulePlugin],
            UEFI_SYSTEM,
            _install_only,
            _uefi_artefacts,
        ),
    )
}


def device_for(engine: Engine, scenario: Scenario) -> str:
    """The engine's id of the scenario's device."""
    suffix = scenario.key.split("/", 1)[1]
    found = [
        d.id
        for d in engine.devices.values()
        if d.plugin == scenario.plugin and d.physical_id.endswith(suffix)
    ]
    assert len(found) == 1, (scenario.key, [d.physical_id for d in engine.devices.values()])
    SCENARIO_KEYS[found[0]] = scenario.key
    return found[0]


async def start_engine(state_dir: str, scenario: Scenario, plan: Plan) -> Engine:
    """A daemon process on the machine as it is on disk (created on first use)."""
    sim_dir = os.path.join(state_dir, "sim")
    if os.path.exists(os.path.join(sim_dir, "machine.json")):  # noqa: ASYNC240
        machine = SimMachine.load(sim_dir)
    else:
        machine = SimMachine.create(sim_dir, "default")
    provider = FaultyProvider(SimProvider(machine), plan)
    engine = Engine(provider, Config(), state_dir, scenario.plugins)  # type: ignore[arg-type]
    await engine.start()
    return engine


async def run_case(state_dir: str, scenario: Scenario, plan: Plan) -> BaseException | None:
    """Prepare, arm the plan, run the operation; return what it raised (or None)."""
    engine = await start_engine(state_dir, scenario, plan)
    device_id = device_for(engine, scenario)
    if scenario.prepare is not None:
        await scenario.prepare(engine, device_id)
    machine = engine.provider.machine  # type: ignore[attr-defined]

    def remove() -> None:
        component, device = machine.find_device(scenario.key)
        component.remove_device(device.key)
        machine.render()

    plan.remove = remove
    plan.armed = True
    outcome: BaseException | None = None
    try:
        await scenario.run(engine, device_id)
    except Exception as error:
        outcome = error
    finally:
        plan.armed = False
    await engine.stop()
    return outcome


@dataclass
class Verdict:
    """What a restarted daemon reports after a case."""

    rows: list[HistoryEntry]
    version: str | None
    update_state: str | None
    artefacts: set[str]
    problems: list[str]


async def restart_and_check(state_dir: str, scenario: Scenario) -> Verdict:
    """Start a fresh daemon on the state dir and check it tells the truth."""
    engine = await start_engine(state_dir, scenario, Plan())
    machine = engine.provider.machine  # type: ignore[attr-defined]
    problems: list[str] = []
    try:
        devices = [
            d
            for d in engine.devices.values()
            if d.plugin == scenario.plugin and d.physical_id.endswith(scenario.key.split("/")[1])
        ]
        device = devices[0] if devices else None
        rows = engine.history.entries()
        artefacts = scenario.artefacts(machine)
        for row in rows:
            if row.state == "pending":
                problems.append(f"row {row.op_id[:8]} still pending after the restart")
            if device is None or row.device_id != device.id:
                continue
            if row.state == "success" and device.version != row.version_new:
                problems.append(
                    f"row {row.kind} success to {row.version_new} but the device runs "
                    f"{device.version}"
                )
            if row.state.startswith("failed") and device.version != row.version_old:
                problems.append(
                    f"row {row.kind} failed ({row.reason}) but the device changed "
                    f"{row.version_old} -> {device.version}"
                )
            if not row.reason and row.state not in ("success",):
                problems.append(f"row {row.kind} {row.state} gives no reason")
        staged_rows = [r for r in rows if r.state == "staged"]
        if artefacts and not staged_rows:
            problems.append(f"staged artefacts with no history row owning them: {artefacts}")
        if staged_rows and not artefacts:
            problems.append("a history row says staged but nothing is staged")
        if (
            device is not None
            and staged_rows
            and str(device.update_state)
            not in (
                "pending",
                "needs-reboot",
            )
        ):
            problems.append(f"staged row but the device says {device.update_state}")
        return Verdict(
            rows,
            device.version if device else None,
            str(device.update_state) if device else None,
            artefacts,
            problems,
        )
    finally:
        await engine.stop()
