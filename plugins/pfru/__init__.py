"""ACPI Platform Firmware Runtime Update (PFRU) and Telemetry (PFRT) plugin.

``plugin.py`` finds the devices, ``context.py`` holds what they share, ``device.py``
stages and activates capsules, ``telemetry.py`` reads the firmware's log.
"""

from livefw.plugins.pfru.context import KERNEL_REVISIONS, PfruContext, Revisions, parse_revision
from livefw.plugins.pfru.device import PFRU_INTERFACE, PROTOCOL, PfruDevice
from livefw.plugins.pfru.plugin import PfruPlugin
from livefw.plugins.pfru.telemetry import (
    TELEMETRY_INTERFACE,
    PfruTelemetryDevice,
    TelemetryRead,
    level_name,
    parse_level,
    parse_log_type,
    type_name,
)

__all__ = [
    "KERNEL_REVISIONS",
    "PFRU_INTERFACE",
    "PROTOCOL",
    "TELEMETRY_INTERFACE",
    "PfruContext",
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
