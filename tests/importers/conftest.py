"""Fitted models for the importer tests, and the serving fixtures to serve what was imported."""

from tests.serving.conftest import iris_model, settings  # noqa: F401  (fixtures by name)
