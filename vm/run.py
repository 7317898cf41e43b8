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
import struct
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

VM_DIR = Path(__file__).resolve().parent
REPO = VM_DIR.parent
OUT = REPO / "build" / "vm"
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
#: the secure-boot build (needs SMM and a secure pflash)
OVMF_CODE_SECBOOT = Path("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd")
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
    #: boot from an ESP on a virtio disk with this logical block size (512 or 4096)
    #: through vm/efi/livefw-boot.c instead of QEMU's -kernel, and let the guest reboot
    esp_block: int = 0
    #: with esp_block: OVMF's secure-boot build (SMM) with Microsoft's keys and the
    #: lane's test certificate in db; the boot program and the kernel are signed with it
    secure_boot: bool = False


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


# --- UEFI capsule through BootNext (issue 16, scenario 1)
#: a made-up device firmware class: the ESRT entry vm/efi/livefw-boot.c installs.
#: No FMP driver in OVMF knows it, so the firmware cannot apply a capsule for it.
CAPSULE_FW_CLASS = "3b8c5a1e-7d24-4f6b-9c0e-5f1a2b3c4d5e"
CAPSULE_VERSION, CAPSULE_LOWEST = 100, 50
ESP_PART_UUID = "6a1f3a5e-1c2b-4d3e-8f90-a1b2c3d4e5f6"
ESP_TYPE = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
ESP_MIB = 64


def gpt_disk(path: Path, block: int, fs_image: Path) -> None:
    """A GPT disk of ``block``-byte logical blocks with one ESP holding ``fs_image``.

    Written by hand (UEFI 2.10 §5.3: protective MBR, primary and backup header and
    entry array with their CRC32s) because sfdisk 2.38 only writes 512-byte-sector
    tables into image files. The partition starts at 1 MiB.
    """
    total = (ESP_MIB + 2) * 1024 * 1024 // block
    start = 1024 * 1024 // block
    blocks = fs_image.stat().st_size // block
    entries_blocks = 128 * 128 // block
    entry = struct.pack(
        "<16s16sQQQ72s",
        uuid.UUID(ESP_TYPE).bytes_le,
        uuid.UUID(ESP_PART_UUID).bytes_le,
        start,
        start + blocks - 1,
        0,
        "EFI System".encode("utf-16-le"),
    )
    array = entry.ljust(128 * 128, b"\0")
    disk_guid = uuid.UUID("0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0").bytes_le

    def header(mine: int, other: int, entries_at: int) -> bytes:
        fields = [b"EFI PART", 0x00010000, 92, 0, 0, mine, other]
        fields += [2 + entries_blocks, total - 2 - entries_blocks, disk_guid, entries_at]
        fields += [128, 128, zlib.crc32(array)]
        raw = struct.pack("<8sIIIIQQQQ16sQIII", *fields)
        raw = raw[:16] + struct.pack("<I", zlib.crc32(raw)) + raw[20:]
        return raw.ljust(block, b"\0")

    mbr = bytearray(block)
    mbr[446:462] = struct.pack(
        "<B3sB3sII", 0, b"\x00\x02\x00", 0xEE, b"\xff\xff\xff", 1, min(total - 1, 0xFFFFFFFF)
    )
    mbr[510:512] = b"\x55\xaa"
    with path.open("wb") as disk:
        disk.truncate(total * block)
        disk.write(bytes(mbr) + header(1, total - 1, 2) + array)
        disk.seek(start * block)
        with fs_image.open("rb") as fs:
            shutil.copyfileobj(fs, disk)
        disk.seek((total - 1 - entries_blocks) * block)
        disk.write(array + header(total - 1, 1, total - 1 - entries_blocks))


def esp_disk(res: Path, block: int, files: dict[str, Path | bytes]) -> Path:
    """``res/esp.img``: a FAT16 ESP (``block``-byte sectors) with ``files`` on it."""
    fs = res / "esp-fs.img"
    fs.unlink(missing_ok=True)
    subprocess.run(
        ["mkfs.fat", "-C", "-S", str(block), "-F", "16", "-n", "LIVEFWESP", str(fs),
         str(ESP_MIB * 1024)],
        check=True, capture_output=True,
    )  # fmt: skip
    made: set[str] = set()
    for target, source in files.items():
        parts = target.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            directory = "/".join(parts[:i])
            if directory not in made:
                subprocess.run(["mmd", "-i", str(fs), f"::/{directory}"], check=True)
                made.add(directory)
        if isinstance(source, bytes):
            tmp = res / "esp-file.tmp"
            tmp.write_bytes(source)
            source = tmp
        subprocess.run(["mcopy", "-i", str(fs), str(source), f"::/{target}"], check=True)
    disk = res / "esp.img"
    gpt_disk(disk, block, fs)
    fs.unlink()
    (res / "esp-file.tmp").unlink(missing_ok=True)
    return disk


def prepare_capsule(res: Path) -> None:
    """The ESRT entry and an FMP capsule for it (vm/make-capsule.py, livefw's packers)."""
    subprocess.run(
        [str(REPO / ".venv" / "bin" / "python"), str(VM_DIR / "make-capsule.py"), str(res),
         CAPSULE_FW_CLASS, str(CAPSULE_VERSION), str(CAPSULE_LOWEST)],
        check=True,
    )  # fmt: skip


def verify_capsule(res: Path, serial: list[str]) -> list[str]:
    """From outside: the firmware started fwupd-efi between two boots of the kernel."""
    problems = []
    text = "\n".join(serial)
    boots = text.count("livefw-boot: VM lane boot program")
    if boots < 2:
        problems.append(f"the serial console shows {boots} start(s) of livefw-boot.efi, need 2")
    if "fwupd-efi version" not in text:
        problems.append("the serial console shows no fwupd-efi run (BootNext not followed?)")
    first = text.find("livefw-boot: VM lane boot program")
    loader = text.find("fwupd-efi version")
    second = text.find("livefw-boot: VM lane boot program", first + 1)
    if not first < loader < second:
        problems.append("fwupd-efi did not run between the first and the second boot")
    return problems


def verify_capsule_sb(res: Path, serial: list[str]) -> list[str]:
    """Also: shim started the loader, and OVMF refused the loader started without shim."""
    problems = verify_capsule(res, serial)
    text = "\n".join(serial)
    if 'starting Boot0003 "Linux Firmware Updater" from HD(' not in text or (
        "shimx64.efi" not in text.split("fwupd-efi version", 1)[0].rsplit("BdsDxe", 1)[-1]
    ):
        problems.append("the firmware did not start the updater entry through shimx64.efi")
    refused = [line for line in serial if "Boot0009" in line and "failed" in line]
    if not refused:
        problems.append("no 'BdsDxe: failed to start Boot0009' (the loader without shim)")
    runs = [line for line in serial if line.startswith("../efi/") and "fwupd-efi version" in line]
    if len(runs) != 1:
        problems.append("fwupd-efi ran more than once: the firmware started it without shim")
    return problems


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
        Scenario(
            "sandbox-kexec",
            "a real kexec by livefwd under systemd with systemd/livefwd.service's sandbox",
            cmdline="livefw.init=systemd fstab=no kho=on liveupdate=on",
            prepare=prepare_liveupdate,
            verify=verify_liveupdate,
            timeout=1800,
        ),
        Scenario(
            "capsule",
            "UEFI capsule through BootNext: OVMF runs Debian's fwupd-efi (512-byte sectors)",
            esp_block=512,
            prepare=prepare_capsule,
            verify=verify_capsule,
            timeout=1800,
        ),
        Scenario(
            "capsule-sb",
            "Secure Boot: refused without shim, then through Debian's signed shim and loader",
            esp_block=512,
            secure_boot=True,
            prepare=prepare_capsule,
            verify=verify_capsule_sb,
            timeout=1800,
        ),
        Scenario(
            "capsule-4k",
            "UEFI capsule through BootNext on a 4096-byte-sector disk",
            esp_block=4096,
            prepare=prepare_capsule,
            verify=verify_capsule,
            timeout=1800,
        ),
    ]
}


def sbsign(tools: dict[str, str], source: Path, target: Path) -> Path:
    """``source`` signed with the test key whose certificate vm/build-efi.sh puts in db."""
    subprocess.run(
        ["sbsign", "--key", tools["SB_KEY"], "--cert", tools["SB_CERT"], "--output",
         str(target), str(source)],
        check=True, capture_output=True,
    )  # fmt: skip
    return target


def qemu_command(
    sc: Scenario, tools: dict[str, str], kernel: str, initrd: str, res: Path
) -> list[str]:
    vars_copy = res / "OVMF_VARS.fd"
    shutil.copyfile(tools["SB_VARS"] if sc.secure_boot else OVMF_VARS, vars_copy)
    code = OVMF_CODE_SECBOOT if sc.secure_boot else OVMF_CODE
    append = " ".join(
        [
            "console=ttyS0 panic=-1 loglevel=6 no_timer_check",
            f"livefw.repo={REPO}",
            f"livefw.scenario={sc.name}",
        ]
        + ([sc.cmdline] if sc.cmdline else [])
    )
    cmd = [
        "nice", "-n", "10",
        tools["QEMU"], "-L", tools["QEMU_DATA"],
        "-machine", sc.machine, "-accel", "tcg", "-smp", "2", "-m", sc.memory,
        "-nographic", "-nic", "none",
        "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
        "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}",
        "-serial", f"file:{res / 'serial.log'}",
        "-monitor", f"unix:{res / 'monitor.sock'},server=on,wait=off",
        "-fsdev", "local,id=hostroot,path=/,security_model=none,readonly=on",
        "-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot,bus=pcie.0",
        "-fsdev", f"local,id=results,path={res},security_model=none",
        "-device", "virtio-9p-pci,fsdev=results,mount_tag=results,bus=pcie.0",
    ]  # fmt: skip
    if sc.esp_block:
        # the firmware boots livefw-boot.efi from the ESP (removable-media path), which
        # installs the ESRT and starts the kernel; the guest may reboot (BootNext)
        boot, linux = Path(tools["BOOT_EFI"]), Path(kernel)
        if sc.secure_boot:
            boot = sbsign(tools, boot, res / "livefw-boot.signed.efi")
            linux = sbsign(tools, linux, res / "vmlinuz.signed.efi")
            cmd[cmd.index("-machine") + 1] += ",smm=on"
            cmd += ["-global", "driver=cfi.pflash01,property=secure,value=on"]
        disk = esp_disk(
            res,
            sc.esp_block,
            {
                "EFI/BOOT/BOOTX64.EFI": boot,
                "EFI/livefw/vmlinuz.efi": linux,
                "EFI/livefw/initrd.img": Path(initrd),
                "EFI/livefw/cmdline.txt": (append + r" initrd=\EFI\livefw\initrd.img").encode(),
                "EFI/livefw/esrt.bin": res / "esrt.bin",
            },
        )
        block = sc.esp_block
        cmd += [
            "-drive", f"if=none,id=esp,format=raw,file={disk}",
            "-device", f"virtio-blk-pci,drive=esp,bootindex=0,logical_block_size={block},"
            f"physical_block_size={block}",
        ]  # fmt: skip
    else:
        cmd += ["-no-reboot", "-kernel", kernel, "-initrd", initrd, "-append", append]
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
        + "".join(
            f"{k}={tools[k]}\n"
            for k in ("FWUPD_EFI", "FWUPD_EFI_SIGNED", "SHIM_SIGNED")
            if k in tools
        )
        + f"FW_CLASS={CAPSULE_FW_CLASS}\nESP_PART_UUID={ESP_PART_UUID}\n"
        + f"ESRT_VERSION={CAPSULE_VERSION}\n"
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
    if any(SCENARIOS[name].esp_block for name in names):
        tools.update(line.split("=", 1) for line in sh("build-efi.sh").splitlines() if "=" in line)
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
