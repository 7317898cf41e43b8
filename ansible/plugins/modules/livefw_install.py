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
      - Mutually exclusive with O(from_remote); one of the two is required.
    type: path
  from_remote:
    description:
      - Install the newest release the host's own remotes offer (directory remotes in
        C(/etc/livefw/remotes.d/), filled by the operator's distribution tooling) for
        O(device), or for every device that has a newer one (C(livefw get-updates)).
    type: bool
    default: false
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

- name: Whatever newer firmware the host's directory remotes offer
  livefw.firmware.livefw_install:
    from_remote: true

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
  returned: when an install of O(src) ran
  type: dict
entries:
  description: The history rows of the releases installed with O(from_remote).
  returned: when O(from_remote) installed something
  type: list
  elements: dict
file:
  description: What C(livefw inspect) found in O(src) (kind, size, sha256, releases).
  returned: when O(src) is given
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


def _install_args(params, path, device_id):
    args = ["install", path]
    if device_id:
        args.append(device_id)
    for flag in ("allow_older", "allow_reinstall", "activate"):
        if params[flag]:
            args.append("--" + flag.replace("_", "-"))
    return args


def _diff(targets, activate):
    after = []
    for device, version in targets:
        if activate:
            after.append(_describe(dict(device, Version=version or "(new)"), ""))
        else:
            after.append(_describe(device, version or "(new)"))
    return {
        "before": "".join(_describe(d, d.get("VersionPending", "")) for d, dummy in targets),
        "after": "".join(after),
    }


def _plan(targets, allow_reinstall):
    return [
        {
            "device_id": device["Id"],
            "name": device.get("Name", ""),
            "version": version,
            "action": _action(device, version, allow_reinstall),
        }
        for device, version in targets
    ]


def _run_from_remote(module, cli):
    """Install the newest release each device's remotes offer (livefw get-updates)."""
    params = module.params
    args = ["get-updates"] + ([params["device"]] if params["device"] else [])
    try:
        offered = cli.run(*args, ok_codes=(0, 7)) or {}
        by_id = {d["Id"]: d for d in cli.devices()}
    except LivefwError as error:
        cli.fail(error)
    jobs = []
    for entry in offered.get("Devices", []):
        if entry["Id"] in by_id and entry.get("Releases"):
            jobs.append((by_id[entry["Id"]], entry["Releases"][0]))
    targets = [(device, release["Version"]) for device, release in jobs]
    planned = _plan(targets, params["allow_reinstall"])
    todo = [(p, j) for p, j in zip(planned, jobs) if p["action"] == "install"]
    if not todo:
        module.exit_json(changed=False, targets=planned, msg="no newer release is offered")
    diff = _diff([(j[0], p["version"]) for p, j in todo], params["activate"])
    if module.check_mode:
        module.exit_json(changed=True, targets=planned, diff=diff)
    entries = []
    for plan, (device, release) in todo:
        try:
            entries.append(cli.run(*_install_args(params, release["Location"], device["Id"])))
        except LivefwError as error:
            cli.fail(error, changed=bool(entries), targets=planned, entries=entries)
    module.exit_json(changed=True, targets=planned, entries=entries, diff=diff)


def main():
    argument_spec = dict(
        COMMON_ARGS,
        src={"type": "path"},
        from_remote={"type": "bool", "default": False},
        device={"type": "str"},
        version={"type": "str"},
        allow_older={"type": "bool", "default": False},
        allow_reinstall={"type": "bool", "default": False},
        activate={"type": "bool", "default": False},
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        required_one_of=[("src", "from_remote")],
        mutually_exclusive=[("src", "from_remote")],
    )
    params = module.params
    cli = Livefw(module)
    if params["from_remote"]:
        _run_from_remote(module, cli)
    try:
        info = cli.run("inspect", params["src"])
        targets = _targets(cli, module, info)
    except LivefwError as error:
        cli.fail(error)
    planned = _plan(targets, params["allow_reinstall"])
    if planned and all(p["action"] != "install" for p in planned):
        module.exit_json(changed=False, targets=planned, file=info)
    diff = _diff(targets, params["activate"])
    if module.check_mode:
        module.exit_json(changed=True, targets=planned, file=info, diff=diff)
    device_id = planned[0]["device_id"] if params["device"] else ""
    try:
        entry = cli.run(*_install_args(params, params["src"], device_id)) or {}
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
