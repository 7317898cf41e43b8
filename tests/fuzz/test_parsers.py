"""Fuzz targets: every parser of untrusted bytes refuses bad input with a mapped error.

A parser may return, or raise a LivefwError subclass (what the daemon maps to a D-Bus
error) or its documented ValueError type (CapsuleError, pydantic's ValidationError,
the uapi decoders' ValueError); anything else (IndexError, struct.error,
UnicodeDecodeError, RecursionError, MemoryError ...) is a bug. Every call must stay
under the hypothesis deadline (no hang) and under MEMORY_LIMIT bytes of Python
allocations (no size field that makes the parser allocate what the input claims).

Inputs are random bytes and mutations of valid samples (a bit flip, a truncation,
an overwritten length field), which reach much deeper than random bytes alone.
"""

from __future__ import annotations

import struct
import tempfile
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from livefw import cabinet, cabinet_build, jcat
from livefw.cli.cmd_pfru import _text as telemetry_text
from livefw.config import load_config
from livefw.errors import InvalidFile, LivefwError
from livefw.kernel.sim.machine import SimMachine
from livefw.kernel.uapi import capsule, efi, fwctl, pfru
from livefw.plugins.fwctl.device import parse_scope
from livefw.plugins.fwctl.drivers import check_mlx5, device_status
from livefw.plugins.pfru.telemetry import _chronological

#: Python allocations one parser call may make, whatever the input claims.
MEMORY_LIMIT = 32 * 1024 * 1024

ALLOWED = (LivefwError, ValueError)


def call(target: Callable[..., Any], *args: Any) -> None:
    """Run ``target``; fail on an unmapped exception or unbounded memory."""
    tracemalloc.start()
    try:
        target(*args)
    except ALLOWED:
        pass
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < MEMORY_LIMIT, f"{target.__name__} allocated {peak} bytes"


# ------------------------------------------------------------------ samples


def _samples() -> dict[str, bytes]:
    with tempfile.TemporaryDirectory() as tmp:
        machine = SimMachine.create(tmp, "default")
        uefi = machine.components["uefi_capsule"]
        pfru_sim = machine.components["pfru"]
        system = "uefi_capsule/ddc0ee61-e7f0-4e7d-acc5-c070a398838e"
        out = {
            "uefi": uefi.sample(system, None, None),
            "pfru": pfru_sim.sample("pfru/code-injection", None, None),
        }
    metainfo = cabinet_build.make_metainfo(
        appstream_id="org.example.fuzz",
        name="Fuzz",
        guids=["ddc0ee61-e7f0-4e7d-acc5-c070a398838e"],
        version="1.2.3",
        payload_name="firmware.bin",
        payload=b"\x01" * 64,
    )
    out["metainfo"] = metainfo
    out["cab"] = cabinet_build.make_cabinet(
        {"firmware.metainfo.xml": metainfo, "firmware.bin": b"\x01" * 64}
    )
    out["cab-plain"] = cabinet_build.make_cabinet(
        {"firmware.metainfo.xml": metainfo, "firmware.bin": b"\x01" * 64}, compress=False
    )
    option = efi.LoadOption(
        attributes=1,
        description="Linux Firmware Updater",
        file_path=[efi.FilePathNode("\\EFI\\debian\\fwupdx64.efi")],
        optional_data=b"",
    )
    out["load-option"] = option.pack()
    out["device-path"] = efi.encode_device_path([efi.FilePathNode("\\EFI\\x.efi")])
    return out


SAMPLES = _samples()


def mutated(name: str) -> st.SearchStrategy[bytes]:
    """Valid sample ``name`` with one mutation: flips, cuts, splices, length fields."""
    base = SAMPLES[name]

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        data = bytearray(base)
        kind = draw(st.sampled_from(["flip", "cut", "insert", "u32", "u16", "random"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "cut":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(max_size=64))
        elif kind in ("u32", "u16") and len(data) >= pos + 4:
            value = draw(st.sampled_from([0, 1, 0x7F, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF]))
            fmt = "<I" if kind == "u32" else "<H"
            struct.pack_into(fmt, data, pos, value & (0xFFFFFFFF if kind == "u32" else 0xFFFF))
        else:
            return draw(st.binary(max_size=512))
        return bytes(data)

    return build()


# ------------------------------------------------------------------ capsules

CLASSES = ("ddc0ee61-e7f0-4e7d-acc5-c070a398838e", "6a4e1a2f-3c55-4b3e-9d0e-7f1b2c3d4e5f")


@given(mutated("uefi"))
def test_capsule_headers(data: bytes) -> None:
    call(capsule.parse_capsule_header, data)
    call(capsule.parse_fmp_capsule_header, data, 28)
    call(capsule.parse_fmp_image_header, data, 0)
    call(capsule.parse_image_auth, data, 0)
    call(efi.inspect_capsule, data, CLASSES)


@given(mutated("pfru"))
def test_pfru_capsules(data: bytes) -> None:
    call(pfru.walk_capsule, data)


# ------------------------------------------------------------ cabinets, metainfo


@given(st.one_of(mutated("cab"), mutated("cab-plain")))
def test_cabinets(data: bytes) -> None:
    call(cabinet.read_cabinet, data)


@given(mutated("metainfo"))
def test_metainfo_in_a_cabinet(metainfo: bytes) -> None:
    data = cabinet_build.make_cabinet(
        {"firmware.metainfo.xml": metainfo, "firmware.bin": b"\x01" * 64}
    )
    call(cabinet.read_cabinet, data)


def test_metainfo_with_an_unknown_encoding_is_invalid_file() -> None:
    """Found by `make fuzz`: expat's LookupError escaped read_cabinet (an Internal
    error over the bus) for ``<?xml version="1.0" encoding="TTF-8"?>``."""
    metainfo = SAMPLES["metainfo"].replace(b'encoding="utf-8"', b'encoding="TTF-8"', 1)
    metainfo = metainfo.replace(b'encoding="UTF-8"', b'encoding="TTF-8"', 1)
    assert b"TTF-8" in metainfo
    data = cabinet_build.make_cabinet(
        {"firmware.metainfo.xml": metainfo, "firmware.bin": b"\x01" * 64}
    )
    with pytest.raises(InvalidFile, match="encoding"):
        cabinet.read_cabinet(data)


def test_metainfo_entity_expansion_is_refused() -> None:
    """A billion-laughs metainfo neither expands nor escapes as an expat error."""
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE c [<!ENTITY a "aaaaaaaaaa">'
        + b"".join(
            f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">'.encode() for i in range(8)
        )
        + b']><component type="firmware"><id>&i;</id></component>'
    )
    data = cabinet_build.make_cabinet({"firmware.metainfo.xml": bomb, "firmware.bin": b"\x01"})
    call(cabinet.read_cabinet, data)
    with pytest.raises(ALLOWED):
        cabinet.read_cabinet(data)


@given(st.binary(max_size=2048))
def test_jcat(data: bytes) -> None:
    call(jcat.parse_jcat, data)


@given(st.binary(max_size=1024))
def test_jcat_gzip_bodies(body: bytes) -> None:
    import gzip

    call(jcat.parse_jcat, gzip.compress(body))


# ------------------------------------------------------------------ EFI


@given(st.one_of(mutated("load-option"), st.binary(max_size=256)))
def test_load_options(data: bytes) -> None:
    call(efi.LoadOption.unpack, data)


@given(st.one_of(mutated("device-path"), st.binary(max_size=256)))
def test_device_paths(data: bytes) -> None:
    call(efi.decode_device_path, data)


@given(st.binary(max_size=256))
def test_efi_variables(data: bytes) -> None:
    call(efi.decode_var, data)
    call(efi.UpdateInfo.unpack, data)
    call(efi.CapsuleResult.unpack, data)


@given(st.binary(min_size=16, max_size=16))
def test_efi_times(data: bytes) -> None:
    """EFI_TIME as firmware wrote it (the caller reads exactly 16 bytes)."""
    call(efi.EfiTime.unpack, data)


@given(st.text(max_size=80))
def test_efi_names(text: str) -> None:
    call(efi.parse_var_filename, text)
    call(efi.parse_boot_var_name, text)


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "fw_class",
                "fw_type",
                "fw_version",
                "lowest_supported_fw_version",
                "capsule_flags",
                "last_attempt_version",
                "last_attempt_status",
            ]
        ),
        st.text(max_size=40),
    )
)
def test_esrt_entries(files: dict[str, str]) -> None:
    call(efi.EsrtEntry.parse, files)


# ------------------------------------------------------------- PFRT telemetry


@pytest.mark.parametrize(
    "struct_type", [pfru.UpdateCapInfo, pfru.LogInfo, pfru.LogDataInfo], ids=lambda t: t.__name__
)
@given(data=st.data())
def test_pfru_ioctl_structs(struct_type: Any, data: st.DataObject) -> None:
    """Whatever values the firmware puts into the ioctl structs (fixed-size buffers the
    kernel fills), decoding raises at most a ValueError."""
    size = {
        pfru.UpdateCapInfo: pfru.CAP_INFO.size,
        pfru.LogInfo: pfru.LOG_INFO.size,
        pfru.LogDataInfo: pfru.LOG_DATA_INFO.size,
    }[struct_type]
    raw = data.draw(st.binary(min_size=size, max_size=size))
    call(struct_type.unpack, raw)


@given(
    st.integers(0, 1 << 33),
    st.integers(0, 1 << 33),
    st.integers(0, 1 << 33),
    st.integers(0, 1 << 33),
    st.integers(0, 4096),
)
def test_telemetry_layouts(c1: int, c2: int, a1: int, a2: int, size: int) -> None:
    """Whatever chunk sizes and addresses the firmware reports, the ring read stays
    inside the mapped buffer or is refused."""
    view = memoryview(bytes(size))
    info = pfru.LogDataInfo(
        status=0,
        ext_status=0,
        chunk1_addr=a1,
        chunk2_addr=a2,
        max_data_size=size,
        chunk1_size=c1,
        chunk2_size=c2,
        rollover_cnt=0,
        reset_cnt=0,
    )
    call(_chronological, view, info)


# ------------------------------------------------------------------ fwctl


@given(st.binary(max_size=512))
def test_fwctl_replies(data: bytes) -> None:
    """A CXL Get Supported Features reply, whatever the device put in it."""
    call(fwctl.unpack_supported_features, data)


@pytest.mark.parametrize("device_type", [fwctl.DeviceType.CXL, fwctl.DeviceType.MLX5])
@given(response=st.binary(max_size=128))
def test_fwctl_device_status(device_type: fwctl.DeviceType, response: bytes) -> None:
    """The device status the plugin decodes from any RPC response."""
    call(device_status, device_type, response)


@given(st.binary(max_size=512))
def test_telemetry_records(data: bytes) -> None:
    """PFRT log records as the CLI prints them, whatever bytes the firmware wrote."""
    call(telemetry_text, data)


@given(st.binary(min_size=48, max_size=48))
def test_cxl_feature_entries(data: bytes) -> None:
    call(fwctl.CxlFeatureEntry.unpack, data)


@given(st.binary(max_size=64), st.integers(0, 1 << 20))
def test_mlx5_requests(data: bytes, size: int) -> None:
    """A caller's raw mlx5 mailbox: checked for its scope before anything is sent."""
    call(check_mlx5, data, size)


@given(st.text(max_size=30))
def test_fwctl_scope_names(text: str) -> None:
    call(parse_scope, text)


# ------------------------------------------------------------------ config


CONFIG_KEYS = st.sampled_from(
    ["daemon", "auth", "install", "plugins", "plugins.fwctl", "plugins.pfru", "x"]
)
CONFIG_VALUES = st.one_of(
    st.integers(-(1 << 70), 1 << 70),
    st.booleans(),
    st.text(max_size=20),
    st.lists(st.integers(-5, 70000), max_size=3),
    st.floats(allow_nan=True),
)


@given(st.one_of(st.text(max_size=400), st.binary(max_size=400)))
def test_config_files(text: str | bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "livefw.conf"
        if isinstance(text, str):
            path.write_text(text, encoding="utf-8", errors="surrogatepass")
        else:
            path.write_bytes(text)
        call(load_config, str(path))


@given(
    st.dictionaries(
        CONFIG_KEYS,
        st.dictionaries(
            st.sampled_from(
                [
                    "shutdown_timeout",
                    "log_level",
                    "polkit",
                    "fallback_uids",
                    "max_payload_size",
                    "only_trusted",
                    "pki_dir",
                    "remotes_dir",
                    "disabled",
                    "allow_full_debug",
                    "fwupd_compat",
                    "y",
                ]
            ),
            CONFIG_VALUES,
            max_size=4,
        ),
        max_size=4,
    )
)
def test_config_values(tables: dict[str, dict[str, Any]]) -> None:
    lines = []
    for table, values in tables.items():
        lines.append(f"[{table}]")
        for key, value in values.items():
            lines.append(f"{key} = {_toml(value)}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "livefw.conf"
        path.write_text("\n".join(lines) + "\n")
        call(load_config, str(path))


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return (
            "nan"
            if value != value
            else (
                "inf"
                if value == float("inf")
                else "-inf"
                if value == float("-inf")
                else repr(value)
            )
        )
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value)
