"""livefw.entrypoints reads plugin entry points as importlib.metadata does (issue 17 item 1)."""

from __future__ import annotations

import sys
from importlib.metadata import entry_points as stdlib_entry_points
from pathlib import Path

import pytest

from livefw.entrypoints import entry_points


def test_same_plugins_as_importlib_metadata() -> None:
    ours = sorted((e.name, e.value) for e in entry_points("livefw.plugins"))
    theirs = sorted((e.name, e.value) for e in stdlib_entry_points(group="livefw.plugins"))
    assert ours == theirs
    assert {name for name, _ in ours} >= {"lfa", "pfru", "uefi_capsule"}


def _dist(root: Path, name: str, text: str) -> None:
    info = root / f"{name}.dist-info"
    info.mkdir(parents=True)
    (info / "entry_points.txt").write_text(text, encoding="utf-8")


def test_first_distribution_on_the_path_wins_and_bad_files_are_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    _dist(first, "Vendor_Plugin-1.0", "[livefw.plugins]\nVendorX = vendor_x.mod:Plugin\n")
    _dist(second, "vendor.plugin-2.0", "[livefw.plugins]\nold = vendor_old:Plugin\n")
    _dist(second, "broken-1.0", "this is not ini [[[\n")
    _dist(second, "other-1.0", "[console_scripts]\nx = y:z\n")
    monkeypatch.setattr(sys, "path", [str(first), str(second), str(tmp_path / "missing")])
    found = [(e.name, e.value) for e in entry_points("livefw.plugins")]
    assert found == [("VendorX", "vendor_x.mod:Plugin")]  # case kept, the later copy ignored


def test_load_resolves_module_and_attribute_path() -> None:
    from livefw.entrypoints import EntryPoint

    assert EntryPoint("x", "os.path:join").load() is __import__("os").path.join


def test_sections_parsed_as_importlib_metadata_parses_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = (
        "# a comment\n[console_scripts]\nx = y:z\n\n"
        "  [livefw.plugins]  \n  a=mod_a:A  \n# b = commented:Out\nno equals sign\n"
        "c = mod_c:C [extra]\n[other]\nd = mod_d:D\n"
    )
    _dist(tmp_path, "vendor-1.0", text)
    monkeypatch.setattr(sys, "path", [str(tmp_path)])
    ours = [(e.name, e.value) for e in entry_points("livefw.plugins")]
    assert ours == [("a", "mod_a:A"), ("c", "mod_c:C [extra]")]
    # importlib.metadata, given the same lines without the one it cannot parse
    from importlib.metadata import EntryPoints

    theirs = EntryPoints._from_text(text.replace("no equals sign\n", ""))
    assert [(e.name, e.value) for e in theirs if e.group == "livefw.plugins"] == ours
