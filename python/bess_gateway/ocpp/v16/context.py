"""What the 1.6 feature blocks share: the version-agnostic endpoint context
(bess_gateway.endpoint.link)."""

from __future__ import annotations

from bess_gateway.endpoint.link import Context

VERSION = "1.6"

__all__ = ["VERSION", "Context"]
