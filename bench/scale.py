# ruff: noqa: ASYNC220, ASYNC230, RUF001, RUF002
# (a measuring harness: blocking set-up between timed sections is deliberate)
"""livefwd from 1,000 to 10,000 simulated devices (issue 17 item 6).

At each size (SCALE_SIZES, default 999 and 9999: the counts the ``scale`` profile
gives) on one backend: warm start-up, compat ``GetDevices`` and
``GetManagedObjects`` round trips, RSS, one install among all the devices (a UEFI
capsule staged on the system firmware) and one property change (its cancel: the
device's ``PropertiesChanged`` timed at another client). At the smallest size a
separate process pings the daemon every 2 ms while the harness makes the largest
calls: the worst Ping is how long one call held the daemon's loop. Linear means
the cost per device at the largest size is within 1.5× of that at the smallest.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from bench.config import FWUPD_NAME, LIVEFW_NAME, LIVEFW_PATH, QUICK, log
from bench.fwupd import wipe
from bench.harness import Harness
from bench.procfs import cpu_delta, cpu_snapshot, read_mem
from bench.staging import _device_id, _guid_of
from bench.stats import summary
from bench.targets import Target, make_targets
from livefw.bus.backend import MessageBus, MessageType, Variant
from livefw.kernel.sim.control import request
from livefw.testing import PrivateBus

SCALE_SIZES = [int(x) for x in os.environ.get("SCALE_SIZES", "999 9999").split()]
SCALE_CALLS = int(os.environ.get("SCALE_CALLS", "3" if QUICK else "10"))
SCALE_STARTS = int(os.environ.get("SCALE_STARTS", "1" if QUICK else "3"))

_PINGER = r"""
import asyncio, json, os, signal, sys, time
os.environ.setdefault("LIVEFW_DBUS_BACKEND", "fast")
from livefw.bus.backend import Message, MessageBus
async def main():
    bus = await MessageBus(bus_address=sys.argv[1]).connect()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    waits = []
    print("ready", flush=True)
    while not stop.is_set():
        t0 = time.perf_counter()
        await bus.call(Message(destination=sys.argv[2], path="/",
                               interface="org.freedesktop.DBus.Peer", member="Ping"))
        waits.append((time.perf_counter() - t0) * 1e3)
        await asyncio.sleep(0.002)
    print(json.dumps(waits), flush=True)
asyncio.run(main())
"""


async def _timed(
    h: Harness, call: tuple[str, str, str, str], count: int, pid: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Round trips (µs) and the daemon's CPU per call (µs, schedstat of its threads).

    The daemon's CPU is the figure the other processes on the machine do not move:
    the round trip also holds dbus-daemon routing the reply and the harness reading it.
    """
    times, cpu = [], []
    for _ in range(count):
        gc.collect()  # the harness runs without automatic collections (bench/run.py)
        a = cpu_snapshot(pid)
        t0 = time.perf_counter()
        await h.call(*call)
        times.append((time.perf_counter() - t0) * 1e6)
        cpu.append(cpu_delta(a, cpu_snapshot(pid))["cpu_ms"] * 1e3)
    return summary(times) or {}, summary(cpu) or {}


async def _stall(h: Harness, calls: list[tuple[str, str, str, str]], count: int) -> dict[str, Any]:
    """Worst Ping wait (ms) from another process while ``calls`` run back to back."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _PINGER, h.private.address, LIVEFW_NAME],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=dict(os.environ, LIVEFW_DBUS_BACKEND=os.environ.get("LIVEFW_DBUS_BACKEND", "fast")),
        text=True,
    )
    assert proc.stdout is not None
    try:
        await asyncio.to_thread(proc.stdout.readline)  # "ready"
        await asyncio.sleep(0.5)
        for _ in range(count):
            for call in calls:
                await h.call(*call)
        await asyncio.sleep(0.2)
    finally:
        proc.terminate()
    out, _ = await asyncio.to_thread(proc.communicate, timeout=30)
    waits: list[float] = json.loads(out.strip().splitlines()[-1]) if out.strip() else []
    return {
        "pings": len(waits),
        "max_ms": max(waits) if waits else None,
        "median_ms": statistics.median(waits) if waits else None,
    }


async def _install(h: Harness, t: Target, scratch: str) -> dict[str, Any]:
    """Stage a UEFI capsule on the system firmware among all the others, then cancel it.

    The cancel is the property change: the device's flags and UpdateState change, timed
    from the ``Cancel`` call to its ``PropertiesChanged`` arriving at another client.
    """
    sim = os.path.join(t.state_dir, "sim")
    device = await _device_id(h, "uefi_capsule")
    guid, _version = await _guid_of(h, device)
    sample = await asyncio.to_thread(request, sim, "sample", {"device": guid})
    path = os.path.join(scratch, "scale-capsule.cap")
    with open(path, "wb") as f:
        f.write(base64.b64decode(sample["data"]))
    out: dict[str, Any] = {}
    fd = os.open(path, os.O_RDONLY)
    try:
        t0 = time.perf_counter()
        await h.call(
            LIVEFW_NAME,
            LIVEFW_PATH,
            "org.livefw.Daemon1.Manager",
            "Install",
            "sha{sv}",
            [device, 0, {"filename": Variant("s", "scale.cap")}],
            unix_fds=[fd],
            bus=h.fd_bus,
        )
        out["install_ms"] = (time.perf_counter() - t0) * 1e3
    except RuntimeError as error:
        return {"error": str(error)[:300]}
    finally:
        os.close(fd)
    watcher = await MessageBus(bus_address=h.private.address).connect()
    seen: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    def on_message(msg: Any) -> None:
        if (
            msg.message_type == MessageType.SIGNAL
            and msg.member == "PropertiesChanged"
            and not seen.done()
        ):
            seen.set_result(time.perf_counter())

    watcher.add_message_handler(on_message)
    try:
        await h.call(
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "AddMatch",
            "s",
            ["type='signal',interface='org.freedesktop.DBus.Properties'"],
            bus=watcher,
        )
        t0 = time.perf_counter()
        await h.call(
            LIVEFW_NAME, LIVEFW_PATH, "org.livefw.Daemon1.Manager", "Cancel", "sa{sv}", [device, {}]
        )
        out["cancel_ms"] = (time.perf_counter() - t0) * 1e3
        out["property_change_ms"] = (await asyncio.wait_for(seen, 30) - t0) * 1e3
    except (TimeoutError, RuntimeError) as error:
        out["error"] = f"{type(error).__name__}: {error}"[:300]
    finally:
        watcher.disconnect()
    return out


async def scale(h: Harness, scratch: str, bus: PrivateBus, backend: str) -> dict[str, Any]:
    """Every SCALE_SIZES figure for ``backend``, and the linearity verdict."""
    gd = (FWUPD_NAME, "/", "org.freedesktop.fwupd", "GetDevices")
    gmo = (LIVEFW_NAME, LIVEFW_PATH, "org.freedesktop.DBus.ObjectManager", "GetManagedObjects")
    out: dict[str, Any] = {"sizes": {}}
    for n in SCALE_SIZES:
        t = next(x for x in make_targets(scratch, bus, n, False) if x.backend == backend)
        res: dict[str, Any] = {}
        out["sizes"][str(n)] = res
        wipe(t.state_dir)
        await h.watch(t.name)
        proc, empty = await h.launch(t, f"scale-{t.key}-create.log")
        res["start_empty_ms"] = empty * 1e3
        await h.stop(proc, t)
        starts = []
        for run in range(SCALE_STARTS):
            proc, seconds = await h.launch(t, f"scale-{t.key}-start-{run}.log")
            starts.append(seconds * 1e3)
            if run < SCALE_STARTS - 1:
                await h.stop(proc, t)
        res["start_warm_ms"] = summary(starts)
        try:
            res["rss_start_kib"] = read_mem(proc.pid)["VmRSS"]
            reply = await h.call(*gd)
            res["devices"] = len(reply.body[0])
            reply = await h.call(*gmo)
            res["objects"] = len(reply.body[0])
            res["GetDevices_us"], res["GetDevices_cpu_us"] = await _timed(
                h, gd, SCALE_CALLS, proc.pid
            )
            res["GetManagedObjects_us"], res["GetManagedObjects_cpu_us"] = await _timed(
                h, gmo, SCALE_CALLS, proc.pid
            )
            res["install"] = await _install(h, t, scratch)
            if n == SCALE_SIZES[0]:
                res["stall"] = await _stall(h, [gmo, gd], max(2, SCALE_CALLS // 2))
                out["stall_ms_at_1000"] = res["stall"]["max_ms"]
            res["rss_after_kib"] = read_mem(proc.pid)["VmRSS"]
        finally:
            await h.stop(proc, t)
        log(
            f"scale {t.key}: {res.get('devices')} devices, start "
            f"{res['start_warm_ms']['median']:.0f} ms, GetDevices "
            f"{res['GetDevices_us']['median'] / 1e3:.1f} ms, GetManagedObjects "
            f"{res['GetManagedObjects_us']['median'] / 1e3:.1f} ms, install/cancel "
            f"{res['install']}, stall "
            f"{res.get('stall', {}).get('max_ms')}"
        )
    lo, hi = (out["sizes"].get(str(n)) for n in (SCALE_SIZES[0], SCALE_SIZES[-1]))
    if lo and hi and lo is not hi and lo.get("devices") and hi.get("devices"):
        d0, d1 = lo["devices"], hi["devices"]
        slopes, per_device = {}, {}
        for what in (
            "GetDevices_us",
            "GetManagedObjects_us",
            "GetDevices_cpu_us",
            "GetManagedObjects_cpu_us",
        ):
            if not lo.get(what) or not hi.get(what):
                continue
            a, b = lo[what]["median"], hi[what]["median"]
            slopes[what] = (b - a) / (d1 - d0)
            per_device[what] = (b / d1) / (a / d0)
        a, b = lo["start_warm_ms"]["median"], hi["start_warm_ms"]["median"]
        slopes["start_ms"] = (b - a) / (d1 - d0)
        ok = all(per_device[what] <= 1.5 for what in ("GetDevices_us", "GetManagedObjects_us"))
        out["linear"] = {
            "ok": ok,
            "slopes": slopes,
            "per_device_growth": per_device,
            "detail": (
                f"{d0}→{d1} devices: GetDevices {slopes['GetDevices_us']:.1f} µs/device "
                f"(per-device cost ×{per_device['GetDevices_us']:.2f}), GetManagedObjects "
                f"{slopes['GetManagedObjects_us']:.1f} µs/device "
                f"(×{per_device['GetManagedObjects_us']:.2f}), start "
                f"{slopes['start_ms'] * 1e3:.1f} µs/device"
                + "".join(
                    f"; daemon CPU {what.split('_')[0]} ×{per_device[what]:.2f}"
                    for what in ("GetDevices_cpu_us", "GetManagedObjects_cpu_us")
                    if what in per_device
                )
            ),
        }
    return out
