"""The serving fixtures (a real registry with models fitted here, a real server) for protocols."""

from tests.serving.conftest import (  # noqa: F401  (fixtures are found by name)
    cancer,
    cancer_models,
    http,
    identity_server,
    iris_model,
    registry,
    server,
    settings,
)
