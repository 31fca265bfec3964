"""The `java` that runs the local broker (and Maven): found, version-checked, with fixed JVM options."""

from __future__ import annotations

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


def check_java() -> str:
    """Path of a usable java (17+), or a LocalKafkaError naming what to install."""
    java = _java_executable()
    try:
        result = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LocalKafkaError(f"could not run `{java} -version`: {exc}") from exc
    major = parse_java_major(result.stderr + result.stdout)
    if major is None or major < MIN_JAVA:
        found = f"Java {major}" if major is not None else "an unrecognised Java"
        raise LocalKafkaError(
            f"the local Kafka broker needs Java {MIN_JAVA}+ but {java} is {found}: install a JDK or JRE "
            f"{MIN_JAVA} or newer (Debian/Ubuntu: apt-get install openjdk-17-jre-headless) or point "
            "JAVA_HOME at one"
        )
    return java
