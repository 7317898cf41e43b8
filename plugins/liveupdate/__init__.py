"""Live Update Orchestrator plugin: livefwd brokers LUO sessions for its clients."""

from livefw.plugins.liveupdate.plugin import (
    INTERFACE,
    LiveUpdateDevice,
    LiveUpdatePlugin,
    SessionInfo,
    kernel_session_name,
)

__all__ = [
    "INTERFACE",
    "LiveUpdateDevice",
    "LiveUpdatePlugin",
    "SessionInfo",
    "kernel_session_name",
]
