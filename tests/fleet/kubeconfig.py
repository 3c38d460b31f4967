"""A kubeconfig for a test's mock Kubernetes API (kmock) or an address nothing answers at."""

from __future__ import annotations

from pathlib import Path

import yaml


def write_kubeconfig(folder: Path, server: str) -> Path:
    """``<folder>/kubeconfig``: one context, ``mock``, on ``server`` with a bearer token."""
    kubeconfig = folder / "kubeconfig"
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "mock", "cluster": {"server": server}}],
        "users": [{"name": "me", "user": {"token": "t"}}],
        "contexts": [{"name": "mock", "context": {"cluster": "mock", "user": "me"}}],
        "current-context": "mock",
    }
    kubeconfig.write_text(yaml.safe_dump(document), encoding="utf-8")
    return kubeconfig
