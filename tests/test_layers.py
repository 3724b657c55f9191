"""The package's shape: layers import one way, no import circle anywhere in protolib (imports inside
functions included), and the library never imports Streamlit; in tests/, no test module imports another."""

from __future__ import annotations

import ast
from pathlib import Path

import protolib

ROOT = Path(protolib.__file__).parent
#: what each layer may import from protolib (besides itself); the root package is the public facade only
ALLOWED = {
    "config": set(),
    "files": set(),
    "method": set(),
    "backbones": {"config", "files"},
    "data": {"config", "files", "backbones", "method"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in ROOT.rglob("*.py")}


def imports(path: Path, known: set[str]) -> tuple[set[str], set[str]]:
    """(protolib modules, other top-level packages) that ``path`` imports anywhere in its body."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    inside, outside = set(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                (inside if alias.name.startswith("protolib") else outside).add(
                    alias.name.split(".")[0] if not alias.name.startswith("protolib") else alias.name
                )
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if not target.startswith("protolib"):
                outside.add(target.split(".")[0])
                continue
            for alias in node.names:  # `from . import config` imports the module protolib.config
                inside.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in known else target)
    return inside - {name}, outside


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(path, set(found))[0] & set(found) for name, path in found.items()}


def test_no_import_circle_in_protolib():
    edges = graph()
    done, active = set(), []

    def visit(name):
        assert name not in active, f"import circle: {' -> '.join([*active, name])}"
        if name in done:
            return
        active.append(name)
        for dep in sorted(edges[name] - {"protolib"}):
            visit(dep)
        active.pop()
        done.add(name)

    for name in sorted(edges):
        visit(name)


def test_lower_layers_import_only_the_layers_above_them():
    for name, deps in graph().items():
        layer = name.split(".")[1] if "." in name else None
        if layer not in ALLOWED:
            continue
        used = {dep.split(".")[1] for dep in deps if "." in dep} - {layer}
        assert used <= ALLOWED[layer], f"{name} imports {sorted(used - ALLOWED[layer])}"
        assert "protolib" not in deps, f"{name} imports the package facade"


def test_the_library_never_imports_streamlit():
    found = modules()
    for name, path in found.items():
        assert "streamlit" not in imports(path, set(found))[1], name


def imported_test_modules(source: str) -> list[str]:
    """The test modules (``tests/test_*.py``) that ``source``, a file of tests/, imports."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names if alias.name.startswith("tests.")]
        elif isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").split(".")[0] == "tests"):
            module = node.module or ""
            names = [module] + ([f"{module}.{alias.name}" for alias in node.names] if module in ("", "tests") else [])
        else:
            continue
        found += [name for name in names if any(part.startswith("test_") for part in name.split("."))]
    return found


def test_no_test_module_imports_another():
    """Code that tests share lives in tests/helpers.py, browser.py, apptest.py, weights_host.py or conftest.py's
    fixtures, never in a test module: importing one ties a module's tests to another's internals (and its
    fixtures come along under borrowed names)."""
    assert imported_test_modules("from tests.test_app import start\nfrom .test_backbones import f") == [
        "tests.test_app",
        "test_backbones",
    ]
    assert imported_test_modules("from . import test_x\nimport tests.test_y\nfrom tests import helpers") == [
        ".test_x",
        "tests.test_y",
    ]
    assert imported_test_modules("from tests.helpers import cli\nfrom protolib import config") == []
    tests = Path(__file__).parent
    for path in sorted(tests.glob("*.py")):
        assert not imported_test_modules(path.read_text()), (path.name, imported_test_modules(path.read_text()))
