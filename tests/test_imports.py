"""No import cycles in the package: every import of ``rlsyn_trl`` in a module, wherever it stands (module level,
inside a function, under ``TYPE_CHECKING``), and every name a package imports on first use (its ``_LAZY`` table),
is an edge of one graph, and that graph has no loop."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "rlsyn_trl"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def lazy_submodules(tree: ast.Module) -> set[str]:
    """The submodules a package's ``_LAZY = {name: submodule}`` table imports on first use."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(target, "id", None) == "_LAZY" for target in node.targets):
            return set(ast.literal_eval(node.value).values())
    return set()


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        tree = ast.parse(path.read_text())
        if path.name == "__init__.py":
            graph[name].update(f"{name}.{submodule}" for submodule in lazy_submodules(tree))
        for statement in ast.walk(tree):
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
    assert "rlsyn_trl.recognizer.pretrained" in graph["rlsyn_trl.auto_classes"]  # imports inside functions count
    assert "rlsyn_trl.recognizer.trainer" in graph["rlsyn_trl.recognizer"]  # and what a package imports on first use
    assert cycles(graph) == []


def test_a_cycle_would_be_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]
