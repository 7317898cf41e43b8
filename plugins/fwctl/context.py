"""What every fwctl device shares: the plugin's settings, the kernel release, kernel state.

The fwctl plugin creates one :class:`FwctlContext` and hands it to each
:class:`~livefw.plugins.fwctl.device.FwctlDevice` it creates; the devices never see the
plugin (the contract of :class:`livefw.plugin.DeviceContext`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from livefw.errors import ConfigError
from livefw.kernel.uapi import fwctl as uapi
from livefw.plugin import DeviceContext, PluginContext
from livefw.record import Frozen


class FwctlConfig(Frozen):
    """``[plugins.fwctl]`` in livefw.conf.

    Attributes:
        max_request_size: largest request accepted, bytes (the kernel's cap is 2 MiB).
        max_response_size: largest response buffer a caller may ask for.
        default_response_size: response buffer when the caller does not say.
        allow_unknown_write: allow debug-write scopes on device types without a table.
        allow_full_debug: allow the debug-write-full scope at all.
    """

    _FIELDS = (
        "max_request_size",
        "max_response_size",
        "default_response_size",
        "allow_unknown_write",
        "allow_full_debug",
    )
    max_request_size: int = 64 * 1024
    max_response_size: int = 1024 * 1024
    default_response_size: int = 64 * 1024
    allow_unknown_write: bool = False
    allow_full_debug: bool = False

    def __init__(
        self,
        max_request_size: int = 64 * 1024,
        max_response_size: int = 1024 * 1024,
        default_response_size: int = 64 * 1024,
        allow_unknown_write: bool = False,
        allow_full_debug: bool = False,
    ) -> None:
        _set = object.__setattr__
        _set(self, "max_request_size", max_request_size)
        _set(self, "max_response_size", max_response_size)
        _set(self, "default_response_size", default_response_size)
        _set(self, "allow_unknown_write", allow_unknown_write)
        _set(self, "allow_full_debug", allow_full_debug)

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> FwctlConfig:
        """Validate the plugin's config table.

        Raises:
            ConfigError: unknown key, wrong type or out-of-range value (named).
        """
        defaults = cls()
        values: dict[str, Any] = {}
        for key, value in raw.items():
            if not hasattr(defaults, key):
                raise ConfigError(f"livefw.conf: plugins.fwctl.{key}: unknown key")
            expected = type(getattr(defaults, key))
            if type(value) is not expected:
                raise ConfigError(f"livefw.conf: plugins.fwctl.{key}: must be {expected.__name__}")
            values[key] = value
        config = cls(**values)
        for key in ("max_request_size", "max_response_size", "default_response_size"):
            size = getattr(config, key)
            if not 1 <= size <= uapi.MAX_RPC_LEN:
                raise ConfigError(
                    f"livefw.conf: plugins.fwctl.{key}: must be 1..{uapi.MAX_RPC_LEN} "
                    "(the kernel refuses RPCs over 2 MiB)"
                )
        if config.default_response_size > config.max_response_size:
            raise ConfigError(
                "livefw.conf: plugins.fwctl.default_response_size: exceeds max_response_size"
            )
        return config


class FwctlContext(DeviceContext):
    """The fwctl devices' shared state.

    Attributes:
        settings: the validated ``[plugins.fwctl]`` table (``config`` is the raw one).
        kernel_release: the running kernel's (major, minor), None when unknown; set by
            the plugin's probe (mlx5's allow-list differs between releases).
    """

    def __init__(self, plugin: PluginContext, settings: FwctlConfig) -> None:
        super().__init__(plugin)
        self.settings = settings
        self.kernel_release: tuple[int, int] | None = None

    async def tainted(self) -> bool:
        """Whether the kernel carries TAINT_FWCTL (``/proc/sys/kernel/tainted``).

        drivers/fwctl/main.c ``fwctl_cmd_rpc`` adds the taint (kernel/panic.c bit 19)
        before a write-scope RPC reaches the driver (docs/kernel.md, fwctl).
        """
        provider = self.provider
        if not await provider.exists(uapi.TAINTED_PATH):
            return False
        try:
            value = int((await provider.read_attr(uapi.TAINTED_PATH)).strip() or "0")
        except ValueError:
            return False
        return bool(value & uapi.TAINT_FWCTL)

    async def payload_max(self, memdev: str) -> int:
        """A CXL memdev's mailbox payload size (``sys/bus/cxl/devices/mem<M>/payload_max``).

        0 when the name is not a memdev or the attribute is missing or unreadable.
        """
        if not memdev.startswith("mem") or "/" in memdev:
            return 0
        path = f"{uapi.CXL_BUS_DEVICES}/{memdev}/{uapi.CXL_PAYLOAD_MAX_ATTR}"
        if not await self.provider.exists(path):
            return 0
        try:
            value = int((await self.provider.read_attr(path)).strip())
        except ValueError:
            return 0
        return value if 0 < value <= uapi.MAX_RPC_LEN else 0
