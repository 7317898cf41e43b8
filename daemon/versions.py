"""The version rules of an install, written once for every payload and every plugin.

A payload (a raw capsule, or a release of a cabinet) carries a version; the device
runs one (``Device.version``) and may name the lowest it accepts
(``Device.version_lowest``). Whether the install may go ahead is decided here, for
every plugin alike, as fwupd's ``fu_engine_check_requirements`` /
``fu_release_check_version`` do:

- the same version is refused (VersionSame) unless ``allow-reinstall``;
- an older one is refused (VersionNewer) unless ``allow-older``, and always on a
  device flagged ``only-version-upgrade`` (firmware that enforces anti-rollback:
  fwupd's flag of that name);
- one below ``version_lowest`` is refused (InvalidFile) unless ``force``.

Plugins add only their device-specific refusals (another platform, another update
type, a security version below the running one) in ``Device.check_install``.
Versions compare as fwupd compares them (:func:`livefw.vercmp.compare_versions`),
in the device's version format (:func:`version_format`) unless a release names
its own.
"""

from __future__ import annotations

from livefw.device import Device
from livefw.errors import InvalidFile, VersionNewer, VersionSame
from livefw.plugin import ONLY_UPGRADE, InstallOptions
from livefw.vercmp import compare_versions, normalize_version

__all__ = [
    "ONLY_UPGRADE",
    "VersionTooLow",
    "check_version",
    "compare_to_running",
    "version_format",
]


class VersionTooLow(InvalidFile):
    """Below the device's ``version_lowest`` (D-Bus name: InvalidFile)."""


def version_format(device: Device) -> str:
    """Fwupd's VersionFormat name for a device's version string."""
    version = device.version
    if version.isdigit():
        return "number"
    dots = version.count(".")
    if dots and all(part.isdigit() for part in version.split(".")):
        return {1: "pair", 2: "triplet", 3: "quad"}.get(dots, "plain")
    return "plain" if version else "unknown"


def _normalized(device: Device, offered: str, fmt: str) -> tuple[str, str, str]:
    """(offered, running, format), both versions in the same form."""
    fmt = fmt or version_format(device)
    running = normalize_version(device.version, fmt) if "." in offered else device.version
    return normalize_version(offered, fmt), running, fmt


def compare_to_running(device: Device, offered: str, fmt: str = "") -> int:
    """-1, 0, 1: ``offered`` against the version ``device`` runs."""
    offered, running, fmt = _normalized(device, offered, fmt)
    return compare_versions(offered, running, fmt)


def check_version(
    device: Device,
    offered: str,
    options: InstallOptions,
    *,
    what: str = "the payload",
    fmt: str = "",
) -> bool:
    """Apply the version rules to ``offered`` on ``device``; return True for a downgrade.

    ``what`` names the payload in the messages ("the payload", "release 1.2 of
    com.example.fw"). An empty ``offered`` (a capsule that carries no version) is
    not judged: the firmware decides.

    Raises:
        VersionSame: the running version, without ``allow_reinstall``.
        VersionNewer: older than the running version, without ``allow_older`` or on
            a device that only takes newer versions.
        VersionTooLow: (an InvalidFile) below the device's lowest version, without
            ``force``.
    """
    if not offered or not device.version:
        return False
    offered, running, fmt = _normalized(device, offered, fmt)
    order = compare_versions(offered, running, fmt)
    if order == 0 and not options.allow_reinstall:
        raise VersionSame(
            f"{what} carries version {offered}, which {device.name} already runs; use "
            "--allow-reinstall (allow-reinstall) to install it again"
        )
    if order < 0 and ONLY_UPGRADE in device.flags:
        raise VersionNewer(
            f"{what} carries version {offered}, older than the running {running} of "
            f"{device.name}, whose firmware enforces anti-rollback: older images are "
            "refused whatever the options (--allow-older does not apply)"
        )
    if order < 0 and not options.allow_older:
        raise VersionNewer(
            f"{what} carries version {offered}, older than the running {running} of "
            f"{device.name}; use --allow-older (allow-older) to downgrade"
        )
    lowest = device.version_lowest
    if lowest and not options.force:
        lowest = normalize_version(lowest, fmt) if "." in offered else lowest
        if compare_versions(offered, lowest, fmt) < 0:
            raise VersionTooLow(
                f"{what} carries version {offered}, below the lowest version {device.name} "
                f"accepts ({lowest}): the firmware would refuse it"
            )
    return order < 0
