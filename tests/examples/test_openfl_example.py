"""The OpenFL example job (jobs/mnist-digits-openfl.yaml) is the Flower example on OpenFL: with the repository's
clusters and policies it places like jobs/mnist-digits.yaml, and differs from it only in its framework, its images
(OpenFL's, docker/openfl.Dockerfile) and in what names it (name, namespace, storage, listener port)."""

from __future__ import annotations

from fleet.models import Framework
from fleet.repository import load_repository
from tests.conftest import ROOT


def test_the_openfl_example_is_the_flower_example_on_openfl() -> None:
    repository = load_repository(ROOT)
    openfl, flower = repository.jobs["mnist-digits-openfl"], repository.jobs["mnist-digits"]
    assert repository.source(openfl).file == "jobs/mnist-digits-openfl.yaml"
    assert openfl.framework is Framework.OPENFL and flower.framework is Framework.FLOWER
    assert repository.placement(openfl).selected == repository.placement(flower).selected
    names = {"name", "namespace", "framework", "images", "storage", "listeners"}
    assert openfl.model_dump(exclude=names) == flower.model_dump(exclude=names)
    assert openfl.images.server == openfl.images.client == "ghcr.io/fleet-fl/fleet-openfl:0.1.0"
    assert openfl.tls and openfl.storage.pvc is not None and openfl.storage.pvc.path == "/models/mnist-digits-openfl"
    assert openfl.listeners[0].port != flower.listeners[0].port
