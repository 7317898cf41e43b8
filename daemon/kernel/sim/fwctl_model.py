"""The simulated fwctl machine's state: nodes, CXL features, the mailbox log entry.

Persisted by the machine (livefw.model records); shared by the fwctl core
(livefw.kernel.sim.fwctl) and the driver simulations (fwctl_cxl, fwctl_mlx5).
"""

from __future__ import annotations

from typing import Literal

from livefw.kernel.uapi import fwctl as uapi
from livefw.model import Field, Model
from livefw.record import Frozen

Kind = Literal["cxl", "mlx5", "pds", "sample"]
#: mailbox commands kept in FwctlComponent.mailbox_log.
MAILBOX_LOG_MAX = 256


class MailboxCommand(Frozen):
    """One CXL mailbox command the simulated kernel sent to a device (for tests)."""

    _FIELDS = ("minor", "opcode", "flags", "offset", "length", "retval")
    minor: int
    opcode: int
    flags: int
    offset: int
    length: int
    retval: int

    def __init__(
        self, minor: int, opcode: int, flags: int, offset: int, length: int, retval: int
    ) -> None:
        _set = object.__setattr__
        _set(self, "minor", minor)
        _set(self, "opcode", opcode)
        _set(self, "flags", flags)
        _set(self, "offset", offset)
        _set(self, "length", length)
        _set(self, "retval", retval)


class CxlFeature(Model, extra="forbid"):
    """One feature of the simulated CXL device (its firmware's view: true flags)."""

    uuid: str
    label: str = ""
    get_size: int
    set_size: int
    flags: int
    get_version: int = 1
    set_version: int = 1
    effects: int
    current: str
    default: str
    saved: str


class FwctlNode(Model, extra="forbid"):
    """A fwctl device with its parents and firmware state."""

    minor: int
    kind: Kind
    pci: str
    pci_vendor: int
    pci_device: int
    pci_driver: str
    parent_index: int = 0
    features: list[CxlFeature] = Field(default_factory=list)
    #: CXL: the device's feature transfers in progress (uuid -> hex data received so
    #: far); only the kernel's cxl_set_feature() drives them.
    transfers: dict[str, str] = Field(default_factory=dict)
    #: mlx5: diagnostic parameters (QUERY/SET_DIAGNOSTIC_PARAMS) and registers.
    diag_params: str = "00" * 16
    registers: dict[str, str] = Field(default_factory=dict)


class FwctlState(Model, extra="forbid"):
    """The simulated fwctl core, drivers and firmware.

    Attributes:
        present: fwctl.ko is loaded (``/sys/class/fwctl`` exists, maybe empty).
        tainted: TAINT_FWCTL is set (once per boot; cleared by reboot and kexec).
        daemon_has_rawio: whether the daemon holds CAP_SYS_RAWIO (scope 3 needs it).
        mlx5_max_uids: firmware UIDs an mlx5 device hands out (one per open fd).
        cxl_mbox_payload: the CXL devices' mailbox payload size in bytes (the Mailbox
            Capabilities register; 256 .. 1 MiB on real devices). cxl_set_feature() and
            cxl_get_feature() split transfers into pieces of this size.
    """

    present: bool = True
    tainted: bool = False
    daemon_has_rawio: bool = True
    mlx5_max_uids: int = 64
    cxl_mbox_payload: int = uapi.CXL_MBOX_MIN_PAYLOAD
    nodes: list[FwctlNode] = Field(default_factory=list)


def _hex(size: int, seed: int) -> str:
    return bytes((seed + i * 7) & 0xFF for i in range(size)).hex()


def default_cxl_features() -> list[CxlFeature]:
    """A feature table: kernel-owned RAS features plus vendor features of each policy."""
    reset_fx = uapi.CXL_CMD_CONFIG_CHANGE_COLD_RESET | uapi.CXL_CMD_EFFECTS_VALID
    imm_fx = uapi.CXL_CMD_CONFIG_CHANGE_IMMEDIATE | uapi.CXL_CMD_EFFECTS_VALID
    rw = (
        uapi.CXL_FEATURE_F_CHANGEABLE
        | uapi.CXL_FEATURE_F_DEFAULT_SEL
        | uapi.CXL_FEATURE_F_SAVED_SEL
    )

    def feature(uid: str, label: str, size: int, flags: int, effects: int, seed: int) -> CxlFeature:
        value = _hex(size, seed)
        return CxlFeature(
            uuid=uid,
            label=label,
            get_size=size,
            set_size=size if flags & uapi.CXL_FEATURE_F_CHANGEABLE else 0,
            flags=flags,
            effects=effects,
            current=value,
            default=value,
            saved=value,
        )

    return [
        feature("96dad7d6-fde8-482b-a733-75774e06db8a", "patrol scrub control", 8, rw, imm_fx, 1),
        feature("e5b13f22-2328-4a14-b8ba-b9691e893386", "DDR5 ECS control", 16, rw, imm_fx, 2),
        # vendor features (CXL lets vendors define their own UUIDs)
        feature("6b0c3a2e-6f1d-4c1e-9a53-1f2d3c4b5a60", "vendor: media policy", 96, rw,
                reset_fx, 3),
        feature("a7c3d1e4-0b2f-4e7a-8c19-5d6e7f809112", "vendor: thermal limits", 8, rw,
                imm_fx | uapi.CXL_CMD_POLICY_CHANGE_IMMEDIATE, 4),
        feature("3f1e2d4c-5b6a-4978-8d0e-1c2b3a495867", "vendor: health counters", 32,
                uapi.CXL_FEATURE_F_DEFAULT_SEL, 0, 5),
        feature("c0ffee00-1234-4abc-9def-0123456789ab", "vendor: background sanitize", 4, rw,
                uapi.CXL_CMD_DATA_CHANGE_IMMEDIATE | uapi.CXL_CMD_BACKGROUND
                | uapi.CXL_CMD_EFFECTS_VALID, 6),
    ]  # fmt: skip
