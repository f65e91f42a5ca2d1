"""Slipway: take trained ML models from prototype to production and keep them healthy there."""

from slipway.errors import SlipwayError

__version__ = "0.1.0"

__all__ = ["Client", "SlipwayError", "__version__"]


def __getattr__(name: str) -> object:
    # The SDK pulls in httpx; import it only when asked for.
    if name == "Client":
        from slipway.client import Client

        return Client
    raise AttributeError(name)
