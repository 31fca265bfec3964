# syntax=docker/dockerfile:1
#
# access-eval container image.
#
#   docker build -t access-eval:0.1.0 .
#   docker run --rm --read-only --tmpfs /tmp -p 9108:9108 \
#     -e ACCESS_EVAL_BOOTSTRAP_SERVERS=kafka:9092 access-eval:0.1.0
#
# Two stages: the builder installs the package and its dependencies into a virtualenv
# (confluent-kafka, fastavro, msgspec and pydantic-core ship manylinux wheels; Debian's gcc compiles
# our own core with mypyc, ACCESS_EVAL_COMPILE=1, the default);
# the final stage copies only that virtualenv (the wheel carries the Avro schemas as package data). Both stages use the same base
# image so the venv's interpreter symlinks resolve in the final stage.
# The image runs as a numeric non-root user and writes nothing outside /tmp, so it works with
# readOnlyRootFilesystem (mount an emptyDir/tmpfs on /tmp). There is no HEALTHCHECK on purpose:
# Kubernetes probes /livez and /readyz on the metrics port (see helm/access-eval).
#
# What the tests prove:
# - tests/packaging/test_dockerfile.py (static, no engine): stages, copied files vs .dockerignore, numeric USER
#   equal to the chart's runAsUser/runAsGroup, exec-form ENTRYPOINT/CMD, port, no compilers; every
#   runtime dependency pinned with hashes in requirements.lock and installed --require-hashes, the
#   project installed --no-deps --no-build-isolation, and the final RUN removing shells and pip.
# - tests/packaging/test_image.py (marker `image`; buildah + podman, no Docker daemon, no registry): builds this
#   file with PYTHON_IMAGE set to a Debian bookworm base made from Debian packages (python3 3.11; see
#   scripts/build_image.py), checks the image's own USER is 10001:10001, then runs `access-eval run`
#   inside it with --read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges on the host
#   network against the test broker: 300 cross-account attempts in monitor mode -> 300 eval events
#   (Deny, not enforced), /readyz and /livez 200, the process runs as uid/gid 10001, SIGTERM -> exit 0;
#   /bin/sh, /bin/bash, dash, `python -m pip` and `python -m ensurepip` fail in the image.
#   Measured on the 2-core test machine: image 250 MB; build 67-120 s on a present base (pip downloads
#   the dependencies each time); the base itself ~100 s once (cached in .cache/image/base.tar).
#   `make image` builds localhost/access-eval:0.1.0 the same way.
# Another base: `--build-arg PYTHON_IMAGE=...`, any image whose `python` is 3.11+ with the venv module
# (the builder and the final stage use the same base, so the venv's interpreter symlinks resolve).

# Pin it by digest where a registry is reachable (`python:3.11-slim@sha256:<digest>`): the tag moves.
# The tests build on a local Debian base and pass its image id, which is a content digest
# (scripts/build_image.py, which also checks the base tarball's sha256).
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
# 1: the core is compiled with mypyc (processor/native.py; bench/README.md, "Compiled core"). 0: the
# same modules interpreted, for a platform without Debian's gcc.
ARG ACCESS_EVAL_COMPILE=1
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# The C compiler, in this stage only: the final stage copies the virtualenv, never the compiler. The
# C headers of the base's Python come with python:3.11-slim; a Debian python3 needs python3-dev.
RUN if [ "$ACCESS_EVAL_COMPILE" = 1 ]; then \
      apt-get update -q \
      && apt-get install -y -q --no-install-recommends gcc libc6-dev \
      && { python3 -c "import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))" \
           || apt-get install -y -q --no-install-recommends python3-dev; } \
      && rm -rf /var/lib/apt/lists/*; \
    fi
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Every third-party file installed is checked against a hash from the lock files (pip-compile
# --generate-hashes from PyPI; regenerate with the commands at their top): the runtime dependencies
# (requirements.lock) and the build backend (requirements-build.lock, so the build is not isolated
# and fetches nothing unchecked).
COPY requirements.lock requirements-build.lock ./
RUN pip install --require-hashes --no-deps -r requirements-build.lock -r requirements.lock
# pyproject.toml declares README.md as the package readme: setuptools needs it to build.
COPY pyproject.toml setup.py MANIFEST.in README.md ./
COPY schemas/ schemas/
COPY processor/ processor/
# Non-editable install: the package lands in the venv's site-packages, byte-compiled by pip, so the
# final stage needs neither the source tree nor write access to compile anything at run time. setup.py
# reads ACCESS_EVAL_COMPILE; mypy and its helpers are build tools, removed with pip afterwards.
RUN pip install --no-deps --no-build-isolation . \
    && pip uninstall -y pip setuptools wheel mypy mypy-extensions librt ast-serialize pathspec

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="access-eval" \
      org.opencontainers.image.description="Kafka stream processor evaluating IBM Cloud IAM external identity interaction settings" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

# The last RUN: after it the image has no shell and no pip (nothing to run a pasted command or install
# a package with, should anyone get a process in it). Python stays: it is the program.
RUN groupadd --system --gid 10001 access-eval \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin access-eval \
    && rm -rf /usr/local/bin/pip* /usr/local/lib/python3*/site-packages/pip* \
       /usr/local/lib/python3*/ensurepip /usr/lib/python3*/ensurepip /usr/share/python-wheels \
       /usr/lib/python3/dist-packages/pip* /usr/bin/pip* \
    && rm -f /bin/bash /bin/rbash /bin/dash /bin/sh /usr/bin/bash /usr/bin/rbash /usr/bin/dash /usr/bin/sh

COPY --from=builder /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp

USER 10001:10001
WORKDIR /tmp
# /metrics, /livez and /readyz (ACCESS_EVAL_METRICS_PORT).
EXPOSE 9108
ENTRYPOINT ["access-eval"]
CMD ["run"]
