# (a measuring harness: blocking set-up between timed sections is deliberate)
"""The peer: Debian's fwupd on a hermetic fake root (a fake ESRT of N entries)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid

from bench.config import FWUPD_BIN, log


def ensure_fwupd() -> str | None:
    """Debian's fwupd: installed with apt-get only when missing; its service never starts."""
    if os.path.exists(FWUPD_BIN):
        return None
    if os.environ.get("FWUPD", "1") == "0":
        return "skipped (FWUPD=0)"
    log("installing Debian's fwupd (apt-get; service starts blocked by policy-rc.d)")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    blocker = "/usr/sbin/policy-rc.d"
    own_blocker = not os.path.exists(blocker)
    try:
        if own_blocker:
            subprocess.run(
                [
                    *sudo,
                    "sh",
                    "-c",
                    f"printf '#!/bin/sh\\nexit 101\\n' >{blocker}; chmod 755 {blocker}",
                ],
                check=True,
            )
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(
            [*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", "fwupd"],
            check=True,
            env=env,
        )
    except (OSError, subprocess.CalledProcessError) as error:
        return f"fwupd could not be installed: {error}"
    finally:
        if own_blocker:
            subprocess.run([*sudo, "rm", "-f", blocker], check=False)
    return None if os.path.exists(FWUPD_BIN) else f"{FWUPD_BIN} is missing after install"


def fwupd_root(root: str, esrt_entries: int) -> dict[str, str]:
    """A private root for fwupd: config, state, a fake sysfs with a fake ESRT.

    fwupd reads every path from ``FWUPD_*`` variables; with an otherwise empty sysfs
    its udev backend finds nothing, ``FWUPD_EFIVARS=dummy`` keeps EFI variables in
    memory and ``FWUPD_UEFI_TEST=1`` skips the efivarfs check. ``TestDevices=true``
    adds its test plugin's webcam; the ``cpu`` plugin (real CPUID) is disabled, so
    the device set is the ESRT entries plus that webcam, on any machine.
    """
    for sub in ("etc/fwupd/remotes.d", "etc/pki", "var", "run", "lock", "proc", "dev"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    os.makedirs(os.path.join(root, "hostfs/boot/efi"), exist_ok=True)
    conf = os.path.join(root, "etc/fwupd/fwupd.conf")
    with open(conf, "w", encoding="utf-8") as f:
        f.write("[fwupd]\nIdleTimeout=0\nUpdateMotd=false\nTestDevices=true\nDisabledPlugins=cpu\n")
    os.chmod(conf, 0o640)  # fwupd "fixes" a world-readable config otherwise
    # packaged remotes, every network one disabled
    remotes = "/etc/fwupd/remotes.d"
    if os.path.isdir(remotes):
        for name in os.listdir(remotes):
            if not name.endswith(".conf"):
                continue
            with open(os.path.join(remotes, name), encoding="utf-8") as f:
                text = f.read()
            if "MetadataURI=http" in text:
                text = "\n".join(
                    "Enabled=false" if line.startswith("Enabled=") else line
                    for line in text.splitlines()
                )
            with open(os.path.join(root, "etc/fwupd/remotes.d", name), "w", encoding="utf-8") as f:
                f.write(text + "\n")
    for pki in ("/etc/pki/fwupd", "/etc/pki/fwupd-metadata"):
        if os.path.isdir(pki):
            shutil.copytree(pki, os.path.join(root, "etc/pki", os.path.basename(pki)))
    entries = os.path.join(root, "sysfs/firmware/efi/esrt/entries")
    os.makedirs(entries)
    for index in range(esrt_entries):
        entry = os.path.join(entries, f"entry{index}")
        os.makedirs(entry)
        if index == 0:
            guid, fw_type = "ddc0ee61-e7f0-4e7d-acc5-c070a398838e", 1
        else:
            guid, fw_type = str(uuid.uuid5(uuid.NAMESPACE_URL, f"livefw-bench-{index}")), 2
        values = {
            "fw_class": guid,
            "fw_type": fw_type,
            "fw_version": 65586,
            "lowest_supported_fw_version": 65582,
            "capsule_flags": "0xfe",
            "last_attempt_status": 1,
            "last_attempt_version": 18472960,
        }
        for key, value in values.items():
            with open(os.path.join(entry, key), "w", encoding="ascii") as f:
                f.write(f"{value}\n")
    return {
        "FWUPD_SYSCONFDIR": f"{root}/etc",
        "FWUPD_LOCALSTATEDIR": f"{root}/var",
        "FWUPD_RUNDIR": f"{root}/run",
        "FWUPD_LOCKDIR": f"{root}/lock",
        "FWUPD_SYSFSDIR": f"{root}/sysfs",
        "FWUPD_SYSFSFWDIR": f"{root}/sysfs/firmware",
        "FWUPD_PROCFS": f"{root}/proc",
        "FWUPD_DEVFS": f"{root}/dev",
        "FWUPD_HOSTFS_ROOT": f"{root}/hostfs",
        "FWUPD_HOSTFS_BOOT": f"{root}/hostfs/boot",
        "FWUPD_UEFI_ESP_PATH": f"{root}/hostfs/boot/efi",
        "FWUPD_EFIVARS": "dummy",
        "FWUPD_UEFI_TEST": "1",
    }


def wipe(directory: str) -> None:
    if not directory.startswith(tempfile.gettempdir() + "/"):
        raise SystemExit(f"refusing to wipe {directory}: not under the temp dir")
    for entry in os.listdir(directory):
        path = os.path.join(directory, entry)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
