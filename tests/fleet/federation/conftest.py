"""Fixtures of the federation tests."""

from tests.fleet.federation.federation_support import no_leftovers

__all__ = ["no_leftovers"]
