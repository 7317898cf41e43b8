# -*- coding: utf-8 -*-
# Copyright: livefw developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run the livefw CLI with --json on the target and turn its answers into Python."""

from __future__ import annotations

import json

#: options every module takes (see the livefw.firmware.livefw doc fragment).
COMMON_ARGS = {
    "bus_address": {"type": "str"},
    "livefw_path": {"type": "str", "default": "livefw"},
}


class LivefwError(Exception):
    """livefw exited non-zero: its message, exit code and D-Bus error name."""

    def __init__(self, message, rc, name=""):
        super().__init__(message)
        self.message = message
        self.rc = rc
        self.name = name


class Livefw:
    """The livefw CLI, bound to one AnsibleModule (its bus and binary options)."""

    def __init__(self, module):
        self.module = module
        self.binary = module.params["livefw_path"]
        self.environ = {}
        if module.params.get("bus_address"):
            self.environ["LIVEFW_BUS_ADDRESS"] = module.params["bus_address"]

    def run(self, *args, **kwargs):
        """Run ``livefw ARGS [--json]``; the parsed JSON (or text), or LivefwError."""
        want_json = kwargs.get("json_output", True)
        ok_codes = kwargs.get("ok_codes", (0,))
        command = [self.binary] + [str(arg) for arg in args]
        if want_json:
            command.append("--json")
        rc, out, err = self.module.run_command(command, environ_update=self.environ)
        if rc not in ok_codes:
            raise self._error(rc, out, err)
        if not want_json:
            return out
        try:
            return json.loads(out) if out.strip() else None
        except ValueError:
            raise LivefwError("livefw printed something that is not JSON: %s" % out[:200], rc)

    @staticmethod
    def _error(rc, out, err):
        for line in reversed((err or "").strip().splitlines()):
            line = line.strip()
            if line.startswith("{"):
                try:
                    data = json.loads(line)
                except ValueError:
                    break
                return LivefwError(
                    data.get("message", line), int(data.get("exit_code", rc)), data.get("error", "")
                )
        text = (err or out or "").strip() or "livefw exited with %d" % rc
        if text.startswith("error: "):
            text = text[len("error: "):]
        return LivefwError(text, rc)

    def fail(self, error, **extra):
        """fail_json with livefw's message, exit code and error name."""
        self.module.fail_json(
            msg="livefw: %s" % error.message, rc=error.rc, error=error.name, **extra
        )

    # ------------------------------------------------------------------ queries

    def devices(self):
        return self.run("get-devices") or []

    def device(self, query):
        """One device by Id, unique Id prefix or name, as livefw resolves it."""
        return self.run("get-device", query)


def normalize_guid(guid):
    return str(guid).strip().lower()
