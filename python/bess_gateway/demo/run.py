"""`bess-gateway demo`: simulator + demo CSMS + gateway on loopback, a scenario, a live view.

The scenario moves energy both ways: every endpoint discharges on connector 1, then charges on
connector 2, while the CSMS changes a configuration key, asks for meter values and caps the first
endpoint's session with a charging profile (50 kW), so a newcomer sees the whole path
(CSMS -> endpoint -> control core -> PCS -> meter values) in half a minute.

Site energy management runs too (issue 14): the simulator serves the hub's grid meter, whose
reading is a seeded EV hub day (sim/hub_load.py) run at an hour per minute minus the battery's
power, and the gateway gets a ``[site]`` table pointing at it with an import limit and a
peak-shave target set from that day (``plan_site``), so the battery visibly works for the hub.
The live view shows hub load, grid import, battery power, the demand window's average against
its target and SoC; the summary adds peak import with and without the battery, the demand
windows met, and the energy used. The status page (charts) is served and its URL printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import math
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from bess_gateway.config import (
    Config,
    ConfigError,
    EndpointConfig,
    GatewayConfig,
    PcsConfig,
    parse_config,
)
from bess_gateway.demo.csms import CsmsServer
from bess_gateway.gateway import Gateway
from bess_gateway.sim.grid_meter import GridMeter, MeterReading
from bess_gateway.sim.hub_load import DAY_S, DayProfile
from bess_gateway.sim.server import SimulatorThread

log = logging.getLogger("bess_gateway.demo")


DEMO_PROFILE_ID = 900
DEMO_CAP_W = 50_000.0
DEMO_SETPOINT_W = 150_000.0  # 2.1 discharge phase: the V2X setpoint (the session maximum)


@dataclass
class Phase:
    name: str
    connector: int  # 1 discharge, 2 charge, 0 idle


def endpoint_version(ocpp: str, i: int) -> str:
    """The version of the demo's i-th endpoint: "mixed" alternates, 1.6 first."""
    if ocpp == "mixed":
        return ("1.6", "2.0.1", "2.1")[i % 3]
    return ocpp


def demo_config(data_dir: Path, csms_url: str, pcs_port: int, n: int,
                sample_s: int = 5, ocpp: str = "1.6", *, metrics_listen: str = "") -> Config:
    endpoints = tuple(
        EndpointConfig(id=f"DEMO-{i + 1:02d}", csms_url=csms_url,
                       ocpp_version=endpoint_version(ocpp, i),  # type: ignore[arg-type]
                       index=i, serial_number=f"DEMO-{i + 1:02d}",
                       meter_sample_interval_s=sample_s, heartbeat_interval_s=60)
        for i in range(n)
    )
    return Config(gateway=GatewayConfig(data_dir=data_dir, metrics_listen=metrics_listen),
                  pcs=PcsConfig(host="127.0.0.1", port=pcs_port), endpoints=endpoints)


# -- the hub and its [site] table ----------------------------------------------------------------

DEMO_HUB_SEED = 6
DEMO_DAY_MINUTES = 12.0  # five minutes of the hub's day per second: sessions last 2-8 s
DEMO_WINDOW_MIN = 1  # the shortest demand window design.md allows, so a short demo sees some


@dataclass(frozen=True)
class SitePlan:
    """The demo hub's day and the [site] limits that make the battery work on it."""

    start_hour: float
    grid_import_max_kw: float
    peak_shave_kw: float
    recharge_below_kw: float
    recharge_max_kw: float
    demand_window_min: int = DEMO_WINDOW_MIN

    def profile(self) -> DayProfile:
        return DayProfile(seed=DEMO_HUB_SEED, day_s=DEMO_DAY_MINUTES * 60.0,
                          start_hour=self.start_hour)

    def site_table(self, meter_port: int) -> dict[str, Any]:
        """The [site] table, in design.md section 8's keys."""
        return {
            "grid_meter": f"127.0.0.1:{meter_port}",
            "grid_meter_unit_id": 1,
            "grid_meter_profile": "generic",
            "grid_import_max_kw": self.grid_import_max_kw,
            "peak_shave_kw": self.peak_shave_kw,
            "demand_window_min": self.demand_window_min,
            "recharge_below_kw": self.recharge_below_kw,
            "recharge_max_kw": self.recharge_max_kw,
        }


def _round10(kw: float) -> float:
    return max(10.0, round(kw / 10.0) * 10.0)


def plan_site(duration_s: float) -> SitePlan:
    """Where in the seeded day the demo starts, and its limits.

    The CSMS scenario discharges in the first half and charges in the second. The demo starts
    where the hub's load peaks a few seconds in and falls to half of that peak in the second
    half (searched over the day in 5-minute steps; the highest such peak), so the battery
    shaves a real peak and the CSMS's charge sessions still find room under the limits
    afterwards. Unbounded demos start at 16:00,
    before the evening peak. Limits: the peak-shave target at 50 % of the peak the demo will see
    and the hard import limit at 80 %, both raised if needed to leave the charge phase 150 kW
    of room; recharge only below 35 %.
    """
    probe = DayProfile(seed=DEMO_HUB_SEED, day_s=DEMO_DAY_MINUTES * 60.0)
    hub_s_per_s = DAY_S / probe.day_s
    if duration_s <= 0:
        start = 16.0
        seen = [probe.load_at_day_time((start * 3600 + i * 60.0) % DAY_S) for i in range(240)]
        peak, later = max(seen), 0.0
    else:
        half = max(1, int(duration_s / 2))
        lead = min(3, half - 1)  # the peak comes a few seconds in: the gateway sees it arrive
        best: tuple[bool, float, float, float, float] | None = None
        for step in range(24 * 12):  # every 5 minutes of the hub's day
            start = step / 12
            loads = [probe.load_at_day_time((start * 3600 + i * hub_s_per_s) % DAY_S)
                     for i in range(2 * half)]
            first, second = max(loads[lead:half]), max(loads[half:])
            # Wanted: a peak that arrives, then eases to half of it; the highest such peak.
            fits = second <= 0.5 * first and loads[0] <= 0.7 * first
            score = first if fits else first - max(second, loads[0])
            if best is None or (fits, score) > best[:2]:
                best = (fits, score, start, first, second)
        assert best is not None
        _, _, start, peak, later = best
    peak_kw = peak / 1000.0
    # Room for the charge phase's sessions: the target and the limit sit well above what the
    # hub draws then.
    shave = max(0.5 * peak_kw, later / 1000.0 + 150.0)
    limit = max(0.8 * peak_kw, shave + 80.0)
    return SitePlan(start_hour=start, grid_import_max_kw=_round10(limit),
                    peak_shave_kw=_round10(shave),
                    recharge_below_kw=_round10(0.35 * peak_kw), recharge_max_kw=100.0)


def with_site(config: Config, site: dict[str, Any], base_dir: Path) -> tuple[Config, str | None]:
    """``config`` with the [site] table parsed by the gateway's own config parser; unchanged, with
    the reason, when this build rejects it."""
    try:
        parsed = parse_config({"site": site}, base_dir=base_dir)
    except ConfigError as e:
        return config, "; ".join(e.errors)
    if not hasattr(parsed, "site"):
        return config, "this build has no [site] support"
    return dataclasses.replace(config, site=parsed.site), None  # type: ignore[call-arg]


def _free_port(preferred: int) -> int:
    """``preferred`` when it is free on loopback (a stable URL for the status page), else 0."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
        except OSError:
            return 0
    return preferred


class Scenario:
    """What the demo CSMS does: discharge phase, charge phase, idle; repeated when unbounded."""

    def __init__(self, csms: CsmsServer, ids: list[str], phase_s: float) -> None:
        self.csms = csms
        self.ids = ids
        self.phase_s = phase_s
        self.phase = "booting"
        self.errors: list[str] = []
        self.open: dict[str, int | str] = {}  # station -> transaction id (1.6 int, 2.0.1 str)
        self.remote_start_ids = 0

    def _v201(self, sid: str) -> bool:
        return getattr(self.csms.stations.get(sid), "version", "1.6") in ("2.0.1", "2.1")

    def _v21(self, sid: str) -> bool:
        return getattr(self.csms.stations.get(sid), "version", "1.6") == "2.1"

    def _evse(self, sid: str, connector: int) -> int:
        """2.1 has one bidirectional EVSE; the direction is the profile's (see _start_one)."""
        return 1 if self._v21(sid) else connector

    async def _start_all(self, connector: int) -> None:
        # All stations at once, as a hub's CSMS would: one at a time, the starts (and the stops,
        # each waiting for its settled register) would eat the demo's phase.
        await asyncio.gather(*(self._start_one(i, sid, connector)
                               for i, sid in enumerate(self.ids)))

    async def _start_one(self, i: int, sid: str, connector: int) -> None:
        after = self.csms.last_seq()
        tag = f"DEMO-TAG-{i + 1}"
        try:
            if self._v201(sid):
                self.remote_start_ids += 1
                request: dict[str, Any] = {
                    "idToken": {"idToken": tag, "type": "Central"},
                    "evseId": self._evse(sid, connector), "remoteStartId": self.remote_start_ids}
                if self._v21(sid) and connector == 1:
                    # 2.1 V2X: the discharge phase is a setpoint (negative: the battery gives).
                    request["chargingProfile"] = {
                        "id": DEMO_PROFILE_ID + 1, "stackLevel": 0,
                        "chargingProfilePurpose": "TxProfile",
                        "chargingProfileKind": "Relative",
                        "chargingSchedule": [{"id": 2, "chargingRateUnit": "W",
                                              "chargingSchedulePeriod": [{
                                                  "startPeriod": 0,
                                                  "operationMode": "CentralSetpoint",
                                                  "setpoint": -DEMO_SETPOINT_W}]}]}
                r = await self.csms.call(sid, "RequestStartTransaction", request)
            else:
                r = await self.csms.call(sid, "RemoteStartTransaction",
                                         {"idTag": tag, "connectorId": connector})
            if r["status"] != "Accepted":
                self.errors.append(f"{sid}: remote start {r['status']}")
                return
            if self._v201(sid):
                started = await self.csms.wait_for(
                    sid, "TransactionEvent", lambda p: p["eventType"] == "Started",
                    after=after)
                tx_id: int | str = started.payload["transactionInfo"]["transactionId"]
                await self.csms.wait_until(lambda t=tx_id: t in self.csms.transactions)
                self.open[sid] = tx_id
                return
            start = await self.csms.wait_for(sid, "StartTransaction", after=after)
            # The CSMS records the CALL before its handler creates the transaction.
            tx = await self.csms.wait_until(lambda s=sid, m=start.payload["meterStart"]: next(
                (t for t in self.csms.transactions.values()
                 if t.station == s and t.meter_start == m and t.meter_stop is None), None))
            self.open[sid] = tx.id
        except Exception as exc:
            self.errors.append(f"{sid}: start failed: {exc!r}")

    async def _stop_all(self) -> None:
        stops = list(self.open.items())
        # Forgotten before asking: a stop cut short by the demo's end is not asked twice (the
        # gateway ends what is still running when it stops).
        self.open.clear()
        await asyncio.gather(*(self._stop_one(sid, tx_id) for sid, tx_id in stops))

    async def _stop_one(self, sid: str, tx_id: int | str) -> None:
        try:
            if self._v201(sid):
                r = await self.csms.call(sid, "RequestStopTransaction",
                                         {"transactionId": tx_id})
            else:
                r = await self.csms.call(sid, "RemoteStopTransaction",
                                         {"transactionId": tx_id})
            if r["status"] != "Accepted":
                self.errors.append(f"{sid}: remote stop {r['status']}")
            await self.csms.wait_until(
                lambda t=tx_id: self.csms.transactions[t].meter_stop is not None)
        except Exception as exc:
            self.errors.append(f"{sid}: stop failed: {exc!r}")

    async def _cap_first(self, connector: int) -> None:
        """Smart charging: the first endpoint's session is capped at 50 kW from now on, which
        the PCS setpoint follows within a control period (the live view shows it drop)."""
        sid = self.ids[0]
        period = {"startPeriod": 0, "limit": DEMO_CAP_W}
        profile: dict[str, Any] = {
            "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
            "chargingProfileKind": "Relative",
        }
        try:
            if self._v21(sid) and connector == 1 and sid in self.open:
                # The setpoint of the running V2X transaction comes down to the cap.
                profile.update(id=DEMO_PROFILE_ID, stackLevel=1,
                               chargingProfilePurpose="TxProfile",
                               transactionId=self.open[sid], chargingSchedule=[
                                   {"id": 1, "chargingRateUnit": "W", "chargingSchedulePeriod": [
                                       {"startPeriod": 0, "operationMode": "CentralSetpoint",
                                        "setpoint": -DEMO_CAP_W}]}])
                r = await self.csms.call(sid, "SetChargingProfile",
                                         {"evseId": 1, "chargingProfile": profile})
            elif self._v201(sid):
                profile.update(id=DEMO_PROFILE_ID, chargingSchedule=[
                    {"id": 1, "chargingRateUnit": "W", "chargingSchedulePeriod": [period]}])
                r = await self.csms.call(sid, "SetChargingProfile",
                                         {"evseId": self._evse(sid, connector),
                                          "chargingProfile": profile})
            else:
                profile.update(chargingProfileId=DEMO_PROFILE_ID, chargingSchedule={
                    "chargingRateUnit": "W", "chargingSchedulePeriod": [period]})
                r = await self.csms.call(sid, "SetChargingProfile",
                                         {"connectorId": connector, "csChargingProfiles": profile})
            if r["status"] != "Accepted":
                self.errors.append(f"{sid}: SetChargingProfile {r['status']}")
        except Exception as exc:
            self.errors.append(f"{sid}: SetChargingProfile failed: {exc!r}")

    async def _midway(self, connector: int) -> None:
        """The CSMS changes the sample interval and asks for fresh meter values."""
        sid = self.ids[0]
        if self._v201(sid):
            await self.csms.call(sid, "SetVariables", {"setVariableData": [{
                "component": {"name": "SampledDataCtrlr"},
                "variable": {"name": "TxUpdatedInterval"}, "attributeValue": "2"}]})
            await self.csms.call(sid, "TriggerMessage", {"requestedMessage": "MeterValues",
                                                         "evse": {"id": self._evse(sid,
                                                                                   connector)}})
        else:
            await self.csms.call(sid, "ChangeConfiguration",
                                 {"key": "MeterValueSampleInterval", "value": "2"})
            await self.csms.call(sid, "TriggerMessage", {"requestedMessage": "MeterValues",
                                                         "connectorId": connector})

    async def _clear_cap(self) -> None:
        sid = self.ids[0]
        if self._v201(sid):
            await self.csms.call(sid, "ClearChargingProfile",
                                 {"chargingProfileId": DEMO_PROFILE_ID})
        else:
            await self.csms.call(sid, "ClearChargingProfile", {"id": DEMO_PROFILE_ID})

    async def run(self, forever: bool) -> None:
        for sid in self.ids:
            await self.csms.wait_for(sid, "BootNotification", timeout=30)
        await asyncio.sleep(0.5)
        while True:
            for phase in (Phase("discharging", 1), Phase("charging", 2)):
                self.phase = phase.name
                await self._start_all(phase.connector)
                await asyncio.sleep(self.phase_s / 2)
                with contextlib.suppress(Exception):
                    await self._midway(phase.connector)
                await self._cap_first(phase.connector)
                await asyncio.sleep(self.phase_s / 2)
                await self._stop_all()
                with contextlib.suppress(Exception):
                    await self._clear_cap()
            self.phase = "idle"
            if not forever:
                return
            await asyncio.sleep(2)


def _bar(w: float, full: float, width: int = 16) -> str:
    n = round(min(1.0, abs(w) / full) * width) if full > 0 else 0
    return ("#" * n).ljust(width)


def _kw(w: Any) -> str:
    return "   -    " if w is None else f"{float(w) / 1000:8.1f}"


def site_line(snap: dict[str, Any], meter: GridMeter | None) -> str:
    """Hub load, grid import, battery power, window average vs target, SoC: what the gateway
    sees (its snapshot's site block), the simulator's meter before its first reading."""
    site = snap.get("site")
    soc = snap.get("soc_pct")
    soc_text = "  -  " if soc is None else f"{soc:5.2f}"
    if site is None and meter is None:
        return ""
    if site is None:
        assert meter is not None
        return (f"hub load {_kw(meter.load_w)} kW   grid import {_kw(meter.grid_w)} kW   "
                f"battery {_kw(meter.battery_w)} kW   window avg    -    / target    -    kW   "
                f"SoC {soc_text} %   (the gateway has no [site])")
    constraints = ",".join(site.get("constraints") or []) or "-"
    return (f"hub load {_kw(site.get('load_w'))} kW   grid import {_kw(site.get('grid_w'))} kW   "
            f"battery {_kw(site.get('battery_w'))} kW   window avg {_kw(site.get('window_avg_w'))}"
            f" / target {_kw(site.get('window_target_w'))} kW   SoC {soc_text} %   "
            f"site: {constraints}")


def render(gw: Gateway, sim_state: dict[str, Any], scenario: Scenario, elapsed: float,
           meter: GridMeter | None = None) -> str:
    snap = gw.view.snapshot
    lines = [
        f"bess-gateway demo  t={elapsed:5.1f}s  phase={scenario.phase:<11}"
        f"  PCS link={'up' if snap.get('link_up') else 'DOWN'}"
        f"{'  TRIPPED ' + ','.join(snap.get('trip_causes') or []) if snap.get('tripped') else ''}",
        f"setpoint {snap.get('setpoint_w', 0) / 1000:8.1f} kW   measured "
        f"{sim_state.get('measured_w', snap.get('measured_w', 0)) / 1000:8.1f} kW   "
        f"SoC {snap.get('soc_pct', 0):5.2f} %   DC {snap.get('dc_voltage_v', 0):6.1f} V   "
        f"cell max {snap.get('cell_temp_max_c', 0):4.1f} C",
        site_line(snap, meter),
        "",
        f"{'endpoint':<10} {'link':<9} {'conn 1 (discharge)':<28} {'conn 2 (charge)':<28}",
    ]
    for eid, ep in gw.endpoints.items():
        st = gw.stations[eid]
        link = "booted" if ep.booted.is_set() else ("connected" if ep.connected.is_set() else "-")
        cells = []
        for c in (1, 2):
            status = st.status(c).status
            alloc = st.view.allocation(st.meter_id(c)) if c in st.transactions else 0.0
            kw = (alloc or 0.0) / 1000
            cells.append(f"{status:<13} {kw:6.1f} kW {_bar(kw, 150, 4)}")
        lines.append(f"{eid:<10} {link:<9} {cells[0]:<28} {cells[1]:<28}")
    return "\n".join(lines)


async def _demo(endpoints: int, duration: float, out: TextIO, ocpp: str = "1.6",
                site: bool = True) -> int:
    live = out.isatty()
    with tempfile.TemporaryDirectory(prefix="bess-demo-") as tmp:
        # The hub is there either way; `site` decides whether the gateway manages it.
        plan = plan_site(duration)
        meter = GridMeter(plan.profile())
        sim = SimulatorThread(grid_meter=meter)
        sim.start()
        csms = CsmsServer()
        await csms.start()
        config = demo_config(Path(tmp), csms.url, sim.port, endpoints, ocpp=ocpp,
                             metrics_listen=f"127.0.0.1:{_free_port(9464)}")
        site_note = None if site else "--no-site"
        if site:
            config, site_note = with_site(config, plan.site_table(sim.grid_meter_port),
                                          Path(tmp))
        gw = Gateway(config)
        await gw.start()
        if gw.metrics is not None:
            out.write(f"status page: http://127.0.0.1:{gw.metrics.port}/\n")
        out.write(f"hub: {meter.load.describe()}\n")
        out.write(f"site: grid import limit {plan.grid_import_max_kw:g} kW, peak-shave target "
                  f"{plan.peak_shave_kw:g} kW per {plan.demand_window_min} min window, "
                  f"recharge below {plan.recharge_below_kw:g} kW at most "
                  f"{plan.recharge_max_kw:g} kW; grid meter on port {sim.grid_meter_port}\n")
        if site_note is not None:
            out.write(f"site control is off: {site_note}\n")
        out.flush()
        ids = list(gw.endpoints)
        forever = duration <= 0
        phase_s = 20.0 if forever else max(4.0, (duration - 6.0) / 2)
        scenario = Scenario(csms, ids, phase_s)
        begin = time.monotonic()
        clock_offset = time.time() - time.monotonic()
        soc_start = None
        energy_start = None
        task = asyncio.create_task(scenario.run(forever))
        try:
            while forever or time.monotonic() - begin < duration:
                await asyncio.sleep(1.0)
                snap = gw.view.snapshot
                if soc_start is None and snap.get("link_up") and snap.get("soc_pct"):
                    soc_start = float(snap["soc_pct"])
                    energy_start = (snap.get("energy_discharged_wh", 0),
                                    snap.get("energy_charged_wh", 0))
                frame = render(gw, {}, scenario, time.monotonic() - begin, meter)
                if live:
                    out.write("\x1b[H\x1b[2J" + frame + "\n")
                else:
                    head = frame.splitlines()
                    out.write(" | ".join(line for line in head[:3] if line) + "\n")
                out.flush()
        except (KeyboardInterrupt, asyncio.CancelledError):
            pass
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await scenario._stop_all()
            snap = gw.core.snapshot() if gw.core else {}
            readings = sim.meter_readings()
            await gw.stop()
            await csms.stop()
            sim.stop()
        code = summary(csms, scenario, snap, soc_start, energy_start, out)
        site_summary(readings, plan, clock_offset, site_note is None, out, snap.get("site"))
        return code


def site_summary(readings: list[MeterReading], plan: SitePlan, clock_offset: float,
                 controlled: bool, out: TextIO, site: dict[str, Any] | None = None) -> None:
    """Peak import with and without the battery, the demand windows met, the energy used.

    From the simulator meter's readings (one per simulator tick): "without" is the hub load
    alone, "with" what the grid meter read. Windows are clock-aligned like a utility's (on
    unix time, ``demand_window_min`` long); a window the demo only partly covered is marked
    partial and judged on the part it saw. ``site``: the gateway's last site status, for the
    battery energy the site used (metered apart from the sessions')."""
    if len(readings) < 2:
        return
    out.write("\n== site: the hub's grid connection ==\n")
    if not controlled:
        out.write("(the gateway ran without a [site] table: the battery only served sessions)\n")
    window_s = plan.demand_window_min * 60.0
    target = plan.peak_shave_kw * 1000.0
    windows: dict[float, list[MeterReading]] = {}
    for r in readings:
        wall = r.t + clock_offset
        windows.setdefault(math.floor(wall / window_s) * window_s, []).append(r)
    peak_with = max(r.grid_w for r in readings)
    peak_without = max(r.load_w for r in readings)
    limit = plan.grid_import_max_kw * 1000.0
    out.write(f"peak import: {peak_with / 1000:.1f} kW with the battery, "
              f"{peak_without / 1000:.1f} kW without (limit {plan.grid_import_max_kw:g} kW)\n")
    over_with = _seconds_over(readings, limit, lambda r: r.grid_w)
    over_without = _seconds_over(readings, limit, lambda r: r.load_w)
    out.write(f"time over the import limit: {over_with:.1f} s with the battery, "
              f"{over_without:.1f} s without\n")
    out.write(f"{'window':<10} {'covered':>8} {'avg with':>10} {'avg without':>12} "
              f"{'target':>8}  met\n")
    met_with = met_without = 0
    for start in sorted(windows):
        rs = windows[start]
        covered = rs[-1].t - rs[0].t
        avg_with = sum(max(r.grid_w, 0.0) for r in rs) / len(rs)
        avg_without = sum(max(r.load_w, 0.0) for r in rs) / len(rs)
        ok_with, ok_without = avg_with <= target, avg_without <= target
        met_with += ok_with
        met_without += ok_without
        label = time.strftime("%H:%M:%S", time.localtime(start))
        partial = " (partial)" if covered < window_s - 1.0 else ""
        out.write(f"{label:<10} {covered:>7.0f}s {avg_with / 1000:>9.1f}k "
                  f"{avg_without / 1000:>11.1f}k {target / 1000:>7.0f}k  "
                  f"{'yes' if ok_with else 'NO'}{partial}\n")
    n = len(windows)
    out.write(f"demand-charge windows met: {met_with}/{n} with the battery, {met_without}/{n} "
              "without\n")
    imp_with = _energy_wh(readings, lambda r: max(r.grid_w, 0.0))
    imp_without = _energy_wh(readings, lambda r: max(r.load_w, 0.0))
    out.write(f"grid energy imported: {imp_with / 1000:.2f} kWh with the battery, "
              f"{imp_without / 1000:.2f} kWh without; battery net "
              f"{_energy_wh(readings, lambda r: r.battery_w) / 1000:+.2f} kWh "
              "(+ discharged)\n")
    if site is not None and site.get("site_discharged_wh") is not None:
        out.write(f"battery energy used for the site (billed to no session): "
                  f"{float(site['site_discharged_wh']) / 1000:.3f} kWh discharged, "
                  f"{float(site.get('site_charged_wh') or 0.0) / 1000:.3f} kWh charged\n")


def _energy_wh(readings: list[MeterReading], f: Any) -> float:
    return sum(f(a) * (b.t - a.t) for a, b in itertools.pairwise(readings)) / 3600


def _seconds_over(readings: list[MeterReading], limit: float, f: Any) -> float:
    return sum(b.t - a.t for a, b in itertools.pairwise(readings) if f(a) > limit)


def summary(csms: CsmsServer, scenario: Scenario, snap: dict[str, Any], soc_start: float | None,
            energy_start: tuple[int, int] | None, out: TextIO) -> int:
    out.write("\n== bess-gateway demo summary ==\n")
    by_station: dict[str, list[Any]] = {}
    for tx in csms.transactions.values():
        by_station.setdefault(tx.station, []).append(tx)
    total = {1: 0, 2: 0}
    out.write(f"{'endpoint':<10} {'transactions':>12} {'discharged kWh':>15} {'charged kWh':>12}"
              f" {'meter values':>13}\n")
    for sid in sorted(by_station):
        txs = by_station[sid]
        e = {1: 0, 2: 0}
        for t in txs:
            if t.meter_stop is not None and t.export_stop is not None \
                    and t.export_start is not None:
                e[2] += t.meter_stop - t.meter_start  # 2.1: import = charged
                e[1] += t.export_stop - t.export_start  # export = discharged
            elif t.meter_stop is not None:
                e[t.connector] += t.meter_stop - t.meter_start
        total[1] += e[1]
        total[2] += e[2]
        out.write(f"{sid:<10} {len(txs):>12} {e[1] / 1000:>15.3f} {e[2] / 1000:>12.3f}"
                  f" {sum(t.meter_values for t in txs):>13}\n")
    out.write(f"{'total':<10} {len(csms.transactions):>12} {total[1] / 1000:>15.3f}"
              f" {total[2] / 1000:>12.3f}\n")
    if energy_start is not None:
        d = snap.get("energy_discharged_wh", 0) - energy_start[0]
        c = snap.get("energy_charged_wh", 0) - energy_start[1]
        out.write(f"PCS energy registers: {d / 1000:.3f} kWh discharged, {c / 1000:.3f} kWh "
                  "charged\n")
    if soc_start is not None:
        out.write(f"battery SoC: {soc_start:.2f} % -> {snap.get('soc_pct', 0):.2f} %\n")
    for err in scenario.errors:
        out.write(f"error: {err}\n")
    moved_both = total[1] > 0 and total[2] > 0
    if not moved_both:
        out.write("energy did not move both ways: check the log above for PCS or CSMS errors\n")
    ok = moved_both and not scenario.errors
    out.write("demo OK\n" if ok else "demo finished with problems\n")
    return 0 if ok else 1


def run_demo(endpoints: int = 4, duration: float = 30.0, ocpp: str = "1.6",
             site: bool = True) -> int:
    logging.getLogger().setLevel(logging.WARNING)
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner = asyncio.run
    try:
        return runner(_demo(endpoints, duration, sys.stdout, ocpp, site))
    except KeyboardInterrupt:
        return 130
