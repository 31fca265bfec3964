"""The helm fixtures of the chart tests (tests/k8s/): one helm binary, its own home, rendered defaults."""

from __future__ import annotations

import os
from typing import Any

import pytest

from tests.support.helm_chart import (
    FULL_VALUES,
    Helm,
    find_helm,
    values_args,
)
from tests.support.required import missing


@pytest.fixture(scope="session")
def helm_bin() -> str:
    path = find_helm()
    if path is None:
        missing("helm", "run `scripts/bootstrap --all` (go install helm.sh/helm/v3/cmd/helm)")
    return path


@pytest.fixture(scope="session")
def helm_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Keep helm's cache/config/data out of the user's home."""
    home = tmp_path_factory.mktemp("helm-home")
    env = dict(os.environ)
    for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        env[var] = str(home / var.lower())
    return env


@pytest.fixture(scope="session")
def helm(helm_bin: str, helm_env: dict[str, str]) -> Helm:
    return Helm(helm_bin, helm_env)


@pytest.fixture(scope="session")
def default_docs(helm: Helm) -> list[dict[str, Any]]:
    return helm.render()


@pytest.fixture(scope="session")
def full_docs(helm: Helm) -> list[dict[str, Any]]:
    return helm.render(*values_args(FULL_VALUES))
