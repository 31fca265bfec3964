"""The compiled core (processor/native.py, setup.py) and its interpreted fallback.

`scripts/bootstrap` compiles the modules native.py lists in place, so the suite runs them as the image
does. The same source must also work interpreted (a build without ACCESS_EVAL_COMPILE, a platform
without a compiler): the last test runs the core's tests and the pure-path benchmark's correctness
check on a copy of the tree without the extensions.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

from processor import native

ROOT = Path(__file__).resolve().parent.parent
#: `make test` sets it (scripts/test): there the core must run compiled.
REQUIRED = os.environ.get("ACCESS_EVAL_REQUIRE_COMPILED") == "1"


def test_native_lists_modules_that_exist_and_may_compile() -> None:
    """Every listed module exists and defines no class pydantic or msgspec must read at run time (those
    stay interpreted in `*_doc` modules: mypyc turns a TypedDict or Struct into something they reject)."""
    for path, name in zip(native.MODULES, native.module_names(), strict=True):
        assert (ROOT / path).is_file(), path
        module = importlib.import_module(name)
        for value in vars(module).values():
            if isinstance(value, type) and value.__module__ == name:
                bases = {b.__module__.split(".")[0] for b in value.__mro__}
                assert not bases & {"pydantic", "msgspec"}, f"{name}.{value.__name__} is read by {bases}"


def test_the_loaded_core_is_what_the_tree_holds() -> None:
    """An extension older than its source runs old code: refused. Under `make test` the core must be
    compiled and current; elsewhere, without a build, it runs interpreted."""
    built = [p for p in native.MODULES if any((ROOT / p).with_suffix(s).exists() for s in EXTENSION_SUFFIXES)]
    if REQUIRED or built:
        assert native.stale_in_tree(ROOT) == [], "stale or missing extensions: run scripts/bootstrap"
        assert native.core_build() == "compiled"
        assert sorted(native.compiled_modules()) == sorted(native.module_names())
    else:
        assert native.core_build() == "interpreted"


def test_a_source_newer_than_its_extension_is_stale(tmp_path: Path) -> None:
    for path in native.MODULES:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
    for name in ("setup.py", "processor/native.py", *native.MODULES):
        (tmp_path / name).write_text("")
    assert native.stale_in_tree(tmp_path) == list(native.MODULES), "no extension at all: all stale"
    suffix = EXTENSION_SUFFIXES[0]
    for path in native.MODULES:
        (tmp_path / path).with_suffix(suffix).write_text("")
    assert native.stale_in_tree(tmp_path) == []
    touched = tmp_path / native.MODULES[0]
    os.utime(touched, (touched.stat().st_mtime + 10, touched.stat().st_mtime + 10))
    assert native.stale_in_tree(tmp_path) == [native.MODULES[0]]
    os.utime(tmp_path / "setup.py", (touched.stat().st_mtime + 20, touched.stat().st_mtime + 20))
    assert native.stale_in_tree(tmp_path) == list(native.MODULES), "a newer setup.py: everything"
    later = touched.stat().st_mtime + 30
    for path in native.MODULES:
        os.utime((tmp_path / path).with_suffix(suffix), (later, later))
    assert native.stale_in_tree(tmp_path) == []
    (tmp_path / "processor" / "kafka").mkdir()
    (tmp_path / "processor" / "kafka" / "table.py").write_text("")
    (tmp_path / "processor" / "kafka" / "table.py").with_suffix(suffix).write_text("")
    assert native.stale_in_tree(tmp_path) == ["processor/kafka/table.py"], "an unlisted module's extension"


def test_the_interpreted_fallback_passes_the_core_tests(tmp_path: Path) -> None:
    """The same source, interpreted: the core's and the codec's tests pass on a copy of the tree without
    the extensions, and the pure-path benchmark's correctness check (outcomes equal the mix, every event
    decodes) passes there too."""
    skip = shutil.ignore_patterns("*.so", "__pycache__", "node_modules", ".out")
    for part in ("processor", "schemas", "bench", "tests"):
        shutil.copytree(ROOT / part, tmp_path / part, ignore=skip)
    shutil.copy2(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    env = {k: v for k, v in os.environ.items() if k != "ACCESS_EVAL_REQUIRE_COMPILED"}
    env["PYTHONPATH"] = str(tmp_path)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    probe = subprocess.run([sys.executable, "-c", "from processor import native; print(native.core_build(), "
                            "native.__file__)"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr
    build, where = probe.stdout.split()
    assert build == "interpreted" and where.startswith(str(tmp_path)), probe.stdout
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/core", "tests/codec",
         "tests/test_native.py::test_the_loaded_core_is_what_the_tree_holds"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=540)
    assert tests.returncode == 0, tests.stdout[-4000:] + tests.stderr[-2000:]
    assert " passed" in tests.stdout.splitlines()[-1], tests.stdout[-500:]
    bench = subprocess.run([sys.executable, "bench/bench_core.py", "--quick"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300)
    assert bench.returncode == 0, bench.stdout[-2000:] + bench.stderr[-2000:]
    assert "correctness: ok" in bench.stdout


def test_asking_which_build_runs_imports_none_of_the_modules() -> None:
    """`core_build()` is asked by the metrics (layer 4) at start: it must not import the stream (layer 7),
    so it reads where a module not imported yet would load from instead of importing it."""
    code = ("import sys; from processor.native import core_build; core_build(); "
            "print(sorted(m for m in sys.modules if m.startswith('processor.')))")
    probe = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "['processor.core', 'processor.native', 'processor.stream']", probe.stdout
