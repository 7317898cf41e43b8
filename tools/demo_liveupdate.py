"""``make demo`` walkthrough for the Live Update Orchestrator: memfds across a kexec."""

from __future__ import annotations

import os
from typing import Any


def run(demo: Any) -> None:
    """Create a session, preserve two files, kexec, get them back intact, finish."""
    ram = os.path.join(demo.workdir, "guest-ram.bin")
    config = os.path.join(demo.workdir, "vmm-config.json")
    with open(ram, "wb") as handle:
        handle.write(os.urandom(256 * 1024))
    with open(config, "w", encoding="utf-8") as handle:
        handle.write('{"vcpus": 4, "memory": "256K"}\n')

    demo.say("Live Update: livefwd holds /dev/liveupdate and brokers sessions for VMMs")
    demo.cli("get-device", "Live Update Orchestrator")
    demo.cli("liveupdate", "create", "vm1", "--label", "demo guest")
    demo.say("Preserve two files (each copied into a memfd) under tokens of our choice")
    demo.cli("liveupdate", "preserve", "vm1", ram, "--token", "1", "--label", "guest RAM")
    demo.cli("liveupdate", "preserve", "vm1", config, "--token", "2")
    demo.say("Bad input is refused and the session stays as it was")
    demo.cli("liveupdate", "preserve", "vm1", config, "--token", "2", expect=8)
    demo.cli("liveupdate", "finish", "vm1", expect=8)
    demo.cli("liveupdate", "create", "no/slashes", expect=8)
    demo.cli("liveupdate", "list")
    demo.cli("liveupdate", "tokens", "vm1")

    demo.say("kexec into a new kernel: the sessions livefwd holds are carried across")
    demo.sim("kexec")
    demo.start_daemon()
    demo.cli("liveupdate", "list")
    demo.say("Retrieve the session and both files, then finish it")
    ram_out = ram + ".after"
    config_out = config + ".after"
    demo.cli("liveupdate", "retrieve", "vm1", "--token", "1", "-o", ram_out)
    demo.cli("liveupdate", "retrieve", "vm1", "--token", "2", "-o", config_out)
    for before, after in ((ram, ram_out), (config, config_out)):
        with open(before, "rb") as old, open(after, "rb") as new:
            same = old.read() == new.read()
        demo.say(f"{os.path.basename(before)} identical after the kexec: {same}")
        if not same:
            demo.failures += 1
    demo.cli("liveupdate", "finish", "vm1")
    demo.cli("liveupdate", "list")
