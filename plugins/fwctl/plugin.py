"""fwctl discovery: one device per ``/sys/class/fwctl/fwctl<N>`` node.

The plugin finds the nodes (coldplug, refresh, uevents), reads each one's FWCTL_INFO,
parent and (CXL) feature list, and creates a
:class:`~livefw.plugins.fwctl.device.FwctlDevice` with the plugin's one
:class:`~livefw.plugins.fwctl.context.FwctlContext`. The devices are not updatable;
they carry the ``org.livefw.Daemon1.Fwctl`` interface, and their RPCs are device
operations (plugins/fwctl/device.py).
"""

from __future__ import annotations

import struct

from livefw.errors import KernelError
from livefw.kernel import Handle, OpenFlags, UEvent
from livefw.kernel.uapi import fwctl as uapi
from livefw.kernel.uapi.fwctl import Scope
from livefw.plugin import Plugin, PluginContext, Probe, UEventMatch
from livefw.plugins.fwctl.context import FwctlConfig, FwctlContext
from livefw.plugins.fwctl.device import FwctlDevice, Parent

#: FWCTL_INFO is asked with this buffer first: drivers/fwctl/main.c fwctl_cmd_info
#: copies nothing for a zero device_data_len (docs/kernel.md, fwctl).
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


def _parse_uevent(text: str) -> dict[str, str]:
    result = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            result[key.strip()] = value.strip()
    return result


class FwctlPlugin(Plugin):
    """Devices from ``/sys/class/fwctl``; RPCs through ``/dev/fwctl/fwctl<N>``."""

    name = "fwctl"
    #: /sys/class/fwctl appears with fwctl.ko (drivers/fwctl/main.c ``fwctl_init()``
    #: registers the class; kernel/module/main.c ``do_init_module()`` sends the
    #: module's ``add``, SUBSYSTEM=module, DEVPATH=/module/fwctl, once its init
    #: returned); its devices with a driver binding (``fwctl_register()`` ->
    #: cdev_device_add(): ``add`` with SUBSYSTEM=fwctl). docs/kernel.md, Uevents.
    probe_uevents = (
        UEventMatch(subsystem="module", devpath=f"module/{uapi.FWCTL_MODULE}"),
        UEventMatch(subsystem=uapi.FWCTL_SUBSYSTEM),
    )

    def __init__(self, ctx: PluginContext) -> None:
        super().__init__(ctx)
        #: what every device gets instead of the plugin (raises ConfigError first)
        self.device_ctx = FwctlContext(ctx, FwctlConfig.parse(ctx.config))
        self._devices: dict[str, FwctlDevice] = {}
        #: device id -> node, so a duplicate is found without a scan of every device
        #: (that scan made probing quadratic: minutes at 10,000 devices; bench/scale.py)
        self._ids: dict[str, str] = {}
        #: CXL memdev name -> the PCI function holding it (see _pci_function_holding).
        self._memdev_pci: dict[str, str] = {}
        #: the pass over the nodes in progress, and the one that last scanned memdevs
        self._pass = 0
        self._memdev_scanned = -1

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
        self.device_ctx.kernel_release = release
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
                mailbox_payload = await self.device_ctx.payload_max(parent.name)
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
            self.device_ctx,
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
        self.ctx.log.debug(
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
