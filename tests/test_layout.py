"""DESIGN.md's package rules: import direction (between packages and between the sub-packages
of one), nats only in events, `__all__` everywhere."""

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


SUBPACKAGES = {
    # sub-package (or root module) -> what else of its own package it may import
    "events.resources": {"events.resources"},  # the schemas: below all else of events
    "events": {"events", "events.resources"},  # the language of the log: never its NATS adapters
    "events.identity": {"events", "events.resources", "events.identity"},
    "events.commands": {"events", "events.resources", "events.identity", "events.commands"},
    "events.bus": {"events", "events.resources", "events.bus"},
    "xds_gateway.resources": {"xds_gateway", "xds_gateway.resources"},
    "xds_gateway.server": {"xds_gateway", "xds_gateway.resources", "xds_gateway.server"},
    "xds_gateway.proxies": {"xds_gateway", "xds_gateway.resources", "xds_gateway.server",
                            "xds_gateway.proxies"},
    "services.api": {"services", "services.api"},
    "services.runtime": {"services", "services.api", "services.runtime"},
    "services.cli": {"services", "services.api", "services.runtime", "services.cli"},
}
"""Inside a package: pure parts below the parts that run them. The packages' `__init__`
modules and COMPOSERS put everything together: nothing of their own package imports them."""
COMPOSERS = {"xds_gateway.gateway"}


def _modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _imports(path: Path) -> set[str]:
    return {name.split(".")[0] for name in _modules(path)}


def _part(module: str) -> str:
    """The SUBPACKAGES entry a dotted module name belongs to (`xds_gateway.view` belongs
    to its package's root, `xds_gateway`)."""
    if module in COMPOSERS:
        return module
    parts = module.split(".")
    for n in (2, 1):
        if ".".join(parts[:n]) in SUBPACKAGES and (n == 1 or len(parts) > 2 or
                                                   (ROOT / Path(*parts)).is_dir()):
            return ".".join(parts[:n])
    return parts[0]


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_flow_one_way(package: str) -> None:
    others = set(ALLOWED) - {package}
    for path in sorted((ROOT / package).rglob("*.py")):
        wrong = (_imports(path) & others) - ALLOWED[package]
        assert not wrong, f"{path.relative_to(ROOT)} imports {sorted(wrong)}"


@pytest.mark.parametrize("part", sorted(SUBPACKAGES))
def test_sub_packages_import_only_what_is_below_them(part: str) -> None:
    folder = ROOT / Path(*part.split("."))
    paths = sorted(folder.glob("*.py")) if folder.name in ALLOWED else sorted(folder.rglob("*.py"))
    package = part.split(".")[0]
    for path in paths:
        if path.name == "__init__.py" and folder.name in ALLOWED:
            continue  # a package's public names come from everywhere in it
        if ".".join(path.relative_to(ROOT).with_suffix("").parts) in COMPOSERS:
            continue
        own = {_part(m) for m in _modules(path) if m.split(".")[0] == package}
        wrong = own - SUBPACKAGES[part]
        assert not wrong, f"{path.relative_to(ROOT)} imports {sorted(wrong)}"


def test_only_events_imports_nats() -> None:
    for package in ("projections", "xds_gateway"):
        for path in sorted((ROOT / package).rglob("*.py")):
            assert "nats" not in _imports(path), f"{path.relative_to(ROOT)} imports nats"


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_packages_list_their_public_names(package: str) -> None:
    for path in sorted((ROOT / package).rglob("*.py")):
        if path.name.startswith("_") and path.name != "__init__.py":
            continue
        tree = ast.parse(path.read_text())
        exported = any(isinstance(n, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in n.targets) for n in tree.body)
        if path.name == "__init__.py" and not tree.body:
            continue
        assert exported, f"{path.relative_to(ROOT)} has no __all__"



def test_only_services_tracing_imports_the_opentelemetry_sdk() -> None:
    """events, projections and xds_gateway trace with the OpenTelemetry API only (like any
    instrumented library); the SDK, its exporters and samplers are set up per process by
    services/tracing.py (README, Tracing)."""
    for package in ALLOWED:
        for path in sorted((ROOT / package).rglob("*.py")):
            sdk = {m for m in _modules(path) if m.startswith(("opentelemetry.sdk",
                                                               "opentelemetry.exporter"))}
            if path.relative_to(ROOT) != Path("services/tracing.py"):
                assert not sdk, f"{path.relative_to(ROOT)} imports {sorted(sdk)}"
