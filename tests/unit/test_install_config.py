"""data/livefw.conf, the default /etc/livefw/livefw.conf, matches livefw.config exactly."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from livefw.config import Config, load_config
from livefw.model import Model

CONF = Path(__file__).resolve().parent.parent.parent / "data" / "livefw.conf"
#: a commented-out key at its default: "#key = value" (no space after the "#")
COMMENTED_KEY = re.compile(r"^#(?P<key>[a-z_]+) = (?P<value>.+)$")


def _sections(text: str) -> dict[str, dict[str, Any]]:
    """Every commented-out ``key = value`` under its ``[section]``, parsed as TOML."""
    sections: dict[str, dict[str, Any]] = {}
    current = ""
    for line in text.splitlines():
        header = re.match(r"^\[(?P<name>[a-z_.]+)\]$", line)
        if header:
            current = header["name"]
            sections.setdefault(current, {})
            continue
        match = COMMENTED_KEY.match(line)
        if match:
            value = tomllib.loads(f"v = {match['value']}")["v"]
            sections[current][match["key"]] = value
    return sections


def test_the_file_as_shipped_gives_the_defaults() -> None:
    assert load_config(str(CONF), required=True) == Config()


def test_every_setting_is_listed_with_its_default_value() -> None:
    listed = _sections(CONF.read_text())
    defaults = Config()
    for name, field in Config.model_fields.items():
        section = getattr(defaults, name)
        assert isinstance(section, Model)
        assert field.annotation is not None
        keys = type(section).model_fields
        assert set(listed.get(name, {})) == set(keys), f"[{name}] keys differ from config.py"
        for key in keys:
            value = getattr(section, key)
            if isinstance(value, tuple):
                value = list(value)
            assert listed[name][key] == value, f"{name}.{key}"


def test_uncommenting_every_key_is_still_a_valid_config() -> None:
    text = "\n".join(
        line[1:] if COMMENTED_KEY.match(line) else line for line in CONF.read_text().splitlines()
    )
    assert Config.model_validate(tomllib.loads(text)) == Config()
