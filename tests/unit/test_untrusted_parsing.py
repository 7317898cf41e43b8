"""Cabinets parsed for callers not yet authorized: small limits, one at a time, own thread."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

import livefw.releases
from livefw.cabinet_build import make_cabinet, make_metainfo
from livefw.errors import Busy
from livefw.fdread import TooLarge
from livefw.plugins.pfru.plugin import PfruPlugin
from livefw.releases import UNTRUSTED_QUEUE, UNTRUSTED_UNPACKED


def _cab(size: int) -> bytes:
    payload = bytes(size)
    return make_cabinet(
        {
            "firmware.metainfo.xml": make_metainfo(
                appstream_id="org.example.x",
                guids=["2b6f2f48-7f11-4f1a-9a43-4c2f10a1d0c5"],
                version="1",
                payload_name="firmware.bin",
                payload=payload,
            ),
            "firmware.bin": payload,
        }
    )


async def test_untrusted_limits_and_threads(make_engine: Any, monkeypatch: Any) -> None:
    engine = await make_engine([PfruPlugin])
    releases = engine.releases
    threads: list[str] = []
    real = livefw.releases.read_cabinet

    def spy(data: bytes, limits: Any = None, **kwargs: Any) -> Any:
        threads.append(threading.current_thread().name)
        return real(data, limits, **kwargs)

    monkeypatch.setattr(livefw.releases, "read_cabinet", spy)
    big = _cab(UNTRUSTED_UNPACKED + 1)
    with pytest.raises(TooLarge, match="over the limit"):
        await releases.open(big, authorized=False)
    assert len(await releases.open(big)) == 1  # authorized: the full limits
    assert threads[0].startswith("livefw-untrusted")
    assert threads[1].startswith("livefw-cabinet")


async def test_one_untrusted_caller_at_a_time_and_a_bounded_queue(make_engine: Any) -> None:
    engine = await make_engine([PfruPlugin])
    releases = engine.releases
    inside = 0
    most = 0
    release = asyncio.Event()

    async def caller() -> str:
        nonlocal inside, most
        try:
            async with releases.untrusted():
                inside += 1
                most = max(most, inside)
                await release.wait()
                inside -= 1
                return "ok"
        except Busy:
            return "busy"

    tasks = [asyncio.ensure_future(caller()) for _ in range(UNTRUSTED_QUEUE + 3)]
    await asyncio.sleep(0.05)
    release.set()
    results = await asyncio.gather(*tasks)
    assert most == 1
    assert results.count("ok") == UNTRUSTED_QUEUE
    assert results.count("busy") == 3
