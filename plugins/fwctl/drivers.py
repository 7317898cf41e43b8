"""Per-driver RPC codecs: what livefw checks in a request and decodes from a reply.

Each fwctl driver defines its own request format and scope rules (docs/kernel.md,
fwctl): CXL (drivers/cxl/core/features.c, include/uapi/fwctl/cxl.h), mlx5
(drivers/fwctl/mlx5/main.c, include/uapi/fwctl/mlx5.h), pds (drivers/fwctl/pds/main.c)
and bnxt (drivers/fwctl/bnxt/main.c). These functions are pure: they see bytes and
the device's facts, never a provider, and raise a livefw error for what the daemon
refuses before anything reaches the kernel.
"""

from __future__ import annotations

import struct
import uuid

from livefw.errors import InvalidArgument, NotSupported, PermissionDenied
from livefw.kernel.uapi import fwctl as uapi
from livefw.kernel.uapi.fwctl import Scope

#: The command name and the lowest scope it needs (None: no table for the type).
Checked = tuple[str, Scope | None]

#: device types whose RPCs embed user-space addresses the kernel dereferences:
#: drivers/fwctl/pds/main.c pdsfc_fw_rpc (in.payload, out.payload) and
#: drivers/fwctl/bnxt/main.c bnxtctl_fw_rpc (the host address fields of the HWRM
#: commands in its bnxtctl_dma_cmds table, copied from and to the caller's memory).
POINTER_TYPES: dict[int, str] = {
    uapi.DeviceType.PDS: "fwctl_rpc_pds in.payload and out.payload",
    uapi.DeviceType.BNXT: "the host address fields of HWRM commands",
}


def check_cxl(
    features: tuple[uapi.CxlFeatureEntry, ...], device_name: str, request: bytes, size: int
) -> Checked:
    """A CXL request (struct fwctl_rpc_cxl) against the kernel's rules and livefw's.

    The kernel's: drivers/cxl/core/features.c ``cxlctl_validate_hw_command`` (only
    opcodes 0x500-0x502), ``cxlctl_get_supported_features`` and ``cxlctl_get_feature``
    (payload sizes), ``cxlctl_validate_set_features`` (CHANGEABLE, the scope from the
    feature's effects). livefw's stricter ones: docs/kernel.md, "Where livefw is
    stricter than the kernel".

    Raises:
        InvalidArgument: malformed header or payload, a short response buffer,
            transfer flags, an unknown feature.
        NotSupported: an opcode fwctl does not carry.
        PermissionDenied: a feature user space may not change.
    """
    if len(request) < uapi.CXL_RPC_HDR_SIZE:
        raise InvalidArgument(
            f"a CXL request starts with the {uapi.CXL_RPC_HDR_SIZE}-byte fwctl_rpc_cxl "
            "header (opcode, flags, op_size, reserved)"
        )
    opcode, _flags, op_size, _ = struct.unpack_from(uapi.CXL_RPC_HDR_FMT, request)
    if uapi.CXL_RPC_HDR_SIZE + op_size > len(request):
        raise InvalidArgument(f"op_size {op_size} runs past the end of the request")
    command = uapi.CXL_OPCODE_NAMES.get(opcode)
    if command is None:
        raise NotSupported(
            f"CXL opcode 0x{opcode:04x} is not carried by fwctl: only Get Supported "
            "Features (0x0500), Get Feature (0x0501) and Set Feature (0x0502)"
        )
    payload = request[uapi.CXL_RPC_HDR_SIZE : uapi.CXL_RPC_HDR_SIZE + op_size]
    if opcode == uapi.CXL_MBOX_OP_GET_SUPPORTED_FEATURES:
        if op_size != uapi.CXL_GET_SUP_IN_SIZE:
            raise InvalidArgument("Get Supported Features takes an 8-byte payload")
        return command, Scope.CONFIGURATION
    if opcode == uapi.CXL_MBOX_OP_GET_FEATURE:
        if op_size != uapi.CXL_GET_FEAT_IN_SIZE:
            raise InvalidArgument("Get Feature takes a 21-byte payload")
        _uuid, _offset, count, _sel = struct.unpack(uapi.CXL_GET_FEAT_IN_FMT, payload)
        if count == 0 or size < uapi.CXL_RPC_OUT_SIZE + count:
            # cxlctl_get_feature allocates the reply with the caller's out_len and
            # writes 8 + count bytes into it: a smaller buffer is overrun in the kernel
            raise InvalidArgument(
                "Get Feature needs count > 0 and a response-size of at least 8 + count: "
                "the kernel writes 8 + count bytes into a buffer of response-size bytes "
                "without checking (livefw is stricter than the kernel here)"
            )
        return command, Scope.CONFIGURATION
    return _check_set_feature(features, device_name, payload, op_size, size)


def _check_set_feature(
    features: tuple[uapi.CxlFeatureEntry, ...],
    device_name: str,
    payload: bytes,
    op_size: int,
    size: int,
) -> Checked:
    if op_size <= uapi.CXL_SET_FEAT_HDR_SIZE:
        raise InvalidArgument("Set Feature needs its 32-byte header followed by data")
    flags = struct.unpack_from(uapi.CXL_SET_FEAT_HDR_FMT, payload)[1]
    if flags & uapi.CXL_SET_FEAT_FLAG_DATA_TRANSFER_MASK:
        raise InvalidArgument(
            f"Set Feature flags 0x{flags:x} ask for a partial data transfer; the kernel "
            "ignores transfer flags and moves the data in mailbox-sized pieces itself "
            "(cxl_set_feature), so send the whole value in one request with transfer "
            "bits 0-2 clear"
        )
    if size < uapi.CXL_RPC_OUT_SIZE:
        raise InvalidArgument(
            "Set Feature needs a response-size of at least 8: the kernel writes its "
            "8-byte reply into a buffer of response-size bytes without checking"
        )
    feature_id = str(uuid.UUID(bytes=payload[:16]))
    entry = next((f for f in features if f.uuid == feature_id), None)
    if entry is None:
        raise InvalidArgument(f"{device_name} has no feature {feature_id}")
    if not entry.changeable:
        owner = " (owned by the kernel)" if entry.name else ""
        raise PermissionDenied(f"feature {feature_id}{owner} cannot be changed by user space")
    needed = uapi.cxl_set_feature_min_scope(entry.effects)
    if needed is None:
        raise PermissionDenied(
            f"feature {feature_id} has effects 0x{entry.effects:04x} (background or "
            "reserved bits) that the kernel never allows from user space"
        )
    return f"Set Feature {feature_id}", needed


def check_mlx5(request: bytes, size: int, kernel_release: tuple[int, int] | None = None) -> Checked:
    """An mlx5 mailbox command against ``mlx5ctl_validate_rpc`` of the running release.

    drivers/fwctl/mlx5/main.c ``mlx5ctl_fw_rpc`` refuses headers under 16 bytes
    (EMSGSIZE); ``mlx5ctl_validate_rpc`` holds the allow-list, which grew in 6.18
    (docs/kernel.md, fwctl).

    Raises:
        InvalidArgument: a request or response buffer shorter than its mailbox header.
        NotSupported: a command the running kernel's allow-list does not carry yet.
    """
    if len(request) < uapi.MLX5_IN_HDR_SIZE or size < uapi.MLX5_OUT_HDR_SIZE:
        raise InvalidArgument(
            "mlx5 requests and responses carry 16-byte mailbox headers; "
            "send at least 16 bytes and offer a response-size of at least 16"
        )
    opcode, _uid, _, op_mod = struct.unpack_from(uapi.MLX5_IN_HDR_FMT, request)
    name = uapi.mlx5_command_name(opcode)
    since = uapi.mlx5_since(opcode)
    if kernel_release is not None and kernel_release < since:
        raise NotSupported(
            f"{name} is allowed by mlx5_fwctl from Linux {since[0]}.{since[1]} on; this "
            f"kernel is {kernel_release[0]}.{kernel_release[1]}, whose "
            "allow-list refuses it (EBADMSG); nothing was sent"
        )
    return name, uapi.mlx5_min_scope(opcode, op_mod)


def device_status(device_type: int, response: bytes) -> dict[str, int | str]:
    """Device-level status from a reply (errors travel inside it, not as errnos).

    CXL: struct fwctl_rpc_cxl_out (include/uapi/fwctl/cxl.h) ``size`` and ``retval``;
    mlx5: the output mailbox header's ``status`` and ``syndrome``
    (drivers/fwctl/mlx5/main.c ``mlx5ctl_fw_rpc``: -EREMOTEIO stays in the reply).
    """
    if device_type == uapi.DeviceType.CXL and len(response) >= uapi.CXL_RPC_OUT_SIZE:
        size, retval = struct.unpack_from(uapi.CXL_RPC_OUT_FMT, response)
        name = uapi.CXL_RETVAL_NAMES.get(retval, f"0x{retval:x}")
        return {"device-status": retval, "device-status-name": name, "payload-length": size}
    if device_type == uapi.DeviceType.MLX5 and len(response) >= uapi.MLX5_OUT_HDR_SIZE:
        status, syndrome = struct.unpack_from(uapi.MLX5_OUT_HDR_FMT, response)
        name = uapi.MLX5_STATUS_NAMES.get(status, f"0x{status:x}")
        return {"device-status": status, "device-status-name": name, "syndrome": syndrome}
    return {}


def response_length_exact(device_type: int) -> bool:
    """Whether the ``out_len`` the kernel returns is the reply's own length.

    drivers/fwctl/mlx5/main.c ``mlx5ctl_fw_rpc`` never sets ``out_len``: the kernel
    reports the buffer offered, and the mlx5 output header carries no length. The
    drivers/cxl/core/features.c ``cxlctl_*`` handlers count sizeof(struct
    fwctl_rpc_cxl_out), 8 bytes more than the reply; its own size field gives its
    length (``payload-length``).
    """
    return device_type not in (uapi.DeviceType.MLX5, uapi.DeviceType.CXL)


def set_feature_info(mailbox_payload: int, request: bytes) -> dict[str, bool | int | str]:
    """How the kernel carried a CXL Set Feature (drivers/cxl/core/features.c).

    ``cxl_set_feature()`` always sets "saved across reset" and splits the data into
    mailbox-sized pieces (Full, or Initiate/Continue.../Finish) whatever the caller
    asked; ``mailbox_payload`` is the memdev's payload_max, 0 when unknown.
    """
    opcode, _flags, op_size, _ = struct.unpack_from(uapi.CXL_RPC_HDR_FMT, request)
    if opcode != uapi.CXL_MBOX_OP_SET_FEATURE:
        return {}
    info: dict[str, bool | int | str] = {"saved-across-reset": True}
    room = mailbox_payload - uapi.CXL_SET_FEAT_HDR_SIZE
    if mailbox_payload and room >= uapi.CXL_FEAT_DATA_MIN_PAYLOAD:
        data = op_size - uapi.CXL_SET_FEAT_HDR_SIZE
        info["mailbox-commands"] = 1 if data <= room else -(-data // room)
    return info


def decode_info(
    device_type: int, data: bytes, features: tuple[uapi.CxlFeatureEntry, ...]
) -> dict[str, int | str | bytes]:
    """The driver-specific part of FWCTL_INFO, decoded.

    mlx5: struct fwctl_info_mlx5 (include/uapi/fwctl/mlx5.h: uid, uctx_caps); pds:
    struct fwctl_info_pds (uctx_caps; drivers/fwctl/pds/main.c ``pdsfc_info`` reports
    0 bytes, so it is usually absent); bnxt: struct fwctl_info_bnxt (uctx_caps, bits of
    enum fwctl_bnxt_commands; drivers/fwctl/bnxt/main.c ``bnxtctl_info``); CXL has no
    info op (drivers/fwctl/main.c ``fwctl_cmd_info`` zeroes the buffer): the features
    read at coldplug stand in.
    """
    info: dict[str, int | str | bytes] = {}
    if device_type == uapi.DeviceType.MLX5 and len(data) >= uapi.MLX5_INFO_SIZE:
        uid, caps = struct.unpack_from(uapi.MLX5_INFO_FMT, data)
        info["uid"] = uid  # of the fd livefwd used; every open gets its own
        info["uctx-caps"] = caps
    elif device_type in (uapi.DeviceType.PDS, uapi.DeviceType.BNXT) and len(data) >= 4:
        info["uctx-caps"] = struct.unpack_from("<I", data)[0]
    elif device_type == uapi.DeviceType.CXL:
        info["features"] = len(features)
        info["user-changeable-features"] = sum(1 for f in features if f.changeable)
    return info
