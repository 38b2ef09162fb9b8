"""No import cycles in the package: each module's module-level imports of ``rlsyn_trl`` form a graph without loops
(imports inside functions and under ``TYPE_CHECKING`` are deliberate ways to keep start-up light and are skipped)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "rlsyn_trl"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            for statement in ast.walk(node):
                if isinstance(statement, ast.ImportFrom):
                    parts = package.split(".")
                    base = parts[: len(parts) - statement.level + 1] if statement.level else []
                    target = ".".join([*base, *([statement.module] if statement.module else [])])
                    for alias in statement.names:
                        candidate = f"{target}.{alias.name}"
                        graph[name].add(candidate if candidate in modules else target)
                elif isinstance(statement, ast.Import):
                    graph[name].update(alias.name for alias in statement.names)
    return {
        name: {target for target in targets if target in graph and target != name} for name, targets in graph.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_package_has_no_import_cycles():
    graph = import_graph()
    assert len(graph) > 50 and graph["rlsyn_trl.recipes.sft"]  # the graph is really read
    assert cycles(graph) == []


def test_a_cycle_would_be_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]
