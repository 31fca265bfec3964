"""The house's walls: which part of `processor` may import which (README "Architecture").

Every import statement counts, including the lazy ones inside functions (read from the source with
`ast`, not by importing), so a cycle cannot hide behind a function-level import.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "processor"

#: Layer of each part, bottom up. A module may import its own part and parts of a lower layer only.
LAYERS: dict[str, int] = {
    "processor": 0,  # the package itself: name and version
    "core": 1,  # pure: imports nothing of the rest (its core/errors.py holds the root exception)
    "errors": 2,  # exit codes and the command-level exception types; re-exports the core's root exception
    "signals": 2,  # stop signals held until `run` can act on them (stdlib only)
    "stacks": 2,  # every thread's stack on SIGUSR1/SIGUSR2 (stdlib only)
    "native": 2,  # which core modules the build compiles, and whether they run compiled (stdlib only)
    "logs": 3,
    "config": 3,
    "codec": 4,
    "metrics": 4,
    "health": 5,
    "kafka": 6,
    "stream": 7,
    "tools": 7,
    "local": 8,
    "cli": 9,
    "launch": 10,  # the executable's entry: holds stop signals, then imports the commands
    "__main__": 11,  # `python -m processor`
}
#: Third-party imports the pure core may use: models and decoding, nothing that does I/O.
CORE_THIRD_PARTY = {"pydantic", "pydantic_core", "msgspec", "annotated_types", "typing_extensions"}
#: Only the Kafka edge, the parts built on it and the local broker talk to Kafka's client library.
KAFKA_CLIENT_PARTS = {"kafka", "stream", "tools", "local", "cli"}


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(path: Path, module: str) -> Iterator[tuple[str, int]]:
    """(imported module, line) for every import in the file, wherever it stands."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            yield base, node.lineno
            for alias in node.names:  # `from processor.core import settings` imports a module too
                yield f"{base}.{alias.name}", node.lineno


def part_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "processor"


def project_edges() -> dict[str, set[tuple[str, int]]]:
    mods = modules()
    edges: dict[str, set[tuple[str, int]]] = {}
    for name, path in mods.items():
        edges[name] = {(target, line) for target, line in imports(path, name) if target in mods and target != name}
    return edges


def test_every_part_has_a_layer() -> None:
    assert {part_of(m) for m in modules()} <= set(LAYERS), "a new subpackage needs a place in LAYERS"


def test_imports_flow_down_the_layers() -> None:
    wrong = []
    for source, targets in project_edges().items():
        src = part_of(source)
        for target, line in targets:
            dst = part_of(target)
            if dst != src and LAYERS[dst] >= LAYERS[src]:
                wrong.append(f"{source}:{line} imports {target} ({src} may not import {dst})")
    assert not wrong, "\n".join(sorted(wrong))


def test_core_is_pure() -> None:
    wrong = []
    for name, path in modules().items():
        if part_of(name) != "core":
            continue
        for target, line in imports(path, name):
            top = target.split(".")[0]
            if top == "processor" or top in CORE_THIRD_PARTY:
                continue
            if top in {"socket", "subprocess", "threading", "asyncio", "http", "urllib", "confluent_kafka",
                       "fastavro", "prometheus_client", "os", "signal"}:
                wrong.append(f"{name}:{line} imports {target}")
    assert not wrong, "the pure core does no I/O:\n" + "\n".join(wrong)


def test_only_the_kafka_edge_and_above_import_the_kafka_client() -> None:
    wrong = [
        f"{name}:{line}"
        for name, path in modules().items()
        for target, line in imports(path, name)
        if target.split(".")[0] == "confluent_kafka" and part_of(name) not in KAFKA_CLIENT_PARTS
    ]
    assert not wrong, "confluent_kafka imported outside kafka/, stream/, tools/, local/, cli/: " + ", ".join(wrong)


def test_no_command_module_imports_another() -> None:
    wrong = []
    for source, targets in project_edges().items():
        if part_of(source) != "cli" or source in ("processor.cli", "processor.cli.main"):
            continue
        for target, line in targets:
            if part_of(target) == "cli" and target not in ("processor.cli", "processor.cli.common"):
                wrong.append(f"{source}:{line} imports {target}")
    assert not wrong, "\n".join(wrong)


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """A cycle in the graph, as the list of its modules, or None (iterative DFS with colours)."""
    colour: dict[str, int] = {}
    for root in sorted(edges):
        if colour.get(root):
            continue
        stack: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(edges.get(root, ()))))]
        path = [root]
        colour[root] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                colour[node] = 2
                stack.pop()
                path.pop()
            elif colour.get(child) == 1:
                return [*path[path.index(child):], child]
            elif not colour.get(child):
                colour[child] = 1
                stack.append((child, iter(sorted(edges.get(child, ())))))
                path.append(child)
    return None


def test_no_import_cycle_lazy_imports_included() -> None:
    # A package's __init__ re-exporting its modules is not a cycle of concepts: leave those edges out.
    edges = {
        src: {t for t, _ in targets if not (src.count(".") < t.count(".") and t.startswith(src + "."))}
        for src, targets in project_edges().items()
    }
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize(
    "graph, expected",
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
        ({"a": {"a"}}, ["a", "a"]),
    ],
)
def test_the_cycle_finder_finds_cycles(graph: dict[str, set[str]], expected: list[str] | None) -> None:
    assert find_cycle(graph) == expected


def test_a_lazy_import_counts(tmp_path: Path) -> None:
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from processor.stream import loop\n")
    assert ("processor.stream.loop", 2) in set(imports(path, "processor.core.m"))
