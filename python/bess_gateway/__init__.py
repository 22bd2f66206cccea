"""bess-gateway: OCPP 1.6J / 2.0.1 gateway for battery energy storage at EV fast-charging hubs."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bess-gateway")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
