"""Negative control of the VM lane's kexec under the unit: livefwd's own kexec call.

The sandbox scenario starts it from a byte copy of systemd/livefwd.service with a
drop-in that makes it a oneshot running this file and removes one of the two lines
the kexec needs (CAP_SYS_BOOT from the bounding set, or reboot(2) from the seccomp
filter). It prints this process's CapBnd and Seccomp, then calls the real provider's
``kexec()`` (reboot(LINUX_REBOOT_CMD_KEXEC), daemon/kernel/real.py) and prints what
the liveupdate plugin makes of the errno (plugins/liveupdate/errors.py
``map_kexec_error``). Exit 0 only for EPERM (no image is loaded there, so a call the
sandbox let through answers EINVAL). Cheaper than a whole livefwd start under TCG
(about 100 s), which would have kept sandbox-kexec over 10 minutes.
"""

from __future__ import annotations

import asyncio
import errno
import sys

from livefw.errors import KernelError
from livefw.kernel.real import RealProvider
from livefw.plugins.liveupdate.errors import map_kexec_error


def main() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        fields = dict(line.rstrip("\n").split(":\t", 1) for line in status if ":\t" in line)
    print(f"CapBnd: {fields['CapBnd']} Seccomp: {fields['Seccomp']}", flush=True)
    try:
        asyncio.run(RealProvider().kexec())
    except KernelError as error:
        print(f"{errno.errorcode.get(error.errno, error.errno)}: {map_kexec_error(error, [])}")
        return 0 if error.errno == errno.EPERM else 1
    print("reboot(LINUX_REBOOT_CMD_KEXEC) returned 0 without a kexec")
    return 1


if __name__ == "__main__":
    sys.exit(main())
