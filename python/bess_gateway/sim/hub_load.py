"""Hub load profiles for the simulator's grid meter: what the hub draws before the battery.

A profile maps simulator time (seconds since the simulator started, the battery model's
``t_s``) to the hub's load in W (+ consumption). The grid meter reads that load minus the
battery's AC power (sim/grid_meter.py).

- ``ConstantLoad``: one value, for tests.
- ``StepLoad``: piecewise constant, ``(from_s, W)`` pairs (tests, benchmarks); ``read_csv``
  reads them from a CSV file.
- ``DayProfile``: a fast-charging hub over a day. 4-8 DC chargers of 150-350 kW; vehicles
  arrive more often at the morning and evening peaks than at night, charge 10-40 minutes at
  what the car accepts (ramp-up, plateau, then the taper of a filling battery) and leave; plus
  the site's base load (lighting, HVAC, the shop). Deterministic for a seed, so a test or a
  benchmark can compute what the meter must read. ``day_s`` compresses the day: the whole 24 h
  pass in ``day_s`` seconds of simulator time (the demo runs a day in a few minutes).

Everything here is pure: no I/O except reading a CSV file.
"""

from __future__ import annotations

import bisect
import csv
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

__all__ = [
    "DAY_S",
    "ChargingSession",
    "ConstantLoad",
    "DayProfile",
    "HubLoad",
    "StepLoad",
    "parse_hub_load",
    "read_csv",
]

DAY_S: Final = 86_400.0

#: Relative arrival rate per hour of the day (0 = midnight): quiet nights, a morning peak
#: (commuters, fleets leaving), a midday plateau and the evening peak (the drive home).
ARRIVAL_SHAPE: Final[tuple[float, ...]] = (
    0.08, 0.05, 0.05, 0.05, 0.08, 0.2, 0.5, 0.9, 1.0, 0.8, 0.55, 0.5,
    0.55, 0.5, 0.5, 0.6, 0.85, 1.0, 1.0, 0.85, 0.6, 0.4, 0.25, 0.12,
)
#: Sessions per charger per hour at the busiest hour (shape 1.0): with 10-40 min sessions,
#: chargers are about 60 % busy at the peaks.
PEAK_ARRIVALS_PER_H: Final = 1.6
CHARGER_KW: Final = (150.0, 200.0, 300.0, 350.0)
#: What arriving cars accept at most (kW): many older or smaller cars well under the charger.
VEHICLE_KW: Final = (50.0, 80.0, 110.0, 150.0, 180.0, 250.0, 270.0, 350.0)
RAMP_S: Final = 30.0  # power electronics and the car's handshake: 0 to plateau (hub time)
TAPER_FROM: Final = 0.7  # fraction of the session after which power tapers ...
TAPER_TO: Final = 0.35  # ... linearly down to this fraction of the plateau


class HubLoad(Protocol):
    def load_w(self, t_s: float) -> float:
        """The hub's load in W (+ consumption) at simulator time ``t_s``."""
        ...

    def describe(self) -> str: ...


@dataclass(frozen=True, slots=True)
class ConstantLoad:
    watts: float

    def load_w(self, t_s: float) -> float:
        return self.watts

    def describe(self) -> str:
        return f"constant {self.watts / 1000:g} kW"


@dataclass(frozen=True, slots=True)
class StepLoad:
    """Piecewise constant: ``steps[i] = (from_s, W)`` holds from ``from_s`` until the next one;
    before the first step the load is the first step's value."""

    steps: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        if not self.steps:
            raise ValueError("a step profile needs at least one (time, power) pair")
        times = [t for t, _ in self.steps]
        if times != sorted(times):
            raise ValueError("step times must increase")

    def load_w(self, t_s: float) -> float:
        i = bisect.bisect_right([t for t, _ in self.steps], t_s) - 1
        return self.steps[max(i, 0)][1]

    def describe(self) -> str:
        return "steps " + ", ".join(f"{w / 1000:g} kW from {t:g} s" for t, w in self.steps)


def read_csv(path: Path) -> StepLoad:
    """A CSV file of ``seconds,kW`` rows (a header row is skipped), held as steps."""
    steps: list[tuple[float, float]] = []
    with path.open(newline="", encoding="utf-8") as f:
        for n, row in enumerate(csv.reader(f), 1):
            if not row or row[0].strip().startswith("#"):
                continue
            try:
                steps.append((float(row[0]), float(row[1]) * 1000.0))
            except (ValueError, IndexError):
                if n == 1:
                    continue  # a header
                raise ValueError(f"{path}:{n}: expected 'seconds,kW', got {row!r}") from None
    return StepLoad(tuple(steps))


@dataclass(frozen=True, slots=True)
class ChargingSession:
    charger: int
    start_s: float  # seconds of the day (hub time)
    end_s: float
    plateau_w: float

    def power_w(self, day_t: float) -> float:
        if not self.start_s <= day_t < self.end_s:
            return 0.0
        length = self.end_s - self.start_s
        into = day_t - self.start_s
        ramp = min(1.0, into / RAMP_S)
        frac = into / length
        taper = 1.0 if frac < TAPER_FROM else (
            1.0 - (1.0 - TAPER_TO) * (frac - TAPER_FROM) / (1.0 - TAPER_FROM))
        return self.plateau_w * min(ramp, taper)


class DayProfile:
    """A fast-charging hub's day (see the module doc). ``start_hour``: the hub's time of day at
    simulator time 0; the day repeats (the same sessions every day)."""

    def __init__(self, *, seed: int = 1, chargers: int | None = None, day_s: float = DAY_S,
                 start_hour: float = 0.0, base_kw: float = 30.0) -> None:
        if day_s <= 0:
            raise ValueError("day_s must be > 0")
        rng = random.Random(seed)
        self.seed = seed
        self.day_s = float(day_s)
        self.start_hour = float(start_hour)
        self.base_kw = float(base_kw)
        n = chargers if chargers is not None else rng.randint(4, 8)
        if not 1 <= n <= 64:
            raise ValueError("chargers must be 1..64")
        self.charger_kw: tuple[float, ...] = tuple(rng.choice(CHARGER_KW) for _ in range(n))
        sessions: list[ChargingSession] = []
        for c, rating in enumerate(self.charger_kw):
            t = 0.0
            while t < DAY_S:
                # Poisson arrivals at the hour's rate, by thinning against the peak rate.
                t += rng.expovariate(PEAK_ARRIVALS_PER_H / 3600.0)
                if t >= DAY_S:
                    break
                if rng.random() > ARRIVAL_SHAPE[int(t // 3600) % 24]:
                    continue
                length = rng.uniform(10.0, 40.0) * 60.0
                plateau = min(rating, rng.choice(VEHICLE_KW)) * rng.uniform(0.85, 1.0) * 1000
                sessions.append(ChargingSession(c, t, min(t + length, DAY_S), plateau))
                t += length + rng.uniform(1.0, 5.0) * 60.0  # the car leaves, the next pulls in
        self.sessions: tuple[ChargingSession, ...] = tuple(sorted(sessions,
                                                                  key=lambda s: s.start_s))
        self._starts = [s.start_s for s in self.sessions]
        self._longest = max((s.end_s - s.start_s for s in self.sessions), default=0.0)

    def day_time(self, t_s: float) -> float:
        """Seconds of the hub's day at simulator time ``t_s``."""
        return (self.start_hour * 3600.0 + t_s * DAY_S / self.day_s) % DAY_S

    def base_w(self, day_t: float) -> float:
        """Lighting, HVAC and the shop: the base, a third more from 06:00 to 22:00."""
        return self.base_kw * 1000.0 * (4 / 3 if 6 * 3600 <= day_t < 22 * 3600 else 1.0)

    def load_at_day_time(self, day_t: float) -> float:
        hi = bisect.bisect_right(self._starts, day_t)
        lo = bisect.bisect_left(self._starts, day_t - self._longest)
        return self.base_w(day_t) + sum(s.power_w(day_t) for s in self.sessions[lo:hi])

    def load_w(self, t_s: float) -> float:
        return self.load_at_day_time(self.day_time(t_s))

    def peak_w(self, step_s: float = 60.0) -> float:
        """The day's highest load, sampled every ``step_s`` of hub time."""
        return max(self.load_at_day_time(i * step_s) for i in range(int(DAY_S / step_s)))

    def describe(self) -> str:
        chargers = ", ".join(f"{kw:g}" for kw in self.charger_kw)
        return (f"EV hub day (seed {self.seed}): {len(self.charger_kw)} chargers ({chargers} kW),"
                f" {len(self.sessions)} sessions, base {self.base_kw:g} kW, a day in "
                f"{self.day_s / 60:g} min from {_hhmm(self.start_hour)}")


def _hhmm(hours: float) -> str:
    h = int(hours) % 24
    return f"{h:02d}:{round((hours - int(hours)) * 60) % 60:02d}"


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{what}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{what}: {text!r} is not finite")
    return value


def parse_hub_load(spec: str, *, seed: int = 1, chargers: int | None = None,
                   day_minutes: float = 1440.0, start_hour: float = 0.0,
                   base_kw: float = 30.0) -> HubLoad:
    """``day`` | ``constant:KW`` | ``steps:S=KW,S=KW,...`` | ``file:PATH.csv`` -> a profile."""
    kind, _, arg = spec.partition(":")
    if kind == "day" and not arg:
        return DayProfile(seed=seed, chargers=chargers, day_s=day_minutes * 60.0,
                          start_hour=start_hour, base_kw=base_kw)
    if kind == "constant" and arg:
        return ConstantLoad(_number(arg, "constant") * 1000.0)
    if kind == "steps" and arg:
        pairs: list[tuple[float, float]] = []
        for item in arg.split(","):
            at, eq, kw = item.partition("=")
            if not eq:
                raise ValueError(f"steps: {item!r} is not SECONDS=KW")
            pairs.append((_number(at, "steps"), _number(kw, "steps") * 1000.0))
        return StepLoad(tuple(pairs))
    if kind == "file" and arg:
        path = Path(arg)
        if not path.is_file():
            raise ValueError(f"hub load file not found: {arg}")
        return read_csv(path)
    raise ValueError(f"{spec!r} is not day, constant:KW, steps:S=KW,... or file:PATH.csv")


def sample(load: HubLoad, times: Sequence[float]) -> list[float]:
    """The profile at each time (for tests, plots and the demo's limits)."""
    return [load.load_w(t) for t in times]
