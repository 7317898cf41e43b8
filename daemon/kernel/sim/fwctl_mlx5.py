"""Simulated mlx5 fwctl: the driver's allow-list per release and the adapter firmware.

Follows drivers/fwctl/mlx5/main.c: ``mlx5ctl_validate_rpc`` (the allow-list, which
grew in 6.18) and ``mlx5ctl_fw_rpc`` (EMSGSIZE for short headers, EBADMSG for a
command not allowed at the scope, firmware errors inside the output header, out_len
never set). docs/kernel.md, section fwctl, has one row per behaviour.
"""

from __future__ import annotations

import errno
import struct

from livefw.kernel.sim.fwctl_model import FwctlNode
from livefw.kernel.sim.machine import SimMachine
from livefw.kernel.sim.vfs import fail
from livefw.kernel.uapi import fwctl as uapi


class Mlx5Sim:
    """The mlx5 fwctl driver and the adapter's command interface."""

    def __init__(self, machine: SimMachine) -> None:
        self.machine = machine

    def allowed(self, opcode: int, op_mod: int, scope: uapi.Scope) -> bool:
        """mlx5ctl_validate_rpc (drivers/fwctl/mlx5/main.c) on this kernel release.

        MODIFY_CONG_STATUS, QUERY_ADJACENT_FUNCTIONS_ID, DELEGATE_VHCA_MANAGEMENT and
        QUERY_DELEGATED_VHCA joined the allow-list in 6.18 ("fwctl/mlx5: Allow
        MODIFY_CONG_STATUS command", "fwctl/mlx5: Add Adjacent function query commands
        and their scope"); older kernels refuse them like any unlisted opcode.
        """
        needed = uapi.mlx5_min_scope(opcode, op_mod)
        if needed is None or scope < needed:
            return False
        major, minor = uapi.mlx5_since(opcode)
        return self.machine.kernel_at_least(f"{major}.{minor}")

    def rpc(
        self,
        path: str,
        uid: int,
        node: FwctlNode,
        scope: uapi.Scope,
        request: bytes,
        out_len: int,
    ) -> tuple[bytes, int]:
        """mlx5ctl_fw_rpc: (output buffer, out_len).

        The driver never writes ``*out_len``, so the length fwctl_cmd_rpc reports is the
        caller's out_len whatever the command answered; the output buffer is that long
        (the command's output, then zeros). Firmware errors are ``-EREMOTEIO`` from
        mlx5_cmd_do(), which the driver turns into a successful ioctl with the status
        in the output header.
        """
        if len(request) < uapi.MLX5_IN_HDR_SIZE or out_len < uapi.MLX5_OUT_HDR_SIZE:
            raise fail(errno.EMSGSIZE, "ioctl", path, "mlx5: mailbox headers are 16 bytes")
        opcode, _uid, _, op_mod = struct.unpack_from(uapi.MLX5_IN_HDR_FMT, request)
        if not self.allowed(opcode, op_mod, scope):
            raise fail(errno.EBADMSG, "ioctl", path, f"mlx5: opcode 0x{opcode:x} not allowed")
        body = request[uapi.MLX5_IN_HDR_SIZE :]
        status, syndrome, out = self._firmware(node, opcode, op_mod, body, uid)
        output = struct.pack(uapi.MLX5_OUT_HDR_FMT, status, syndrome) + out
        return (output + bytes(out_len))[:out_len], out_len

    def _firmware(
        self, node: FwctlNode, opcode: int, op_mod: int, body: bytes, uid: int
    ) -> tuple[int, int, bytes]:
        """The adapter's command interface: (status, syndrome, output body)."""
        ok = uapi.MLX5_CMD_STAT_OK
        if opcode == uapi.MLX5_OP_NOP:
            return ok, 0, b""
        if opcode == uapi.MLX5_OP_QUERY_HCA_CAP:
            caps = bytearray(256)
            struct.pack_into(">HHI", caps, 0, node.parent_index, uid, 0x00C0FFEE)
            return ok, 0, bytes(caps)
        if opcode == uapi.MLX5_OP_QUERY_ADAPTER:
            psid = b"MT_0000000838".ljust(16, b"\0")
            return ok, 0, struct.pack(">8xI", 0x0002C9) + psid
        if opcode == uapi.MLX5_OP_QUERY_ISSI:
            supported = bytearray(80)
            supported[-1] = 0x03  # ISSI 0 and 1
            return ok, 0, struct.pack(">H2x", 1) + bytes(supported)
        if opcode == uapi.MLX5_OP_QUERY_DIAGNOSTIC_PARAMS:
            return ok, 0, bytes.fromhex(node.diag_params)
        if opcode == uapi.MLX5_OP_SET_DIAGNOSTIC_PARAMS:
            if len(body) < 16:
                return uapi.MLX5_CMD_STAT_BAD_PARAM_ERR, 0x2D8A1F, b""
            with self.machine.lock:
                node.diag_params = body[:16].hex()
                self.machine.changed()
            return ok, 0, b""
        if opcode in (uapi.MLX5_OP_ACCESS_REG, uapi.MLX5_OP_ACCESS_REGISTER_USER):
            if len(body) < 8:
                return uapi.MLX5_CMD_STAT_BAD_PARAM_ERR, 0x1B3C2A, b""
            _, register_id, _argument = struct.unpack_from(">HHI", body)
            key = f"{register_id:04x}"
            if op_mod == 0:  # write
                with self.machine.lock:
                    node.registers[key] = body[8:].hex()
                    self.machine.changed()
                return ok, 0, b""
            data = bytes.fromhex(node.registers.get(key, "00" * 16))
            return ok, 0, body[:8] + data
        # allowed by the kernel's table but not implemented by this firmware model
        return uapi.MLX5_CMD_STAT_BAD_OP_ERR, 0x0BAD0F, b""
