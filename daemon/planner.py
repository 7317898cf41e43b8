"""The install plan: which device a payload goes to, and whether it may, decided once.

Every install, whatever the API (livefw's ``Install``, the fwupd-compatible
``Install``, ``livefw install FILE``), is planned here before anything is written:

1. the cabinet's rules when the payload is a cabinet release
   (:meth:`livefw.releases.ReleaseService.check_release`: GUIDs, protocol, trust,
   ``<requires>``);
2. the version rules (:func:`livefw.versions.check_version`: allow-reinstall,
   allow-older, only-version-upgrade, version_lowest/force), the same for every
   plugin;
3. the device's own refusals, asked once (``Device.check_install``: format,
   platform, update type...), which also say what version a raw payload carries.

The engine runs a :class:`Plan` (:meth:`livefw.engine.Engine.install_plans`) and
checks it again under its lock only when another operation ran meanwhile.

When no device takes a raw payload, :func:`plan_raw` says why for the closest one
("closest: <device> (<plugin>): ...") rather than only that none does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from livefw.device import Device
from livefw.errors import (
    Busy,
    Internal,
    InvalidArgument,
    InvalidFile,
    LivefwError,
    NotFound,
    NothingToDo,
    NotSupported,
    PayloadMismatch,
    VersionNewer,
    VersionSame,
)
from livefw.plugin import InstallOptions, Payload
from livefw.vercmp import compare_versions, normalize_version
from livefw.versions import VersionTooLow, check_version, version_format

if TYPE_CHECKING:
    from livefw.releases import Candidate, ReleaseService

__all__ = ["Plan", "check", "plan_cabinet", "plan_raw"]

#: error priority when no device takes a cabinet (fwupd's order, best first).
_PRIORITY: tuple[type[LivefwError], ...] = (
    InvalidFile,
    VersionSame,
    VersionNewer,
    NotSupported,
    Internal,
    NotFound,
)


@dataclass(frozen=True)
class Plan:
    """One device, the payload to install on it, and what the checks found.

    Attributes:
        device: the device.
        payload: the bytes the device gets (a cabinet's inner payload).
        options: the options it was checked with.
        version: the version it installs ("" when neither payload nor release says).
        downgrade: older than the running version (allowed by the options).
        candidate: the cabinet release it comes from, or None for a raw payload.
        extra: what the history row records besides the payload (the release).
        generation: the engine's operation count when it was checked (it is
            checked again when another operation ran since).
    """

    device: Device
    payload: Payload
    options: InstallOptions
    version: str
    downgrade: bool
    candidate: Candidate | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    generation: int = -1


def _release_extra(device: Device, candidate: Candidate) -> dict[str, Any]:
    release = candidate.release
    return {
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
        "protocol": device.protocol,
    }


def check(
    device: Device,
    payload: Payload,
    options: InstallOptions,
    candidate: Candidate | None = None,
    releases: ReleaseService | None = None,
) -> Plan:
    """Whether ``payload`` (from ``candidate`` when a cabinet release) may go to ``device``.

    No side effects; the device's ``check_install`` is called once.

    Raises:
        NotFound, NotSupported, InvalidFile: the cabinet's rules
            (:meth:`ReleaseService.check_release`), the device's refusals, a
            payload whose version differs from its release's.
        VersionSame, VersionNewer, InvalidFile: the version rules.
        Busy: the device cannot take a payload now (something else is staged).
    """
    if candidate is None:
        carried = device.check_install(payload, options)
        downgrade = check_version(device, carried, options)
        return Plan(device, payload, options, carried, downgrade)
    if releases is None:
        raise Internal("a cabinet release is checked with its release service")
    release = candidate.release
    releases.check_release(device, candidate)
    fmt = release.version_format
    what = f"{release.name or release.appstream_id} {release.version}"
    downgrade = check_version(device, release.version, options, what=what, fmt=fmt)
    carried = device.check_install(payload, options)
    if carried and _compare_same_format(device, carried, release.version, fmt) != 0:
        raise InvalidFile(
            f"the metainfo says {release.appstream_id} is version {release.version}, but its "
            f"payload carries {carried}: the cabinet is inconsistent"
        )
    version = carried or release.version
    return Plan(
        device, payload, options, version, downgrade, candidate, _release_extra(device, candidate)
    )


def _compare_same_format(device: Device, carried: str, offered: str, fmt: str) -> int:
    """-1, 0, 1: the payload's own version against its release's, in one format."""
    fmt = fmt or version_format(device)
    return compare_versions(normalize_version(carried, fmt), normalize_version(offered, fmt), fmt)


# ------------------------------------------------------------------- raw payloads


#: how close a refusal says the payload came to fitting: a version rule or a
#: near miss (another platform, another update type) beats a device that is busy,
#: which beats a payload of another format altogether.
def _closeness(error: LivefwError) -> int:
    if isinstance(error, VersionNewer | VersionSame):
        return 4
    if isinstance(error, VersionTooLow):
        return 4
    if isinstance(error, PayloadMismatch):
        return 3
    if isinstance(error, Busy):
        return 2
    if isinstance(error, InvalidFile):
        return 1
    return 0


def plan_raw(devices: Iterable[Device], payload: Payload, options: InstallOptions) -> Plan:
    """The one updatable device a raw payload is for (``livefw install FILE``).

    Raises:
        InvalidArgument: several devices take it; the caller must name one.
        InvalidFile (or the closest device's own error: VersionNewer,
            VersionSame, Busy): no device takes it; the message names the closest
            candidate and why it refused.
    """
    plans: list[Plan] = []
    refusals: list[tuple[Device, LivefwError]] = []
    for device in devices:
        if "updatable" not in device.flags:
            continue
        try:
            plans.append(check(device, payload, options))
        except LivefwError as error:
            refusals.append((device, error))
    if len(plans) == 1:
        return plans[0]
    if plans:
        names = ", ".join(f"{p.device.name} ({p.device.id[:8]})" for p in plans)
        raise InvalidArgument(f"the payload fits several devices ({names}); name one")
    raise _no_device(refusals)


def _no_device(refusals: Sequence[tuple[Device, LivefwError]]) -> LivefwError:
    """The refusal when no device takes a payload, naming the closest candidate."""
    ranked = [(_closeness(error), n, device, error) for n, (device, error) in enumerate(refusals)]
    ranked = [item for item in ranked if item[0] > 0]
    if not ranked:
        return InvalidFile("no device on this machine accepts this payload")
    closeness, _, device, error = max(ranked, key=lambda item: (item[0], -item[1]))
    message = (
        f"no device on this machine accepts this payload; closest: {device.name} "
        f"({device.plugin}): {error.message}"
    )
    # scripts tell a version refusal from a bad file by the error's name
    if closeness >= 2 and isinstance(error, VersionNewer | VersionSame | Busy):
        return type(error)(message)
    return InvalidFile(message)


# ---------------------------------------------------------------------- cabinets


def plan_cabinet(
    devices: Sequence[Device],
    candidates: Sequence[Candidate],
    options: InstallOptions,
    releases: ReleaseService,
    *,
    every: bool,
) -> list[Plan]:
    """Every (device, release) of a cabinet that can be installed now.

    ``every``: the caller named no device (``devices`` are all of them).

    Raises:
        The best refusal (fwupd's order) when nothing can be installed;
        NothingToDo when everything is already current; NotFound when the
        cabinet is for no device here.
    """
    plans: list[Plan] = []
    errors: list[LivefwError] = []
    for device in devices:
        for candidate in candidates:
            if not candidate.release.provides(device.guids):
                continue
            payload = Payload(
                candidate.release.payload,
                candidate.release.payload_name,
                candidate.release.payload_sha256,
            )
            try:
                plans.append(check(device, payload, options, candidate, releases))
            except LivefwError as error:
                errors.append(error)
    if plans:
        return plans
    if not errors:
        guids = ", ".join(g for c in candidates for g in c.release.guids)
        raise NotFound(
            f"no device on this machine matches the cabinet's GUIDs ({guids})"
            if every
            else f"the cabinet is not for {devices[0].name} (it provides {guids})"
        )
    if every and len(errors) > 1:
        if all(isinstance(e, VersionSame) for e in errors):
            raise NothingToDo("all updatable firmware is already installed")
        if all(isinstance(e, VersionNewer) for e in errors):
            raise NothingToDo("all updatable firmware already has newer versions")
    for kind in _PRIORITY:
        for refusal in errors:
            if isinstance(refusal, kind):
                raise refusal
    raise errors[0]
