"""Simulated fwctl: the core, the CXL and mlx5 drivers, and the device firmware.

The core follows drivers/fwctl/main.c (fwctl_fops_ioctl, fwctl_cmd_info,
fwctl_cmd_rpc), the drivers drivers/cxl/core/features.c (cxlctl_fw_rpc and the
cxlctl_* handlers, cxl_get_feature, cxl_set_feature) and drivers/fwctl/mlx5/main.c
(mlx5ctl_fw_rpc, mlx5ctl_validate_rpc). docs/kernel.md, section fwctl, lists each
behaviour with its first release.

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
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, cast

from pydantic import BaseModel, ConfigDict, Field

from livefw.errors import InvalidArgument, NotFound
from livefw.kernel.provider import OpenFlags, UEvent
from livefw.kernel.sim.machine import SimComponent, SimDevice, SimMachine
from livefw.kernel.sim.vfs import Attr, Device, Dir, SimHandle, fail
from livefw.kernel.uapi import fwctl as uapi

#: the fwctl char region is dynamic; a plausible major for the simulation.
FWCTL_MAJOR = 239
#: offset-end of the last field each ioctl knows (the kernel's min_size).
_MIN_SIZE = {uapi.FWCTL_CMD_INFO: uapi.FWCTL_INFO_SIZE, uapi.FWCTL_CMD_RPC: uapi.FWCTL_RPC_SIZE}
_REQUEST = {uapi.FWCTL_CMD_INFO: uapi.FWCTL_INFO, uapi.FWCTL_CMD_RPC: uapi.FWCTL_RPC}
#: device type of the "sample" node: the posted (unmerged) Rust sample driver uses 8,
#: which livefw must treat as an unknown device type.
SAMPLE_DEVICE_TYPE = 8

Kind = Literal["cxl", "mlx5", "pds", "sample"]
#: mailbox commands kept in FwctlComponent.mailbox_log.
_MAILBOX_LOG_MAX = 256


@dataclass(frozen=True)
class MailboxCommand:
    """One CXL mailbox command the simulated kernel sent to a device (for tests)."""

    minor: int
    opcode: int
    flags: int
    offset: int
    length: int
    retval: int


class CxlFeature(BaseModel):
    """One feature of the simulated CXL device (its firmware's view: true flags)."""

    model_config = ConfigDict(extra="forbid")

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


class FwctlNode(BaseModel):
    """A fwctl device with its parents and firmware state."""

    model_config = ConfigDict(extra="forbid")

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


class FwctlState(BaseModel):
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

    model_config = ConfigDict(extra="forbid")

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

    def __init__(self, machine: SimMachine, state: BaseModel) -> None:
        super().__init__(machine, state)
        #: identity of each registered node; old fds compare against it (ENODEV).
        self._alive: dict[int, object] = {}
        #: FWCTL_RPC ioctls that reached the core, per minor.
        self.rpc_counts: dict[int, int] = {}
        #: per-open firmware contexts (mlx5 UIDs) in use, per minor.
        self.open_uids: dict[int, set[int]] = {}
        #: CXL mailbox commands sent to the devices, oldest first (not persisted).
        self.mailbox_log: list[MailboxCommand] = []

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
            self.machine.changed()
        inbuf = pointers.get(uapi.FWCTL_RPC_IN_PTR)
        if inbuf is None or len(inbuf) < in_len:
            raise fail(errno.EFAULT, "ioctl", path, "in buffer")
        request = bytes(inbuf[:in_len])
        if node.kind == "mlx5":
            response, length = self._mlx5_rpc(handle, node, uapi.Scope(scope), request, out_len)
        elif node.kind == "cxl":
            reply = self._cxl_rpc(handle, node, uapi.Scope(scope), request, out_len)
            response, length = self._cxl_reply(reply)
        elif node.kind == "pds":
            # approximation: pdsfc_validate_rpc finds no endpoint in this firmware model
            raise fail(errno.EINVAL, "ioctl", path, "pds: no such endpoint")
        else:
            response, length = request, in_len  # the sample driver echoes
        if self.machine.take_fault(self.name, f"fwctl/fwctl{node.minor}", ("firmware-busy",)):
            response = self._busy_response(node, response)
            if node.kind == "cxl":
                response, length = self._cxl_reply(response)
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

    # ------------------------------------------------------------------ mlx5

    def _mlx5_allowed(self, opcode: int, op_mod: int, scope: uapi.Scope) -> bool:
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

    def _mlx5_rpc(
        self, handle: FwctlHandle, node: FwctlNode, scope: uapi.Scope, request: bytes, out_len: int
    ) -> tuple[bytes, int]:
        """mlx5ctl_fw_rpc: (output buffer, out_len).

        The driver never writes ``*out_len``, so the length fwctl_cmd_rpc reports is the
        caller's out_len whatever the command answered; the output buffer is that long
        (the command's output, then zeros). Firmware errors are ``-EREMOTEIO`` from
        mlx5_cmd_do(), which the driver turns into a successful ioctl with the status
        in the output header.
        """
        path = handle.path
        if len(request) < uapi.MLX5_IN_HDR_SIZE or out_len < uapi.MLX5_OUT_HDR_SIZE:
            raise fail(errno.EMSGSIZE, "ioctl", path, "mlx5: mailbox headers are 16 bytes")
        opcode, _uid, _, op_mod = struct.unpack_from(uapi.MLX5_IN_HDR_FMT, request)
        if not self._mlx5_allowed(opcode, op_mod, scope):
            raise fail(errno.EBADMSG, "ioctl", path, f"mlx5: opcode 0x{opcode:x} not allowed")
        body = request[uapi.MLX5_IN_HDR_SIZE :]
        status, syndrome, out = self._mlx5_firmware(node, opcode, op_mod, body, handle.uid)
        output = struct.pack(uapi.MLX5_OUT_HDR_FMT, status, syndrome) + out
        return (output + bytes(out_len))[:out_len], out_len

    def _mlx5_firmware(
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

    # ------------------------------------------------------------------- CXL

    @staticmethod
    def _feature(node: FwctlNode, raw_uuid: bytes) -> CxlFeature | None:
        text = str(uuid.UUID(bytes=raw_uuid))
        return next((f for f in node.features if f.uuid == text), None)

    @staticmethod
    def _cxl_reply(reply: bytes) -> tuple[bytes, int]:
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

    def _cxl_rpc(
        self, handle: FwctlHandle, node: FwctlNode, scope: uapi.Scope, request: bytes, out_len: int
    ) -> bytes:
        path = handle.path
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
        room = self.state.cxl_mbox_payload
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
        self.mailbox_log.append(
            MailboxCommand(
                minor=node.minor,
                opcode=opcode,
                flags=flags,
                offset=offset,
                length=length,
                retval=retval,
            )
        )
        del self.mailbox_log[:-_MAILBOX_LOG_MAX]

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
        room = self.state.cxl_mbox_payload - uapi.CXL_SET_FEAT_HDR_SIZE
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
        with self.machine.lock:
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
                self.machine.changed()

    @staticmethod
    def _commit(feature: CxlFeature, data: bytes, saved: bool) -> None:
        value = bytearray.fromhex(feature.current)
        value[: len(data)] = data
        feature.current = value.hex()
        if saved:
            feature.saved = feature.current

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
            self.state.present = True  # loading a driver loads fwctl.ko
            self.state.nodes.append(node)
            self._alive[minor] = object()
            self.machine.changed()
            self.machine.render()
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
            self.machine.changed()
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
        self.machine.changed()

    def is_alive(self, minor: int) -> bool:
        """Whether ``fwctl<minor>`` is registered (for tests)."""
        return minor in self._alive and self._node(minor) is not None


COMPONENT = FwctlComponent
