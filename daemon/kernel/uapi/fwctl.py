"""fwctl: device firmware RPC (include/uapi/fwctl/{fwctl,mlx5,cxl,pds,bnxt}.h).

Sources: ``include/uapi/fwctl/fwctl.h`` (core ioctls, scopes, device types),
``include/uapi/fwctl/cxl.h`` and ``include/uapi/cxl/features.h`` (CXL Features
commands), ``include/uapi/fwctl/mlx5.h`` plus ``drivers/fwctl/mlx5/main.c`` (mlx5
mailbox headers and the driver's opcode/scope table), ``include/uapi/fwctl/pds.h``,
``include/cxl/features.h`` (kernel-owned feature UUIDs). docs/kernel.md, "fwctl",
lists the kernel behaviour livefw relies on, one row per behaviour.

All fwctl structs are little-endian; mlx5 mailbox headers are big-endian (PRM).
"""

from __future__ import annotations

import struct
import uuid
from enum import IntEnum

from livefw.kernel.uapi.ioc import io
from livefw.record import Frozen

# ------------------------------------------------------------------ nodes, sysfs

#: class directory: one ``fwctl<N>`` entry per registered device (fwctl/main.c).
FWCTL_CLASS = "sys/class/fwctl"
#: device nodes live in /dev/fwctl/ (the class devnode callback prefixes "fwctl/").
FWCTL_DEV_DIR = "dev/fwctl"
#: uevents of fwctl class devices carry this subsystem.
FWCTL_SUBSYSTEM = "fwctl"
#: the core's module (drivers/fwctl/Makefile: ``obj-$(CONFIG_FWCTL) += fwctl.o``),
#: whose ``add`` uevent has DEVPATH=/module/fwctl.
FWCTL_MODULE = "fwctl"
#: the class device's attributes we read (``device`` is the parent link).
ATTR_DEV = "dev"
ATTR_UEVENT = "uevent"
LINK_DEVICE = "device"
#: every PCI function, flat (links to sys/devices/...); a CXL memdev's PCI function is
#: the entry that holds ``mem<M>`` (memdevs are bus devices without a ``device`` link).
PCI_DEVICES = "sys/bus/pci/devices"
#: PCI functions looked at when searching for a memdev's parent (bounded cost).
PCI_SCAN_MAX = 4096
#: a CXL memdev's mailbox payload size, bytes (drivers/cxl/core/memdev.c payload_max).
CXL_PAYLOAD_MAX_ATTR = "payload_max"
CXL_BUS_DEVICES = "sys/bus/cxl/devices"
#: /proc/sys/kernel/tainted; TAINT_FWCTL is bit 19, letter 'J' (include/linux/panic.h).
TAINTED_PATH = "proc/sys/kernel/tainted"
TAINT_FWCTL_BIT = 19
TAINT_FWCTL = 1 << TAINT_FWCTL_BIT
#: the running kernel's release (``6.17.4-amd64``), for allow-lists that grew over time.
OSRELEASE_PATH = "proc/sys/kernel/osrelease"


def parse_release(text: str) -> tuple[int, int] | None:
    """``"6.17.4-amd64"`` -> ``(6, 17)``; None when it does not start with MAJOR.MINOR."""
    head = text.strip().split("-", 1)[0].split(".")
    if len(head) < 2 or not head[0].isdigit():
        return None
    minor = ""
    for char in head[1]:
        if not char.isdigit():
            break
        minor += char
    if not minor:
        return None
    return int(head[0]), int(minor)


# ------------------------------------------------------------------ ioctls

#: FWCTL_TYPE (include/uapi/fwctl/fwctl.h).
FWCTL_TYPE = 0x9A
#: FWCTL_CMD_BASE: nr of the first command.
FWCTL_CMD_INFO = 0
FWCTL_CMD_RPC = 1
#: FWCTL_INFO = _IO(FWCTL_TYPE, FWCTL_CMD_INFO) = 0x9A00 (include/uapi/fwctl/fwctl.h).
FWCTL_INFO = io(FWCTL_TYPE, FWCTL_CMD_INFO)
#: FWCTL_RPC = _IO(FWCTL_TYPE, FWCTL_CMD_RPC) = 0x9A01 (include/uapi/fwctl/fwctl.h).
FWCTL_RPC = io(FWCTL_TYPE, FWCTL_CMD_RPC)

#: struct fwctl_info: size, flags, out_device_type, device_data_len, out_device_data.
FWCTL_INFO_FMT = "<IIIIQ"
FWCTL_INFO_SIZE = struct.calcsize(FWCTL_INFO_FMT)  # 24
#: byte offset of out_device_data (u64 user pointer).
FWCTL_INFO_DATA_PTR = 16
#: struct fwctl_rpc: size, scope, in_len, out_len, in, out.
FWCTL_RPC_FMT = "<IIIIQQ"
FWCTL_RPC_SIZE = struct.calcsize(FWCTL_RPC_FMT)  # 32
FWCTL_RPC_IN_PTR = 16
FWCTL_RPC_OUT_PTR = 24
#: MAX_RPC_LEN in drivers/fwctl/main.c (SZ_2M): in_len/out_len above it -> EMSGSIZE.
MAX_RPC_LEN = 2 * 1024 * 1024


class Scope(IntEnum):
    """enum fwctl_rpc_scope."""

    CONFIGURATION = 0
    DEBUG_READ_ONLY = 1
    DEBUG_WRITE = 2  # taints the kernel (TAINT_FWCTL)
    DEBUG_WRITE_FULL = 3  # needs CAP_SYS_RAWIO, taints


#: scope names on the wire (livefw's D-Bus API and CLI).
SCOPE_NAMES: dict[Scope, str] = {
    Scope.CONFIGURATION: "configuration",
    Scope.DEBUG_READ_ONLY: "debug-read",
    Scope.DEBUG_WRITE: "debug-write",
    Scope.DEBUG_WRITE_FULL: "debug-write-full",
}
SCOPES_BY_NAME: dict[str, Scope] = {name: scope for scope, name in SCOPE_NAMES.items()}
#: scopes for which the kernel taints itself before the driver sees the command.
TAINTING_SCOPES = frozenset({Scope.DEBUG_WRITE, Scope.DEBUG_WRITE_FULL})


class DeviceType(IntEnum):
    """enum fwctl_device_type (BNXT = 3 arrived with the bnxt driver)."""

    ERROR = 0
    MLX5 = 1
    CXL = 2
    BNXT = 3
    PDS = 4


DEVICE_TYPE_NAMES: dict[int, str] = {
    DeviceType.ERROR: "error",
    DeviceType.MLX5: "mlx5",
    DeviceType.CXL: "cxl",
    DeviceType.BNXT: "bnxt",
    DeviceType.PDS: "pds",
}


def device_type_name(value: int) -> str:
    """``mlx5``, ``cxl`` ... or ``unknown-<n>`` (unknown values are not errors)."""
    return DEVICE_TYPE_NAMES.get(value, f"unknown-{value}")


def pack_info(device_data_len: int) -> bytearray:
    """A struct fwctl_info asking for ``device_data_len`` bytes of driver data."""
    return bytearray(struct.pack(FWCTL_INFO_FMT, FWCTL_INFO_SIZE, 0, 0, device_data_len, 0))


def pack_rpc(scope: int, in_len: int, out_len: int) -> bytearray:
    """A struct fwctl_rpc; the two pointers are filled in by the provider."""
    return bytearray(struct.pack(FWCTL_RPC_FMT, FWCTL_RPC_SIZE, scope, in_len, out_len, 0, 0))


# ------------------------------------------------------------------ mlx5

#: struct fwctl_info_mlx5: uid, uctx_caps.
MLX5_INFO_FMT = "<II"
MLX5_INFO_SIZE = struct.calcsize(MLX5_INFO_FMT)  # 8
#: enum fwctl_mlx5_cap bits (uctx_caps).
MLX5_UCTX_CAP_RAW_TX = 0x1
MLX5_UCTX_CAP_INTERNAL_DEV_RES = 0x2
MLX5_UCTX_CAP_TOOLS_RESOURCES = 0x4
#: mailbox input header (PRM mbox_in_hdr, big-endian): opcode, uid, reserved, op_mod.
MLX5_IN_HDR_FMT = ">HHHH8x"
MLX5_IN_HDR_SIZE = struct.calcsize(MLX5_IN_HDR_FMT)  # 16
#: mailbox output header (PRM mbox_out_hdr): status, syndrome.
MLX5_OUT_HDR_FMT = ">B3xI8x"
MLX5_OUT_HDR_SIZE = struct.calcsize(MLX5_OUT_HDR_FMT)  # 16

#: mlx5 command status codes (include/linux/mlx5/device.h, MLX5_CMD_STAT_*).
MLX5_CMD_STAT_OK = 0x0
MLX5_CMD_STAT_INT_ERR = 0x1
MLX5_CMD_STAT_BAD_OP_ERR = 0x2
MLX5_CMD_STAT_BAD_PARAM_ERR = 0x3
MLX5_CMD_STAT_BAD_SYS_STATE_ERR = 0x4
MLX5_CMD_STAT_BAD_RES_ERR = 0x5
MLX5_CMD_STAT_NO_RES_ERR = 0xF
MLX5_STATUS_NAMES = {
    MLX5_CMD_STAT_OK: "ok",
    MLX5_CMD_STAT_INT_ERR: "internal-error",
    MLX5_CMD_STAT_BAD_OP_ERR: "bad-operation",
    MLX5_CMD_STAT_BAD_PARAM_ERR: "bad-parameter",
    MLX5_CMD_STAT_BAD_SYS_STATE_ERR: "bad-system-state",
    MLX5_CMD_STAT_BAD_RES_ERR: "bad-resource",
    MLX5_CMD_STAT_NO_RES_ERR: "no-resources",
}


class Mlx5Command(Frozen):
    """One entry of the scope table.

    An opcode, the lowest scope that allows it, and the first kernel release whose
    allow-list carries it (older kernels answer EBADMSG).
    """

    _FIELDS = ("opcode", "name", "scope", "since")
    opcode: int
    name: str
    scope: Scope
    since: tuple[int, int] = (6, 15)

    def __init__(
        self, opcode: int, name: str, scope: Scope, since: tuple[int, int] = (6, 15)
    ) -> None:
        _set = object.__setattr__
        _set(self, "opcode", opcode)
        _set(self, "name", name)
        _set(self, "scope", scope)
        _set(self, "since", since)


#: first release of the fwctl core and of the mlx5, CXL and pds drivers (drivers/fwctl/).
FWCTL_FIRST_RELEASE = (6, 15)
#: release whose mlx5ctl_validate_rpc() first allows MODIFY_CONG_STATUS,
#: QUERY_ADJACENT_FUNCTIONS_ID, DELEGATE_VHCA_MANAGEMENT and QUERY_DELEGATED_VHCA
#: (commits "fwctl/mlx5: Allow MODIFY_CONG_STATUS command" and "fwctl/mlx5: Add Adjacent
#: function query commands and their scope", pulled for the 6.18 merge window).
MLX5_ADJACENT_RELEASE = (6, 18)

#: opcodes (include/linux/mlx5/mlx5_ifc.h, drivers/fwctl/mlx5/main.c) with the minimum
#: scope that drivers/fwctl/mlx5/main.c mlx5ctl_validate_rpc() accepts. A subset: the
#: commands livefw knows by name; the kernel refuses everything it does not list
#: (EBADMSG), and commands newer than the running kernel (``since``) likewise.
MLX5_COMMANDS: dict[int, Mlx5Command] = {
    cmd.opcode: cmd
    for cmd in (
        Mlx5Command(0x100, "QUERY_HCA_CAP", Scope.CONFIGURATION),
        Mlx5Command(0x101, "QUERY_ADAPTER", Scope.CONFIGURATION),
        Mlx5Command(0x109, "SET_HCA_CAP", Scope.CONFIGURATION),
        Mlx5Command(0x740, "QUERY_ESW_FUNCTIONS", Scope.CONFIGURATION),
        Mlx5Command(0x762, "QUERY_HCA_VPORT_CONTEXT", Scope.CONFIGURATION),
        Mlx5Command(0x760, "QUERY_ROCE_ADDRESS", Scope.CONFIGURATION),
        Mlx5Command(0xB22, "QUERY_VUID", Scope.CONFIGURATION),
        Mlx5Command(0x823, "MODIFY_CONG_STATUS", Scope.CONFIGURATION, MLX5_ADJACENT_RELEASE),
        Mlx5Command(0x731, "DELEGATE_VHCA_MANAGEMENT", Scope.CONFIGURATION,
                    MLX5_ADJACENT_RELEASE),
        Mlx5Command(0x107, "QUERY_PAGES", Scope.DEBUG_READ_ONLY),
        Mlx5Command(0x10A, "QUERY_ISSI", Scope.DEBUG_READ_ONLY),
        Mlx5Command(0x754, "QUERY_NIC_VPORT_CONTEXT", Scope.DEBUG_READ_ONLY),
        Mlx5Command(0x80D, "NOP", Scope.DEBUG_READ_ONLY),
        Mlx5Command(0x819, "QUERY_DIAGNOSTIC_PARAMS", Scope.DEBUG_READ_ONLY),
        Mlx5Command(0x730, "QUERY_ADJACENT_FUNCTIONS_ID", Scope.DEBUG_READ_ONLY,
                    MLX5_ADJACENT_RELEASE),
        Mlx5Command(0x732, "QUERY_DELEGATED_VHCA", Scope.DEBUG_READ_ONLY,
                    MLX5_ADJACENT_RELEASE),
        Mlx5Command(0x820, "SET_DIAGNOSTIC_PARAMS", Scope.DEBUG_WRITE),
        # ACCESS_REG/ACCESS_REGISTER_USER: op_mod 0 (write) at CONFIGURATION, other
        # op_mods (read) need DEBUG_READ_ONLY; see mlx5_min_scope().
        Mlx5Command(0x805, "ACCESS_REG", Scope.CONFIGURATION),
        Mlx5Command(0xB0C, "ACCESS_REGISTER_USER", Scope.CONFIGURATION),
    )
}  # fmt: skip
MLX5_OP_QUERY_HCA_CAP = 0x100
MLX5_OP_QUERY_ADAPTER = 0x101
MLX5_OP_QUERY_ISSI = 0x10A
MLX5_OP_NOP = 0x80D
MLX5_OP_QUERY_DIAGNOSTIC_PARAMS = 0x819
MLX5_OP_SET_DIAGNOSTIC_PARAMS = 0x820
MLX5_OP_ACCESS_REG = 0x805
MLX5_OP_ACCESS_REGISTER_USER = 0xB0C
MLX5_OP_MODIFY_CONG_STATUS = 0x823
MLX5_OP_QUERY_ADJACENT_FUNCTIONS_ID = 0x730
_MLX5_ACCESS_OPS = (MLX5_OP_ACCESS_REG, MLX5_OP_ACCESS_REGISTER_USER)


def mlx5_min_scope(opcode: int, op_mod: int) -> Scope | None:
    """The lowest scope the kernel accepts for a command, or None when not in the table."""
    command = MLX5_COMMANDS.get(opcode)
    if command is None:
        return None
    if opcode in _MLX5_ACCESS_OPS and op_mod != 0:
        return Scope.DEBUG_READ_ONLY
    return command.scope


def mlx5_since(opcode: int) -> tuple[int, int]:
    """The first release whose mlx5 allow-list carries ``opcode`` (known opcodes only)."""
    command = MLX5_COMMANDS.get(opcode)
    return command.since if command else FWCTL_FIRST_RELEASE


def mlx5_command_name(opcode: int) -> str:
    """``QUERY_HCA_CAP`` or ``0x1234``."""
    command = MLX5_COMMANDS.get(opcode)
    return command.name if command else f"0x{opcode:x}"


def pack_mlx5_in(opcode: int, op_mod: int = 0, body: bytes = b"") -> bytes:
    """An mlx5 command mailbox (header + body); the kernel overwrites the uid."""
    return struct.pack(MLX5_IN_HDR_FMT, opcode, 0, 0, op_mod) + body


# ------------------------------------------------------------------ CXL

#: struct fwctl_rpc_cxl header: opcode, flags, op_size, reserved1; sizeof = 48.
CXL_RPC_HDR_FMT = "<IIII"
CXL_RPC_HDR_SIZE = struct.calcsize(CXL_RPC_HDR_FMT)  # 16
CXL_RPC_SIZE = 48
#: struct fwctl_rpc_cxl_out header: size, retval (then the payload).
CXL_RPC_OUT_FMT = "<II"
CXL_RPC_OUT_SIZE = struct.calcsize(CXL_RPC_OUT_FMT)  # 8
#: sizeof(struct fwctl_rpc_cxl_out) is 16: the header and a union holding the 8-byte
#: struct cxl_mbox_get_sup_feats_out header. The cxlctl_* handlers add this struct's
#: size to the reply length, so the length the kernel reports is 8 + size + 8.
CXL_RPC_OUT_STRUCT_SIZE = 16
CXL_RPC_OUT_UNION_SIZE = CXL_RPC_OUT_STRUCT_SIZE - CXL_RPC_OUT_SIZE

#: CXL mailbox opcodes (CXL r3.1 8.2.9.6; include/cxl/features.h).
CXL_MBOX_OP_GET_SUPPORTED_FEATURES = 0x0500
CXL_MBOX_OP_GET_FEATURE = 0x0501
CXL_MBOX_OP_SET_FEATURE = 0x0502
CXL_OPCODE_NAMES = {
    CXL_MBOX_OP_GET_SUPPORTED_FEATURES: "GET_SUPPORTED_FEATURES",
    CXL_MBOX_OP_GET_FEATURE: "GET_FEATURE",
    CXL_MBOX_OP_SET_FEATURE: "SET_FEATURE",
}

#: struct cxl_mbox_get_sup_feats_in: count (bytes wanted), start_idx.
CXL_GET_SUP_IN_FMT = "<IH2x"
CXL_GET_SUP_IN_SIZE = struct.calcsize(CXL_GET_SUP_IN_FMT)  # 8
#: struct cxl_mbox_get_sup_feats_out header: num_entries, supported_feats.
CXL_GET_SUP_OUT_FMT = "<HH4x"
CXL_GET_SUP_OUT_SIZE = struct.calcsize(CXL_GET_SUP_OUT_FMT)  # 8
#: struct cxl_feat_entry: uuid, id, get_feat_size, set_feat_size, flags,
#: get_feat_ver, set_feat_ver, effects, reserved.
CXL_FEAT_ENTRY_FMT = "<16sHHHIBBH18s"
CXL_FEAT_ENTRY_SIZE = struct.calcsize(CXL_FEAT_ENTRY_FMT)  # 48
#: struct cxl_mbox_get_feat_in: uuid, offset, count, selection.
CXL_GET_FEAT_IN_FMT = "<16sHHB"
CXL_GET_FEAT_IN_SIZE = struct.calcsize(CXL_GET_FEAT_IN_FMT)  # 21
#: struct cxl_mbox_set_feat_in header: uuid, flags, offset, version, reserved[9].
CXL_SET_FEAT_HDR_FMT = "<16sIHB9x"
CXL_SET_FEAT_HDR_SIZE = struct.calcsize(CXL_SET_FEAT_HDR_FMT)  # 32

#: feature entry flags (enum cxl_feat_flags... CXL r3.2 Table 8-95).
CXL_FEATURE_F_CHANGEABLE = 1 << 0
CXL_FEATURE_F_PERSIST_FW_UPDATE = 1 << 4
CXL_FEATURE_F_DEFAULT_SEL = 1 << 5
CXL_FEATURE_F_SAVED_SEL = 1 << 6

#: Get Feature selection (enum cxl_get_feat_selection).
CXL_GET_FEAT_SEL_CURRENT = 0
CXL_GET_FEAT_SEL_DEFAULT = 1
CXL_GET_FEAT_SEL_SAVED = 2

#: Set Feature flags bits 0-2: data transfer action; bit 3: saved across reset.
CXL_SET_FEAT_FLAG_FULL_DATA_TRANSFER = 0
CXL_SET_FEAT_FLAG_INITIATE_DATA_TRANSFER = 1
CXL_SET_FEAT_FLAG_CONTINUE_DATA_TRANSFER = 2
CXL_SET_FEAT_FLAG_FINISH_DATA_TRANSFER = 3
CXL_SET_FEAT_FLAG_ABORT_DATA_TRANSFER = 4
CXL_SET_FEAT_FLAG_DATA_TRANSFER_MASK = 0x7
CXL_SET_FEAT_FLAG_DATA_SAVED_ACROSS_RESET = 1 << 3
#: FEAT_DATA_MIN_PAYLOAD_SIZE in drivers/cxl/core/features.c: cxl_set_feature() refuses
#: (-ENOMEM, retval INVALID_INPUT) a mailbox with less room than header + 10 bytes.
CXL_FEAT_DATA_MIN_PAYLOAD = 10
#: the smallest mailbox payload a CXL device may report (CXL r3.1 8.2.8.4.3: 2^8).
CXL_MBOX_MIN_PAYLOAD = 256

#: command effects bits (CXL r3.2 Table 8-87; drivers/cxl/cxlmem.h CXL_CMD_*).
CXL_CMD_CONFIG_CHANGE_COLD_RESET = 1 << 0
CXL_CMD_CONFIG_CHANGE_IMMEDIATE = 1 << 1
CXL_CMD_DATA_CHANGE_IMMEDIATE = 1 << 2
CXL_CMD_POLICY_CHANGE_IMMEDIATE = 1 << 3
CXL_CMD_LOG_CHANGE_IMMEDIATE = 1 << 4
CXL_CMD_SECURITY_STATE_CHANGE = 1 << 5
CXL_CMD_BACKGROUND = 1 << 6
CXL_CMD_BGCMD_ABORT_SUPPORTED = 1 << 7
CXL_CMD_EFFECTS_VALID = 1 << 9
CXL_CMD_CONFIG_CHANGE_CONV_RESET = 1 << 10
CXL_CMD_CONFIG_CHANGE_CXL_RESET = 1 << 11
CXL_CMD_EFFECTS_RESERVED = 0xF000  # bits 12-15
CXL_CMD_IMMEDIATE_MASK = (
    CXL_CMD_CONFIG_CHANGE_IMMEDIATE
    | CXL_CMD_DATA_CHANGE_IMMEDIATE
    | CXL_CMD_POLICY_CHANGE_IMMEDIATE
    | CXL_CMD_LOG_CHANGE_IMMEDIATE
)
CXL_CMD_RESET_MASK = (
    CXL_CMD_CONFIG_CHANGE_COLD_RESET
    | CXL_CMD_CONFIG_CHANGE_CONV_RESET
    | CXL_CMD_CONFIG_CHANGE_CXL_RESET
)

#: CXL mailbox return codes (CXL r3.2 Table 8-34; drivers/cxl/cxlmem.h CMD_CMD_RC_TABLE).
CXL_MBOX_CMD_RC_SUCCESS = 0x00
CXL_MBOX_CMD_RC_INPUT = 0x02
CXL_MBOX_CMD_RC_UNSUPPORTED = 0x03
CXL_MBOX_CMD_RC_INTERNAL = 0x04
CXL_MBOX_CMD_RC_BUSY = 0x06
CXL_MBOX_CMD_RC_PAYLOADLEN = 0x16
CXL_MBOX_CMD_RC_FEATUREVERSION = 0x19
CXL_MBOX_CMD_RC_FEATURESELVALUE = 0x1A
CXL_MBOX_CMD_RC_FEATURETRANSFERIP = 0x1B
CXL_MBOX_CMD_RC_FEATURETRANSFEROOO = 0x1C
CXL_RETVAL_NAMES = {
    CXL_MBOX_CMD_RC_SUCCESS: "success",
    CXL_MBOX_CMD_RC_INPUT: "invalid-input",
    CXL_MBOX_CMD_RC_UNSUPPORTED: "unsupported",
    CXL_MBOX_CMD_RC_INTERNAL: "internal-error",
    CXL_MBOX_CMD_RC_BUSY: "busy",
    CXL_MBOX_CMD_RC_PAYLOADLEN: "invalid-payload-length",
    CXL_MBOX_CMD_RC_FEATUREVERSION: "unsupported-feature-version",
    CXL_MBOX_CMD_RC_FEATURESELVALUE: "unsupported-selection",
    CXL_MBOX_CMD_RC_FEATURETRANSFERIP: "feature-transfer-in-progress",
    CXL_MBOX_CMD_RC_FEATURETRANSFEROOO: "feature-transfer-out-of-order",
}

#: features the kernel owns (include/cxl/features.h; EDAC RAS drivers). User space
#: sees them with set_feat_size 0 and CHANGEABLE cleared; Set Feature -> EPERM.
#: UUIDs are raw uuid_t bytes (include/linux/uuid.h: UUID_INIT stores them in RFC 4122
#: byte order), printed in order.
CXL_KERNEL_FEATURES: dict[str, str] = {
    "96dad7d6-fde8-482b-a733-75774e06db8a": "patrol scrub control",
    "e5b13f22-2328-4a14-b8ba-b9691e893386": "DDR5 ECS control",
    "892ba475-fad8-474e-9d3e-692c917568bb": "soft PPR (sPPR)",
    "80ea4521-786f-4127-afb1-ec7459fb0e24": "hard PPR (hPPR)",
    "96c33386-91dd-44c7-9ecb-fdaf6503bac4": "cache-line sparing",
    "450ebf67-b135-4f97-a498-c2d57f279bed": "row sparing",
    "78b79636-90ac-4b64-a4ef-faac5d18a863": "bank sparing",
    "34dbaff5-0552-4281-8f76-da0b5e7a76a7": "rank sparing",
}


def cxl_set_feature_min_scope(effects: int) -> Scope | None:
    """The scope Set Feature needs for a feature's effects, or None if always refused.

    drivers/cxl/core/features.c cxlctl_validate_set_features(): reserved bits or
    BACKGROUND -> refused; any immediate-change bit -> DEBUG_WRITE_FULL; only
    reset-time changes -> DEBUG_WRITE; neither -> refused (a firmware bug).
    """
    if effects & CXL_CMD_EFFECTS_RESERVED or effects & CXL_CMD_BACKGROUND:
        return None
    if effects & CXL_CMD_IMMEDIATE_MASK:
        return Scope.DEBUG_WRITE_FULL
    if effects & CXL_CMD_RESET_MASK:
        return Scope.DEBUG_WRITE
    return None


class CxlFeatureEntry(Frozen):
    """A decoded struct cxl_feat_entry."""

    _FIELDS = (
        "uuid",
        "index",
        "get_size",
        "set_size",
        "flags",
        "get_version",
        "set_version",
        "effects",
    )
    uuid: str
    index: int
    get_size: int
    set_size: int
    flags: int
    get_version: int
    set_version: int
    effects: int

    def __init__(
        self,
        uuid: str,
        index: int,
        get_size: int,
        set_size: int,
        flags: int,
        get_version: int,
        set_version: int,
        effects: int,
    ) -> None:
        _set = object.__setattr__
        _set(self, "uuid", uuid)
        _set(self, "index", index)
        _set(self, "get_size", get_size)
        _set(self, "set_size", set_size)
        _set(self, "flags", flags)
        _set(self, "get_version", get_version)
        _set(self, "set_version", set_version)
        _set(self, "effects", effects)

    @property
    def changeable(self) -> bool:
        """The CHANGEABLE flag (cleared for kernel-owned features)."""
        return bool(self.flags & CXL_FEATURE_F_CHANGEABLE)

    @property
    def name(self) -> str:
        """The kernel's name for well-known features, else empty."""
        return CXL_KERNEL_FEATURES.get(self.uuid, "")

    def pack(self) -> bytes:
        """The 48-byte wire form."""
        return struct.pack(
            CXL_FEAT_ENTRY_FMT,
            uuid.UUID(self.uuid).bytes,
            self.index,
            self.get_size,
            self.set_size,
            self.flags,
            self.get_version,
            self.set_version,
            self.effects,
            b"",
        )

    @classmethod
    def unpack(cls, data: bytes) -> CxlFeatureEntry:
        """Decode 48 bytes; raises struct.error when short."""
        raw, index, get_size, set_size, flags, get_ver, set_ver, effects, _ = struct.unpack(
            CXL_FEAT_ENTRY_FMT, data[:CXL_FEAT_ENTRY_SIZE]
        )
        return cls(
            str(uuid.UUID(bytes=raw)), index, get_size, set_size, flags, get_ver, set_ver, effects
        )


def pack_cxl_rpc(opcode: int, payload: bytes, flags: int = 0) -> bytes:
    """A struct fwctl_rpc_cxl: header + payload (op_size = len(payload))."""
    return struct.pack(CXL_RPC_HDR_FMT, opcode, flags, len(payload), 0) + payload


def pack_get_supported_features(count_bytes: int, start_index: int) -> bytes:
    """Get Supported Features asking for ``count_bytes`` of entries from ``start_index``."""
    return pack_cxl_rpc(
        CXL_MBOX_OP_GET_SUPPORTED_FEATURES,
        struct.pack(CXL_GET_SUP_IN_FMT, count_bytes, start_index),
    )


def pack_get_feature(feature: str, offset: int, count: int, selection: int = 0) -> bytes:
    """Get Feature ``count`` bytes of ``feature`` (UUID text) from ``offset``."""
    payload = struct.pack(CXL_GET_FEAT_IN_FMT, uuid.UUID(feature).bytes, offset, count, selection)
    return pack_cxl_rpc(CXL_MBOX_OP_GET_FEATURE, payload)


def pack_set_feature(
    feature: str, data: bytes, *, version: int, flags: int = 0, offset: int = 0
) -> bytes:
    """Set Feature: header (uuid, flags, offset, version) + data."""
    header = struct.pack(CXL_SET_FEAT_HDR_FMT, uuid.UUID(feature).bytes, flags, offset, version)
    return pack_cxl_rpc(CXL_MBOX_OP_SET_FEATURE, header + data)


class CxlSupportedFeatures(Frozen):
    """A decoded Get Supported Features response."""

    _FIELDS = ("retval", "supported", "entries")
    retval: int
    supported: int
    entries: tuple[CxlFeatureEntry, ...]

    def __init__(self, retval: int, supported: int, entries: tuple[CxlFeatureEntry, ...]) -> None:
        _set = object.__setattr__
        _set(self, "retval", retval)
        _set(self, "supported", supported)
        _set(self, "entries", entries)


def unpack_supported_features(response: bytes) -> CxlSupportedFeatures:
    """Decode a Get Supported Features fwctl response (out header + entries).

    Raises:
        ValueError: the response is shorter than its headers say.
    """
    if len(response) < CXL_RPC_OUT_SIZE + CXL_GET_SUP_OUT_SIZE:
        raise ValueError(f"Get Supported Features response too short: {len(response)} bytes")
    _size, retval = struct.unpack_from(CXL_RPC_OUT_FMT, response)
    num, supported = struct.unpack_from(CXL_GET_SUP_OUT_FMT, response, CXL_RPC_OUT_SIZE)
    base = CXL_RPC_OUT_SIZE + CXL_GET_SUP_OUT_SIZE
    if len(response) < base + num * CXL_FEAT_ENTRY_SIZE:
        raise ValueError(
            f"Get Supported Features response holds fewer than its {num} entries"
            " (offer a larger response buffer)"
        )
    entries = tuple(
        CxlFeatureEntry.unpack(response[base + i * CXL_FEAT_ENTRY_SIZE :]) for i in range(num)
    )
    return CxlSupportedFeatures(retval, supported, entries)


# ------------------------------------------------------------------ pds, bnxt

#: struct fwctl_info_pds / fwctl_info_bnxt: uctx_caps.
PDS_INFO_FMT = "<I"
BNXT_INFO_FMT = "<I"
#: struct fwctl_rpc_pds: in{op, ep, rsvd, len, payload} out{retval, rsvd[2], len, payload}.
PDS_RPC_FMT = "<IIIIQIIIIQ"
PDS_RPC_SIZE = struct.calcsize(PDS_RPC_FMT)  # 48
