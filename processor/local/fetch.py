"""The Kafka broker jars from Maven Central, through the machine's `mvn`, cached once complete.

The cache is ``<cache>/<version>/libs`` (see `processor.local.paths.default_cache_dir`), reused once a
marker file records a complete download. `fetch_closure` does the same for other jars (the bench's
Kafka Streams peer, bench/kafka/peers.py) in ``<cache>/<name>/libs``.
"""

from __future__ import annotations

import json
import queue
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from processor.errors import LocalKafkaError
from processor.local.java import check_java
from processor.local.paths import Progress, default_cache_dir, locked, say_stderr

KAFKA_VERSION = "4.4.0"
SCALA_BINARY_VERSION = "2.13"

# Kafka 4.x still compiles against slf4j-api 1.7 (checked in the resolved closure, see
# `_check_slf4j_binding`), so the binding must be a 1.7 one: an slf4j 2.x binding is not found by
# the 1.7 API (it looks for StaticLoggerBinder) and the broker would silently log nothing.
SLF4J_BINDING = ("org.slf4j", "slf4j-simple", "1.7.36")

# Pinned so a download does not depend on whatever default plugin version the local Maven has.
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
HEARTBEAT_S = 15.0  # how often `fetch` says it is still working when mvn prints nothing new
MARKER_FILE = ".complete"


def _check_mvn() -> str:
    found = shutil.which("mvn")
    if not found:
        raise LocalKafkaError(
            "Apache Maven (`mvn`) is needed once to download the Kafka broker jars from Maven Central "
            "but was not found: install it (Debian/Ubuntu: apt-get install maven; macOS: brew install maven)"
        )
    return found


def _coordinates() -> list[tuple[str, str, str]]:
    return [("org.apache.kafka", f"kafka_{SCALA_BINARY_VERSION}", KAFKA_VERSION), SLF4J_BINDING]


def _pom(coordinates: list[tuple[str, str, str]]) -> str:
    """The throwaway POM that `copy-dependencies` needs (it refuses to run without a project)."""
    deps = "\n".join(
        "    <dependency>\n"
        f"      <groupId>{group}</groupId>\n"
        f"      <artifactId>{artifact}</artifactId>\n"
        f"      <version>{version}</version>\n"
        "    </dependency>"
        for group, artifact, version in coordinates
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>access-eval.local</groupId>
  <artifactId>access-eval-jars</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
{deps}
  </dependencies>
</project>
"""


_DOWNLOADED = re.compile(r"Downloaded from [^:]+: \S+/([^/\s]+\.jar) \(([^)]*?)(?: at [^)]*)?\)")


def _run_mvn(mvn: str, pom_dir: Path, out_dir: Path, repo_local: Path, progress: Progress, what: str) -> None:
    """Run `copy-dependencies`, relaying one line per downloaded jar and a heartbeat when mvn is quiet.

    mvn's own output is thousands of lines (every POM); the user only needs to see that it moves.
    """
    cmd = [
        mvn,
        "-B",  # batch mode: no colours, no interactive transfer bars, one line per transfer
        "-f",
        str(pom_dir / "pom.xml"),
        f"-Dmaven.repo.local={repo_local}",
        f"{DEPENDENCY_PLUGIN}:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={out_dir}",
    ]
    try:
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            cwd=pom_dir,
        )
    except OSError as exc:
        raise LocalKafkaError(f"could not run {mvn}: {exc}") from exc
    assert proc.stdout is not None
    try:
        rc, errors, recent = _relay(proc, progress)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        proc.stdout.close()
    if rc != 0:
        detail = "\n".join(errors[:15] or recent[-20:])
        raise LocalKafkaError(
            f"downloading {what} with mvn failed (exit {rc}). Check that this "
            "machine reaches Maven Central (or the mirror in your ~/.m2/settings.xml) and try again "
            f"(the broker's jars: `access-eval local fetch`). mvn said:\n{detail}"
        )


def _relay(proc: subprocess.Popen[str], progress: Progress) -> tuple[int, list[str], list[str]]:
    """Read mvn's output until it exits (a thread reads, so the heartbeat goes on while mvn is quiet);
    -> (exit status, its [ERROR] lines, its last 60 lines)."""
    lines: queue.Queue[str | None] = queue.Queue()

    def pump(stream: TextIO) -> None:
        for line in stream:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    reader = threading.Thread(target=pump, args=(proc.stdout,), daemon=True)
    reader.start()
    recent: deque[str] = deque(maxlen=60)
    errors: list[str] = []
    jars = 0
    started = time.monotonic()
    last_said = started
    while True:
        try:
            line = lines.get(timeout=1.0)
        except queue.Empty:
            if time.monotonic() - last_said >= HEARTBEAT_S:
                elapsed = time.monotonic() - started
                progress(f"  still downloading, {jars} jars so far ({elapsed:.0f} s)")
                last_said = time.monotonic()
            continue
        if line is None:
            break
        recent.append(line)
        if line.startswith("[ERROR]"):
            errors.append(line)
        match = _DOWNLOADED.search(line)
        if match:
            jars += 1
            progress(f"  downloaded {match.group(1)} ({match.group(2)})")
            last_said = time.monotonic()
    return proc.wait(), errors, list(recent)


def _check_slf4j_binding(libs: Path) -> None:
    """Fail loudly if the closure's slf4j-api and the binding disagree on the major.minor line,
    instead of running a broker that silently logs nothing."""
    apis = sorted(libs.glob("slf4j-api-*.jar"))
    binding = SLF4J_BINDING[2]
    for api in apis:
        api_version = api.name.removeprefix("slf4j-api-").removesuffix(".jar")
        if api_version.split(".")[:2] != binding.split(".")[:2]:
            raise LocalKafkaError(
                f"Kafka {KAFKA_VERSION} resolved {api.name} but the logging binding is slf4j-simple "
                f"{binding}; update SLF4J_BINDING in processor/local/fetch.py to the matching version"
            )


def _check_broker(libs: Path) -> None:
    if not any(j.name.startswith(f"kafka_{SCALA_BINARY_VERSION}-") for j in libs.glob("*.jar")):
        raise LocalKafkaError(f"mvn finished but no kafka_{SCALA_BINARY_VERSION} jar is in {libs}")
    _check_slf4j_binding(libs)


def _marker_text(coordinates: list[tuple[str, str, str]]) -> str:
    return json.dumps({"coordinates": [":".join(c) for c in coordinates]}, sort_keys=True) + "\n"


def fetch_jars(cache_dir: Path | None = None, *, progress: Progress | None = None) -> Path:
    """Make sure the Kafka broker jars (plus a logging binding) are in the cache; return their folder."""
    return fetch_closure(KAFKA_VERSION, _coordinates(), cache_dir=cache_dir, progress=progress,
                         check=_check_broker)


def fetch_closure(
    name: str,
    coordinates: list[tuple[str, str, str]],
    *,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
    check: Callable[[Path], None] = lambda _libs: None,
) -> Path:
    """`coordinates` and their runtime closure in `<cache>/<name>/libs`, downloaded once; return that folder.

    The download goes to a temporary folder that is renamed into place, and the marker file is
    written only after that, so an interrupted download is never mistaken for a complete one.
    `mvn` is only needed when the cache is empty. `check(libs)` vets a fresh download.
    """
    say = progress or say_stderr
    cache = (cache_dir or default_cache_dir()).resolve()
    version_dir = cache / name
    libs = version_dir / "libs"
    marker = version_dir / MARKER_FILE
    wanted = _marker_text(coordinates)

    def ready() -> bool:
        try:
            return marker.read_text() == wanted and libs.is_dir()
        except OSError:
            return False

    if ready():
        return libs
    with locked(cache / f".{name}.lock"):
        if ready():  # another process finished the download while we waited
            return libs
        mvn = _check_mvn()
        check_java()  # mvn needs it too, and the message for a missing java is the clearer one
        version_dir.mkdir(parents=True, exist_ok=True)
        marker.unlink(missing_ok=True)
        what = ", ".join(f"{artifact} {version}" for _, artifact, version in coordinates)
        say(f"Fetching {what} and what they need from Maven Central into {libs} (once; cached)")
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="libs.tmp-", dir=version_dir) as tmp:
            tmp_dir = Path(tmp)
            out_dir = tmp_dir / "libs"
            (tmp_dir / "pom.xml").write_text(_pom(coordinates))
            _run_mvn(mvn, tmp_dir, out_dir, cache / "m2", say, what)
            check(out_dir)
            jars = sorted(out_dir.glob("*.jar"))
            if libs.exists():
                shutil.rmtree(libs)
            out_dir.rename(libs)
        marker.write_text(wanted)
        say(f"Fetched {len(jars)} jars in {time.monotonic() - started:.0f} s")
    return libs
