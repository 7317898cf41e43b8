"""Simulated PFRU/PFRT: the state the component keeps in machine.json.

The firmware's values (capabilities, versions, the communication buffer, the staged
capsule, the telemetry rings) and what the drivers keep per device (``_DSM``
revision, log type): :class:`PfruState`, read and written by
:class:`livefw.kernel.sim.pfru.PfruComponent` (the firmware) and the driver file
operations of livefw.kernel.sim.pfru_kernel.
"""

from __future__ import annotations

from livefw.kernel.uapi import pfru as uapi
from livefw.model import Field, Model

__all__ = [
    "KEY_CODE",
    "KEY_DRIVER",
    "KEY_TELEMETRY",
    "KEY_UPDATE",
    "ZERO_GUID",
    "Capsule",
    "PfruState",
    "Ring",
]

#: the simulated devices' keys (``livefw sim`` commands) and fault targets.
KEY_CODE = "pfru/code-injection"
KEY_DRIVER = "pfru/driver-update"
KEY_TELEMETRY = "pfru/telemetry"
#: fault target used for ``_DSM`` calls that concern no update type (queries).
KEY_UPDATE = "pfru/update"

#: the platform and OEM ids of the default machine.
_DEFAULT_PLATFORM = "6a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
_DEFAULT_OEM = "2f9a8b7c-6d5e-4f40-9a1b-2c3d4e5f6a7b"
#: an image type the firmware does not report (no such update type).
ZERO_GUID = "00000000-0000-0000-0000-000000000000"


class Capsule(Model, extra="forbid"):
    """What the firmware sees in its communication buffer (or has staged)."""

    size: int
    #: SHA-256 (hex) of what the firmware authenticates: the monotonic count and the
    #: signed payload (the simulated signature's digest); of the whole buffer when it
    #: holds no well-formed capsule.
    sha256: str
    #: the kernel-style walk succeeded (structure, image type, header v1/v2).
    well_formed: bool
    problem: str = ""
    update_type: int = 0
    rt_ver: int = 0
    svn_ver: int = 0
    hw_ver: int = 0
    platform_id: str = ZERO_GUID
    signature_ok: bool = False


class Ring(Model, extra="forbid"):
    """One telemetry log buffer (a ring of ``size`` bytes, written at ``head``).

    ``data`` holds the bytes as latin-1 text so machine.json stays JSON.
    """

    base: int
    data: str = ""
    head: int = 0
    rollover: int = 0


class PfruState(Model, extra="forbid"):
    """The simulated platform (firmware values) and driver state.

    Attributes:
        update_present / telemetry_present: the ACPI devices exist with a ``_DSM``
            (else no node: the driver's probe fails with ENODEV).
        driver_gate: which version the kernel compares for driver updates on
            ``write()``: ``svn`` (the Aug-2025 fix, 6.17, also in stable kernels) or
            ``rt`` (before); ``""`` follows the simulated kernel release
            (:meth:`PfruComponent.driver_gate`).
        comm_buf_size: the firmware's communication buffer (``_DSM`` fn 2).
        update_max_revision, telemetry_max_revision: the highest ``_DSM`` revision
            the firmware implements for each device; a call made with a higher one
            gets no package back, which the drivers report as EINVAL.
        rev_id, log_type, log_revid: kept by the drivers (reset at boot).
        comm_data: the communication buffer's contents as far as writes reached
            (base64, or a blob reference past 64 KiB: machine.BlobStore): a shorter
            write leaves the tail of an earlier one in place.
        buffer: the firmware's view of the capsule in the communication buffer.
        staged: the one capsule the firmware holds staged.
        telemetry_started: the telemetry service has produced data (mmap works).
    """

    update_present: bool = True
    telemetry_present: bool = True
    driver_gate: str = ""
    update_cap: int = 0x3
    code_type: str = uapi.CODE_INJECTION_GUID
    drv_type: str = uapi.DRIVER_UPDATE_GUID
    fw_version: int = 0x00020011
    code_rt_version: int = 3
    drv_rt_version: int = 7
    drv_svn: int = 2
    platform_id: str = _DEFAULT_PLATFORM
    oem_id: str = _DEFAULT_OEM
    oem_info_len: int = 0
    comm_buf_size: int = 256 * 1024
    update_max_revision: int = 2
    telemetry_max_revision: int = 2
    #: the communication buffer's bytes as far as writes reached (base64 or a blob).
    comm_data: str = ""
    rev_id: int = uapi.DEFAULT_REVID
    buffer: Capsule | None = None
    staged: Capsule | None = None
    activations: int = 0
    telemetry_started: bool = True
    log_level: int = int(uapi.LogLevel.INFO)
    log_type: int = int(uapi.LogType.EXECUTION)
    log_revid: int = uapi.DEFAULT_REVID
    telemetry_size: int = 4 * uapi.PAGE_SIZE
    reset_cnt: int = 0
    sequence: int = 0
    rings: dict[str, Ring] = Field(default_factory=dict)
