"""fwupd.conf's ``[fwupd]`` keys onto livefw.conf (fwupd's ModifyConfig and ResetConfig).

:func:`config_change` says where a key fwupd's clients set goes in livefw.conf and
checks its value, answering as fwupd 2.0.20 does for keys it knows and livefw has no
equivalent of; :class:`FwupdConfig` writes the result to livefw.conf's drop-in
``livefw.conf.d/fwupd.conf``, never the administrator's own file. Nothing here
knows D-Bus (livefw.fwupd_service calls it; imported on the first ModifyConfig).
"""

from __future__ import annotations

import os
import re
import tomllib
from typing import Any

import structlog

from livefw.config import Config, dropin_dir, load_config, remove_dropin, write_dropin
from livefw.errors import ConfigError, Internal, InvalidArgument, NotFound, NotSupported
from livefw.statefiles import StateDirError

__all__ = ["CONFIG_LIVE", "FWUPD_CONFIG_KEYS", "FwupdConfig", "config_change"]

log = structlog.get_logger("livefw.compat")

#: the biggest drop-in read back.
DROPIN_MAX = 1 << 20

#: The ``[fwupd]`` keys fwupd 2.0.20's ModifyConfig accepts (src/fu-engine.c:
#: fu_engine_modify_config(); any other is NotFound "key K not supported for [fwupd]").
FWUPD_CONFIG_KEYS = frozenset({
    "ArchiveSizeMax", "ApprovedFirmware", "BlockedFirmware", "DisabledDevices",
    "DisabledPlugins", "EnumerateAllDevices", "EspLocation", "HostBkc", "IdleTimeout",
    "IgnorePower", "OnlyTrusted", "P2pPolicy", "ReleaseDedupe", "ReleasePriority",
    "RequireImmutableEnumeration", "ShowDevicePrivate", "TestDevices", "TrustedReports",
    "TrustedUids", "UpdateMotd", "UriSchemes", "VerboseDomains",
})  # fmt: skip
#: fwupd.conf ``[fwupd]`` keys that livefw.conf has, and where (table path, key).
CONFIG_MAP: dict[str, tuple[tuple[str, ...], str]] = {
    "OnlyTrusted": (("install",), "only_trusted"),
    "ArchiveSizeMax": (("install",), "max_payload_size"),
    "DisabledPlugins": (("plugins",), "disabled"),
    "EspLocation": (("plugins", "uefi_capsule"), "esp_path"),
}
#: the keys applied without a restart (the others when livefwd next starts).
CONFIG_LIVE = frozenset({"OnlyTrusted", "ArchiveSizeMax"})
#: why the other keys fwupd knows mean nothing for livefw (ModifyConfig's NotSupported).
CONFIG_UNMAPPED = {
    "ApprovedFirmware": "use `fwupdmgr set-approved-firmware` (livefw keeps one list)",
    "BlockedFirmware": "use `fwupdmgr block-firmware` (livefw keeps one list)",
    "IdleTimeout": "livefwd has no idle exit",
    "TrustedUids": "livefw has no trusted-user reports; [auth] fallback_uids is about "
    "privileged calls, a different thing",
    "VerboseDomains": "set [daemon] log_level in livefw.conf",
    "HostBkc": "livefw has no best-known-configuration tags",
}
_PLUGIN_NAME = re.compile(r"[a-z0-9_-]{1,64}")
_DISABLED_MAX = 64


def config_change(key: str, value: str) -> tuple[tuple[str, ...], str, Any]:
    """Where fwupd.conf ``[fwupd] key = value`` goes in livefw.conf, and its value.

    Returns ``(tables, name, value)``; ``value`` None means "back to the default"
    (fwupd's empty value, and ``ArchiveSizeMax=0``: its automatic size).

    Raises:
        NotFound: a key fwupd does not know (fwupd's error and message).
        NotSupported: a key fwupd knows that means nothing for livefw, and why.
        InvalidArgument: a value livefw.conf cannot take.
    """
    if key not in FWUPD_CONFIG_KEYS:
        raise NotFound(f"key {key[:64]} not supported for [fwupd]")
    if key not in CONFIG_MAP:
        why = CONFIG_UNMAPPED.get(key, "livefw has no such setting")
        raise NotSupported(f"livefw has no equivalent of fwupd.conf [fwupd] {key}: {why}")
    tables, name = CONFIG_MAP[key]
    text = value.strip()
    if not text:
        return tables, name, None
    parsed: Any
    if key == "OnlyTrusted":
        # GKeyFile's booleans (g_key_file_get_boolean(): true/false, 1/0)
        lowered = text.lower()
        if lowered not in ("true", "false", "1", "0"):
            raise InvalidArgument(f"OnlyTrusted must be true or false, not {text[:64]!r}")
        parsed = lowered in ("true", "1")
    elif key == "ArchiveSizeMax":
        # bytes, as fu-engine-config.c uses it (fwupd.conf(5) says Mb; the code does not)
        if not text.isdigit() or len(text) > 19:
            raise InvalidArgument(f"ArchiveSizeMax must be a size in bytes, not {text[:64]!r}")
        parsed = int(text) or None
    elif key == "DisabledPlugins":
        names = [n.strip() for n in re.split(r"[;,]", text) if n.strip()]
        if len(names) > _DISABLED_MAX or not all(_PLUGIN_NAME.fullmatch(n) for n in names):
            raise InvalidArgument(
                f"DisabledPlugins must be up to {_DISABLED_MAX} plugin names separated by ';'"
            )
        parsed = sorted(set(names))
    else:  # EspLocation
        if not text.startswith("/") or len(text) > 4096 or "\0" in text:
            raise InvalidArgument(f"EspLocation must be an absolute path, not {text[:64]!r}")
        parsed = text
    return tables, name, parsed


class FwupdConfig:
    """fwupd's ModifyConfig and ResetConfig, onto the drop-in ``fwupd.conf``.

    The drop-in holds only what fwupd's clients set; ResetConfig removes it. A
    change is validated with the whole configuration before it is written, and
    written atomically and never through a link (livefw.config.write_dropin).
    """

    DROPIN = "fwupd.conf"
    HEADER = (
        "Written by livefwd for fwupd's ModifyConfig (fwupdmgr modify-config); removed by\n"
        "ResetConfig (fwupdmgr reset-config fwupd). Read after livefw.conf: edit that instead."
    )

    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path

    def _dropin(self) -> dict[str, Any]:
        path = os.path.join(dropin_dir(self.config_path), self.DROPIN)
        try:
            with open(path, "rb") as handle:
                return tomllib.loads(handle.read(DROPIN_MAX).decode("utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            log.warning("fwupd_dropin_unreadable", path=path, error=str(error))
            return {}  # rewritten whole by the next change

    def modify(self, tables: tuple[str, ...], name: str, value: Any) -> Config:
        """Set ``tables.name`` to ``value`` (None: remove it); the configuration now.

        Raises:
            InvalidArgument: the configuration with the change is not valid.
            Internal: the drop-in could not be written.
        """
        table = self._dropin()
        node = table
        for part in tables:
            child = node.get(part)
            node[part] = child = dict(child) if isinstance(child, dict) else {}
            node = child
        if value is None:
            node.pop(name, None)
        else:
            node[name] = value
        table = _pruned(table)
        try:
            config = load_config(self.config_path, dropins={self.DROPIN: table or None})
        except ConfigError as error:
            raise InvalidArgument(error.message) from error
        try:
            if table:
                write_dropin(self.config_path, self.DROPIN, table, self.HEADER)
            else:
                remove_dropin(self.config_path, self.DROPIN)
        except (OSError, StateDirError, ConfigError) as error:
            raise Internal(
                f"cannot write {dropin_dir(self.config_path)}/{self.DROPIN}: {error}"
            ) from error
        return config

    def reset(self) -> Config:
        """Remove the drop-in; the configuration without it.

        Raises:
            InvalidArgument: livefw.conf itself is not valid.
            Internal: the drop-in could not be removed.
        """
        try:
            remove_dropin(self.config_path, self.DROPIN)
        except (OSError, ConfigError) as error:
            raise Internal(
                f"cannot remove {dropin_dir(self.config_path)}/{self.DROPIN}: {error}"
            ) from error
        try:
            return load_config(self.config_path)
        except ConfigError as error:
            raise InvalidArgument(error.message) from error


def _pruned(table: dict[str, Any]) -> dict[str, Any]:
    """``table`` without empty sub-tables."""
    result = {}
    for key, value in table.items():
        if isinstance(value, dict):
            value = _pruned(value)
            if not value:
                continue
        result[key] = value
    return result
