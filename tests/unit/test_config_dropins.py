"""livefw.conf.d drop-ins, the writer, and fwupd's ModifyConfig/ResetConfig onto them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from livefw.config import dump_toml, load_config, remove_dropin, write_dropin
from livefw.errors import ConfigError, InvalidArgument, NotFound, NotSupported
from livefw.fwupd_config import FWUPD_CONFIG_KEYS, FwupdConfig, config_change

ADMIN = """# the administrator's file: comments and keys stay as written
[install]
# a comment
max_payload_size = 1000
[plugins.fwctl]
allow_full_debug = false
"""


@pytest.fixture
def conf(tmp_path: Path) -> str:
    path = tmp_path / "livefw.conf"
    path.write_text(ADMIN)
    return str(path)


def test_dropins_are_read_in_name_order_after_the_file(conf: str) -> None:
    directory = Path(conf + ".d")
    directory.mkdir()
    (directory / "10-a.conf").write_text("[install]\nmax_payload_size = 2000\n")
    (directory / "20-b.conf").write_text('[plugins.uefi_capsule]\nesp_path = "/efi"\n')
    (directory / ".hidden.conf").write_text("not toml at all [")
    (directory / "notes.txt").write_text("not toml either [")
    config = load_config(conf)
    assert config.install.max_payload_size == 2000
    assert config.plugins.for_plugin("uefi_capsule") == {"esp_path": "/efi"}
    assert config.plugins.for_plugin("fwctl") == {"allow_full_debug": False}  # tables merge
    (directory / "30-bad.conf").write_text("[install]\nmax_payload_size = -1\n")
    with pytest.raises(ConfigError, match=r"livefw.conf.d/30-bad.conf: install.max_payload_size"):
        load_config(conf)


def test_the_writer_is_atomic_never_follows_a_link_and_keeps_the_admin_file(
    conf: str, tmp_path: Path
) -> None:
    table = {"install": {"only_trusted": False}, "plugins": {"disabled": ["fwctl"]}}
    write_dropin(conf, "fwupd.conf", table, "a header")
    written = Path(conf + ".d/fwupd.conf")
    assert stat.S_IMODE(written.stat().st_mode) == 0o644
    assert written.read_text().startswith("# a header\n")
    assert Path(conf).read_text() == ADMIN
    config = load_config(conf)
    assert (config.install.only_trusted, config.plugins.disabled) == (False, ("fwctl",))
    assert os.listdir(conf + ".d") == ["fwupd.conf"]  # no temporary file left
    # a link where the drop-in is: replaced, its target untouched
    target = tmp_path / "target"
    target.write_text("precious")
    written.unlink()
    written.symlink_to(target)
    write_dropin(conf, "fwupd.conf", table)
    assert target.read_text() == "precious"
    assert not written.is_symlink()
    assert remove_dropin(conf, "fwupd.conf")
    assert not remove_dropin(conf, "fwupd.conf")


def test_a_symlinked_dropin_directory_is_refused(conf: str, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, conf + ".d")
    with pytest.raises(ConfigError, match="symbolic link"):
        write_dropin(conf, "fwupd.conf", {"install": {"only_trusted": False}})
    with pytest.raises(ConfigError, match="symbolic link"):
        remove_dropin(conf, "fwupd.conf")
    assert os.listdir(elsewhere) == []


def test_toml_dump_round_trips_hostile_strings() -> None:
    import tomllib

    table = {"a": {"s": 'q"\\\n\x01\u2028é', "l": ["x", "y"], "n": 3, "b": True}, "k": 1}
    assert tomllib.loads(dump_toml(table)) == table


def test_fwupd_keys_map_or_answer_as_fwupd() -> None:
    assert config_change("OnlyTrusted", "FALSE") == (("install",), "only_trusted", False)
    assert config_change("ArchiveSizeMax", "1048576")[2] == 1048576
    assert config_change("ArchiveSizeMax", "0")[2] is None  # fwupd's automatic size
    assert config_change("DisabledPlugins", "fwctl;lfa")[2] == ["fwctl", "lfa"]
    assert config_change("EspLocation", "/boot/efi")[:2] == (
        ("plugins", "uefi_capsule"),
        "esp_path",
    )
    with pytest.raises(NotFound, match=r"^key Foo not supported for \[fwupd\]$"):
        config_change("Foo", "bar")
    with pytest.raises(NotSupported, match="no idle exit"):
        config_change("IdleTimeout", "10")
    for key, value in [("OnlyTrusted", "banana"), ("ArchiveSizeMax", "-1"),
                       ("DisabledPlugins", "../x"), ("EspLocation", "efi")]:  # fmt: skip
        with pytest.raises(InvalidArgument):
            config_change(key, value)
    assert len(FWUPD_CONFIG_KEYS) == 22


def test_modify_and_reset_write_only_the_dropin(conf: str) -> None:
    fwupd = FwupdConfig(conf)
    config = fwupd.modify(("install",), "only_trusted", False)
    assert config.install.only_trusted is False
    assert config.install.max_payload_size == 1000  # the admin's value stays
    config = fwupd.modify(("plugins", "uefi_capsule"), "esp_path", "/efi")
    assert load_config(conf).plugins.for_plugin("uefi_capsule") == {"esp_path": "/efi"}
    config = fwupd.modify(("install",), "only_trusted", None)  # back to the default
    assert config.install.only_trusted is True
    # a value the whole configuration refuses is not written
    with pytest.raises(InvalidArgument, match="max_payload_size"):
        fwupd.modify(("install",), "max_payload_size", 0)
    assert load_config(conf).install.max_payload_size == 1000
    assert fwupd.reset() == load_config(conf)
    assert not Path(conf + ".d/fwupd.conf").exists()
    assert Path(conf).read_text() == ADMIN
