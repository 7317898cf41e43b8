"""What fwupd's clients read in livefw.bus.fwupd_map: a staged device, release locations.

A device whose update is staged and waits for activation: fwupd 2.0.20 (its test
plugin with ``NeedsActivation``, run hermetically with peer-bench) swaps ``updatable``
for ``updatable-hidden`` and sets ``needs-activation``. gnome-software 43.5 shows the
UpdateMessage of the device's first Release after its Install; gnome-firmware 43 and
fwupdmgr show the device's UpdateError, but not when the device has a problem
(docs/compat.md, "Staged updates"). A directory remote's release: fwupd's form in
GetReleases, gnome-software's elsewhere (docs/compat.md, "Directory remotes: Remote
ID").
"""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any

from livefw.bus.fwupd_map import (
    DEVICE_FLAGS,
    PROBLEM_SYSTEM_INHIBIT,
    UPDATE_STATE,
    device_dict,
    release_dict,
)
from livefw.device import Device
from livefw.state import UpdateState

GUID = "b2f84b79-7b6e-4e45-885f-3fb9bb185402"


def _device() -> Device:
    return Device(
        "pfru", "pfru0", name="Runtime", flags=["internal", "updatable"], guids=[GUID],
        version="3",
    )  # fmt: skip


def _staged() -> Device:
    device = _device()
    device.update(
        version_pending="4",
        flags=device.flags | {"needs-activation"},
        update_state=UpdateState.PENDING,
    )
    return device


def test_a_staged_device_reads_as_fwupds_pending_activation() -> None:
    values = {key: variant.value for key, variant in device_dict(_staged(), True, 0).items()}
    flags = values["Flags"]
    assert flags & DEVICE_FLAGS["needs-activation"]
    assert flags & DEVICE_FLAGS["updatable-hidden"]
    assert not flags & DEVICE_FLAGS["updatable"]
    assert "Problems" not in values  # fwupdmgr and gnome-firmware would hide the error
    assert values["UpdateState"] == UPDATE_STATE["pending"]
    assert values["UpdateError"].startswith("Firmware 4 is staged and waits for activation")
    (release,) = values["Release"]
    assert release["Version"].value == "4"
    assert "fwupdmgr activate" in release["UpdateMessage"].value
    assert values["UpdateMessage"] == release["UpdateMessage"].value


def test_an_inhibited_staged_device_says_it_is_inhibited() -> None:
    values = device_dict(_staged(), True, 0, {"x": "maintenance window"})
    assert values["Problems"].value == PROBLEM_SYSTEM_INHIBIT
    assert values["UpdateError"].value == "Updates are inhibited: maintenance window"
    assert "fwupdmgr activate" in values["Release"].value[0]["UpdateMessage"].value


def test_a_device_with_nothing_staged_has_no_problem_and_no_release() -> None:
    values = device_dict(_device(), True, 0)
    assert "Problems" not in values
    assert "Release" not in values
    assert "UpdateMessage" not in values
    assert "UpdateError" not in values


def test_an_image_the_platform_staged_says_how_to_activate_it() -> None:
    """An LFA image the kernel reports activation_pending for, not staged by livefw
    (its UpdateState stays none): the same hint; without a pending version, none in
    the text and no Version in the release."""
    device = Device(
        "lfa", "lfa0", name="TF-A BL31 runtime", flags=["internal", "needs-activation"],
        guids=[GUID], version="2.13",
    )  # fmt: skip
    values = device_dict(device, False, 0)
    assert values["UpdateError"].value.startswith("Firmware is staged and waits for activation")
    (release,) = values["Release"].value
    assert "Version" not in release
    assert "fwupdmgr activate" in release["UpdateMessage"].value


def _candidate(location: str) -> Any:
    release = SimpleNamespace(
        appstream_id="org.example.pfru", version="5", size=10, name="Fix", summary="",
        description="", vendor="", license="", homepage="", details_url="", release_id="",
        protocol="", update_message="", created=0, urgency="", install_duration=0,
    )  # fmt: skip
    return SimpleNamespace(
        release=release,
        cabinet=SimpleNamespace(sha1="a" * 40, sha256="b" * 64),
        trusted_payload=True,
        trusted_metadata=True,
        remote=SimpleNamespace(id="fleet"),
        location=location,
    )


def test_get_releases_has_fwupds_form_and_the_rest_gnome_softwares() -> None:
    """GetReleases: file:/// and the RemoteId (fwupdmgr get-releases, install_release
    opens location[7:]); elsewhere file://localhost (gnome-software downloads it)."""
    candidate = _candidate("/srv/fleet firmware%/pfru#5.cab")
    fwupd = release_dict(candidate, 1, as_fwupd=True)
    assert fwupd["RemoteId"].value == "fleet"
    assert fwupd["Locations"].value == ["file:///srv/fleet firmware%/pfru#5.cab"]
    assert fwupd["Locations"].value[0][7:] == candidate.location
    other = release_dict(candidate, 1)
    assert "RemoteId" not in other
    assert other["Locations"].value == ["file://localhost/srv/fleet%20firmware%25/pfru%235.cab"]


def test_a_file_name_that_is_not_utf8_gets_no_location() -> None:
    candidate = _candidate(os.fsdecode(b"/srv/fleet/\xff.cab"))
    for as_fwupd in (True, False):
        result = release_dict(candidate, 1, as_fwupd=as_fwupd)
        assert "Locations" not in result
        assert "Filename" not in result
        for variant in result.values():
            if variant.signature == "s":
                variant.value.encode()  # each string can go on the bus
