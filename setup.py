"""The one build step pyproject.toml cannot declare: copy the top-level `schemas/` into the wheel.

`schemas/` stays the source of truth at the top of the repository (producers and reviewers find
it there); the built package carries a copy as `processor/schemas/`, read with importlib.resources,
so an installed wheel needs no checkout and no ACCESS_EVAL_SCHEMA_DIR.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithSchemas(build_py):
    def run(self) -> None:
        super().run()
        source = Path(__file__).resolve().parent / "schemas"
        target = Path(self.build_lib) / "processor" / "schemas"
        shutil.copytree(source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.md"))


setup(cmdclass={"build_py": BuildWithSchemas})
