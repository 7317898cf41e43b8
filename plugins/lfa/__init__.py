"""Arm Live Firmware Activation (LFA) plugin."""

from livefw.plugins.lfa.plugin import LFA_INTERFACE, LfaDevice, LfaPlugin

__all__ = ["LFA_INTERFACE", "LfaDevice", "LfaPlugin"]
