"""Load-step benchmark: the hub's load jumps over the grid import limit -> how long until the
grid meter reads back under it (issue 14), in the real gateway process against the simulator.

    python benches/site_step.py                          # 20 steps, the default table
    python benches/site_step.py --steps 50 --ramp-kw-per-s 3000 --grid-meter-profile sunspec

Three parts on loopback: this tester runs the PCS/BMS simulator with its grid meter (a thread
here, so it can step the hub load and read the meter's own log of readings, one per simulator
tick of 20 ms) and a demo CSMS; the gateway is `bess-gateway run` in its own process with a
[site] table pointing at the meter (only `grid_import_max_kw`: the hard limit, no demand target,
no recharge) and no OCPP session at all, so whatever the battery does, the site asked for it.

Each step: the hub load goes from `--base-kw` (under the limit, battery idle) to `--step-kw`
(over it), holds `--hold-s`, goes back and rests `--rest-s` (the battery returns to idle).
Measured from the meter's readings (what a utility's meter would see, at the register map's
resolution: 1 W generic, 100 W SunSpec): from the first reading over the limit to the first
reading at or under it ("back under"), and to the first reading within 1 % (0.1 %) above the
limit after which it stayed there ("settled": the PCS's first-order response approaches its
setpoint and never quite crosses a limit it is aimed at exactly), and where the reading sits
against the limit at the end of the hold.
Also the gateway's own reaction: from the first reading over the limit to the first PCS write
asking for discharge (the simulator logs every setpoint write on the same clock). And: how often
import went over the limit again during the hold (after first being back
under), and the worst overshoot then. Printed as p50/p99/max, in ms and in control periods.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bess_gateway.demo.csms import CsmsServer
from bess_gateway.sim.grid_meter import GridMeter, MeterReading
from bess_gateway.sim.hub_load import ConstantLoad
from bess_gateway.sim.server import SimulatorThread

HERE = Path(__file__).resolve().parent


#: What the meter's registers resolve: the generic map counts whole W, SunSpec W_SF = 2 is 100 W.
RESOLUTION_W = {"generic": 1.0, "sunspec": 100.0}


@dataclass
class Result:
    back_under_ms: list[float] = field(default_factory=list)
    settled_ms: list[float] = field(default_factory=list)  # within 1 % above the limit
    settled_01_ms: list[float] = field(default_factory=list)  # within 0.1 %
    end_excess_w: list[float] = field(default_factory=list)  # reading - limit, end of the hold
    reaction_ms: list[float] = field(default_factory=list)  # over -> the PCS write answering it
    never_under: int = 0
    never_settled: int = 0
    recrossings: int = 0  # readings over the limit again during a hold, after back under
    worst_overshoot_w: float = 0.0  # the highest such reading above the limit
    peak_over_w: list[float] = field(default_factory=list)  # max excess before back under


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def gateway_config(tmp: Path, url: str, pcs_port: int, meter_port: int, limit_kw: float,
                   period_ms: int, ramp: float, meter_profile: str) -> Path:
    cfg = tmp / "gateway.toml"
    cfg.write_text(f"""
[gateway]
data_dir = "{tmp / 'var'}"
metrics_listen = ""

[control]
period_ms = {period_ms}
ramp_kw_per_s = {ramp:g}

[pcs]
port = {pcs_port}

[site]
grid_meter = "127.0.0.1:{meter_port}"
grid_meter_profile = "{meter_profile}"
grid_import_max_kw = {limit_kw:g}

[[endpoint]]
id = "STEP-01"
csms_url = "{url}"
""")
    return cfg


def analyse(readings: list[MeterReading], step_w: float, limit_w: float,
            hold_end: float, result: Result, resolution_w: float = 1.0) -> float | None:
    """One step's readings (from the step on, on the simulator's clock). A reading is what the
    meter's registers say: the exact value rounded to the map's resolution."""
    rows = [(r.t, round(r.grid_w / resolution_w) * resolution_w) for r in readings
            if r.load_w == step_w and r.t <= hold_end]
    over = next((i for i, (_, w) in enumerate(rows) if w > limit_w), None)
    if over is None:
        return None  # the step never showed over the limit (not with step > limit + PCS)
    after = rows[over:]
    t_over = after[0][0]
    result.end_excess_w.append(after[-1][1] - limit_w)

    def settle(band_w: float) -> float | None:
        """ms from over the limit to the reading from which it stayed within ``band_w``."""
        since = None
        for t, w in after:
            if w > band_w:
                since = None
            elif since is None:
                since = t
        return None if since is None else (since - t_over) * 1000

    for band, into in ((limit_w * 1.01, result.settled_ms),
                       (limit_w * 1.001, result.settled_01_ms)):
        ms = settle(band)
        if ms is not None:
            into.append(ms)
        elif into is result.settled_ms:
            result.never_settled += 1
    under = next((i for i, (_, w) in enumerate(after) if w <= limit_w), None)
    if under is None:
        result.never_under += 1
        return t_over
    result.back_under_ms.append((after[under][0] - t_over) * 1000)
    result.peak_over_w.append(max(w for _, w in after[: under + 1]) - limit_w)
    later = [w for _, w in after[under + 1 :] if w > limit_w]
    result.recrossings += len(later)
    if later:
        result.worst_overshoot_w = max(result.worst_overshoot_w, max(later) - limit_w)
    return t_over


async def run(args: argparse.Namespace) -> Result:
    meter = GridMeter(ConstantLoad(args.base_kw * 1000), profile=args.grid_meter_profile)
    sim = SimulatorThread(grid_meter=meter)
    sim.start()
    csms = CsmsServer()
    await csms.start()
    tmp = Path(tempfile.mkdtemp(prefix="bess-site-step-"))
    log = (tmp / "gateway.log").open("w")
    cfg = gateway_config(tmp, csms.url, sim.port, sim.grid_meter_port, args.limit_kw,
                         args.period_ms, args.ramp_kw_per_s, args.grid_meter_profile)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bess_gateway", "run", "--config", str(cfg), "--log-level",
        "WARNING", stdout=log, stderr=log)
    result = Result()
    limit_w = args.limit_kw * 1000
    try:
        async with asyncio.timeout(60):
            while not csms.stations.get("STEP-01"):
                if proc.returncode is not None:
                    raise RuntimeError(f"the gateway exited: see {tmp / 'gateway.log'}")
                await asyncio.sleep(0.05)
        await asyncio.sleep(args.rest_s)  # the meter read, the site idle
        for i in range(args.steps):
            t_step = sim.set_hub_load(args.step_kw * 1000)
            await asyncio.sleep(args.hold_s)
            hold_end = sim.set_hub_load(args.base_kw * 1000)
            under_before = len(result.back_under_ms)
            t_over = analyse(sim.meter_readings(since=t_step), args.step_kw * 1000, limit_w,
                             hold_end, result, RESOLUTION_W[args.grid_meter_profile])
            # The gateway's own reaction: the first PCS write after the meter read over the
            # limit that asks for discharge (the battery idles before the step).
            write = next((t for t, w in sim.setpoint_writes()
                          if t_over is not None and t >= t_over and w > 1000.0), None)
            if write is not None and t_over is not None:
                result.reaction_ms.append((write - t_over) * 1000)
            sim.clear_setpoint_writes()
            under = (f"back under in {result.back_under_ms[-1]:.0f} ms"
                     if len(result.back_under_ms) > under_before else "NOT back under")
            excess = result.end_excess_w[-1] if result.end_excess_w else float("nan")
            print(f"step {i + 1}/{args.steps}: {under}; {excess:+.0f} W against the limit at "
                  f"the end of the hold", flush=True)
            await asyncio.sleep(args.rest_s)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(15):
                await proc.wait()
        except TimeoutError:
            proc.kill()
        await csms.stop()
        sim.stop()
        log.close()
    return result


def table(args: argparse.Namespace, r: Result) -> str:
    period = args.period_ms

    def row(name: str, values: list[float]) -> str:
        if not values:
            return f"{name:<34} {'-':>8} {'-':>8} {'-':>8}"
        return (f"{name:<34} {pct(values, 50):>8.0f} {pct(values, 99):>8.0f} "
                f"{max(values):>8.0f}   ({pct(values, 50) / period:.1f} / "
                f"{pct(values, 99) / period:.1f} periods)")

    kw_over = [w / 1000 for w in r.peak_over_w]
    lines = [
        f"load step {args.base_kw:g} -> {args.step_kw:g} kW over a {args.limit_kw:g} kW import "
        f"limit; control period {period} ms, ramp {args.ramp_kw_per_s:g} kW/s, grid meter "
        f"{args.grid_meter_profile}, simulator tick 20 ms, {args.steps} steps",
        f"{'':<34} {'p50':>8} {'p99':>8} {'max':>8}   (ms unless noted)",
        row("over the limit -> PCS write (gateway)", r.reaction_ms),
        row("over the limit -> back under", r.back_under_ms),
        row("over the limit -> within 1 %", r.settled_ms),
        row("over the limit -> within 0.1 %", r.settled_01_ms),
        (f"{'reading - limit at hold end, W':<34} {pct(r.end_excess_w, 50):>8.0f} "
         f"{pct(r.end_excess_w, 99):>8.0f} {max(r.end_excess_w, default=float('nan')):>8.0f}"),
        (f"{'excess before back under, kW':<34} {pct(kw_over, 50):>8.1f} "
         f"{pct(kw_over, 99):>8.1f} {max(kw_over, default=float('nan')):>8.1f}"),
        f"steps never back under within {args.hold_s:g} s: {r.never_under}, never within 1 %: "
        f"{r.never_settled}; readings over the "
        f"limit again after back under: {r.recrossings} (worst {r.worst_overshoot_w / 1000:.1f} "
        "kW over)",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--base-kw", type=float, default=300.0)
    p.add_argument("--step-kw", type=float, default=1100.0)
    p.add_argument("--limit-kw", type=float, default=800.0)
    p.add_argument("--hold-s", type=float, default=4.0)
    p.add_argument("--rest-s", type=float, default=3.0)
    p.add_argument("--period-ms", type=int, default=100)
    p.add_argument("--ramp-kw-per-s", type=float, default=300.0,
                   help="[control] ramp_kw_per_s (default: the gateway's default, 300)")
    p.add_argument("--grid-meter-profile", choices=("generic", "sunspec"), default="generic")
    args = p.parse_args(argv)
    if not args.base_kw < args.limit_kw < args.step_kw:
        p.error("need --base-kw < --limit-kw < --step-kw")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.monotonic()
    result = asyncio.run(run(args))
    print()
    print(table(args, result))
    print(f"({time.monotonic() - t0:.0f} s)")
    return 0 if not result.never_settled else 1


if __name__ == "__main__":
    sys.exit(main())
