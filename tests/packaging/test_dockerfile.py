"""Static checks of the container image definition (Dockerfile, .dockerignore).

No container engine is needed: the Dockerfile is parsed and checked against the repository
(files it copies, the console script it runs) and against the Helm chart (user, port).
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
CHART_VALUES = ROOT / "helm" / "access-eval" / "values.yaml"
COMPILERS = re.compile(r"\b(gcc|g\+\+|cc|clang|make|build-essential|python3?-dev|libc6?-dev|musl-dev)\b")


@dataclass
class Instruction:
    keyword: str
    args: str


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for ins in self.all("ENV"):
            words = shlex.split(ins.args)
            if words and "=" not in words[0]:  # legacy `ENV key value`
                env[words[0]] = " ".join(words[1:])
                continue
            for word in words:
                key, _, value = word.partition("=")
                env[key] = value
        return env


def instructions(text: str) -> list[Instruction]:
    """Instructions with line continuations joined and comments dropped."""
    result: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # comment lines inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        result.append(Instruction(keyword.upper(), args.strip()))
    assert not pending, "Dockerfile ends inside a continued line"
    return result


def parse() -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the build stages."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for ins in instructions(DOCKERFILE.read_text()):
        if ins.keyword == "FROM":
            words = [w for w in ins.args.split() if not w.startswith("--platform")]
            base = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), words[0])
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        elif not stages:
            assert ins.keyword == "ARG", f"{ins.keyword} before the first FROM"
            key, _, default = ins.args.partition("=")
            args[key] = default
        else:
            stages[-1].instructions.append(ins)
    return args, stages


def final_stage() -> Stage:
    return parse()[1][-1]


def copy_parts(ins: Instruction) -> tuple[dict[str, str], list[str], str]:
    """COPY/ADD options, sources and destination (shell or JSON form)."""
    words = json.loads(ins.args) if ins.args.startswith("[") else shlex.split(ins.args)
    options = {}
    while words[0].startswith("--"):
        key, _, value = words.pop(0)[2:].partition("=")
        options[key] = value
    return options, words[:-1], words[-1]


def exec_form(ins: Instruction) -> list[str]:
    assert ins.args.startswith("["), f"{ins.keyword} must use the exec (JSON) form so signals reach the app"
    value = json.loads(ins.args)
    assert isinstance(value, list)
    return [str(v) for v in value]


def dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore excludes `path` (or a parent of it); `!` exceptions honoured."""
    parts = Path(path).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern.lstrip("!").strip("/")
        if pat.startswith("**/"):  # any depth
            pat = pat.removeprefix("**/")
            matched = any(fnmatch.fnmatch(Path(c).name, pat) for c in candidates)
        else:  # relative to the context root
            matched = any(fnmatch.fnmatch(c, pat) for c in candidates)
        if matched:
            result = not negate
    return result


# --------------------------------------------------------------------------------------------


def test_multi_stage_build_on_python_311_slim() -> None:
    _args, stages = parse()
    assert len(stages) >= 2
    builder, final = stages[0], stages[-1]
    assert builder.name, "the builder stage is named so the final stage can COPY --from it"
    assert final.base == "python:3.11-slim"
    # Same base image: the venv's interpreter symlinks point into it.
    assert builder.base == final.base


def test_builder_installs_the_project_into_a_venv() -> None:
    builder = parse()[1][0]
    runs = " ; ".join(i.args for i in builder.all("RUN"))
    match = re.search(r"python3? -m venv (\S+)", runs)
    assert match, "builder creates a virtualenv"
    venv = match.group(1)
    assert re.search(r"\bpip install (--\S+ )*\.(\s|$)", runs), "builder runs `pip install .`"
    assert venv + "/bin" in builder.env().get("PATH", ""), "pip of the venv installs the project"


def test_final_stage_copies_only_the_venv() -> None:
    """The venv from the builder and nothing else: the wheel carries the schemas (tests/packaging/test_wheel.py)."""
    _args, stages = parse()
    builder, final = stages[0], stages[-1]
    assert final.all("ADD") == []
    copies = [copy_parts(i) for i in final.all("COPY")]
    assert len(copies) == 1 and copies[0][0].get("from") == builder.name
    _opts, sources, dest = copies[0]
    assert sources == ["/opt/venv"] and dest == "/opt/venv"
    assert "ACCESS_EVAL_SCHEMA_DIR" not in final.env(), "the installed package finds its own schemas"


def test_builder_gets_what_the_build_needs() -> None:
    """setup.py copies schemas/ into the wheel: the builder needs both in its context."""
    builder = parse()[1][0]
    copied = {s.rstrip("/") for i in builder.all("COPY") for s in copy_parts(i)[1]}
    assert {"pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "processor", "schemas"} <= copied


def test_entrypoint_is_the_console_script() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    scripts = project["scripts"]
    final = final_stage()
    (entrypoint,) = final.all("ENTRYPOINT")
    (cmd,) = final.all("CMD")
    command = exec_form(entrypoint)
    assert command == ["access-eval"]
    assert command[0] in scripts
    assert exec_form(cmd) == ["run"]
    # The script's target module is part of the installed package.
    module = scripts[command[0]].partition(":")[0]
    path = ROOT / module.replace(".", "/")
    assert path.with_suffix(".py").exists() or (path / "__init__.py").exists()
    # The venv's bin directory, where pip puts the script, is on PATH.
    assert final.env()["PATH"].startswith("/opt/venv/bin:")


def test_runs_as_numeric_non_root_user_matching_the_chart() -> None:
    users = final_stage().all("USER")
    assert users, "the final stage sets USER"
    user = users[-1].args
    match = re.fullmatch(r"(\d+)(?::(\d+))?", user)
    assert match, f"USER {user} must be numeric (runAsNonRoot can only verify numeric ids)"
    uid, gid = int(match.group(1)), int(match.group(2) or match.group(1))
    assert uid != 0 and gid != 0
    pod = yaml.safe_load(CHART_VALUES.read_text())["podSecurityContext"]
    assert (pod["runAsUser"], pod["runAsGroup"]) == (uid, gid)


def test_works_with_a_read_only_root_filesystem() -> None:
    final = final_stage()
    env = final.env()
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"
    # Anything that falls back to $HOME or $TMPDIR writes to /tmp (an emptyDir in Kubernetes).
    assert env.get("HOME") == "/tmp"
    assert env.get("TMPDIR", "/tmp") == "/tmp"
    assert final.all("VOLUME") == []


def test_no_healthcheck_and_the_metrics_port_is_exposed() -> None:
    final = final_stage()
    assert final.all("HEALTHCHECK") == [], "Kubernetes probes /livez and /readyz instead"
    exposed = {p.split("/")[0] for i in final.all("EXPOSE") for p in i.args.split()}
    metrics_port = yaml.safe_load(CHART_VALUES.read_text())["processor"]["metricsPort"]
    assert exposed == {str(metrics_port)} == {"9108"}


def test_final_stage_has_no_compilers() -> None:
    final = final_stage()
    assert "slim" in final.base
    for ins in final.all("RUN"):
        assert not re.search(r"\b(apt-get|apt|apk|yum|dnf|microdnf)\b.*\binstall\b|\bapk add\b", ins.args), ins.args
        assert not COMPILERS.search(ins.args), ins.args


def test_dockerignore_excludes_local_artefacts() -> None:
    patterns = dockerignore_patterns()
    for path in (".venv", ".cache", "var", "tests", ".git", ".pytest_cache", "processor/__pycache__",
                 "processor/x.pyc", "access_eval.egg-info", "processor/core/policy.cpython-311-x86_64-linux-gnu.so"):
        assert ignored(path, patterns), f".dockerignore lets {path} into the build context"
    for path in ("pyproject.toml", "processor/cli.py", "schemas/eval_event.avsc"):
        assert not ignored(path, patterns), path


@pytest.mark.parametrize("path", [".venv", "var", "processor/__pycache__", "schemas"])
def test_ignore_matcher(path: str) -> None:
    """The small .dockerignore matcher used above behaves like Docker's for these patterns."""
    patterns = [".venv", "var", "**/__pycache__", "!var/keep"]
    assert ignored(path, patterns) is (path != "schemas")
    assert not ignored("var/keep", patterns)


# --- supply chain: hashed lock files, no shell or pip at run time -----------------------------------

LOCK = ROOT / "requirements.lock"
BUILD_LOCK = ROOT / "requirements-build.lock"


def locked(path: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of a pip-compile --generate-hashes file."""
    pins: dict[str, tuple[str, list[str]]] = {}
    current = ""
    for line in path.read_text().splitlines():
        if match := re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line):
            current = re.sub(r"[-_.]+", "-", match.group(1)).lower()
            pins[current] = (match.group(2), [])
        elif match := re.search(r"--hash=sha256:([0-9a-f]{64})", line):
            pins[current][1].append(match.group(1))
    return pins


def test_every_runtime_dependency_is_pinned_with_hashes() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = locked(LOCK)
    for requirement in project["dependencies"]:
        name = re.sub(r"[-_.]+", "-", re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0]).lower()
        assert name in pins, f"{name} is a runtime dependency missing from requirements.lock"
    assert all(hashes for _version, hashes in pins.values()), "a pin without --hash"
    assert "setuptools" in locked(BUILD_LOCK) and all(h for _v, h in locked(BUILD_LOCK).values())


def test_the_installed_runtime_is_the_lock() -> None:
    """CI installs requirements.lock (scripts/bootstrap), so the tests run what the image ships."""
    from importlib.metadata import PackageNotFoundError, version

    wrong = {}
    for name, (pinned, _hashes) in locked(LOCK).items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = None
        if installed != pinned:
            wrong[name] = (pinned, installed)
    assert wrong == {}, f"installed versions differ from requirements.lock (lock, installed): {wrong}"


def test_the_builder_installs_only_hash_checked_dependencies() -> None:
    builder = parse()[1][0]
    copied = {s for i in builder.all("COPY") for s in copy_parts(i)[1]}
    assert {"requirements.lock", "requirements-build.lock"} <= copied
    runs = [i.args for i in builder.all("RUN")]
    assert any("--require-hashes" in r and "-r requirements.lock" in r and "-r requirements-build.lock" in r
               for r in runs), runs
    project = next(r for r in runs if re.search(r"\bpip install (--\S+ )*\.(\s|$)", r))
    # nothing resolved or fetched beyond the locks: no dependencies, no isolated build environment
    assert "--no-deps" in project and "--no-build-isolation" in project, project
    for path in ("requirements.lock", "requirements-build.lock"):
        assert not ignored(path, dockerignore_patterns()), path


def test_the_final_image_has_no_shell_and_no_pip() -> None:
    final = final_stage()
    runs = final.all("RUN")
    assert runs, "the final stage removes the shell in a RUN"
    last_run = final.instructions.index(runs[-1])
    assert all(i.keyword != "RUN" for i in final.instructions[last_run + 1:])
    removed = set(shlex.split(runs[-1].args))
    for shell in ("/bin/sh", "/usr/bin/sh", "/bin/dash", "/usr/bin/dash", "/bin/bash", "/usr/bin/bash"):
        assert shell in removed, f"{shell} is left in the image"
    for pip in ("/usr/local/bin/pip*", "/usr/local/lib/python3*/site-packages/pip*", "/usr/share/python-wheels",
                "/usr/lib/python3*/ensurepip"):
        assert pip in removed, f"{pip} is left in the image"
