"""Golden values of the fwctl uAPI (include/uapi/fwctl/{fwctl,cxl,mlx5,pds}.h), as literals."""

import struct

from livefw.kernel.uapi import fwctl as uapi


def test_ioctl_numbers_match_the_uapi_header() -> None:
    assert uapi.FWCTL_TYPE == 0x9A
    assert uapi.FWCTL_INFO == 0x00009A00
    assert uapi.FWCTL_RPC == 0x00009A01


def test_struct_sizes_match_gcc() -> None:
    assert struct.calcsize(uapi.FWCTL_INFO_FMT) == uapi.FWCTL_INFO_SIZE == 24
    assert struct.calcsize(uapi.FWCTL_RPC_FMT) == uapi.FWCTL_RPC_SIZE == 32
    assert uapi.CXL_RPC_SIZE == 48
    assert struct.calcsize(uapi.CXL_RPC_HDR_FMT) == 16
    assert struct.calcsize(uapi.CXL_RPC_OUT_FMT) == 8  # fwctl_rpc_cxl_out: 8 + flexible
    assert struct.calcsize(uapi.CXL_FEAT_ENTRY_FMT) == 48
    assert struct.calcsize(uapi.CXL_GET_SUP_IN_FMT) == 8
    assert struct.calcsize(uapi.CXL_GET_SUP_OUT_FMT) == 8
    assert struct.calcsize(uapi.CXL_GET_FEAT_IN_FMT) == 21
    assert struct.calcsize(uapi.CXL_SET_FEAT_HDR_FMT) == 32
    assert struct.calcsize(uapi.PDS_RPC_FMT) == 48
    assert struct.calcsize(uapi.MLX5_INFO_FMT) == 8
    assert struct.calcsize(uapi.MLX5_IN_HDR_FMT) == 16
    assert struct.calcsize(uapi.MLX5_OUT_HDR_FMT) == 16


def test_pointer_offsets() -> None:
    assert (uapi.FWCTL_INFO_DATA_PTR, uapi.FWCTL_RPC_IN_PTR, uapi.FWCTL_RPC_OUT_PTR) == (16, 16, 24)
    packed = uapi.pack_rpc(2, 10, 20)
    assert struct.unpack("<IIIIQQ", packed) == (32, 2, 10, 20, 0, 0)
    assert struct.unpack("<IIIIQ", uapi.pack_info(64)) == (24, 0, 0, 64, 0)


def test_enums_and_constants() -> None:
    assert [int(s) for s in uapi.Scope] == [0, 1, 2, 3]
    assert (uapi.DeviceType.MLX5, uapi.DeviceType.CXL, uapi.DeviceType.BNXT) == (1, 2, 3)
    assert uapi.DeviceType.PDS == 4
    assert uapi.device_type_name(8) == "unknown-8"
    assert uapi.MAX_RPC_LEN == 2 * 1024 * 1024
    assert uapi.TAINT_FWCTL == 524288
    assert (uapi.CXL_MBOX_OP_GET_SUPPORTED_FEATURES, uapi.CXL_MBOX_OP_SET_FEATURE) == (
        0x0500,
        0x0502,
    )
    assert uapi.CXL_MBOX_OP_GET_FEATURE == 0x0501


def test_mlx5_scope_table() -> None:
    assert uapi.mlx5_min_scope(0x100, 0) == uapi.Scope.CONFIGURATION  # QUERY_HCA_CAP
    assert uapi.mlx5_min_scope(0x80D, 0) == uapi.Scope.DEBUG_READ_ONLY  # NOP
    assert uapi.mlx5_min_scope(0x820, 0) == uapi.Scope.DEBUG_WRITE  # SET_DIAGNOSTIC_PARAMS
    assert uapi.mlx5_min_scope(0x805, 0) == uapi.Scope.CONFIGURATION  # ACCESS_REG write
    assert uapi.mlx5_min_scope(0x805, 1) == uapi.Scope.DEBUG_READ_ONLY  # ACCESS_REG read
    assert uapi.mlx5_min_scope(0x9999, 0) is None


def test_cxl_effects_scope_rules() -> None:
    assert uapi.cxl_set_feature_min_scope(0x0001) == uapi.Scope.DEBUG_WRITE  # cold reset
    assert uapi.cxl_set_feature_min_scope(0x0400) == uapi.Scope.DEBUG_WRITE  # conv. reset
    assert uapi.cxl_set_feature_min_scope(0x0002) == uapi.Scope.DEBUG_WRITE_FULL  # immediate
    assert uapi.cxl_set_feature_min_scope(0x0011) == uapi.Scope.DEBUG_WRITE_FULL
    assert uapi.cxl_set_feature_min_scope(0x0042) is None  # background
    assert uapi.cxl_set_feature_min_scope(0x1001) is None  # reserved bit 12
    assert uapi.cxl_set_feature_min_scope(0x0200) is None  # neither immediate nor reset


def test_feature_entry_round_trip_uses_raw_uuid_bytes() -> None:
    entry = uapi.CxlFeatureEntry("96dad7d6-fde8-482b-a733-75774e06db8a", 3, 8, 8, 1, 1, 2, 0x202)
    packed = entry.pack()
    assert len(packed) == 48
    assert packed[:4] == bytes.fromhex("96dad7d6")  # uuid_t, not EFI mixed-endian
    assert uapi.CxlFeatureEntry.unpack(packed) == entry
    assert entry.name == "patrol scrub control"
