#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: livefw developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: livefw_liveupdate
short_description: List, create and drop Live Update Orchestrator sessions through livefwd
version_added: "0.1.0"
description:
  - livefwd brokers the kernel's Live Update Orchestrator (C(/dev/liveupdate)), whose
    named sessions keep preserved files across a kexec. This module lists the caller's
    sessions (root sees all), creates one, or drops one, for orchestrating kexec-based
    host updates.
  - Idempotent; supports check mode.
options:
  name:
    description:
      - The session name (1-45 characters of C([A-Za-z0-9._-])). Required unless
        O(state=query).
    type: str
  state:
    description:
      - C(present) creates the session when missing, C(absent) drops it when present
        (its files are then no longer preserved), C(query) only lists the sessions.
    type: str
    choices: [present, absent, query]
    default: present
  label:
    description:
      - A free text label stored with a new session.
    type: str
extends_documentation_fragment:
  - livefw.firmware.livefw
author:
  - livefw developers (@livefw)
"""

EXAMPLES = r"""
- name: A session for the VMM's guest memory before the kexec
  livefw.firmware.livefw_liveupdate:
    name: vmm-guests
    label: "kexec into 7.3 on {{ inventory_hostname }}"

- name: Sessions on the host
  livefw.firmware.livefw_liveupdate:
    state: query
  register: luo

- name: Drop it after the guests came back
  livefw.firmware.livefw_liveupdate:
    name: vmm-guests
    state: absent
"""

RETURN = r"""
sessions:
  description: The sessions after the change (name, state, owner uid, label, object path).
  returned: always
  type: list
  elements: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.livefw.firmware.plugins.module_utils.livefw_cli import (
    COMMON_ARGS,
    Livefw,
    LivefwError,
)


def main():
    argument_spec = dict(
        COMMON_ARGS,
        name={"type": "str"},
        state={"type": "str", "default": "present", "choices": ["present", "absent", "query"]},
        label={"type": "str"},
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        required_if=[("state", "present", ("name",)), ("state", "absent", ("name",))],
    )
    params = module.params
    cli = Livefw(module)
    try:
        sessions = cli.run("liveupdate", "list") or []
        if params["state"] == "query":
            module.exit_json(changed=False, sessions=sessions)
        exists = any(s.get("name") == params["name"] for s in sessions)
        wanted = params["state"] == "present"
        if exists == wanted:
            module.exit_json(changed=False, sessions=sessions)
        if module.check_mode:
            module.exit_json(changed=True, sessions=sessions)
        if wanted:
            args = ["liveupdate", "create", params["name"]]
            if params["label"]:
                args += ["--label", params["label"]]
        else:
            args = ["liveupdate", "drop", params["name"]]
        cli.run(*args, json_output=False)
        sessions = cli.run("liveupdate", "list") or []
    except LivefwError as error:
        cli.fail(error)
    module.exit_json(changed=True, sessions=sessions)


if __name__ == "__main__":
    main()
