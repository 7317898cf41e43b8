"""The simulated machine: kernel interfaces and the firmware behind them.

A :class:`SimMachine` holds one :class:`SimComponent` per technology (each in its own
module of this package, found by :func:`component_classes`), a boot id, a fault
table and a uevent fan-out. Its whole state lives in ``<dir>/machine.json`` so that a
simulated reboot or kexec can happen between two daemon processes, and so that
``livefw sim`` can edit it while no daemon runs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import importlib
import json
import os
import pkgutil
import re
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from livefw.errors import InvalidArgument, NotFound, NotSupported
from livefw.kernel.provider import WRITE_CHUNK, MountEntry, UEvent
from livefw.kernel.sim.vfs import Attr, Dir, File, SimHandle
from livefw.model import Field, Model

__all__ = [
    "BlobStore",
    "FaultSpec",
    "SimComponent",
    "SimDevice",
    "SimMachine",
    "component_classes",
]

STATE_FILE = "machine.json"
SCHEMA_VERSION = 1
#: where large simulated file contents live, one file each (see :class:`BlobStore`).
BLOB_DIR = "blobs"
#: contents up to this size stay inline in machine.json (base64); larger ones are blobs.
INLINE_MAX = 64 * 1024
#: how a blob reference looks in machine.json (base64 text never contains ``:``).
BLOB_PREFIX = "blob:"
_BLOB_REF = re.compile(r"blob:([0-9a-f]{32})")
_BLOB_REF_BYTES = re.compile(rb"blob:([0-9a-f]{32})")


def _write_chunks(fd: int, chunks: list[bytes]) -> None:
    """Write ``chunks`` in order with as few system calls as the kernel allows."""
    views = [memoryview(chunk) for chunk in chunks if chunk]
    while views:
        done = os.writev(fd, views)
        while done:
            if done >= len(views[0]):
                done -= len(views.pop(0))
            else:
                views[0] = views[0][done:]
                done = 0


#: the kernel release a new simulated machine models unless told otherwise
#: (``livefw sim init --kernel``, ``livefwd --sim-kernel``): the newest one whose
#: behaviour docs/kernel.md records.
DEFAULT_KERNEL = "7.2"
#: the SMBIOS strings the simulated firmware publishes (/sys/class/dmi/id).
SIM_DMI = {
    "sys_vendor": "livefw",
    "product_name": "Simulated machine",
    "product_family": "livefw simulator",
    "product_sku": "LIVEFW-SIM",
    "bios_vendor": "livefw",
    "bios_version": "1.0.0",
    "bios_release": "1.0",
    "board_vendor": "livefw",
    "board_name": "Simulated board",
    "chassis_type": "1",
}
#: the oldest kernel release the simulator can model (Debian 12 ships 6.1).
OLDEST_KERNEL = "6.1"


def parse_kernel_version(text: str) -> tuple[int, int]:
    """``"6.19"`` (or ``"6.19.3"``, ``"6.19-rc1"``) -> ``(6, 19)``.

    Raises:
        InvalidArgument: not a ``MAJOR.MINOR`` kernel release, or older than
            :data:`OLDEST_KERNEL`.
    """
    match = re.fullmatch(r"(\d{1,2})\.(\d{1,3})(?:[.-][0-9A-Za-z.+-]*)?", text.strip())
    if match is None:
        raise InvalidArgument(f"kernel version {text!r} is not MAJOR.MINOR (e.g. 6.19)")
    version = (int(match.group(1)), int(match.group(2)))
    oldest = tuple(int(part) for part in OLDEST_KERNEL.split("."))
    if version < oldest:
        raise InvalidArgument(
            f"kernel version {text!r} is older than {OLDEST_KERNEL}, "
            "the oldest the simulator models"
        )
    return version


#: modules of this package that are framework, not technologies.
_FRAMEWORK_MODULES = {"vfs", "machine", "provider", "control"}


class FaultSpec(Model, extra="forbid"):
    """A fault armed in the simulated firmware or kernel.

    Attributes:
        component: technology name (``lfa``, ``pfru`` ...).
        target: the sim device key it applies to, or ``*`` for any.
        kind: one of the component's ``FAULTS``.
        count: how many times it fires; -1 for every time.
    """

    component: str
    target: str = "*"
    kind: str
    count: int = 1


@dataclass(frozen=True)
class SimDevice:
    """A device of the simulated machine as ``livefw sim devices`` lists it."""

    key: str
    name: str
    component: str
    summary: str = ""


class MachineState(Model, extra="forbid"):
    """What machine.json holds besides the components' own sections."""

    schema_version: int = SCHEMA_VERSION
    profile: str = "default"
    #: the kernel release whose behaviour the simulated kernel follows (MAJOR.MINOR).
    kernel: str = DEFAULT_KERNEL
    boot_id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    boots: int = 1
    faults: list[FaultSpec] = Field(default_factory=list)
    components: dict[str, Any] = Field(default_factory=dict)
    #: /etc/machine-id (systemd's machine-id(5): 32 lowercase hex digits).
    machine_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    #: security/lockdown/lockdown.c: the mode /sys/kernel/security/lockdown marks.
    lockdown: str = "none"


class SimComponent(ABC):
    """One technology of the simulated machine (kernel driver plus firmware).

    A component renders its interfaces into the machine's VFS in :meth:`render`,
    keeps its state as a livefw.model record in ``self.state`` (persisted by the machine),
    and reacts to reboot and kexec. Mutations must happen under ``machine.lock`` and
    end with ``machine.changed()`` so the state is saved.

    Attributes:
        name: the technology name (``lfa``), also the key of its state section.
        order: render order among components.
        FAULTS: fault kinds this component can inject, with a description each.
        BROKEN: kinds of deliberately broken sample payloads, with descriptions.
    """

    name: ClassVar[str]
    order: ClassVar[int] = 50
    state_model: ClassVar[type[Model]]
    FAULTS: ClassVar[dict[str, str]] = {}
    BROKEN: ClassVar[dict[str, str]] = {}

    def __init__(self, machine: SimMachine, state: Model) -> None:
        self.machine = machine
        self.state = state

    def fault_problem(self, kind: str) -> str | None:
        """Why fault ``kind`` cannot happen on this machine's kernel, or None.

        A component overrides it for a fault whose kernel path a release removed, so
        that arming it fails instead of staying armed for ever.
        """
        del kind
        return None

    @classmethod
    @abstractmethod
    def default_state(cls, profile: str, scale: int) -> Model:
        """The component's state for a new machine of ``profile``.

        ``scale`` is the number of synthetic devices asked for by the ``scale``
        profile (load tests; not faithful to kernel limits).
        """

    @abstractmethod
    def render(self, root: Dir) -> None:
        """Add this component's sysfs/dev/efivarfs nodes to ``root``."""

    @abstractmethod
    def devices(self) -> list[SimDevice]:
        """The devices this component simulates."""

    def add_device(self, options: dict[str, str]) -> SimDevice:
        """Hot-add a device (``livefw sim add``); emits the ``add`` uevent the kernel would."""
        raise NotSupported(f"the simulated {self.name} component cannot add devices")

    def remove_device(self, key: str) -> None:
        """Hot-remove a device (``livefw sim remove``); emits the ``remove`` the kernel would."""
        raise NotSupported(f"the simulated {self.name} component cannot remove devices")

    def stage(self, key: str, options: dict[str, str]) -> str:
        """Make a new image pending out of band (e.g. a BMC dropping an image)."""
        raise NotSupported(f"{self.name} images are not staged out of band; use a payload")

    def sample(self, key: str, version: str | None, broken: str | None) -> bytes:
        """A payload for device ``key``: valid, or broken in the way ``broken`` names."""
        raise NotSupported(
            f"{self.name} devices take no payload file"
            + (": images arrive out of band, use `livefw sim stage`" if self.name == "lfa" else "")
        )

    def configure(self, key: str, value: str) -> None:
        """Set a knob of the simulated firmware (``livefw sim set``)."""
        fields = type(self.state).model_fields
        if key not in fields or fields[key].annotation not in (int, float, bool, str):
            knobs = [k for k, f in fields.items() if f.annotation in (int, float, bool, str)]
            raise InvalidArgument(f"{self.name} has no setting {key!r}; settings: {knobs}")
        annotation = fields[key].annotation
        try:
            parsed: Any
            if annotation is bool:
                parsed = value.lower() in ("1", "true", "yes", "on")
            else:
                parsed = annotation(value)
        except ValueError as error:
            raise InvalidArgument(f"{self.name}.{key}: {error}") from error
        setattr(self.state, key, parsed)

    def on_reboot(self) -> None:
        """Play the firmware's part at boot (e.g. apply staged capsules)."""

    def on_kexec(self) -> None:
        """Carry what survives a kexec (e.g. preserved live-update files)."""

    def on_start(self) -> None:
        """Called when a daemon process starts on this machine (kernel boot state)."""

    def restore_kernel_fds(self, fds: list[int]) -> list[int]:
        """Take back kernel objects a previous daemon process kept in the fd store.

        The simulated kernel lives inside livefwd, so objects that outlive the process
        in a real kernel (e.g. files held by a live-update session) travel through the
        service manager's fd store (see :meth:`SimHandle.kernel_fds`). Keep the fds
        that are this component's and return the others.
        """
        return fds

    def claim_fd(self, fd: int) -> SimHandle | None:
        """The open file an fd handed back from the fd store stands for, if it is ours."""
        return None


def _mkstemp(directory: str, prefix: str) -> tuple[int, str]:
    """A new file of ours (0600, O_EXCL, not followed if a link), as tempfile.mkstemp.

    tempfile (with shutil, random and the compression modules shutil imports) would
    be ~3 ms of every simulated start (issue 17 item 1, test_import_budget).
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    while True:
        path = os.path.join(directory, prefix + os.urandom(6).hex())
        try:
            return os.open(path, flags, 0o600), path
        except FileExistsError:
            continue


def component_classes() -> dict[str, type[SimComponent]]:
    """Every technology module of this package that defines ``COMPONENT``."""
    package = importlib.import_module("livefw.kernel.sim")
    found: dict[str, type[SimComponent]] = {}
    for info in pkgutil.iter_modules(package.__path__):
        if info.name in _FRAMEWORK_MODULES or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"livefw.kernel.sim.{info.name}")
        cls = getattr(module, "COMPONENT", None)
        if cls is not None:
            found[cls.name] = cls
    return dict(sorted(found.items(), key=lambda item: (item[1].order, item[0])))


class BlobStore:
    """Large contents of simulated files (ESP capsules, the PFRU buffer), written once.

    machine.json is rewritten (and fsynced) whenever the simulated kernel makes a
    change durable; carrying a 64 MiB capsule inside it as base64 made every such step
    cost seconds (bench/REPORT.md, staging). Contents over :data:`INLINE_MAX` are
    instead written once to ``<dir>/blobs/<id>`` (temp file, fsync unless it stands
    for memory, rename) before the state that refers to them (``"blob:<id>"``) is
    saved, and deleted after a save that no longer refers to them. A bytes object
    keeps its blob while it lives, so the same contents moved around (a rename on the
    ESP, a reboot's re-render) are not written again.
    """

    def __init__(self, directory: str) -> None:
        self.directory = os.path.join(directory, BLOB_DIR)
        #: id(bytes) -> (the bytes, its blob id): the bytes are kept so the id is not reused.
        self._by_object: dict[int, tuple[bytes, str]] = {}
        self._by_ref: dict[str, bytes] = {}
        #: blobs this process wrote or read: the only ones :meth:`collect` deletes
        #: (another process on the same machine may have written the others).
        self._known: set[str] = set()
        #: blobs written without an fsync (``durable=False``) and not fsynced since.
        self._volatile: set[str] = set()

    def pack(self, data: bytes, *, durable: bool = True) -> str:
        """``data`` as machine.json stores it: inline base64, or a blob reference.

        ``durable``: the blob is fsynced, as the file the simulated kernel stores
        would be on disk (an ESP file the daemon writes with ``durable=True``).
        ``False`` for contents that are memory on a real machine (the PFRU
        communication buffer: the kernel's ``write()`` is a memcpy into it,
        drivers/acpi/pfr_update.c ``pfru_write()``): the blob only has to outlive
        livefwd's process, which the page cache does, as for machine.json itself
        (:meth:`SimMachine._write`); an fsync there was a disk write the real path
        never makes, in the PFRU staging figure (bench/NOTES.md, staging).
        """
        if len(data) <= INLINE_MAX:
            return base64.b64encode(data).decode("ascii")
        hit = self._by_object.get(id(data))
        if hit is not None and hit[0] is data:
            ref = hit[1]
            if durable and ref in self._volatile:  # the same bytes, now on a disk
                fd = os.open(os.path.join(self.directory, ref), os.O_RDONLY | os.O_CLOEXEC)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                self._volatile.discard(ref)
            return BLOB_PREFIX + ref
        ref = uuid.uuid4().hex
        os.makedirs(self.directory, exist_ok=True)
        fd, tmp = _mkstemp(self.directory, ".blob.")
        try:
            with memoryview(data) as view:
                done = 0
                while done < len(view):
                    done += os.write(fd, view[done : done + WRITE_CHUNK])
            if durable:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        os.replace(tmp, os.path.join(self.directory, ref))
        self._remember(ref, data)
        if not durable:
            self._volatile.add(ref)
        return BLOB_PREFIX + ref

    def unpack(self, text: str) -> bytes:
        """The bytes :meth:`pack` stored as ``text``.

        Raises:
            InvalidArgument: a malformed reference, or a blob missing from the
                machine's directory (machine.json edited or copied without it).
        """
        if not text.startswith(BLOB_PREFIX):
            return base64.b64decode(text.encode("ascii"))
        match = _BLOB_REF.fullmatch(text)
        if match is None:
            raise InvalidArgument(f"machine.json has a malformed blob reference {text[:60]!r}")
        ref = match.group(1)
        cached = self._by_ref.get(ref)
        if cached is not None:
            return cached
        try:
            with open(os.path.join(self.directory, ref), "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            raise InvalidArgument(
                f"the simulated machine refers to {BLOB_DIR}/{ref}, which is missing; "
                "recreate it with `livefw sim init --force`"
            ) from None
        self._remember(ref, data)
        return data

    def _remember(self, ref: str, data: bytes) -> None:
        self._by_object[id(data)] = (data, ref)
        self._by_ref[ref] = data
        self._known.add(ref)

    def collect(self, live: frozenset[str]) -> None:
        """Delete the blobs this process knows that the saved state (``live``) dropped."""
        for ref in self._known - live:
            data = self._by_ref.pop(ref, None)
            if data is not None:
                self._by_object.pop(id(data), None)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.directory, ref))
        self._known &= live
        self._volatile &= live

    def sweep(self, live: frozenset[str]) -> None:
        """Delete every blob the saved state (``live``) does not refer to (left by a crash)."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return
        for name in names:
            ours = _BLOB_REF.fullmatch(BLOB_PREFIX + name) or name.startswith(".blob.")
            if ours and name not in live:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.directory, name))
        self._known &= live


class UEventSink(Protocol):
    """Where :meth:`SimMachine.emit` delivers uevents (an asyncio queue fits)."""

    def put_nowait(self, event: UEvent) -> None:
        """Take one event; runs on the loop that attached the sink."""


class SimMachine:
    """The simulated machine, persisted in a directory.

    Use :meth:`create` for a new machine and :meth:`load` for an existing one.
    """

    def __init__(self, directory: str, state: MachineState) -> None:
        self.directory = directory
        self.state = state
        self.blobs = BlobStore(directory)
        self.lock = threading.RLock()
        self.components: dict[str, SimComponent] = {}
        self._subscribers: list[tuple[asyncio.AbstractEventLoop, UEventSink]] = []
        self._batch = 0
        self._dirty = False
        #: the next save also deletes blobs nothing refers to (set when a daemon starts)
        self._sweep = False
        #: each component's section of machine.json as last saved, and its blob refs;
        #: the components changed since (``_stale_all``: every one).
        self._json: dict[str, bytes] = {}
        self._refs: dict[str, frozenset[str]] = {}
        self._stale: set[str] = set()
        self._stale_all = True
        #: set by a daemon running on this machine: called with "reboot" or "kexec"
        #: when the simulated kernel goes away under it.
        self.exit_hook: Callable[[str], None] | None = None
        #: open files the simulated kernel returned inside an ioctl struct, by fd,
        #: until the provider's adopt_fd() wraps them.
        self.returned_fds: dict[int, SimHandle] = {}
        for name, cls in component_classes().items():
            raw = state.components.get(name)
            if raw is None:
                comp_state = cls.default_state(state.profile, 0)
            else:
                comp_state = cls.state_model.model_validate(raw)
            self.components[name] = cls(self, comp_state)
        # the components own their state now; the raw sections would only hold memory
        state.components.clear()
        self.root = Dir()
        #: mount table and udev database the components fill in while rendering.
        self.mount_table: list[MountEntry] = []
        self.udev_table: dict[tuple[str, int, int], dict[str, str]] = {}
        self.render()

    # ----------------------------------------------------------------- kernel

    @property
    def kernel_version(self) -> tuple[int, int]:
        """The simulated kernel's release as ``(major, minor)``."""
        return parse_kernel_version(self.state.kernel)

    def kernel_at_least(self, release: str) -> bool:
        """Whether the simulated kernel is ``release`` (``"6.19"``) or newer.

        Components use this for behaviour a kernel change introduced; each call site
        cites the kernel file and the first release in its docstring (docs/kernel.md).
        """
        return self.kernel_version >= parse_kernel_version(release)

    # ----------------------------------------------------------------- life cycle

    @classmethod
    def create(
        cls,
        directory: str,
        profile: str = "default",
        scale: int = 0,
        kernel: str = DEFAULT_KERNEL,
    ) -> SimMachine:
        """Create a new machine of ``profile`` in ``directory`` (replacing any).

        ``kernel`` is the kernel release (``MAJOR.MINOR``) whose version-dependent
        behaviour the simulated kernel follows (see :meth:`kernel_at_least`).
        """
        parse_kernel_version(kernel)
        classes = component_classes()
        # legacy / xen-dom0: machines without an ESRT (uefi_capsule's "no ESRT" cases)
        if profile not in ("default", "minimal", "rfc", "scale", "empty", "legacy", "xen-dom0"):
            raise InvalidArgument(
                f"unknown profile {profile!r}: use default, minimal, rfc, scale, empty, "
                "legacy or xen-dom0"
            )
        state = MachineState(profile=profile, kernel=kernel)
        for name, comp_cls in classes.items():
            state.components[name] = comp_cls.default_state(profile, scale).model_dump(mode="json")
        machine = cls(directory, state)
        machine.save()
        return machine

    @classmethod
    def load(cls, directory: str, *, create: bool = False) -> SimMachine:
        """Load the machine in ``directory``; create the default one if asked."""
        path = os.path.join(directory, STATE_FILE)
        if not os.path.exists(path):
            if create:
                return cls.create(directory)
            raise NotFound(
                f"no simulated machine in {directory}: run `livefw sim init` "
                "or start livefwd with --simulate"
            )
        with open(path, encoding="utf-8") as handle:
            raw = json.load(handle)
        return cls(directory, MachineState.model_validate(raw))

    def save(self) -> None:
        """Write machine.json with every component's state serialised again.

        For a caller that changed state without :meth:`changed`; see :meth:`_write`.
        """
        with self.lock:
            self._stale_all = True
            self._write()

    def _write(self) -> None:
        """Write machine.json atomically (temp file, rename).

        No fsync: what the simulation models is livefwd (or ``livefw sim``) dying at
        any point, and the page cache outlives a process; the rename alone gives the
        old or the new state. The simulated kernel saves after every change it would
        make durable, many times per install, and an fsync per save made the
        simulator, not the daemon, the cost of staging (bench/REPORT.md). Blobs of
        large contents are fsynced once when written (the one fsync a real ESP write
        costs), before any state refers to them.

        Only the components whose state changed since the last save are serialised
        again (:meth:`changed` names them); the file is still written whole. At
        10,000 simulated devices machine.json is ~20 MB, 13 of them fwctl's, and an
        install with its cancel saved it 16 times: 4.0 of 6.1 s of the daemon's time
        (cProfile), and the reason an install among 10,000 devices took 15x as long
        as among 1,000 (bench/REPORT.md, scale).
        """
        with self.lock:
            every = self._stale_all or not self._json
            for name, comp in self.components.items():
                if every or name in self._stale or name not in self._json:
                    data = comp.state.model_dump_json().encode()
                    self._json[name] = data
                    self._refs[name] = frozenset(
                        ref.decode() for ref in _BLOB_REF_BYTES.findall(data)
                    )
            self._stale.clear()
            self._stale_all = False
            os.makedirs(self.directory, exist_ok=True)
            head = self.state.model_dump_json(exclude={"components"}).encode()
            # the sections are written as they are, not joined into one 20 MB string
            chunks = [head[:-1], b',"components":{']
            for index, (name, section) in enumerate(self._json.items()):
                chunks.append(b"," * (index > 0) + json.dumps(name).encode() + b":")
                chunks.append(section)
            chunks.append(b"}}\n")
            fd, tmp = _mkstemp(self.directory, ".machine.")
            try:
                _write_chunks(fd, chunks)
            finally:
                os.close(fd)
            os.replace(tmp, os.path.join(self.directory, STATE_FILE))
            self._dirty = False
            live = frozenset().union(*self._refs.values())
            if self._sweep:
                self._sweep = False
                self.blobs.sweep(live)
            else:
                self.blobs.collect(live)

    def changed(self, component: str | None = None) -> None:
        """Record a state change: save now, or at the end of the current batch.

        ``component`` is the name of the one component whose state changed (only its
        section is serialised again); ``None``: the machine's own state, or any.
        """
        if component is None:
            self._stale_all = True
        else:
            self._stale.add(component)
        if self._batch:
            self._dirty = True
        else:
            self._write()

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Group several mutations into one save."""
        with self.lock:
            self._batch += 1
            try:
                yield
            finally:
                self._batch -= 1
                if not self._batch and self._dirty:
                    self._write()

    def render(self) -> None:
        """Rebuild the VFS from component state."""
        with self.lock:
            root = Dir()
            self.mount_table = []
            self.udev_table = {}
            proc = root.mkdirs("proc/sys/kernel/random")
            proc.children["boot_id"] = Attr(read=lambda: self.state.boot_id + "\n")
            self._render_host(root)
            for comp in self.components.values():
                comp.render(root)
            self.root = root

    def _render_host(self, root: Dir) -> None:
        """/etc/machine-id, the lockdown mode and (except the empty profile) SMBIOS.

        drivers/firmware/dmi-id.c ``dmi_id_init()`` publishes the SMBIOS strings in
        /sys/class/dmi/id (``bios_release`` since Linux 5.11, as "major.minor");
        security/lockdown/lockdown.c ``lockdown_read()`` lists the modes with the
        current one in brackets.
        """
        root.mkdirs("etc").children["machine-id"] = File(
            data=(self.state.machine_id + "\n").encode(), mode=0o444
        )
        modes = ("none", "integrity", "confidentiality")
        text = " ".join(f"[{m}]" if m == self.state.lockdown else m for m in modes) + "\n"
        root.mkdirs("sys/kernel/security").children["lockdown"] = Attr(read=lambda: text)
        if self.state.profile == "empty":
            return
        dmi = root.mkdirs("sys/class/dmi/id")
        for name, value in SIM_DMI.items():
            dmi.children[name] = Attr(read=functools.partial(str.__add__, value, "\n"))

    def start(self) -> None:
        """A daemon process starts on this machine (and drops blobs a crash left behind)."""
        self._sweep = True
        with self.batch():
            for comp in self.components.values():
                comp.on_start()
            self.changed()

    def reboot(self) -> str:
        """Reboot: firmware actions at boot, a new boot id. Returns the new boot id."""
        with self.batch():
            for comp in self.components.values():
                comp.on_reboot()
            self._new_boot()
        self.render()
        return self.state.boot_id

    def kexec(self) -> str:
        """Kexec into a new kernel: components carry what survives; new boot id."""
        with self.batch():
            for comp in self.components.values():
                comp.on_kexec()
            self._new_boot()
        self.render()
        return self.state.boot_id

    def _new_boot(self) -> None:
        self.state.boot_id = str(uuid.uuid4())
        self.state.boots += 1
        self.changed()

    # ------------------------------------------------------------- descriptors

    def return_fd(self, handle: SimHandle) -> int:
        """Register an open file an ioctl hands to user space; return its fd number."""
        self.returned_fds[handle.fileno()] = handle
        return handle.fileno()

    def restore_kernel_fds(self, fds: list[int]) -> None:
        """Give fd-store descriptors of kernel objects back to their components."""
        with self.lock:
            for comp in self.components.values():
                fds = comp.restore_kernel_fds(fds)
            for fd in fds:
                os.close(fd)

    def claim_fd(self, fd: int) -> SimHandle | None:
        """The simulated open file behind an fd handed back from the fd store, if any."""
        with self.lock:
            for comp in self.components.values():
                handle = comp.claim_fd(fd)
                if handle is not None:
                    return handle
        return None

    # ------------------------------------------------------------------- devices

    def devices(self) -> list[SimDevice]:
        """All simulated devices."""
        with self.lock:
            return [dev for comp in self.components.values() for dev in comp.devices()]

    def find_device(self, query: str) -> tuple[SimComponent, SimDevice]:
        """Find a device by key, key prefix or suffix, or unique name substring."""
        devices = self.devices()
        for matcher in (
            lambda d: d.key == query,
            lambda d: d.key.startswith(query) or d.key.split("/", 1)[-1].startswith(query),
            lambda d: query.lower() in d.name.lower(),
        ):
            hits = [d for d in devices if matcher(d)]
            if len(hits) == 1:
                return self.components[hits[0].component], hits[0]
            if len(hits) > 1:
                keys = ", ".join(d.key for d in hits)
                raise InvalidArgument(f"{query!r} matches several simulated devices: {keys}")
        raise NotFound(f"no simulated device matches {query!r}; see `livefw sim devices`")

    def component(self, name: str) -> SimComponent:
        """The component called ``name``."""
        try:
            return self.components[name]
        except KeyError:
            raise NotFound(
                f"no simulated component {name!r}; components: {sorted(self.components)}"
            ) from None

    # -------------------------------------------------------------------- faults

    def add_fault(self, fault: FaultSpec) -> None:
        """Arm a fault."""
        comp = self.component(fault.component)
        if fault.kind not in comp.FAULTS:
            raise InvalidArgument(
                f"{comp.name} has no fault {fault.kind!r}; faults: {sorted(comp.FAULTS)}"
            )
        problem = comp.fault_problem(fault.kind)
        if problem:
            raise InvalidArgument(f"{comp.name} fault {fault.kind!r}: {problem}")
        with self.lock:
            self.state.faults.append(fault)
            self.changed()

    def clear_faults(self) -> None:
        """Disarm every fault."""
        with self.lock:
            self.state.faults.clear()
            self.changed()

    def take_fault(self, component: str, target: str, kinds: tuple[str, ...]) -> str | None:
        """Consume and return the first armed fault matching, or None."""
        with self.lock:
            for fault in self.state.faults:
                if (
                    fault.component == component
                    and fault.kind in kinds
                    and fault.target in ("*", target)
                    and fault.count != 0
                ):
                    if fault.count > 0:
                        fault.count -= 1
                    self.state.faults = [f for f in self.state.faults if f.count != 0]
                    self.changed()
                    return fault.kind
        return None

    # ------------------------------------------------------------------- uevents

    def subscribe(self) -> asyncio.Queue[UEvent]:
        """A queue receiving every uevent emitted from now on (call from a loop)."""
        queue: asyncio.Queue[UEvent] = asyncio.Queue()
        self.attach(queue)
        return queue

    def attach(self, sink: UEventSink) -> None:
        """Deliver every uevent emitted from now on to ``sink`` (call from its loop).

        ``sink.put_nowait(event)`` runs on the loop that attached it (an asyncio
        queue, the provider's UEventSubscription).
        """
        self._subscribers.append((asyncio.get_running_loop(), sink))

    def unsubscribe(self, sink: UEventSink) -> None:
        """Stop delivering to ``sink``."""
        self._subscribers = [(lp, q) for lp, q in self._subscribers if q is not sink]

    def emit(self, event: UEvent) -> None:
        """Deliver a uevent to every subscriber (thread-safe)."""
        for loop, queue in list(self._subscribers):
            if loop.is_closed():
                continue
            loop.call_soon_threadsafe(queue.put_nowait, event)
