"""Baseline for the load benchmark: N plain `ocpp` library ChargePoints with default settings.

Standard json, schema validation on, the default asyncio event loop: what a charge point written
directly on the `ocpp` library costs per message, to compare our OCPP path against.

    python benches/baseline_cp.py --endpoints 50 --url ws://127.0.0.1:9000/ocpp --interval 1
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
from datetime import UTC, datetime
from typing import Any

import websockets
from ocpp.routing import after, on
from ocpp.v16 import ChargePoint, call, call_result


def now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class PlainChargePoint(ChargePoint):
    def __init__(self, cp_id: str, ws: Any, interval: float) -> None:
        super().__init__(cp_id, ws)
        self.interval = interval
        self.tx: int | None = None
        self.energy = itertools.count(0, 40)

    def _meter(self, context: str) -> list[dict[str, Any]]:
        return [{"timestamp": now(), "sampledValue": [
            {"value": "400.0", "measurand": "Voltage", "unit": "V", "context": context},
            {"value": "150000", "measurand": "Power.Active.Export", "unit": "W",
             "context": context},
            {"value": "375.0", "measurand": "Current.Export", "unit": "A", "context": context},
            {"value": "50.0", "measurand": "SoC", "unit": "Percent", "context": context},
            {"value": "25.0", "measurand": "Temperature", "unit": "Celsius", "context": context},
            {"value": str(next(self.energy)), "measurand": "Energy.Active.Export.Register",
             "unit": "Wh", "context": context},
        ]}]

    async def run(self) -> None:
        await self.call(call.BootNotification(charge_point_model="BASE", charge_point_vendor="x"))
        for c in (0, 1, 2):
            await self.call(call.StatusNotification(connector_id=c, error_code="NoError",
                                                    status="Available"))
        while True:
            await asyncio.sleep(self.interval)
            if self.tx is not None:
                await self.call(call.MeterValues(connector_id=1, transaction_id=self.tx,
                                                 meter_value=self._meter("Sample.Periodic")))

    @on("RemoteStartTransaction")
    def remote_start(self, id_tag: str, **_: Any) -> call_result.RemoteStartTransaction:
        return call_result.RemoteStartTransaction(status="Accepted")

    @after("RemoteStartTransaction")
    async def started(self, id_tag: str, **_: Any) -> None:
        r = await self.call(call.StartTransaction(connector_id=1, id_tag=id_tag, meter_start=0,
                                                  timestamp=now()))
        self.tx = r.transaction_id

    @on("RemoteStopTransaction")
    def remote_stop(self, transaction_id: int) -> call_result.RemoteStopTransaction:
        return call_result.RemoteStopTransaction(status="Accepted")

    @after("RemoteStopTransaction")
    async def stopped(self, transaction_id: int) -> None:
        self.tx = None
        await self.call(call.StopTransaction(meter_stop=1, timestamp=now(),
                                             transaction_id=transaction_id, reason="Remote"))

    @on("TriggerMessage")
    def trigger(self, requested_message: str, **_: Any) -> call_result.TriggerMessage:
        return call_result.TriggerMessage(status="Accepted")

    @after("TriggerMessage")
    async def triggered(self, requested_message: str, **_: Any) -> None:
        await self.call(call.MeterValues(connector_id=1, transaction_id=self.tx,
                                         meter_value=self._meter("Trigger")))

    @on("SetChargingProfile")
    def profile(self, **_: Any) -> call_result.SetChargingProfile:
        return call_result.SetChargingProfile(status="Accepted")


async def one(url: str, cp_id: str, interval: float) -> None:
    async with websockets.connect(f"{url}/{cp_id}", subprotocols=["ocpp1.6"]) as ws:
        cp = PlainChargePoint(cp_id, ws, interval)
        await asyncio.gather(cp.start(), cp.run())


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--endpoints", type=int, default=50)
    ap.add_argument("--url", required=True)
    ap.add_argument("--interval", type=float, default=1.0)
    args = ap.parse_args()
    await asyncio.gather(*(one(args.url, f"BASE-{i:04d}", args.interval)
                           for i in range(1, args.endpoints + 1)))


if __name__ == "__main__":
    asyncio.run(main())
