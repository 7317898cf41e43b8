"""fwctl: device firmware RPC (mlx5, CXL, pds, ...) with livefw's own scope policy.

One device per ``/sys/class/fwctl/fwctl<N>`` node. The devices are not updatable;
they carry the ``org.livefw.Daemon1.Fwctl`` interface through which authorized
callers send RPCs without being given the device node.

Every RPC passes livefw's checks before anything reaches the kernel: size caps, the
daemon's scope table for CXL and mlx5 (a command asked for at a scope too low for it
is refused, so an escalation attempt never taints the kernel), write scopes on device
types without a table only when configured, full debug only when configured. RPCs to
one device are serialized and each is logged with the caller's uid.
"""

from __future__ import annotations

import asyncio
import errno
import struct
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from livefw.errors import (
    Busy,
    ConfigError,
    InvalidArgument,
    KernelError,
    LivefwError,
    NotFound,
    NotSupported,
    PermissionDenied,
)
from livefw.kernel import Handle, OpenFlags, UEvent
from livefw.kernel.uapi import fwctl as uapi
from livefw.kernel.uapi.fwctl import Scope
from livefw.plugin import Device, Plugin, PluginContext, Probe

PROTOCOL = "org.livefw.fwctl"
INTERFACE = "org.livefw.Daemon1.Fwctl"

#: FWCTL_INFO is asked with this buffer first (a zero length returns nothing, spec §3.2).
_INFO_PROBE_LEN = 64
#: Get Supported Features pages: entries per request.
_FEATURES_PER_PAGE = 32

_PCI_VENDORS = {
    0x15B3: "NVIDIA (Mellanox)",
    0x8086: "Intel",
    0x1022: "AMD",
    0x1DD8: "AMD (Pensando)",
    0x14E4: "Broadcom",
    0x1AF4: "Red Hat (virtio)",
}

_TYPE_LABELS = {"cxl": "CXL", "mlx5": "mlx5", "pds": "pds", "bnxt": "bnxt"}


# ---------------------------------------------------------------------- config


@dataclass(frozen=True)
class FwctlConfig:
    """``[plugins.fwctl]`` in livefw.conf.

    Attributes:
        max_request_size: largest request accepted, bytes (the kernel's cap is 2 MiB).
        max_response_size: largest response buffer a caller may ask for.
        default_response_size: response buffer when the caller does not say.
        allow_unknown_write: allow debug-write scopes on device types without a table.
        allow_full_debug: allow the debug-write-full scope at all.
    """

    max_request_size: int = 64 * 1024
    max_response_size: int = 1024 * 1024
    default_response_size: int = 64 * 1024
    allow_unknown_write: bool = False
    allow_full_debug: bool = False

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> FwctlConfig:
        """Validate the plugin's config table.

        Raises:
            ConfigError: unknown key, wrong type or out-of-range value (named).
        """
        defaults = cls()
        values: dict[str, Any] = {}
        for key, value in raw.items():
            if not hasattr(defaults, key):
                raise ConfigError(f"livefw.conf: plugins.fwctl.{key}: unknown key")
            expected = type(getattr(defaults, key))
            if type(value) is not expected:
                raise ConfigError(f"livefw.conf: plugins.fwctl.{key}: must be {expected.__name__}")
            values[key] = value
        config = cls(**values)
        for key in ("max_request_size", "max_response_size", "default_response_size"):
            size = getattr(config, key)
            if not 1 <= size <= uapi.MAX_RPC_LEN:
                raise ConfigError(
                    f"livefw.conf: plugins.fwctl.{key}: must be 1..{uapi.MAX_RPC_LEN} "
                    "(the kernel refuses RPCs over 2 MiB)"
                )
        if config.default_response_size > config.max_response_size:
            raise ConfigError(
                "livefw.conf: plugins.fwctl.default_response_size: exceeds max_response_size"
            )
        return config


# ---------------------------------------------------------------------- RPC types


@dataclass(frozen=True)
class RpcOptions:
    """Options of Rpc (wire ``a{sv}``): ``response-size`` (u)."""

    response_size: int | None = None


@dataclass(frozen=True)
class RpcPlan:
    """What :meth:`FwctlPlugin.check_rpc` decided: the request may be sent."""

    scope: Scope
    command: str
    response_size: int


@dataclass(frozen=True)
class RpcResult:
    """An RPC's response and what the kernel and device said about it.

    ``info`` keys: ``tainted`` (b), ``response-length`` (u, the driver's length, which
    may exceed ``len(response)``), ``scope`` (s), ``command`` (s), and for CXL and
    mlx5 ``device-status`` (u) / ``device-status-name`` (s), for mlx5 ``syndrome`` (u).
    """

    response: bytes
    info: dict[str, bool | int | str] = field(default_factory=dict)


@dataclass(frozen=True)
class Parent:
    """Where a fwctl node hangs in sysfs."""

    name: str = ""
    driver: str = ""
    pci_address: str = ""
    pci_driver: str = ""
    vendor_id: int = 0


def _parse_uevent(text: str) -> dict[str, str]:
    result = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            result[key.strip()] = value.strip()
    return result


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


# ---------------------------------------------------------------------- device


class FwctlDevice(Device):
    """One ``/dev/fwctl/fwctl<N>`` node (not updatable)."""

    interfaces = (INTERFACE,)

    def __init__(
        self,
        owner: FwctlPlugin,
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
        self.owner = owner
        self.node = node
        self.device_type = device_type
        self.type_name = uapi.device_type_name(device_type)
        self.device_data = device_data
        self.parent = parent
        self.features = features
        #: CXL: the memdev's mailbox payload size (payload_max), 0 when unknown.
        self.mailbox_payload = mailbox_payload
        self.removed = False
        #: serializes RPCs to this device (ARCHITECTURE.md, Concurrency).
        self.lock = asyncio.Lock()
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
            FwctlPlugin.name,
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
        data = self.device_data
        if self.device_type == uapi.DeviceType.MLX5 and len(data) >= uapi.MLX5_INFO_SIZE:
            uid, caps = struct.unpack_from(uapi.MLX5_INFO_FMT, data)
            info["uid"] = uid  # of the fd livefwd used; every open gets its own
            info["uctx-caps"] = caps
        elif self.device_type == uapi.DeviceType.PDS and len(data) >= 4:
            info["uctx-caps"] = struct.unpack_from("<I", data)[0]
        elif self.device_type == uapi.DeviceType.CXL:
            info["features"] = len(self.features)
            info["user-changeable-features"] = sum(1 for f in self.features if f.changeable)
        return info


# ---------------------------------------------------------------------- plugin


class FwctlPlugin(Plugin):
    """Devices from ``/sys/class/fwctl``; RPCs through ``/dev/fwctl/fwctl<N>``."""

    name = "fwctl"
    requires = (uapi.FWCTL_CLASS, uapi.FWCTL_DEV_DIR)

    def __init__(self, ctx: PluginContext) -> None:
        super().__init__(ctx)
        self.config = FwctlConfig.parse(ctx.config)
        self._devices: dict[str, FwctlDevice] = {}
        #: device id -> node, so a duplicate is found without a scan of every device
        #: (that scan made probing quadratic: minutes at 10,000 devices; bench/scale.py)
        self._ids: dict[str, str] = {}
        #: CXL memdev name -> the PCI function holding it (see _pci_function_holding).
        self._memdev_pci: dict[str, str] = {}
        #: the pass over the nodes in progress, and the one that last scanned memdevs
        self._pass = 0
        self._memdev_scanned = -1
        #: the running kernel's (major, minor), None when unknown (allow-lists differ).
        self.kernel_release: tuple[int, int] | None = None

    # ------------------------------------------------------------ discovery

    async def probe(self) -> Probe:
        """fwctl.ko registers the class; without it there is nothing to do."""
        release = await self._read_release()
        if release is not None and release < uapi.FWCTL_FIRST_RELEASE:
            return Probe.unsupported(
                f"this kernel is {release[0]}.{release[1]}; fwctl (drivers/fwctl) arrived "
                "in Linux 6.15"
            )
        if not await self.ctx.provider.exists(uapi.FWCTL_CLASS):
            return Probe.unsupported(
                "no /sys/class/fwctl: the kernel lacks CONFIG_FWCTL (Linux 6.15+) or no "
                "fwctl driver (mlx5_fwctl, CXL features, pds_fwctl) is loaded"
            )
        self.kernel_release = release
        return Probe.ok()

    async def _read_release(self) -> tuple[int, int] | None:
        provider = self.ctx.provider
        if not await provider.exists(uapi.OSRELEASE_PATH):
            return None
        return uapi.parse_release(await provider.read_attr(uapi.OSRELEASE_PATH))

    async def _nodes(self) -> list[str]:
        provider = self.ctx.provider
        if not await provider.exists(uapi.FWCTL_CLASS):
            return []
        names = [n for n in await provider.listdir(uapi.FWCTL_CLASS) if n.startswith("fwctl")]
        return sorted(names, key=lambda n: (len(n), n))  # fwctl2 before fwctl10

    async def coldplug(self) -> None:
        """One device per class entry."""
        self._pass += 1
        for node in await self._nodes():
            await self._add(node)

    async def refresh(self) -> None:
        """Re-list nodes: drop vanished ones, add new ones."""
        self._pass += 1
        present = set(await self._nodes())
        for node in list(self._devices):
            if node not in present:
                self._remove(node)
        for node in sorted(present - set(self._devices)):
            await self._add(node)

    async def on_uevent(self, event: UEvent) -> None:
        """Class devices come and go with their drivers and with hotplug."""
        if event.subsystem != uapi.FWCTL_SUBSYSTEM and "/fwctl/fwctl" not in event.devpath:
            return
        node = event.devpath.rstrip("/").rsplit("/", 1)[-1]
        if not node.startswith("fwctl"):
            return
        if event.action == "add":
            self._pass += 1
            await self._add(node)
        elif event.action == "remove":
            self._remove(node)

    async def shutdown(self) -> None:
        """Nothing is held open between RPCs."""

    async def _read_uevent(self, path: str) -> dict[str, str]:
        provider = self.ctx.provider
        if not await provider.exists(path):
            return {}
        return _parse_uevent(await provider.read_attr(path))

    async def _parent(self, base: str) -> Parent:
        """The device the driver registered the fwctl device under, and its PCI function.

        ``device`` of a class device links to the parent given to fwctl_alloc_device()
        (drivers/fwctl/main.c _alloc_device). mlx5, pds and bnxt pass the PCI function
        (drivers/fwctl/{mlx5,pds,bnxt}/main.c probe); CXL passes the memdev
        (drivers/cxl/core/features.c devm_cxl_setup_fwctl). A memdev is a bus device,
        which has no ``device`` link of its own, so its PCI function is the entry of
        ``sys/bus/pci/devices`` that holds it (``<bdf>/mem<M>``): the provider has no
        readlink and refuses ``..``.
        """
        link = f"{base}/{uapi.LINK_DEVICE}"
        first = await self._read_uevent(f"{link}/uevent")
        if "PCI_SLOT_NAME" in first:
            vendor = await self._pci_vendor(link)
            return Parent(
                name=first["PCI_SLOT_NAME"],
                driver=first.get("DRIVER", ""),
                pci_address=first["PCI_SLOT_NAME"],
                pci_driver=first.get("DRIVER", ""),
                vendor_id=vendor,
            )
        name = first.get("DEVNAME", "").rsplit("/", 1)[-1]
        if not name and first.get("MODALIAS", "").startswith("auxiliary:"):
            name = first["MODALIAS"].removeprefix("auxiliary:")
        pci_address, pci, vendor = "", {}, 0
        if name and "/" not in name and name not in (".", ".."):
            pci_address = await self._pci_function_holding(name)
        if pci_address:
            pci_base = f"{uapi.PCI_DEVICES}/{pci_address}"
            pci = await self._read_uevent(f"{pci_base}/uevent")
            vendor = await self._pci_vendor(pci_base)
        return Parent(
            name=name,
            driver=first.get("DRIVER", ""),
            pci_address=pci.get("PCI_SLOT_NAME", pci_address),
            pci_driver=pci.get("DRIVER", ""),
            vendor_id=vendor,
        )

    async def _pci_function_holding(self, child: str) -> str:
        """The PCI function whose sysfs directory holds ``child`` (e.g. ``mem0``), or "".

        One pass over ``sys/bus/pci/devices`` maps each ``mem<M>`` to its function; the
        map is rebuilt when a name is missing (a memdev added since), at most once per
        pass over the nodes (coldplug, refresh, one uevent): a memdev beyond
        ``PCI_SCAN_MAX`` functions stays missing, and a rescan per such node made
        coldplug quadratic (minutes at 10,000 simulated devices; bench/scale.py).
        """
        if child not in self._memdev_pci and self._memdev_scanned != self._pass:
            self._memdev_pci = await self._scan_memdevs()
            self._memdev_scanned = self._pass
        return self._memdev_pci.get(child, "")

    async def _scan_memdevs(self) -> dict[str, str]:
        provider = self.ctx.provider
        found: dict[str, str] = {}
        if not await provider.exists(uapi.PCI_DEVICES):
            return found
        for address in sorted(await provider.listdir(uapi.PCI_DEVICES))[: uapi.PCI_SCAN_MAX]:
            try:
                entries = await provider.listdir(f"{uapi.PCI_DEVICES}/{address}")
            except KernelError:
                continue  # removed meanwhile
            for entry in entries:
                if entry.startswith("mem") and entry[3:].isdigit():
                    found.setdefault(entry, address)
        return found

    async def _payload_max(self, parent: Parent) -> int:
        """A CXL memdev's mailbox payload size (``sys/bus/cxl/devices/mem<M>/payload_max``)."""
        if not parent.name.startswith("mem") or "/" in parent.name:
            return 0
        path = f"{uapi.CXL_BUS_DEVICES}/{parent.name}/{uapi.CXL_PAYLOAD_MAX_ATTR}"
        if not await self.ctx.provider.exists(path):
            return 0
        try:
            value = int((await self.ctx.provider.read_attr(path)).strip())
        except ValueError:
            return 0
        return value if 0 < value <= uapi.MAX_RPC_LEN else 0

    async def _pci_vendor(self, pci_base: str) -> int:
        path = f"{pci_base}/vendor"
        if not await self.ctx.provider.exists(path):
            return 0
        try:
            return int(await self.ctx.provider.read_attr(path), 16)
        except ValueError:
            return 0

    async def _query_info(self, handle: Handle) -> tuple[int, bytes]:
        """FWCTL_INFO with a buffer (a zero length would return nothing)."""
        length = _INFO_PROBE_LEN
        while True:
            arg = uapi.pack_info(length)
            buffer = bytearray(length)
            await handle.ioctl(uapi.FWCTL_INFO, arg, pointers={uapi.FWCTL_INFO_DATA_PTR: buffer})
            device_type, data_len = struct.unpack_from("<II", arg, 8)
            if data_len <= length or length >= uapi.MAX_RPC_LEN:
                return device_type, bytes(buffer[: min(data_len, length)])
            length = data_len

    async def _send(self, handle: Handle, scope: Scope, request: bytes, size: int) -> bytes:
        arg = uapi.pack_rpc(scope, len(request), size)
        inbuf, outbuf = bytearray(request), bytearray(size)
        await handle.ioctl(
            uapi.FWCTL_RPC,
            arg,
            pointers={uapi.FWCTL_RPC_IN_PTR: inbuf, uapi.FWCTL_RPC_OUT_PTR: outbuf},
        )
        (out_len,) = struct.unpack_from("<I", arg, 12)
        return bytes(outbuf[: min(out_len, size)])

    async def _read_features(self, handle: Handle) -> tuple[uapi.CxlFeatureEntry, ...]:
        """Get Supported Features, paged, at the configuration scope."""
        head = await self._send(
            handle, Scope.CONFIGURATION, uapi.pack_get_supported_features(0, 0), 16
        )
        total = uapi.unpack_supported_features(head).supported
        entries: list[uapi.CxlFeatureEntry] = []
        while len(entries) < total:
            count = min(_FEATURES_PER_PAGE, total - len(entries))
            size = uapi.CXL_RPC_OUT_SIZE + uapi.CXL_GET_SUP_OUT_SIZE
            size += count * uapi.CXL_FEAT_ENTRY_SIZE
            request = uapi.pack_get_supported_features(
                count * uapi.CXL_FEAT_ENTRY_SIZE, len(entries)
            )
            page = uapi.unpack_supported_features(
                await self._send(handle, Scope.CONFIGURATION, request, size)
            )
            if not page.entries:
                break
            entries.extend(page.entries)
        return tuple(entries)

    async def _add(self, node: str) -> None:
        if node in self._devices:
            return
        provider = self.ctx.provider
        base = f"{uapi.FWCTL_CLASS}/{node}"
        if not await provider.is_dir(base):
            return
        uevent = await self._read_uevent(f"{base}/{uapi.ATTR_UEVENT}")
        devname = uevent.get("DEVNAME", f"fwctl/{node}")
        if devname != f"fwctl/{node}":
            self.ctx.log.warning("fwctl_unexpected_devname", node=node, devname=devname)
        parent = await self._parent(base)
        try:
            handle = await provider.open(f"{uapi.FWCTL_DEV_DIR}/{node}", OpenFlags.RDWR)
        except KernelError as error:
            self.ctx.log.warning("fwctl_open_failed", node=node, error=error.message)
            return
        try:
            device_type, data = await self._query_info(handle)
            features: tuple[uapi.CxlFeatureEntry, ...] = ()
            mailbox_payload = 0
            if device_type == uapi.DeviceType.CXL:
                features = await self._read_features(handle)
                mailbox_payload = await self._payload_max(parent)
        except (KernelError, ValueError) as error:
            self.ctx.log.warning("fwctl_query_failed", node=node, error=str(error))
            return
        finally:
            await handle.close()
        type_name = uapi.device_type_name(device_type)
        label = _TYPE_LABELS.get(type_name, f"fwctl {type_name}")
        where = parent.pci_address or node
        if type_name == "cxl" and parent.name:
            name = f"{label} memory device {parent.name} at {where}"
        else:
            name = f"{label} device at {where}" + (
                f" ({parent.pci_driver})" if parent.pci_driver else ""
            )
        physical_id = f"{type_name}@{parent.pci_address}" if parent.pci_address else node
        device = FwctlDevice(
            self,
            node,
            physical_id,
            name=name,
            vendor=_PCI_VENDORS.get(parent.vendor_id, ""),
            device_type=device_type,
            device_data=data,
            parent=parent,
            features=features,
            mailbox_payload=mailbox_payload,
        )
        if device.id in self._ids:
            self.ctx.log.warning("fwctl_duplicate_device", node=node, physical_id=physical_id)
            return
        self._devices[node] = device
        self._ids[device.id] = node
        self.ctx.add_device(device)
        self.ctx.log.info(
            "fwctl_device_added", node=node, type=type_name, parent=parent.name, pci=where
        )

    def _remove(self, node: str) -> None:
        device = self._devices.pop(node, None)
        if device is not None:
            self._ids.pop(device.id, None)
        if device is not None:
            device.removed = True
            self.ctx.remove_device(device.id)
            self.ctx.log.info("fwctl_device_removed", node=node, device_id=device.id)

    # ------------------------------------------------------------------ RPC

    async def tainted(self) -> bool:
        """Whether the kernel carries TAINT_FWCTL (``/proc/sys/kernel/tainted``)."""
        provider = self.ctx.provider
        if not await provider.exists(uapi.TAINTED_PATH):
            return False
        try:
            value = int((await provider.read_attr(uapi.TAINTED_PATH)).strip() or "0")
        except ValueError:
            return False
        return bool(value & uapi.TAINT_FWCTL)

    def check_rpc(
        self,
        device: FwctlDevice,
        scope: Scope,
        request: bytes,
        options: RpcOptions,
        caller_uid: int = -1,
    ) -> RpcPlan:
        """Every check livefw makes before an RPC may reach the kernel (nothing is sent).

        A refusal is logged (``fwctl_rpc_refused``) with the caller's uid.

        Raises:
            NotFound: the device was removed.
            InvalidArgument: empty or oversized request, bad response size, malformed
                command, or a write scope for a command that needs only a read scope.
            PermissionDenied: the command needs a higher scope than asked for.
            NotSupported: a scope the configuration does not allow, or a CXL opcode the
                kernel does not carry.
        """
        try:
            return self._check(device, scope, request, options)
        except LivefwError as error:
            self.ctx.log.warning(
                "fwctl_rpc_refused",
                device_id=device.id,
                node=device.node,
                uid=caller_uid,
                scope=scope_name(scope),
                result=error.name,
                reason=error.message,
            )
            raise

    def _check(
        self, device: FwctlDevice, scope: Scope, request: bytes, options: RpcOptions
    ) -> RpcPlan:
        if device.removed:
            raise NotFound(f"{device.name} was removed; nothing was sent")
        config = self.config
        if not request:
            raise InvalidArgument("the request is empty")
        if len(request) > config.max_request_size:
            raise InvalidArgument(
                f"the request is {len(request)} bytes, over the limit of "
                f"{config.max_request_size} ([plugins.fwctl] max_request_size)"
            )
        size = options.response_size
        if size is None:
            size = config.default_response_size
        if not 1 <= size <= config.max_response_size:
            raise InvalidArgument(
                f"response-size must be 1..{config.max_response_size} "
                "([plugins.fwctl] max_response_size)"
            )
        if scope == Scope.DEBUG_WRITE_FULL and not config.allow_full_debug:
            raise NotSupported(
                "the debug-write-full scope is disabled; an administrator can enable it "
                "with [plugins.fwctl] allow_full_debug = true in livefw.conf"
            )
        if device.device_type in _POINTER_TYPES:
            raise NotSupported(
                f"{device.type_name} requests carry addresses in the caller's memory "
                f"({_POINTER_TYPES[device.device_type]}), which the kernel reads and writes "
                "in livefwd's address space; livefwd does not forward them"
            )
        if device.device_type == uapi.DeviceType.CXL:
            command, needed = self._check_cxl(device, request, size)
        elif device.device_type == uapi.DeviceType.MLX5:
            command, needed = self._check_mlx5(request, size, self.kernel_release)
        else:
            command, needed = "raw", None
            if scope in uapi.TAINTING_SCOPES and not config.allow_unknown_write:
                raise NotSupported(
                    f"livefw has no scope table for {device.type_name} devices, so write "
                    "scopes are refused; an administrator can allow them with "
                    "[plugins.fwctl] allow_unknown_write = true"
                )
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

    def _check_cxl(
        self, device: FwctlDevice, request: bytes, size: int
    ) -> tuple[str, Scope | None]:
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
        entry = next((f for f in device.features if f.uuid == feature_id), None)
        label = f"Set Feature {feature_id}"
        if entry is None:
            raise InvalidArgument(f"{device.name} has no feature {feature_id}")
        if not entry.changeable:
            owner = " (owned by the kernel)" if entry.name else ""
            raise PermissionDenied(f"feature {feature_id}{owner} cannot be changed by user space")
        needed = uapi.cxl_set_feature_min_scope(entry.effects)
        if needed is None:
            raise PermissionDenied(
                f"feature {feature_id} has effects 0x{entry.effects:04x} (background or "
                "reserved bits) that the kernel never allows from user space"
            )
        return label, needed

    @staticmethod
    def _check_mlx5(
        request: bytes, size: int, kernel_release: tuple[int, int] | None = None
    ) -> tuple[str, Scope | None]:
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

    async def rpc(
        self,
        device: FwctlDevice,
        scope: Scope,
        request: bytes,
        options: RpcOptions,
        caller_uid: int = -1,
    ) -> RpcResult:
        """Check, then send one RPC, serialized with the device's other RPCs.

        Raises:
            Everything :meth:`check_rpc` raises, before anything is sent; then
            NotFound (device removed), PermissionDenied (the kernel or driver refused:
            EBADMSG, EINVAL, EPERM, EACCES), InvalidArgument (EMSGSIZE, E2BIG),
            NotSupported (EOPNOTSUPP, ENOTTY), Busy (EAGAIN, EBUSY).
        """
        log = self.ctx.log.bind(
            device_id=device.id, node=device.node, uid=caller_uid, scope=scope_name(scope)
        )
        plan = self.check_rpc(device, scope, request, options, caller_uid)
        async with device.lock:
            if device.removed:
                log.warning("fwctl_rpc_refused", command=plan.command, result="NotFound")
                raise NotFound(f"{device.name} was removed; nothing was sent")
            tainted_before = await self.tainted()
            try:
                response, out_len = await self._transact(device, plan, request)
            except KernelError as error:
                mapped = _map_rpc_error(device, plan, error)
                log.warning(
                    "fwctl_rpc_failed",
                    command=plan.command,
                    result=mapped.name,
                    errno=errno.errorcode.get(error.errno, str(error.errno)),
                )
                if not tainted_before and await self.tainted():
                    log.warning("fwctl_kernel_tainted", command=plan.command)
                raise mapped from error
            tainted = await self.tainted()
        info: dict[str, bool | int | str] = {
            "tainted": tainted,
            "response-length": out_len,
            "scope": scope_name(scope),
            "command": plan.command,
        }
        # mlx5ctl_fw_rpc never sets out_len: the kernel reports the buffer offered, and
        # the mlx5 output header carries no length, so the real one cannot be known.
        # The cxlctl_* handlers count sizeof(struct fwctl_rpc_cxl_out), 8 bytes more
        # than the reply; the reply's own size field gives its length (payload-length).
        info["response-length-exact"] = device.device_type not in (
            uapi.DeviceType.MLX5,
            uapi.DeviceType.CXL,
        )
        info.update(_device_status(device, response))
        if device.device_type == uapi.DeviceType.CXL:
            if plan.command.startswith("Set Feature"):
                device.mailbox_payload = await self._payload_max(device.parent)
            info.update(_set_feature_info(device, request))
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

    async def _transact(
        self, device: FwctlDevice, plan: RpcPlan, request: bytes
    ) -> tuple[bytes, int]:
        handle = await self.ctx.provider.open(device.devnode, OpenFlags.RDWR)
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


def _set_feature_info(device: FwctlDevice, request: bytes) -> dict[str, bool | int | str]:
    """How the kernel carried a CXL Set Feature (drivers/cxl/core/features.c).

    cxl_set_feature() always sets "saved across reset" and splits the data into
    mailbox-sized pieces (Full, or Initiate/Continue.../Finish) whatever the caller asked.
    """
    opcode, _flags, op_size, _ = struct.unpack_from(uapi.CXL_RPC_HDR_FMT, request)
    if opcode != uapi.CXL_MBOX_OP_SET_FEATURE:
        return {}
    info: dict[str, bool | int | str] = {"saved-across-reset": True}
    room = device.mailbox_payload - uapi.CXL_SET_FEAT_HDR_SIZE
    if device.mailbox_payload and room >= uapi.CXL_FEAT_DATA_MIN_PAYLOAD:
        data = op_size - uapi.CXL_SET_FEAT_HDR_SIZE
        info["mailbox-commands"] = 1 if data <= room else -(-data // room)
    return info


#: device types whose RPCs embed user-space addresses the kernel dereferences:
#: drivers/fwctl/pds/main.c pdsfc_fw_rpc (in.payload, out.payload) and
#: drivers/fwctl/bnxt/main.c bnxtctl_fw_rpc (the DMA address fields of many commands).
_POINTER_TYPES: dict[int, str] = {
    uapi.DeviceType.PDS: "fwctl_rpc_pds in.payload and out.payload",
    uapi.DeviceType.BNXT: "the host address fields of HWRM commands",
}


def _device_status(device: FwctlDevice, response: bytes) -> dict[str, int | str]:
    """Device-level status from the response (errors travel inside it, not as errnos)."""
    if device.device_type == uapi.DeviceType.CXL and len(response) >= uapi.CXL_RPC_OUT_SIZE:
        size, retval = struct.unpack_from(uapi.CXL_RPC_OUT_FMT, response)
        name = uapi.CXL_RETVAL_NAMES.get(retval, f"0x{retval:x}")
        return {"device-status": retval, "device-status-name": name, "payload-length": size}
    if device.device_type == uapi.DeviceType.MLX5 and len(response) >= uapi.MLX5_OUT_HDR_SIZE:
        status, syndrome = struct.unpack_from(uapi.MLX5_OUT_HDR_FMT, response)
        name = uapi.MLX5_STATUS_NAMES.get(status, f"0x{status:x}")
        return {"device-status": status, "device-status-name": name, "syndrome": syndrome}
    return {}


#: driver refusals: one error name whatever the driver's errno (README, Errors).
_REFUSALS = {
    errno.EBADMSG: "mlx5 does not allow this command at this scope",
    errno.EINVAL: "the driver refused the command (CXL: malformed or not allowed at this scope)",
    errno.EPERM: "not permitted (CXL: the kernel owns this feature; debug-write-full: "
    "livefwd lacks CAP_SYS_RAWIO; pds/bnxt: scope too low)",
    errno.EACCES: "the device node cannot be opened by livefwd",
}


def _map_rpc_error(device: FwctlDevice, plan: RpcPlan, error: KernelError) -> LivefwError:
    name = errno.errorcode.get(error.errno, str(error.errno))
    what = f"{plan.command} on {device.name} at scope {scope_name(plan.scope)}"
    if error.errno in (errno.ENODEV, errno.ENOENT, errno.ENXIO):
        return NotFound(f"{device.name} was removed ({name}); the RPC was not delivered")
    if error.errno in _REFUSALS:
        return PermissionDenied(f"the kernel refused {what}: {_REFUSALS[error.errno]} ({name})")
    if error.errno in (errno.EMSGSIZE, errno.E2BIG):
        return InvalidArgument(f"the kernel refused the sizes of {what} ({name})")
    if error.errno in (errno.EOPNOTSUPP, errno.ENOTTY):
        return NotSupported(f"the kernel does not support {what} ({name})")
    if error.errno in (errno.EAGAIN, errno.EBUSY):
        return Busy(f"{device.name} is busy ({name}); try again")
    return error
