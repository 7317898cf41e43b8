"""``/etc/livefw/livefw.conf``: TOML, validated by pydantic.

A bad value is reported as one line naming the key, e.g.
``livefw.conf: daemon.shutdown_timeout: Input should be a valid number``.
"""

from __future__ import annotations

import tomllib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from livefw.errors import ConfigError

__all__ = ["DEFAULT_CONFIG_PATH", "Config", "load_config"]

DEFAULT_CONFIG_PATH = "/etc/livefw/livefw.conf"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DaemonSection(_Section):
    """``[daemon]``."""

    #: seconds SIGTERM waits for an irreversible step in flight before exiting anyway.
    shutdown_timeout: float = Field(default=120.0, ge=0)
    #: log level: debug, info, warning, error.
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    #: also own org.freedesktop.fwupd (the fwupd-compatible API).
    fwupd_compat: bool = False
    #: DaemonVersion on the fwupd-compatible API; "" = the installed libfwupd's
    #: version (fwupdmgr refuses a daemon whose version differs from its own).
    fwupd_version: str = ""


class AuthSection(_Section):
    """``[auth]``."""

    #: ``auto``: polkit when it is on the bus, else the fallback; ``required``: refuse
    #: privileged calls without polkit; ``off``: the fallback only.
    polkit: Literal["auto", "required", "off"] = "auto"
    #: uids allowed privileged methods when polkit is not used.
    fallback_uids: tuple[int, ...] = (0,)


class InstallSection(_Section):
    """``[install]``."""

    #: largest payload accepted, in bytes (the PFRU buffer size is not exposed).
    max_payload_size: int = Field(default=256 * 1024 * 1024, gt=0)
    #: seconds a payload read may go without progress before it is given up (a
    #: file system that stopped answering; livefw.fdread).
    payload_read_timeout: float = Field(default=30.0, gt=0)
    #: refuse cabinets whose payload and metainfo are not signed by a key in
    #: ``pki_dir`` and that do not come from a remote marked Trusted.
    only_trusted: bool = True
    #: certificates (PEM, *.pem/*.crt) that cabinet signatures (.jcat PKCS#7) must chain to.
    pki_dir: str = "/etc/livefw/pki"
    #: local remotes: one INI file per folder of .cab files (see livefw.remotes).
    remotes_dir: str = "/etc/livefw/remotes.d"


class PluginsSection(BaseModel):
    """``[plugins]``: ``disabled`` plus one table per plugin (``[plugins.lfa]``)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    disabled: tuple[str, ...] = ()

    def for_plugin(self, name: str) -> dict[str, Any]:
        """The plugin's own table, or an empty one."""
        extra = self.model_extra or {}
        value = extra.get(name, {})
        return dict(value) if isinstance(value, dict) else {}


class Config(_Section):
    """The whole configuration."""

    daemon: DaemonSection = DaemonSection()
    auth: AuthSection = AuthSection()
    install: InstallSection = InstallSection()
    plugins: PluginsSection = PluginsSection()


def load_config(path: str | None, *, required: bool = False) -> Config:
    """Read and validate the configuration.

    Args:
        path: the file; ``None`` means the default path.
        required: a missing file is an error (``--config`` given explicitly).

    Raises:
        ConfigError: unreadable file, TOML syntax error or invalid value, with a
            one-line message naming the file and the key.
    """
    path = path or DEFAULT_CONFIG_PATH
    name = path.rsplit("/", 1)[-1]
    try:
        with open(path, "rb") as handle:
            raw = tomllib.load(handle)
    except FileNotFoundError:
        if required:
            raise ConfigError(f"{path}: no such file") from None
        return Config()
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{name}: TOML syntax error: {error}") from error
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from error
    try:
        return Config.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        message = first["msg"]
        if first["type"] == "extra_forbidden":
            message = "unknown key"
        raise ConfigError(f"{name}: {key}: {message}") from error
