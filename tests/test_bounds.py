"""Size bounds (docs/architecture.md): no module under processor/ over 500 lines, no function under
processor/ or bench/ over 60 lines, apart from the declarative tables named below with their reason.

Read from the source with `ast` (nothing is imported), so a new file is covered the day it is added.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60
#: Parts whose modules and functions are bounded.
FUNCTION_ROOTS = ("processor", "bench", "tests")
MODULE_ROOTS = ("processor", "bench", "tests")

#: "path::qualified name" -> why it may be longer. Keep it small: a long function that is not a table
#: is a function doing several things.
ALLOWED_LONG_FUNCTIONS: dict[str, str] = {}


def python_files(root: str) -> list[Path]:
    return sorted((REPO / root).rglob("*.py"))


def functions(tree: ast.AST) -> list[tuple[str, int, int]]:
    """(qualified name, first line, length in lines from `def` to the last line) for every function."""
    found: list[tuple[str, int, int]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}{child.name}"
                assert child.end_lineno is not None
                found.append((name, child.lineno, child.end_lineno - child.lineno + 1))
                visit(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(tree, "")
    return found


def long_functions(roots: tuple[str, ...] = FUNCTION_ROOTS) -> dict[str, str]:
    out = {}
    for root in roots:
        for path in python_files(root):
            rel = path.relative_to(REPO).as_posix()
            for name, line, length in functions(ast.parse(path.read_text(), str(path))):
                if length > MAX_FUNCTION_LINES:
                    out[f"{rel}::{name}"] = f"{rel}:{line} {name} is {length} lines"
    return out


def test_no_module_over_the_bound() -> None:
    long = [
        f"{path.relative_to(REPO)}: {n} lines"
        for root in MODULE_ROOTS
        for path in python_files(root)
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    ]
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split by concept):\n" + "\n".join(long)


def test_no_function_over_the_bound() -> None:
    wrong = [text for key, text in sorted(long_functions().items()) if key not in ALLOWED_LONG_FUNCTIONS]
    assert not wrong, f"functions over {MAX_FUNCTION_LINES} lines (split them):\n" + "\n".join(wrong)


def test_the_allowlist_holds_only_long_functions_with_a_reason() -> None:
    """An entry whose function became short (or was renamed) goes, so the list cannot grow stale."""
    long = long_functions()
    stale = [key for key in ALLOWED_LONG_FUNCTIONS if key not in long]
    assert not stale, "no longer over the bound, remove from ALLOWED_LONG_FUNCTIONS: " + ", ".join(stale)
    assert all(reason.strip() for reason in ALLOWED_LONG_FUNCTIONS.values())


@pytest.mark.parametrize(
    "source, expected",
    [
        ("def f():\n    pass\n", [("f", 1, 2)]),
        ("class A:\n    def m(self):\n        def inner():\n            pass\n", [("A.m", 2, 3), ("A.m.inner", 3, 2)]),
        ("if True:\n    async def g():\n        pass\n", [("g", 2, 2)]),
    ],
)
def test_functions_are_found_with_their_length(source: str, expected: list[tuple[str, int, int]]) -> None:
    assert functions(ast.parse(source)) == expected
