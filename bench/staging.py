# ruff: noqa: ASYNC230, ASYNC240
# (a measuring harness: blocking set-up between timed sections is deliberate)
"""Staging a large capsule (raw and in a cabinet) and reading PFRU telemetry."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from typing import Any

from bench.config import (
    CALLS,
    CLK_TCK,
    LIVEFW_NAME,
    LIVEFW_PATH,
    STAGE_KINDS,
    STAGE_MIB,
    STAGE_PLUGIN,
    STAGE_RUNS,
    log,
)
from bench.fwupd import wipe
from bench.harness import Harness
from bench.procfs import cpu_delta, cpu_snapshot, read_mem
from bench.stats import mmm, summary
from bench.targets import Target
from livefw.bus.backend import Variant
from livefw.cabinet_build import make_cabinet, make_metainfo
from livefw.kernel.sim.pfru_capsule import build_capsule
from livefw.kernel.uapi import pfru as pfru_uapi


def _prepare_machine(path: str) -> None:
    """An ESP with room for the capsule and a PFRT log buffer that has wrapped (full).

    The default machine's ESP is 64 MiB (staging needs twice the capsule) and its
    telemetry has only the boot records; both are simulator state in machine.json.
    """
    with open(path, encoding="utf-8") as f:
        machine = json.load(f)
    machine["components"]["uefi_capsule"]["esp_size"] = 1 << 30
    pfru = machine["components"]["pfru"]
    # a firmware communication buffer (_DSM fn 2) that holds the bench's capsule
    pfru["comm_buf_size"] = max(pfru["comm_buf_size"], (PFRU_MIB + 1) << 20)
    size = pfru["telemetry_size"]
    for key, ring in pfru["rings"].items():
        text, index = "", 0
        while len(text) < size:
            index += 1
            text += f"[{index:06d}] INFO    bench record {index} of log {key}\n"
        ring["data"] = text[:size]
        ring["head"] = 0
        ring["rollover"] = max(1, ring.get("rollover", 0))
    pfru["telemetry_started"] = True
    pfru["sequence"] = max(pfru.get("sequence", 0), 100_000)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(machine, f)
    os.replace(path + ".tmp", path)


async def extras(h: Harness, t: Target) -> dict[str, Any]:
    """Staging and telemetry on the simulator's default machine (UEFI ESP, PFRT running)."""
    res: dict[str, Any] = {}
    wipe(t.state_dir)
    argv = list(t.argv)
    argv[argv.index("--profile") + 1] = "default"
    argv[argv.index("--scale") + 1] = "0"
    proc, _ = await h.launch(t, f"{t.key}-extras-create.log", argv)
    await h.stop(proc, t)
    _prepare_machine(os.path.join(t.state_dir, "sim", "machine.json"))
    proc, _ = await h.launch(t, f"{t.key}-extras.log", argv)
    try:
        res["stage"] = await staging(h, t, proc.pid)
        res["telemetry"] = await telemetry(h, t, proc.pid)
    finally:
        await h.stop(proc, t)
        wipe(t.state_dir)
    return res


def make_payloads(scratch: str) -> dict[str, str]:
    size = STAGE_MIB << 20
    raw = os.path.join(scratch, f"capsule-{STAGE_MIB}M.bin")
    with open(raw, "wb") as f:
        for _ in range(STAGE_MIB):
            f.write(os.urandom(1 << 20))  # incompressible, as real capsules mostly are
        f.truncate(size)
    return {"raw": raw}


#: the PFRU capsule's size: the plugin refuses more than 32 MiB unless configured.
PFRU_MIB = min(STAGE_MIB, 32)


def _pfru_capsule(h: Harness, sim_dir: str) -> str:
    """A code-injection capsule for the simulated platform, one runtime version up.

    Built by the simulator's own builder (signed the simulated way); STAGE_MIB, at
    most the PFRU plugin's default limit of 32 MiB (``[plugins.pfru]
    max_capsule_size``); the floor is taken on the same file.
    """
    path = os.path.join(h.scratch, f"pfru-{PFRU_MIB}M.cap")
    if os.path.exists(path):
        os.unlink(path)  # the platform's version moved on since the last one
    with open(os.path.join(sim_dir, "machine.json"), encoding="utf-8") as f:
        state = json.load(f)["components"]["pfru"]
    small = build_capsule(
        image_type=pfru_uapi.IMAGE_TYPES[pfru_uapi.UpdateType.CODE_INJECTION],
        rt_ver=state["code_rt_version"] + 1,
        svn_ver=0,
        platform_id=state["platform_id"],
        body_size=1024,
    )
    data = build_capsule(
        image_type=pfru_uapi.IMAGE_TYPES[pfru_uapi.UpdateType.CODE_INJECTION],
        rt_ver=state["code_rt_version"] + 1,
        svn_ver=0,
        platform_id=state["platform_id"],
        body_size=(PFRU_MIB << 20) - (len(small) - 1024),
    )
    with open(path, "wb") as f:
        f.write(data)
    return path


def _next_version(version: str) -> str:
    """A version one above ``version`` in the same format (1.2.41 -> 1.2.42)."""
    head, _, last = version.rpartition(".")
    if last.isdigit():
        return f"{head}.{int(last) + 1}" if head else str(int(last) + 1)
    return "99"


async def _device_id(h: Harness, plugin: str, physical_suffix: str = "") -> str:
    reply = await h.call(LIVEFW_NAME, LIVEFW_PATH, "org.livefw.Daemon1.Manager", "GetDevices")
    for device in reply.body[0]:
        physical = device.get("PhysicalId")
        if device["Plugin"].value == plugin and (
            not physical_suffix or (physical and str(physical.value).endswith(physical_suffix))
        ):
            return str(device["Id"].value)
    raise RuntimeError(f"no {plugin} device {physical_suffix}")


async def _guid_of(h: Harness, device_id: str) -> tuple[str, str]:
    reply = await h.call(
        LIVEFW_NAME, LIVEFW_PATH, "org.livefw.Daemon1.Manager", "GetDevice", "s", [device_id]
    )
    info = reply.body[0]
    guids = info.get("Guids")
    return str(guids.value[0]) if guids else "", str(info["Version"].value)


def floor_cp_sha256(src: str, scratch: str) -> float:
    dst = os.path.join(scratch, "floor-copy.bin")
    t0 = time.perf_counter()
    subprocess.run(["cp", src, dst], check=True)
    subprocess.run(["sha256sum", dst], check=True, capture_output=True)
    seconds = time.perf_counter() - t0
    os.unlink(dst)
    return seconds


def _attach(pid: int | None, kind: str) -> subprocess.Popen[bytes] | None:
    """``STAGE_ATTACH``, a command started on the daemon around each install.

    ``{pid}`` and ``{kind}`` are replaced, e.g. ``strace -c -f -p {pid} -o /tmp/{kind}.txt``
    or ``py-spy record --threads -p {pid} -o /tmp/{kind}.svg``; it gets SIGINT after the
    install. For profiles only: the figures of such a run are not the daemon's.
    """
    command = os.environ.get("STAGE_ATTACH")
    if not command or pid is None:
        return None
    argv = [a.replace("{pid}", str(pid)).replace("{kind}", kind) for a in command.split()]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    time.sleep(1.0)  # attached before the install starts
    return proc


def _detach(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)


def _cpu_ms(pid: int | None) -> float | None:
    """CPU time of the daemon (every thread, ended ones too) and its reaped children
    (the fd reader), ms, at clock-tick resolution (``/proc/PID/stat``).

    Less moved by other load on the machine than the wall time: what an A/B of a
    change to the staging path compares first (bench/staging_ab.py).
    """
    if pid is None:
        return None
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(") ", 1)[1].split()
    # utime, stime, cutime, cstime
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) * 1000 / CLK_TCK


def _reset_peak(pid: int | None) -> None:
    """Reset the daemon's VmHWM (``/proc/PID/clear_refs``: 5 resets the peak RSS)."""
    if pid is not None:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")


async def staging(h: Harness, t: Target, pid: int | None = None) -> dict[str, Any]:
    """Install (stage) a 64 MiB capsule: UEFI raw and as a cabinet, and PFRU raw.

    UEFI: the capsule goes to the simulated ESP (fsynced) and the UEFI variables; PFRU:
    it is written into the firmware's communication buffer and staged with
    ``PFRU_IOC_STAGE`` (the code-injection device; ``Cancel`` has nothing to undo there,
    the next run stages over it).
    """
    out: dict[str, Any] = {}
    device = await _device_id(h, STAGE_PLUGIN)
    pfru_device = await _device_id(h, "pfru", "/code-injection")
    guid, version = await _guid_of(h, device)
    raw = h.payloads["raw"]
    cab = os.path.join(h.scratch, f"capsule-{STAGE_MIB}M.cab")
    if not os.path.exists(cab):
        with open(raw, "rb") as f:
            payload = f.read()
        metainfo = make_metainfo(
            appstream_id="org.livefw.bench.ec",
            guids=[guid],
            version=_next_version(version),
            payload_name="firmware.bin",
            payload=payload,
            name="Bench EC",
        )
        with open(cab, "wb") as f:
            f.write(make_cabinet({"firmware.bin": payload, "firmware.metainfo.xml": metainfo}))
        del payload
    sim_dir = os.path.join(t.state_dir, "sim")
    for kind, path in (("raw", raw), ("cabinet", cab), ("pfru", "")):
        if kind not in STAGE_KINDS:
            continue
        times, floors, errors, peaks, ratios, cpu, rss = [], [], [], [], [], [], []
        target = pfru_device if kind == "pfru" else device
        for _ in range(STAGE_RUNS):
            if kind == "pfru":
                path = _pfru_capsule(h, sim_dir)
            floors.append(floor_cp_sha256(path, h.scratch))
            fd = os.open(path, os.O_RDONLY)
            _reset_peak(pid)
            if pid is not None:
                rss.append(read_mem(pid)["VmRSS"] / 1024)  # where the peak starts from
            tracer = _attach(pid, kind)
            before = _cpu_ms(pid)
            try:
                t0 = time.perf_counter()
                try:
                    await h.call(
                        LIVEFW_NAME,
                        LIVEFW_PATH,
                        "org.livefw.Daemon1.Manager",
                        "Install",
                        "sha{sv}",
                        [target, 0, {"filename": Variant("s", os.path.basename(path))}],
                        unix_fds=[fd],
                        bus=h.fd_bus,
                    )
                    times.append(time.perf_counter() - t0)
                    ratios.append(floors[-1] / times[-1])  # the floor taken just before
                    if pid is not None and before is not None:
                        cpu.append(_cpu_ms(pid) - before)  # type: ignore[operator]
                    if pid is not None:
                        peaks.append(read_mem(pid)["VmHWM"] / 1024)
                except RuntimeError as error:
                    errors.append(str(error))
            finally:
                os.close(fd)
                _detach(tracer)
            with contextlib.suppress(RuntimeError):
                await h.call(
                    LIVEFW_NAME,
                    LIVEFW_PATH,
                    "org.livefw.Daemon1.Manager",
                    "Cancel",
                    "sa{sv}",
                    [target, {}],
                )
        out[kind] = {
            "bytes": os.path.getsize(path),
            "seconds": summary(times),
            "floor_seconds": summary(floors),
            "errors": errors[:3],
            "peak_rss_mib": summary(peaks),
            "samples": {
                "seconds": times,
                "floor_seconds": floors,
                "peak_rss_mib": peaks,
                "ratio": ratios,
                "cpu_ms": cpu,
                "rss_before_mib": rss,
            },
        }
        log(
            f"{t.key}: staging {kind}: {mmm(summary(times), '{:.3f}')} s, "
            f"floor {mmm(summary(floors), '{:.3f}')} s {errors[:1]}"
        )
    return out


async def telemetry(h: Harness, t: Target, pid: int) -> dict[str, Any]:
    """Read the whole PFRT telemetry buffer (org.livefw.Daemon1.PfruTelemetry.Read)."""
    reply = await h.call(
        LIVEFW_NAME, LIVEFW_PATH, "org.freedesktop.DBus.ObjectManager", "GetManagedObjects"
    )
    found = [
        (path, iface)
        for path, ifaces in reply.body[0].items()
        for iface in ifaces
        if "Telemetry" in iface
    ]
    if not found:
        return {"error": "no telemetry interface exported"}
    path, iface = found[0]
    info = await h.call(LIVEFW_NAME, path, iface, "GetDataInfo")
    sizes, times, cpu = [], [], []
    pings = []
    for _ in range(max(20, CALLS // 10)):
        a = cpu_snapshot(pid)
        t0 = time.perf_counter()
        r = await h.call(LIVEFW_NAME, path, iface, "Read")
        times.append((time.perf_counter() - t0) * 1e6)
        cpu.append(cpu_delta(a, cpu_snapshot(pid))["cpu_ms"] * 1000)
        sizes.append(len(r.body[0]))
        t0 = time.perf_counter()
        await h.call(LIVEFW_NAME, path, "org.freedesktop.DBus.Peer", "Ping")
        pings.append((time.perf_counter() - t0) * 1e6)
    result = {
        "interface": iface,
        "max_data_size": int(info.body[0]["max-data-size"].value),
        "bytes": max(sizes),
        "latency_us": summary(times),
        "daemon_cpu_us": summary(cpu),
        "ping_us": summary(pings),
    }
    log(f"{t.key}: telemetry Read {result['bytes']} bytes {mmm(result['latency_us'], '{:.0f}')} µs")
    return result
