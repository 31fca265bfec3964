"""A real Kubernetes API server (etcd + kube-apiserver) for tests, driven with kubectl.

Import as ``from tests.support.k8s_harness import ...``.

    with KubeAPIServer.start(tmp_path) as api:
        api.install_crds(["ServiceMonitor"])
        proc = api.kubectl("apply", "--dry-run=server", "-f", "-", input=manifest)

No scheduler, controller manager or kubelet: nothing is ever started or reconciled, but every
request goes through the real decoding, defaulting, validation, admission (Pod Security included)
and CRD schemas. etcd and kube-apiserver listen on free loopback ports, keep their data in the
given tmp dir, are always stopped at the end and are killed with the test process (PR_SET_PDEATHSIG).

Binaries (tests/support/required.py: missing ones fail the test): ``etcd`` from Debian's ``etcd-server``
package, ``kube-apiserver`` built from ``tools/kube-apiserver`` into
``.cache/bin/kube-apiserver-<version>``, the CRDs downloaded into ``.cache/crds`` (all three by
``scripts/bootstrap --all``), and ``kubectl``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.support.kafka_harness import die_with_parent, free_port
from tests.support.required import missing, require_binary

REPO = Path(__file__).resolve().parents[2]
BOOTSTRAP = REPO / "scripts" / "bootstrap"
CRD_DIR = REPO / ".cache" / "crds"
HOW = "run `scripts/bootstrap --all`"
# Only written into the `kubernetes` Endpoints; must not be a loopback address (TEST-NET-1, never routed).
ADVERTISE_ADDRESS = "192.0.2.10"
_START_ATTEMPTS = 3  # a free port picked by the OS can be taken before etcd / kube-apiserver binds it


class _PortTaken(AssertionError):
    pass


def kube_version() -> str:
    """The Kubernetes version scripts/bootstrap builds (its KUBE_VERSION=...), e.g. ``v1.35.4``."""
    match = re.search(r"^KUBE_VERSION=(v[0-9.]+)$", BOOTSTRAP.read_text(), re.MULTILINE)
    assert match, "KUBE_VERSION=... not found in scripts/bootstrap"
    return match.group(1)


#: SIGKILL, not SIGTERM: kube-apiserver's graceful shutdown keeps it alive for a long time once etcd is
#: gone, and a throwaway test server has nothing to save.
_die_with_parent = die_with_parent(signal.SIGKILL)


def _spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
        )


def _stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=15)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def crd_files() -> dict[str, Path]:
    """Kind -> CRD file, for every CRD scripts/bootstrap downloaded into .cache/crds (one CRD per file,
    as controller-gen writes them; read with a regex: some are megabytes, and use YAML 1.1 tags that
    PyYAML's safe loader refuses, so kubectl alone parses them)."""
    found: dict[str, Path] = {}
    for path in sorted(CRD_DIR.glob("*/*.yaml")):
        text = path.read_text()
        match = re.search(r"^  names:\n(?:    .*\n)*?    kind: (\w+)$", text, re.MULTILINE)
        if re.search(r"^kind: CustomResourceDefinition$", text, re.MULTILINE) and match:
            found[match.group(1)] = path
    return found


def _credentials(workdir: Path, openssl: str) -> tuple[Path, Path, Path, str]:
    """Service-account signing keys and a static token for a system:masters user: (key, public key,
    token file, token)."""
    sa_key = workdir / "sa.key"
    subprocess.run([openssl, "genrsa", "-out", str(sa_key), "2048"], check=True, capture_output=True)
    sa_pub = workdir / "sa.pub"
    subprocess.run([openssl, "rsa", "-in", str(sa_key), "-pubout", "-out", str(sa_pub)],
                   check=True, capture_output=True)
    token = os.urandom(16).hex()
    tokens = workdir / "tokens.csv"
    tokens.write_text(f'{token},admin,admin-uid,"system:masters"\n')
    return sa_key, sa_pub, tokens, token


def _write_kubeconfig(path: Path, port: int, token: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {
            # The apiserver's self-signed serving certificate, on loopback only.
            "server": f"https://127.0.0.1:{port}", "insecure-skip-tls-verify": True}}],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "admin"}}],
    }))
    path.chmod(0o600)
    return path


@dataclass
class KubeAPIServer:
    """A running etcd + kube-apiserver pair; use :meth:`start` and ``with``."""

    workdir: Path
    port: int
    kubeconfig: Path
    token: str
    kubectl_bin: str
    etcd: subprocess.Popen[bytes]
    apiserver: subprocess.Popen[bytes]
    started_in: float
    _closed: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    # -- lifecycle ---------------------------------------------------------------------------------

    @classmethod
    def start(cls, workdir: Path, ready_timeout: float = 90.0) -> KubeAPIServer:
        """Start etcd and kube-apiserver on free loopback ports, data under `workdir`; wait for /readyz."""
        version = kube_version()
        etcd_bin = require_binary("etcd", f"{HOW} (Debian package etcd-server)")
        apiserver_bin = require_binary(
            f"kube-apiserver-{version}", f"{HOW} (builds tools/kube-apiserver into .cache/bin)"
        )
        kubectl_bin = require_binary("kubectl", "install kubectl (e.g. Debian's kubernetes-client)")
        openssl = require_binary("openssl", "apt-get install openssl")
        for attempt in range(1, _START_ATTEMPTS + 1):
            try:
                return cls._start(workdir / f"attempt-{attempt}", etcd_bin, apiserver_bin, kubectl_bin, openssl,
                                  ready_timeout)
            except _PortTaken:
                if attempt == _START_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    @classmethod
    def _start(cls, workdir: Path, etcd_bin: str, apiserver_bin: str, kubectl_bin: str, openssl: str,
               ready_timeout: float) -> KubeAPIServer:
        workdir.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()

        client = free_port()
        peer = free_port(exclude=[client])
        etcd = _spawn([
            etcd_bin, "--name", "test", "--data-dir", str(workdir / "etcd"), "--log-level", "warn",
            "--listen-client-urls", f"http://127.0.0.1:{client}",
            "--advertise-client-urls", f"http://127.0.0.1:{client}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"test=http://127.0.0.1:{peer}",
        ], workdir / "etcd.log")
        apiserver: subprocess.Popen[bytes] | None = None
        try:
            _wait_http(f"http://127.0.0.1:{client}/health", etcd, workdir / "etcd.log", ready_timeout)

            sa_key, sa_pub, tokens, token = _credentials(workdir, openssl)
            port = free_port(exclude=[client, peer])
            apiserver = _spawn([
                apiserver_bin,
                f"--etcd-servers=http://127.0.0.1:{client}",
                "--bind-address=127.0.0.1", f"--secure-port={port}",
                f"--advertise-address={ADVERTISE_ADDRESS}",
                f"--cert-dir={workdir / 'certs'}",
                f"--token-auth-file={tokens}",
                "--authorization-mode=RBAC",
                f"--service-account-key-file={sa_pub}",
                f"--service-account-signing-key-file={sa_key}",
                "--service-account-issuer=https://kubernetes.default.svc",
                "--service-cluster-ip-range=10.96.0.0/16",
            ], workdir / "kube-apiserver.log")
            _wait_http(f"https://127.0.0.1:{port}/readyz", apiserver, workdir / "kube-apiserver.log",
                       ready_timeout, token=token)
        except BaseException:
            _stop(apiserver)
            _stop(etcd)
            raise
        started_in = time.monotonic() - began

        kubeconfig = _write_kubeconfig(workdir / "kubeconfig", port, token)
        return cls(workdir, port, kubeconfig, token, kubectl_bin, etcd, apiserver, started_in)

    def __enter__(self) -> KubeAPIServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._closed:
            return
        self._closed = True
        _stop(self.apiserver)
        _stop(self.etcd)

    def rss_bytes(self) -> int:
        """Resident memory of the kube-apiserver process (Linux /proc)."""
        status = Path(f"/proc/{self.apiserver.pid}/status").read_text()
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        return int(match.group(1)) * 1024 if match else 0

    # -- API ---------------------------------------------------------------------------------------

    def get(self, path: str) -> Any:
        return json.loads(_get(self.url + path, self.token).decode())

    def kubectl(self, *args: str, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
        env["KUBECONFIG"] = str(self.kubeconfig)
        return subprocess.run(
            [self.kubectl_bin, "--kubeconfig", str(self.kubeconfig), *args],
            input=input, capture_output=True, text=True, timeout=timeout, env=env, check=False,
        )

    def kubectl_ok(self, *args: str, input: str | None = None) -> str:
        proc = self.kubectl(*args, input=input)
        assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
        return proc.stdout

    def create_namespace(self, name: str, labels: dict[str, str]) -> None:
        doc = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}
        self.kubectl_ok("apply", "-f", "-", input=json.dumps(doc))

    def install_crds(self, kinds: Iterable[str]) -> list[str]:
        """Create the CRDs of `kinds` from .cache/crds and wait until they are served; their names."""
        files = crd_files()
        wanted = sorted(set(kinds))
        absent = [k for k in wanted if k not in files]
        if absent:
            missing(f"CRDs of {', '.join(absent)} in {CRD_DIR}", HOW)
        names = []
        for kind in wanted:
            # create, not apply: some CRDs exceed the size limit of apply's last-applied annotation.
            proc = self.kubectl("create", "-o", "name", "-f", str(files[kind]))
            assert proc.returncode == 0, proc.stderr
            names += proc.stdout.split()
        self.kubectl_ok("wait", "--for=condition=Established", "--timeout=60s", *names)
        return names


def _get(url: str, token: str | None = None, timeout: float = 5) -> bytes:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the apiserver's self-signed certificate, loopback only
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
        body: bytes = response.read()
        return body


def _wait_http(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float,
               token: str | None = None) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = _tail(log)
            error = _PortTaken if "address already in use" in tail else AssertionError
            raise error(f"{process.args[0]} exited with {process.returncode}:\n{tail}")
        try:
            _get(url, token)
            return
        except (urllib.error.URLError, OSError) as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"{url} not ready after {timeout} s ({last}):\n{_tail(log)}")
