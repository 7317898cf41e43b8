"""UEFI ESRT devices updated by capsules staged for the next boot."""

from livefw.plugins.uefi_capsule.plugin import UefiCapsuleDevice, UefiCapsulePlugin

__all__ = ["UefiCapsuleDevice", "UefiCapsulePlugin"]
