"""``make demo`` walkthrough for fwctl: list devices, read CXL features, scoped RPCs."""

from __future__ import annotations

from typing import Any

from livefw.kernel.uapi import fwctl as uapi

CXL = "CXL memory device"
MLX5 = "mlx5 device"
#: a vendor feature of the simulated CXL device whose changes apply after a reset.
MEDIA_POLICY = "6b0c3a2e-6f1d-4c1e-9a53-1f2d3c4b5a60"


def run(demo: Any) -> None:
    """The main job of fwctl with the CLI."""
    demo.say("fwctl: devices whose firmware takes RPCs (CXL memory, mlx5)")
    demo.cli("fwctl", "list")
    demo.cli("fwctl", "info", MLX5)
    demo.say("The CXL device's features, decoded from Get Supported Features")
    demo.cli("fwctl", "features", CXL)
    demo.say("A raw mlx5 QUERY_ADAPTER at the configuration scope (mlx5 does not say how")
    demo.say("long its answer is: the reply is the whole buffer offered)")
    demo.cli("fwctl", "rpc", MLX5, "configuration", uapi.pack_mlx5_in(0x101).hex(),
             "--response-size", "64")  # fmt: skip
    set_feature = uapi.pack_set_feature(MEDIA_POLICY, b"\x01\x02", version=1).hex()
    demo.say("Escalation: Set Feature asked for at debug-read is refused; nothing is sent")
    demo.cli("fwctl", "rpc", CXL, "debug-read", set_feature, expect=4)
    demo.say("The same Set Feature at debug-write goes through and taints the kernel")
    demo.cli("fwctl", "rpc", CXL, "debug-write", set_feature)
