"""The layering of DESIGN.md, read from the imports (every import statement, lazy ones too)."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Set

import networkx as nx

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("invariants", "tracer", "solver", "corpus")


def _type_only(tree: ast.AST) -> Set[int]:
    """ids of the import nodes inside `if TYPE_CHECKING:` blocks (annotations only)."""
    out: Set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            out |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return out


def imports(runtime_only: bool = False) -> Dict[str, Set[str]]:
    """module -> the modules and packages it imports, for every module of the packages
    (with `runtime_only`, not those imported for annotations only)."""
    out: Dict[str, Set[str]] = {}
    for path in sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        names: Set[str] = set()
        tree = ast.parse(path.read_text(), str(path))
        skip = _type_only(tree) if runtime_only else set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names |= {f"{node.module}.{a.name}" for a in node.names}
        out[module] = names
    return out


def reaches(names: Set[str], *targets: str) -> Set[str]:
    return {n for n in names if any(n == t or n.startswith(t + ".") for t in targets)}


def test_the_core_imports_neither_torch_nor_tracer_nor_solver_nor_the_app() -> None:
    core = {m: n for m, n in imports().items() if m.startswith("invariants")
            and not m.startswith("invariants.app") and m != "invariants.cli"}  # the command's module name
    assert len(core) > 10
    bad = {m: reaches(n, "torch", "tracer", "solver", "invariants.app") for m, n in core.items()}
    assert not any(bad.values()), {m: b for m, b in bad.items() if b}


def test_tracer_and_solver_import_nothing_of_invariants_and_corpus_nothing_of_invar() -> None:
    for module, names in imports().items():
        if module.startswith(("tracer", "solver")):
            assert not reaches(names, "invariants", "corpus"), module
        if module.startswith("corpus"):  # the pipelines and the corpus's own verifier
            assert not reaches(names, "invariants", "tracer", "solver"), module


def test_no_import_cycle_but_the_template_registration() -> None:
    graph = nx.DiGraph()
    table = imports(runtime_only=True)
    for module, names in table.items():
        for name in names:
            # `from a.b import c` names a.b.c: that module if there is one, else a.b
            target = name if name in table else name.rsplit(".", 1)[0]
            if target in table and target != module:
                graph.add_edge(module, target)
    registration = {"invariants.registry", "invariants.templates"}
    found = list(nx.simple_cycles(graph))
    assert any("invariants.registry" in c for c in found)  # the one cycle there is: the detection works
    cycles = [c for c in found if not set(c) <= registration | {m for m in c if m.startswith("invariants.templates.")}]
    assert not cycles, cycles
