"""Docstrings hold LaTeX (``:math:`W^\\top r```): one written without the ``r`` prefix turns
``\\t``, ``\\b``, ``\\f``... into control characters, and the formula is silently wrong."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for package in ("liftinv", "operators") for p in (ROOT / package).rglob("*.py"))
CONTROL = set("\a\b\f\r\t\v")


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_docstrings_hold_no_control_characters(path):
    tree = ast.parse(path.read_text())
    nodes = [n for n in ast.walk(tree) if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
    bad = [getattr(n, "name", "module") for n in nodes if CONTROL & set(ast.get_docstring(n, clean=False) or "")]
    assert not bad, f"docstrings with control characters (write them as r-strings): {bad}"
