#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: livefw developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: livefw_install
short_description: Install (stage) a firmware cabinet or capsule through livefwd
version_added: "0.1.0"
description:
  - Hands a firmware cabinet (C(.cab)) or a raw capsule that is on the target to livefwd,
    which stages it on the device it is for (or on O(device)).
  - Idempotent; a device that already runs, or already has staged, the version the
    file carries is not changed. For a cabinet the version and the devices come from
    the cabinet itself (C(livefw inspect)); a raw capsule's version is read by livefwd's
    plugins only, so pass O(version) to let check mode and the idempotency check know it
    (without it, the install is tried and livefwd's C(VersionSame) answer means no change).
  - Supports check mode and diff mode.
options:
  src:
    description:
      - Path of the cabinet or capsule on the target (copy it there first, for example
        with M(ansible.builtin.copy)).
    type: path
    required: true
  device:
    description:
      - Device Id, unique Id prefix or (unique part of a) name; by default livefwd finds
        the device from the file.
    type: str
  version:
    description:
      - The version the file carries, for raw capsules (cabinets name it themselves).
    type: str
  allow_older:
    description:
      - Allow a downgrade.
    type: bool
    default: false
  allow_reinstall:
    description:
      - Install even when the device already runs this version.
    type: bool
    default: false
  activate:
    description:
      - Activate right after staging, where the device can (PFRU).
    type: bool
    default: false
extends_documentation_fragment:
  - livefw.firmware.livefw
author:
  - livefw developers (@livefw)
"""

EXAMPLES = r"""
- name: Copy the cabinet to the host
  ansible.builtin.copy:
    src: files/platform-6.cab
    dest: /var/tmp/platform-6.cab
    mode: "0600"

- name: Stage it on whichever device it is for
  livefw.firmware.livefw_install:
    src: /var/tmp/platform-6.cab
  register: staged

- name: A raw PFRU capsule on a named device, activated at once
  livefw.firmware.livefw_install:
    src: /var/tmp/code-injection-6.bin
    device: "Platform firmware runtime code injection"
    version: "6"
    activate: true
"""

RETURN = r"""
targets:
  description: The devices the file is for, with the version it carries and what was done.
  returned: always
  type: list
  elements: dict
  contains:
    device_id:
      description: The device Id.
      type: str
    name:
      description: The device name.
      type: str
    version:
      description: The version the file carries (empty when unknown).
      type: str
    action:
      description: C(install), C(installed) (already running it) or C(staged) (already staged).
      type: str
entry:
  description: The history row livefwd recorded for the install (Id, State, VersionOld,
    VersionNew, Reason, ...).
  returned: when an install ran
  type: dict
file:
  description: What C(livefw inspect) found in O(src) (kind, size, sha256, releases).
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.livefw.firmware.plugins.module_utils.livefw_cli import (
    COMMON_ARGS,
    Livefw,
    LivefwError,
    normalize_guid,
)


def _targets(cli, module, info):
    """(device, version) pairs the file is for: from the cabinet, or O(device)."""
    wanted = module.params["version"] or ""
    if module.params["device"]:
        device = cli.device(module.params["device"])
        if info["kind"] == "cabinet":
            guids = {normalize_guid(g) for g in device.get("Guids", [])}
            for release in info["releases"]:
                if guids & {normalize_guid(g) for g in release["guids"]}:
                    return [(device, wanted or release["version"])]
            module.fail_json(
                msg="the cabinet has no release for %s (GUIDs %s)"
                % (device.get("Name", ""), ", ".join(sorted(guids))),
                file=info,
            )
        return [(device, wanted)]
    if info["kind"] != "cabinet":
        return []  # livefwd finds the device from a raw capsule
    found = []
    for device in cli.devices():
        guids = {normalize_guid(g) for g in device.get("Guids", [])}
        for release in info["releases"]:
            if guids & {normalize_guid(g) for g in release["guids"]}:
                found.append((device, wanted or release["version"]))
                break
    if not found:
        module.fail_json(msg="no device on this host takes the cabinet's releases", file=info)
    return found


def _action(device, version, allow_reinstall):
    if version and device.get("VersionPending") == version:
        return "staged"
    if version and device.get("Version") == version and not allow_reinstall:
        return "installed"
    return "install"


def _describe(device, pending):
    text = "%s: version %s" % (device.get("Name", device["Id"]), device.get("Version", ""))
    return text + (" (staged %s)" % pending if pending else "") + "\n"


def main():
    argument_spec = dict(
        COMMON_ARGS,
        src={"type": "path", "required": True},
        device={"type": "str"},
        version={"type": "str"},
        allow_older={"type": "bool", "default": False},
        allow_reinstall={"type": "bool", "default": False},
        activate={"type": "bool", "default": False},
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    cli = Livefw(module)
    try:
        info = cli.run("inspect", params["src"])
        targets = _targets(cli, module, info)
    except LivefwError as error:
        cli.fail(error)
    planned = [
        {
            "device_id": device["Id"],
            "name": device.get("Name", ""),
            "version": version,
            "action": _action(device, version, params["allow_reinstall"]),
        }
        for device, version in targets
    ]
    if planned and all(p["action"] != "install" for p in planned):
        module.exit_json(changed=False, targets=planned, file=info)
    after = []
    for device, version in targets:
        if params["activate"]:
            after.append(_describe(dict(device, Version=version or "(new)"), ""))
        else:
            after.append(_describe(device, version or "(new)"))
    diff = {
        "before": "".join(_describe(d, d.get("VersionPending", "")) for d, dummy in targets),
        "after": "".join(after),
    }
    if module.check_mode:
        module.exit_json(changed=True, targets=planned, file=info, diff=diff)
    args = ["install", params["src"]]
    if params["device"]:
        args.append(planned[0]["device_id"])
    for flag in ("allow_older", "allow_reinstall", "activate"):
        if params[flag]:
            args.append("--" + flag.replace("_", "-"))
    try:
        entry = cli.run(*args) or {}
    except LivefwError as error:
        if error.name == "VersionSame" and not params["allow_reinstall"]:
            module.exit_json(changed=False, targets=planned, file=info, msg=error.message)
        cli.fail(error, targets=planned, file=info)
    if not planned:
        planned = [
            {
                "device_id": entry.get("DeviceId", ""),
                "name": entry.get("DeviceName", ""),
                "version": entry.get("VersionNew", ""),
                "action": "install",
            }
        ]
    module.exit_json(changed=True, targets=planned, entry=entry, file=info, diff=diff)


if __name__ == "__main__":
    main()
