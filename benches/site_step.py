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
Measured from the meter's readings (what a utility's meter would see): from the first reading
over the limit to the first reading at or under it ("back under"), and to the first reading
within 1 % above the limit after which it stayed there ("settled", the PCS's first-order
response approaches its setpoint and may never quite cross a limit it is aimed at exactly).
Also: how often import went over the limit again during the hold (after first being back
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


@dataclass
class Result:
    back_under_ms: list[float] = field(default_factory=list)
    settled_ms: list[float] = field(default_factory=list)
    never_under: int = 0
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
            hold_end: float, result: Result) -> None:
    """One step's readings (from the step on, on the simulator's clock)."""
    over = next((r for r in readings if r.load_w == step_w and r.grid_w > limit_w), None)
    if over is None:
        return  # the step never showed over the limit (cannot happen with step > limit + PCS)
    after = [r for r in readings if r.t >= over.t and r.t <= hold_end]
    under = next((r for r in after if r.grid_w <= limit_w), None)
    if under is None:
        result.never_under += 1
        return
    result.back_under_ms.append((under.t - over.t) * 1000)
    result.peak_over_w.append(max(r.grid_w for r in after if r.t <= under.t) - limit_w)
    band = limit_w * 1.01
    settled = None
    for r in after:
        if r.grid_w > band:
            settled = None
        elif settled is None:
            settled = r
    if settled is not None:
        result.settled_ms.append((settled.t - over.t) * 1000)
    later = [r for r in after if r.t > under.t and r.grid_w > limit_w]
    result.recrossings += len(later)
    if later:
        result.worst_overshoot_w = max(result.worst_overshoot_w,
                                       max(r.grid_w for r in later) - limit_w)


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
            analyse(sim.meter_readings(since=t_step), args.step_kw * 1000, limit_w, hold_end,
                    result)
            print(f"step {i + 1}/{args.steps}: back under in "
                  f"{result.back_under_ms[-1] if result.back_under_ms else float('nan'):.0f} ms"
                  if len(result.back_under_ms) == i + 1 - result.never_under
                  else f"step {i + 1}/{args.steps}: NOT back under within {args.hold_s} s",
                  flush=True)
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
        row("over the limit -> back under", r.back_under_ms),
        row("over the limit -> within 1 %", r.settled_ms),
        (f"{'excess before back under, kW':<34} {pct(kw_over, 50):>8.1f} "
         f"{pct(kw_over, 99):>8.1f} {max(kw_over, default=float('nan')):>8.1f}"),
        f"steps never back under within {args.hold_s:g} s: {r.never_under}; readings over the "
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
    return 0 if result.back_under_ms and not result.never_under else 1


if __name__ == "__main__":
    sys.exit(main())
