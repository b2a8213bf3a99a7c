"""The package's import graph, read from its sources (imports inside functions included): no
cycle, the backend types import nothing of the package, kernel packages never reach the
registry, the registry loads backends only lazily, and no runtime module imports the gate
tooling (``tools/``), the benchmarks or the tests."""
from __future__ import annotations

import ast
import pathlib
from typing import Dict, List, Set, Tuple

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = "expandnets_cuda"
# Not files of the package: the compiled extension and the reference bound in by _reference_binding.
EXTERNAL = (f"{PACKAGE}._C", f"{PACKAGE}.reference")


def _modules() -> Dict[str, pathlib.Path]:
    out = {}
    for path in (ROOT / PACKAGE).rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_external(name: str) -> bool:
    return any(name == e or name.startswith(e + ".") for e in EXTERNAL)


def _targets(module: str, node, is_package: bool) -> List[str]:
    """The modules an import statement names (``from a import b``: ``a.b`` if that is a module, else ``a``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        here = module.split(".") if is_package else module.split(".")[:-1]
        here = here[:len(here) - (node.level - 1)]
        base = ".".join(here + ([node.module] if node.module else []))
    full = [f"{base}.{alias.name}" for alias in node.names]
    return [name if name in MODULES or _is_external(name) else base for name in full]


def imports(module: str, top_level_only: bool = False) -> Set[str]:
    """Every name ``module`` imports (other packages' too), outside functions only if ``top_level_only``."""
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.update(_targets(module, node, path.name == "__init__.py"))
    return found


def _package_edges(module: str, **kwargs) -> Set[str]:
    out = set()
    for name in imports(module, **kwargs):
        if _is_external(name):
            continue
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        if name and name != module:
            out.add(name)
    return out


GRAPH = {module: _package_edges(module) for module in MODULES}


def _cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _reach(start: str) -> Set[str]:
    seen, todo = set(), [start]
    while todo:
        for w in GRAPH[todo.pop()]:
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return seen


def test_the_graph_is_read_from_every_module():
    # A reader that found nothing would pass every test below.
    assert len(MODULES) > 60 and sum(map(len, GRAPH.values())) > 150
    assert f"{PACKAGE}.compose.cl" in GRAPH[f"{PACKAGE}.kernels.stages"]


def test_the_package_has_no_import_cycle():
    assert _cycles(GRAPH) == []


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_the_backend_types_import_nothing_of_the_package():
    assert GRAPH[f"{PACKAGE}.backends.types"] == set()


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith(f"{PACKAGE}.kernels")))
def test_kernel_modules_never_reach_the_registry(module):
    forbidden = {f"{PACKAGE}.backends.registry", f"{PACKAGE}.backends.report", f"{PACKAGE}.backends.auto",
                 f"{PACKAGE}.backends", f"{PACKAGE}.nn", f"{PACKAGE}.convert"}
    reached = _reach(module)
    assert not {m for m in reached if m in forbidden or m.startswith(f"{PACKAGE}.nn.")}, sorted(reached)


def test_the_registry_loads_backends_only_lazily():
    top = {name for name in imports(f"{PACKAGE}.backends.registry", top_level_only=True)}
    assert not [name for name in top if name.startswith(f"{PACKAGE}.kernels")]
    lazily = imports(f"{PACKAGE}.backends.registry") - top
    assert f"{PACKAGE}.kernels.triton" in lazily and f"{PACKAGE}.kernels.cuda" in lazily


def test_no_backend_name_is_hard_coded_outside_the_registry():
    # Capabilities are fields of the records; only the registry (and the kernel packages naming
    # themselves) say "triton" or "cuda" as a backend's name.
    allowed = (f"{PACKAGE}.backends.registry", f"{PACKAGE}.kernels.", f"{PACKAGE}.train", f"{PACKAGE}.info")
    for module, path in MODULES.items():
        if module.startswith(allowed):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [c for c in ast.walk(node) if isinstance(c, ast.Constant)] if isinstance(node, ast.Compare) else []
            # "cuda" is also a device type, so only comparisons of a ``.name`` with it count
            by_name = any(isinstance(side, ast.Attribute) and side.attr == "name" for side in [node.left] + node.comparators) \
                if isinstance(node, ast.Compare) else False
            if any(c.value in ("triton", "triton-chain", "cuda-chain") or (by_name and c.value == "cuda") for c in names):
                raise AssertionError(f"{module}:{node.lineno} compares with a backend name")


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_runtime_module_imports_tooling(module):
    tooling: Tuple[str, ...] = ("tools", "bench", "tests", "scripts", "helpers")
    offending = [name for name in imports(module) if name.split(".")[0] in tooling]
    if module == f"{PACKAGE}._cli":  # the console script that runs a checkout's (or wheel's) bench
        offending = [name for name in offending if not name.startswith(f"{PACKAGE}.bench")]
    assert offending == []
