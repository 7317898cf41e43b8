"""``make demo``: a private bus, ``livefwd --simulate``, and the main job with the CLI.

Everything runs in a temporary directory and every process started here is stopped
at the end, whatever happens. Technology walkthroughs live in ``tools/demo_<tech>.py``
(``run(demo)``) and run after the core steps, in the order of ``TECHNOLOGIES``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from livefw.testing import DaemonProcess, PrivateBus

TOOLS = Path(__file__).resolve().parent
TECHNOLOGIES = ("pfru", "uefi_capsule", "fwctl", "liveupdate", "remotes")


class Demo:
    """Runs CLI steps against the demo daemon, echoing each command."""

    def __init__(self, workdir: str) -> None:
        self.workdir = workdir
        self.state_dir = os.path.join(workdir, "state")
        os.makedirs(os.path.join(workdir, "bus"), exist_ok=True)
        self.bus = PrivateBus(os.path.join(workdir, "bus")).start()
        self.config = os.path.join(workdir, "livefw.conf")
        with open(self.config, "w", encoding="utf-8") as handle:
            # no polkit on the demo bus: allow the user running the demo
            handle.write(f"[auth]\nfallback_uids = [0, {os.getuid()}]\n")
        self.daemon = DaemonProcess(self.bus, self.state_dir, config=self.config)
        self.livefw = os.path.join(os.path.dirname(sys.executable), "livefw")
        self.failures = 0

    def env(self) -> dict[str, str]:
        """The CLI's environment: the demo bus and state dir."""
        env = self.bus.env()
        env["LIVEFW_STATE_DIR"] = self.state_dir
        env.setdefault("COLUMNS", "120")
        return env

    def say(self, text: str) -> None:
        """A heading."""
        sys.stdout.write(f"\n=== {text}\n")
        sys.stdout.flush()

    def run(self, *args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
        """Run ``livefw ARGS``, echo it and its output; count unexpected exit codes."""
        sys.stdout.write(f"$ livefw {' '.join(args)}\n")
        sys.stdout.flush()
        result = subprocess.run(
            [self.livefw, *args], env=self.env(), capture_output=True, text=True, timeout=300
        )
        sys.stdout.write(result.stdout)
        sys.stdout.write(result.stderr)
        if result.returncode != expect:
            self.failures += 1
            sys.stdout.write(f"!!! exit code {result.returncode}, expected {expect}\n")
        sys.stdout.flush()
        return result

    def cli(self, *args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
        """``livefw ARGS``."""
        return self.run(*args, expect=expect)

    def sim(self, *args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
        """``livefw sim ARGS``; after reboot/kexec the daemon has ended, as a kernel would."""
        result = self.run("sim", *args, expect=expect)
        if args and args[0] in ("reboot", "kexec") and self.daemon.proc is not None:
            self.daemon.wait_exit(60)
        return result

    def start_daemon(self) -> None:
        """Start livefwd --simulate (it creates the default machine on first start)."""
        sys.stdout.write(f"$ livefwd --simulate --state-dir {self.state_dir} ...\n")
        self.daemon.start()

    def restart_daemon(self) -> None:
        """Stop the daemon if it still runs, and start it again (a new boot, after a reboot)."""
        if self.daemon.proc is not None:
            self.daemon.stop()
        self.start_daemon()

    def close(self) -> None:
        """Stop every process the demo started."""
        self.daemon.stop()
        self.bus.stop()


def core(demo: Demo) -> None:
    """The main job: see devices, activate a pending LFA image, read the history."""
    demo.say("Devices the simulated machine offers")
    demo.cli("get-devices")
    demo.cli("plugins")
    demo.say("An Arm LFA image with a pending version")
    demo.cli("get-device", "TF-A BL31")
    demo.say("Activate it without a reboot (the firmware takes a moment)")
    demo.cli("activate", "TF-A BL31")
    demo.cli("get-device", "TF-A BL31")
    demo.say("A device that cannot be activated is refused, and nothing changes")
    demo.cli("activate", "BL33", expect=5)
    demo.say("A BMC drops a new image; the firmware refuses to activate it")
    demo.sim("stage", "TF-RMM", "--version", "0.8")
    demo.sim("fault", "lfa", "activation-failed")
    demo.cli("activate", "TF-RMM", expect=1)
    demo.say("A new image appears at runtime; the kernel does not announce it, a refresh finds it")
    demo.sim("add", "lfa", "guid=5c41e000-0000-4000-8000-000000000001", "pending=1.1")
    demo.cli("refresh")
    demo.cli("get-devices")
    demo.say("History")
    demo.cli("history")


def main() -> int:
    """Run the demo; exit 1 when any step did not do what it should."""
    for tool in ("dbus-daemon", "busctl"):
        if shutil.which(tool) is None:
            sys.stderr.write(f"demo: {tool} is missing (make deps installs it)\n")
            return 1
    workdir = tempfile.mkdtemp(prefix="livefw-demo.")
    demo = Demo(workdir)
    try:
        demo.start_daemon()
        core(demo)
        for tech in TECHNOLOGIES:
            path = TOOLS / f"demo_{tech}.py"
            if not path.exists():
                continue
            spec = importlib.util.spec_from_file_location(f"demo_{tech}", path)
            assert spec is not None
            assert spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            if demo.daemon.proc is None:
                demo.start_daemon()
            module.run(demo)
    finally:
        demo.close()
        log = demo.daemon.log()
        shutil.rmtree(workdir, ignore_errors=True)
    if demo.failures:
        sys.stdout.write(f"\n{demo.failures} demo step(s) failed; daemon log:\n{log}\n")
        return 1
    sys.stdout.write("\nDemo finished: every process it started has been stopped.\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
