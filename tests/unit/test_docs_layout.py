"""The code's layout in docs/development.md is the tree's (generated from the modules' docstrings
by docs/hooks.py), and every module of the core is under the core's import contract."""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def _hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_development_md_shows_the_tree_as_it_is() -> None:
    hooks = _hooks()
    page = (ROOT / "docs" / "development.md").read_text(encoding="utf-8")
    assert hooks.with_layout(page) == page, "docs/development.md is stale: run `python docs/hooks.py`"
    assert "` |  |" not in page, "a module without a docstring: say what it holds"
    for module in (ROOT / "sessionctl").rglob("*.py"):
        if module.name not in ("__init__.py", "__main__.py") and module.parent.name != "data":
            assert f"| `{module.stem}` |" in page or module.stem == "producer", module


def test_every_core_module_is_held_by_the_core_contract() -> None:
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    core = next(c for c in contracts if "sessionctl.config" in c["source_modules"])
    modules = {f"sessionctl.{m.stem}" for m in (ROOT / "sessionctl").glob("*.py")} - {
        "sessionctl.__init__",
        "sessionctl.producer",
    }
    assert modules <= set(core["source_modules"]), modules - set(core["source_modules"])
