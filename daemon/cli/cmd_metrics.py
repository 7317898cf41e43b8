"""``livefw metrics``: livefwd's state as Prometheus / OpenMetrics text.

The command asks livefwd over D-Bus (devices, history, plugins, host state, PFRT
telemetry) and formats the answer with ``prometheus_client``: its exposition code
escapes label values (device names, versions and reasons come from firmware and from
other users) and writes a file atomically, so nothing here formats metrics by hand.

With ``--output FILE`` the text replaces FILE atomically (a temporary file in the same
directory, then rename), which is what node_exporter's textfile collector needs
(``/var/lib/prometheus/node-exporter/livefw.prom``; see ``livefw-metrics.timer``).
When livefwd does not answer, the output still says so (``livefw_up 0``) and the
command exits 0, so the alert on ``livefw_up`` fires instead of the file going stale.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from livefw.cli import exitcodes
from livefw.cli.client import CallError, Client
from livefw.cli.output import Output

__all__ = ["Snapshot", "collect", "register", "render", "telemetry_levels"]

TELEMETRY_IFACE = "org.livefw.Daemon1.Telemetry"

#: the UpdateState values a device can be in (livefw.state.UpdateState).
UPDATE_STATES = ("none", "pending", "needs-reboot", "success", "failed", "failed-transient")

#: history states that are outcomes (the others wait for one, or were replaced).
SUCCESS_STATES = frozenset({"success"})
FAILED_STATES = frozenset({"failed"})
UNFINISHED_STATES = frozenset({"pending", "staged"})

#: a PFRT record as the simulated firmware writes it: ``[000012] INFO    text``.
#: The PFRT log layout is platform-defined (the kernel passes it through as bytes,
#: drivers/acpi/pfr_telemetry.c); lines that do not start this way count as "unknown".
_RECORD = re.compile(rb"^\[\d+\]\s+(ERROR|WARNING|INFO|VERBOSE)\b")

#: seconds each D-Bus call may take before the snapshot gives up on it.
CALL_TIMEOUT = 20.0


@dataclass
class Snapshot:
    """What livefwd said, gathered once; ``up`` is False when it did not answer."""

    up: bool = False
    error: str = ""
    daemon_version: str = ""
    simulated: bool = False
    host: dict[str, Any] = field(default_factory=dict)
    devices: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    plugins: list[dict[str, Any]] = field(default_factory=list)
    #: device id -> level -> records; absent when the log could not be read.
    telemetry: dict[str, dict[str, int]] = field(default_factory=dict)
    #: device id -> why its telemetry could not be read.
    telemetry_errors: dict[str, str] = field(default_factory=dict)


def telemetry_levels(log: bytes) -> dict[str, int]:
    """Count PFRT records (one per line) by level: error, warning, info, verbose, unknown."""
    counts = dict.fromkeys(("error", "warning", "info", "verbose", "unknown"), 0)
    for line in log.splitlines():
        line = line.strip(b"\x00 \t\r")
        if not line:
            continue
        match = _RECORD.match(line)
        counts[match.group(1).decode().lower() if match else "unknown"] += 1
    return counts


async def _snapshot(client: Client) -> Snapshot:
    snap = Snapshot(up=True)
    manager = "org.livefw.Daemon1.Manager"
    path = "/org/livefw/Daemon1"
    snap.daemon_version = str(await client.get_property(path, manager, "DaemonVersion"))
    snap.simulated = bool(await client.get_property(path, manager, "Simulated"))
    try:
        (snap.host,) = await client.call("GetHostState", timeout=CALL_TIMEOUT)
    except CallError as error:  # an older livefwd: no host state
        snap.host = {}
        if "UnknownMethod" not in error.name:
            raise
    (snap.devices,) = await client.call("GetDevices", timeout=CALL_TIMEOUT)
    (snap.history,) = await client.call("GetHistory", "a{sv}", [{}], timeout=CALL_TIMEOUT)
    (snap.plugins,) = await client.call("GetPlugins", timeout=CALL_TIMEOUT)
    objects = await client.managed_objects()
    for object_path, interfaces in sorted(objects.items()):
        if TELEMETRY_IFACE not in interfaces:
            continue
        device_id = str(interfaces.get("org.livefw.Daemon1.Device", {}).get("Id", ""))
        device_id = device_id or object_path.rsplit("/", 1)[-1]
        try:
            log, _cursor = await client.call(
                "Read", path=object_path, interface=TELEMETRY_IFACE, timeout=CALL_TIMEOUT
            )
        except CallError as error:
            snap.telemetry_errors[device_id] = error.short
            continue
        snap.telemetry[device_id] = telemetry_levels(bytes(log))
    return snap


async def collect(address: str | None) -> Snapshot:
    """Ask livefwd on ``address`` (or the system bus) for everything the metrics show."""
    try:
        client = await Client.connect(address)
    except (OSError, ValueError) as error:
        return Snapshot(error=f"cannot connect to the bus: {error}")
    try:
        return await _snapshot(client)
    except CallError as error:
        return Snapshot(error=error.message)
    except TimeoutError:
        return Snapshot(error="livefwd did not answer in time")
    finally:
        await client.close()


class SnapshotCollector:
    """A prometheus_client collector that yields the metric families of a snapshot."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            InfoMetricFamily,
            StateSetMetricFamily,
        )

        snap = self.snap
        yield GaugeMetricFamily("livefw_up", "1 when livefwd answered on D-Bus", value=snap.up)
        if not snap.up:
            return
        info = InfoMetricFamily("livefw_daemon", "the livefwd process")
        info.add_metric(
            [],
            {
                "version": snap.daemon_version,
                "simulated": "true" if snap.simulated else "false",
                "boot_id": str(snap.host.get("BootId", "")),
            },
        )
        yield info
        if "StartTime" in snap.host:
            yield GaugeMetricFamily(
                "livefw_start_time_seconds",
                "when the livefwd process started, seconds since the epoch",
                value=int(snap.host["StartTime"]) / 1e6,
            )
        if "Tainted" in snap.host:
            yield GaugeMetricFamily(
                "livefw_kernel_tainted",
                "the kernel's taint mask (/proc/sys/kernel/tainted; 0: not tainted)",
                value=int(snap.host["Tainted"]),
            )

        device_info = InfoMetricFamily(
            "livefw_device", "a device livefwd manages", labels=["device_id"]
        )
        states = StateSetMetricFamily(
            "livefw_device_update_state",
            "what happened to the device's last update",
            labels=["device_id"],
        )
        pending = GaugeMetricFamily(
            "livefw_device_pending",
            "1 when an update is staged or pending and waits for activation or a reboot",
            labels=["device_id"],
        )
        for device in snap.devices:
            device_id = str(device["Id"])
            device_info.add_metric(
                [device_id],
                {
                    "name": str(device.get("Name", "")),
                    "plugin": str(device.get("Plugin", "")),
                    "protocol": str(device.get("Protocol", "")),
                    "vendor": str(device.get("Vendor", "")),
                    "version": str(device.get("Version", "")),
                    "version_pending": str(device.get("VersionPending", "")),
                    "version_lowest": str(device.get("VersionLowest", "")),
                },
            )
            current = str(device.get("UpdateState", "none"))
            states.add_metric([device_id], {state: state == current for state in UPDATE_STATES})
            flags = set(device.get("Flags", []))
            waiting = bool(device.get("VersionPending")) or bool(
                flags & {"needs-activation", "needs-reboot"}
            )
            pending.add_metric([device_id], 1 if waiting else 0)
        yield device_info
        yield states
        yield pending
        yield from self._history_families(CounterMetricFamily, GaugeMetricFamily)

        plugin_info = InfoMetricFamily(
            "livefw_plugin", "plugins and their probe result", labels=["plugin"]
        )
        plugin_devices = GaugeMetricFamily(
            "livefw_plugin_devices", "devices each plugin manages", labels=["plugin"]
        )
        for plugin in snap.plugins:
            name = str(plugin.get("Name", ""))
            plugin_info.add_metric(
                [name],
                {"result": str(plugin.get("Result", "")), "reason": str(plugin.get("Reason", ""))},
            )
            plugin_devices.add_metric([name], int(plugin.get("Devices", 0)))
        yield plugin_info
        yield plugin_devices

        records = GaugeMetricFamily(
            "livefw_telemetry_records",
            "PFRT telemetry records in the firmware's log, by level",
            labels=["device_id", "level"],
        )
        readable = GaugeMetricFamily(
            "livefw_telemetry_readable",
            "1 when livefwd could read the device's PFRT telemetry log",
            labels=["device_id", "error"],
        )
        for device_id, levels in sorted(snap.telemetry.items()):
            readable.add_metric([device_id, ""], 1)
            for level, count in levels.items():
                records.add_metric([device_id, level], count)
        for device_id, why in sorted(snap.telemetry_errors.items()):
            readable.add_metric([device_id, why], 0)
        yield records
        yield readable

    def _history_families(self, counter: Any, gauge: Any) -> Iterator[Any]:
        """Counters by kind and state, and per device the last result of each kind."""
        totals = counter(
            "livefw_operations",
            "install and activation attempts recorded in livefwd's history, by final state",
            labels=["kind", "state"],
        )
        counts: dict[tuple[str, str], int] = {}
        last: dict[tuple[str, str], dict[str, Any]] = {}
        staged: dict[str, float] = {}
        pending_devices = {
            str(d["Id"])
            for d in self.snap.devices
            if d.get("VersionPending")
            or set(d.get("Flags", [])) & {"needs-activation", "needs-reboot"}
        }
        # GetHistory answers newest first
        for row in self.snap.history:
            kind, state = str(row.get("Kind", "")), str(row.get("State", ""))
            device_id = str(row.get("DeviceId", ""))
            counts[(kind, state)] = counts.get((kind, state), 0) + 1
            last.setdefault((device_id, kind), row)
            if state in UNFINISHED_STATES and device_id in pending_devices:
                # the oldest row still waiting: how long the update has been staged
                staged[device_id] = float(row.get("Created", 0))
        for (kind, state), count in sorted(counts.items()):
            totals.add_metric([kind, state], count)
        yield totals

        when = gauge(
            "livefw_device_last_operation_timestamp_seconds",
            "when the device's last install or activation attempt finished (or started, "
            "while it waits for an outcome), seconds since the epoch",
            labels=["device_id", "kind", "state"],
        )
        success = gauge(
            "livefw_device_last_operation_success",
            "1 when the device's last attempt of this kind succeeded, 0 when it failed "
            "(absent while it waits for an outcome)",
            labels=["device_id", "kind"],
        )
        for (device_id, kind), row in sorted(last.items()):
            state = str(row.get("State", ""))
            finished = float(row.get("Finished", 0)) or float(row.get("Created", 0))
            when.add_metric([device_id, kind, state], finished)
            if state in SUCCESS_STATES | FAILED_STATES:
                success.add_metric([device_id, kind], 1 if state in SUCCESS_STATES else 0)
        yield when
        yield success

        since = gauge(
            "livefw_device_staged_timestamp_seconds",
            "when the update that still waits for activation (or a reboot) was staged, "
            "seconds since the epoch",
            labels=["device_id"],
        )
        for device_id, created in sorted(staged.items()):
            since.add_metric([device_id], created)
        yield since


def render(snap: Snapshot, openmetrics: bool = False) -> bytes:
    """The exposition text of ``snap`` (Prometheus text format, or OpenMetrics)."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snap))
    if openmetrics:
        from prometheus_client.openmetrics.exposition import generate_latest as om_latest

        return bytes(om_latest(registry))  # type: ignore[no-untyped-call]
    from prometheus_client import generate_latest

    return bytes(generate_latest(registry))


def _write_atomically(path: str, data: bytes) -> None:
    """Replace ``path`` with ``data``: a temporary file in its directory, then rename."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".livefw-metrics.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # node_exporter runs as its own user
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


async def cmd_metrics(client: None, args: argparse.Namespace, out: Output) -> int:
    """Gather, render, print or write."""
    snap = await collect(args.bus_address)
    if not snap.up:
        out.error(f"livefwd did not answer ({snap.error}); reporting livefw_up 0")
    data = render(snap, openmetrics=args.format == "openmetrics")
    if args.output:
        try:
            _write_atomically(args.output, data)
        except OSError as error:
            out.error(f"cannot write {args.output}: {error.strerror or error}")
            return exitcodes.FAILURE
        return exitcodes.OK
    sys.stdout.buffer.write(data)
    sys.stdout.flush()
    return exitcodes.OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``livefw metrics``."""
    parser = sub.add_parser(
        "metrics",
        help="livefwd's devices, results and telemetry as Prometheus/OpenMetrics text",
        description="Print (or atomically write, for node_exporter's textfile collector) "
        "metrics about livefwd: devices with their versions and update state, the last "
        "install/activation result, counters by result, the kernel taint, PFRT telemetry "
        "records by level, and whether livefwd is up.",
    )
    parser.add_argument(
        "--format",
        choices=("prometheus", "openmetrics"),
        default="prometheus",
        help="exposition format (default: Prometheus text 0.0.4)",
    )
    parser.add_argument(
        "--output",
        metavar="FILE",
        help="write to FILE atomically instead of standard output "
        "(e.g. /var/lib/prometheus/node-exporter/livefw.prom)",
    )
    parser.set_defaults(func=cmd_metrics, offline=True)
