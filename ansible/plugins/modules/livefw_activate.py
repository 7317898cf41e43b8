#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: livefw developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: livefw_activate
short_description: Activate staged or pending firmware updates at runtime through livefwd
version_added: "0.1.0"
description:
  - Activates the update waiting on one device, or on every device that has one
    (the devices with the C(needs-activation) flag), one after the other.
  - Idempotent; nothing pending is no change. A failed activation fails the task with
    livefw's message; the others are still tried and every result is returned.
  - Activation can rendezvous the CPUs and reset parts of the platform (see the
    device's flags); schedule it in a maintenance window.
options:
  device:
    description:
      - Device Id, unique Id prefix or (unique part of a) name.
      - Mutually exclusive with O(pending).
    type: str
  pending:
    description:
      - Activate every device that has an update waiting for activation.
    type: bool
    default: false
extends_documentation_fragment:
  - livefw.firmware.livefw
author:
  - livefw developers (@livefw)
"""

EXAMPLES = r"""
- name: Activate the staged platform firmware update
  livefw.firmware.livefw_activate:
    device: "Platform firmware runtime code injection"

- name: Activate everything that is pending
  livefw.firmware.livefw_activate:
    pending: true
"""

RETURN = r"""
results:
  description: One entry per device activated (or that would be, in check mode).
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
    version_old:
      description: The version before.
      type: str
    version_new:
      description: The version activated (the pending one, in check mode).
      type: str
    state:
      description: The history state (success, failed), or C(would-activate) in check mode.
      type: str
    reason:
      description: livefw's reason when the activation failed.
      type: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.livefw.firmware.plugins.module_utils.livefw_cli import (
    COMMON_ARGS,
    Livefw,
    LivefwError,
)


def _waiting(device):
    return "needs-activation" in device.get("Flags", [])


def main():
    argument_spec = dict(
        COMMON_ARGS, device={"type": "str"}, pending={"type": "bool", "default": False}
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        mutually_exclusive=[("device", "pending")],
        required_one_of=[("device", "pending")],
    )
    cli = Livefw(module)
    try:
        if module.params["device"]:
            candidates = [cli.device(module.params["device"])]
        else:
            cli.run("refresh", json_output=False)
            candidates = cli.devices()
    except LivefwError as error:
        cli.fail(error)
    todo = [d for d in candidates if _waiting(d)]
    if not todo:
        module.exit_json(changed=False, results=[], msg="nothing is waiting for activation")
    if module.check_mode:
        results = [
            {
                "device_id": d["Id"],
                "name": d.get("Name", ""),
                "version_old": d.get("Version", ""),
                "version_new": d.get("VersionPending", ""),
                "state": "would-activate",
                "reason": "",
            }
            for d in todo
        ]
        module.exit_json(changed=True, results=results)
    results, failures = [], []
    for device in todo:
        try:
            entry = cli.run("activate", device["Id"]) or {}
            results.append(
                {
                    "device_id": device["Id"],
                    "name": device.get("Name", ""),
                    "version_old": entry.get("VersionOld", ""),
                    "version_new": entry.get("VersionNew", ""),
                    "state": entry.get("State", ""),
                    "reason": entry.get("Reason", ""),
                }
            )
        except LivefwError as error:
            failures.append(error)
            results.append(
                {
                    "device_id": device["Id"],
                    "name": device.get("Name", ""),
                    "version_old": device.get("Version", ""),
                    "version_new": device.get("VersionPending", ""),
                    "state": "failed",
                    "reason": error.message,
                }
            )
    if failures:
        cli.fail(failures[0], changed=True, results=results)
    module.exit_json(changed=True, results=results)


if __name__ == "__main__":
    main()
