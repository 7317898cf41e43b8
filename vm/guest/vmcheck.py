"""Guest-side helpers that talk to the kernel directly (not through livefwd).

    python3 vmcheck.py pfru-cap                    # PFRU_IOC_QUERY_CAP as the kernel answers
    python3 vmcheck.py pfru-capsule OUT RT PLATFORM  # a code-injection capsule (rt_ver RT)
    python3 vmcheck.py summary < devices.json     # one line per `livefw get-devices --json`
    python3 vmcheck.py device FIELD QUERY [JSON]           # a field of the device matching QUERY
    python3 vmcheck.py cxl-features DEVICE         # uuid set_size flags of each feature (livefw)
    python3 vmcheck.py cxl-get HEXUUID COUNT       # request hex of a CXL Get Feature
    python3 vmcheck.py cxl-set HEXUUID VERSION HEX # request hex of a CXL Set Feature

They let a scenario compare what livefwd reports with what the kernel's driver says.
"""

from __future__ import annotations

import fcntl
import json
import subprocess
import sys

from livefw.kernel.sim.pfru_capsule import build_capsule
from livefw.kernel.uapi import fwctl, pfru


def pfru_cap() -> int:
    buf = bytearray(pfru.CAP_INFO.size)
    with open("/dev/acpi_pfr_update0", "rb", buffering=0) as dev:
        fcntl.ioctl(dev.fileno(), pfru.PFRU_IOC_QUERY_CAP, buf, True)
    cap = pfru.UpdateCapInfo.unpack(buf)
    print(
        f"update_cap={cap.update_cap} fw_version=0x{cap.fw_version:x} "
        f"code_rt_version={cap.code_rt_version} drv_rt_version={cap.drv_rt_version} "
        f"drv_svn={cap.drv_svn} platform_id={cap.platform_id} code_type={cap.code_type}"
    )
    return 0


def pfru_capsule(out: str, rt_ver: int, platform: str) -> int:
    data = build_capsule(
        image_type=pfru.CODE_INJECTION_GUID, rt_ver=rt_ver, svn_ver=2, platform_id=platform
    )
    with open(out, "wb") as handle:
        handle.write(data)
    return 0


def device(field: str, query: str, path: str | None = None) -> int:
    if path:
        with open(path) as handle:
            text = handle.read()
    else:
        text = subprocess.run(
            ["livefw", "get-devices", "--json"], capture_output=True, text=True, check=True
        ).stdout
    for item in json.loads(text):
        text = json.dumps(item)
        if query in text:
            print(item.get(field, ""))
            return 0
    print(f"no device matching {query!r}", file=sys.stderr)
    return 3


def cxl_features(device_id: str) -> int:
    done = subprocess.run(
        ["livefw", "fwctl", "features", device_id, "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    data = json.loads(done.stdout)
    entries = data.get("entries", data) if isinstance(data, dict) else data
    for entry in entries:
        print(json.dumps(entry, sort_keys=True))
    return 0


def main() -> int:
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "pfru-cap":
        return pfru_cap()
    if cmd == "pfru-capsule":
        return pfru_capsule(args[0], int(args[1]), args[2])
    if cmd == "cxl-features":
        return cxl_features(args[0])
    if cmd == "cxl-get":
        print(fwctl.pack_get_feature(args[0], 0, int(args[1])).hex())
        return 0
    if cmd == "cxl-set":
        data = bytes.fromhex(args[2])
        print(fwctl.pack_set_feature(args[0], data, version=int(args[1])).hex())
        return 0
    if cmd == "summary":  # `livefw get-devices --json` on stdin -> one line
        items = json.load(sys.stdin)
        print(
            "; ".join(
                f"{d.get('Name')} v{d.get('Version')} [{','.join(d.get('Flags', []))}]"
                f" state={d.get('UpdateState')}"
                for d in items
            )
            or "no devices"
        )
        return 0
    if cmd == "device":
        return device(args[0], args[1], args[2] if len(args) > 2 else None)
    print(f"unknown command {cmd}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
