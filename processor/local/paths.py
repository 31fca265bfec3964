"""Where the local broker keeps its jars and data, and the small helpers every part of it shares.

- jars: ``<repo>/.cache/kafka/<version>/libs`` (override the cache root with ``ACCESS_EVAL_KAFKA_CACHE``);
- data: ``<repo>/var/kafka`` (override with ``ACCESS_EVAL_DATA_DIR`` or ``--data-dir``).

Installed as a wheel (no checkout around the package), both go to the user's XDG folders instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

Progress = Callable[[str], None]


#: The broker's state file (pid, ports) and log in its data dir; a cluster node's dir has the same.
STATE_FILE = "broker.json"
LOG_FILE = "broker.log"
LOG_ROTATE_BYTES = 50 * 1024 * 1024


def repo_root() -> Path | None:
    """The checkout this module lives in (installed editable), or None when installed as a wheel:
    then the cache and data go to the user's XDG folders instead of into site-packages."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() else None


def default_dir(variable: str, repo_sub: str, xdg_variable: str, xdg_fallback: str, name: str) -> Path:
    """``$variable``, else ``<repo>/<repo_sub>`` in a checkout, else ``<$xdg_variable or
    ~/xdg_fallback>/access-eval/<name>`` (installed as a wheel)."""
    env = os.environ.get(variable)
    if env:
        return Path(env).expanduser().resolve()
    root = repo_root()
    if root:
        return root / repo_sub
    base = os.environ.get(xdg_variable)
    return (Path(base) if base else Path.home() / xdg_fallback) / "access-eval" / name


def default_cache_dir() -> Path:
    """Cache root for jars and Maven's local repository: ``$ACCESS_EVAL_KAFKA_CACHE`` or
    ``<repo>/.cache/kafka`` (git-ignored), so a clean clone re-downloads but a re-run does not."""
    return default_dir("ACCESS_EVAL_KAFKA_CACHE", ".cache/kafka", "XDG_CACHE_HOME", ".cache", "kafka")


def default_data_dir() -> Path:
    """Broker data dir: ``$ACCESS_EVAL_DATA_DIR`` or ``<repo>/var/kafka`` (git-ignored as /var/)."""
    return default_dir("ACCESS_EVAL_DATA_DIR", "var/kafka", "XDG_STATE_HOME", ".local/state", "kafka")


def resolve_data_dir(data_dir: Path | None) -> Path:
    return (data_dir or default_data_dir()).expanduser().resolve()


def say_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock, so that two processes (two shells, parallel test workers) do not
    download into, format or start from the same directory at the same time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def tail_log(path: Path, lines: int = 40, start_offset: int = 0) -> str:
    """The last lines of a log written from `start_offset` on: what a failure message shows."""
    try:
        with path.open("rb") as handle:
            handle.seek(start_offset)
            data = handle.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def rotate_log(path: Path, max_bytes: int = LOG_ROTATE_BYTES) -> None:
    """Keep one previous log (``<name>.1``): a log appended to on every start would grow unbounded."""
    with contextlib.suppress(OSError):
        if path.stat().st_size > max_bytes:
            path.replace(path.with_name(path.name + ".1"))
