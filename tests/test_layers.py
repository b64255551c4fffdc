"""The package layers hold: each tfprune package imports only packages below it (at module
level or inside functions), apps never import apps, and the library never imports an app."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Lowest first. A package may import its own modules and packages on lower levels only.
LEVELS = (("fileio", "errors"), ("console",), ("data", "models", "core"), ("training",),
          ("scoring",), ("pruner",), ("litert",), ("ondevice", "latency"), ("shipping",),
          ("experiments", "jobs"))
LEVEL = {unit: i for i, units in enumerate(LEVELS) for unit in units}
APPS = ("pipelines", "android_export", "benchmarks")


def unit_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if parts[0] == "tfprune" and len(parts) > 1 else parts[0]


def imported(path: Path) -> set[str]:
    """Every tfprune / app module a file imports, anywhere in it."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "tfprune":
                out |= {f"tfprune.{a.name}" for a in node.names}
            else:
                out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return {m for m in out if m.split(".")[0] in ("tfprune",) + APPS}


def library_files():
    return sorted(p for p in (ROOT / "tfprune").rglob("*.py") if p.name != "__init__.py"
                  or p.parent.name != "tfprune")


def test_every_package_has_a_level():
    packages = {p.name for p in (ROOT / "tfprune").iterdir()
                if p.is_dir() and (p / "__init__.py").exists()}
    modules = {p.stem for p in (ROOT / "tfprune").glob("*.py") if p.stem != "__init__"}
    assert packages | modules <= set(LEVEL), (packages | modules) - set(LEVEL)


@pytest.mark.parametrize("path", library_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_library_imports_only_lower_levels(path):
    own = unit_of(".".join(path.relative_to(ROOT).with_suffix("").parts))
    for module in imported(path):
        assert module.split(".")[0] == "tfprune", f"{path.name} imports the app {module}"
        other = unit_of(module)
        if other in (own, "tfprune"):
            continue
        assert LEVEL[other] < LEVEL[own], (
            f"{path.relative_to(ROOT)} ({own}) imports {module} ({other}), "
            f"which is not below it")


def test_apps_never_import_apps():
    for app in ("pipelines", "android_export"):
        for path in (ROOT / app).rglob("*.py"):
            for module in imported(path):
                top = module.split(".")[0]
                assert top in ("tfprune", app) or (app, top) == ("pipelines", "android_export"), (
                    f"{path.relative_to(ROOT)} imports {module}")
                if app == "pipelines" and top == "pipelines":
                    assert module == "pipelines", f"{path.relative_to(ROOT)} imports {module}"


def test_packages_and_modules_have_a_docstring():
    for init in (ROOT / "tfprune").rglob("__init__.py"):
        tree = ast.parse(init.read_text())
        assert ast.get_docstring(tree), f"{init.relative_to(ROOT)} has no docstring"
    for path in library_files():
        assert ast.get_docstring(ast.parse(path.read_text())), f"{path.relative_to(ROOT)}"
