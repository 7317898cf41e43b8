"""livefwd's help formatter sizes help as argparse does, without importing shutil."""

from __future__ import annotations

import argparse

import pytest

from livefw.daemon import HelpFormatter, parse_args


@pytest.mark.parametrize("columns", [None, "100", "0", "junk", "37"])
def test_width_is_argparse_own(monkeypatch: pytest.MonkeyPatch, columns: str | None) -> None:
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    ours = HelpFormatter("livefwd")
    theirs = argparse.HelpFormatter("livefwd")
    assert ours._width == theirs._width
    assert ours._max_help_position == theirs._max_help_position


def test_help_text_is_unchanged(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "90")
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    ours = capsys.readouterr().out
    monkeypatch.setattr(argparse.ArgumentParser, "__init__", _plain_init)
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    assert capsys.readouterr().out == ours
    assert "--fwupd-compat" in ours


_original_init = argparse.ArgumentParser.__init__


def _plain_init(self: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
    kwargs.pop("formatter_class", None)
    _original_init(self, *args, **kwargs)  # type: ignore[arg-type]
