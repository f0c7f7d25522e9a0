"""The package's import layering, read from the source (every import, also those inside functions; only
`if TYPE_CHECKING:` blocks are left out): data never imports methods or the runner, methods never import the
runner, and no two modules import each other."""

from __future__ import annotations

import ast
from pathlib import Path

import xdomain_bench

PACKAGE = Path(xdomain_bench.__file__).resolve().parent
# Known edges against the layering, each waiting on a file other work holds; the test fails once one is gone,
# so that the entry is removed with it.
ALLOWED: set[tuple[str, str]] = set()  # no upward edge is allowed
MUTUAL = {("xdomain_bench.methods.base", "xdomain_bench.methods.config")}  # get_method_class / phase_configs


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(path: Path, package_dir: Path = PACKAGE) -> set[str]:
    """Absolute names of the xdomain_bench modules (or packages) that `path` imports at run time."""
    name = module_name(path, package_dir)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            base = base[: len(base) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)  # `from . import x` names a module
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return {m for m in found if m.split(".")[0] == "xdomain_bench"}


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in imports_of(path) if m in modules and m != name} for name, path in modules.items()}


def layer(name: str) -> str:
    return name.split(".")[1] if name.count(".") >= 1 else ""


def test_data_methods_runner_layering():
    edges = {(a, b) for a, targets in graph().items() for b in targets}
    upward = {(a, b) for a, b in edges
              if (layer(a) == "data" and layer(b) in ("methods", "runner"))
              or (layer(a) == "methods" and layer(b) == "runner")}
    assert upward - ALLOWED == set()
    assert ALLOWED <= upward, "an allowed edge is gone: remove it from ALLOWED"


def test_no_two_modules_import_each_other():
    g = graph()
    pairs = {tuple(sorted((a, b))) for a in g for b in g[a] if a in g.get(b, set())}
    assert pairs == MUTUAL


def test_the_scanner_sees_lazy_imports_and_skips_type_checking(tmp_path):
    pkg = tmp_path / "xdomain_bench" / "methods"
    pkg.mkdir(parents=True)
    (pkg / "m.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..runner import a\n"
                              "def f():\n    from ..runner.b import c\n    from . import d\n")
    assert imports_of(pkg / "m.py", tmp_path / "xdomain_bench") == {
        "xdomain_bench.runner.b", "xdomain_bench.runner.b.c", "xdomain_bench.methods", "xdomain_bench.methods.d"}
