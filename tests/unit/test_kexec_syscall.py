"""The real provider's kexec issues reboot(MAGIC1, MAGIC2, LINUX_REBOOT_CMD_KEXEC).

Nothing here can reboot this machine: the provider runs in a child process that has
no CAP_SYS_BOOT (dropped from the bounding set with setpriv when we are root; the
child checks its own capability sets and refuses to go on if CAP_SYS_BOOT is still
there), and under strace, which answers the reboot system call itself with EPERM
(``inject=reboot:error=EPERM``) so the kernel never sees it. Without CAP_SYS_BOOT the
kernel would answer EPERM before looking at any argument (kernel/reboot.c); strace
prints the arguments as the process passed them, which is what this test checks.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

#: CAP_SYS_BOOT (include/uapi/linux/capability.h).
CAP_SYS_BOOT = 22

CHILD = f"""
import asyncio, errno, sys
caps = {{}}
for line in open("/proc/self/status"):
    key, _, value = line.partition(":")
    if key in ("CapEff", "CapPrm", "CapAmb", "CapInh"):
        caps[key] = int(value, 16)
if any(value & (1 << {CAP_SYS_BOOT}) for value in caps.values()):
    print("REFUSED: this process still has CAP_SYS_BOOT", caps)
    sys.exit(99)
from livefw.errors import KernelError
from livefw.kernel.real import RealProvider
try:
    asyncio.run(RealProvider().kexec())
except KernelError as error:
    print("ERRNO", error.errno)
    sys.exit(0)
print("RETURNED")
sys.exit(1)
"""


def _command(log: Path) -> list[str]:
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed (make test installs it: mk/liveupdate.mk)")
    command = [strace, "-f", "-qq", "-e", "signal=none", "-e", "trace=reboot"]
    command += ["-e", "inject=reboot:error=EPERM", "-o", str(log), sys.executable, "-c", CHILD]
    if os.geteuid() != 0:
        return command  # an unprivileged user has no CAP_SYS_BOOT to drop
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is needed to drop CAP_SYS_BOOT as root")
    return [setpriv, "--bounding-set", "-sys_boot", "--inh-caps", "-sys_boot", "--", *command]


def test_kexec_passes_the_command_not_the_magic(tmp_path: Path) -> None:
    log = tmp_path / "strace.log"
    command = _command(log)
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0 and "PTRACE_" in result.stderr and "REFUSED" not in result.stdout:
        pytest.skip(f"strace cannot trace here: {result.stderr.strip()[:200]}")
    assert "REFUSED" not in result.stdout, result.stdout
    assert result.returncode == 0, (result.stdout, result.stderr)
    # strace injected EPERM; the provider reports it as a KernelError
    assert "ERRNO 1" in result.stdout, result.stdout
    calls = [line for line in log.read_text().splitlines() if "reboot(" in line]
    assert len(calls) == 1, calls
    call = calls[0]
    assert re.search(
        r"reboot\(LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_KEXEC\b", call
    ), call
    assert "(INJECTED)" in call, call
