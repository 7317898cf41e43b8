"""One fwctl device (``/dev/fwctl/fwctl<N>``) and its operations: Info and Rpc.

Every RPC passes livefw's checks before anything reaches the kernel: size caps, the
daemon's scope table for CXL and mlx5 (a command asked for at a scope too low for it
is refused, so an escalation attempt never taints the kernel), write scopes on device
types without a table only when configured, full debug only when configured
(plugins/fwctl/drivers.py holds the per-driver rules). RPCs to one device are
serialized and each is logged with the caller's uid. The bus layer runs write-scope
RPCs inside ``Engine.exclusive`` (daemon/bus/ext_fwctl.py).
"""

from __future__ import annotations

import asyncio
import errno
import struct

from livefw.errors import (
    Busy,
    InvalidArgument,
    KernelError,
    LivefwError,
    NotFound,
    NotSupported,
    PermissionDenied,
)
from livefw.kernel import OpenFlags
from livefw.kernel.uapi import fwctl as uapi
from livefw.kernel.uapi.fwctl import Scope
from livefw.plugin import Device
from livefw.plugins.fwctl import drivers
from livefw.plugins.fwctl.context import FwctlContext
from livefw.record import FACTORY, Frozen

PROTOCOL = "org.livefw.fwctl"
INTERFACE = "org.livefw.Daemon1.Fwctl"


class RpcOptions(Frozen):
    """Options of Rpc (wire ``a{sv}``): ``response-size`` (u)."""

    _FIELDS = ("response_size",)
    response_size: int | None = None

    def __init__(self, response_size: int | None = None) -> None:
        _set = object.__setattr__
        _set(self, "response_size", response_size)


class RpcPlan(Frozen):
    """What :meth:`FwctlDevice.check_rpc` decided: the request may be sent."""

    _FIELDS = ("scope", "command", "response_size")
    scope: Scope
    command: str
    response_size: int

    def __init__(self, scope: Scope, command: str, response_size: int) -> None:
        _set = object.__setattr__
        _set(self, "scope", scope)
        _set(self, "command", command)
        _set(self, "response_size", response_size)


class RpcResult(Frozen):
    """An RPC's response and what the kernel and device said about it.

    ``info`` keys: ``tainted`` (b), ``response-length`` (u, the driver's length, which
    may exceed ``len(response)``), ``scope`` (s), ``command`` (s), and for CXL and
    mlx5 ``device-status`` (u) / ``device-status-name`` (s), for mlx5 ``syndrome`` (u).
    """

    _FIELDS = ("response", "info")
    response: bytes
    info: dict[str, bool | int | str]

    def __init__(self, response: bytes, info: dict[str, bool | int | str] = FACTORY) -> None:
        _set = object.__setattr__
        _set(self, "response", response)
        _set(self, "info", dict() if info is FACTORY else info)


class Parent(Frozen):
    """Where a fwctl node hangs in sysfs."""

    _FIELDS = ("name", "driver", "pci_address", "pci_driver", "vendor_id")
    name: str = ""
    driver: str = ""
    pci_address: str = ""
    pci_driver: str = ""
    vendor_id: int = 0

    def __init__(
        self,
        name: str = "",
        driver: str = "",
        pci_address: str = "",
        pci_driver: str = "",
        vendor_id: int = 0,
    ) -> None:
        _set = object.__setattr__
        _set(self, "name", name)
        _set(self, "driver", driver)
        _set(self, "pci_address", pci_address)
        _set(self, "pci_driver", pci_driver)
        _set(self, "vendor_id", vendor_id)


def scope_name(scope: Scope) -> str:
    """``configuration``, ``debug-read``, ``debug-write``, ``debug-write-full``."""
    return uapi.SCOPE_NAMES[scope]


def parse_scope(name: str) -> Scope:
    """A wire scope name as a Scope.

    Raises:
        InvalidArgument: not one of the four names.
    """
    scope = uapi.SCOPES_BY_NAME.get(name)
    if scope is None:
        raise InvalidArgument(
            f"unknown fwctl scope {name!r}: use one of {', '.join(uapi.SCOPES_BY_NAME)}"
        )
    return scope


class FwctlDevice(Device):
    """One ``/dev/fwctl/fwctl<N>`` node (not updatable); its RPCs go through here."""

    interfaces = (INTERFACE,)

    def __init__(
        self,
        ctx: FwctlContext,
        node: str,
        physical_id: str,
        *,
        name: str,
        vendor: str,
        device_type: int,
        device_data: bytes,
        parent: Parent,
        features: tuple[uapi.CxlFeatureEntry, ...],
        mailbox_payload: int = 0,
    ) -> None:
        self.ctx = ctx
        self.node = node
        self.device_type = device_type
        self.type_name = uapi.device_type_name(device_type)
        self.device_data = device_data
        self.parent = parent
        self.features = features
        #: CXL: the memdev's mailbox payload size (payload_max), 0 when unknown.
        self.mailbox_payload = mailbox_payload
        self.removed = False
        #: serializes RPCs to this device: one open file and one RPC at a time, so the
        #: taint read before and after belongs to this RPC (docs/architecture.md).
        self._rpc_lock = asyncio.Lock()
        metadata = {
            "device-type": self.type_name,
            "node": f"/{self.devnode}",
            "sysfs": f"/{uapi.FWCTL_CLASS}/{node}",
            "parent": parent.name,
            "driver": parent.driver,
            "pci-address": parent.pci_address,
            "pci-driver": parent.pci_driver,
            "info-data": device_data.hex(),
        }
        if device_type == uapi.DeviceType.CXL:
            metadata["features"] = str(len(features))
        super().__init__(
            ctx.plugin.name,
            physical_id,
            name=name,
            vendor=vendor,
            summary=f"Device firmware RPC interface (fwctl, {self.type_name})",
            protocol=PROTOCOL,
            metadata={key: value for key, value in metadata.items() if value},
        )

    @property
    def devnode(self) -> str:
        """Provider path of the character device."""
        return f"{uapi.FWCTL_DEV_DIR}/{self.node}"

    def fwctl_info(self) -> dict[str, int | str | bytes]:
        """What FWCTL_INFO returned, raw and decoded (the bus layer's ``Info``)."""
        info: dict[str, int | str | bytes] = {
            "device-type": self.device_type,
            "device-type-name": self.type_name,
            "device-data": self.device_data,
        }
        info.update(drivers.decode_info(self.device_type, self.device_data, self.features))
        return info

    # ------------------------------------------------------------------ RPC

    def check_rpc(
        self,
        scope: Scope,
        request: bytes,
        options: RpcOptions,
        caller_uid: int = -1,
    ) -> RpcPlan:
        """Every check livefw makes before an RPC may reach the kernel (nothing is sent).

        Side-effect free apart from the log, so the bus layer runs it before asking
        polkit. A refusal is logged (``fwctl_rpc_refused``) with the caller's uid.

        Raises:
            NotFound: the device was removed.
            InvalidArgument: empty or oversized request, bad response size, malformed
                command, or a write scope for a command that needs only a read scope.
            PermissionDenied: the command needs a higher scope than asked for.
            NotSupported: a scope the configuration does not allow, or a CXL opcode the
                kernel does not carry.
        """
        try:
            return self._check(scope, request, options)
        except LivefwError as error:
            self.ctx.log.warning(
                "fwctl_rpc_refused",
                device_id=self.id,
                node=self.node,
                uid=caller_uid,
                scope=scope_name(scope),
                result=error.name,
                reason=error.message,
            )
            raise

    def _check(self, scope: Scope, request: bytes, options: RpcOptions) -> RpcPlan:
        if self.removed:
            raise NotFound(f"{self.name} was removed; nothing was sent")
        settings = self.ctx.settings
        if not request:
            raise InvalidArgument("the request is empty")
        if len(request) > settings.max_request_size:
            raise InvalidArgument(
                f"the request is {len(request)} bytes, over the limit of "
                f"{settings.max_request_size} ([plugins.fwctl] max_request_size)"
            )
        size = options.response_size
        if size is None:
            size = settings.default_response_size
        if not 1 <= size <= settings.max_response_size:
            raise InvalidArgument(
                f"response-size must be 1..{settings.max_response_size} "
                "([plugins.fwctl] max_response_size)"
            )
        if scope == Scope.DEBUG_WRITE_FULL and not settings.allow_full_debug:
            raise NotSupported(
                "the debug-write-full scope is disabled; an administrator can enable it "
                "with [plugins.fwctl] allow_full_debug = true in livefw.conf"
            )
        if self.device_type in drivers.POINTER_TYPES:
            raise NotSupported(
                f"{self.type_name} requests carry addresses in the caller's memory "
                f"({drivers.POINTER_TYPES[self.device_type]}), which the kernel reads and "
                "writes in livefwd's address space; livefwd does not forward them"
            )
        command, needed = self._command(scope, request, size)
        if needed is not None:
            if scope < needed:
                raise PermissionDenied(
                    f"{command} needs the {scope_name(needed)} scope, not {scope_name(scope)}; "
                    "nothing was sent to the device"
                )
            if scope in uapi.TAINTING_SCOPES and needed not in uapi.TAINTING_SCOPES:
                raise InvalidArgument(
                    f"{command} needs only the {scope_name(needed)} scope; asking for "
                    f"{scope_name(scope)} would taint the kernel for nothing"
                )
        return RpcPlan(scope, command, size)

    def _command(self, scope: Scope, request: bytes, size: int) -> drivers.Checked:
        """The command and the scope it needs, from the driver's table where livefw has one."""
        if self.device_type == uapi.DeviceType.CXL:
            return drivers.check_cxl(self.features, self.name, request, size)
        if self.device_type == uapi.DeviceType.MLX5:
            return drivers.check_mlx5(request, size, self.ctx.kernel_release)
        if scope in uapi.TAINTING_SCOPES and not self.ctx.settings.allow_unknown_write:
            raise NotSupported(
                f"livefw has no scope table for {self.type_name} devices, so write "
                "scopes are refused; an administrator can allow them with "
                "[plugins.fwctl] allow_unknown_write = true"
            )
        return "raw", None

    async def rpc(
        self,
        scope: Scope,
        request: bytes,
        options: RpcOptions,
        caller_uid: int = -1,
    ) -> RpcResult:
        """Check, then send one RPC, serialized with the device's other RPCs.

        Whether the kernel tainted itself (drivers/fwctl/main.c ``fwctl_cmd_rpc``) is
        read before and after, and reported in ``info["tainted"]``.

        Raises:
            Everything :meth:`check_rpc` raises, before anything is sent; then
            NotFound (device removed), PermissionDenied (the kernel or driver refused:
            EBADMSG, EINVAL, EPERM, EACCES), InvalidArgument (EMSGSIZE, E2BIG),
            NotSupported (EOPNOTSUPP, ENOTTY), Busy (EAGAIN, EBUSY).
        """
        log = self.ctx.log.bind(
            device_id=self.id, node=self.node, uid=caller_uid, scope=scope_name(scope)
        )
        plan = self.check_rpc(scope, request, options, caller_uid)
        async with self._rpc_lock:
            if self.removed:
                log.warning("fwctl_rpc_refused", command=plan.command, result="NotFound")
                raise NotFound(f"{self.name} was removed; nothing was sent")
            tainted_before = await self.ctx.tainted()
            try:
                response, out_len = await self._transact(plan, request)
            except KernelError as error:
                mapped = self._map_error(plan, error)
                log.warning(
                    "fwctl_rpc_failed",
                    command=plan.command,
                    result=mapped.name,
                    errno=errno.errorcode.get(error.errno, str(error.errno)),
                )
                if not tainted_before and await self.ctx.tainted():
                    log.warning("fwctl_kernel_tainted", command=plan.command)
                raise mapped from error
            tainted = await self.ctx.tainted()
        info: dict[str, bool | int | str] = {
            "tainted": tainted,
            "response-length": out_len,
            "scope": scope_name(scope),
            "command": plan.command,
            "response-length-exact": drivers.response_length_exact(self.device_type),
        }
        info.update(drivers.device_status(self.device_type, response))
        if self.device_type == uapi.DeviceType.CXL:
            if plan.command.startswith("Set Feature"):
                self.mailbox_payload = await self.ctx.payload_max(self.parent.name)
            info.update(drivers.set_feature_info(self.mailbox_payload, request))
        if tainted and not tainted_before:
            log.warning("fwctl_kernel_tainted", command=plan.command)
        log.info(
            "fwctl_rpc",
            command=plan.command,
            result="ok",
            request_length=len(request),
            response_length=out_len,
            device_status=info.get("device-status-name", ""),
        )
        return RpcResult(response, info)

    async def _transact(self, plan: RpcPlan, request: bytes) -> tuple[bytes, int]:
        """FWCTL_RPC on a fresh open file (drivers/fwctl/main.c ``fwctl_cmd_rpc``)."""
        handle = await self.ctx.provider.open(self.devnode, OpenFlags.RDWR)
        try:
            arg = uapi.pack_rpc(plan.scope, len(request), plan.response_size)
            inbuf, outbuf = bytearray(request), bytearray(plan.response_size)
            await handle.ioctl(
                uapi.FWCTL_RPC,
                arg,
                pointers={uapi.FWCTL_RPC_IN_PTR: inbuf, uapi.FWCTL_RPC_OUT_PTR: outbuf},
            )
        finally:
            await handle.close()
        (out_len,) = struct.unpack_from("<I", arg, 12)
        return bytes(outbuf[: min(out_len, plan.response_size)]), out_len

    def _map_error(self, plan: RpcPlan, error: KernelError) -> LivefwError:
        """One error name per kernel refusal, whatever the driver's errno (README, Errors)."""
        name = errno.errorcode.get(error.errno, str(error.errno))
        what = f"{plan.command} on {self.name} at scope {scope_name(plan.scope)}"
        if error.errno in (errno.ENODEV, errno.ENOENT, errno.ENXIO):
            return NotFound(f"{self.name} was removed ({name}); the RPC was not delivered")
        if error.errno in _REFUSALS:
            return PermissionDenied(f"the kernel refused {what}: {_REFUSALS[error.errno]} ({name})")
        if error.errno in (errno.EMSGSIZE, errno.E2BIG):
            return InvalidArgument(f"the kernel refused the sizes of {what} ({name})")
        if error.errno in (errno.EOPNOTSUPP, errno.ENOTTY):
            return NotSupported(f"the kernel does not support {what} ({name})")
        if error.errno in (errno.EAGAIN, errno.EBUSY):
            return Busy(f"{self.name} is busy ({name}); try again")
        return error


#: driver refusals: one error name whatever the driver's errno (README, Errors).
_REFUSALS = {
    errno.EBADMSG: "mlx5 does not allow this command at this scope",
    errno.EINVAL: "the driver refused the command (CXL: malformed or not allowed at this scope)",
    errno.EPERM: "not permitted (CXL: the kernel owns this feature; debug-write-full: "
    "livefwd lacks CAP_SYS_RAWIO; pds/bnxt: scope too low)",
    errno.EACCES: "the device node cannot be opened by livefwd",
}
