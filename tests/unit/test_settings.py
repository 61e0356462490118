"""Settings that decide where things land: the export directory is one absolute path."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from sessionctl.config import Settings


def test_the_default_export_dir_is_the_state_directorys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SESSIONCTL_EXPORT_DIR", raising=False)
    monkeypatch.delenv("EXPORT_DIR", raising=False)
    monkeypatch.setenv("SESSIONCTL_STATE_DIR", str(tmp_path))
    assert Settings(_env_file=None).export_dir == str(tmp_path / "exports")  # type: ignore[call-arg]
    monkeypatch.delenv("SESSIONCTL_STATE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert Settings(_env_file=None).export_dir == str(tmp_path / ".local" / "state" / "sessionctl" / "exports")  # type: ignore[call-arg]


def test_a_relative_export_dir_is_refused_and_home_is_expanded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="must be an absolute path, not 'exports'"):
        Settings(export_dir="exports")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert Settings(export_dir="~/x").export_dir == str(tmp_path / "x")


def test_a_relative_state_dir_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from sessionctl.config import state_dir
    from sessionctl.errors import InvalidRequest

    monkeypatch.setenv("SESSIONCTL_STATE_DIR", "state")
    with pytest.raises(InvalidRequest, match="SESSIONCTL_STATE_DIR must be an absolute path, not 'state'"):
        state_dir()
