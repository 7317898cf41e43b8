"""Arm Live Firmware Activation (LFA) plugin."""

from livefw.plugins.lfa.plugin import LfaDevice, LfaPlugin

__all__ = ["LfaDevice", "LfaPlugin"]
