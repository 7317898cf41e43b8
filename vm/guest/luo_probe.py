"""What a livefwd client may still do with a memfd after Preserve, on the real kernel.

    python3 luo_probe.py before-kexec STATE.json   # create, preserve (token 8), probe
    python3 luo_probe.py after-kexec STATE.json    # retrieve token 8, compare

Runs inside the VM guest with the project's venv. Before the kexec it keeps the memfd
it passed to livefwd's Preserve and tries: an in-place pwrite, a write that grows the
file, ftruncate up and down, then moves the file position (the kernel records it at
freeze time, mm/memfd_luo.c memfd_luo_freeze). After the kexec it retrieves the file
and reports contents, size and position. Prints one line of findings; exit 1 when a
step could not be carried out at all.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import sys

from livefw.cli.client import Client
from livefw.cli.cmd_liveupdate import _raw_call, _resolve

TOKEN = 8
SIZE = 8192
IN_PLACE = b"IN-PLACE-AFTER-PRESERVE"
POSITION = 100


def attempt(fn: object) -> str:
    try:
        fn()  # type: ignore[operator]
    except OSError as error:
        return errno.errorcode.get(error.errno or 0, str(error.errno))
    return "ok"


async def before(state_path: str) -> str:
    client = await Client.connect()
    session = await _resolve(client, "vm1")
    fd = os.memfd_create("vm-probe", os.MFD_ALLOW_SEALING)
    original = bytes(range(256)) * (SIZE // 256)
    os.write(fd, original)
    await _raw_call(client, session["path"], "Preserve", "hta{sv}", [0, TOKEN, {}], unix_fds=[fd])
    found = {
        "pwrite_in_place": attempt(lambda: os.pwrite(fd, IN_PLACE, 0)),
        "write_grow": attempt(lambda: os.pwrite(fd, b"x", SIZE)),
        "ftruncate_grow": attempt(lambda: os.ftruncate(fd, SIZE * 2)),
        "ftruncate_shrink": attempt(lambda: os.ftruncate(fd, SIZE // 2)),
        "size_after": os.fstat(fd).st_size,
    }
    os.lseek(fd, POSITION, os.SEEK_SET)
    # The fd livefwd received is a dup of ours (same open file): the kernel's
    # preserved file is this one, so the position set here is the one frozen.
    expected = bytearray(original)
    if found["pwrite_in_place"] == "ok":
        expected[: len(IN_PLACE)] = IN_PLACE
    with open(state_path, "w") as handle:
        json.dump({"found": found, "expected": expected.hex()}, handle)
    await client.close()
    # keep fd open until exit: the kernel holds its own reference anyway
    return " ".join(f"{k}={v}" for k, v in found.items())


async def after(state_path: str) -> str:
    with open(state_path) as handle:
        state = json.load(handle)
    client = await Client.connect()
    session = await _resolve(client, "vm1")
    reply = await _raw_call(client, session["path"], "Retrieve", "t", [TOKEN])
    fd = reply.unix_fds[int(reply.body[0])]
    size = os.fstat(fd).st_size
    position = os.lseek(fd, 0, os.SEEK_CUR)
    data = os.pread(fd, size, 0)
    same = data == bytes.fromhex(state["expected"])
    grow = attempt(lambda: os.pwrite(fd, b"y", size))
    await client.close()
    line = (
        f"size={size} position={position} contents_as_left={same} write_grow_after_retrieve={grow}"
    )
    if not same:
        raise SystemExit("contents differ: " + line)
    return line


def main() -> int:
    phase, state_path = sys.argv[1], sys.argv[2]
    try:
        line = asyncio.run(before(state_path) if phase == "before-kexec" else after(state_path))
    except Exception as error:  # report, do not hide, anything that went wrong
        print(f"{type(error).__name__}: {error}")
        return 1
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
