"""UEFI ESRT devices updated by capsules staged for the next boot."""

from livefw.plugins.uefi_capsule.device import UefiCapsuleDevice
from livefw.plugins.uefi_capsule.plugin import UefiCapsulePlugin

__all__ = ["UefiCapsuleDevice", "UefiCapsulePlugin"]
