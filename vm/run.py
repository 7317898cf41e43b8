#!/usr/bin/env python3
"""Host harness of the VM lane: boot a real kernel in QEMU and run livefwd in it.

Usage: vm/run.py [SCENARIO ...]   (default: every scenario, in SCENARIOS order)

For each scenario it boots the cached kernel (vm/build-kernel.sh) under OVMF with
the busybox initramfs (vm/build-initramfs.sh); the guest mounts this machine's root
read-only over 9p and runs vm/guest/scenarios/NAME.sh, which drives the real
``livefwd`` (no ``--simulate``) with the ``livefw`` CLI. The guest writes FACT and
RESULT lines to a writable 9p share (build/vm/NAME/); this harness then checks from
outside what the guest claims (e.g. bytes carried over a kexec) and prints one line
per scenario. Exit status: 0 when every scenario passed, 1 otherwise. A scenario
that cannot run here says why and counts as not passed.
Standard library only: it runs before the project's venv matters.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

VM_DIR = Path(__file__).resolve().parent
REPO = VM_DIR.parent
OUT = REPO / "build" / "vm"
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")


def sh(*args: str) -> str:
    """Run a vm/ script; its last stdout line(s) are what it built."""
    done = subprocess.run([str(VM_DIR / args[0]), *args[1:]], stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"vm: {args[0]} failed (exit {done.returncode})")
    return done.stdout.strip()


@dataclass
class Scenario:
    """How to boot the guest for one scenario and what to check from outside."""

    name: str
    title: str
    cmdline: str = ""
    memory: str = "2G"
    machine: str = "q35"
    extra: list[str] = field(default_factory=list)
    asl: list[str] = field(default_factory=list)  # vm/acpi/NAME.asl, compiled with iasl
    prepare: Callable[[Path], None] | None = None
    during: Callable[[Path, Callable[[], bool]], None] | None = None
    verify: Callable[[Path, list[str]], list[str]] | None = None
    timeout: int = 600


@dataclass
class Outcome:
    verdict: str
    facts: list[str]
    message: str
    seconds: float


def prepare_liveupdate(res: Path) -> None:
    (res / "payload.bin").write_bytes(secrets.token_bytes(3 * 4096 + 123))


def verify_liveupdate(res: Path, serial: list[str]) -> list[str]:
    problems = []
    boots = sum("Linux version" in line for line in serial)
    if boots < 2:
        problems.append(f"the serial console shows {boots} kernel boot(s), a kexec needs 2")
    got = res / "retrieved.bin"
    if not got.exists():
        problems.append("no retrieved.bin: nothing came back after the kexec")
    elif got.read_bytes() != (res / "payload.bin").read_bytes():
        problems.append("retrieved.bin differs from the preserved payload")
    return problems


# One CXL host bridge with two root ports: a type-3 memory device on the first; the
# second stays empty for the hotplug scenario. After the 9p devices (issue 16: a
# -virtfs placed after a CXL host bridge fails).
CXL_MACHINE = "q35,cxl=on"
CXL_ARGS = [
    "-object", "memory-backend-ram,id=vmem0,share=on,size=256M",
    "-device", "pxb-cxl,bus_nr=12,bus=pcie.0,id=cxl.1",
    "-device", "cxl-rp,port=0,bus=cxl.1,id=cxl_rp0,chassis=0,slot=2",
    "-device", "cxl-rp,port=1,bus=cxl.1,id=cxl_rp1,chassis=0,slot=3",
    "-device", "cxl-type3,bus=cxl_rp0,volatile-memdev=vmem0,id=cxl-vmem0,sn=0x1001",
    "-M", "cxl-fmw.0.targets.0=cxl.1,cxl-fmw.0.size=4G",
]  # fmt: skip
#: the test-only kernel patch's switch (vm/kernel-patches/0001-*)
CXL_CMDLINE = "cxl_core.vm_test_count_kernel_features=1"


def wait_for(path: Path, seconds: float, alive: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and alive():
        if path.exists():
            return True
        time.sleep(1)
    return False


def during_hotplug(res: Path, alive: Callable[[], bool]) -> None:
    """Hot-add a second CXL memory device when the guest asks, later remove it."""
    if not wait_for(res / "hotplug-add", 900, alive):
        return
    log = [
        monitor(res, "object_add memory-backend-ram,id=vmem1,share=on,size=256M"),
        monitor(
            res, "device_add cxl-type3,bus=cxl_rp1,volatile-memdev=vmem1,id=cxl-vmem1,sn=0x1002"
        ),
    ]
    (res / "hotplug-added").write_text("\n".join(log))
    if not wait_for(res / "hotplug-del", 900, alive):
        return
    (res / "hotplug-deleted").write_text(monitor(res, "device_del cxl-vmem1"))


def during_pfru(res: Path, alive: Callable[[], bool]) -> None:
    """Read the AML's telemetry rings out of guest memory (pmemsave), from outside."""
    if not wait_for(res / "pfru-dump", 900, alive):
        return
    for name, address in (("ring-exec.bin", 0x60100000), ("ring-history.bin", 0x60101000)):
        monitor(res, f'pmemsave {address:#x} 4096 "{res / name}"')
    (res / "pfru-dumped").write_text("done\n")


def verify_pfru(res: Path, _serial: list[str]) -> list[str]:
    history = res / "ring-history.bin"
    if not history.exists():
        return ["no dump of the firmware's history ring (QEMU monitor pmemsave)"]
    if b"activate code injection: 16 -> 17: success" not in history.read_bytes():
        return ["guest memory at 0x60101000 holds no 'activate ... 16 -> 17' record"]
    return []


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario("smoke", "boot, livefwd with the real provider, plugins and devices"),
        Scenario(
            "liveupdate",
            "Live Update across a real kexec",
            cmdline="kho=on liveupdate=on",
            prepare=prepare_liveupdate,
            verify=verify_liveupdate,
            timeout=1800,
        ),
        Scenario(
            "pfru",
            "PFRU/PFRT on the real drivers (SSDT from vm/acpi/pfrut.asl)",
            # the AML's communication buffer and telemetry rings (see pfrut.asl)
            cmdline="memmap=2M$0x60000000 nokaslr",
            asl=["pfrut"],
            during=during_pfru,
            verify=verify_pfru,
        ),
        Scenario(
            "fwctl",
            "fwctl on QEMU's CXL type-3 device",
            machine=CXL_MACHINE,
            memory="2G,maxmem=4G,slots=4",
            cmdline=CXL_CMDLINE,
            extra=CXL_ARGS,
        ),
        Scenario(
            "hotplug",
            "a CXL device hot-added through QEMU's monitor appears in livefwd",
            machine=CXL_MACHINE,
            memory="2G,maxmem=4G,slots=4",
            cmdline=CXL_CMDLINE,
            extra=CXL_ARGS,
            during=during_hotplug,
        ),
        Scenario(
            "sandbox",
            "livefwd under systemd with systemd/livefwd.service's sandbox, every device",
            machine=CXL_MACHINE,
            memory="2G,maxmem=4G,slots=4",
            cmdline="livefw.init=systemd fstab=no kho=on liveupdate=on memmap=2M$0x60000000 "
            f"nokaslr {CXL_CMDLINE}",
            extra=CXL_ARGS,
            asl=["pfrut"],
        ),
    ]
}


def qemu_command(
    sc: Scenario, tools: dict[str, str], kernel: str, initrd: str, res: Path
) -> list[str]:
    vars_copy = res / "OVMF_VARS.fd"
    shutil.copyfile(OVMF_VARS, vars_copy)
    append = " ".join(
        [
            "console=ttyS0 panic=-1 loglevel=6 no_timer_check",
            f"livefw.repo={REPO}",
            f"livefw.scenario={sc.name}",
        ]
        + ([sc.cmdline] if sc.cmdline else [])
    )
    cmd = [
        "nice", "-n", "5",
        tools["QEMU"], "-L", tools["QEMU_DATA"],
        "-machine", sc.machine, "-accel", "tcg", "-smp", "2", "-m", sc.memory,
        "-nographic", "-no-reboot", "-nic", "none",
        "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
        "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}",
        "-kernel", kernel, "-initrd", initrd, "-append", append,
        "-serial", f"file:{res / 'serial.log'}",
        "-monitor", f"unix:{res / 'monitor.sock'},server=on,wait=off",
        "-fsdev", "local,id=hostroot,path=/,security_model=none,readonly=on",
        "-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot,bus=pcie.0",
        "-fsdev", f"local,id=results,path={res},security_model=none",
        "-device", "virtio-9p-pci,fsdev=results,mount_tag=results,bus=pcie.0",
    ]  # fmt: skip
    for name in sc.asl:
        out = res / name
        subprocess.run(
            ["iasl", "-p", str(out), str(VM_DIR / "acpi" / f"{name}.asl")],
            check=True,
            capture_output=True,
        )
        cmd += ["-acpitable", f"file={out}.aml"]
    return cmd + sc.extra


def monitor(res: Path, command: str) -> str:
    """One QEMU human-monitor command; waits for the prompt after it, returns the output."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(res / "monitor.sock"))
        sock.settimeout(60)
        data = b""
        while b"(qemu) " not in data:  # the banner's prompt
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        sock.sendall(command.encode() + b"\n")
        reply = b""
        while reply.count(b"(qemu) ") < 1:
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    # drop the echo of the typed line (readline redraws it with escape sequences)
    text = reply.decode(errors="replace").split("\r\n", 1)[-1]
    with (res / "monitor.log").open("a") as log:
        log.write(f"> {command}\n{text}\n")
    return text


def run(sc: Scenario, tools: dict[str, str], kernel: str, initrd: str) -> Outcome:
    res = OUT / sc.name
    shutil.rmtree(res, ignore_errors=True)
    res.mkdir(parents=True)
    (res / "env.sh").write_text(
        f"REPO={REPO}\nKERNEL={kernel}\nINITRD={initrd}\nSCENARIO={sc.name}\n"
    )
    if sc.prepare:
        sc.prepare(res)
    cmd = qemu_command(sc, tools, kernel, initrd, res)
    (res / "qemu.cmd").write_text(" ".join(cmd) + "\n")
    start = time.monotonic()
    qemu_out = (res / "qemu.out").open("w")
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=qemu_out, stderr=subprocess.STDOUT
    )
    timed_out = False
    try:
        if sc.during:
            sc.during(res, lambda: proc.poll() is None)
        proc.wait(timeout=max(1, sc.timeout - (time.monotonic() - start)))
    except subprocess.TimeoutExpired:
        timed_out = True
        proc.kill()
        proc.wait()
    finally:
        qemu_out.close()
    seconds = time.monotonic() - start
    serial = (
        (res / "serial.log").read_text(errors="replace").splitlines()
        if (res / "serial.log").exists()
        else []
    )
    lines = (res / "result").read_text().splitlines() if (res / "result").exists() else []
    facts = [line[5:] for line in lines if line.startswith("FACT ")]
    verdicts = [line[7:] for line in lines if line.startswith("RESULT ")]
    if not verdicts:
        why = f"timed out after {sc.timeout}s" if timed_out else f"QEMU exited {proc.returncode}"
        tail = [line for line in serial if "VMINIT" in line or "Kernel panic" in line][-3:]
        return Outcome(
            "FAIL", facts, f"no verdict from the guest ({why}) {' | '.join(tail)}", seconds
        )
    verdict, _, message = verdicts[-1].partition(" ")
    if verdict == "PASS" and sc.verify:
        problems = sc.verify(res, serial)
        if problems:
            return Outcome("FAIL", facts, "guest said PASS but: " + "; ".join(problems), seconds)
    return Outcome(verdict, facts, message, seconds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", help=f"default: all of {', '.join(SCENARIOS)}")
    args = parser.parse_args()
    names = args.scenarios or list(SCENARIOS)
    for name in names:
        if name not in SCENARIOS:
            parser.error(f"unknown scenario {name!r}")
    tools = dict(line.split("=", 1) for line in sh("tools.sh").splitlines() if "=" in line)
    # LIVEFW_VM_KERNEL: boot this bzImage instead of the cached build (development)
    kernel = os.environ.get("LIVEFW_VM_KERNEL") or sh("build-kernel.sh").splitlines()[-1]
    initrd = sh("build-initramfs.sh").splitlines()[-1]
    if not (REPO / ".venv" / "bin" / "livefwd").exists():
        raise SystemExit("vm: no .venv: run `make venv` first")
    failed = 0
    for name in names:
        sc = SCENARIOS[name]
        outcome = run(sc, tools, kernel, initrd)
        verdict = f"{outcome.verdict:<4} {outcome.seconds:5.0f}s"
        print(f"vm {name:<11} {verdict}  {sc.title}: {outcome.message}")
        for item in outcome.facts:
            print(f"    {item}")
        sys.stdout.flush()
        failed += outcome.verdict != "PASS"
    print(f"{len(names) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
