"""Arm Live Firmware Activation sysfs interface (not merged; v3 posting, 2026-07-06).

Source: the "firmware: smccc: add support for Live Firmware Activation (LFA)" series
(``drivers/firmware/smccc/lfa_fw.c``, ``Documentation/ABI/testing/sysfs-firmware-lfa``
in v3), and TF-A's ``include/services/lfa_svc.h``; each behaviour with its function
and posting in docs/kernel.md (Arm LFA).
"""

import uuid

#: sysfs directory: one subdirectory per firmware image, named by its GUID printed
#: raw (``%pUb``), never byte-swapped.
LFA_SYSFS = "sys/firmware/lfa"
#: at most this many image directories are read (one device each); more are logged
#: and left out. The driver makes one per inventory entry the agent reports
#: (lfa_fw.c ``update_fw_images_tree()``: GET_INFO's count, an int from firmware); each
#: attribute read is bounded by sysfs itself (``sysfs_emit()``: one page).
MAX_IMAGES = 16384
#: the driver's module (drivers/firmware/smccc/Makefile in the postings:
#: ``obj-$(CONFIG_ARM_LFA) += lfa_fw.o``), whose ``add`` uevent has
#: DEVPATH=/module/lfa_fw.
LFA_MODULE = "lfa_fw"

ATTR_NAME = "name"
ATTR_ACTIVATION_CAPABLE = "activation_capable"
ATTR_ACTIVATION_PENDING = "activation_pending"  # re-queries the agent on every read
ATTR_MAY_RESET_CPU = "may_reset_cpu"
ATTR_CPU_RENDEZVOUS = "cpu_rendezvous"
ATTR_ACTIVATE = "activate"  # write "1" (v3 ABI: a boolean true)
ATTR_CANCEL = "cancel"
ATTR_FORCE_CPU_RENDEZVOUS = "force_cpu_rendezvous"  # RFC v2+
ATTR_CURRENT_VERSION = "current_version"  # v1+
ATTR_PENDING_VERSION = "pending_version"  # v1+; "N/A" when nothing is pending
ATTR_AUTO_ACTIVATE = "auto_activate"  # v2+

#: the seven files every posting has (RFC v1).
RFC_ATTRS = (
    ATTR_NAME,
    ATTR_ACTIVATION_CAPABLE,
    ATTR_ACTIVATION_PENDING,
    ATTR_MAY_RESET_CPU,
    ATTR_CPU_RENDEZVOUS,
    ATTR_ACTIVATE,
    ATTR_CANCEL,
)
V3_ATTRS = (
    *RFC_ATTRS,
    ATTR_FORCE_CPU_RENDEZVOUS,
    ATTR_CURRENT_VERSION,
    ATTR_PENDING_VERSION,
    ATTR_AUTO_ACTIVATE,
)

PENDING_NONE = "N/A"
UNKNOWN_NAME_RFC = "(unknown)"

#: the kernel's built-in name table (v1+ names), keyed by directory GUID.
KNOWN_IMAGES = {
    "47d4086d-4cfe-9846-9b95-2950cbbd5a00": "TF-A BL31 runtime",
    "d6d0eea7-fcea-d54b-9782-9934f234b6e4": "BL33 non-secure payload",
    "6c0762a6-12f2-4b56-92cb-ba8f633606d9": "TF-RMM",
}

#: LFA SMC status codes (x0, signed), TF-A lfa_svc.h.
LFA_SUCCESS = 0
LFA_NOT_SUPPORTED = -1
LFA_BUSY = -2
LFA_AUTH_ERROR = -3
LFA_NO_MEMORY = -4
LFA_CRITICAL_ERROR = -5
LFA_DEVICE_ERROR = -6
LFA_WRONG_STATE = -7
LFA_INVALID_PARAMETERS = -8
LFA_COMPONENT_WRONG_STATE = -9
LFA_INVALID_ADDRESS = -10
LFA_ACTIVATION_FAILED = -11

#: inventory flags (GET_INVENTORY x3).
INV_ACTIVATION_CAPABLE = 1 << 0
INV_ACTIVATION_PENDING = 1 << 1
INV_MAY_RESET_CPU = 1 << 2
INV_CPU_RENDEZVOUS_OPTIONAL = 1 << 3

#: driver time budgets (v2/v3): prime 30 s, activate 10 s, 10 ms between calls.
PRIME_TIMEOUT_S = 30.0
ACTIVATE_TIMEOUT_S = 10.0
RETRY_INTERVAL_S = 0.010

#: what lfa_fw.c ``update_fw_images_tree()`` leaves in an image the agent no longer
#: lists (``set_image_flags(image, -1, 0b1000, 0, 0)``) until the queued
#: ``remove_invalid_fw_images()`` deletes its directory, after the write to
#: ``activate`` may already have returned (v1+): capable, may_reset_cpu,
#: cpu_rendezvous, current_version.
INVALIDATED = ("0", "0", "0", "0.0")
#: how long livefw waits after its activation for such directories to go.
REMOVAL_WAIT_S = 1.0


def guid_dirname(x1: int, x2: int) -> str:
    """The sysfs directory name of an image from GET_INVENTORY's x1/x2 registers."""
    return str(uuid.UUID(bytes=x1.to_bytes(8, "little") + x2.to_bytes(8, "little")))


def format_version(raw: int) -> str:
    """A 64-bit LFA version (major in the high 32 bits) as the driver prints it."""
    return f"{raw >> 32}.{raw & 0xFFFFFFFF}"


def parse_version(text: str) -> int:
    """Inverse of :func:`format_version`; raises ValueError."""
    major, _, minor = text.strip().partition(".")
    value_major, value_minor = int(major), int(minor or 0)
    if not (0 <= value_major < 1 << 32 and 0 <= value_minor < 1 << 32):
        raise ValueError(f"LFA version out of range: {text!r}")
    return (value_major << 32) | value_minor
