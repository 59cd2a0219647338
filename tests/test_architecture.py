"""The package's shape: layers imported in one direction only, no cycles, no private
names across modules, no guide-type tests in generic code (``docs/architecture.md``).

Each check reads the source with :mod:`ast`; nothing is imported, so a violation is
reported with its file and line.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "numpyro_mpe"

#: Subpackages from the bottom up: each may import only from those before it (and from
#: itself). ``datasets`` imports nothing of the package; ``__init__`` and ``__main__``
#: sit above everything.
LAYERS = ("datasets", "core", "optim", "infer", "perturbation", "crossval", "conjugate", "tools")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package_modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path):
    """``(line, imported module, names, at module level)`` for each ``numpyro_mpe``
    import in ``path``; ``names`` is empty for ``import numpyro_mpe.x``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top_level = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] == "numpyro_mpe":
                names = tuple(alias.name for alias in node.names)
                yield node.lineno, node.module, names, id(node) in top_level
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "numpyro_mpe":
                    yield node.lineno, alias.name, (), id(node) in top_level


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def _resolve(module: str, name: str, modules: dict[str, Path]) -> str:
    """The module an ``from module import name`` reads: a submodule, or ``module``."""
    return f"{module}.{name}" if f"{module}.{name}" in modules else module


def test_layers_import_downwards_only():
    modules = _package_modules()
    wrong = []
    for module, path in modules.items():
        own = _layer(module)
        if own is None:
            continue
        for line, target, names, _ in _imports(path):
            for imported in [_resolve(target, n, modules) for n in names] or [target]:
                other = _layer(imported)
                if other is not None and LAYERS.index(other) > LAYERS.index(own):
                    wrong.append(f"{path.relative_to(ROOT)}:{line} ({own}) imports {imported}")
    assert not wrong, "a layer imports one above it:\n" + "\n".join(wrong)


def test_no_import_cycles_and_no_deferred_package_imports():
    """Module-level imports form a DAG; no function imports the package lazily (a lazy
    import is how a cycle hides)."""
    modules = _package_modules()
    graph, deferred = {}, []
    for module, path in modules.items():
        edges = set()
        for line, target, names, top_level in _imports(path):
            if not top_level:
                deferred.append(f"{path.relative_to(ROOT)}:{line} imports {target} lazily")
            for imported in [_resolve(target, n, modules) for n in names] or [target]:
                if imported in modules and imported != module:
                    edges.add(imported)
        graph[module] = edges
    assert not deferred, "\n".join(deferred)
    # Packages import their own submodules (the facade): those edges point down.
    state = {}

    def visit(module, trail):
        state[module] = "open"
        for other in sorted(graph[module]):
            if other.startswith(module + "."):
                continue
            if state.get(other) == "open":
                raise AssertionError("import cycle: " + " -> ".join([*trail, other]))
            if other not in state:
                visit(other, [*trail, other])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state and module != "numpyro_mpe":
            visit(module, [module])


def _python_files() -> list[Path]:
    roots = ("numpyro_mpe", "tests", "benchmarks", "examples")
    return [path for root in roots for path in sorted((ROOT / root).rglob("*.py"))]


def test_no_private_names_across_modules():
    """``from numpyro_mpe.x import _y`` and ``x._y`` on an imported package module are
    refused everywhere but in ``x`` itself (tests included)."""
    modules = _package_modules()
    wrong = []
    for path in _python_files():
        here = _module_name(path) if path.is_relative_to(PACKAGE) else None
        tree = ast.parse(path.read_text(), filename=str(path))
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.split(".")[0] != "numpyro_mpe":
                    continue
                for alias in node.names:
                    target = _resolve(node.module, alias.name, modules)
                    if target != node.module:  # a submodule, used by attribute below
                        aliases[alias.asname or alias.name] = target
                    elif alias.name.startswith("_") and node.module != here:
                        wrong.append(f"{path.relative_to(ROOT)}:{node.lineno} {alias.name}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname and alias.name.startswith("numpyro_mpe."):
                        aliases[alias.asname] = alias.name
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and node.attr.startswith("_")
                and not node.attr.endswith("__")  # dunders (__all__) are public
                and aliases[node.value.id] != here
            ):
                wrong.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value.id}.{node.attr}")
    assert not wrong, "private names used across modules:\n" + "\n".join(wrong)


@pytest.mark.parametrize("layer", ["core", "optim", "infer", "perturbation", "crossval"])
def test_generic_code_does_not_test_guide_types(layer):
    """Family behaviour is dispatched (``functools.singledispatch``): code below
    ``conjugate`` never names ``AutoConjugate`` in an ``isinstance``."""
    wrong = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "isinstance"
                and "AutoConjugate" in ast.unparse(node)
            ):
                wrong.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not wrong, "\n".join(wrong)


def test_every_module_declares_all_and_subpackage_inits_only_document():
    missing, busy = [], []
    for module, path in _package_modules().items():
        tree = ast.parse(path.read_text())
        assigned = {
            target.id
            for node in tree.body
            if isinstance(node, ast.Assign | ast.AnnAssign)
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
            if isinstance(target, ast.Name)
        }
        is_init = path.name == "__init__.py"
        if is_init and module not in ("numpyro_mpe", "numpyro_mpe.optim"):
            if len(tree.body) != 1:  # the docstring alone
                busy.append(module)
        elif path.name != "__main__.py" and "__all__" not in assigned:
            missing.append(module)
    assert not missing, f"modules without __all__: {missing}"
    assert not busy, f"subpackage __init__ with code (re-exports live in numpyro_mpe): {busy}"


def test_no_name_shadows_a_module():
    """A package attribute never hides a submodule of the same name (the public function
    ``numpyro_mpe.optim.newton`` lives in ``optim/newton_rule.py``): ``import a.b as m``
    and ``mock.patch("a.b.x")`` reach the module."""
    shadowed = []
    for module in _package_modules():
        parent, _, name = module.rpartition(".")
        if not parent:
            continue
        package = importlib.import_module(parent)
        importlib.import_module(module)
        if getattr(package, name) is not importlib.import_module(module):
            shadowed.append(f"{parent}.{name} is {getattr(package, name)!r}")
    assert not shadowed, "\n".join(shadowed)


def test_tests_mirror_the_package():
    """Each subpackage has a test folder of the same name."""
    for layer in LAYERS[1:]:
        assert (ROOT / "tests" / layer).is_dir(), f"tests/{layer} is missing"
        assert list((ROOT / "tests" / layer).glob("test_*.py")), f"tests/{layer} is empty"
