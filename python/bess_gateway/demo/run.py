"""`bess-gateway demo`: simulator + demo CSMS + gateway on loopback, a scenario, a live view.

The scenario moves energy both ways: every endpoint discharges on connector 1, then charges on
connector 2, while the CSMS changes a configuration key, asks for meter values and caps the first
endpoint's session with a charging profile (50 kW), so a newcomer sees the whole path
(CSMS -> endpoint -> control core -> PCS -> meter values) in half a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from bess_gateway.config import Config, EndpointConfig, GatewayConfig, PcsConfig
from bess_gateway.demo.csms import CsmsServer
from bess_gateway.gateway import Gateway
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
                sample_s: int = 5, ocpp: str = "1.6") -> Config:
    endpoints = tuple(
        EndpointConfig(id=f"DEMO-{i + 1:02d}", csms_url=csms_url,
                       ocpp_version=endpoint_version(ocpp, i),  # type: ignore[arg-type]
                       index=i, serial_number=f"DEMO-{i + 1:02d}",
                       meter_sample_interval_s=sample_s, heartbeat_interval_s=60)
        for i in range(n)
    )
    return Config(gateway=GatewayConfig(data_dir=data_dir, metrics_listen=""),
                  pcs=PcsConfig(host="127.0.0.1", port=pcs_port), endpoints=endpoints)


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


def render(gw: Gateway, sim_state: dict[str, Any], scenario: Scenario, elapsed: float) -> str:
    snap = gw.view.snapshot
    lines = [
        f"bess-gateway demo  t={elapsed:5.1f}s  phase={scenario.phase:<11}"
        f"  PCS link={'up' if snap.get('link_up') else 'DOWN'}"
        f"{'  TRIPPED ' + ','.join(snap.get('trip_causes') or []) if snap.get('tripped') else ''}",
        f"setpoint {snap.get('setpoint_w', 0) / 1000:8.1f} kW   measured "
        f"{sim_state.get('measured_w', snap.get('measured_w', 0)) / 1000:8.1f} kW   "
        f"SoC {snap.get('soc_pct', 0):5.2f} %   DC {snap.get('dc_voltage_v', 0):6.1f} V   "
        f"cell max {snap.get('cell_temp_max_c', 0):4.1f} C",
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


async def _demo(endpoints: int, duration: float, out: TextIO, ocpp: str = "1.6") -> int:
    live = out.isatty()
    with tempfile.TemporaryDirectory(prefix="bess-demo-") as tmp:
        sim = SimulatorThread()
        sim.start()
        csms = CsmsServer()
        await csms.start()
        config = demo_config(Path(tmp), csms.url, sim.port, endpoints, ocpp=ocpp)
        gw = Gateway(config)
        await gw.start()
        ids = list(gw.endpoints)
        forever = duration <= 0
        phase_s = 20.0 if forever else max(4.0, (duration - 6.0) / 2)
        scenario = Scenario(csms, ids, phase_s)
        begin = time.monotonic()
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
                frame = render(gw, {}, scenario, time.monotonic() - begin)
                if live:
                    out.write("\x1b[H\x1b[2J" + frame + "\n")
                else:
                    out.write(frame.splitlines()[0] + " | " + frame.splitlines()[1] + "\n")
                out.flush()
        except (KeyboardInterrupt, asyncio.CancelledError):
            pass
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await scenario._stop_all()
            snap = gw.core.snapshot() if gw.core else {}
            await gw.stop()
            await csms.stop()
            sim.stop()
        return summary(csms, scenario, snap, soc_start, energy_start, out)


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


def run_demo(endpoints: int = 4, duration: float = 30.0, ocpp: str = "1.6") -> int:
    logging.getLogger().setLevel(logging.WARNING)
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner = asyncio.run
    try:
        return runner(_demo(endpoints, duration, sys.stdout, ocpp))
    except KeyboardInterrupt:
        return 130
