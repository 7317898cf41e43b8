"""Releases: reading cabinets and their trust, and what local remotes offer each device.

:class:`ReleaseService` belongs to the engine (``Engine.releases``) and knows
nothing of it: it parses a cabinet a client handed in (:meth:`ReleaseService.open`),
applies a cabinet release's own rules to a device (:meth:`ReleaseService.check_release`:
GUIDs, protocol, trust, ``<requires>``), and answers GetReleases/GetUpgrades/
GetDowngrades from the local remotes (:mod:`livefw.remotes`). The install plan
(version rules, the device's check) is the engine's (:mod:`livefw.planner`).

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
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import structlog

import livefw
from livefw.cabinet import Cabinet, Limits, Release, read_cabinet
from livefw.config import Config
from livefw.device import Device
from livefw.errors import Busy, InvalidFile, LivefwError, NotFound, NothingToDo, NotSupported
from livefw.fswatch import FolderWatch
from livefw.jcat import parse_jcat, trusted_files
from livefw.libfwupd import fwupd_version
from livefw.remotes import Remote, RemoteStore
from livefw.requires import check_requirements
from livefw.vercmp import compare_versions, normalize_version
from livefw.versions import compare_to_running, version_format

__all__ = ["Candidate", "ReleaseService"]

log = structlog.get_logger("livefw.releases")

#: the fwupd release whose cabinet semantics livefw implements (``<requires>`` on
#: ``org.freedesktop.fwupd`` compares against it unless a libfwupd is installed).
FWUPD_LEVEL = "2.0.0"


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


#: what a cabinet may be while the caller has not been authorized yet (fwupd's
#: GetDetails never asks; its Install asks only after parsing): 16 MiB of file, 32 MiB
#: unpacked. Parsing one costs about twice what it unpacks to (cabarchive keeps the
#: folder and the files), so such a parse stays under ~100 MiB.
UNTRUSTED_SIZE = 16 * 1024 * 1024
UNTRUSTED_UNPACKED = 32 * 1024 * 1024
#: callers that may wait for the one unauthenticated parse at a time; more get Busy.
UNTRUSTED_QUEUE = 8
#: longest a remotes scan is kept (seconds) even though no change was seen: inotify
#: does not report changes made to a network file system by another machine.
REMOTES_MAX_AGE = 5.0


@dataclass
class _KeptScan:
    """A remotes scan, kept until its watch sees a change (see ReleaseService.available)."""

    candidates: list[Candidate]
    watch: FolderWatch
    started: float


class ReleaseService:
    """Cabinet installs and local-remote releases for one engine.

    Cabinets are parsed in executors of their own, never in asyncio's default one,
    which the kernel provider's blocking calls use (``asyncio.to_thread``): two
    threads for callers already authorized and for remote folders, and one thread,
    one caller at a time, with :data:`UNTRUSTED_SIZE`/:data:`UNTRUSTED_UNPACKED`, for
    callers not yet authorized (:meth:`untrusted`).
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        section = config.install
        self.pki_dir = section.pki_dir
        self.store = RemoteStore(section.remotes_dir, Limits())
        self._kept: _KeptScan | None = None
        self._scans_started = 0
        self._kept_from = 0  # which scan (in start order) _kept is
        self._inotify = True  # False once inotify failed: every call scans
        #: remotes scans run (tests count them)
        self.scans = 0
        self.reconfigure(config)
        self._trust_cache: dict[str, tuple[bool, bool]] = {}
        self._executor = ThreadPoolExecutor(2, thread_name_prefix="livefw-cabinet")
        self._untrusted_executor = ThreadPoolExecutor(1, thread_name_prefix="livefw-untrusted")
        self._untrusted_gate = asyncio.Semaphore(1)
        self._untrusted_callers = 0

    def reconfigure(self, config: Config) -> None:
        """Take ``[install] only_trusted`` and ``max_payload_size`` from ``config`` now.

        fwupd's ModifyConfig changes them without a restart; the PKI and remote
        folders stay what livefwd started with.
        """
        section = config.install
        self.config = config
        self.only_trusted = section.only_trusted
        self.limits = Limits(max_size=section.max_payload_size)
        self.untrusted_limits = Limits(
            max_size=min(UNTRUSTED_SIZE, section.max_payload_size),
            max_unpacked=UNTRUSTED_UNPACKED,
        )
        self.store.limits = self.limits
        self.drop_kept_scan()  # the size limit decides which cabinets parse

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
            "org.freedesktop.fwupd": self.config.daemon.fwupd_version
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
        self,
        data: bytes | memoryview,
        remote: Remote | None,
        location: str,
        limits: Limits,
        sha256: str,
    ) -> list[Candidate]:
        cabinet = read_cabinet(data, limits, sha256=sha256)
        payload_ok, metadata_ok = self._trust(cabinet, remote)
        return [
            Candidate(release, cabinet, payload_ok, metadata_ok, remote, location)
            for release in cabinet.releases
        ]

    def _open_any(self, data: bytes | memoryview, limits: Limits, sha256: str) -> list[Candidate]:
        # a cabinet that is also in a remote's folder (the same bytes) is that
        # remote's release: it counts as trusted when the remote is (as in fwupd,
        # which matches the installed cabinet's checksum against remote metadata)
        digest = sha256 or hashlib.sha256(data).hexdigest()
        for entry in self.store.scan():
            if entry.cabinet is not None and entry.cabinet.sha256 == digest:
                return self._open(data, entry.remote, entry.path, limits, digest)
        return self._open(data, None, "", limits, digest)

    async def open(
        self, data: bytes | memoryview, authorized: bool = True, sha256: str = ""
    ) -> list[Candidate]:
        """Parse a cabinet a client handed in and work out its trust (in a thread).

        ``authorized=False`` (inside :meth:`untrusted`): the small limits and the
        single thread for callers polkit has not yet been asked about. ``sha256``:
        the file's SHA-256 when known (livefw.fdread computes it while it reads),
        so that the 64 MiB are not hashed again.

        Raises:
            InvalidFile: see :func:`livefw.cabinet.read_cabinet`; a bad .jcat.
            TooLarge: over the limits that apply.
        """
        loop = asyncio.get_running_loop()
        if authorized:
            return await loop.run_in_executor(
                self._executor, self._open_any, data, self.limits, sha256
            )
        return await loop.run_in_executor(
            self._untrusted_executor, self._open_any, data, self.untrusted_limits, sha256
        )

    # -------------------------------------------------------------- checking

    def check_release(self, device: Device, candidate: Candidate) -> None:
        """The cabinet's own rules for ``candidate`` on ``device``; no side effects.

        The version rules and the device's refusals come after these, in the
        planner (livefw.planner.check).

        Raises:
            NotFound: the release is not for this device.
            NotSupported: protocol mismatch, not updatable, unknown requirement.
            InvalidFile: untrusted with only_trusted, a requirement not met.
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
        fmt = release.version_format or version_format(device)
        current = (
            normalize_version(device.version, fmt) if "." in release.version else device.version
        )
        check_requirements(release, current, fmt, self.runtimes())

    # ---------------------------------------------------------------- remotes

    def remotes(self) -> list[Remote]:
        """The configured remotes."""
        return self.store.remotes()

    def _scan(self) -> list[Candidate]:
        self.scans += 1
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
        """Every release of every enabled remote.

        The scan reads the remotes directory, each remote's folder and the PKI folder
        in a thread. Its result is kept while an inotify watch on those folders
        (livefw.fswatch) has seen no change and for at most :data:`REMOTES_MAX_AGE`:
        a change made before a call is in that call's answer, and a call that finds
        nothing changed costs one non-blocking read instead of a thread hop (fwupd's
        GetDevices asks on every call; issue 17 item 3). Where a folder cannot be
        watched (no inotify, a symbolic link in a path or among the cabinets or
        certificates) every call scans.
        """
        kept = self._kept
        if (
            kept is not None
            and not kept.watch.changed()
            and time.monotonic() - kept.started < REMOTES_MAX_AGE
        ):
            return kept.candidates
        self._scans_started += 1
        order, started = self._scans_started, time.monotonic()
        candidates, watch = await asyncio.get_running_loop().run_in_executor(
            self._executor, self._watched_scan
        )
        if watch is not None:
            if order > self._kept_from:  # a scan started later may have finished first
                self.drop_kept_scan()
                self._kept, self._kept_from = _KeptScan(candidates, watch, started), order
            else:
                watch.close()
        return candidates

    def drop_kept_scan(self) -> None:
        """Forget the kept remotes scan: the next :meth:`available` scans."""
        kept, self._kept = self._kept, None
        if kept is not None:
            kept.watch.close()

    def _watched_scan(self) -> tuple[list[Candidate], FolderWatch | None]:
        """Watch the folders the scan reads, then scan (blocking: in a thread)."""
        watch = self._watch() if self._inotify else None
        return self._scan(), watch

    def _watch(self) -> FolderWatch | None:
        """A watch on every folder the scan reads, made before it reads them; or None."""
        watch = FolderWatch.create()
        if watch is None:
            self._inotify = False
            return None
        folders = [(self.store.remotes_dir, ".conf"), (self.pki_dir, "")]
        if watch.add(self.store.remotes_dir):
            folders += [(r.path, ".cab") for r in self.store.remotes() if r.enabled]
        if all(watch.add(folder) and _no_links(folder, suffix) for folder, suffix in folders):
            return watch
        watch.close()
        return None

    async def releases(self, device: Device) -> list[Candidate]:
        """Releases for a device, newest first (duplicates of one cabinet folded).

        Raises:
            NotSupported: the device takes no firmware (not updatable).
            NothingToDo: no release in any remote.
        """
        if "updatable" not in device.flags:
            raise NotSupported(f"{device.name} is not updatable through livefw")
        fmt_of = version_format(device)
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

    @staticmethod
    def compare_to_device(device: Device, candidate: Candidate) -> int:
        """-1, 0, 1: the release against the device's running version."""
        release = candidate.release
        order: int = compare_to_running(device, release.version, release.version_format)
        return order

    async def upgrades(self, device: Device) -> list[Candidate]:
        """Releases newer than the running version, newest first.

        Raises:
            NothingToDo: none (with why: pending reboot or activation, versions).
        """
        if "needs-reboot" in device.flags and device.version_pending:
            raise NothingToDo(f"{device.name}: a reboot is pending")
        if "needs-activation" in device.flags:
            raise NothingToDo(f"{device.name}: a staged update waits for activation")
        if "updatable" not in device.flags:
            raise NothingToDo(f"{device.name} is not updatable")
        candidates = await self.releases(device)
        newer = [c for c in candidates if self.compare_to_device(device, c) > 0]
        if not newer:
            words = {0: "same", -1: "older"}
            listed = ", ".join(
                f"{c.release.version}={words[self.compare_to_device(device, c)]}"
                for c in candidates
            )
            raise NothingToDo(f"current version is {device.version}: {listed}")
        return newer

    async def downgrades(self, device: Device) -> list[Candidate]:
        """Releases older than the running version, newest first."""
        older = [c for c in await self.releases(device) if self.compare_to_device(device, c) < 0]
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


def _no_links(folder: str, suffix: str) -> bool:
    """Whether no entry of ``folder`` ending in ``suffix`` is a symbolic link.

    A link's target can change without an event in the folder (livefw.fswatch).
    """
    try:
        with os.scandir(folder) as entries:
            return not any(e.is_symlink() for e in entries if e.name.endswith(suffix))
    except FileNotFoundError:
        return True
    except OSError:
        return False
