#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: livefw developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: livefw_facts
short_description: Gather livefwd's devices, plugins and recent history as facts
version_added: "0.1.0"
description:
  - Asks livefwd on the target (through the C(livefw) CLI) for its devices with their
    running and pending versions and update states, its plugins and why any did not load,
    and the newest history rows, and registers them as the C(livefw) fact.
options:
  history_limit:
    description:
      - How many history rows (newest first) to include; 0 for all.
    type: int
    default: 20
extends_documentation_fragment:
  - livefw.firmware.livefw
author:
  - livefw developers (@livefw)
"""

EXAMPLES = r"""
- name: Read the firmware state of every host
  livefw.firmware.livefw_facts:

- name: Show what waits for activation
  ansible.builtin.debug:
    msg: "{{ ansible_facts.livefw.pending }}"
"""

RETURN = r"""
ansible_facts:
  description: Facts added under C(livefw).
  returned: always
  type: dict
  contains:
    livefw:
      description: livefwd's view of the machine.
      type: dict
      contains:
        devices:
          description: Every device as C(livefw get-devices --json) prints it (Id, Name,
            Plugin, Version, VersionPending, Flags, UpdateState, ...).
          type: list
          elements: dict
        plugins:
          description: Each plugin with its probe result and the reason it did not load.
          type: list
          elements: dict
        history:
          description: The newest install and activation attempts, newest first.
          type: list
          elements: dict
        pending:
          description: Ids of the devices with an update waiting for activation.
          type: list
          elements: str
        versions:
          description: Running version by device Id.
          type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.livefw.firmware.plugins.module_utils.livefw_cli import (
    COMMON_ARGS,
    Livefw,
    LivefwError,
)


def main():
    argument_spec = dict(COMMON_ARGS, history_limit={"type": "int", "default": 20})
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    if module.params["history_limit"] < 0:
        module.fail_json(msg="history_limit must be 0 (all) or more")
    cli = Livefw(module)
    try:
        devices = cli.devices()
        plugins = cli.run("plugins") or []
        args = ["history"]
        if module.params["history_limit"]:
            args += ["--limit", module.params["history_limit"]]
        history = cli.run(*args) or []
    except LivefwError as error:
        cli.fail(error)
    facts = {
        "devices": devices,
        "plugins": plugins,
        "history": history,
        "pending": [d["Id"] for d in devices if "needs-activation" in d.get("Flags", [])],
        "versions": {d["Id"]: d.get("Version", "") for d in devices},
    }
    module.exit_json(changed=False, ansible_facts={"livefw": facts})


if __name__ == "__main__":
    main()
