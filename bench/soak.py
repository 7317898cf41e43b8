# ruff: noqa: RUF002
# (a measuring harness: blocking set-up between timed sections is deliberate)
"""Memory over a long call loop: issue 17 item 2, "no growth over a 10-minute call loop".

fwupd and each livefwd backend run at the same time, each on a private bus of its own
(both own ``org.freedesktop.fwupd``), for ``SOAK_SECONDS`` (600; 30 in a quick run) at
``SOAK_DEVICES`` devices, each under a client that calls without pause. Every
iteration makes the calls a frontend and a shell user make: the compat ``GetDevices``,
``GetRemotes``, ``GetHistory``, the compat properties, and for livefwd its
``GetManagedObjects`` and ``Peer.Ping``; every tenth iteration also ``GetDetails`` of a
small cabinet passed as a descriptor (livefwd reads it through a reader child and
parses it; no device has its GUID, so it is described for none) and of a file that is
no cabinet (refused). Refusals
are expected and counted by name; anything else ends the loop.

Every ``SOAK_SAMPLE`` seconds the daemon's RSS (``VmRSS``) is read. The first
``SOAK_WARMUP`` seconds are the warm-up (caches fill, thread pools grow, the allocator
settles); the figure is the RSS of the last window of that length against the first
window after the warm-up: their medians, each with its p25-p75 as the noise band
(bench.stats), and the least-squares slope over everything after the warm-up. Open
descriptors and threads are counted between two calls after the warm-up and at the
end. The verdict (bench/verdicts.py): livefwd's last window ≤ 1.01× its first, with
fwupd's ratio beside it, and as many descriptors and threads at the end as after the
warm-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Any

from bench.config import (
    BACKENDS,
    FWUPD_NAME,
    LIVEFW_NAME,
    LIVEFW_PATH,
    SOAK_DEVICES,
    SOAK_SAMPLE,
    SOAK_SECONDS,
    SOAK_WARMUP,
    log,
)
from bench.fwupd import ensure_fwupd
from bench.harness import Harness
from bench.procfs import read_mem
from bench.stats import summary
from bench.targets import Target, fwupd_target, livefw_target
from livefw.bus.backend import MessageBus, MessageType
from livefw.cabinet_build import make_cabinet, make_metainfo
from livefw.testing import PolkitMock, PrivateBus

#: a GUID no simulated or fake-ESRT device has: GetDetails parses the cabinet and
#: answers with its release for no device (both daemons; no refusal)
_NO_DEVICE_GUID = "0e9d2d36-9e4b-4a56-b9a5-1c0de5d0ac31"


def _files(scratch: str, key: str) -> tuple[str, str]:
    """A small cabinet for no device, and a file that is no cabinet."""
    cab = os.path.join(scratch, f"{key}.cab")
    junk = os.path.join(scratch, f"{key}.bin")
    payload = os.urandom(64 << 10)
    metainfo = make_metainfo(
        appstream_id="org.livefw.bench.soak",
        guids=[_NO_DEVICE_GUID],
        version="1.2.3",
        payload_name="firmware.bin",
        payload=payload,
        name="Soak",
    )
    with open(cab, "wb") as f:
        f.write(make_cabinet({"firmware.bin": payload, "firmware.metainfo.xml": metainfo}))
    with open(junk, "wb") as f:
        f.write(b"not a cabinet\n" * 100)
    return cab, junk


def _calls(t: Target) -> list[tuple[str, str, str, str, str, list[Any]]]:
    fwupd = (FWUPD_NAME, "/", "org.freedesktop.fwupd")
    calls = [
        (*fwupd, "GetDevices", "", []),
        (*fwupd, "GetRemotes", "", []),
        (*fwupd, "GetHistory", "", []),
        (FWUPD_NAME, "/", "org.freedesktop.DBus.Properties", "GetAll", "s", [fwupd[2]]),
    ]
    if t.native:
        calls.append(
            (
                LIVEFW_NAME,
                LIVEFW_PATH,
                "org.freedesktop.DBus.ObjectManager",
                "GetManagedObjects",
                "",
                [],
            )
        )
        calls.append((LIVEFW_NAME, "/", "org.freedesktop.DBus.Peer", "Ping", "", []))
    return calls


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


#: GetDetails (a reader child per call in livefwd) once every this many iterations
_DETAILS_EVERY = 10


async def _loop(
    h: Harness, bus: Any, t: Target, files: tuple[str, str], until: float, out: dict[str, Any]
) -> None:
    """Call until ``time.perf_counter()`` passes ``until``; count calls and refusals
    (by error name) into ``out``."""
    calls = _calls(t)
    refused: dict[str, int] = out.setdefault("refused", {})
    made = out.get("calls", 0)
    iteration = 0
    while time.perf_counter() < until:
        iteration += 1
        batch = [(c, None) for c in calls]
        if iteration % _DETAILS_EVERY == 1:
            details = (FWUPD_NAME, "/", "org.freedesktop.fwupd", "GetDetails", "h", [0])
            batch += [(details, path) for path in files]
        for (dest, path, iface, member, signature, body), file in batch:
            fd = os.open(file, os.O_RDONLY) if file else -1
            try:
                fds = [fd] if file else []
                reply = await h.call(
                    dest, path, iface, member, signature, body, fds, bus=bus, check=False
                )
            finally:
                if file:
                    os.close(fd)
            made += 1
            if reply.message_type != MessageType.METHOD_RETURN:
                what = f"{member}({os.path.basename(file)})" if file else member
                key = f"{what}: {reply.error_name}"
                refused[key] = refused.get(key, 0) + 1
    out["calls"] = made


async def _sample(pid: int, stop: asyncio.Event, samples: list[list[float]], t0: float) -> None:
    while not stop.is_set():
        samples.append([time.perf_counter() - t0, read_mem(pid)["VmRSS"]])
        gc.collect()  # the harness's own garbage (it runs with the collector off)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SOAK_SAMPLE)


def _quiet(pid: int) -> list[int]:
    """Open descriptors and threads of ``pid`` between calls (none in flight)."""
    return [len(os.listdir(f"/proc/{pid}/fd")), read_mem(pid)["Threads"]]


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of ``(x, y)`` points (0 with fewer than two)."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in points) / sxx


def reduce(samples: list[list[float]], seconds: float, warm: float) -> dict[str, Any]:
    """The two windows of ``warm`` s (after the warm-up, at the end) and the slope."""
    after = [s for s in samples if s[0] >= warm]
    first = [s[1] / 1024 for s in after if s[0] < warm + warm]
    last = [s[1] / 1024 for s in after if s[0] >= seconds - warm]
    return {
        "first_mib": summary(first),
        "last_mib": summary(last),
        "slope_mib_per_min": _slope([(s[0] / 60, s[1] / 1024) for s in after]),
        "window_s": warm,
    }


async def _one(
    scratch: str, t: Target, bus: PrivateBus, seconds: float, warm: float
) -> dict[str, Any]:
    h = Harness(bus, scratch)
    await h.connect()
    out: dict[str, Any] = {"label": t.label}
    try:
        await h.watch(t.name)
        proc, _ = await h.launch(t, f"{t.key}.log")
        client = await MessageBus(bus_address=bus.address, negotiate_unix_fd=True).connect()
        samples: list[list[float]] = []
        stop = asyncio.Event()
        t0 = time.perf_counter()
        sampler = asyncio.ensure_future(_sample(proc.pid, stop, samples, t0))
        files = _files(scratch, t.key)
        try:
            await _loop(h, client, t, files, t0 + warm, out)
            out["after_warmup"] = _quiet(proc.pid)  # [descriptors, threads]
            await _loop(h, client, t, files, t0 + seconds, out)
            out["seconds"] = time.perf_counter() - t0
            out["at_end"] = _quiet(proc.pid)
            stop.set()
            await sampler
        finally:
            sampler.cancel()
            client.disconnect()
            await h.stop(proc, t)
        out["samples"] = samples
        out.update(reduce(samples, out["seconds"], warm))
    finally:
        for connection in (h.bus, h.fd_bus):
            connection.disconnect()
    return out


async def soak(scratch: str, devices: int, fwupd_ok: bool) -> dict[str, Any]:
    """Every daemon's loop at once, each on its own bus; stopped by pid at the end."""
    root = tempfile.mkdtemp(prefix="soak.", dir=scratch)  # fake roots and states of its own
    buses: list[tuple[Target, PrivateBus, PolkitMock]] = []
    warm = min(SOAK_WARMUP, SOAK_SECONDS / 3)
    try:
        keys = (["fwupd"] if fwupd_ok else []) + list(BACKENDS)
        for key in keys:
            os.makedirs(os.path.join(root, key, "bus"), exist_ok=True)
            bus = PrivateBus(os.path.join(root, key, "bus")).start()
            polkit = PolkitMock(bus).start()
            polkit.allow_unknown()
            if key == "fwupd":
                # in a scratch of its own: fwupd's fake root for this count may exist
                t = fwupd_target(root, bus, devices, key=f"soak-fwupd-{devices}")
            else:
                t = livefw_target(root, bus, devices, key, key=f"soak-livefw-{key}-{devices}")
            buses.append((t, bus, polkit))
        log(
            f"soak: {', '.join(t.label for t, _, _ in buses)} at {devices} devices, "
            f"{SOAK_SECONDS:.0f} s, all at once"
        )
        results = await asyncio.gather(
            *[_one(root, t, bus, SOAK_SECONDS, warm) for t, bus, _ in buses],
            return_exceptions=True,
        )
        out: dict[str, Any] = {"devices": devices, "seconds": SOAK_SECONDS, "targets": {}}
        for (t, _, _), r in zip(buses, results, strict=True):
            if isinstance(r, BaseException):
                out.setdefault("errors", []).append(f"{t.key}: {type(r).__name__}: {r}")
                continue
            out["targets"][t.key] = r
            first, last = r["first_mib"], r["last_mib"]
            if first and last:
                log(
                    f"soak {t.key}: {r['calls']} calls, RSS {first['median']:.1f} → "
                    f"{last['median']:.1f} MiB, slope {r['slope_mib_per_min']:+.3f} MiB/min, "
                    f"descriptors and threads {r['after_warmup']} → {r['at_end']}"
                )
        return out
    finally:
        for _, bus, polkit in buses:
            polkit.stop()
            bus.stop()


async def _main() -> None:
    """``make bench-soak``: the loop alone, its summary as JSON (no REPORT.md)."""
    scratch = tempfile.mkdtemp(prefix="livefw-soak.")
    gc.disable()  # as bench/run.py: the instrument does not collect during a call
    try:
        problem = ensure_fwupd()
        result = await soak(scratch, SOAK_DEVICES, problem is None)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for r in result["targets"].values():
        r.pop("samples", None)
    json.dump(result, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    asyncio.run(_main())
