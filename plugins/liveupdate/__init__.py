"""Live Update Orchestrator plugin: livefwd brokers LUO sessions for its clients."""

from livefw.plugins.liveupdate.context import LiveUpdateContext
from livefw.plugins.liveupdate.device import LiveUpdateDevice, LiveUpdateSession
from livefw.plugins.liveupdate.plugin import LiveUpdatePlugin
from livefw.plugins.liveupdate.records import INTERFACE, SessionInfo, kernel_session_name

__all__ = [
    "INTERFACE",
    "LiveUpdateContext",
    "LiveUpdateDevice",
    "LiveUpdatePlugin",
    "LiveUpdateSession",
    "SessionInfo",
    "kernel_session_name",
]
