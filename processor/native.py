"""The modules the build may compile with mypyc, and whether this process runs them compiled.

The hot path (validate, evaluate, encode) and the settings bootstrap are Python executed by the
interpreter; mypyc compiles these modules, unchanged, to C extensions that skip most of the
interpreter's per-operation work (bench/README.md, "Compiled core": 18-21% less CPU per attempt on
the pure path, 15% more exactly-once throughput, 7-15% less CPU per settings record in process). The
source stays the one definition: a build without a compiler, or with ACCESS_EVAL_COMPILE unset,
installs the same modules interpreted, and CI runs the core tests both ways (tests/test_native.py).
Only modules of plain functions and slotted classes are listed; the classes pydantic and msgspec
read at run time live in `attempt_doc` and `settings_doc`, which stay interpreted. setup.py reads
MODULES from this file's text (it does not import the package).
"""

from __future__ import annotations

import importlib.util
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

#: Paths relative to the project root, in the form mypyc's build takes them.
MODULES: tuple[str, ...] = (
    "processor/core/attempts.py",
    "processor/core/compact.py",
    "processor/core/conflicts.py",
    "processor/core/evaluator.py",
    "processor/core/events.py",
    "processor/core/ids.py",
    "processor/core/policy.py",
    "processor/core/rules.py",
    "processor/core/settings.py",
    "processor/core/settings_fast.py",
    "processor/core/times.py",
    "processor/core/versions.py",
    "processor/stream/attempt_stage.py",
)


def module_names() -> list[str]:
    """MODULES as importable names (`processor.core.policy`)."""
    return [path.removesuffix(".py").replace("/", ".") for path in MODULES]


def compiled_modules() -> list[str]:
    """The MODULES that run as extensions here: as loaded, or, for one not imported yet, as it would
    load (`find_spec` imports its package, never the module: the metrics may ask without importing
    the stream)."""
    out = []
    for name in module_names():
        module = sys.modules.get(name)
        if module is not None:
            origin = getattr(module, "__file__", None)
        else:
            spec = importlib.util.find_spec(name)
            origin = spec.origin if spec is not None else None
        if (origin or "").endswith(tuple(EXTENSION_SUFFIXES)):
            out.append(name)
    return out


def core_build() -> str:
    """`compiled` (every module in MODULES), `interpreted` (none) or `mixed` (a stale or partial build):
    the `core` label of access_eval_build_info and the startup log line."""
    n = len(compiled_modules())
    return "compiled" if n == len(MODULES) else "interpreted" if n == 0 else "mixed"


def stale_in_tree(root: Path) -> list[str]:
    """What `scripts/bootstrap` rebuilds and tests/test_native.py refuses to test in a source tree: the
    MODULES whose in-place extension (`setup.py build_ext --inplace`) is missing or older than its
    source, setup.py or this file (a stale extension runs old code), and any extension of a module no
    longer listed (it would still shadow its source, and fail to load once the shared library is rebuilt)."""
    inputs = max((root / "setup.py").stat().st_mtime, (root / "processor" / "native.py").stat().st_mtime)
    stale = []
    for path in MODULES:
        source = root / path
        built = [source.with_suffix(s) for s in EXTENSION_SUFFIXES if source.with_suffix(s).exists()]
        if not built or min(b.stat().st_mtime for b in built) < max(source.stat().st_mtime, inputs):
            stale.append(path)
    listed = {root / path for path in MODULES}
    for ext in sorted((root / "processor").rglob("*.so")):
        source = ext.parent / (ext.name.split(".")[0] + ".py")
        if source.exists() and source not in listed:
            stale.append(str(source.relative_to(root)))
    return stale


if __name__ == "__main__":  # `python -m processor.native --stale`: exit 0 when a rebuild is needed
    sys.exit(0 if stale_in_tree(Path(__file__).resolve().parent.parent) else 1)
