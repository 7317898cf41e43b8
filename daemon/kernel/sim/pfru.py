"""Simulated PFRU/PFRT: the firmware behind ``pfr_update`` and ``pfr_telemetry``.

The firmware checks what the kernel does not: the capsule's lengths (it reads
CapsuleImageSize bytes from its buffer), the platform id, the capsule's
(simulated) signature (livefw.kernel.sim.pfru_capsule) and its anti-rollback rule
(SVN for driver updates). It holds one staged capsule at a time (ACTIVATE takes no
update type), loses it at reboot, and appends to two telemetry ring buffers
(execution and history logs) while it stages and activates; every ``_DSM`` call
fails with EBUSY whenever its status is non-zero.

The kernel half (the drivers' write, ioctls and mmap, and the capsule walk of
``applicable_image()``) is livefw.kernel.sim.pfru_kernel; the state both keep in
machine.json is livefw.kernel.sim.pfru_model. This module also renders the nodes and
answers the ``livefw sim`` commands (devices, add/remove, set, sample).
"""

from __future__ import annotations

import errno
import hashlib

from livefw.errors import InvalidArgument
from livefw.kernel.provider import OpenFlags, UEvent
from livefw.kernel.sim.machine import SimComponent, SimDevice, SimMachine
from livefw.kernel.sim.pfru_capsule import SIM_SIGNATURE_MAGIC, build_capsule, sim_digest
from livefw.kernel.sim.pfru_kernel import TelemetryHandle, UpdateHandle, kernel_applicable_image
from livefw.kernel.sim.pfru_model import (
    KEY_CODE,
    KEY_DRIVER,
    KEY_TELEMETRY,
    KEY_UPDATE,
    ZERO_GUID,
    Capsule,
    PfruState,
    Ring,
)
from livefw.kernel.sim.vfs import Attr, Device, Dir, SimHandle, fail
from livefw.kernel.uapi import capsule
from livefw.kernel.uapi import pfru as uapi

#: misc major number and the minors the simulated nodes report.
_MISC_MAJOR = 10
_UPDATE_MINOR = 121
_TELEMETRY_MINOR = 122
_KEY_TYPES = {KEY_CODE: uapi.UpdateType.CODE_INJECTION, KEY_DRIVER: uapi.UpdateType.DRIVER_UPDATE}
_TYPE_KEYS = {value: key for key, value in _KEY_TYPES.items()}
_OTHER_PLATFORM = "0badc0de-0000-4000-8000-00000000beef"
_FOREIGN_IMAGE_TYPE = "11111111-2222-4333-8444-555555555555"
_LEVEL_NAMES = {0: "ERROR", 1: "WARN", 2: "INFO", 4: "VERBOSE"}


def _ring_key(log_type: int) -> str:
    return str(int(log_type))


class PfruComponent(SimComponent):
    """The PFRU update device, the PFRT telemetry device and the firmware behind them."""

    name = "pfru"
    order = 30
    state_model = PfruState
    state: PfruState
    FAULTS = {
        "busy": "every update _DSM call (capability, buffer, start) returns a non-zero "
        "status: EBUSY",
        "stage-fail": "the firmware fails the next STAGE (or STAGE_ACTIVATE): EBUSY",
        "activate-fail": "the firmware fails the next ACTIVATE (or the activation half of "
        "STAGE_ACTIVATE): EBUSY; the staged capsule stays staged",
        "telemetry-busy": "the telemetry _DSM returns a non-zero status: GET_DATA_INFO, "
        "mmap and SET_INFO (level) fail with EBUSY, GET_INFO reports -EBUSY as level",
        "mmap-memtype-conflict": "the next mmap of the telemetry buffer fails with EAGAIN: "
        "io_remap_pfn_range refuses the uncached mapping because the platform maps the "
        "same pages with another memory type (x86 PAT; seen on 7.2.13 in the VM lane)",
        "telemetry-reset": "the telemetry service resets before answering the next "
        "GET_DATA_INFO (reset_cnt increments, the log is cleared)",
        "append-race": "the firmware appends a record right after answering the next "
        "GET_DATA_INFO (a reader racing the firmware)",
    }
    BROKEN = {
        "truncated": "a valid capsule cut short (CapsuleImageSize beyond the file; the "
        "kernel accepts it, the firmware refuses to stage it)",
        "no-payload-count": "an FMP header with PayloadItemCount 0 and no ItemOffsetList, "
        "the image right after it (the kernel accepts it; livefw refuses it)",
        "image-past-end": "the FMP image header claims more bytes than the capsule holds "
        "(the kernel accepts it; livefw refuses it)",
        "header-v3": "FMP image header version 3, which the kernel refuses",
        "wrong-image-type": "an FMP image type that is neither code injection nor driver update",
        "other-platform": "built for another platform id (the kernel accepts it; the "
        "firmware refuses to stage it)",
        "too-large": "larger than the firmware's communication buffer (write: EINVAL)",
        "downgrade": "a version below the running one (anti-rollback)",
        "svn-downgrade": "driver update with a newer runtime version but an older SVN "
        "(passes pre-6.17 kernels, refused by 6.17+ and by the firmware)",
        "corrupt-auth": "a signed capsule modified after signing (the firmware refuses "
        "to stage it)",
        "not-a-capsule": "a text file",
    }

    def __init__(self, machine: SimMachine, state: PfruState) -> None:
        super().__init__(machine, state)
        #: live ring buffers: mmap views stay valid while the firmware appends.
        self._rings: dict[str, bytearray] = {}
        #: the communication buffer as far as writes reached (zeros beyond); immutable
        #: bytes, replaced by each write, so that views of it stay valid and a
        #: capsule written whole is kept, hashed and saved without a copy.
        self._comm = machine.blobs.unpack(state.comm_data)
        for log_type in uapi.LogType:
            key = _ring_key(log_type)
            ring = state.rings.get(key)
            if ring is None:
                ring = Ring(base=self._ring_base(log_type))
                state.rings[key] = ring
            buffer = bytearray(state.telemetry_size)
            raw = ring.data.encode("latin-1")[: state.telemetry_size]
            buffer[: len(raw)] = raw
            self._rings[key] = buffer
        if state.telemetry_started and state.sequence == 0:
            # a new machine: the firmware has logged its boot.
            self._log(uapi.LogLevel.INFO, "boot: runtime update service ready")
            self._log(
                uapi.LogLevel.INFO,
                f"boot: code injection rt {state.code_rt_version}, driver update rt "
                f"{state.drv_rt_version} svn {state.drv_svn}",
            )
            self._history("boot: platform firmware runtime update enabled")

    @staticmethod
    def _ring_base(log_type: int) -> int:
        # page-aligned physical addresses above 4 GiB so both halves of the lo/hi
        # pairs are exercised.
        return 0x1_7F00_0000 + int(log_type) * 0x10_0000

    # ------------------------------------------------------------------ profiles

    @classmethod
    def default_state(cls, profile: str, scale: int) -> PfruState:
        """The platform of ``profile``.

        default/scale: both update types, telemetry running, ``_DSM`` revisions 1 and
        2; minimal: code injection only, telemetry not started, revision 1 only; rfc:
        a pre-6.17 kernel (rt version gate); empty: no PFRU devices.
        """
        if profile == "empty":
            return PfruState(update_present=False, telemetry_present=False)
        state = PfruState()
        if profile == "minimal":
            state.update_max_revision = 1
            state.telemetry_max_revision = 1
            state.drv_type = ZERO_GUID
            state.drv_rt_version = 0
            state.drv_svn = 0
            state.telemetry_started = False
        if profile == "rfc":
            state.driver_gate = "rt"
        return state

    # ------------------------------------------------------------------ rendering

    def render(self, root: Dir) -> None:
        """The two device nodes and their misc-class directories."""
        dev = root.mkdirs("dev")
        if self.state.update_present:
            dev.children[uapi.UPDATE_NODE.split("/", 1)[1]] = Device(opener=self._open_update)
            self._misc(root, uapi.UPDATE_MISC, uapi.UPDATE_NODE, _UPDATE_MINOR)
        if self.state.telemetry_present:
            dev.children[uapi.TELEMETRY_NODE.split("/", 1)[1]] = Device(opener=self._open_telemetry)
            self._misc(root, uapi.TELEMETRY_MISC, uapi.TELEMETRY_NODE, _TELEMETRY_MINOR)

    @staticmethod
    def _misc(root: Dir, path: str, node: str, minor: int) -> None:
        folder = root.mkdirs(path)
        devname = node.split("/", 1)[1]
        folder.children["dev"] = Attr(read=lambda: f"{_MISC_MAJOR}:{minor}\n")
        folder.children["uevent"] = Attr(
            read=lambda: f"MAJOR={_MISC_MAJOR}\nMINOR={minor}\nDEVNAME={devname}\n"
        )

    def _open_update(self, path: str, flags: OpenFlags) -> SimHandle:
        return UpdateHandle(self, path)

    def _open_telemetry(self, path: str, flags: OpenFlags) -> SimHandle:
        return TelemetryHandle(self, path)

    # ------------------------------------------------------------------ firmware

    def cap_info(self) -> uapi.UpdateCapInfo:
        """``_DSM`` fn 1 (query capability) as the kernel copies it out."""
        state = self.state
        return uapi.UpdateCapInfo(
            status=int(uapi.DsmStatus.SUCCEED),
            update_cap=state.update_cap,
            code_type=state.code_type,
            fw_version=state.fw_version,
            code_rt_version=state.code_rt_version,
            drv_type=state.drv_type,
            drv_rt_version=state.drv_rt_version,
            drv_svn=state.drv_svn,
            platform_id=state.platform_id,
            oem_id=state.oem_id,
            oem_info_len=state.oem_info_len,
        )

    def driver_gate(self) -> str:
        """The driver-update version gate of the simulated kernel.

        drivers/acpi/pfr_update.c ``applicable_image()`` compares ``svn_ver`` with
        ``drv_svn`` since "ACPI: pfr_update: Fix the driver update version check"
        (6.17) and ``rt_ver`` with ``drv_rt_version`` before. The fix went to stable
        kernels too, so ``state.driver_gate`` can pin either for any release.
        """
        if self.state.driver_gate:
            return self.state.driver_gate
        return "svn" if self.machine.kernel_at_least("6.17") else "rt"

    def update_dsm_check(self, op: str, path: str) -> None:
        """An update ``_DSM`` call at the device's revision (``pfru_dev->rev_id``).

        pfr_update.c ``query_capability()``, ``query_buffer()``, ``start_update()``:
        ``acpi_evaluate_dsm_typed()`` returns no package when the firmware does not
        implement the revision, and the driver answers EINVAL.
        """
        if self.state.rev_id > self.state.update_max_revision:
            raise fail(
                errno.EINVAL,
                op,
                path,
                f"_DSM revision {self.state.rev_id} not implemented by the firmware",
            )

    def telemetry_dsm_ok(self) -> bool:
        """Whether the firmware implements the telemetry ``_DSM`` at the log revision.

        pfr_telemetry.c: every ``_DSM`` call passes ``info.log_revid``; without a
        package the driver answers EINVAL.
        """
        return self.state.log_revid <= self.state.telemetry_max_revision

    def dsm_fault(self, target: str, *kinds: str) -> str | None:
        """Consume an armed fault of ``kinds`` for ``target`` (or any target)."""
        return self.machine.take_fault(self.name, target, kinds)

    def load(self, data: bytes, path: str) -> int:
        """pfru_write(): buffer query, size check, copy, capability query, the walk.

        drivers/acpi/pfr_update.c ``pfru_write()``: EINVAL when ``len`` exceeds the
        buffer; the bytes are copied to the start of the communication buffer (what
        lies beyond them stays); then ``applicable_image()`` walks the buffer without
        any bounds (see :func:`kernel_applicable_image`) and EINVAL is returned only
        for an unknown image type, an image header version other than 1 or 2, or a
        version below the running one.
        """
        state = self.state
        self.update_dsm_check("write", path)
        if self.dsm_fault(KEY_UPDATE, "busy"):
            raise fail(errno.EBUSY, "write", path, "_DSM query buffer: status RETRY_SUGGESTED")
        if len(data) > state.comm_buf_size:
            raise fail(
                errno.EINVAL,
                "write",
                path,
                f"{len(data)} bytes > communication buffer of {state.comm_buf_size}",
            )
        # the bytes reach the buffer before the kernel looks at them (one copy, the
        # kernel's memcpy; none when they are already immutable bytes and cover it)
        if len(data) >= len(self._comm):
            self._comm = data if type(data) is bytes else bytes(data)
        else:
            self._comm = b"".join((data, memoryview(self._comm)[len(data) :]))
        state.comm_data = self.machine.blobs.pack(self._comm, durable=False)  # memory
        state.buffer = self._inspect()
        self._log(uapi.LogLevel.VERBOSE, f"comm buffer: {len(data)} bytes loaded")
        self.machine.changed(self.name)
        problem = kernel_applicable_image(self._comm_read, self.cap_info(), self.driver_gate())
        if problem:
            raise fail(errno.EINVAL, "write", path, problem)
        return len(data)

    def _comm_read(self, offset: int, size: int) -> bytes:
        """``size`` bytes of the communication buffer at ``offset``.

        Bytes never written read as zero. The kernel reads past the mapped buffer
        when a capsule's fields point there (whatever memory follows, or a fault);
        the simulation reads zeros there too.
        """
        limit = min(len(self._comm), self.state.comm_buf_size)
        start, end = max(offset, 0), min(offset + size, limit)
        if start == offset and end - start == size:
            return self._comm[start:end]
        out = bytearray(size)
        if start < end:
            out[start - offset : end - offset] = memoryview(self._comm)[start:end]
        return bytes(out)

    def _inspect(self) -> Capsule:
        """The firmware's view: the capsule its header describes, read from the buffer.

        The firmware is not told how many bytes were written; it takes
        CapsuleImageSize from the header (bounded by its buffer) and checks
        everything (lengths, signature, platform) itself when asked to stage.
        """
        head = self._comm_read(0, capsule.CAPSULE_HEADER.size)
        image_size = min(capsule.CAPSULE_HEADER.unpack(head)[3], self.state.comm_buf_size)
        if image_size <= len(self._comm):
            data: bytes | memoryview = memoryview(self._comm)[:image_size]  # no copy
        else:
            data = self._comm_read(0, image_size)  # zeros past what was written
        try:
            walked = uapi.walk_capsule(data)
        except capsule.CapsuleError as error:
            digest = hashlib.sha256(data).hexdigest()
            return Capsule(size=len(data), sha256=digest, well_formed=False, problem=str(error))
        payload = walked.payload
        # one pass: the digest the signature is checked against is the one recorded
        # (a second SHA-256 of the whole buffer cost as much as the signature check)
        signed = sim_digest(
            walked.auth.monotonic_count, data[walked.payload_offset : walked.image_end]
        )
        return Capsule(
            size=len(data),
            sha256=signed.hex(),
            well_formed=True,
            update_type=int(walked.update_type),
            rt_ver=payload.rt_ver,
            svn_ver=payload.svn_ver,
            hw_ver=payload.hw_ver,
            platform_id=payload.platform_id,
            signature_ok=walked.auth.cert_data == SIM_SIGNATURE_MAGIC + signed,
        )

    def start_update(self, action: uapi.StartAction, path: str) -> None:
        """``_DSM`` fn 3 with ``action``: the firmware stages and/or activates."""
        op = {
            uapi.StartAction.STAGE: "PFRU_IOC_STAGE",
            uapi.StartAction.ACTIVATE: "PFRU_IOC_ACTIVATE",
            uapi.StartAction.STAGE_ACTIVATE: "PFRU_IOC_STAGE_ACTIVATE",
        }[action]
        self.update_dsm_check("ioctl", path)
        if self.dsm_fault(KEY_UPDATE, "busy"):
            raise fail(errno.EBUSY, "ioctl", path, f"{op}: status RETRY_SUGGESTED")
        if action in (uapi.StartAction.STAGE, uapi.StartAction.STAGE_ACTIVATE):
            self._stage(path, op)
        if action in (uapi.StartAction.ACTIVATE, uapi.StartAction.STAGE_ACTIVATE):
            self._activate(path, op)

    def _stage(self, path: str, op: str) -> None:
        state = self.state
        buffer = state.buffer
        target = KEY_UPDATE
        if buffer is not None and buffer.well_formed:
            target = _TYPE_KEYS[uapi.UpdateType(buffer.update_type)]
        problem = ""
        if self.dsm_fault(target, "stage-fail"):
            problem = "firmware stage failed (HARDWARE_ERR)"
        elif buffer is None:
            problem = "nothing in the communication buffer (INVAL_INPUT)"
        elif not buffer.well_formed:
            problem = f"the buffer holds no valid capsule: {buffer.problem} (INVAL_INPUT)"
        elif not buffer.signature_ok:
            problem = "capsule authentication failed (FUNC_SPEC_ERR)"
        elif buffer.platform_id != state.platform_id:
            problem = f"capsule is for platform {buffer.platform_id} (INVAL_INPUT)"
        elif not self._newer_or_same(buffer):
            problem = "anti-rollback: capsule version below the running one (FUNC_SPEC_ERR)"
        if problem:
            self._log(uapi.LogLevel.ERROR, f"stage: {problem}")
            self._history(f"stage refused: {problem}")
            self.machine.changed(self.name)
            raise fail(errno.EBUSY, "ioctl", path, f"{op}: {problem}")
        assert buffer is not None
        kind = uapi.UpdateType(buffer.update_type).name.lower().replace("_", "-")
        self._log(uapi.LogLevel.INFO, f"stage: authenticating {kind} capsule, {buffer.size} bytes")
        self._log(
            uapi.LogLevel.VERBOSE, f"stage: sha256 {buffer.sha256[:16]}, svn {buffer.svn_ver}"
        )
        self._log(uapi.LogLevel.INFO, f"stage: {kind} runtime version {buffer.rt_ver} staged")
        state.staged = buffer.model_copy()
        self.machine.changed(self.name)

    def _newer_or_same(self, buffer: Capsule) -> bool:
        if buffer.update_type == uapi.UpdateType.CODE_INJECTION:
            return buffer.rt_ver >= self.state.code_rt_version
        return buffer.svn_ver >= self.state.drv_svn

    def _activate(self, path: str, op: str) -> None:
        state = self.state
        staged = state.staged
        target = _TYPE_KEYS[uapi.UpdateType(staged.update_type)] if staged else KEY_UPDATE
        if staged is None:
            self._log(uapi.LogLevel.ERROR, "activate: nothing staged")
            self.machine.changed(self.name)
            raise fail(errno.EBUSY, "ioctl", path, f"{op}: nothing staged (INVAL_INPUT)")
        kind = uapi.UpdateType(staged.update_type).name.lower().replace("_", "-")
        if self.dsm_fault(target, "activate-fail"):
            self._log(uapi.LogLevel.ERROR, f"activate: {kind} activation failed, rolled back")
            self._history(f"activate {kind} {staged.rt_ver}: failed (HARDWARE_ERR)")
            self.machine.changed(self.name)
            raise fail(errno.EBUSY, "ioctl", path, f"{op}: activation failed (HARDWARE_ERR)")
        if staged.update_type == uapi.UpdateType.CODE_INJECTION:
            old = state.code_rt_version
            state.code_rt_version = staged.rt_ver
        else:
            old = state.drv_svn
            state.drv_rt_version = staged.rt_ver
            state.drv_svn = staged.svn_ver
        state.staged = None
        state.activations += 1
        self._log(uapi.LogLevel.INFO, f"activate: quiescing, switching {kind} runtime image")
        self._log(
            uapi.LogLevel.VERBOSE, f"activate: auth 812 us, exec {350 + staged.size // 1024} us"
        )
        self._log(uapi.LogLevel.INFO, f"activate: {kind} now runtime version {staged.rt_ver}")
        new = (
            staged.rt_ver
            if staged.update_type == uapi.UpdateType.CODE_INJECTION
            else staged.svn_ver
        )
        self._history(f"activate {kind}: {old} -> {new}: success")
        self.machine.changed(self.name)

    # ----------------------------------------------------------------- telemetry

    def _ring(self, log_type: int) -> tuple[Ring, bytearray]:
        key = _ring_key(log_type)
        return self.state.rings[key], self._rings[key]

    def _append(self, log_type: int, text: str) -> None:
        """The firmware writes a record into a ring buffer (wrapping at its end)."""
        state = self.state
        if not state.telemetry_present:
            return
        state.telemetry_started = True
        ring, buffer = self._ring(log_type)
        data = text.encode("latin-1", "replace")
        size = len(buffer)
        for byte_index in range(0, len(data), size):
            chunk = data[byte_index : byte_index + size]
            first = min(len(chunk), size - ring.head)
            buffer[ring.head : ring.head + first] = chunk[:first]
            rest = chunk[first:]
            if rest:
                buffer[: len(rest)] = rest
            new_head = ring.head + len(chunk)
            if new_head >= size:
                ring.rollover += 1
            ring.head = new_head % size
        ring.data = buffer.decode("latin-1")

    def _log(self, level: int, message: str) -> None:
        """An execution-log record, kept when ``level`` is within the configured level."""
        if int(level) > self.state.log_level:
            return
        self.state.sequence += 1
        name = _LEVEL_NAMES.get(int(level), str(int(level)))
        self._append(uapi.LogType.EXECUTION, f"[{self.state.sequence:06d}] {name:<7} {message}\n")

    def _history(self, message: str) -> None:
        """A history-log record (update outcomes; not filtered by level)."""
        self.state.sequence += 1
        self._append(uapi.LogType.HISTORY, f"[{self.state.sequence:06d}] {message}\n")

    def reset_telemetry(self) -> None:
        """The telemetry service restarts: counters and buffers are cleared."""
        self.state.reset_cnt += 1
        for log_type in uapi.LogType:
            ring, buffer = self._ring(log_type)
            buffer[:] = bytes(len(buffer))
            ring.head = 0
            ring.rollover = 0
            ring.data = buffer.decode("latin-1")
        self._log(uapi.LogLevel.INFO, f"telemetry service restarted (reset {self.state.reset_cnt})")

    def data_info(self, log_type: int) -> uapi.LogDataInfo:
        """``_DSM`` fn 3 of the telemetry device for ``log_type``."""
        state = self.state
        if not state.telemetry_started:
            return uapi.LogDataInfo(0, 0, 0, 0, 0, 0, 0, 0, state.reset_cnt)
        ring, buffer = self._ring(log_type)
        size = len(buffer)
        if ring.rollover == 0:
            chunk1_addr, chunk1_size = 0, 0
        else:
            chunk1_addr, chunk1_size = ring.base + ring.head, size - ring.head
        return uapi.LogDataInfo(
            status=int(uapi.DsmStatus.SUCCEED),
            ext_status=0,
            chunk1_addr=chunk1_addr,
            chunk2_addr=ring.base,
            max_data_size=size,
            chunk1_size=chunk1_size,
            chunk2_size=ring.head,
            rollover_cnt=ring.rollover,
            reset_cnt=state.reset_cnt,
        )

    def mapping(self, log_type: int) -> memoryview:
        """The live buffer the driver maps (starting at chunk2's address)."""
        return memoryview(self._ring(log_type)[1])

    def append_record(self, message: str) -> None:
        """Append one execution-log record now (``append-race`` and tests)."""
        self._log(uapi.LogLevel.ERROR, message)

    # -------------------------------------------------------------- sim commands

    def devices(self) -> list[SimDevice]:
        """The update types the firmware reports, and the telemetry device."""
        state = self.state
        found: list[SimDevice] = []
        if state.update_present:
            if state.code_type != ZERO_GUID:
                found.append(
                    SimDevice(
                        KEY_CODE,
                        "PFRU code injection",
                        self.name,
                        f"runtime version {state.code_rt_version}"
                        + (", staged" if _staged_type(state) == 1 else ""),
                    )
                )
            if state.drv_type != ZERO_GUID:
                found.append(
                    SimDevice(
                        KEY_DRIVER,
                        "PFRU driver update",
                        self.name,
                        f"runtime version {state.drv_rt_version}, svn {state.drv_svn}"
                        + (", staged" if _staged_type(state) == 2 else ""),
                    )
                )
        if state.telemetry_present:
            data = self.data_info(state.log_type)
            found.append(
                SimDevice(
                    KEY_TELEMETRY,
                    "PFRT telemetry",
                    self.name,
                    f"level {state.log_level}, {data.chunk1_size + data.chunk2_size} bytes, "
                    f"rollover {data.rollover_cnt}, reset {data.reset_cnt}",
                )
            )
        return found

    def add_device(self, options: dict[str, str]) -> SimDevice:
        """Bind a driver again (``livefw sim add pfru device=update|telemetry``)."""
        which = options.get("device", "update")
        if which not in ("update", "telemetry"):
            raise InvalidArgument("pfru devices to add: device=update or device=telemetry")
        field = f"{which}_present"
        with self.machine.lock:
            if getattr(self.state, field):
                raise InvalidArgument(f"the PFRU {which} device is already present")
            setattr(self.state, field, True)
            self.machine.changed(self.name)
            self.machine.render()
        self._uevent("add", which)
        key = KEY_TELEMETRY if which == "telemetry" else KEY_CODE
        return next((device for device in self.devices() if device.key == key), self.devices()[0])

    def remove_device(self, key: str) -> None:
        """Unbind a driver: the telemetry node, or the update node (both update types)."""
        which = "telemetry" if key == KEY_TELEMETRY else "update"
        with self.machine.lock:
            setattr(self.state, f"{which}_present", False)
            if which == "update":
                self.state.staged = None
                self.state.buffer = None
                self.state.comm_data = ""
                self._comm = b""
            self.machine.changed(self.name)
            self.machine.render()
        self._uevent("remove", which)

    def _uevent(self, action: str, which: str) -> None:
        if which == "telemetry":
            devpath, node = uapi.TELEMETRY_DEVPATH, uapi.TELEMETRY_NODE
        else:
            devpath, node = uapi.UPDATE_DEVPATH, uapi.UPDATE_NODE
        self.machine.emit(UEvent(action, devpath, "misc", {"DEVNAME": node.removeprefix("dev/")}))

    def configure(self, key: str, value: str) -> None:
        """``livefw sim set pfru KEY VALUE``: firmware values; re-render nodes."""
        if key == "driver_gate" and value not in ("svn", "rt", ""):
            raise InvalidArgument(
                'pfru.driver_gate must be svn (6.17+), rt (older kernels) or "" (follow '
                "the simulated kernel release)"
            )
        if key == "telemetry_size":
            raise InvalidArgument("pfru.telemetry_size is fixed when the machine is created")
        super().configure(key, value)
        self.machine.render()

    def sample(self, key: str, version: str | None, broken: str | None) -> bytes:
        """A capsule for the code-injection or driver-update device."""
        update_type = _KEY_TYPES.get(key)
        if update_type is None:
            raise InvalidArgument(
                f"PFRU samples are for pfru/code-injection or pfru/driver-update, not {key}"
            )
        state = self.state
        if update_type == uapi.UpdateType.CODE_INJECTION:
            current_rt, current_svn = state.code_rt_version, 0
        else:
            current_rt, current_svn = state.drv_rt_version, state.drv_svn
        current = current_rt if update_type == uapi.UpdateType.CODE_INJECTION else current_svn
        if version is None:
            target = current + 1
        else:
            try:
                target = int(version, 0)
            except ValueError as error:
                raise InvalidArgument(f"PFRU versions are integers, not {version!r}") from error
            if not 0 <= target < 1 << 32:
                raise InvalidArgument(f"PFRU version {target} is out of range (u32)")
        if update_type == uapi.UpdateType.CODE_INJECTION:
            rt_ver, svn_ver = target, 0
        else:
            # the SVN is the version; the runtime version moves along with it.
            rt_ver, svn_ver = max(current_rt + target - current_svn, 0), target
        if broken == "downgrade":
            if current == 0:
                raise InvalidArgument("the running version is 0: nothing is older")
            if update_type == uapi.UpdateType.CODE_INJECTION:
                rt_ver = current - 1
            else:
                rt_ver, svn_ver = max(current_rt - 1, 0), current - 1
        if broken == "svn-downgrade":
            if update_type != uapi.UpdateType.DRIVER_UPDATE or current_svn == 0:
                raise InvalidArgument("svn-downgrade needs the driver-update device with svn > 0")
            rt_ver, svn_ver = current_rt + 1, current_svn - 1
        if broken == "not-a-capsule":
            return b"This is not a firmware capsule.\n" * 8
        platform = _OTHER_PLATFORM if broken == "other-platform" else state.platform_id
        image_type = (
            _FOREIGN_IMAGE_TYPE if broken == "wrong-image-type" else uapi.IMAGE_TYPES[update_type]
        )
        filler = 1024
        if broken == "too-large":
            filler = state.comm_buf_size + uapi.PAGE_SIZE
        data = build_capsule(
            image_type=image_type,
            rt_ver=rt_ver,
            svn_ver=svn_ver,
            platform_id=platform,
            header_version=3 if broken == "header-v3" else 2,
            body_size=filler,
            no_payload_count=broken == "no-payload-count",
            image_size_extra=4096 if broken == "image-past-end" else 0,
        )
        if broken == "corrupt-auth":
            corrupted = bytearray(data)
            corrupted[-1] ^= 0xFF
            data = bytes(corrupted)
        if broken == "truncated":
            data = data[: len(data) * 2 // 3]
        return data

    # --------------------------------------------------------------- life cycle

    def on_reboot(self) -> None:
        """Reboot: firmware runtime memory and driver state start over.

        The buffer and the staged capsule go; the drivers start over (revision 1, log
        type 0); the telemetry service restarts.
        """
        state = self.state
        state.buffer = None
        state.comm_data = ""
        self._comm = b""
        if state.staged is not None:
            self._history("reboot: staged capsule discarded")
        state.staged = None
        state.rev_id = uapi.DEFAULT_REVID
        state.log_type = int(uapi.LogType.EXECUTION)
        state.log_revid = uapi.DEFAULT_REVID
        if state.telemetry_started:
            self.reset_telemetry()
            self._log(uapi.LogLevel.INFO, "boot: runtime update service ready")
        self.machine.changed(self.name)


def _staged_type(state: PfruState) -> int:
    return state.staged.update_type if state.staged else 0


COMPONENT = PfruComponent
