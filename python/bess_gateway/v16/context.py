"""What the 1.6 feature blocks share: the version-agnostic endpoint context (bess_gateway.link)."""

from __future__ import annotations

from bess_gateway.link import Context

VERSION = "1.6"

__all__ = ["VERSION", "Context"]
