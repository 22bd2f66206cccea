"""The simulator's grid meter: the hub's connection point over Modbus TCP, on its own port.

Its reading is the hub load (a profile, sim/hub_load.py) minus the battery's AC power (the
simulated PCS's measured power, + discharge): discharging lowers import, charging raises it.
Energy registers integrate import and export over the simulator's steps.

Two register layouts (``profile``):

- ``generic`` (design.md section 8): holding registers from 0, big-endian, high word first:
  0-1 active power at the connection point, i32 W (+ import, - export); 2-5 energy imported, u64
  Wh; 6-9 energy exported, u64 Wh.
- ``sunspec``: "SunS" at 40000, the common model 1, one meter model (201 single phase, 202 split
  phase, 203 wye or 204 delta three phase; 203 by default), then the end model (0xFFFF, 0). W is
  + import (energy delivered from the grid to the hub) like the generic map, in 100 W steps
  (W_SF = 2); TotWhImp/TotWhExp are acc32 in Wh (TotWh_SF = 0, they wrap at 2^32 like any SunSpec
  accumulator). Phase values split the total evenly over the model's phases; points the model
  does not have read SunSpec's "not implemented" values.

Fault injection for tests: ``set_silent`` (requests read and dropped, connections kept) and
``force_words`` (pin registers to raw words: a "not available" sentinel, garbage).
The meter answers every unit id; writes are refused (ILLEGAL_ADDRESS), as a real meter's
measurements are read-only.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, cast

from pymodbus.constants import ExcCodes
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from bess_gateway import __version__

from . import sunspec
from .hub_load import HubLoad
from .regmap import Register, RegType

__all__ = [
    "GENERIC_REGISTERS",
    "METER_MODELS",
    "GridMeter",
    "MeterReading",
]

METER_MODELS: Final = (201, 202, 203, 204)
PROFILES: Final = ("generic", "sunspec")

#: The generic grid-meter map of design.md section 8.
GENERIC_REGISTERS: Final = (
    Register("grid_w", 0, RegType.I32, unit="W",
             description="active power at the connection point (+ import, - export)"),
    Register("energy_imported_wh", 2, RegType.U64, unit="Wh", description="imported, lifetime"),
    Register("energy_exported_wh", 6, RegType.U64, unit="Wh", description="exported, lifetime"),
)

#: Phases each meter model implements (A, B, C).
_PHASES: Final = {201: 1, 202: 2, 203: 3, 204: 3}
_NOMINAL_LN_V: Final = 230.0
_NOMINAL_LL_V: Final = 400.0
_FREQUENCY_HZ: Final = 50.0
_READINGS_LOG: Final = 65_536  # one entry per step: 20 minutes at the default 20 ms tick


@dataclass(frozen=True, slots=True)
class MeterReading:
    """One published reading (``t`` on the caller's clock, see ``GridMeter.update``)."""

    t: float
    load_w: float
    battery_w: float
    grid_w: float


class GridMeter:
    """A grid meter's register image and its Modbus TCP server (see the module doc)."""

    def __init__(self, load: HubLoad, *, profile: str = "generic", model: int = 203,
                 unit_id: int = 1) -> None:
        if profile not in PROFILES:
            raise ValueError(f"grid meter profile {profile!r}: expected generic or sunspec")
        if profile == "sunspec" and model not in METER_MODELS:
            raise ValueError(f"SunSpec meter model {model}: expected one of 201, 202, 203, 204")
        self._load = load
        self.profile = profile
        self.model = model if profile == "sunspec" else None
        self.unit_id = unit_id
        self._override_w: float | None = None
        self._load_w = 0.0
        self._battery_w = 0.0
        self._grid_w = 0.0
        self._imported_wh = 0.0
        self._exported_wh = 0.0
        self._t_s = 0.0
        self._readings: deque[MeterReading] = deque(maxlen=_READINGS_LOG)
        self._forced: dict[int, int] = {}
        self._silent = False
        self._dropped = 0
        self._server: ModbusTcpServer | None = None
        self._port = 0
        if profile == "generic":
            self.base = 0
            self._image = [0] * GENERIC_REGISTERS[-1].end
        else:
            self.base = sunspec.BASE
            self._image = self._sunspec_layout()
        self.update(0.0, 0.0, 0.0, t=0.0)
        self._readings.clear()  # the log starts with the first step of a running simulator

    # -- inputs ---------------------------------------------------------------------------------

    @property
    def load(self) -> HubLoad:
        return self._load

    def set_load(self, load: HubLoad) -> None:
        """Replace the profile (the override, if any, still wins)."""
        self._load = load

    def set_override(self, watts: float | None) -> None:
        """Hold the hub load at ``watts`` whatever the profile says (a load step at runtime);
        None returns to the profile. Takes effect at the next ``update``."""
        self._override_w = None if watts is None else float(watts)

    @property
    def override_w(self) -> float | None:
        return self._override_w

    def update(self, t_s: float, dt_s: float, battery_w: float, *, t: float) -> MeterReading:
        """Advance to simulator time ``t_s`` (``dt_s`` since the last update) with the battery at
        ``battery_w`` (+ discharge); ``t`` stamps the logged reading (the caller's clock).

        The energy of the step is integrated at the previous reading's power (the meter counted
        what flowed during the step), then the new power is published."""
        if dt_s > 0:
            wh = self._grid_w * dt_s / 3600.0
            if wh >= 0:
                self._imported_wh += wh
            else:
                self._exported_wh -= wh
        self._t_s = t_s
        self._load_w = self._override_w if self._override_w is not None else float(
            self._load.load_w(t_s))
        self._battery_w = float(battery_w)
        self._grid_w = self._load_w - self._battery_w
        self._publish()
        reading = MeterReading(t, self._load_w, self._battery_w, self._grid_w)
        self._readings.append(reading)
        return reading

    # -- what it reads ---------------------------------------------------------------------------

    @property
    def load_w(self) -> float:
        return self._load_w

    @property
    def grid_w(self) -> float:
        """The exact value (the registers carry it rounded to their resolution)."""
        return self._grid_w

    @property
    def battery_w(self) -> float:
        return self._battery_w

    @property
    def imported_wh(self) -> float:
        return self._imported_wh

    @property
    def exported_wh(self) -> float:
        return self._exported_wh

    def readings(self, since: float | None = None) -> list[MeterReading]:
        """Logged readings, oldest first (bounded), those at or after ``since`` if given."""
        if since is None:
            return list(self._readings)
        return [r for r in self._readings if r.t >= since]

    def registers(self, address: int, count: int) -> list[int]:
        lo = address - self.base
        if lo < 0 or count < 0 or lo + count > len(self._image):
            raise ValueError(f"registers {address}..{address + count - 1} are outside the meter")
        return self._image[lo : lo + count]

    @property
    def span(self) -> tuple[int, int]:
        """(first address, number of registers) of the image."""
        return self.base, len(self._image)

    # -- fault injection ------------------------------------------------------------------------

    def force_words(self, address: int, words: list[int] | None) -> None:
        """Pin registers from ``address`` to raw ``words`` (a sentinel such as 0x8000 in a SunSpec
        W, or 0x80000000 in the generic i32); None releases every register pinned from there."""
        lo = address - self.base
        if words is None:
            for a in [a for a in self._forced if a >= lo]:
                del self._forced[a]
        else:
            if lo < 0 or lo + len(words) > len(self._image):
                raise ValueError("forced words fall outside the meter's registers")
            if not all(0 <= w <= 0xFFFF for w in words):
                raise ValueError("words must be 0..65535")
            for i, w in enumerate(words):
                self._forced[lo + i] = w
        self._publish()

    def set_silent(self, on: bool) -> None:
        """While on, requests are read and discarded unanswered; connections stay open."""
        self._silent = on

    @property
    def silent(self) -> bool:
        return self._silent

    @property
    def dropped_requests(self) -> int:
        return self._dropped

    # -- server ---------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        if self._server is not None:
            raise RuntimeError("grid meter already started")
        device = SimDevice(
            id=0,  # every unit id: a meter behind a gateway answers whatever the client asks
            simdata=[SimData(address=self.base, values=[0] * len(self._image),
                             datatype=DataType.REGISTERS, readonly=True)],
            action=self._on_access,
        )
        server = ModbusTcpServer(
            device, address=(host, port),
            trace_pdu=cast(Callable[[bool, ModbusPDU], ModbusPDU], self._trace_pdu))
        try:
            await server.serve_forever(background=True)
        except RuntimeError as exc:
            raise OSError(f"grid meter cannot listen on {host}:{port}: {exc}") from exc
        self._server = server
        listener = cast(asyncio.Server, server.transport)
        self._port = int(listener.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()

    @property
    def port(self) -> int:
        return self._port

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU | None:
        if not sending and self._silent:
            self._dropped += 1
            return None
        return pdu

    async def _on_access(self, func_code: int, start_address: int, address: int, count: int,
                         registers: list[int],
                         set_values: list[int] | list[bool] | None) -> ExcCodes | None:
        if func_code not in (3, 6, 16, 22, 23):
            return ExcCodes.ILLEGAL_FUNCTION
        if set_values is not None:
            return ExcCodes.ILLEGAL_ADDRESS
        lo = address - start_address
        src = address - self.base
        registers[lo : lo + count] = self._image[src : src + count]
        return None

    # -- the register image ---------------------------------------------------------------------

    def _publish(self) -> None:
        if self.profile == "generic":
            self._put(GENERIC_REGISTERS[0], round(self._grid_w))
            self._put(GENERIC_REGISTERS[1], int(self._imported_wh))
            self._put(GENERIC_REGISTERS[2], int(self._exported_wh))
        else:
            self._publish_sunspec()
        for i, w in self._forced.items():
            self._image[i] = w

    def _put(self, reg: Register, raw: int) -> None:
        # The signed minimum is the map's "not available" sentinel (0x80000000): a reading
        # saturates one above it.
        low = reg.type.min_raw + 1 if reg.type.signed else reg.type.min_raw
        raw = max(low, min(reg.type.max_raw, raw))
        lo = reg.address - self.base
        self._image[lo : lo + reg.words] = reg.encode_raw(raw)

    # SunSpec ------------------------------------------------------------------------------------

    def _sunspec_layout(self) -> list[int]:
        common = sunspec.models()[1]
        meter = sunspec.models()[cast(int, self.model)]
        self._common_at = sunspec.BASE + 2
        self._meter_at = self._common_at + 2 + common.length
        end_at = self._meter_at + 2 + meter.length
        image = [0] * (end_at + 2 - sunspec.BASE)
        image[0:2] = sunspec.MARKER
        self._sfs = sunspec.scale_factors()[cast(int, self.model)]
        statics: dict[str, str | int] = {
            "Mn": "bess-gateway", "Md": "GRID-METER-SIM", "Opt": "", "Vr": __version__,
            "SN": "SIM-M-0001", "DA": self.unit_id,
        }
        for model, at in ((common, self._common_at), (meter, self._meter_at)):
            for p in model.points:
                lo = at - sunspec.BASE + p.offset
                if p.name == "ID":
                    words = [model.id]
                elif p.name == "L":
                    words = [model.length]
                elif p.type == "sunssf":
                    words = Register(p.name, 0, RegType.I16).encode_raw(self._sfs.get(p.name, 0))
                elif model.id == 1 and p.name in statics:
                    value = statics[p.name]
                    words = (_string_words(value, p.size) if isinstance(value, str)
                             else [int(value)])
                else:
                    words = sunspec.not_implemented(p.type, p.size)
                image[lo : lo + p.size] = words
        image[end_at - sunspec.BASE : end_at - sunspec.BASE + 2] = [sunspec.END_MODEL, 0]
        return image

    def _set_point(self, name: str, value: float | None) -> None:
        """Write one meter point in engineering units (None: "not implemented")."""
        p = sunspec.models()[cast(int, self.model)].point(name)
        lo = self._meter_at - sunspec.BASE + p.offset
        if value is None:
            self._image[lo : lo + p.size] = sunspec.not_implemented(p.type, p.size)
            return
        sf = self._sfs.get(p.sf, 0) if p.sf else 0
        raw = round(value / 10.0 ** sf)
        if p.type == "acc32":
            words = Register(name, 0, RegType.U32).encode_raw(raw % (1 << 32))
        elif p.type == "bitfield32":
            words = Register(name, 0, RegType.U32).encode_raw(raw)
        else:
            # -32768 is int16's "not implemented": a reading never saturates onto it.
            raw = max(-32767, min(32767, raw))
            words = Register(name, 0, RegType.I16).encode_raw(raw)
        self._image[lo : lo + p.size] = words

    def _publish_sunspec(self) -> None:
        model = cast(int, self.model)
        phases = _PHASES[model]
        w = self._grid_w
        delta = model == 204
        ln_v = None if delta else _NOMINAL_LN_V
        # Currents at nominal phase voltage; A is the sum over the phases.
        phase_amps = abs(w) / phases / _NOMINAL_LN_V
        self._set_point("A", phase_amps * phases)
        self._set_point("W", w)
        self._set_point("VA", abs(w))
        self._set_point("VAR", 0.0)
        self._set_point("PF", 100.0)  # percent in models 201-204
        self._set_point("Hz", _FREQUENCY_HZ)
        self._set_point("PhV", ln_v)
        self._set_point("PPV", _NOMINAL_LL_V if phases > 1 else None)
        for i, ph in enumerate(("A", "B", "C")):
            on = i < phases
            self._set_point(f"Aph{ph}", phase_amps if on else None)
            self._set_point(f"PhVph{ph}", ln_v if on else None)
            self._set_point(f"Wph{ph}", w / phases if on else None)
            self._set_point(f"VAph{ph}", abs(w) / phases if on else None)
            self._set_point(f"VARph{ph}", 0.0 if on else None)
            self._set_point(f"PFph{ph}", 100.0 if on else None)
        for pair in ("AB", "BC", "CA"):
            self._set_point(f"PhVph{pair}", _NOMINAL_LL_V if phases == 3 else None)
        self._set_point("TotWhImp", self._imported_wh)
        self._set_point("TotWhExp", self._exported_wh)
        self._set_point("Evt", 0)


def _string_words(text: str, size: int) -> list[int]:
    data = text.encode("ascii")[: size * 2].ljust(size * 2, b"\0")
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, size * 2, 2)]
