"""The simulator's register-map profiles by name: the flat TOML maps (regmap) and the SunSpec
layout built from model definitions (sunspec). Here rather than in regmap, which sunspec builds on.
"""

from __future__ import annotations

from typing import Final

from .regmap import RegisterMap, RegisterMapError, load_register_map, load_toml_profile
from .sunspec import build_register_map

__all__ = ["PROFILES", "load_profile", "resolve_profile"]

#: Profiles shipped with the package (files under ``sim/registers/``, and SunSpec).
PROFILES: Final[tuple[str, ...]] = ("generic", "sunspec")

#: Profiles named in the product contract that the simulator does not implement yet.
_PLANNED_PROFILES: Final[tuple[str, ...]] = ()


def load_profile(name: str) -> RegisterMap:
    """Load a register map shipped with the package, by profile name."""
    if name not in PROFILES:
        raise RegisterMapError(_unsupported(name))
    if name == "sunspec":
        return build_register_map()  # laid out from model definitions, not a flat map
    return load_toml_profile(name)


def resolve_profile(profile: str) -> RegisterMap:
    """A shipped profile name, or a path to a register-map TOML file (as ``pcs.profile`` allows)."""
    if profile in PROFILES:
        return load_profile(profile)
    if profile.endswith(".toml") or "/" in profile or "\\" in profile:
        return load_register_map(profile)
    raise RegisterMapError(_unsupported(profile))


def _unsupported(name: str) -> str:
    supported = ", ".join(PROFILES)
    if name in _PLANNED_PROFILES:
        return (
            f"profile {name!r} is not implemented yet; supported profiles: {supported} "
            "(or a path to a register-map .toml file)"
        )
    return (
        f"unknown profile {name!r}; supported profiles: {supported} "
        "(or a path to a register-map .toml file)"
    )
