"""Simulated CXL Features: the fwctl driver side and the device's Features mailbox.

Follows drivers/cxl/core/features.c: ``cxlctl_fw_rpc`` and the ``cxlctl_*`` handlers
(validation, scope from the feature's effects, kernel-owned features), and
``cxl_get_feature``/``cxl_set_feature`` (mailbox-sized pieces, transfer flags the
kernel sets itself). docs/kernel.md, section fwctl, has one row per behaviour.
"""

from __future__ import annotations

import errno
import struct
import uuid
from typing import Protocol

from livefw.kernel.sim.fwctl_model import (
    MAILBOX_LOG_MAX,
    CxlFeature,
    FwctlNode,
    FwctlState,
    MailboxCommand,
)
from livefw.kernel.sim.machine import SimMachine
from livefw.kernel.sim.vfs import fail
from livefw.kernel.uapi import fwctl as uapi


class CxlHost(Protocol):
    """What the CXL simulation uses of the fwctl component."""

    machine: SimMachine
    state: FwctlState
    mailbox_log: list[MailboxCommand]


class CxlFeaturesSim:
    """The CXL memdev's fwctl driver and device firmware (one per fwctl component)."""

    def __init__(self, host: CxlHost) -> None:
        self.host = host

    @staticmethod
    def _feature(node: FwctlNode, raw_uuid: bytes) -> CxlFeature | None:
        text = str(uuid.UUID(bytes=raw_uuid))
        return next((f for f in node.features if f.uuid == text), None)

    @staticmethod
    def reply(reply: bytes) -> tuple[bytes, int]:
        """The buffer and out_len the CXL handlers give the core.

        Each cxlctl_* handler counts ``sizeof(struct fwctl_rpc_cxl_out)``, which is 16:
        the 8-byte header plus the union whose ``get_sup_feats_out`` member is 8 bytes
        (include/uapi/fwctl/cxl.h). So the length reported is 8 more than the reply
        (header + ``size`` bytes), and the 8 bytes past it are the zeros of the
        kvzalloc()ed buffer: Get Supported Features 24 + 48n, Get Feature 16 + count,
        Set Feature and failures 16.
        """
        padded = reply + bytes(uapi.CXL_RPC_OUT_UNION_SIZE)
        return padded, len(padded)

    def rpc(
        self, path: str, node: FwctlNode, scope: uapi.Scope, request: bytes, out_len: int
    ) -> bytes:
        """cxlctl_fw_rpc: the reply (struct fwctl_rpc_cxl_out and data), or an errno."""
        if len(request) < uapi.CXL_RPC_HDR_SIZE:
            raise fail(errno.EINVAL, "ioctl", path, "cxl: short fwctl_rpc_cxl")
        opcode, _flags, op_size, _ = struct.unpack_from(uapi.CXL_RPC_HDR_FMT, request)
        payload = request[uapi.CXL_RPC_HDR_SIZE :]
        if len(payload) < op_size:
            raise fail(errno.EINVAL, "ioctl", path, "cxl: op_size past in_len")
        payload = payload[:op_size]
        if not self._cxl_validate(node, opcode, payload, scope):
            raise fail(errno.EINVAL, "ioctl", path, f"cxl: opcode 0x{opcode:x} refused")
        if opcode == uapi.CXL_MBOX_OP_GET_SUPPORTED_FEATURES:
            return self._cxl_get_supported(path, node, payload)
        if opcode == uapi.CXL_MBOX_OP_GET_FEATURE:
            return self._cxl_get_feature(path, node, payload, out_len)
        return self._cxl_set_feature(path, node, payload)

    def _cxl_validate(
        self, node: FwctlNode, opcode: int, payload: bytes, scope: uapi.Scope
    ) -> bool:
        """cxlctl_validate_hw_command + cxlctl_validate_set_features (all -> EINVAL)."""
        if opcode in (uapi.CXL_MBOX_OP_GET_SUPPORTED_FEATURES, uapi.CXL_MBOX_OP_GET_FEATURE):
            return True
        if opcode != uapi.CXL_MBOX_OP_SET_FEATURE or len(payload) < 16:
            return False
        feature = self._feature(node, payload[:16])  # the firmware's true entry
        if feature is None or not feature.flags & uapi.CXL_FEATURE_F_CHANGEABLE:
            return False
        needed = uapi.cxl_set_feature_min_scope(feature.effects)
        return needed is not None and scope >= needed

    def _user_entry(self, index: int, feature: CxlFeature) -> bytes:
        set_size, flags = feature.set_size, feature.flags
        if feature.uuid in uapi.CXL_KERNEL_FEATURES:
            set_size, flags = 0, flags & ~uapi.CXL_FEATURE_F_CHANGEABLE
        return uapi.CxlFeatureEntry(
            feature.uuid,
            index,
            feature.get_size,
            set_size,
            flags,
            feature.get_version,
            feature.set_version,
            feature.effects,
        ).pack()

    def _cxl_get_supported(self, path: str, node: FwctlNode, payload: bytes) -> bytes:
        if len(payload) != uapi.CXL_GET_SUP_IN_SIZE:
            raise fail(errno.EINVAL, "ioctl", path, "cxl: Get Supported Features op_size != 8")
        count, start = struct.unpack(uapi.CXL_GET_SUP_IN_FMT, payload)
        total = len(node.features)
        if start >= total:
            raise fail(errno.EINVAL, "ioctl", path, "cxl: start_idx past the last feature")
        requested = min(count // uapi.CXL_FEAT_ENTRY_SIZE, total - start)
        entries = b"".join(
            self._user_entry(i, node.features[i]) for i in range(start, start + requested)
        )
        body = struct.pack(uapi.CXL_GET_SUP_OUT_FMT, requested, total) + entries
        return struct.pack(uapi.CXL_RPC_OUT_FMT, len(body), uapi.CXL_MBOX_CMD_RC_SUCCESS) + body

    def _cxl_get_feature(self, path: str, node: FwctlNode, payload: bytes, out_len: int) -> bytes:
        """cxlctl_get_feature + cxl_get_feature (drivers/cxl/core/features.c).

        Only ``op_size == 21`` and ``count > 0`` are checked; there is no check of
        ``count`` against the caller's out_len. The kernel allocates its reply with the
        caller's out_len and writes 8 + count bytes into it, so a smaller out_len makes
        the real kernel write past its buffer: livefw never sends that (the plugin
        refuses it); the simulation answers as if the buffer were large enough. The
        data is read from the device in mailbox-sized pieces; a device error ends the
        read with size 0 and the device's return code, a piece shorter than asked
        (-EIO from cxl_internal_send_cmd's min_out check) with size 0 and SUCCESS.
        """
        if len(payload) != uapi.CXL_GET_FEAT_IN_SIZE:
            raise fail(errno.EINVAL, "ioctl", path, "cxl: Get Feature op_size != 21")
        raw, offset, count, selection = struct.unpack(uapi.CXL_GET_FEAT_IN_FMT, payload)
        if count == 0:
            raise fail(errno.EINVAL, "ioctl", path, "cxl: Get Feature count 0")
        del out_len  # not consulted by the kernel (see above)
        room = self.host.state.cxl_mbox_payload
        received = b""
        retval = uapi.CXL_MBOX_CMD_RC_SUCCESS
        while len(received) < count:
            piece = min(count - len(received), room)
            code, data = self._cxl_firmware_get(node, raw, offset + len(received), piece, selection)
            self._log_mbox(node, uapi.CXL_MBOX_OP_GET_FEATURE, selection, offset + len(received),
                           piece, code)  # fmt: skip
            data = data[: min(count, room)]
            if code != uapi.CXL_MBOX_CMD_RC_SUCCESS:
                received, retval = b"", code
                break
            if len(data) < piece:  # nothing, or less than min_out: the kernel gives up
                received = b""
                break
            received += data
        return struct.pack(uapi.CXL_RPC_OUT_FMT, len(received), retval) + received

    def _cxl_firmware_get(
        self, node: FwctlNode, raw: bytes, offset: int, count: int, selection: int
    ) -> tuple[int, bytes]:
        """The device's Get Feature: (return code, data)."""
        feature = self._feature(node, raw)
        if feature is None:
            return uapi.CXL_MBOX_CMD_RC_UNSUPPORTED, b""
        if (
            selection > uapi.CXL_GET_FEAT_SEL_SAVED
            or (
                selection == uapi.CXL_GET_FEAT_SEL_DEFAULT
                and not feature.flags & uapi.CXL_FEATURE_F_DEFAULT_SEL
            )
            or (
                selection == uapi.CXL_GET_FEAT_SEL_SAVED
                and not feature.flags & uapi.CXL_FEATURE_F_SAVED_SEL
            )
        ):
            return uapi.CXL_MBOX_CMD_RC_FEATURESELVALUE, b""
        if offset >= feature.get_size:
            return uapi.CXL_MBOX_CMD_RC_INPUT, b""
        value = (feature.current, feature.default, feature.saved)[selection]
        return uapi.CXL_MBOX_CMD_RC_SUCCESS, bytes.fromhex(value)[offset : offset + count]

    def _log_mbox(
        self, node: FwctlNode, opcode: int, flags: int, offset: int, length: int, retval: int
    ) -> None:
        self.host.mailbox_log.append(
            MailboxCommand(
                minor=node.minor,
                opcode=opcode,
                flags=flags,
                offset=offset,
                length=length,
                retval=retval,
            )
        )
        del self.host.mailbox_log[:-MAILBOX_LOG_MAX]

    def _cxl_set_feature(self, path: str, node: FwctlNode, payload: bytes) -> bytes:
        """cxlctl_set_feature + cxl_set_feature (drivers/cxl/core/features.c).

        The kernel ignores the caller's data-transfer action (flags bits 0-2), always
        sets "saved across reset" (bit 3) and moves the data itself: one Full Data
        Transfer when header + data fit the mailbox payload, else Initiate, Continue ...
        and Finish with mailbox-sized pieces at ``offset + bytes sent``. Other flag bits
        pass through. A device error stops the transfer where it is (no Abort is sent)
        and comes back as the reply's retval with size 0; the ioctl succeeds. A mailbox
        smaller than header + FEAT_DATA_MIN_PAYLOAD_SIZE gives retval INVALID_INPUT.
        """
        if len(payload) <= uapi.CXL_SET_FEAT_HDR_SIZE:
            raise fail(errno.EINVAL, "ioctl", path, "cxl: Set Feature carries no data")
        raw, flags, offset, version = struct.unpack_from(uapi.CXL_SET_FEAT_HDR_FMT, payload)
        text = str(uuid.UUID(bytes=raw))
        if text in uapi.CXL_KERNEL_FEATURES:
            raise fail(errno.EPERM, "ioctl", path, "cxl: the kernel owns this feature")
        data = payload[uapi.CXL_SET_FEAT_HDR_SIZE :]
        flags = flags & ~uapi.CXL_SET_FEAT_FLAG_DATA_TRANSFER_MASK & 0xFFFFFFFF
        flags |= uapi.CXL_SET_FEAT_FLAG_DATA_SAVED_ACROSS_RESET
        room = self.host.state.cxl_mbox_payload - uapi.CXL_SET_FEAT_HDR_SIZE
        if room < uapi.CXL_FEAT_DATA_MIN_PAYLOAD:
            return struct.pack(uapi.CXL_RPC_OUT_FMT, 0, uapi.CXL_MBOX_CMD_RC_INPUT)
        if len(data) <= room:
            pieces = [(uapi.CXL_SET_FEAT_FLAG_FULL_DATA_TRANSFER, data)]
        else:
            chunks = [data[i : i + room] for i in range(0, len(data), room)]
            pieces = [(uapi.CXL_SET_FEAT_FLAG_INITIATE_DATA_TRANSFER, chunks[0])]
            pieces += [(uapi.CXL_SET_FEAT_FLAG_CONTINUE_DATA_TRANSFER, c) for c in chunks[1:-1]]
            pieces.append((uapi.CXL_SET_FEAT_FLAG_FINISH_DATA_TRANSFER, chunks[-1]))
        sent = 0
        for action, piece in pieces:
            piece_flags = flags | action
            retval = self._cxl_firmware_set(node, text, piece_flags, offset + sent, version, piece)
            self._log_mbox(node, uapi.CXL_MBOX_OP_SET_FEATURE, piece_flags, offset + sent,
                           len(piece), retval)  # fmt: skip
            if retval != uapi.CXL_MBOX_CMD_RC_SUCCESS:
                return struct.pack(uapi.CXL_RPC_OUT_FMT, 0, retval)
            sent += len(piece)
        return struct.pack(uapi.CXL_RPC_OUT_FMT, 0, uapi.CXL_MBOX_CMD_RC_SUCCESS)

    def _cxl_firmware_set(
        self, node: FwctlNode, text: str, flags: int, offset: int, version: int, data: bytes
    ) -> int:
        """The device's Set Feature (one mailbox command): returns the return code.

        Full transfers and Initiate/Continue/Finish/Abort sequences (in-progress and
        out-of-order codes; Full and Initiate start at offset 0). Only the kernel's
        cxl_set_feature() sends these, so from user space only its sequences occur.
        """
        feature = next(f for f in node.features if f.uuid == text)
        if version != feature.set_version:
            return uapi.CXL_MBOX_CMD_RC_FEATUREVERSION
        action = flags & uapi.CXL_SET_FEAT_FLAG_DATA_TRANSFER_MASK
        saved = bool(flags & uapi.CXL_SET_FEAT_FLAG_DATA_SAVED_ACROSS_RESET)
        with self.host.machine.lock:
            try:
                if action == uapi.CXL_SET_FEAT_FLAG_FULL_DATA_TRANSFER:
                    if text in node.transfers:
                        return uapi.CXL_MBOX_CMD_RC_FEATURETRANSFERIP
                    if offset != 0 or len(data) > feature.set_size:
                        return uapi.CXL_MBOX_CMD_RC_INPUT
                    self._commit(feature, data, saved)
                    return uapi.CXL_MBOX_CMD_RC_SUCCESS
                if action == uapi.CXL_SET_FEAT_FLAG_ABORT_DATA_TRANSFER:
                    node.transfers.pop(text, None)
                    return uapi.CXL_MBOX_CMD_RC_SUCCESS
                if action == uapi.CXL_SET_FEAT_FLAG_INITIATE_DATA_TRANSFER:
                    if node.transfers:
                        return uapi.CXL_MBOX_CMD_RC_FEATURETRANSFERIP
                    if offset != 0:
                        return uapi.CXL_MBOX_CMD_RC_FEATURETRANSFEROOO
                    node.transfers[text] = data.hex()
                    return uapi.CXL_MBOX_CMD_RC_SUCCESS
                if action in (
                    uapi.CXL_SET_FEAT_FLAG_CONTINUE_DATA_TRANSFER,
                    uapi.CXL_SET_FEAT_FLAG_FINISH_DATA_TRANSFER,
                ):
                    if text not in node.transfers:
                        return uapi.CXL_MBOX_CMD_RC_FEATURETRANSFEROOO
                    received = bytes.fromhex(node.transfers[text])
                    if offset != len(received):
                        return uapi.CXL_MBOX_CMD_RC_FEATURETRANSFEROOO
                    received += data
                    if len(received) > feature.set_size:
                        node.transfers.pop(text)
                        return uapi.CXL_MBOX_CMD_RC_INPUT
                    if action == uapi.CXL_SET_FEAT_FLAG_CONTINUE_DATA_TRANSFER:
                        node.transfers[text] = received.hex()
                    else:
                        node.transfers.pop(text)
                        self._commit(feature, received, saved)
                    return uapi.CXL_MBOX_CMD_RC_SUCCESS
                return uapi.CXL_MBOX_CMD_RC_INPUT
            finally:
                self.host.machine.changed()

    @staticmethod
    def _commit(feature: CxlFeature, data: bytes, saved: bool) -> None:
        value = bytearray.fromhex(feature.current)
        value[: len(data)] = data
        feature.current = value.hex()
        if saved:
            feature.saved = feature.current
