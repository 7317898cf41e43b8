"""ACPI Platform Firmware Runtime Update (PFRU) and Telemetry (PFRT) plugin."""

from livefw.plugins.pfru.plugin import (
    PROTOCOL,
    TELEMETRY_INTERFACE,
    PfruDevice,
    PfruPlugin,
    PfruTelemetryDevice,
    TelemetryRead,
    level_name,
    parse_level,
    parse_log_type,
    type_name,
)

__all__ = [
    "PROTOCOL",
    "TELEMETRY_INTERFACE",
    "PfruDevice",
    "PfruPlugin",
    "PfruTelemetryDevice",
    "TelemetryRead",
    "level_name",
    "parse_level",
    "parse_log_type",
    "type_name",
]
