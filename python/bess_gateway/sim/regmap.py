"""Register maps as data: load a profile TOML into typed dataclasses, encode/decode register words.

Everything here is pure (no I/O apart from reading the TOML file), so the wire format can be
tested without a socket. A register's engineering value is ``raw * scale`` in ``unit``; multi-word
values are big-endian with the high word first (design.md section 4).
"""

from __future__ import annotations

import itertools
import math
import tomllib
from collections.abc import Callable, Iterator, Mapping, MutableSequence, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

__all__ = [
    "Direction",
    "RegType",
    "Register",
    "RegisterMap",
    "RegisterMapError",
    "load_register_map",
    "load_toml_profile",
    "parse_register_map",
]


class RegisterMapError(ValueError):
    """A register map is malformed; the message names the file and the entry."""


class RegType(StrEnum):
    U16 = "u16"
    I16 = "i16"
    U32 = "u32"
    I32 = "i32"
    U64 = "u64"

    @property
    def words(self) -> int:
        return _WORDS[self]

    @property
    def signed(self) -> bool:
        return self in (RegType.I16, RegType.I32)

    @property
    def min_raw(self) -> int:
        return -(1 << (16 * self.words - 1)) if self.signed else 0

    @property
    def max_raw(self) -> int:
        bits = 16 * self.words
        return (1 << (bits - 1)) - 1 if self.signed else (1 << bits) - 1


_WORDS: Final[dict[RegType, int]] = {
    RegType.U16: 1,
    RegType.I16: 1,
    RegType.U32: 2,
    RegType.I32: 2,
    RegType.U64: 4,
}


class Direction(StrEnum):
    READ = "read"  # measured by the PCS/BMS, read by the gateway
    WRITE = "write"  # commanded by the gateway


@dataclass(frozen=True, slots=True)
class Register:
    name: str
    address: int
    type: RegType
    scale: float = 1.0
    unit: str = ""
    direction: Direction = Direction.READ
    description: str = ""

    @property
    def words(self) -> int:
        return self.type.words

    @property
    def end(self) -> int:
        """One past the last address this register occupies."""
        return self.address + self.type.words

    # -- raw integers <-> words -----------------------------------------------------------------

    def encode_raw(self, raw: int) -> list[int]:
        """Raw integer -> register words, high word first. Raises ValueError when out of range."""
        t = self.type
        if not t.min_raw <= raw <= t.max_raw:
            raise ValueError(f"{self.name}: raw value {raw} outside {t.value} range")
        unsigned = raw & ((1 << (16 * t.words)) - 1)  # two's complement for negatives
        return [(unsigned >> (16 * (t.words - 1 - i))) & 0xFFFF for i in range(t.words)]

    def decode_raw(self, words: Sequence[int]) -> int:
        """Register words (high word first) -> raw integer."""
        t = self.type
        if len(words) != t.words:
            raise ValueError(f"{self.name}: expected {t.words} words, got {len(words)}")
        value = 0
        for w in words:
            if not 0 <= w <= 0xFFFF:
                raise ValueError(f"{self.name}: word {w} is not a 16-bit value")
            value = (value << 16) | w
        if t.signed and value >= 1 << (16 * t.words - 1):
            value -= 1 << (16 * t.words)
        return value

    # -- engineering values <-> words -----------------------------------------------------------

    def to_raw(self, value: float, *, saturate: bool = False) -> int:
        """Engineering value -> raw integer (rounded to the nearest step of `scale`).

        With ``saturate`` an out-of-range value is pinned to the type's range, as a device
        would report a reading beyond its register's span; otherwise it is a ValueError.
        """
        if math.isnan(value):
            raise ValueError(f"{self.name}: NaN cannot be encoded")
        if math.isinf(value):
            if not saturate:
                raise ValueError(f"{self.name}: {value} cannot be encoded")
            return self.type.max_raw if value > 0 else self.type.min_raw
        # Integers at scale 1 skip the float division: a u64 counter must stay exact.
        raw = value if isinstance(value, int) and self.scale == 1 else round(value / self.scale)
        if saturate:
            return min(max(raw, self.type.min_raw), self.type.max_raw)
        return raw

    def encode(self, value: float, *, saturate: bool = False) -> list[int]:
        return self.encode_raw(self.to_raw(value, saturate=saturate))

    def decode(self, words: Sequence[int]) -> float:
        """Register words -> engineering value; an int at scale 1, so counters stay exact."""
        raw = self.decode_raw(words)
        if self.scale == 1:
            return raw
        # Rounding through the scale's decimal places avoids 0.1 * 4000 == 400.00000000000006.
        return round(raw * self.scale, _decimals(self.scale))


def _decimals(scale: float) -> int:
    text = repr(float(scale))
    if "e" in text or "E" in text:
        return 12
    frac = text.split(".")[1] if "." in text else ""
    return len(frac.rstrip("0"))


@dataclass(frozen=True, slots=True)
class RegisterMap:
    name: str
    registers: tuple[Register, ...]
    alarm_bits: Mapping[str, int] = field(default_factory=dict)
    pcs_states: Mapping[str, int] = field(default_factory=dict)
    description: str = ""
    # Words served as they are (SunSpec IDs, lengths, scale factors, strings): address -> words.
    constants: Mapping[int, tuple[int, ...]] = field(default_factory=dict)
    # Read registers whose value derives from the model state (name -> f(state)) rather than
    # being the state field of the same name.
    computed: Mapping[str, Callable[[Any], float]] = field(default_factory=dict)
    _by_name: Mapping[str, Register] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", MappingProxyType({r.name: r for r in self.registers}))

    def __getitem__(self, name: str) -> Register:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"register map {self.name!r} has no register {name!r}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[Register]:
        return iter(self.registers)

    def __len__(self) -> int:
        return len(self.registers)

    def addresses(self) -> dict[str, int]:
        """name -> address (the shape of ``_core.default_register_map()``)."""
        return {r.name: r.address for r in self.registers}

    def by_direction(self, direction: Direction) -> tuple[Register, ...]:
        return tuple(r for r in self.registers if r.direction is direction)

    def span(self, direction: Direction) -> tuple[int, int]:
        """(first address, word count) covering every register of one direction."""
        regs = self.by_direction(direction)
        if not regs:
            raise ValueError(f"register map {self.name!r} has no {direction.value} registers")
        start = min(r.address for r in regs)
        return start, max(r.end for r in regs) - start

    def decode_block(self, start: int, words: Sequence[int]) -> dict[str, float]:
        """Decode every register lying wholly inside ``words`` (which begins at ``start``)."""
        end = start + len(words)
        return {
            r.name: r.decode(words[r.address - start : r.end - start])
            for r in self.registers
            if start <= r.address and r.end <= end
        }

    def encode_into(
        self,
        image: MutableSequence[int],
        name: str,
        value: float,
        *,
        base: int = 0,
        saturate: bool = False,
    ) -> None:
        """Write one register's words into ``image``, whose index 0 is address ``base``."""
        reg = self[name]
        image[reg.address - base : reg.end - base] = reg.encode(value, saturate=saturate)

    def alarm_names(self, bits: int) -> list[str]:
        """Names of the alarm bits set in ``bits``, lowest bit first."""
        by_bit = sorted(self.alarm_bits.items(), key=lambda kv: kv[1])
        return [name for name, bit in by_bit if bits >> bit & 1]


# -- loading --------------------------------------------------------------------------------------


def parse_register_map(text: str, *, source: str = "<string>") -> RegisterMap:
    """Parse register-map TOML text. Every problem found is listed in one RegisterMapError."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RegisterMapError(f"{source}: not valid TOML: {exc}") from exc

    errors: list[str] = []
    meta = doc.get("map", {})
    if not isinstance(meta, dict):
        errors.append("[map] must be a table")
        meta = {}
    for key, expected in (("word_order", "big"), ("byte_order", "big")):
        if meta.get(key, expected) != expected:
            errors.append(f"[map].{key} = {meta.get(key)!r}: only {expected!r} is supported")
    name = meta.get("name", Path(source).stem)

    raw_regs = doc.get("register", [])
    if not isinstance(raw_regs, list) or not raw_regs:
        errors.append("at least one [[register]] entry is required")
        raw_regs = []
    registers: list[Register] = []
    for i, entry in enumerate(raw_regs):
        reg = _parse_register(entry, i, errors)
        if reg is not None:
            registers.append(reg)
    _check_layout(registers, errors)

    alarm_bits = _parse_enum(doc.get("alarm_bits", {}), "alarm_bits", 0, 31, errors)
    pcs_states = _parse_enum(doc.get("pcs_state", {}), "pcs_state", 0, 0xFFFF, errors)

    if errors:
        raise RegisterMapError(f"{source}: " + "; ".join(errors))
    return RegisterMap(
        name=str(name),
        registers=tuple(sorted(registers, key=lambda r: r.address)),
        alarm_bits=MappingProxyType(alarm_bits),
        pcs_states=MappingProxyType(pcs_states),
        description=str(meta.get("description", "")),
    )


def _parse_register(entry: Any, index: int, errors: list[str]) -> Register | None:
    where = f"register[{index}]"
    if not isinstance(entry, dict):
        errors.append(f"{where} must be a table")
        return None
    name = entry.get("name")
    if isinstance(name, str) and name:
        where = f"register[{index}] ({name})"
    else:
        errors.append(f"{where}: name must be a non-empty string")
    unknown = set(entry) - {"name", "address", "type", "scale", "unit", "direction", "description"}
    if unknown:
        errors.append(f"{where}: unknown keys {sorted(unknown)}")
    n_before = len(errors)

    address = entry.get("address")
    if not isinstance(address, int) or isinstance(address, bool) or not 0 <= address <= 0xFFFF:
        errors.append(f"{where}: address must be an integer 0..65535")
    try:
        reg_type = RegType(entry.get("type"))
    except ValueError:
        errors.append(f"{where}: type must be one of {[t.value for t in RegType]}")
        reg_type = RegType.U16
    scale = entry.get("scale", 1)
    if (
        not isinstance(scale, int | float)
        or isinstance(scale, bool)
        or not math.isfinite(scale)
        or scale <= 0
    ):
        errors.append(f"{where}: scale must be a positive number")
    try:
        direction = Direction(entry.get("direction"))
    except ValueError:
        errors.append(f"{where}: direction must be 'read' or 'write'")
        direction = Direction.READ
    unit = entry.get("unit", "")
    description = entry.get("description", "")
    if not isinstance(unit, str) or not isinstance(description, str):
        errors.append(f"{where}: unit and description must be strings")

    if len(errors) > n_before or not isinstance(name, str) or not name:
        return None
    return Register(
        name=name,
        address=address,
        type=reg_type,
        scale=float(scale),
        unit=unit,
        direction=direction,
        description=description,
    )


def _check_layout(registers: list[Register], errors: list[str]) -> None:
    seen: set[str] = set()
    for r in registers:
        if r.name in seen:
            errors.append(f"register name {r.name!r} is used twice")
        seen.add(r.name)
        if r.end > 0x10000:
            errors.append(f"register {r.name!r} runs past address 65535")
    ordered = sorted(registers, key=lambda r: r.address)
    for a, b in itertools.pairwise(ordered):
        if b.address < a.end:
            errors.append(f"registers {a.name!r} and {b.name!r} overlap at address {b.address}")


def _parse_enum(table: Any, key: str, lo: int, hi: int, errors: list[str]) -> dict[str, int]:
    if not isinstance(table, dict):
        errors.append(f"[{key}] must be a table")
        return {}
    out: dict[str, int] = {}
    for name, value in table.items():
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            errors.append(f"[{key}].{name} must be an integer {lo}..{hi}")
        elif value in out.values():
            errors.append(f"[{key}].{name}: value {value} is used twice")
        else:
            out[name] = value
    return out


def load_register_map(path: str | Path) -> RegisterMap:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise RegisterMapError(f"{p}: cannot read register map: {exc.strerror}") from exc
    return parse_register_map(text, source=str(p))


def load_toml_profile(name: str) -> RegisterMap:
    """A flat register map shipped with the package (``sim/registers/<name>.toml``)."""
    resource = resources.files("bess_gateway.sim").joinpath("registers", f"{name}.toml")
    return parse_register_map(resource.read_text(encoding="utf-8"), source=f"profile {name!r}")
