"""Simulated fwctl: the core, the sysfs layout, and the dispatch to the drivers.

The core follows drivers/fwctl/main.c (fwctl_fops_ioctl, fwctl_cmd_info,
fwctl_cmd_rpc); the drivers and device firmware live next to it: fwctl_cxl.py
(drivers/cxl/core/features.c: cxlctl_fw_rpc and the cxlctl_* handlers,
cxl_get_feature, cxl_set_feature) and fwctl_mlx5.py (drivers/fwctl/mlx5/main.c:
mlx5ctl_fw_rpc, mlx5ctl_validate_rpc); fwctl_model.py holds the persisted state.
docs/kernel.md, section fwctl, lists each behaviour with its first release.

Rendered tree, for each node ``fwctl<N>`` (the parent is what the driver passes to
fwctl_alloc_device())::

    sys/devices/pci0000:00/<bdf>/                  PCI function: uevent, vendor, device
    sys/devices/pci0000:00/<bdf>/mem<M>/           CXL memdev: the CXL node's parent
    .../mem<M>/fwctl/fwctl<N>/{dev,uevent,device}  CXL class device (cxlmd->dev parent)
    sys/devices/pci0000:00/<bdf>/fwctl/fwctl<N>/   mlx5 class device: the PCI function
                                                   is the parent (mdev->pdev->dev)
    sys/devices/pci0000:00/<bdf>/mlx5_core.fwctl.<M>/  the auxiliary device mlx5_fwctl
                                                   binds to (no fwctl child)
    sys/class/fwctl/fwctl<N>                       the same directory as the class device
    sys/bus/cxl/devices/mem<M>, sys/bus/pci/devices/<bdf>, sys/bus/auxiliary/devices/...
    dev/fwctl/fwctl<N>                             the character device
    proc/sys/kernel/{tainted,osrelease}

The VFS has no symlinks: ``device`` inside a class device is rendered as a read-only
*copy of the parent's attributes*, never as the parent directory itself, so the tree
stays acyclic. As on a real kernel only class devices have a ``device`` link: a CXL
memdev (a bus device) has none, so the PCI function of a memdev is found through
``sys/bus/pci/devices/<bdf>/mem<M>``, not through ``device/device``.

On kernels before 6.15 (``machine.kernel_at_least("6.15")`` false) there is no fwctl
at all: no class, no nodes. The core enforces the generic ioctl rules (size/zero tail,
flags, 2 MiB, scopes, CAP_SYS_RAWIO, the once-per-boot TAINT_FWCTL set before the driver
looks at the command, ENODEV on old fds after hot-unplug); the drivers enforce their
scope tables with their own errnos (mlx5 EBADMSG, CXL EINVAL/EPERM) and report
device-level failures only inside the response. Per-open firmware contexts (mlx5 UIDs)
are freed on close. ``rpc_counts`` counts every FWCTL_RPC ioctl that reached the core,
so tests can prove that the daemon refused a request without sending it;
``mailbox_log`` records every CXL mailbox command the simulated kernel sent to the
device, so tests can see how cxl_set_feature() split a Set Feature.
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Callable, Mapping
from typing import cast

from livefw.errors import InvalidArgument, NotFound
from livefw.kernel.provider import OpenFlags, UEvent
from livefw.kernel.sim.fwctl_cxl import CxlFeaturesSim
from livefw.kernel.sim.fwctl_mlx5 import Mlx5Sim
from livefw.kernel.sim.fwctl_model import (
    FwctlNode,
    FwctlState,
    Kind,
    MailboxCommand,
    default_cxl_features,
)
from livefw.kernel.sim.machine import SimComponent, SimDevice, SimMachine
from livefw.kernel.sim.vfs import Attr, Device, Dir, SimHandle, fail
from livefw.kernel.uapi import fwctl as uapi
from livefw.model import Model

#: the fwctl char region is dynamic; a plausible major for the simulation.
FWCTL_MAJOR = 239
#: offset-end of the last field each ioctl knows (the kernel's min_size).
_MIN_SIZE = {uapi.FWCTL_CMD_INFO: uapi.FWCTL_INFO_SIZE, uapi.FWCTL_CMD_RPC: uapi.FWCTL_RPC_SIZE}
_REQUEST = {uapi.FWCTL_CMD_INFO: uapi.FWCTL_INFO, uapi.FWCTL_CMD_RPC: uapi.FWCTL_RPC}
#: device type of the "sample" node: the posted (unmerged) Rust sample driver uses 8,
#: which livefw must treat as an unknown device type.
SAMPLE_DEVICE_TYPE = 8

#: the PCI function behind each simulated node kind: vendor, device, driver.
_NODE_KINDS: dict[Kind, tuple[int, int, str]] = {
    "cxl": (0x8086, 0x0D93, "cxl_pci"),
    "mlx5": (0x15B3, 0x101D, "mlx5_core"),
    "pds": (0x1DD8, 0x1002, "pds_core"),
    "sample": (0x1AF4, 0x10F0, "fwctl_sample"),
}


def _make_node(kind: Kind, minor: int, index: int, pci: str) -> FwctlNode:
    """A node of ``kind`` (a key of _NODE_KINDS); CXL nodes carry the default features."""
    vendor, device, driver = _NODE_KINDS[kind]
    return FwctlNode(
        minor=minor,
        kind=kind,
        pci=pci,
        pci_vendor=vendor,
        pci_device=device,
        pci_driver=driver,
        parent_index=index,
        features=default_cxl_features() if kind == "cxl" else [],
    )


class FwctlHandle(SimHandle):
    """An open ``/dev/fwctl/fwctl<N>`` (a ``struct fwctl_uctx``)."""

    def __init__(self, component: FwctlComponent, path: str, minor: int, token: object) -> None:
        super().__init__(path)
        self.component = component
        self.minor = minor
        self.token = token
        #: mlx5 firmware UID allocated for this open file (0 for other drivers).
        self.uid = 0

    def do_ioctl(
        self, request: int, arg: bytearray | None, pointers: Mapping[int, bytearray]
    ) -> int:
        """FWCTL_INFO / FWCTL_RPC through the component."""
        return self.component.ioctl(self, request, arg, pointers)

    def do_close(self) -> None:
        """Free the per-open context."""
        self.component.release(self)


class FwctlComponent(SimComponent):
    """fwctl core, drivers and device firmware."""

    name = "fwctl"
    order = 60
    state_model = FwctlState
    state: FwctlState
    FAULTS = {
        "firmware-busy": "the device answers the next RPC with a busy status inside the "
        "response (CXL retval BUSY, mlx5 status BAD_SYS_STATE); the ioctl succeeds",
    }

    def __init__(self, machine: SimMachine, state: Model) -> None:
        super().__init__(machine, state)
        #: identity of each registered node; old fds compare against it (ENODEV).
        self._alive: dict[int, object] = {}
        #: FWCTL_RPC ioctls that reached the core, per minor.
        self.rpc_counts: dict[int, int] = {}
        #: per-open firmware contexts (mlx5 UIDs) in use, per minor.
        self.open_uids: dict[int, set[int]] = {}
        #: CXL mailbox commands sent to the devices, oldest first (not persisted).
        self.mailbox_log: list[MailboxCommand] = []
        #: the drivers' simulations (drivers/cxl/core/features.c, drivers/fwctl/mlx5)
        self.cxl = CxlFeaturesSim(self)
        self.mlx5 = Mlx5Sim(machine)

    # ----------------------------------------------------------------- profiles

    @classmethod
    def default_state(cls, profile: str, scale: int) -> FwctlState:
        """default/rfc: a CXL memdev and an mlx5 function; minimal: CXL only."""
        if profile == "empty":
            return FwctlState(present=False)
        nodes = [_make_node("cxl", 0, 0, "0000:0d:00.0")]
        if profile != "minimal":
            nodes.append(_make_node("mlx5", 1, 0, "0000:08:00.0"))
        if profile == "scale":
            for index in range(scale):
                minor = len(nodes)
                pci = f"{1 + index // 256:04x}:{index % 256:02x}:00.0"
                nodes.append(_make_node("cxl", minor, index + 1, pci))
        return FwctlState(nodes=nodes)

    # ---------------------------------------------------------------- rendering

    def _node(self, minor: int) -> FwctlNode | None:
        """The node of ``minor``, from an index rebuilt when the node list changes.

        A linear search per lookup made rendering and probing quadratic in the node
        count (minutes at 10,000 simulated devices; bench/scale.py). The list is only
        appended to or replaced, so its identity and length say when to rebuild.
        """
        nodes = self.state.nodes
        cached = getattr(self, "_index", None)
        if cached is None or cached[0] is not nodes or cached[1] != len(nodes):
            cached = (nodes, len(nodes), {node.minor: node for node in reversed(nodes)})
            self._index = cached
        found: FwctlNode | None = cached[2].get(minor)
        return found

    @staticmethod
    def _visible(node: FwctlNode) -> bool:
        """The CXL driver registers fwctl only with >= 1 feature user space may use."""
        if node.kind != "cxl":
            return True
        return any(f.uuid not in uapi.CXL_KERNEL_FEATURES for f in node.features)

    @staticmethod
    def _parent_name(node: FwctlNode) -> str:
        """The device fwctl_alloc_device() gets as parent.

        The memdev for CXL (drivers/cxl/core/features.c devm_cxl_setup_fwctl: &cxlmd->dev), the PCI
        function for mlx5 (drivers/fwctl/mlx5/main.c mlx5ctl_probe: &mdev->pdev->dev),
        as for pds and bnxt.
        """
        if node.kind == "cxl":
            return f"mem{node.parent_index}"
        return node.pci

    def devpath(self, node: FwctlNode) -> str:
        """The class device's kobject path below /sys (what uevents carry)."""
        base = f"devices/pci0000:00/{node.pci}"
        if node.kind == "cxl":
            base += "/" + self._parent_name(node)
        return f"{base}/fwctl/fwctl{node.minor}"

    def _pci_attrs(self, node: FwctlNode) -> dict[str, Attr]:
        uevent = (
            f"DRIVER={node.pci_driver}\nPCI_ID={node.pci_vendor:04X}:{node.pci_device:04X}\n"
            f"PCI_SLOT_NAME={node.pci}\n"
            f"MODALIAS=pci:v{node.pci_vendor:08X}d{node.pci_device:08X}\n"
        )
        return {
            "uevent": Attr(read=lambda: uevent),
            "vendor": Attr(read=lambda: f"0x{node.pci_vendor:04x}\n"),
            "device": Attr(read=lambda: f"0x{node.pci_device:04x}\n"),
        }

    def _memdev_attrs(self, node: FwctlNode) -> dict[str, Attr | Dir]:
        """A CXL memdev: a bus device, so no ``device`` link (only class devices have one).

        ``payload_max`` is the mailbox payload size (drivers/cxl/core/memdev.c).
        """
        index = node.parent_index
        uevent = (
            f"MAJOR=250\nMINOR={index}\nDEVNAME=cxl/mem{index}\n"
            "DEVTYPE=cxl_memdev\nDRIVER=cxl_mem\nMODALIAS=cxl:t5\n"
        )
        return {
            "uevent": Attr(read=lambda: uevent),
            uapi.CXL_PAYLOAD_MAX_ATTR: Attr(read=lambda: f"{self.state.cxl_mbox_payload}\n"),
        }

    def render(self, root: Dir) -> None:
        """proc/sys/kernel/{tainted,osrelease}, the class, the parents and the nodes."""
        kernel = root.mkdirs("proc/sys/kernel")
        kernel.children["tainted"] = Attr(
            read=lambda: f"{uapi.TAINT_FWCTL if self.state.tainted else 0}\n"
        )
        if "osrelease" not in kernel.children:
            release = f"{self.machine.state.kernel}.0-livefw-sim\n"
            kernel.children["osrelease"] = Attr(read=lambda: release)
        if not self.present():
            return
        class_dir = root.mkdirs(uapi.FWCTL_CLASS)
        dev_dir = root.mkdirs(uapi.FWCTL_DEV_DIR)
        for node in self.state.nodes:
            if not self._visible(node):
                continue
            self._alive.setdefault(node.minor, object())
            pci_attrs = self._pci_attrs(node)
            pci_dir = root.mkdirs(f"sys/devices/pci0000:00/{node.pci}")
            pci_dir.children.update(pci_attrs)
            root.mkdirs("sys/bus/pci/devices").children[node.pci] = pci_dir
            if node.kind == "cxl":
                memdev_attrs = self._memdev_attrs(node)
                parent_dir = pci_dir.mkdirs(self._parent_name(node))
                parent_dir.children.update(memdev_attrs)
                parent_view = Dir(children=dict(memdev_attrs))
                root.mkdirs("sys/bus/cxl/devices").children[self._parent_name(node)] = parent_dir
            else:
                parent_dir, parent_view = pci_dir, Dir(children=dict(pci_attrs))
            if node.kind == "mlx5":
                # the auxiliary device mlx5_core creates for mlx5_fwctl to bind to
                aux_name = f"mlx5_core.fwctl.{node.parent_index}"
                aux = pci_dir.mkdirs(aux_name)
                aux.children["uevent"] = Attr(
                    read=lambda: "DRIVER=mlx5_fwctl\nMODALIAS=auxiliary:mlx5_core.fwctl\n"
                )
                root.mkdirs("sys/bus/auxiliary/devices").children[aux_name] = aux
            cls = parent_dir.mkdirs(f"fwctl/fwctl{node.minor}")
            cls.children.update(self._class_attrs(node.minor))
            cls.children[uapi.LINK_DEVICE] = parent_view
            class_dir.children[f"fwctl{node.minor}"] = cls
            dev_dir.children[f"fwctl{node.minor}"] = Device(opener=self._opener(node.minor))

    def present(self) -> bool:
        """fwctl.ko is loaded and the kernel has fwctl at all (drivers/fwctl/main.c: 6.15)."""
        return self.state.present and self.machine.kernel_at_least("6.15")

    @staticmethod
    def _class_attrs(minor: int) -> dict[str, Attr]:
        dev = f"{FWCTL_MAJOR}:{minor}\n"
        uevent = f"MAJOR={FWCTL_MAJOR}\nMINOR={minor}\nDEVNAME=fwctl/fwctl{minor}\n"
        return {uapi.ATTR_DEV: Attr(read=lambda: dev), uapi.ATTR_UEVENT: Attr(read=lambda: uevent)}

    def _opener(self, minor: int) -> Callable[[str, OpenFlags], SimHandle]:
        def opener(path: str, flags: OpenFlags) -> SimHandle:
            return self.open(path, flags, minor)

        return opener

    # ------------------------------------------------------------- open/close

    def open(self, path: str, flags: OpenFlags, minor: int) -> FwctlHandle:
        """fwctl_fops_open: allocate the driver's per-open context."""
        with self.machine.lock:
            node = self._node(minor)
            token = self._alive.get(minor)
            if node is None or token is None:
                raise fail(errno.ENODEV, "open", path)
            handle = FwctlHandle(self, path, minor, token)
            if node.kind == "mlx5":
                used = self.open_uids.setdefault(minor, set())
                if len(used) >= self.state.mlx5_max_uids:
                    handle.close_fd()
                    # the firmware answers NO_RESOURCES, which mlx5 maps to EAGAIN
                    raise fail(errno.EAGAIN, "open", path, "mlx5: no free UID")
                uid = next(i for i in range(1, len(used) + 2) if i not in used)
                used.add(uid)
                handle.uid = uid
            return handle

    def release(self, handle: FwctlHandle) -> None:
        """fwctl_fops_release: free the per-open context (mlx5: destroy the UID)."""
        with self.machine.lock:
            if handle.uid:
                self.open_uids.get(handle.minor, set()).discard(handle.uid)
                handle.uid = 0

    # ------------------------------------------------------------------ ioctl

    def ioctl(
        self,
        handle: FwctlHandle,
        request: int,
        arg: bytearray | None,
        pointers: Mapping[int, bytearray],
    ) -> int:
        """fwctl_fops_ioctl: generic dispatch, then FWCTL_INFO or FWCTL_RPC."""
        path = handle.path
        nr = request & 0xFF
        if (request >> 8) & 0xFF != uapi.FWCTL_TYPE or _REQUEST.get(nr) != request:
            raise fail(errno.ENOTTY, "ioctl", path)
        if nr == uapi.FWCTL_CMD_RPC:
            self.rpc_counts[handle.minor] = self.rpc_counts.get(handle.minor, 0) + 1
        if arg is None or len(arg) < 4:
            raise fail(errno.EFAULT, "ioctl", path)
        (user_size,) = struct.unpack_from("<I", arg)
        if user_size > len(arg):
            raise fail(errno.EFAULT, "ioctl", path, "size exceeds the buffer")
        kernel_size = _MIN_SIZE[nr]
        if user_size < kernel_size:
            raise fail(errno.EINVAL, "ioctl", path, f"size {user_size} < {kernel_size}")
        if any(arg[kernel_size:user_size]):
            raise fail(errno.E2BIG, "ioctl", path, "non-zero bytes past the known struct")
        node = self._node(handle.minor)
        if node is None or self._alive.get(handle.minor) is not handle.token:
            raise fail(errno.ENODEV, "ioctl", path, "device was unplugged")
        if nr == uapi.FWCTL_CMD_INFO:
            return self._info(handle, node, arg, pointers)
        return self._rpc(handle, node, arg, pointers)

    def _info(
        self,
        handle: FwctlHandle,
        node: FwctlNode,
        arg: bytearray,
        pointers: Mapping[int, bytearray],
    ) -> int:
        """fwctl_cmd_info (drivers/fwctl/main.c).

        Flags must be 0 (EOPNOTSUPP). With ``device_data_len`` 0 nothing is copied and 0
        is returned; otherwise the buffer gets the driver's info, zero-padded (all
        zeros when the driver has no info op), and the driver's length comes back.
        """
        _size, flags, _, data_len, _ = struct.unpack_from(uapi.FWCTL_INFO_FMT, arg)
        if flags:
            raise fail(errno.EOPNOTSUPP, "ioctl", handle.path, "fwctl_info.flags must be 0")
        out_len = 0
        if data_len:
            buf = pointers.get(uapi.FWCTL_INFO_DATA_PTR)
            if buf is None or len(buf) < data_len:
                raise fail(errno.EFAULT, "ioctl", handle.path, "out_device_data")
            driver = self._driver_info(handle, node)
            buf[:data_len] = (driver + bytes(data_len))[:data_len]
            out_len = len(driver)
        struct.pack_into("<II", arg, 8, self._device_type(node), out_len)
        return 0

    @staticmethod
    def _device_type(node: FwctlNode) -> int:
        if node.kind == "cxl":
            return int(uapi.DeviceType.CXL)
        if node.kind == "mlx5":
            return int(uapi.DeviceType.MLX5)
        if node.kind == "pds":
            return int(uapi.DeviceType.PDS)
        return SAMPLE_DEVICE_TYPE

    @staticmethod
    def _driver_info(handle: FwctlHandle, node: FwctlNode) -> bytes:
        if node.kind == "mlx5":
            return struct.pack(uapi.MLX5_INFO_FMT, handle.uid, uapi.MLX5_UCTX_CAP_TOOLS_RESOURCES)
        if node.kind == "sample":
            return b"SIMSAMPL"
        # CXL has no info op (the core zero-fills); pdsfc_info (drivers/fwctl/pds/main.c)
        # never sets *length, so the kernel reports 0 bytes of pds info
        return b""

    def _rpc(
        self,
        handle: FwctlHandle,
        node: FwctlNode,
        arg: bytearray,
        pointers: Mapping[int, bytearray],
    ) -> int:
        """fwctl_cmd_rpc (drivers/fwctl/main.c), then the driver's fw_rpc.

        Lengths over 2 MiB EMSGSIZE; unknown scope EOPNOTSUPP; scope 3 without
        CAP_SYS_RAWIO EPERM; scopes 2 and 3 set TAINT_FWCTL (once) before the driver
        runs. The driver returns a buffer and an out_len; the core copies
        min(caller's out_len, driver's out_len) and reports the driver's out_len.
        """
        path = handle.path
        _size, scope, in_len, out_len, _in, _out = struct.unpack_from(uapi.FWCTL_RPC_FMT, arg)
        if in_len > uapi.MAX_RPC_LEN or out_len > uapi.MAX_RPC_LEN:
            raise fail(errno.EMSGSIZE, "ioctl", path, "in_len/out_len over 2 MiB")
        if scope not in (0, 1, 2, 3):
            raise fail(errno.EOPNOTSUPP, "ioctl", path, f"unknown scope {scope}")
        if scope == uapi.Scope.DEBUG_WRITE_FULL and not self.state.daemon_has_rawio:
            raise fail(errno.EPERM, "ioctl", path, "scope 3 needs CAP_SYS_RAWIO")
        if scope >= uapi.Scope.DEBUG_WRITE and not self.state.tainted:
            # main.c taints before the driver looks at the command
            self.state.tainted = True
            self.machine.changed(self.name)
        inbuf = pointers.get(uapi.FWCTL_RPC_IN_PTR)
        if inbuf is None or len(inbuf) < in_len:
            raise fail(errno.EFAULT, "ioctl", path, "in buffer")
        request = bytes(inbuf[:in_len])
        if node.kind == "mlx5":
            response, length = self.mlx5.rpc(
                path, handle.uid, node, uapi.Scope(scope), request, out_len
            )
        elif node.kind == "cxl":
            reply = self.cxl.rpc(path, node, uapi.Scope(scope), request, out_len)
            response, length = self.cxl.reply(reply)
        elif node.kind == "pds":
            # approximation: pdsfc_validate_rpc finds no endpoint in this firmware model
            raise fail(errno.EINVAL, "ioctl", path, "pds: no such endpoint")
        else:
            response, length = request, in_len  # the sample driver echoes
        if self.machine.take_fault(self.name, f"fwctl/fwctl{node.minor}", ("firmware-busy",)):
            response = self._busy_response(node, response)
            if node.kind == "cxl":
                response, length = self.cxl.reply(response)
            elif node.kind != "mlx5":
                length = len(response)
        # fwctl_cmd_rpc: copy min(cmd->out_len, out_len), then report the driver's out_len
        copy = min(out_len, length, len(response))
        if copy:
            outbuf = pointers.get(uapi.FWCTL_RPC_OUT_PTR)
            if outbuf is None or len(outbuf) < copy:
                raise fail(errno.EFAULT, "ioctl", path, "out buffer")
            outbuf[:copy] = response[:copy]
        struct.pack_into("<I", arg, 12, length)
        return 0

    @staticmethod
    def _busy_response(node: FwctlNode, response: bytes) -> bytes:
        """What a busy device answers (checks passed; the firmware could not run it)."""
        if node.kind == "cxl":
            return struct.pack(uapi.CXL_RPC_OUT_FMT, 0, uapi.CXL_MBOX_CMD_RC_BUSY)
        if node.kind == "mlx5":
            busy = struct.pack(uapi.MLX5_OUT_HDR_FMT, uapi.MLX5_CMD_STAT_BAD_SYS_STATE_ERR, 0x5B)
            return busy + bytes(max(0, len(response) - len(busy)))
        return response

    # ------------------------------------------------------------ sim commands

    def devices(self) -> list[SimDevice]:
        """One device per fwctl node."""
        result = []
        for node in self.state.nodes:
            if node.kind == "cxl":
                name = f"CXL memory device mem{node.parent_index}"
                extra = f"{len(node.features)} features"
            elif node.kind == "mlx5":
                name = f"mlx5 function {node.pci}"
                extra = f"{len(self.open_uids.get(node.minor, ()))} UIDs in use"
            elif node.kind == "pds":
                name = f"pds function {node.pci}"
                extra = "no endpoints"
            else:
                name = f"fwctl sample {node.pci}"
                extra = f"device type {SAMPLE_DEVICE_TYPE}"
            rpcs = self.rpc_counts.get(node.minor, 0)
            result.append(
                SimDevice(
                    key=f"fwctl/fwctl{node.minor}",
                    name=name,
                    component=self.name,
                    summary=f"{node.pci}, {extra}, {rpcs} RPCs"
                    + (", kernel tainted (fwctl)" if self.state.tainted else ""),
                )
            )
        return result

    def add_device(self, options: dict[str, str]) -> SimDevice:
        """Hot-add a node: ``type`` cxl (default), mlx5, pds or sample; optional ``pci``."""
        if not self.machine.kernel_at_least("6.15"):
            raise InvalidArgument(
                f"the simulated kernel {self.machine.state.kernel} has no fwctl (Linux 6.15+)"
            )
        kind = cast("Kind", options.get("type", "cxl"))
        if kind not in _NODE_KINDS:
            raise InvalidArgument(f"fwctl type must be one of {sorted(_NODE_KINDS)}, not {kind!r}")
        with self.machine.lock:
            used = {node.minor for node in self.state.nodes}
            minor = next(i for i in range(len(used) + 1) if i not in used)
            same = [n.parent_index for n in self.state.nodes if n.kind == kind]
            index = max(same, default=-1) + 1
            pci = options.get("pci") or f"0000:{0x40 + minor:02x}:00.0"
            if any(node.pci == pci for node in self.state.nodes):
                raise InvalidArgument(f"a simulated fwctl device already sits at {pci}")
            node = _make_node(kind, minor, index, pci)
            loaded = not self.state.present
            self.state.present = True  # loading a driver loads fwctl.ko
            self.state.nodes.append(node)
            self._alive[minor] = object()
            self.machine.changed(self.name)
            self.machine.render()
        if loaded:
            # kernel/module/main.c do_init_module(): the module's add, after its init
            # registered the class (drivers/fwctl/main.c fwctl_init())
            self.machine.emit(UEvent("add", f"module/{uapi.FWCTL_MODULE}", "module"))
        self.machine.emit(self._uevent("add", node))
        return next(d for d in self.devices() if d.key == f"fwctl/fwctl{minor}")

    def remove_device(self, key: str) -> None:
        """Hot-remove a node and its parents; open fds then get ENODEV."""
        try:
            minor = int(key.removeprefix("fwctl/fwctl"))
        except ValueError:
            raise NotFound(f"no simulated fwctl device {key!r}") from None
        with self.machine.lock:
            node = self._node(minor)
            if node is None:
                raise NotFound(f"no simulated fwctl device {key!r}")
            self.state.nodes = [n for n in self.state.nodes if n.minor != minor]
            self._alive.pop(minor, None)
            self.open_uids.pop(minor, None)
            self.machine.changed(self.name)
            self.machine.render()
        self.machine.emit(self._uevent("remove", node))

    def _uevent(self, action: str, node: FwctlNode) -> UEvent:
        return UEvent(
            action,
            self.devpath(node),
            uapi.FWCTL_SUBSYSTEM,
            {
                "MAJOR": str(FWCTL_MAJOR),
                "MINOR": str(node.minor),
                "DEVNAME": f"fwctl/fwctl{node.minor}",
            },
        )

    def configure(self, key: str, value: str) -> None:
        """``livefw sim set fwctl KEY VALUE``; re-render (``present`` changes the tree)."""
        super().configure(key, value)
        self.machine.render()

    def on_reboot(self) -> None:
        """A new boot: no taint, no feature transfers in progress."""
        self._reset_boot()

    def on_kexec(self) -> None:
        """A new kernel: taint flags start clear; device firmware keeps its state."""
        self.state.tainted = False

    def _reset_boot(self) -> None:
        self.state.tainted = False
        for node in self.state.nodes:
            node.transfers.clear()
        self.machine.changed(self.name)

    def is_alive(self, minor: int) -> bool:
        """Whether ``fwctl<minor>`` is registered (for tests)."""
        return minor in self._alive and self._node(minor) is not None


COMPONENT = FwctlComponent
