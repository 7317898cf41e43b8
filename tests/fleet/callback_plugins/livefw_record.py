"""A test-only Ansible callback: every task result per host, as one JSON file.

ansible-core 2.19 moved its ``json`` stdout callback to the ansible.posix collection,
which only Ansible Galaxy serves; this records what the fleet test asserts on.
"""

from __future__ import annotations

import json
import os
from typing import Any

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: livefw_record
type: aggregate
short_description: record task results per host as JSON (livefw's fleet test)
description:
  - Writes the result of every task on every host, and the play stats, to the file
    named by the LIVEFW_RECORD environment variable when the playbook ends.
requirements:
  - enabled in callbacks_enabled
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "livefw_record"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self.tasks: dict[str, dict[str, Any]] = {}
        self.batches = 0

    def v2_playbook_on_play_start(self, play: Any) -> None:
        self.batches += 1

    def _record(self, result: Any, **extra: Any) -> None:
        data = dict(result._result)
        data.update(extra)
        name = result._task.name or result._task.get_name()
        host = result._host.get_name()
        self.tasks.setdefault(name, {})[host] = json.loads(json.dumps(data, default=str))

    def v2_runner_on_ok(self, result: Any) -> None:
        self._record(result)

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        self._record(result, failed=True)

    def v2_runner_on_skipped(self, result: Any) -> None:
        self._record(result, skipped=True)

    def v2_runner_on_unreachable(self, result: Any) -> None:
        self._record(result, unreachable=True)

    def v2_playbook_on_stats(self, stats: Any) -> None:
        hosts = sorted(stats.processed.keys())
        summary = {host: stats.summarize(host) for host in hosts}
        with open(os.environ["LIVEFW_RECORD"], "w", encoding="utf-8") as handle:
            json.dump({"tasks": self.tasks, "stats": summary, "batches": self.batches}, handle)
