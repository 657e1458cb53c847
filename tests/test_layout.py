"""DESIGN.md's package rules: import direction, nats only in events, `__all__` everywhere."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
ALLOWED = {
    "events": set(),
    "projections": {"events"},
    "xds_gateway": {"events", "projections"},
    "services": {"events", "projections", "xds_gateway"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_flow_one_way(package: str) -> None:
    others = set(ALLOWED) - {package}
    for path in sorted((ROOT / package).rglob("*.py")):
        wrong = (_imports(path) & others) - ALLOWED[package]
        assert not wrong, f"{path.relative_to(ROOT)} imports {sorted(wrong)}"


def test_only_events_imports_nats() -> None:
    for package in ("projections", "xds_gateway"):
        for path in sorted((ROOT / package).rglob("*.py")):
            assert "nats" not in _imports(path), f"{path.relative_to(ROOT)} imports nats"


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_packages_list_their_public_names(package: str) -> None:
    for path in sorted((ROOT / package).glob("*.py")):
        if path.name.startswith("_") and path.name != "__init__.py":
            continue
        tree = ast.parse(path.read_text())
        exported = any(isinstance(n, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in n.targets) for n in tree.body)
        if path.name == "__init__.py" and not tree.body:
            continue
        assert exported, f"{path.relative_to(ROOT)} has no __all__"
