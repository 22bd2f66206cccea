"""The `sunspec` profile: SunSpec models laid out from data, for the simulator and the probe.

`registers/sunspec.toml` holds the point layouts of models 1, 701, 702, 704, 713 and 802 (from the
SunSpec Alliance's model definitions) and the bindings between model points and the gateway's
vocabulary. `build_register_map()` lays the models out from 40000 ("SunS", then each model's
ID and L, then its points, then the 0xFFFF end model) into a `RegisterMap` the simulator serves:
the four command registers under the gateway's names, every measurement computed from the
battery state with the model's scale factor, and everything else constant (IDs, lengths, scale
factors, ratings, strings; unimplemented points read SunSpec's "not implemented" values).
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Any, Final

from bess_gateway import __version__

from .battery import BatteryParams
from .regmap import Direction, Register, RegisterMap, RegType, load_toml_profile

__all__ = [
    "BASE",
    "MARKER",
    "ModelDef",
    "Point",
    "build_register_map",
    "decode_point",
    "models",
    "not_implemented",
    "scale_factors",
]

BASE: Final = 40000
MARKER: Final = (0x5375, 0x6E53)  # "SunS"
END_MODEL: Final = 0xFFFF

#: SunSpec point type -> register type (strings and pads are handled on their own).
_TYPES: Final[dict[str, RegType]] = {
    "uint16": RegType.U16, "enum16": RegType.U16, "bitfield16": RegType.U16,
    "count": RegType.U16, "pad": RegType.U16, "int16": RegType.I16, "sunssf": RegType.I16,
    "uint32": RegType.U32, "enum32": RegType.U32, "bitfield32": RegType.U32,
    "acc32": RegType.U32, "int32": RegType.I32, "uint64": RegType.U64, "acc64": RegType.U64,
}


@dataclass(frozen=True, slots=True)
class Point:
    name: str
    type: str
    size: int
    sf: str  # name of the scale-factor point in the same model, or ""
    offset: int  # from the model's ID register


@dataclass(frozen=True, slots=True)
class ModelDef:
    id: int
    name: str
    label: str
    points: tuple[Point, ...]

    @property
    def length(self) -> int:
        """L: registers after ID and L."""
        return sum(p.size for p in self.points) - 2

    def point(self, name: str) -> Point:
        for p in self.points:
            if p.name == name:
                return p
        raise KeyError(f"model {self.id} has no point {name!r}")


@cache
def register_doc() -> dict[str, Any]:
    """The SunSpec register description (registers/sunspec.toml) as loaded, read once."""
    text = resources.files("bess_gateway.sim").joinpath("registers", "sunspec.toml").read_text(
        encoding="utf-8")
    return tomllib.loads(text)


@cache
def models() -> dict[int, ModelDef]:
    """Every model whose layout we know, by id."""
    out: dict[int, ModelDef] = {}
    for m in register_doc()["model"]:
        if "same_as" in m:  # meters 201-204 share one layout; the base is listed first
            points = out[int(m["same_as"])].points
        else:
            offset = 0
            pts = []
            for name, typ, size, sf in m["points"]:
                pts.append(Point(name, typ, int(size), sf, offset))
                offset += int(size)
            points = tuple(pts)
        out[int(m["id"])] = ModelDef(int(m["id"]), m["name"], m.get("label", ""), points)
    return out


def scale_factors() -> dict[int, dict[str, int]]:
    return {int(k): dict(v) for k, v in register_doc()["scale_factors"].items()}


def layout() -> dict[int, int]:
    """model id -> address of its ID register, as the simulator serves them."""
    addr = BASE + 2
    out: dict[int, int] = {}
    for mid in register_doc()["map"]["models"]:
        out[int(mid)] = addr
        addr += 2 + models()[int(mid)].length
    return out


def not_implemented(typ: str, size: int) -> list[int]:
    """SunSpec's "not implemented" words for a point type."""
    if typ in ("int16", "sunssf"):
        return [0x8000]
    if typ == "int32":
        return [0x8000, 0]
    if typ in ("acc32", "acc64", "string", "pad"):
        return [0] * size
    if typ in ("uint64",):
        return [0xFFFF] * 4
    return [0xFFFF] * size


def decode_point(point: Point, words: list[int], sf: int | None) -> Any:
    """Words of one point -> value (scaled when it has a scale factor); None = not implemented."""
    if point.type == "string":
        raw = b"".join(w.to_bytes(2, "big") for w in words)
        return raw.split(b"\0", 1)[0].decode("ascii", "replace").strip()
    if point.type == "pad":
        return None
    if words == not_implemented(point.type, point.size) and point.type not in ("acc32", "acc64"):
        return None
    reg = Register(point.name, 0, _TYPES[point.type])
    raw = reg.decode_raw(words)
    if point.sf and sf is not None:
        return round(raw * 10.0 ** sf, 6)
    return raw


def _string_words(text: str, size: int) -> list[int]:
    data = text.encode("ascii")[: size * 2].ljust(size * 2, b"\0")
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, size * 2, 2)]


def _remap_bits(table: Mapping[str, tuple[str, int]], target: str,
                our_bits: Mapping[str, int]) -> Callable[[Any], float]:
    pairs = [(our_bits[name], bit) for name, (point, bit) in table.items()
             if point == target and name in our_bits]

    def compute(state: Any) -> float:
        bits = int(state.alarm_bits)
        return float(sum(1 << theirs for ours, theirs in pairs if bits >> ours & 1))

    return compute


def build_register_map(params: BatteryParams | None = None,
                       alarm_bits: Mapping[str, int] | None = None) -> RegisterMap:
    """The simulator's register map for the sunspec profile."""
    params = params or BatteryParams()
    if alarm_bits is None:
        alarm_bits = load_toml_profile("generic").alarm_bits  # our alarm bit numbers
    doc = register_doc()
    bind = doc["bind"]
    sfs = scale_factors()
    where = layout()
    registers: list[Register] = []
    computed: dict[str, Callable[[Any], float]] = {}
    constants: dict[int, tuple[int, ...]] = {BASE: MARKER}
    taken: set[str] = set()

    def address(ref: str) -> tuple[Point, int, int]:
        mid, name = ref.split(".", 1)
        model = models()[int(mid)]
        point = model.point(name)
        return point, where[model.id] + point.offset, model.id

    def scale(point: Point, mid: int) -> float:
        return 10.0 ** sfs.get(mid, {}).get(point.sf, 0) if point.sf else 1.0

    for ours, ref in bind["write"].items():
        point, addr, mid = address(ref)
        registers.append(Register(ours, addr, _TYPES[point.type], scale(point, mid), "",
                                  Direction.WRITE, f"SunSpec {ref}"))
        taken.add(ref)
    for ref in bind["settings"]["points"]:
        point, addr, mid = address(ref)
        registers.append(Register(ref, addr, _TYPES[point.type], scale(point, mid), "",
                                  Direction.WRITE, f"SunSpec {ref} (stored)"))
        taken.add(ref)

    millivolts = {"cell_v_max_v": "cell_v_max_mv", "cell_v_min_v": "cell_v_min_mv"}
    for ref, ours in bind["read"].items():
        point, addr, mid = address(ref)
        if ours in millivolts:
            field = millivolts[ours]
            computed[ref] = lambda s, f=field: float(getattr(s, f)) / 1000.0
        else:
            computed[ref] = lambda s, f=ours: float(getattr(s, f))
        registers.append(Register(ref, addr, _TYPES[point.type], scale(point, mid), "",
                                  Direction.READ, f"SunSpec {ref} = {ours}"))
        taken.add(ref)
    for ref, values in bind["state"].items():
        point, addr, _ = address(ref)
        computed[ref] = lambda s, v=tuple(values): float(v[int(s.pcs_state)])
        registers.append(Register(ref, addr, _TYPES[point.type], 1.0, "", Direction.READ,
                                  f"SunSpec {ref} from pcs_state"))
        taken.add(ref)
    alarm_table = {name: (spec.split(":")[0], int(spec.split(":")[1]))
                   for name, spec in bind["alarms"].items()}
    for target in sorted({p for p, _ in alarm_table.values()}):
        point, addr, _ = address(target)
        computed[target] = _remap_bits(alarm_table, target, alarm_bits)
        registers.append(Register(target, addr, _TYPES[point.type], 1.0, "", Direction.READ,
                                  f"SunSpec {target} from alarm_bits"))
        taken.add(target)
    # 713.Sta and 802 heartbeat: derived, no generic counterpart.
    for ref, fn in (("713.Sta", lambda s: 2.0 if int(s.alarm_bits) else 0.0),
                    ("802.Hb", lambda s: float(int(s.t_s) & 0xFFFF))):
        point, addr, _ = address(ref)
        computed[ref] = fn
        registers.append(Register(ref, addr, _TYPES[point.type], 1.0, "", Direction.READ,
                                  f"SunSpec {ref}"))
        taken.add(ref)

    statics: dict[str, float | str] = {
        "1.Mn": "bess-gateway", "1.Md": "BESS-SIM", "1.Vr": __version__, "1.SN": "SIM-0001",
        "1.Opt": "", "1.DA": 1,
        "702.WMaxRtg": params.pcs_rating_w, "702.WChaRteMaxRtg": params.pcs_rating_w,
        "702.WDisChaRteMaxRtg": params.pcs_rating_w, "702.VNomRtg": params.ac_voltage_v,
        "702.WMax": params.pcs_rating_w, "702.WChaRteMax": params.pcs_rating_w,
        "702.WDisChaRteMax": params.pcs_rating_w, "702.VNom": params.ac_voltage_v,
        "713.WHRtg": params.capacity_wh, "713.WHAvail": params.capacity_wh * params.soh_pct / 100,
        "802.WHRtg": params.capacity_wh, "802.SoCMax": 100.0, "802.SoCMin": 0.0,
        "802.Typ": 4,  # LITHIUM_ION
    }
    for mid, start in where.items():
        model = models()[mid]
        for point in model.points:
            ref = f"{mid}.{point.name}"
            addr = start + point.offset
            if ref in taken:
                continue
            if point.name == "ID":
                words = [mid]
            elif point.name == "L":
                words = [model.length]
            elif point.type == "sunssf":
                words = Register(ref, 0, RegType.I16).encode_raw(sfs.get(mid, {}).get(point.name,
                                                                                       0))
            elif ref in statics:
                value = statics[ref]
                if point.type == "string":
                    words = _string_words(str(value), point.size)
                else:
                    words = Register(ref, 0, _TYPES[point.type],
                                     scale(point, mid)).encode(float(value), saturate=True)
            else:
                words = not_implemented(point.type, point.size)
            constants[addr] = tuple(words)
    end = max(where.values()) + 2 + models()[max(where, key=where.get)].length
    constants[end] = (END_MODEL, 0)
    return RegisterMap(
        name="sunspec",
        registers=tuple(sorted(registers, key=lambda r: r.address)),
        alarm_bits=MappingProxyType(dict(alarm_bits)),
        pcs_states=MappingProxyType({"off": 0, "standby": 1, "running": 2, "fault": 3}),
        description=doc["map"]["description"],
        constants=MappingProxyType(constants),
        computed=MappingProxyType(computed),
    )
