"""bess-gateway: OCPP 1.6J / 2.0.1 gateway for battery energy storage at EV fast-charging hubs."""

from bess_gateway._core import __version__

__all__ = ["__version__"]
