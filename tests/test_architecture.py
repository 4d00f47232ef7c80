"""The house stays clean: imports point one way between the packages of src/widealign, with no
cycle, and no package but rules/ holds more than a fifth of the code."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "widealign"

#: Bottom to top: a package may import only packages on a lower line (the CLI -> sweeps, studies,
#: bench -> runs -> train -> rules/models order of the design). ``widealign`` is the top-level
#: ``__init__`` (the public re-exports and the version).
LAYERS = [
    {"suggest"},
    {"seeding", "system", "storage", "losses"},
    {"models", "data"},
    {"rules"},
    {"widealign", "train"},
    {"diagnostics", "testing"},
    {"runs"},
    {"studies", "bench"},
    {"sweeps"},
    {"report"},
    {"cli", "experiments"},
    {"__main__"},
]
LEVEL = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _unit(path: Path, src: Path = SRC) -> str:
    """The package (or top-level module) that ``path`` belongs to."""
    rel = path.relative_to(src)
    if len(rel.parts) == 1:
        return "widealign" if rel.stem == "__init__" else rel.stem
    return rel.parts[0]


def _target(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "widealign"


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    """Package -> the packages it imports (at module level or inside functions)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for path in src.rglob("*.py"):
        unit = _unit(path, src)
        graph[unit]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                if name == "widealign" or name.startswith("widealign."):
                    target = _target(name)
                    if target != unit:
                        graph[unit].add(target)
    return graph


def test_every_package_has_a_layer():
    assert set(import_graph()) <= set(LEVEL), set(import_graph()) - set(LEVEL)


def test_imports_point_one_way():
    wrong = [
        f"{unit} imports {target}"
        for unit, targets in import_graph().items()
        for target in targets
        if LEVEL[target] >= LEVEL[unit]
    ]
    assert not wrong, wrong


def test_the_graph_has_no_cycle():
    graph = import_graph()
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            assert state.get(nxt) != 1, " -> ".join([*path, node, nxt])
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for node in list(graph):
        if node not in state:
            visit(node, [])


def test_the_checker_sees_a_wrong_way_import(tmp_path):
    """The layering check can fail: a models module that imports the CLI is reported."""
    (tmp_path / "models").mkdir()
    (tmp_path / "cli").mkdir()
    (tmp_path / "models" / "x.py").write_text("def f():\n    from widealign.cli.main import main\n")
    (tmp_path / "cli" / "main.py").write_text("import widealign.models\n")
    graph = import_graph(tmp_path)
    assert graph == {"models": {"cli"}, "cli": {"models"}}
    assert LEVEL["cli"] >= LEVEL["models"]


def package_lines() -> dict[str, int]:
    lines: dict[str, int] = defaultdict(int)
    for path in SRC.rglob("*.py"):
        lines[_unit(path)] += len(path.read_text().splitlines())
    return lines


def test_no_package_but_rules_holds_more_than_a_fifth():
    lines = package_lines()
    total = sum(lines.values())
    big = {name: n for name, n in lines.items() if name != "rules" and n > 0.2 * total}
    assert not big, f"{big} of {total} lines"
