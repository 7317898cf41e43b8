"""The fault matrix: every kernel call of every install and activation path fails.

For each scenario (a plugin's install or activation path, see ``faultkit.SCENARIOS``)
a dry run records the kernel calls the plugin makes. Then each call, one case at a
time, fails with EIO, EBUSY, ENOSPC, EPERM, EINVAL, or ENODEV after the simulated
device was removed; and separately the daemon process is SIGKILLed right after each
call returned (a forked child, so nothing below the kill point runs). After every case
a fresh engine (a restarted daemon) starts on the same state dir and must tell the
truth: no row left pending, a row's outcome agrees with the firmware's version, a
staged row has its artefact and every staged artefact has its row.

``make test`` runs one errno case and one SIGKILL case per plugin; ``make robust`` runs
all of them and (``LIVEFW_WRITE_MATRIX=1``) writes tests/robust/MATRIX.md.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from faultkit import ERRNOS, SCENARIOS, Plan, Scenario, restart_and_check, run_case

from livefw.errors import LivefwError

HERE = Path(__file__).resolve().parent
MATRIX = HERE / "MATRIX.md"
FAULTS = [*ERRNOS, "SIGKILL"]

#: the case of each plugin `make test` runs: (scenario, errno step, errno, kill step).
QUICK = {
    "lfa": ("lfa-activate", "write_attr", "EIO"),
    "pfru": ("pfru-install", "write", "ENOSPC"),
    "uefi_capsule": ("uefi_capsule-install", "write sys/firmware/efi/efivars/fwupd", "ENOSPC"),
}
#: regression cases for the fixes the matrix found (also in `make test`): a failed
#: re-scan after the LFA firmware switched (the engine asks the plugin what happened),
#: PFRU activation failing in install --activate (the row keeps the staged capsule),
#: killed after the UEFI staging was complete (the restart records it staged).
REGRESSIONS = [
    ("lfa-activate", "listdir", "EIO"),
    ("pfru-install-activate", "ioctl 0x4004ee03", "EIO"),
    ("uefi_capsule-install", "read_file sys/firmware/efi/efivars/fwupd", "SIGKILL"),
]
QUICK_KILL = {
    "lfa": ("lfa-activate", "write_attr"),
    "pfru": ("pfru-install", "ioctl"),
    "uefi_capsule": ("uefi_capsule-install", "write sys/firmware/efi/efivars/Boot0"),
}

#: cases where the kernel interface cannot tell a restarted daemon what happened, with
#: why. PFRU has no query for a staged capsule: killed after PFRU_IOC_STAGE returned
#: but before the plugin recorded it, the restarted daemon cannot know the firmware
#: holds the capsule (the row says "interrupted before the capsule was staged"; the
#: next install replaces it, a reboot drops it).
KNOWN_GAPS = {
    ("pfru-install", "ioctl 0x4004ee02", "SIGKILL"): "PFRU cannot report a staged capsule",
    ("pfru-install-activate", "ioctl 0x4004ee02", "SIGKILL"): "PFRU cannot report a staged capsule",
}

#: outcomes of the cases that ran, for MATRIX.md.
RESULTS: dict[str, tuple[str, str]] = {}


_TRACES: dict[str, list[str]] = {}


def traces() -> dict[str, list[str]]:
    """Each scenario's kernel calls (a dry run in a temp dir, once per session)."""
    if not _TRACES:
        import tempfile

        for scenario in SCENARIOS.values():
            plan = Plan()
            with tempfile.TemporaryDirectory() as tmp:
                error = asyncio.run(run_case(tmp, scenario, plan))
            assert error is None, (scenario.name, error)
            _TRACES[scenario.name] = plan.trace
    return _TRACES


def _first(trace: list[str], prefix: str) -> int:
    return next(i for i, call in enumerate(trace) if call.startswith(prefix))


def cases() -> list[Any]:
    """Every (scenario, step, fault) as a pytest param; all but a few are slow."""
    quick = set()
    for name, prefix, fault in QUICK.values():
        quick.add((name, _first(traces()[name], prefix), fault))
    for name, prefix in QUICK_KILL.values():
        quick.add((name, _first(traces()[name], prefix), "SIGKILL"))
    for name, prefix, fault in REGRESSIONS:
        quick.add((name, _first(traces()[name], prefix), fault))
    params = []
    for name, trace in traces().items():
        for step, call in enumerate(trace):
            for fault in FAULTS:
                marks: tuple[Any, ...] = () if (name, step, fault) in quick else (pytest.mark.slow,)
                gap = KNOWN_GAPS.get((name, call.split(" dev/")[0], fault))
                if gap:
                    marks = (*marks, pytest.mark.xfail(reason=gap, strict=True))
                params.append(
                    pytest.param(
                        name, step, fault, id=case_id(name, step, fault, call), marks=marks
                    )
                )
    return params


def case_id(name: str, step: int, fault: str, call: str) -> str:
    return f"{name}-{step:02d}-{call.split()[0]}-{fault}"


def _summary(rows: list[Any]) -> str:
    return "; ".join(f"{r.kind} {r.state}" for r in rows) or "no row"


def _check(state_dir: str, scenario: Scenario) -> str:
    verdict = asyncio.run(restart_and_check(state_dir, scenario))
    assert not verdict.problems, verdict.problems
    return _summary(verdict.rows)


@pytest.mark.parametrize(("name", "step", "fault"), cases())
def test_fault(tmp_path: Path, name: str, step: int, fault: str) -> None:
    scenario = SCENARIOS[name]
    state_dir = str(tmp_path)
    call = traces()[name][step]
    if fault == "SIGKILL":
        outcome = _killed_child(state_dir, scenario, step)
    else:
        plan = Plan(at=step, fault=fault)
        error = asyncio.run(run_case(state_dir, scenario, plan))
        assert plan.fired, f"step {step} ({call}) was not reached: the path changed"
        if error is None:
            outcome = "success"
        else:
            assert isinstance(error, LivefwError), repr(error)
            # a mapped error says what happened; only an unmapped one is "unexpected"
            assert not error.message.startswith("unexpected error"), error.message
            outcome = error.dbus_name.rsplit(".", 1)[-1]
    cid = case_id(name, step, fault, call)
    RESULTS[cid] = (outcome, "known gap: see KNOWN_GAPS")
    RESULTS[cid] = (outcome, _check(state_dir, scenario))


def _killed_child(state_dir: str, scenario: Scenario, step: int) -> str:
    """Run the case in a forked child that SIGKILLs itself after kernel call ``step``."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: a daemon process that dies mid-operation
        code = 3
        try:
            plan = Plan(at=step, fault="SIGKILL")
            asyncio.run(run_case(state_dir, scenario, plan))
            code = 0 if plan.fired else 4
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status), f"the child was not killed at step {step} ({status})"
    assert os.WTERMSIG(status) == signal.SIGKILL
    return "killed"


def test_matrix_table_lists_every_case() -> None:
    """MATRIX.md lists exactly the cases the test parametrizes (regenerate: make robust)."""
    if os.environ.get("LIVEFW_WRITE_MATRIX") == "1":
        pytest.skip("MATRIX.md is being rewritten by this run")
    text = MATRIX.read_text()
    ids = {p.id for p in cases()}
    listed = {
        line.split("|")[1].strip(" `") for line in text.splitlines() if line.startswith("| `")
    }
    assert listed == ids, f"MATRIX.md is out of date: run `make robust` ({len(ids)} cases)"


def write_matrix() -> None:
    """Write MATRIX.md from the cases that ran (all of them: `make robust`)."""
    ids = [p.id for p in cases()]
    if not all(i in RESULTS for i in ids):
        return
    per_scenario = {name: len(trace) for name, trace in traces().items()}
    lines = [
        "# Fault matrix",
        "",
        "Generated by `make robust` (tests/robust/test_faults.py, `LIVEFW_WRITE_MATRIX=1`).",
        "Each kernel call of each install/activation path fails with each errno (``removed``:",
        "the simulated device is hot-removed, then the call fails with ENODEV), or the daemon",
        "is SIGKILLed right after the call returned. *Result* is what the client got;",
        "*after restart* is the history a restarted daemon reports (its checks passed:",
        "nothing pending, outcomes agree with the firmware, no staged artefact without a",
        "row owning it).",
        "",
        f"{len(ids)} cases: "
        + ", ".join(f"{name} {n} calls" for name, n in per_scenario.items())
        + f"; faults {', '.join(FAULTS)}.",
        "",
        "| case | kernel call | result | after restart |",
        "|---|---|---|---|",
    ]
    for name, trace in traces().items():
        for step, call in enumerate(trace):
            for fault in FAULTS:
                cid = case_id(name, step, fault, call)
                outcome, after = RESULTS[cid]
                lines.append(f"| `{cid}` | `{call}` | {outcome} | {after} |")
    MATRIX.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="session", autouse=True)
def _matrix_writer() -> Any:
    yield
    if os.environ.get("LIVEFW_WRITE_MATRIX") == "1":
        write_matrix()
