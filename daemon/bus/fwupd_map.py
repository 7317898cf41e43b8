"""How livefw's model reads on ``org.freedesktop.fwupd``: values, dicts, options, errors.

Pure mapping, no state: fwupd's enums (libfwupd/fwupd-enums.h, 2.0) for livefw's
flags, states and formats; the device, release and history dicts with fwupd's exact
types (empty values left out), and the remote, HSI attribute and GetDetails dicts;
fwupd's Install options onto :class:`livefw.plugin.InstallOptions`. livefw errors
take fwupd's names through the one error table (livefw.bus.errors:
``fwupd_errors``). livefw.bus.compat maps what livefw.fwupd_service returns with
them.
"""

import os
import time
import urllib.parse
from collections.abc import Mapping
from typing import TYPE_CHECKING

from livefw.bus.backend import Variant
from livefw.bus.context import parse_options
from livefw.device import Device
from livefw.errors import InvalidFile
from livefw.fwupd_service import LVFS_REMOTE_ID, Detail
from livefw.history import HistoryEntry
from livefw.hostinfo import SecurityAttr
from livefw.plugin import InstallOptions
from livefw.versions import version_format

if TYPE_CHECKING:
    # only for annotations: releases and remotes are imported by the first call that
    # needs them, not while livefwd starts (tests/integration/test_import_budget.py)
    from livefw.releases import Candidate
    from livefw.remotes import Remote

#: protocols whose devices finish an install at the next boot.
REBOOT_PROTOCOLS = frozenset({"org.uefi.capsule"})

#: FwupdDeviceFlags (fwupd 2.0, libfwupd/fwupd-enums.h).
DEVICE_FLAGS = {
    "internal": 0x1,
    "updatable": 0x2,
    "require-ac": 0x8,
    "locked": 0x10,
    "supported": 0x20,
    "needs-reboot": 0x100,
    "reported": 0x200,
    "notified": 0x400,
    "needs-shutdown": 0x20000,
    "needs-activation": 0x100000,
    "historical": 0x400000,
    "updatable-hidden": 0x2000000000,
    "signed-payload": 0x800000000000,
    "unsigned-payload": 0x1000000000000,
}
#: FwupdStatus (libfwupd/fwupd-enums.h) for livefw's Status.
STATUS = {
    "idle": 1,
    "loading": 2,
    "device-write": 5,
    "device-verify": 6,
    "scheduling": 7,
    "device-read": 9,
    "waiting-for-auth": 11,
    "device-busy": 12,
    "shutdown": 13,
    "device-activate": 5,
}
#: FwupdUpdateState (libfwupd/fwupd-enums.h) for livefw's UpdateState.
UPDATE_STATE = {
    "none": 0,
    "pending": 1,
    "success": 2,
    "failed": 3,
    "needs-reboot": 4,
    "failed-transient": 5,
}
#: FwupdVersionFormat (libfwupd/fwupd-enums.h).
VERSION_FORMAT = {"unknown": 0, "plain": 1, "number": 2, "pair": 3, "triplet": 4, "quad": 5}
#: FwupdReleaseFlags (libfwupd/fwupd-enums.h).
TRUSTED_PAYLOAD, TRUSTED_METADATA, IS_UPGRADE, IS_DOWNGRADE = 1, 2, 4, 8
#: FwupdReleaseUrgency.
URGENCY = {"low": 1, "medium": 2, "high": 3, "critical": 4}
#: FwupdInstallFlags (2.x ``install-flags``, libfwupd/fwupd-enums.h).
INSTALL_ALLOW_REINSTALL, INSTALL_ALLOW_OLDER, INSTALL_ALLOW_BRANCH_SWITCH = 2, 4, 32
#: FwupdRemoteKind download/directory, FwupdRemoteFlags enabled.
REMOTE_KIND_DOWNLOAD, REMOTE_KIND_DIRECTORY, REMOTE_ENABLED = 1, 3, 1
LVFS_METADATA_URI = "https://cdn.fwupd.org/downloads/firmware.xml.zst"
#: FwupdDeviceProblem system-inhibit (libfwupd/fwupd-enums.h).
PROBLEM_SYSTEM_INHIBIT = 256
#: FwupdSecurityAttrResult names -> values (libfwupd/fwupd-security-attr.h).
HSI_RESULT = {
    "unknown": 0, "enabled": 1, "not-enabled": 2, "valid": 3, "not-valid": 4, "locked": 5,
    "not-locked": 6, "tainted": 9, "not-tainted": 10, "found": 11, "not-found": 12,
}  # fmt: skip


def device_flags(device: Device, supported: bool) -> int:
    """FwupdDeviceFlags for a device (docs/compat.md, devices)."""
    names = set(device.flags) & set(DEVICE_FLAGS)
    names.discard("needs-reboot")
    if device.protocol in REBOOT_PROTOCOLS and str(device.update_state) == "needs-reboot":
        # as fwupd: set once an update is scheduled for the next boot, not before
        # (fwupdmgr check-reboot-needed and the GUIs' restart prompt read it)
        names.add("needs-reboot")
    if "needs-activation" in device.flags and "updatable" in names:
        names.discard("updatable")
        names.add("updatable-hidden")
    if supported:
        names.add("supported")
    value = 0
    for name in names:
        value |= DEVICE_FLAGS[name]
    return value


def _version_fields(version: str, fmt: str, prefix: str) -> dict[str, Variant]:
    fields = {prefix: Variant("s", version)} if version else {}
    if version.isdigit() and int(version) < 1 << 64:
        fields[prefix + "Raw"] = Variant("t", int(version))
    return fields


def device_dict(
    device: Device, supported: bool, created: int, inhibits: Mapping[str, str] | None = None
) -> dict[str, Variant]:
    """The fwupd device dict (libfwupd/fwupd-device.c), exact types, empty values left out.

    ``inhibits`` (GetDevices): the held inhibits' reasons, shown on an updatable device
    as fwupd's system-inhibit problem.
    """
    fmt = version_format(device)
    result: dict[str, Variant] = {
        "DeviceId": Variant("s", device.id),
        "Name": Variant("s", device.name),
        "Plugin": Variant("s", device.plugin),
        "Flags": Variant("t", device_flags(device, supported)),
        "Created": Variant("t", created),
        "Icon": Variant("as", ["computer"]),
        "VersionFormat": Variant("u", VERSION_FORMAT.get(fmt, 0)),
        "UpdateState": Variant("u", UPDATE_STATE.get(str(device.update_state), 0)),
    }
    if device.guids:
        result["Guid"] = Variant("as", [g.lower() for g in device.guids])
    for key, value in (
        ("Vendor", device.vendor),
        ("Summary", device.summary),
        ("Protocol", device.protocol),
        ("UpdateError", device.update_error),
    ):
        if value:
            result[key] = Variant("s", value)
    if "needs-activation" in device.flags:
        # staged through livefw (PFRU) or by the platform (an LFA image the kernel
        # reports activation_pending for): either way `activate` switches to it
        result.update(_staged_fields(device, "UpdateError" in result))
    result.update(_version_fields(device.version, fmt, "Version"))
    result.update(_version_fields(device.version_lowest, fmt, "VersionLowest"))
    if str(device.status) != "idle":
        result["Status"] = Variant("u", STATUS.get(str(device.status), 0))
        result["Percentage"] = Variant("u", device.percentage)
    if inhibits and "updatable" in device.flags:
        result["Problems"] = Variant("t", PROBLEM_SYSTEM_INHIBIT)
        result["UpdateError"] = Variant(
            "s", "Updates are inhibited: " + "; ".join(sorted(inhibits.values()))
        )
    return result


def _staged_fields(device: Device, has_error: bool) -> dict[str, Variant]:
    """What a device whose update is staged and waits for activation adds to its dict.

    fwupd 2.0.20 (checked with its test plugin's NeedsActivation, peer-bench) sets
    needs-activation and swaps updatable for updatable-hidden, as :func:`device_flags`
    does, and nothing else; the GUIs have no Activate button (docs/compat.md, "Staged
    updates"), so livefwd says what to do where each client looks:

    * ``UpdateError``: fwupdmgr get-devices and gnome-firmware 43 print it. (fwupd's
      staging plugins set the update-pending problem instead; with any problem both
      clients hide the Update Error, so livefwd sets none.)
    * the ``UpdateMessage`` of the device's first ``Release``: gnome-software 43.5
      (Debian) reads the device again after its Install call and shows that message
      in a dialog.
    * ``UpdateMessage`` on the device: what libfwupd 1.x clients read.
    """
    pending = f" {device.version_pending}" if device.version_pending else ""
    message = (
        f"Firmware{pending} is staged. Run `fwupdmgr activate` (or `livefw activate`) "
        "to switch to it without a reboot."
    )
    fields = {"UpdateMessage": Variant("s", message)}
    if not has_error:
        fields["UpdateError"] = Variant(
            "s",
            f"Firmware{pending} is staged and waits for activation: run "
            "`fwupdmgr activate` or `livefw activate`",
        )
    release = {"UpdateMessage": Variant("s", message)}
    if device.version_pending:
        release["Version"] = Variant("s", device.version_pending)
    fields["Release"] = Variant("aa{sv}", [release])
    return fields


def release_dict(
    candidate: "Candidate", order: int | None = None, as_fwupd: bool = False
) -> dict[str, Variant]:
    """The fwupd release dict (libfwupd/fwupd-release.c); ``order``: -1/0/1 vs the device.

    ``as_fwupd`` (GetReleases): a directory remote's release as fwupd 2.0.20 publishes
    it, ``file:///folder/x.cab`` with the remote's ``RemoteId``; otherwise (GetUpgrades
    and the rest) ``file://localhost/folder/x.cab`` without one. No one dict serves
    both clients (docs/compat.md, "Directory remotes: Remote ID"):

    * gnome-software 43.5 calls GetUpgrades (never GetReleases), ignores RemoteId and
      downloads ``Locations[0]`` with libfwupd's downloader, which first asks GLib
      whether the URI's host is reachable: the empty host of ``file:///`` never is
      ("network is unreachable"; the Update button hangs, also against fwupd). With
      the host ``localhost`` the download is a local copy.
    * libfwupd's install_release (fwupdmgr install DEVICE VERSION, update, downgrade;
      gnome-firmware's buttons) with a RemoteId of a directory remote cuts the first 7
      characters off ``Locations[0]`` and opens the rest as a path, so it needs
      ``file:///``; with a RemoteId of any other kind it passes the location through
      curl, which drops ``localhost`` from a file URL (the same "network is
      unreachable"). Without a RemoteId it downloads ``file://localhost`` too.

    fwupdmgr get-releases prints the RemoteId ("Remote ID"); its install path and
    gnome-firmware's take the fwupd form; every other reply keeps the form
    gnome-software can download. Either way Install gets the cabinet by fd and
    livefw.releases finds it in its trusted folder by its contents.
    """
    release = candidate.release
    trust = (TRUSTED_PAYLOAD if candidate.trusted_payload else 0) | (
        TRUSTED_METADATA if candidate.trusted_metadata else 0
    )
    if order is not None and order > 0:
        trust |= IS_UPGRADE
    elif order is not None and order < 0:
        trust |= IS_DOWNGRADE
    result: dict[str, Variant] = {
        "AppstreamId": Variant("s", release.appstream_id),
        "Version": Variant("s", release.version),
        "Size": Variant("t", release.size),
        "Checksum": Variant("s", f"{candidate.cabinet.sha1},{candidate.cabinet.sha256}"),
        "TrustFlags": Variant("t", trust),
    }
    if candidate.location and _utf8(candidate.location):
        # (a file name that is not UTF-8 cannot be a D-Bus string: no location, and
        # the client says so, instead of a reply that cannot be sent)
        if as_fwupd and candidate.remote is not None:
            # libfwupd opens location[7:] as is: the path unquoted, as fwupd has it
            url = "file://" + candidate.location
            result["RemoteId"] = Variant("s", candidate.remote.id)
        else:
            # percent-encoded: a space, '%' or '#' in a folder name stays in the path
            url = "file://localhost" + urllib.parse.quote(candidate.location)
        result["Locations"] = Variant("as", [url])
        result["Filename"] = Variant("s", os.path.basename(candidate.location))
    for key, value in (
        ("Name", release.name),
        ("Summary", release.summary),
        ("Description", release.description),
        ("Vendor", release.vendor),
        ("License", release.license),
        ("Homepage", release.homepage),
        ("DetailsUrl", release.details_url),
        ("ReleaseId", release.release_id),
        ("Protocol", release.protocol),
        ("UpdateMessage", release.update_message),
    ):
        if value:
            result[key] = Variant("s", value)
    if release.created:
        result["Created"] = Variant("t", release.created)
    if release.urgency in URGENCY:
        result["Urgency"] = Variant("u", URGENCY[release.urgency])
    if release.install_duration:
        result["InstallDuration"] = Variant("u", release.install_duration)
    return result


def _utf8(text: str) -> bool:
    """Whether ``text`` is valid UTF-8 (a name from the file system may hold surrogates)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


#: the Install options fwupd's clients send (1.x booleans, 2.x ``install-flags``),
#: with their types; others are ignored, as fwupd ignores them.
INSTALL_OPTIONS = {
    "install-flags": "t",
    "allow-older": "b",
    "allow-reinstall": "b",
    "allow-branch-switch": "b",
    "force": "b",
    "offline": "b",
    "ignore-power": "b",
    "no-history": "b",
    "reason": "s",
    "filename": "s",
}


def install_options(options: dict[str, Variant]) -> tuple[InstallOptions, str]:
    """Fwupd Install options: (what livefw honours, the file's name).

    ``force`` (a flag bit or a boolean) is not honoured: a compatible client may not
    bypass the version and requirement checks.

    Raises:
        InvalidFile: a known option of the wrong type (fwupd's name for a bad argument).
    """
    parsed = parse_options(options, INSTALL_OPTIONS, InvalidFile, ignore_unknown=True)
    flags = int(parsed.get("install-flags", 0))

    def flag(bit: int, key: str) -> bool:
        return bool(flags & bit) or bool(parsed.get(key, False))

    branch = flag(INSTALL_ALLOW_BRANCH_SWITCH, "allow-branch-switch")
    result = InstallOptions(
        allow_reinstall=flag(INSTALL_ALLOW_REINSTALL, "allow-reinstall"),
        allow_older=flag(INSTALL_ALLOW_OLDER, "allow-older") or branch,
    )
    return result, os.path.basename(str(parsed.get("filename", "")))


def history_state(entry: HistoryEntry, device: Device | None) -> int:
    """FwupdUpdateState of a history row (``device``: its device, if still present)."""
    if entry.state == "staged":
        protocol = str(entry.data.get("protocol", ""))
        if device is not None:
            protocol = device.protocol
        return UPDATE_STATE["needs-reboot" if protocol in REBOOT_PROTOCOLS else "pending"]
    if entry.state in ("success", "failed", "failed-transient", "pending"):
        return UPDATE_STATE[entry.state]
    if entry.state == "superseded":
        # replaced by a newer staging before it was applied: it did not fail, and
        # fwupd's one row per device has no state for it (FWUPD_UPDATE_STATE_UNKNOWN)
        return UPDATE_STATE["none"]
    return UPDATE_STATE["failed"]  # cancelled


def history_dict(entry: HistoryEntry, device: Device | None, notified: bool) -> dict[str, Variant]:
    """A history row as fwupd's device dict with one release (GetHistory, GetResults)."""
    flags = DEVICE_FLAGS["historical"]
    if device is not None:
        flags |= device_flags(device, False)
    if notified:
        flags |= DEVICE_FLAGS["notified"]
    result: dict[str, Variant] = {
        "DeviceId": Variant("s", entry.device_id),
        "Name": Variant("s", entry.device_name),
        "Plugin": Variant("s", entry.plugin),
        "Flags": Variant("t", flags),
        "Created": Variant("t", int(entry.created)),
        "Modified": Variant("t", int(entry.finished or entry.created)),
        "UpdateState": Variant("u", history_state(entry, device)),
    }
    if entry.version_old:
        result["Version"] = Variant("s", entry.version_old)
    if device is not None and device.guids:
        result["Guid"] = Variant("as", [g.lower() for g in device.guids])
    if entry.state not in ("success", "staged", "pending", "superseded") and entry.reason:
        result["UpdateError"] = Variant("s", entry.reason)
    release: dict[str, Variant] = {
        "Version": Variant("s", entry.version_new or entry.version_old),
        "Metadata": Variant(
            "a{ss}",
            {
                "BootId": entry.boot_id,
                "LivefwOperation": entry.op_id,
                "LivefwKind": entry.kind,
                "LivefwState": entry.state,
            },
        ),
    }
    data = entry.data
    # fwupdmgr prints the release name ("(null) Update:" without one); a raw
    # capsule installed through livefw's own API has none: the device's name
    release["Name"] = Variant("s", str(data.get("release-name") or entry.device_name))
    if data.get("release-description"):
        release["Description"] = Variant("s", str(data["release-description"]))
    if data.get("appstream-id"):
        release["AppstreamId"] = Variant("s", str(data["appstream-id"]))
    if data.get("cabinet-sha1"):
        release["Checksum"] = Variant(
            "s", f"{data['cabinet-sha1']},{data.get('cabinet-sha256', '')}"
        )
    if data.get("payload-name"):
        release["Filename"] = Variant("s", str(data["payload-name"]))
    if data.get("remote-id"):
        release["RemoteId"] = Variant("s", str(data["remote-id"]))
    if data.get("protocol"):
        release["Protocol"] = Variant("s", str(data["protocol"]))
    result["Release"] = Variant("aa{sv}", [release])
    return result


def detail_dict(detail: Detail, created: int) -> dict[str, Variant]:
    """GetDetails: the device a cabinet's release is for, with that release."""
    candidate = detail.candidate
    if detail.device is not None:
        result = device_dict(detail.device, detail.supported, created)
    else:
        result = {
            "Guid": Variant("as", list(candidate.release.guids)),
            "Name": Variant("s", candidate.release.name or candidate.release.appstream_id),
            "Flags": Variant("t", 0),
            "Problems": Variant("t", 0),
            "UpdateError": Variant("s", "Device was not found"),
        }
    result["Release"] = Variant("aa{sv}", [release_dict(candidate, detail.order)])
    return result


def remote_dicts(remotes: "list[Remote]") -> list[dict[str, Variant]]:
    """GetRemotes: livefw's directory remotes, then fwupd's LVFS remote, disabled.

    fwupdmgr expects the LVFS remote (refresh, report-devices, the upload nag);
    livefw downloads nothing, so it is offered and disabled, as when a user runs
    ``fwupdmgr disable-remote lvfs`` with fwupd.
    """
    result = [
        {
            "RemoteId": Variant("s", remote.id),
            "Title": Variant("s", remote.title),
            "Type": Variant("u", REMOTE_KIND_DIRECTORY),
            "Flags": Variant("t", REMOTE_ENABLED if remote.enabled else 0),
            "Enabled": Variant("b", remote.enabled),
            "ApprovalRequired": Variant("b", False),
            "Uri": Variant("s", "file://" + remote.path),
            "FilenameSource": Variant("s", remote.config_path),
            "Priority": Variant("i", remote.priority),
            "ModificationTime": Variant("t", remote.mtime or int(time.time())),
        }
        for remote in remotes
    ]
    result.append(
        {
            "RemoteId": Variant("s", LVFS_REMOTE_ID),
            "Title": Variant("s", "Linux Vendor Firmware Service (not used by livefw)"),
            "Type": Variant("u", REMOTE_KIND_DOWNLOAD),
            "Flags": Variant("t", 0),
            "Enabled": Variant("b", False),
            "ApprovalRequired": Variant("b", False),
            "Uri": Variant("s", LVFS_METADATA_URI),
            "MetadataURI": Variant("s", LVFS_METADATA_URI),
            "Priority": Variant("i", 0),
        }
    )
    return result


def security_attr_dict(attr: SecurityAttr) -> dict[str, Variant]:
    """An HSI attribute as fwupd's dict (libfwupd/fwupd-security-attr.c)."""
    return {
        "AppstreamId": Variant("s", attr.appstream_id),
        "Name": Variant("s", attr.name),
        "Summary": Variant("s", attr.summary),
        "Plugin": Variant("s", attr.plugin),
        "Created": Variant("t", int(time.time())),
        "HsiLevel": Variant("u", attr.level),
        "HsiResult": Variant("u", HSI_RESULT.get(attr.result, 0)),
        "HsiResultSuccess": Variant("u", HSI_RESULT.get(attr.success_result, 0)),
        "Flags": Variant("t", attr.flags()),
    }
