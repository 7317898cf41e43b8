"""fwctl device firmware RPC plugin."""

from livefw.plugins.fwctl.plugin import (
    FwctlConfig,
    FwctlDevice,
    FwctlPlugin,
    RpcOptions,
    RpcPlan,
    RpcResult,
    parse_scope,
    scope_name,
)

__all__ = [
    "FwctlConfig",
    "FwctlDevice",
    "FwctlPlugin",
    "RpcOptions",
    "RpcPlan",
    "RpcResult",
    "parse_scope",
    "scope_name",
]
