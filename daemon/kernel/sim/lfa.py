"""Simulated Arm LFA: the firmware agent (TF-A) and the kernel driver's sysfs tree.

The agent holds an ordered inventory of images. The "kernel" renders
``/sys/firmware/lfa/<guid>/`` from a cached enumeration (capable, may_reset_cpu,
cpu_rendezvous and current_version are cached until the next enumeration) while
``activation_pending`` and ``pending_version`` query the agent at read time, as the
v3 driver does (lfa_fw.c ``activation_pending_show()``, ``pending_version_show()``,
``update_fw_image_node()``; docs/kernel.md, Arm LFA). Activation runs the PRIME loop
and ACTIVATE with the driver's time budgets, and every agent failure reaches user
space as the errno the driver returns (ECANCELED for activation failures, EINVAL for cancel).

The two administrator settings of the posting (v3 ``lfa_fw.c``; ABI text
``Documentation/ABI/testing/sysfs-firmware-lfa``): ``force_cpu_rendezvous`` (RFC v2+,
default 1) decides, with the firmware's ``cpu_rendezvous``, whether ACTIVATE runs
inside ``stop_machine()`` (``cpu_rendezvous || force_cpu_rendezvous``; RFC v1 always
rendezvoused); ``auto_activate`` (v2+, default 0) makes the driver's notification
handler activate a capable, pending image by itself when the platform signals a new
image (``livefw sim stage`` plays the BMC plus that notification).

No uevent for the tree, as in every posting up to v3: ``/sys/firmware/lfa`` is a kset
below ``firmware_kobj``, which belongs to no kset, so lib/kobject_uevent.c
``kobject_uevent_env()`` refuses its ``add``; the image kobjects join that kset
through ``kobject_init_and_add()`` (lfa_fw.c ``update_fw_image_node()``), which sends
nothing, and the driver never calls ``kobject_uevent()``, so lib/kobject.c
``__kobject_del()`` owes no ``remove`` either when ``remove_invalid_fw_images()``
deletes one. A re-enumeration after an activation and ``livefw sim add/remove lfa``
therefore change the tree silently. The one event is the module's: loading lfa_fw.ko
(``livefw sim set lfa module_loaded=1``) sends ``add`` DEVPATH=/module/lfa_fw once its
init created the tree (kernel/module/main.c ``do_init_module()``), unloading sends the
``remove`` the sent ``add`` owes after the exit removed it (kernel/module/sysfs.c
``mod_sysfs_teardown()``; lib/kobject.c). docs/kernel.md, Uevents.
"""

from __future__ import annotations

import contextlib
import errno
import threading
import time
import uuid
from typing import Literal

from livefw.errors import InvalidArgument, KernelError
from livefw.kernel.provider import UEvent
from livefw.kernel.sim.machine import SimComponent, SimDevice, SimMachine
from livefw.kernel.sim.vfs import Attr, Dir, fail
from livefw.kernel.uapi import lfa as uapi
from livefw.model import Field, Model

_TRUE = {"1", "y", "yes", "on", "true"}
_FALSE = {"0", "n", "no", "off", "false"}


def _kstrtobool(data: bytes, path: str) -> bool:
    text = data.decode(errors="replace").strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise fail(errno.EINVAL, "write", path)


class LfaImage(Model, extra="forbid"):
    """One image in the agent's inventory."""

    guid: str
    capable: bool = True
    pending: bool = False
    may_reset_cpu: bool = False
    rendezvous_optional: bool = False
    current: str = "1.0"
    pending_version: str | None = None
    force_cpu_rendezvous: bool = True
    auto_activate: bool = False
    #: whether the last activation ran inside stop_machine() (None: never activated).
    last_rendezvous: bool | None = None


class LfaCache(Model, extra="forbid"):
    """What the kernel cached at the last enumeration (lfa_fw.c ``set_image_flags()``)."""

    capable: bool
    may_reset_cpu: bool
    cpu_rendezvous: bool
    current: str


class LfaState(Model, extra="forbid"):
    """The simulated agent and driver.

    Attributes:
        present: the agent answers LFA_VERSION (else no /sys/firmware/lfa at all).
        style: ``v3`` (twelve files) or ``rfc`` (the seven files of RFC v1,
            ``(unknown)`` names) so the daemon is tested against both.
        activate_seconds: how long the firmware takes to activate (the write blocks).
        prime_iterations: how many times PRIME asks to be called again.
        retry_budget_seconds: the driver's budget for BUSY/call-again on ACTIVATE.
        activated_remove: GUIDs that disappear from the inventory after the next
            activation (directories removed, as after a re-enumeration).
        module_loaded: lfa_fw.ko is loaded (its init made the tree when the agent is
            present); ``livefw sim set lfa module_loaded=0/1`` unloads and loads it.
        removal_delay_seconds: how long after a re-enumeration the directories of
            vanished images stay, with the driver's invalidated values, before its
            workqueue deletes them (0: at once).
    """

    present: bool = True
    module_loaded: bool = True
    style: Literal["v3", "rfc"] = "v3"
    activate_seconds: float = 0.5
    prime_iterations: int = 2
    retry_budget_seconds: float = uapi.ACTIVATE_TIMEOUT_S
    images: list[LfaImage] = Field(default_factory=list)
    cache: dict[str, LfaCache] = Field(default_factory=dict)
    activated_remove: list[str] = Field(default_factory=list)
    removal_delay_seconds: float = 0.0


_BL31, _BL33, _RMM = list(uapi.KNOWN_IMAGES)
#: what update_fw_images_tree() leaves in an image the agent no longer lists.
_INVALIDATED = LfaCache(capable=False, may_reset_cpu=False, cpu_rendezvous=False, current="0.0")


class LfaComponent(SimComponent):
    """The LFA agent plus the kernel's sysfs view of it."""

    name = "lfa"
    order = 20
    state_model = LfaState
    state: LfaState
    FAULTS = {
        "busy": "the agent answers BUSY to ACTIVATE until the driver's budget runs out",
        "auth-error": "PRIME fails with AUTH_ERROR (image authentication failed)",
        "activation-failed": "ACTIVATE fails with ACTIVATION_FAILED",
        "rendezvous-failure": "the CPU rendezvous fails (CRITICAL_ERROR inside stop_machine)",
    }

    def __init__(self, machine: SimMachine, state: LfaState) -> None:
        super().__init__(machine, state)
        #: activations the notification handler started (tests join them).
        self.auto_threads: list[threading.Thread] = []

    @classmethod
    def default_state(cls, profile: str, scale: int) -> LfaState:
        """Three images: one pending, one with nothing pending, one not capable."""
        if profile == "empty":
            return LfaState(present=False)
        images = [
            LfaImage(guid=_BL31, current="2.13", pending=True, pending_version="2.14"),
            LfaImage(guid=_RMM, current="0.7", rendezvous_optional=True),
            LfaImage(guid=_BL33, capable=False, current="2025.10"),
        ]
        if profile == "minimal":
            images = images[:1]
        if profile == "scale":
            for index in range(scale):
                images.append(
                    LfaImage(
                        guid=str(uuid.UUID(int=0x5C41E << 96 | index)),
                        current="1.0",
                        pending=index % 2 == 0,
                        pending_version="1.1" if index % 2 == 0 else None,
                    )
                )
        state = LfaState(style="rfc" if profile == "rfc" else "v3", images=images)
        cls._enumerate(state)
        return state

    # ------------------------------------------------------------------- kernel

    @staticmethod
    def _enumerate(state: LfaState) -> None:
        """GET_INFO + GET_INVENTORY for every image: refresh the kernel's cache."""
        state.cache = {
            image.guid: LfaCache(
                capable=image.capable,
                may_reset_cpu=image.may_reset_cpu,
                cpu_rendezvous=not image.rendezvous_optional,
                current=image.current,
            )
            for image in state.images
        }

    def _image(self, guid: str) -> LfaImage | None:
        """The image of ``guid``, from an index rebuilt when the image list changes.

        As in the fwctl component: a linear search per lookup was quadratic at scale;
        the list is only appended to or replaced.
        """
        images = self.state.images
        cached = getattr(self, "_index", None)
        if cached is None or cached[0] is not images or cached[1] != len(images):
            cached = (images, len(images), {image.guid: image for image in reversed(images)})
            self._index = cached
        found: LfaImage | None = cached[2].get(guid)
        return found

    def _kernel_name(self, guid: str) -> str:
        if guid in uapi.KNOWN_IMAGES:
            name = uapi.KNOWN_IMAGES[guid]
            if self.state.style == "rfc":  # RFC names lacked the "TF-" prefixes
                name = name.removeprefix("TF-A ").removeprefix("TF-")
            return name
        return uapi.UNKNOWN_NAME_RFC if self.state.style == "rfc" else guid

    def render(self, root: Dir) -> None:
        """sys/firmware/lfa/<guid>/<attr> for every cached image."""
        if not (self.state.present and self.state.module_loaded):
            return
        top = root.mkdirs(uapi.LFA_SYSFS)
        for guid in self.state.cache:
            top.children[guid] = self._image_dir(guid)

    def _image_dir(self, guid: str) -> Dir:
        path = f"{uapi.LFA_SYSFS}/{guid}"

        def cached(field: str) -> Attr:
            def read() -> str:
                value = getattr(self.state.cache[guid], field)
                return (str(int(value)) if isinstance(value, bool) else value) + "\n"

            return Attr(read=read)

        def live_pending() -> str:
            image = self._image(guid)
            return f"{int(bool(image and image.pending))}\n"

        def live_pending_version() -> str:
            image = self._image(guid)
            if image and image.pending and image.pending_version:
                return image.pending_version + "\n"
            return uapi.PENDING_NONE + "\n"

        def flag_attr(field: str) -> Attr:
            def read() -> str:
                image = self._image(guid)
                return f"{int(bool(image and getattr(image, field)))}\n"

            def write(data: bytes) -> None:
                value = _kstrtobool(data, f"{path}/{field}")
                image = self._image(guid)
                if image is not None:
                    setattr(image, field, value)
                    self.machine.changed(self.name)

            return Attr(read=read, write=write, mode=0o644)

        attrs: dict[str, Attr] = {
            uapi.ATTR_NAME: Attr(read=lambda: self._kernel_name(guid) + "\n"),
            uapi.ATTR_ACTIVATION_CAPABLE: cached("capable"),
            uapi.ATTR_ACTIVATION_PENDING: Attr(read=live_pending),
            uapi.ATTR_MAY_RESET_CPU: cached("may_reset_cpu"),
            uapi.ATTR_CPU_RENDEZVOUS: cached("cpu_rendezvous"),
            uapi.ATTR_ACTIVATE: Attr(
                write=lambda data: self._activate(guid), mode=0o200, blocking=True
            ),
            uapi.ATTR_CANCEL: Attr(write=lambda data: self._cancel(guid), mode=0o200),
        }
        if self.state.style == "v3":
            attrs[uapi.ATTR_FORCE_CPU_RENDEZVOUS] = flag_attr("force_cpu_rendezvous")
            attrs[uapi.ATTR_CURRENT_VERSION] = cached("current")
            attrs[uapi.ATTR_PENDING_VERSION] = Attr(read=live_pending_version)
            attrs[uapi.ATTR_AUTO_ACTIVATE] = flag_attr("auto_activate")
        return Dir(children=dict(attrs))

    def _activate(self, guid: str) -> None:
        """The driver's activate_store: refuse, PRIME loop, ACTIVATE, re-enumerate.

        Runs in a worker thread (the write blocks like the real one); the machine lock
        is held only around state changes.
        """
        path = f"{uapi.LFA_SYSFS}/{guid}/{uapi.ATTR_ACTIVATE}"
        machine = self.machine
        with machine.lock:
            cache = self.state.cache.get(guid)
            image = self._image(guid)
            if cache is None or image is None:
                raise fail(errno.ENODEV, "write", path)
            if cache.may_reset_cpu:
                # v2+: prime_fw_image() refuses, activate_store() returns ECANCELED.
                raise fail(errno.ECANCELED, "write", path, "image may reset CPUs")
            if not image.capable or not image.pending:
                # PRIME answers WRONG_STATE / COMPONENT_WRONG_STATE -> ECANCELED.
                raise fail(errno.ECANCELED, "write", path, "PRIME: COMPONENT_WRONG_STATE")
            fault = machine.take_fault(
                self.name,
                f"lfa/{guid}",
                ("auth-error", "busy", "activation-failed", "rendezvous-failure"),
            )
            # ACTIVATE inside stop_machine() when the firmware requires it or the
            # administrator forces it (v3 activate_fw_image(); RFC v1: always).
            rendezvous = (
                cache.cpu_rendezvous or image.force_cpu_rendezvous or self.state.style == "rfc"
            )
            iterations = self.state.prime_iterations
            delay = self.state.activate_seconds
            budget = self.state.retry_budget_seconds
        # PRIME loop: call again while x1 bit0 is set, 10 ms apart.
        for _ in range(max(iterations, 0)):
            time.sleep(uapi.RETRY_INTERVAL_S)
        if fault == "auth-error":
            raise fail(errno.ECANCELED, "write", path, "PRIME: AUTH_ERROR")
        if fault == "busy":
            # v3 retries ACTIVATE on BUSY within its budget, then CANCELs.
            time.sleep(min(budget, 30.0))
            raise fail(errno.ECANCELED, "write", path, "ACTIVATE: BUSY past the budget")
        time.sleep(max(delay, 0.0))
        if fault == "activation-failed":
            raise fail(errno.ECANCELED, "write", path, "ACTIVATE: ACTIVATION_FAILED")
        if fault == "rendezvous-failure" and rendezvous:
            # without a rendezvous there is no stop_machine() to fail
            raise fail(errno.ECANCELED, "write", path, "ACTIVATE: CPU rendezvous failed")
        with machine.lock:
            image = self._image(guid)
            if image is None:
                raise fail(errno.ENODEV, "write", path)
            image.last_rendezvous = rendezvous
            image.current = image.pending_version or image.current
            image.pending = False
            image.pending_version = None
            self._reenumerate()

    def _reenumerate(self) -> None:
        """After a successful activation: rescan, add/remove directories by GUID.

        Silently, as lfa_fw.c ``update_fw_images_tree()`` and
        ``remove_invalid_fw_images()`` do (no ``kobject_uevent()``; module docstring).
        """
        removed = set(self.state.activated_remove)
        self.state.images = [i for i in self.state.images if i.guid not in removed]
        self.state.activated_remove = []
        before = self.state.cache
        self._enumerate(self.state)
        delay = self.state.removal_delay_seconds
        stale = sorted(set(before) - set(self.state.cache))
        if delay > 0 and stale:
            # update_fw_images_tree() first invalidates every image (set_image_flags(
            # image, -1, 0b1000, 0, 0): not capable, no CPU reset, rendezvous optional,
            # version 0.0); those the agent no longer lists keep that until the queued
            # remove_invalid_fw_images() deletes them, after the write has returned.
            for guid in stale:
                self.state.cache[guid] = _INVALIDATED.model_copy()
            timer = threading.Timer(delay, self._remove_invalid, args=(stale,))
            timer.daemon = True
            timer.start()
        self.machine.changed(self.name)
        self.machine.render()

    def _remove_invalid(self, guids: list[str]) -> None:
        """The driver's workqueue: delete the directories of invalidated images."""
        with self.machine.lock:
            listed = {image.guid for image in self.state.images}
            for guid in guids:
                if guid not in listed:
                    self.state.cache.pop(guid, None)
            self.machine.changed(self.name)
            self.machine.render()

    def on_start(self) -> None:
        """A workqueue removal a stopped simulator did not run: run it now."""
        listed = {image.guid for image in self.state.images}
        if set(self.state.cache) - listed:
            self._remove_invalid(sorted(set(self.state.cache) - listed))

    def configure(self, key: str, value: str) -> None:
        """``module_loaded`` loads or unloads lfa_fw.ko; other knobs as every component.

        Loading creates the tree only when the agent answers (lfa_fw.c ``lfa_init()``
        / v3 ``lfa_smccc_probe()``; otherwise the init fails and no ``add`` is sent)
        with fresh image objects: ``force_cpu_rendezvous`` 1 and ``auto_activate`` 0
        again (``update_fw_image_node()``). Called with the machine lock held.
        """
        if key != "module_loaded":
            super().configure(key, value)
            return
        load = value.lower() in _TRUE
        if load == self.state.module_loaded:
            return
        self.state.module_loaded = load
        if load:
            for image in self.state.images:
                image.force_cpu_rendezvous, image.auto_activate = True, False
            self._enumerate(self.state)
        self.machine.changed(self.name)
        self.machine.render()
        if self.state.present:
            action = "add" if load else "remove"
            self.machine.emit(UEvent(action, f"module/{uapi.LFA_MODULE}", "module"))

    def _cancel(self, guid: str) -> None:
        """LFA_CANCEL: nothing is primed outside an activation, so the agent refuses."""
        raise fail(errno.EINVAL, "write", f"{uapi.LFA_SYSFS}/{guid}/{uapi.ATTR_CANCEL}")

    # ------------------------------------------------------------ sim commands

    def devices(self) -> list[SimDevice]:
        """One device per image in the agent's inventory."""
        return [
            SimDevice(
                key=f"lfa/{image.guid}",
                name=self._kernel_name(image.guid)
                if image.guid in uapi.KNOWN_IMAGES
                else f"LFA image {image.guid[:8]}",
                component=self.name,
                summary=f"current {image.current}"
                + (f", pending {image.pending_version}" if image.pending else "")
                + ("" if image.capable else ", not activation-capable")
                + ("" if image.force_cpu_rendezvous else ", force_cpu_rendezvous 0")
                + (", auto_activate" if image.auto_activate else "")
                + (
                    ""
                    if image.last_rendezvous is None
                    else f", last activation {'with' if image.last_rendezvous else 'without'}"
                    " CPU rendezvous"
                ),
            )
            for image in self.state.images
        ]

    def add_device(self, options: dict[str, str]) -> SimDevice:
        """Add an image to the agent and its directory to the tree, silently.

        As the kernel's re-enumeration after an activation made by another process (or
        by the driver's auto-activation) would: no uevent (module docstring).
        """
        guid = options.get("guid") or str(uuid.uuid4())
        try:
            guid = str(uuid.UUID(guid))
        except ValueError as error:
            raise InvalidArgument(f"not a GUID: {guid!r}") from error
        if self._image(guid) is not None:
            raise InvalidArgument(f"LFA image {guid} already exists")
        image = LfaImage(
            guid=guid,
            current=options.get("version", "1.0"),
            capable=options.get("capable", "1") in _TRUE,
            may_reset_cpu=options.get("may-reset-cpu", "0") in _TRUE,
        )
        if "pending" in options:
            image.pending, image.pending_version = True, options["pending"]
        with self.machine.lock:
            self.state.images.append(image)
            self._enumerate(self.state)
            self.machine.changed(self.name)
            self.machine.render()
        return self.devices()[-1]

    def remove_device(self, key: str) -> None:
        """Remove an image and its directory, silently (as :meth:`add_device`)."""
        guid = key.removeprefix("lfa/")
        with self.machine.lock:
            self.state.images = [i for i in self.state.images if i.guid != guid]
            self._enumerate(self.state)
            self.machine.changed(self.name)
            self.machine.render()

    def stage(self, key: str, options: dict[str, str]) -> str:
        """A new image arrives out of band (the BMC drops it): it becomes pending."""
        guid = key.removeprefix("lfa/")
        version = options.get("version", "")
        try:
            uapi.parse_version(version)
        except ValueError as error:
            raise InvalidArgument(f"--version must be MAJOR.MINOR, got {version!r}") from error
        with self.machine.lock:
            image = self._image(guid)
            if image is None:
                raise InvalidArgument(f"no LFA image {guid}")
            image.pending, image.pending_version = True, version
            self.machine.changed(self.name)
            auto = self._auto_activates(guid)
        if auto:
            # the platform's notification reaches the driver, which activates the
            # image by itself (v2+ auto_activate); the write path does the work.
            thread = threading.Thread(target=self._auto_activate, args=(guid,), daemon=True)
            self.auto_threads.append(thread)
            thread.start()
            return f"lfa/{guid}: {version} pending; auto_activate is set: activating"
        return f"lfa/{guid}: {version} pending"

    def _auto_activates(self, guid: str) -> bool:
        """v2+ notification handler: auto_activate set, capable, pending, no CPU reset."""
        image = self._image(guid)
        cache = self.state.cache.get(guid)
        return bool(
            self.state.style == "v3"
            and image is not None
            and cache is not None
            and image.auto_activate
            and cache.capable
            and not cache.may_reset_cpu
            and image.pending
        )

    def _auto_activate(self, guid: str) -> None:
        # the real driver logs a failure; the image stays pending
        with contextlib.suppress(KernelError):
            self._activate(guid)


COMPONENT = LfaComponent
