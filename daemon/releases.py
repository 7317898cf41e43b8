"""Releases: installing cabinets, and what local remotes offer each device.

:class:`ReleaseService` sits between the bus layer and the engine. It turns a
cabinet into install plans (device, release, inner payload) without side effects,
refusing with the reason when nothing fits, then hands each plan to
:meth:`Engine.install` with the release recorded in the history row. It also
answers GetReleases/GetUpgrades/GetDowngrades from the local remotes
(:mod:`livefw.remotes`).

Trust: a release is trusted when the cabinet's ``.jcat`` holds PKCS#7 signatures of
both the payload and the metainfo that verify against the PKI directory, or when it
comes from a remote marked ``Trusted``. With ``[install] only_trusted`` (default on)
an untrusted cabinet is refused with InvalidFile, as fwupd does. A raw capsule (not a
cabinet) is not subject to it: the firmware authenticates the capsule itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

import livefw
from livefw.cabinet import (
    Cabinet,
    Limits,
    Release,
    check_requirements,
    compare_versions,
    is_cabinet,
    normalize_version,
    read_cabinet,
)
from livefw.device import Device
from livefw.errors import (
    Busy,
    Internal,
    InvalidFile,
    LivefwError,
    NotFound,
    NothingToDo,
    NotSupported,
    VersionNewer,
    VersionSame,
)
from livefw.history import HistoryEntry
from livefw.jcat import parse_jcat, trusted_files
from livefw.plugin import InstallOptions, Payload
from livefw.remotes import Remote, RemoteStore

if TYPE_CHECKING:
    from livefw.engine import Engine

__all__ = ["Candidate", "Plan", "ReleaseService", "device_version_format", "fwupd_version"]

log = structlog.get_logger("livefw.releases")

#: the fwupd release whose cabinet semantics livefw implements (``<requires>`` on
#: ``org.freedesktop.fwupd`` compares against it unless a libfwupd is installed).
FWUPD_LEVEL = "2.0.0"

#: error priority when no device takes a cabinet (fwupd's order, best first).
_PRIORITY: tuple[type[LivefwError], ...] = (
    InvalidFile,
    VersionSame,
    VersionNewer,
    NotSupported,
    Internal,
    NotFound,
)


_FWUPD_VERSION_PROBE = """
import ctypes
for soname in ("libfwupd.so.3", "libfwupd.so.2"):
    try:
        function = ctypes.CDLL(soname).fwupd_version_string
    except (OSError, AttributeError):
        continue
    function.restype = ctypes.c_char_p
    print((function() or b"").decode())
    break
"""


@functools.cache
def fwupd_version() -> str:
    """The installed libfwupd's version (``fwupd_version_string()``), or ``""``.

    Asked in a child process, so libfwupd and GLib are never loaded into livefwd.
    """
    try:
        result = subprocess.run(
            [sys.executable, "-c", _FWUPD_VERSION_PROBE],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    version = result.stdout.strip()
    return version if result.returncode == 0 and len(version) < 64 else ""


def device_version_format(device: Device) -> str:
    """Fwupd's VersionFormat name for a device's version string."""
    version = device.version
    if version.isdigit():
        return "number"
    dots = version.count(".")
    if dots and all(part.isdigit() for part in version.split(".")):
        return {1: "pair", 2: "triplet", 3: "quad"}.get(dots, "plain")
    return "plain" if version else "unknown"


@dataclass(frozen=True)
class Candidate:
    """A release as offered: from an installed cabinet or a remote's folder."""

    release: Release
    cabinet: Cabinet
    trusted_payload: bool
    trusted_metadata: bool
    remote: Remote | None = None
    location: str = ""

    @property
    def trusted(self) -> bool:
        """Both payload and metadata are trusted."""
        return self.trusted_payload and self.trusted_metadata


@dataclass(frozen=True)
class Plan:
    """One device and the release to install on it (checked, nothing written)."""

    device: Device
    candidate: Candidate
    version: str
    downgrade: bool


#: what a cabinet may be while the caller has not been authorized yet (fwupd's
#: GetDetails never asks; its Install asks only after parsing): 16 MiB of file, 32 MiB
#: unpacked. Parsing one costs about twice what it unpacks to (cabarchive keeps the
#: folder and the files), so such a parse stays under ~100 MiB.
UNTRUSTED_SIZE = 16 * 1024 * 1024
UNTRUSTED_UNPACKED = 32 * 1024 * 1024
#: callers that may wait for the one unauthenticated parse at a time; more get Busy.
UNTRUSTED_QUEUE = 8


class ReleaseService:
    """Cabinet installs and local-remote releases for one engine.

    Cabinets are parsed in executors of their own, never in asyncio's default one,
    which the kernel provider's blocking calls use (``asyncio.to_thread``): two
    threads for callers already authorized and for remote folders, and one thread,
    one caller at a time, with :data:`UNTRUSTED_SIZE`/:data:`UNTRUSTED_UNPACKED`, for
    callers not yet authorized (:meth:`untrusted`).
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        section = engine.config.install
        self.only_trusted = section.only_trusted
        self.pki_dir = section.pki_dir
        self.limits = Limits(max_size=section.max_payload_size)
        self.untrusted_limits = Limits(
            max_size=min(UNTRUSTED_SIZE, section.max_payload_size),
            max_unpacked=UNTRUSTED_UNPACKED,
        )
        self.store = RemoteStore(section.remotes_dir, self.limits)
        self._trust_cache: dict[str, tuple[bool, bool]] = {}
        self._executor = ThreadPoolExecutor(2, thread_name_prefix="livefw-cabinet")
        self._untrusted_executor = ThreadPoolExecutor(1, thread_name_prefix="livefw-untrusted")
        self._untrusted_gate = asyncio.Semaphore(1)
        self._untrusted_callers = 0

    @contextlib.asynccontextmanager
    async def untrusted(self) -> AsyncIterator[Limits]:
        """The one slot to read and parse a cabinet for a caller not yet authorized.

        Yields the limits that apply.

        Raises:
            Busy: UNTRUSTED_QUEUE callers are already waiting.
        """
        if self._untrusted_callers >= UNTRUSTED_QUEUE:
            raise Busy(
                f"{self._untrusted_callers} cabinets are waiting to be inspected; try again "
                "in a moment"
            )
        self._untrusted_callers += 1
        try:
            async with self._untrusted_gate:
                yield self.untrusted_limits
        finally:
            self._untrusted_callers -= 1

    # ------------------------------------------------------------------ trust

    def runtimes(self) -> dict[str, str]:
        """Component ids ``<requires><id>`` may name, with their versions."""
        return {
            "org.livefw.daemon": livefw.__version__,
            "org.freedesktop.fwupd": self.engine.config.daemon.fwupd_version
            or fwupd_version()
            or FWUPD_LEVEL,
        }

    def _trust(self, cabinet: Cabinet, remote: Remote | None) -> tuple[bool, bool]:
        """(trusted payload, trusted metadata) for every release of the cabinet."""
        if remote is not None and remote.trusted:
            return True, True
        # keyed by the certificates too: adding a CA takes effect without a restart
        key = f"{cabinet.sha256}:{self._pki_fingerprint()}"
        cached = self._trust_cache.get(key)
        if cached is not None:
            return cached
        trusted: set[str] = set()
        for name in cabinet.jcat_names:
            trusted |= trusted_files(cabinet.files, parse_jcat(cabinet.files[name]), self.pki_dir)
        payloads = all(r.payload_name in trusted for r in cabinet.releases)
        metadata = all(r.metainfo_name in trusted for r in cabinet.releases)
        if len(self._trust_cache) > 256:
            self._trust_cache.clear()
        self._trust_cache[key] = (payloads, metadata)
        return payloads, metadata

    def _pki_fingerprint(self) -> str:
        try:
            entries = sorted(
                (entry.name, entry.stat().st_mtime_ns, entry.stat().st_size)
                for entry in os.scandir(self.pki_dir)
            )
        except OSError:
            entries = []
        return hashlib.sha1(repr(entries).encode()).hexdigest()

    def _open(
        self, data: bytes, remote: Remote | None, location: str, limits: Limits
    ) -> list[Candidate]:
        cabinet = read_cabinet(data, limits)
        payload_ok, metadata_ok = self._trust(cabinet, remote)
        return [
            Candidate(release, cabinet, payload_ok, metadata_ok, remote, location)
            for release in cabinet.releases
        ]

    def _open_any(self, data: bytes, limits: Limits) -> list[Candidate]:
        # a cabinet that is also in a remote's folder (the same bytes) is that
        # remote's release: it counts as trusted when the remote is (as in fwupd,
        # which matches the installed cabinet's checksum against remote metadata)
        digest = hashlib.sha256(data).hexdigest()
        for entry in self.store.scan():
            if entry.cabinet is not None and entry.cabinet.sha256 == digest:
                return self._open(data, entry.remote, entry.path, limits)
        return self._open(data, None, "", limits)

    async def open(self, data: bytes, authorized: bool = True) -> list[Candidate]:
        """Parse a cabinet a client handed in and work out its trust (in a thread).

        ``authorized=False`` (inside :meth:`untrusted`): the small limits and the
        single thread for callers polkit has not yet been asked about.

        Raises:
            InvalidFile: see :func:`livefw.cabinet.read_cabinet`; a bad .jcat.
            TooLarge: over the limits that apply.
        """
        loop = asyncio.get_running_loop()
        if authorized:
            return await loop.run_in_executor(self._executor, self._open_any, data, self.limits)
        return await loop.run_in_executor(
            self._untrusted_executor, self._open_any, data, self.untrusted_limits
        )

    # -------------------------------------------------------------- checking

    def check(self, device: Device, candidate: Candidate, options: InstallOptions) -> Plan:
        """Whether ``candidate`` may be installed on ``device`` now; no side effects.

        Raises:
            NotFound: the release is not for this device.
            NotSupported: protocol mismatch, not updatable, unknown requirement.
            InvalidFile: untrusted with only_trusted, requirement not met, the
                payload refused by the plugin or carrying another version.
            VersionSame, VersionNewer: the version rules (allow-reinstall/-older).
        """
        release = candidate.release
        if not release.provides(device.guids):
            raise NotFound(f"{release.appstream_id} is not for {device.name}")
        if release.protocol and release.protocol != device.protocol:
            raise NotSupported(
                f"{release.appstream_id} is for protocol {release.protocol}, but {device.name} "
                f"uses {device.protocol}"
            )
        if "updatable" not in device.flags:
            raise NotSupported(f"{device.name} is not updatable right now")
        if self.only_trusted and not candidate.trusted:
            missing = "payload" if not candidate.trusted_payload else "metadata"
            raise InvalidFile(
                f"firmware or metadata signature missing or not trusted ({missing} of "
                f"{release.appstream_id}): sign it with a key in {self.pki_dir}, put it in "
                "a remote marked Trusted, or set [install] only_trusted = false"
            )
        fmt = release.version_format or device_version_format(device)
        current = (
            normalize_version(device.version, fmt) if "." in release.version else device.version
        )
        offered = normalize_version(release.version, fmt)
        check_requirements(release, current, fmt, self.runtimes())
        order = compare_versions(offered, current, fmt)
        if order == 0 and not options.allow_reinstall:
            raise VersionSame(
                f"{release.name or release.appstream_id} {offered} is already installed on "
                f"{device.name}; use allow-reinstall to install it again"
            )
        if order < 0 and not options.allow_older:
            raise VersionNewer(
                f"{device.name} runs {current}, newer than {offered}; use allow-older to downgrade"
            )
        lowest = device.version_lowest
        if lowest.isdigit() and offered.isdigit() and int(offered) < int(lowest):
            raise NotSupported(
                f"{offered} is below the lowest version {device.name} accepts ({lowest})"
            )
        payload = Payload(release.payload, release.payload_name)
        version = device.check_install(payload, options)
        if version and compare_versions(normalize_version(version, fmt), offered, fmt) != 0:
            raise InvalidFile(
                f"the metainfo says {release.appstream_id} is version {offered}, but its "
                f"payload carries {version}: the cabinet is inconsistent"
            )
        return Plan(device, candidate, version or offered, order < 0)

    async def plan(
        self, target: str, data: bytes, options: InstallOptions, authorized: bool = True
    ) -> list[Plan]:
        """Every (device, release) of a cabinet that can be installed now.

        ``target`` is a device id, or ``""``/``"*"`` for every device that matches.

        Raises:
            The best refusal (fwupd's order) when nothing can be installed;
            NothingToDo when everything is already current.
        """
        candidates = await self.open(data, authorized)
        if target in ("", "*"):
            devices = list(self.engine.devices.values())
        else:
            devices = [self.engine.get_device(target)]
        plans: list[Plan] = []
        errors: list[LivefwError] = []
        for device in devices:
            for candidate in candidates:
                if not candidate.release.provides(device.guids):
                    continue
                try:
                    plans.append(self.check(device, candidate, options))
                except LivefwError as error:
                    errors.append(error)
        if plans:
            return plans
        if not errors:
            guids = ", ".join(g for c in candidates for g in c.release.guids)
            raise NotFound(
                f"no device on this machine matches the cabinet's GUIDs ({guids})"
                if target in ("", "*")
                else f"the cabinet is not for {devices[0].name} (it provides {guids})"
            )
        if target in ("", "*") and len(errors) > 1:
            if all(isinstance(e, VersionSame) for e in errors):
                raise NothingToDo("all updatable firmware is already installed")
            if all(isinstance(e, VersionNewer) for e in errors):
                raise NothingToDo("all updatable firmware already has newer versions")
        for kind in _PRIORITY:
            for refusal in errors:
                if isinstance(refusal, kind):
                    raise refusal
        raise errors[0]

    async def install(
        self, plans: Iterable[Plan], options: InstallOptions, caller_uid: int = -1
    ) -> list[HistoryEntry]:
        """Install planned releases one after the other (each re-checked under the lock)."""
        entries = []
        for plan in plans:
            candidate = plan.candidate
            release = candidate.release
            extra = {
                "appstream-id": release.appstream_id,
                # fwupd's history shows the release's name and description (issue 18)
                "release-name": release.name[:256],
                "release-description": release.description[:4096],
                "release-version": release.version,
                "release-id": release.release_id,
                "cabinet-sha1": candidate.cabinet.sha1,
                "cabinet-sha256": candidate.cabinet.sha256,
                "trusted": candidate.trusted,
                "remote-id": candidate.remote.id if candidate.remote else "",
                "protocol": plan.device.protocol,
            }
            payload = Payload(release.payload, release.payload_name)
            entries.append(
                await self.engine.install(
                    plan.device.id, payload, options, caller_uid=caller_uid, extra=extra
                )
            )
        return entries

    async def install_file(
        self, target: str, payload: Payload, options: InstallOptions, caller_uid: int = -1
    ) -> list[HistoryEntry]:
        """Install a cabinet, or a raw payload as before (``livefw install``)."""
        if is_cabinet(payload.data):
            plans = await self.plan(target, payload.data, options)
            return await self.install(plans, options, caller_uid)
        if target in ("", "*"):
            target = self.engine.match_payload(payload, options).id
        return [await self.engine.install(target, payload, options, caller_uid=caller_uid)]

    # ---------------------------------------------------------------- remotes

    def remotes(self) -> list[Remote]:
        """The configured remotes."""
        return self.store.remotes()

    def _scan(self) -> list[Candidate]:
        found = []
        for entry in self.store.scan():
            if entry.cabinet is None:
                continue
            try:
                trust = self._trust(entry.cabinet, entry.remote)
            except LivefwError as error:
                log.warning("remote_cabinet_untrusted", path=entry.path, error=error.message)
                continue
            for release in entry.cabinet.releases:
                found.append(
                    Candidate(release, entry.cabinet, trust[0], trust[1], entry.remote, entry.path)
                )
        return found

    async def available(self) -> list[Candidate]:
        """Every release of every enabled remote."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._scan)

    async def releases(self, device_id: str) -> list[Candidate]:
        """Releases for a device, newest first (duplicates of one cabinet folded).

        Raises:
            NotFound: no such device.
            NotSupported: the device takes no firmware (not updatable).
            NothingToDo: no release in any remote.
        """
        device = self.engine.get_device(device_id)
        if "updatable" not in device.flags:
            raise NotSupported(f"{device.name} is not updatable through livefw")
        fmt_of = device_version_format(device)
        seen: set[tuple[str, str]] = set()
        result = []
        for candidate in await self.available():
            release = candidate.release
            if not release.provides(device.guids):
                continue
            key = (candidate.cabinet.sha256, release.appstream_id)
            if key in seen:
                continue
            seen.add(key)
            result.append(candidate)
        if not result:
            raise NothingToDo(f"no releases for {device.name} in the configured remotes")

        def newer_first(a: Candidate, b: Candidate) -> int:
            fmt = a.release.version_format or fmt_of
            order = compare_versions(
                normalize_version(a.release.version, fmt),
                normalize_version(b.release.version, fmt),
                fmt,
            )
            if order:
                return -order
            pa = a.remote.priority if a.remote else 0
            pb = b.remote.priority if b.remote else 0
            return (pb > pa) - (pb < pa)

        result.sort(key=functools.cmp_to_key(newer_first))
        return result

    def compare_to_device(self, device: Device, candidate: Candidate) -> int:
        """-1, 0, 1: the release against the device's running version."""
        release = candidate.release
        fmt = release.version_format or device_version_format(device)
        current = (
            normalize_version(device.version, fmt) if "." in release.version else device.version
        )
        return compare_versions(normalize_version(release.version, fmt), current, fmt)

    async def upgrades(self, device_id: str) -> list[Candidate]:
        """Releases newer than the running version, newest first.

        Raises:
            NothingToDo: none (with why: pending reboot or activation, versions).
        """
        device = self.engine.get_device(device_id)
        if "needs-reboot" in device.flags and device.version_pending:
            raise NothingToDo(f"{device.name}: a reboot is pending")
        if "needs-activation" in device.flags:
            raise NothingToDo(f"{device.name}: a staged update waits for activation")
        if "updatable" not in device.flags:
            raise NothingToDo(f"{device.name} is not updatable")
        candidates = await self.releases(device_id)
        newer = [c for c in candidates if self.compare_to_device(device, c) > 0]
        if not newer:
            words = {0: "same", -1: "older"}
            listed = ", ".join(
                f"{c.release.version}={words[self.compare_to_device(device, c)]}"
                for c in candidates
            )
            raise NothingToDo(f"current version is {device.version}: {listed}")
        return newer

    async def downgrades(self, device_id: str) -> list[Candidate]:
        """Releases older than the running version, newest first."""
        device = self.engine.get_device(device_id)
        older = [c for c in await self.releases(device_id) if self.compare_to_device(device, c) < 0]
        if not older:
            raise NothingToDo(f"no older releases for {device.name}")
        return older

    async def read_location(self, candidate: Candidate) -> bytes:
        """The cabinet file of a remote release (for installing it)."""
        if not candidate.location:
            raise NotFound("the release has no location")

        def read() -> bytes:
            with open(candidate.location, "rb") as handle:
                return handle.read(self.limits.max_size + 1)

        try:
            return await asyncio.to_thread(read)
        except OSError as error:
            raise NotFound(f"{candidate.location}: {error.strerror}") from error
