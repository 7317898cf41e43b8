"""ACPI Platform Firmware Runtime Update (PFRU) and Telemetry (PFRT) plugin."""

from livefw.plugins.pfru.plugin import (
    KERNEL_REVISIONS,
    PFRU_INTERFACE,
    PROTOCOL,
    TELEMETRY_INTERFACE,
    PfruDevice,
    PfruPlugin,
    PfruTelemetryDevice,
    Revisions,
    TelemetryRead,
    level_name,
    parse_level,
    parse_log_type,
    parse_revision,
    type_name,
)

__all__ = [
    "KERNEL_REVISIONS",
    "PFRU_INTERFACE",
    "PROTOCOL",
    "TELEMETRY_INTERFACE",
    "PfruDevice",
    "PfruPlugin",
    "PfruTelemetryDevice",
    "Revisions",
    "TelemetryRead",
    "level_name",
    "parse_level",
    "parse_log_type",
    "parse_revision",
    "type_name",
]
