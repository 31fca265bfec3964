"""Build and run the container image with buildah/podman, without a Docker daemon or a registry.

The build tool of `make image` and `scripts/bootstrap --all`; tests/packaging/test_image.py builds
and runs the image with the same functions:

    .venv/bin/python scripts/build_image.py base        # make .cache/image/base.tar and import it (cached)
    .venv/bin/python scripts/build_image.py build TAG   # build the Dockerfile on that base (`make image`)

It lives in scripts/, not in the product: it needs the checkout (Dockerfile, .cache/) and users
build images with `make image`, never through `access-eval`.

No registry can be reached, so the Dockerfile's `PYTHON_IMAGE` build argument is pointed at a Debian
bookworm base made with mmdebstrap from Debian packages (python3 3.11, like python:3.11-slim).
Everything lives under .cache/: the base tarball, the engine's storage (vfs driver, no overlay
mounts needed) and the engine configuration (cgroupfs, runc, host network, ulimits that fit the
hard limits of this machine). The engine is rootful podman/buildah with chroot isolation.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache"
IMAGE_CACHE = CACHE / "image"
BASE_TAR = IMAGE_CACHE / "base.tar"
BASE_RECIPE = IMAGE_CACHE / "base.tar.recipe"
#: The tarball's sha256, recorded when mmdebstrap made it and checked before every import.
BASE_SHA256 = IMAGE_CACHE / "base.tar.sha256"
ENGINE_DIR = CACHE / "containers"
HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
SUITE = "bookworm"
PACKAGES = ["python3", "python3-venv", "python-is-python3", "ca-certificates"]
# Neither docs, man pages nor locales are needed in an image (179 MB instead of ~200 MB).
EXCLUDES = ["/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*",
            "/usr/share/lintian/*"]
# pip in the image's RUN steps verifies TLS with the system bundle (which the build bind-mounts
# from the host, so a CA that the host trusts is trusted by the build too).
PIP_CONF = f"[global]\ncert = {HOST_CA_BUNDLE}\n"
ULIMITS = ["nofile=4096:4096", "nproc=4096:4096"]  # podman's defaults exceed this machine's hard limits
ENGINE_PACKAGES = ("buildah podman skopeo umoci mmdebstrap runc uidmap slirp4netns catatonit "
                   "containernetworking-plugins golang-github-containers-common")
HOW = f"run `scripts/bootstrap --all` (Debian packages: {ENGINE_PACKAGES})"


def engine_env() -> dict[str, str]:
    """Environment for podman/buildah: storage and engine configuration under .cache/containers."""
    ENGINE_DIR.mkdir(parents=True, exist_ok=True)
    storage = ENGINE_DIR / "storage.conf"
    conf = ENGINE_DIR / "containers.conf"
    _write_if_changed(storage, (
        "[storage]\n"
        'driver = "vfs"\n'
        f'graphroot = "{ENGINE_DIR / "storage"}"\n'
        f'runroot = "{ENGINE_DIR / "run"}"\n'
    ))
    _write_if_changed(conf, (
        "[containers]\n"
        'netns = "host"\n'
        f"default_ulimits = {json.dumps(ULIMITS)}\n"
        "[engine]\n"
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n'
        'runtime = "runc"\n'
        f'tmp_dir = "{ENGINE_DIR / "tmp"}"\n'
    ))
    return {**os.environ, "CONTAINERS_STORAGE_CONF": str(storage), "CONTAINERS_CONF": str(conf)}


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def run(args: list[str], timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run an engine command with the cached configuration; a failure shows its output."""
    proc = subprocess.run(args, env=engine_env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        output = f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        raise AssertionError(f"{' '.join(args)} exited {proc.returncode}:\n{output}")
    return proc


def base_recipe() -> str:
    """What makes the base tarball, hashed: a change of packages or hooks rebuilds it."""
    text = repr((SUITE, PACKAGES, EXCLUDES, PIP_CONF))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def base_ref() -> str:
    return f"localhost/access-eval-base:{SUITE}-{base_recipe()}"


@dataclass
class BaseResult:
    #: The base's image id (`sha256:...`, a digest of its content): what the Dockerfile builds FROM, so
    #: a tag re-pointed in the engine's storage cannot change the base under a test.
    ref: str
    tar_seconds: float | None  # None: cached
    import_seconds: float | None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ensure_base(mmdebstrap: str = "mmdebstrap", podman: str = "podman") -> BaseResult:
    """The Debian base image in the engine's storage, made (mmdebstrap) and imported only when missing."""
    IMAGE_CACHE.mkdir(parents=True, exist_ok=True)
    recipe = base_recipe()
    tar_seconds = import_seconds = None
    if not (BASE_TAR.exists() and BASE_RECIPE.exists() and BASE_RECIPE.read_text().strip() == recipe):
        start = time.monotonic()
        partial = BASE_TAR.with_suffix(".tar.partial")
        lines = " ".join(shlex.quote(line) for line in PIP_CONF.splitlines())
        pip_hook = f'printf "%s\\n" {lines} > "$1/etc/pip.conf"'
        args = [mmdebstrap, "--quiet", "--variant=minbase", "--format=tar", f"--include={','.join(PACKAGES)}",
                *(f"--dpkgopt=path-exclude={e}" for e in EXCLUDES),
                "--customize-hook", pip_hook,
                # apt lists and caches are not needed at run time.
                "--customize-hook", 'rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*',
                SUITE, str(partial)]
        proc = subprocess.run(args, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise AssertionError(f"mmdebstrap exited {proc.returncode}:\n{proc.stderr[-4000:]}")
        BASE_SHA256.write_text(_sha256(partial) + "\n")
        partial.replace(BASE_TAR)
        BASE_RECIPE.write_text(recipe + "\n")
        tar_seconds = time.monotonic() - start
    # The Debian packages are verified by apt (signed Release files) when mmdebstrap fetches them; the
    # tarball is pinned by its sha256 from then on (mmdebstrap output is not byte-reproducible, so the
    # hash is recorded, not written in the repository). A tarball made before hashes were recorded is
    # trusted once, the first time it is seen.
    if not BASE_SHA256.exists():
        BASE_SHA256.write_text(_sha256(BASE_TAR) + "\n")
    if BASE_SHA256.read_text().strip() != _sha256(BASE_TAR):
        raise AssertionError(f"{BASE_TAR} does not match {BASE_SHA256}: delete both to make the base again")
    ref = base_ref()
    if run([podman, "image", "exists", ref], check=False).returncode != 0:
        start = time.monotonic()
        run([podman, "import", "--change", "ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
             "--change", "ENV=LANG=C.UTF-8", str(BASE_TAR), ref])
        import_seconds = time.monotonic() - start
    image_id = run([podman, "image", "inspect", "--format", "{{.Id}}", ref]).stdout.strip()
    return BaseResult(image_id, tar_seconds, import_seconds)


def build_image(tag: str, base: str, buildah: str = "buildah") -> float:
    """Build the repository's Dockerfile on `base` (no layer cache: every run builds this Dockerfile)."""
    start = time.monotonic()
    run([buildah, "bud", "--isolation", "chroot", "--pull=never", "--layers=false",
         "-v", f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro",
         "--build-arg", f"PYTHON_IMAGE={base}", "-f", str(REPO / "Dockerfile"), "-t", tag, str(REPO)], timeout=900)
    return time.monotonic() - start


def main(argv: list[str] | None = None) -> int:
    """`base` makes and imports the Debian base (cached); `build TAG` also builds the Dockerfile on it."""
    parser = argparse.ArgumentParser(prog="scripts/build_image.py", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("base", help="make .cache/image/base.tar and import it into the engine (cached)")
    sub.add_parser("build", help="build the Dockerfile on that base").add_argument("tag")
    args = parser.parse_args(argv)
    result = ensure_base()
    made = "cached" if result.tar_seconds is None else f"made in {result.tar_seconds:.0f} s"
    imported = "present" if result.import_seconds is None else f"imported in {result.import_seconds:.0f} s"
    print(f"image base {result.ref}: {BASE_TAR.relative_to(REPO)} {made}, {imported}")
    if args.command == "build":
        seconds = build_image(args.tag, result.ref)
        size = int(run(["podman", "image", "inspect", "--format", "{{.Size}}", args.tag]).stdout)
        print(f"image {args.tag}: {size / 1e6:.0f} MB, built in {seconds:.0f} s"
              f" (podman with CONTAINERS_STORAGE_CONF={ENGINE_DIR / 'storage.conf'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
