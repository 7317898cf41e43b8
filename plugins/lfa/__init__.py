"""Arm Live Firmware Activation (LFA) plugin.

``plugin.py`` finds the images, ``context.py`` holds the inventory they share,
``device.py`` activates an image and changes its settings. plugins/README.md walks
through this plugin as the example to copy.
"""

from livefw.plugins.lfa.context import LfaContext
from livefw.plugins.lfa.device import LFA_INTERFACE, PROTOCOL, LfaDevice
from livefw.plugins.lfa.plugin import LfaPlugin

__all__ = ["LFA_INTERFACE", "PROTOCOL", "LfaContext", "LfaDevice", "LfaPlugin"]
