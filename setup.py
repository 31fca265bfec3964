"""The build steps pyproject.toml cannot declare.

1. Copy the top-level `schemas/` into the wheel. `schemas/` stays the source of truth at the top of
   the repository (producers and reviewers find it there); the built package carries a copy as
   `processor/schemas/`, read with importlib.resources, so an installed wheel needs no checkout and
   no ACCESS_EVAL_SCHEMA_DIR.
2. With ACCESS_EVAL_COMPILE=1, compile the modules `processor/native.py` lists with mypyc (a C compiler
   and mypy, from requirements-build.lock, are needed then). Without it the wheel is pure Python and
   runs the same source interpreted. Asked for and impossible fails the build: no silent fallback.
"""

import ast
import os
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildWithSchemas(build_py):
    def run(self) -> None:
        super().run()
        source = ROOT / "schemas"
        target = Path(self.build_lib) / "processor" / "schemas"
        shutil.copytree(source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.md"))


def native_modules() -> list[str]:
    """MODULES of processor/native.py, read from its text."""
    tree = ast.parse((ROOT / "processor" / "native.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) == "MODULES":
            return list(ast.literal_eval(node.value))  # type: ignore[arg-type]
    raise RuntimeError("processor/native.py: no MODULES")


def ext_modules() -> list:  # type: ignore[type-arg]
    choice = os.environ.get("ACCESS_EVAL_COMPILE", "0")
    if choice not in ("0", "1"):
        raise SystemExit(f"ACCESS_EVAL_COMPILE must be 0 or 1, not {choice!r}")
    if choice == "0":
        return []
    from mypyc.build import mypycify

    return mypycify(native_modules(), opt_level="3", group_name="processor._native")


setup(cmdclass={"build_py": BuildWithSchemas}, ext_modules=ext_modules())
