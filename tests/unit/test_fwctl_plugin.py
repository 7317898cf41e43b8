"""The fwctl plugin with the engine on the simulated machine, without a bus."""

import asyncio
import hashlib
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from livefw.config import Config
from livefw.engine import Engine
from livefw.errors import InvalidArgument, NotFound, NotSupported, PermissionDenied
from livefw.kernel.real import RealProvider
from livefw.kernel.sim.fwctl import FwctlComponent
from livefw.kernel.uapi import fwctl as uapi
from livefw.kernel.uapi.fwctl import Scope
from livefw.plugin import Plugin, PluginContext
from livefw.plugins.fwctl import (
    FwctlConfig,
    FwctlContext,
    FwctlDevice,
    FwctlPlugin,
    RpcOptions,
    parse_scope,
)
from livefw.plugins.fwctl.device import Parent
from livefw.testing import wait_for

MEDIA = "6b0c3a2e-6f1d-4c1e-9a53-1f2d3c4b5a60"  # reset-only effects: debug-write
THERMAL = "a7c3d1e4-0b2f-4e7a-8c19-5d6e7f809112"  # immediate effects: debug-write-full
SCRUB = "96dad7d6-fde8-482b-a733-75774e06db8a"  # kernel-owned
SANITIZE = "c0ffee00-1234-4abc-9def-0123456789ab"  # background: never


def config(**fwctl: Any) -> Config:
    return Config.model_validate({"plugins": {"fwctl": fwctl}})


@pytest.fixture
async def engine(make_engine: Callable[..., Any]) -> Engine:
    return await make_engine([FwctlPlugin])  # type: ignore[no-any-return]


def plugin(engine: Engine) -> FwctlPlugin:
    found = engine.plugins["fwctl"].plugin
    assert isinstance(found, FwctlPlugin)
    return found


def sim(engine: Engine) -> FwctlComponent:
    component = engine.provider.machine.components["fwctl"]  # type: ignore[attr-defined]
    assert isinstance(component, FwctlComponent)
    return component


def device(engine: Engine, type_name: str) -> FwctlDevice:
    return next(
        d
        for d in engine.devices.values()
        if isinstance(d, FwctlDevice) and d.type_name == type_name
    )


def sent(engine: Engine) -> int:
    return sum(sim(engine).rpc_counts.values())


async def hot_add(engine: Engine, options: dict[str, str]) -> None:
    """Hot-add a simulated node; the engine subscribed before coldplug (start())."""
    await asyncio.to_thread(sim(engine).add_device, options)


# ------------------------------------------------------------------ devices


async def test_one_device_per_node_with_parent_and_info(engine: Engine) -> None:
    assert len(engine.devices) == 2
    cxl = device(engine, "cxl")
    assert cxl.id == hashlib.sha1(b"fwctl:cxl@0000:0d:00.0").hexdigest()
    assert cxl.name == "CXL memory device mem0 at 0000:0d:00.0"
    assert cxl.protocol == "org.livefw.fwctl"
    assert cxl.plugin == "fwctl"
    assert "updatable" not in cxl.flags
    assert cxl.metadata["parent"] == "mem0"
    assert cxl.metadata["pci-driver"] == "cxl_pci"
    assert cxl.metadata["node"] == "/dev/fwctl/fwctl0"
    assert cxl.metadata["features"] == "6"
    assert cxl.fwctl_info()["device-data"] == b""
    assert [f.uuid for f in cxl.features if f.changeable] == [MEDIA, THERMAL, SANITIZE]
    mlx5 = device(engine, "mlx5")
    assert mlx5.name == "mlx5 device at 0000:08:00.0 (mlx5_core)"
    assert mlx5.vendor == "NVIDIA (Mellanox)"
    # mlx5ctl_probe registers under the PCI function, not the auxiliary device
    assert (mlx5.parent.name, mlx5.parent.pci_address) == ("0000:08:00.0", "0000:08:00.0")
    assert mlx5.parent.driver == "mlx5_core"
    assert mlx5.fwctl_info()["uctx-caps"] == uapi.MLX5_UCTX_CAP_TOOLS_RESOURCES
    # coldplug closed every fd it opened
    assert sim(engine).open_uids[1] == set()


async def test_devices_get_the_context_not_the_plugin(engine: Engine) -> None:
    """The plugin pattern (issue 15): a device holds the shared FwctlContext only."""
    fwctl = plugin(engine)
    for found in (device(engine, "cxl"), device(engine, "mlx5")):
        assert found.ctx is fwctl.device_ctx
        assert isinstance(found.ctx, FwctlContext)
        assert not any(isinstance(value, Plugin) for value in vars(found).values())
        assert not hasattr(found, "owner")
    assert not hasattr(fwctl, "rpc")
    assert not hasattr(fwctl, "check_rpc")


def _real_sysfs(root: Path) -> None:
    """The kernel's layout with real symlinks: a CXL memdev and an mlx5 PCI function."""

    def write(path: str, text: str) -> None:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)

    def link(path: str, target: str) -> None:
        """A relative link, as sysfs makes them (``target`` is relative to the root)."""
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).symlink_to(os.path.relpath(root / target, (root / path).parent))

    bridge = "sys/devices/pci0000:00/0000:00:01.0"
    cxl, mlx5 = f"{bridge}/0000:0d:00.0", "sys/devices/pci0000:00/0000:08:00.0"
    write(f"{cxl}/uevent", "DRIVER=cxl_pci\nPCI_SLOT_NAME=0000:0d:00.0\n")
    write(f"{cxl}/vendor", "0x8086\n")
    write(f"{cxl}/mem0/uevent", "MAJOR=250\nMINOR=0\nDEVNAME=cxl/mem0\nDRIVER=cxl_mem\n")
    write(f"{cxl}/mem0/fwctl/fwctl0/uevent", "MAJOR=239\nMINOR=0\nDEVNAME=fwctl/fwctl0\n")
    link(f"{cxl}/mem0/fwctl/fwctl0/device", f"{cxl}/mem0")
    write(f"{mlx5}/uevent", "DRIVER=mlx5_core\nPCI_SLOT_NAME=0000:08:00.0\n")
    write(f"{mlx5}/vendor", "0x15b3\n")
    write(f"{mlx5}/fwctl/fwctl1/uevent", "MAJOR=239\nMINOR=1\nDEVNAME=fwctl/fwctl1\n")
    link(f"{mlx5}/fwctl/fwctl1/device", mlx5)
    link("sys/class/fwctl/fwctl0", f"{cxl}/mem0/fwctl/fwctl0")
    link("sys/class/fwctl/fwctl1", f"{mlx5}/fwctl/fwctl1")
    for bdf, target in (("0000:00:01.0", bridge), ("0000:0d:00.0", cxl), ("0000:08:00.0", mlx5)):
        link(f"sys/bus/pci/devices/{bdf}", target)


async def test_parents_on_the_real_sysfs_layout(tmp_path: Path) -> None:
    """The real provider's view: symlinks, no `device` link in a memdev (issue 14.7)."""
    _real_sysfs(tmp_path)
    ctx = PluginContext(
        "fwctl", RealProvider(str(tmp_path)), {}, str(tmp_path / "state"),
        lambda _d: None, lambda _i: None, list,
    )  # fmt: skip
    fwctl = FwctlPlugin(ctx)
    cxl = await fwctl._parent("sys/class/fwctl/fwctl0")
    assert (cxl.name, cxl.driver) == ("mem0", "cxl_mem")
    assert (cxl.pci_address, cxl.pci_driver, cxl.vendor_id) == ("0000:0d:00.0", "cxl_pci", 0x8086)
    mlx5 = await fwctl._parent("sys/class/fwctl/fwctl1")
    assert (mlx5.name, mlx5.pci_address, mlx5.pci_driver, mlx5.vendor_id) == (
        "0000:08:00.0",
        "0000:08:00.0",
        "mlx5_core",
        0x15B3,
    )


async def test_hotplug_adds_and_removes_devices(engine: Engine) -> None:
    component = sim(engine)
    await hot_add(engine, {"type": "mlx5", "pci": "0000:09:00.0"})
    await wait_for(lambda: len(engine.devices) == 3)
    added = next(d for d in engine.devices.values() if "0000:09:00.0" in d.name)
    assert isinstance(added, FwctlDevice)
    await asyncio.to_thread(component.remove_device, "fwctl/fwctl2")
    await wait_for(lambda: len(engine.devices) == 2)
    assert added.removed
    with pytest.raises(NotFound):
        await added.rpc(Scope.CONFIGURATION, uapi.pack_mlx5_in(0x101), RpcOptions())


async def test_refresh_drops_vanished_nodes(engine: Engine) -> None:
    component = sim(engine)
    component.remove_device("fwctl/fwctl0")
    await plugin(engine).refresh()
    assert {d.type_name for d in engine.devices.values()} == {"mlx5"}  # type: ignore[attr-defined]


# ------------------------------------------------------------------ RPCs


async def test_rpc_returns_response_and_info(engine: Engine) -> None:
    cxl = device(engine, "cxl")
    request = uapi.pack_get_supported_features(48 * 6, 0)
    with capture_logs() as logs:
        result = await cxl.rpc(
            Scope.CONFIGURATION, request, RpcOptions(response_size=64), caller_uid=1000
        )
    # the driver's length exceeds the buffer offered; the response is truncated
    # the kernel counts sizeof(struct fwctl_rpc_cxl_out): 8 more than the reply
    assert result.info["response-length"] == 24 + 6 * 48
    assert result.info["payload-length"] == 8 + 6 * 48
    assert len(result.response) == 64
    assert result.info["tainted"] is False
    assert result.info["command"] == "GET_SUPPORTED_FEATURES"
    assert result.info["device-status-name"] == "success"
    (entry,) = [log for log in logs if log["event"] == "fwctl_rpc"]
    assert (entry["uid"], entry["scope"], entry["command"], entry["result"]) == (
        1000,
        "configuration",
        "GET_SUPPORTED_FEATURES",
        "ok",
    )


async def test_mlx5_rpc_and_device_status(engine: Engine) -> None:
    mlx5 = device(engine, "mlx5")
    result = await mlx5.rpc(
        Scope.DEBUG_READ_ONLY, uapi.pack_mlx5_in(uapi.MLX5_OP_QUERY_ISSI), RpcOptions()
    )
    assert result.info["device-status-name"] == "ok"
    assert struct.unpack_from(">H", result.response, 16) == (1,)


async def test_debug_write_taints_even_when_the_device_rejects(engine: Engine) -> None:
    cxl = device(engine, "cxl")
    request = uapi.pack_set_feature(MEDIA, b"\x01" * 8, version=7)  # wrong version
    with capture_logs() as logs:
        result = await cxl.rpc(Scope.DEBUG_WRITE, request, RpcOptions())
    assert result.info["tainted"] is True
    assert result.info["device-status-name"] == "unsupported-feature-version"
    assert any(log["event"] == "fwctl_kernel_tainted" for log in logs)
    assert await cxl.ctx.tainted()


async def test_set_feature_at_debug_write_applies(engine: Engine) -> None:
    cxl = device(engine, "cxl")
    rpc = cxl.rpc
    await rpc(Scope.DEBUG_WRITE, uapi.pack_set_feature(MEDIA, b"\x42" * 4, version=1),
              RpcOptions())  # fmt: skip
    result = await rpc(Scope.CONFIGURATION, uapi.pack_get_feature(MEDIA, 0, 4), RpcOptions())
    assert result.response[8:12] == b"\x42" * 4


# ------------------------------------------------------------ refusals (item 6)


@pytest.mark.parametrize(
    ("kind", "scope", "request_bytes", "options", "error"),
    [
        # bad input
        ("cxl", Scope.CONFIGURATION, b"", RpcOptions(), InvalidArgument),
        ("cxl", Scope.CONFIGURATION, b"\x00" * 70000, RpcOptions(), InvalidArgument),
        ("cxl", Scope.CONFIGURATION, uapi.pack_get_supported_features(0, 0),
         RpcOptions(response_size=0), InvalidArgument),
        ("cxl", Scope.CONFIGURATION, uapi.pack_get_supported_features(0, 0),
         RpcOptions(response_size=2 * 1024 * 1024), InvalidArgument),
        ("cxl", Scope.CONFIGURATION, b"\x00\x05", RpcOptions(), InvalidArgument),
        ("cxl", Scope.CONFIGURATION, uapi.pack_cxl_rpc(0x4500, b""), RpcOptions(), NotSupported),
        ("cxl", Scope.CONFIGURATION, uapi.pack_get_feature(MEDIA, 0, 64),
         RpcOptions(response_size=32), InvalidArgument),
        ("mlx5", Scope.DEBUG_READ_ONLY, b"\x01\x0a", RpcOptions(), InvalidArgument),
        # escalation attempts: a write command at a read scope
        ("cxl", Scope.DEBUG_READ_ONLY, uapi.pack_set_feature(MEDIA, b"\x01", version=1),
         RpcOptions(), PermissionDenied),
        ("cxl", Scope.CONFIGURATION, uapi.pack_set_feature(MEDIA, b"\x01", version=1),
         RpcOptions(), PermissionDenied),
        ("mlx5", Scope.DEBUG_READ_ONLY, uapi.pack_mlx5_in(uapi.MLX5_OP_SET_DIAGNOSTIC_PARAMS),
         RpcOptions(), PermissionDenied),
        ("mlx5", Scope.CONFIGURATION, uapi.pack_mlx5_in(uapi.MLX5_OP_NOP), RpcOptions(),
         PermissionDenied),
        ("mlx5", Scope.CONFIGURATION, uapi.pack_mlx5_in(uapi.MLX5_OP_ACCESS_REG, 1),
         RpcOptions(), PermissionDenied),
        # debug-write for a command the immediate-effects feature needs full debug for
        ("cxl", Scope.DEBUG_WRITE, uapi.pack_set_feature(THERMAL, b"\x01", version=1),
         RpcOptions(), PermissionDenied),
        # features user space may never set
        ("cxl", Scope.DEBUG_WRITE, uapi.pack_set_feature(SCRUB, b"\x01", version=1),
         RpcOptions(), PermissionDenied),
        ("cxl", Scope.DEBUG_WRITE, uapi.pack_set_feature(SANITIZE, b"\x01", version=1),
         RpcOptions(), PermissionDenied),
        ("cxl", Scope.DEBUG_WRITE,
         uapi.pack_set_feature("00000000-0000-4000-8000-000000000001", b"\x01", version=1),
         RpcOptions(), InvalidArgument),
        # a write scope for a read command would taint for nothing
        ("mlx5", Scope.DEBUG_WRITE, uapi.pack_mlx5_in(uapi.MLX5_OP_NOP), RpcOptions(),
         InvalidArgument),
        # the kernel ignores transfer flags (cxl_set_feature): an "abort" would write
        ("cxl", Scope.DEBUG_WRITE, uapi.pack_set_feature(MEDIA, b"\x01", version=1, flags=4),
         RpcOptions(), InvalidArgument),
        ("cxl", Scope.DEBUG_WRITE, uapi.pack_set_feature(MEDIA, b"\x01", version=1, flags=1),
         RpcOptions(), InvalidArgument),
        # the kernel writes its 8-byte Set Feature reply into response-size bytes
        ("cxl", Scope.DEBUG_WRITE, uapi.pack_set_feature(MEDIA, b"\x01", version=1),
         RpcOptions(response_size=4), InvalidArgument),
        # full debug is off by default
        ("cxl", Scope.DEBUG_WRITE_FULL, uapi.pack_set_feature(THERMAL, b"\x01", version=1),
         RpcOptions(), NotSupported),
    ],
)  # fmt: skip
async def test_refused_before_anything_reaches_the_kernel(
    engine: Engine,
    kind: str,
    scope: Scope,
    request_bytes: bytes,
    options: RpcOptions,
    error: type[Exception],
) -> None:
    before = sent(engine)
    with capture_logs() as logs, pytest.raises(error):
        await device(engine, kind).rpc(scope, request_bytes, options, 1000)
    assert sent(engine) == before
    assert not sim(engine).state.tainted
    assert any(log["event"] == "fwctl_rpc_refused" and log["uid"] == 1000 for log in logs)


async def test_set_feature_reply_says_how_the_kernel_carried_it(engine: Engine) -> None:
    """cxl_set_feature(): saved across reset always, split by the mailbox size (14.4)."""
    cxl = device(engine, "cxl")
    assert cxl.mailbox_payload == 256  # payload_max of the memdev
    value = bytes(range(96))
    request = uapi.pack_set_feature(MEDIA, value, version=1)  # flags 0: no "saved" bit
    result = await cxl.rpc(Scope.DEBUG_WRITE, request, RpcOptions())
    assert result.info["saved-across-reset"] is True
    assert result.info["mailbox-commands"] == 1
    saved = uapi.pack_get_feature(MEDIA, 0, 96, selection=uapi.CXL_GET_FEAT_SEL_SAVED)
    result = await cxl.rpc(Scope.CONFIGURATION, saved, RpcOptions())
    assert result.response[8:104] == value  # saved although the caller did not ask
    # a small mailbox: the kernel splits, the reply says into how many commands
    sim(engine).configure("cxl_mbox_payload", "64")
    result = await cxl.rpc(Scope.DEBUG_WRITE, request, RpcOptions())
    assert (result.info["mailbox-commands"], result.info["device-status-name"]) == (3, "success")
    assert len([c for c in sim(engine).mailbox_log if c.opcode == 0x0502]) == 1 + 3


async def test_mlx5_reply_length_is_the_buffer_offered(engine: Engine) -> None:
    """mlx5ctl_fw_rpc never sets out_len: livefw says the length is not known (14.7)."""
    mlx5 = device(engine, "mlx5")
    request = uapi.pack_mlx5_in(uapi.MLX5_OP_QUERY_ISSI)
    result = await mlx5.rpc(Scope.DEBUG_READ_ONLY, request, RpcOptions(response_size=512))
    assert result.info["response-length"] == 512
    assert len(result.response) == 512
    assert result.info["response-length-exact"] is False
    cxl = device(engine, "cxl")
    result = await cxl.rpc(Scope.CONFIGURATION, uapi.pack_get_feature(MEDIA, 0, 4), RpcOptions())
    # CXL: the kernel counts 8 bytes past the reply; its size field says how long it is
    assert (result.info["response-length"], result.info["payload-length"]) == (20, 4)
    assert result.info["response-length-exact"] is False


@pytest.mark.parametrize(("kernel", "sent_to_kernel"), [("6.17", False), ("6.18", True)])
async def test_mlx5_commands_added_in_6_18(
    make_engine: Callable[..., Any], kernel: str, sent_to_kernel: bool
) -> None:
    engine = await make_engine([FwctlPlugin], kernel=kernel)
    mlx5 = device(engine, "mlx5")
    request = uapi.pack_mlx5_in(uapi.MLX5_OP_QUERY_ADJACENT_FUNCTIONS_ID)
    before = sent(engine)
    if sent_to_kernel:
        result = await mlx5.rpc(Scope.DEBUG_READ_ONLY, request, RpcOptions())
        assert result.info["device-status-name"] == "bad-operation"  # the firmware answered
        assert sent(engine) == before + 1
    else:
        with pytest.raises(NotSupported, match=r"from Linux 6\.18 on; this kernel is 6\.17"):
            await mlx5.rpc(Scope.DEBUG_READ_ONLY, request, RpcOptions())
        assert sent(engine) == before


async def test_no_fwctl_before_6_15(make_engine: Callable[..., Any]) -> None:
    engine = await make_engine([FwctlPlugin], kernel="6.14")
    assert engine.plugins["fwctl"].probe.result == "unsupported"
    assert engine.plugins["fwctl"].probe.reason == (
        "this kernel is 6.14; fwctl (drivers/fwctl) arrived in Linux 6.15"
    )


async def test_pds_requests_with_addresses_are_not_forwarded(engine: Engine) -> None:
    """pdsfc_fw_rpc dereferences in.payload/out.payload in the caller's memory."""
    await hot_add(engine, {"type": "pds", "pci": "0000:0a:00.0"})
    await wait_for(lambda: len(engine.devices) == 3)
    pds = device(engine, "pds")
    assert pds.parent.pci_address == "0000:0a:00.0"
    assert pds.fwctl_info()["device-data"] == b""  # pdsfc_info never sets the length
    before = sent(engine)
    with pytest.raises(NotSupported, match="addresses in the caller's memory"):
        await pds.rpc(Scope.CONFIGURATION, bytes(48), RpcOptions())
    assert sent(engine) == before


def test_bnxt_device_info_and_refusal(tmp_path: Path) -> None:
    """bnxt (not simulated): Info decodes struct fwctl_info_bnxt; RPCs are never sent.

    drivers/fwctl/bnxt/main.c bnxtctl_info returns the uctx_caps bits; a later version
    of bnxtctl_fw_rpc copies from and to host addresses inside the request.
    """
    ctx = PluginContext(
        "fwctl", RealProvider(str(tmp_path)), {}, str(tmp_path / "state"),
        lambda _d: None, lambda _i: None, list,
    )  # fmt: skip
    caps = 0b1111  # INLINE, QUERY, SEND and DMA commands
    bnxt = FwctlDevice(
        FwctlContext(ctx, FwctlConfig()),
        "fwctl3",
        "bnxt@0000:3b:00.0",
        name="bnxt device at 0000:3b:00.0 (bnxt_en)",
        vendor="Broadcom",
        device_type=uapi.DeviceType.BNXT,
        device_data=struct.pack(uapi.BNXT_INFO_FMT, caps),
        parent=Parent("0000:3b:00.0", "bnxt_en", "0000:3b:00.0", "bnxt_en", 0x14E4),
        features=(),
    )
    assert bnxt.fwctl_info()["uctx-caps"] == caps
    assert bnxt.fwctl_info()["device-type-name"] == "bnxt"
    with pytest.raises(NotSupported, match="host address fields of HWRM commands"):
        bnxt.check_rpc(Scope.DEBUG_READ_ONLY, bytes(16), RpcOptions())


def test_unknown_scope_name() -> None:
    assert parse_scope("debug-write-full") == Scope.DEBUG_WRITE_FULL
    with pytest.raises(InvalidArgument, match="unknown fwctl scope"):
        parse_scope("root")


async def test_full_debug_when_configured(make_engine: Callable[..., Any]) -> None:
    engine = await make_engine([FwctlPlugin], config=config(allow_full_debug=True))
    cxl = device(engine, "cxl")
    request = uapi.pack_set_feature(THERMAL, b"\x05", version=1)
    result = await cxl.rpc(Scope.DEBUG_WRITE_FULL, request, RpcOptions())
    assert result.info["device-status-name"] == "success"
    assert result.info["tainted"] is True
    # without CAP_SYS_RAWIO the kernel refuses (EPERM) and does not taint
    sim(engine).state.tainted = False
    sim(engine).state.daemon_has_rawio = False
    with pytest.raises(PermissionDenied, match="EPERM"):
        await cxl.rpc(Scope.DEBUG_WRITE_FULL, request, RpcOptions())
    assert not sim(engine).state.tainted


async def test_unknown_device_type_write_policy(make_engine: Callable[..., Any]) -> None:
    for allow in (False, True):
        engine = await make_engine(
            [FwctlPlugin], config=config(allow_unknown_write=allow), state_dir=None
        )
        component = sim(engine)
        if not any(n.kind == "sample" for n in component.state.nodes):
            await hot_add(engine, {"type": "sample"})
        await wait_for(lambda e=engine: any("unknown-8" in d.name for d in e.devices.values()))
        sample = device(engine, "unknown-8")
        read = await sample.rpc(Scope.DEBUG_READ_ONLY, b"ping", RpcOptions())
        assert read.response == b"ping"
        if allow:
            result = await sample.rpc(Scope.DEBUG_WRITE, b"poke", RpcOptions())
            assert result.info["tainted"] is True
        else:
            before = sent(engine)
            with pytest.raises(NotSupported, match="allow_unknown_write"):
                await sample.rpc(Scope.DEBUG_WRITE, b"poke", RpcOptions())
            assert sent(engine) == before
            assert not component.state.tainted
        await engine.stop()


async def test_kernel_refusal_maps_to_one_error_name(engine: Engine) -> None:
    mlx5 = device(engine, "mlx5")
    before = sent(engine)
    # an opcode livefw has no table entry for goes to the kernel, which refuses it
    with pytest.raises(PermissionDenied, match="EBADMSG"):
        await mlx5.rpc(Scope.DEBUG_READ_ONLY, uapi.pack_mlx5_in(0x9F0), RpcOptions())
    assert sent(engine) == before + 1


async def test_rpcs_to_one_device_are_serialized(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    active, peak = 0, 0
    real = FwctlDevice._transact

    async def slow(self: FwctlDevice, *args: Any) -> Any:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.02)
        try:
            return await real(self, *args)
        finally:
            active -= 1

    monkeypatch.setattr(FwctlDevice, "_transact", slow)
    cxl, mlx5 = device(engine, "cxl"), device(engine, "mlx5")
    request = uapi.pack_get_supported_features(0, 0)
    await asyncio.gather(*(cxl.rpc(Scope.CONFIGURATION, request, RpcOptions())
                           for _ in range(4)))  # fmt: skip
    assert peak == 1
    peak = 0
    await asyncio.gather(
        cxl.rpc(Scope.CONFIGURATION, request, RpcOptions()),
        mlx5.rpc(Scope.CONFIGURATION, uapi.pack_mlx5_in(0x101), RpcOptions()),
    )
    assert peak == 2  # different devices do not wait for each other


async def test_bad_configuration_fails_the_plugin_only(make_engine: Callable[..., Any]) -> None:
    engine = await make_engine([FwctlPlugin], config=config(max_request_size=0))
    record = engine.plugins["fwctl"]
    assert record.probe.result == "failed"
    assert "max_request_size" in record.probe.reason
    engine2 = await make_engine([FwctlPlugin], config=config(bogus=True), state_dir=None)
    assert "unknown key" in engine2.plugins["fwctl"].probe.reason


async def test_empty_machine_is_unsupported(make_engine: Callable[..., Any]) -> None:
    engine = await make_engine([FwctlPlugin], profile="empty")
    assert engine.plugins["fwctl"].probe.result == "unsupported"
    assert "CONFIG_FWCTL" in engine.plugins["fwctl"].probe.reason


async def test_device_level_failure_is_not_an_error(engine: Engine) -> None:
    from livefw.kernel.sim.machine import FaultSpec

    engine.provider.machine.add_fault(  # type: ignore[attr-defined]
        FaultSpec(component="fwctl", kind="firmware-busy")
    )
    mlx5 = device(engine, "mlx5")
    result = await mlx5.rpc(Scope.CONFIGURATION, uapi.pack_mlx5_in(0x101), RpcOptions())
    assert result.info["device-status-name"] == "bad-system-state"
    assert result.info["syndrome"] == 0x5B
