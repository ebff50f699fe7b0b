"""pyproject.toml installs what the repository holds: every package of nfbench/ (a fresh, non-editable install
of a list that named the module nfbench.cli.main lacked the nfbench.cli package and its console script), and
the console script names a function that exists."""

from __future__ import annotations

import importlib
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_of_the_tree_is_installed():
    tree = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "nfbench").rglob("__init__.py")
        if "conf" not in p.relative_to(ROOT / "nfbench").parts
    }
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    assert tree - listed == set(), "packages missing from pyproject.toml [tool.setuptools] packages"
    assert {p for p in listed if p.startswith("nfbench") and p != "nfbench.conf"} <= tree, "listed, not in the tree"


def test_the_console_script_names_a_function():
    module, _, function = PYPROJECT["project"]["scripts"]["nfbench"].partition(":")
    assert callable(getattr(importlib.import_module(module), function))
