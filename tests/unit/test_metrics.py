"""``livefw metrics``: what a snapshot of livefwd becomes in Prometheus text."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from livefw.cli.cmd_metrics import Snapshot, render, telemetry_levels


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_telemetry_records_are_counted_by_level() -> None:
    log = (
        b"[000001] INFO    staged\n[000002] ERROR   refused\n"
        b"[000003] VERBOSE x\nvendor text\n\x00\x00"
    )
    assert telemetry_levels(log) == {
        "error": 1,
        "warning": 0,
        "info": 1,
        "verbose": 1,
        "unknown": 1,
    }


def test_a_daemon_that_did_not_answer_is_livefw_up_0_and_nothing_else() -> None:
    found = samples(render(Snapshot(up=False, error="no")))
    assert found == {("livefw_up", ()): 0.0}


def test_snapshot_becomes_device_history_and_telemetry_metrics() -> None:
    snap = Snapshot(
        up=True,
        daemon_version="0.1.0",
        host={"StartTime": 1_700_000_000_000_000, "Tainted": 524288, "BootId": "b"},
        devices=[
            {
                "Id": "aa",
                "Name": 'evil "name"\nnext',
                "Plugin": "pfru",
                "Version": "3",
                "VersionPending": "4",
                "Flags": ["updatable", "needs-activation"],
                "UpdateState": "pending",
            },
            {"Id": "bb", "Name": "b", "Plugin": "lfa", "Version": "2", "UpdateState": "failed"},
        ],
        history=[  # newest first, as GetHistory answers
            {
                "DeviceId": "bb",
                "Kind": "activate",
                "State": "failed",
                "Created": 50,
                "Finished": 60,
            },
            {"DeviceId": "aa", "Kind": "install", "State": "staged", "Created": 40},
            {"DeviceId": "aa", "Kind": "install", "State": "superseded", "Created": 30},
            {
                "DeviceId": "bb",
                "Kind": "activate",
                "State": "success",
                "Created": 10,
                "Finished": 11,
            },
        ],
        plugins=[{"Name": "pfru", "Result": "ok", "Reason": "", "Devices": 1}],
        telemetry={"aa": {"error": 2, "info": 5}},
        telemetry_errors={"bb": "AuthFailed"},
    )
    text = render(snap)
    found = samples(text)
    assert found[("livefw_up", ())] == 1.0
    assert found[("livefw_start_time_seconds", ())] == 1_700_000_000.0
    assert found[("livefw_kernel_tainted", ())] == 524288.0
    info = [k for k in found if k[0] == "livefw_device_info" and ("device_id", "aa") in k[1]]
    assert dict(info[0][1])["name"] == 'evil "name"\nnext'  # escaped, parsed back intact
    assert dict(info[0][1])["version_pending"] == "4"
    assert b'evil \\"name\\"\\nnext' in text  # one line: the newline is escaped
    state = (
        "livefw_device_update_state",
        (("device_id", "aa"), ("livefw_device_update_state", "pending")),
    )
    assert found[state] == 1.0
    assert found[("livefw_device_pending", (("device_id", "aa"),))] == 1.0
    assert found[("livefw_device_pending", (("device_id", "bb"),))] == 0.0
    assert found[("livefw_device_staged_timestamp_seconds", (("device_id", "aa"),))] == 40.0
    success = ("livefw_device_last_operation_success", (("device_id", "bb"), ("kind", "activate")))
    assert found[success] == 0.0  # the newest activation of bb failed
    assert (
        "livefw_device_last_operation_success",
        (("device_id", "aa"), ("kind", "install")),
    ) not in found
    assert found[("livefw_operations_total", (("kind", "activate"), ("state", "failed")))] == 1.0
    assert found[("livefw_operations_total", (("kind", "activate"), ("state", "success")))] == 1.0
    assert found[("livefw_telemetry_records", (("device_id", "aa"), ("level", "error")))] == 2.0
    assert (
        found[("livefw_telemetry_readable", (("device_id", "bb"), ("error", "AuthFailed")))] == 0.0
    )


def test_openmetrics_output_ends_with_eof() -> None:
    text = render(Snapshot(up=False), openmetrics=True)
    assert text.endswith(b"# EOF\n")
