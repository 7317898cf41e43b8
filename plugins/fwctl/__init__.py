"""fwctl device firmware RPC plugin.

plugin.py finds the devices; device.py holds the device and its operations (Info,
Rpc); context.py what the devices share; drivers.py the per-driver request rules and
reply decoding (CXL, mlx5, pds, bnxt).
"""

from livefw.plugins.fwctl.context import FwctlConfig, FwctlContext
from livefw.plugins.fwctl.device import (
    FwctlDevice,
    RpcOptions,
    RpcPlan,
    RpcResult,
    parse_scope,
    scope_name,
)
from livefw.plugins.fwctl.plugin import FwctlPlugin

__all__ = [
    "FwctlConfig",
    "FwctlContext",
    "FwctlDevice",
    "FwctlPlugin",
    "RpcOptions",
    "RpcPlan",
    "RpcResult",
    "parse_scope",
    "scope_name",
]
