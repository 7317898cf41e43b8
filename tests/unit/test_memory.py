"""livefw.memory: freed heap pages go back to the kernel (issue 17 item 2)."""

import pytest

from livefw import memory
from livefw.bus import prebuilt
from livefw.bus.dbuslib import Variant
from livefw.bus.prebuilt import ArrayElement, ArrayReply


def _rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_trim_returns_freed_heap_pages() -> None:
    """Blocks freed between blocks that stay are returned by trim(), not before."""
    blocks = [bytes([i & 0xFF]) * 2000 for i in range(20_000)]  # ~40 MB from malloc's heap
    kept = blocks[::50]
    del blocks
    before = _rss_kib()
    if not memory.trim():
        pytest.skip("no malloc_trim in this C library")
    after = _rss_kib()
    assert before - after > 16 * 1024, (before, after)
    assert len(kept) == 400


def test_a_large_built_body_is_followed_by_a_trim(monkeypatch: pytest.MonkeyPatch) -> None:
    trims: list[int] = []
    monkeypatch.setattr(memory, "trim", lambda: trims.append(1) or True)
    reply = ArrayReply("aa{sv}")
    big = [ArrayElement("a{sv}", {"Name": Variant("s", "x" * 4000)}) for _ in range(100)]
    first = reply.reply(list(big))
    assert len(first.data) >= memory.TRIM_AFTER_BYTES
    assert trims == [1]
    assert reply.reply(list(big)) is first  # reused: nothing built, no trim
    assert trims == [1]
    ArrayReply("aa{sv}").reply([ArrayElement("a{sv}", {"Name": Variant("s", "small")})])
    assert trims == [1]
    prebuilt.built(bytes(memory.TRIM_AFTER_BYTES))
    assert trims == [1, 1]
