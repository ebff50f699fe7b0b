"""Issue 14: the training loop reads top to bottom - no closure or lambda of the engine's loop and epoch
(nfbench/engine/loop.py, epoch.py) standing in for state (``Loop`` holds state, each step and checkpoint is a
plain function of it).  How long a function may be is ruff's rule now (pyproject.toml: PLR0915 at 40
statements, C901 at 10 branches, for the whole package); ruff has no rule against closures, so this test
keeps that one."""

from __future__ import annotations

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[1] / "nfbench" / "engine"
TRAIN = [ENGINE / "loop.py", ENGINE / "epoch.py"]


def functions(tree: ast.AST) -> list[ast.FunctionDef]:
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def test_the_training_loop_defines_no_closures():
    """A function defined inside another (a closure over the run's objects) hides state that belongs in ``Loop``;
    ``best_figures``'s ``max(key=...)`` is the one lambda, a sort key."""
    tree = ast.Module(body=[n for p in TRAIN for n in ast.parse(p.read_text()).body], type_ignores=[])
    nested = sorted({inner.name for outer in functions(tree) for inner in functions(outer) if inner is not outer})
    assert not nested, f"functions defined inside functions of nfbench/engine/loop.py and epoch.py: {nested}"
    lambdas = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Lambda)]
    assert len(lambdas) <= 1, f"lambdas in nfbench/engine/loop.py and epoch.py at lines {lambdas}"
