"""Journal commits per session cycle, who asked for them, and the event loop's time in them.

    python benches/journal_commits.py --cycles 20

One gateway endpoint against the demo CSMS and the PCS simulator, in this process. A cycle is
what the load benchmark's CSMS does most: SetChargingProfile on the running session, then
RemoteStop and RemoteStart. Counts every COMMIT the journal's connection runs during the cycles
and groups them by the code path that made it, so a change to the commit path shows up as a
number rather than as noise in a loaded machine's latencies. Also times each COMMIT statement
(on the event loop's thread, where the journal runs its statements): with group commits the
fsync runs on the journal's writer thread, so what is left there is the COMMIT's own write(2)s.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import sqlite3
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from bess_gateway.config import PcsConfig
from bess_gateway.demo.csms import CsmsServer
from bess_gateway.demo.run import demo_config
from bess_gateway.gateway import Gateway
from bess_gateway.sim.server import SimulatorThread

STATION = "DEMO-01"


class CountingConnection:
    """The journal's sqlite3 connection, counting and timing COMMITs by the call path that ran
    them."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.by_path: collections.Counter[str] = collections.Counter()
        self.times_s: list[float] = []

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql.strip().upper() != "COMMIT":
            return self.conn.execute(sql, *args)
        frames = traceback.extract_stack()[:-1][-5:]
        self.by_path[" < ".join(f.name for f in reversed(frames))] += 1
        t0 = time.perf_counter()
        try:
            return self.conn.execute(sql, *args)
        finally:
            self.times_s.append(time.perf_counter() - t0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


async def run(cycles: int) -> None:
    sim = SimulatorThread()
    sim.start()
    csms = CsmsServer()
    await csms.start()
    cfg = demo_config(Path(tempfile.mkdtemp(prefix="bess-commits-")) / "var", csms.url,
                      sim.port, 1, sample_s=60)
    cfg = dataclasses.replace(cfg, pcs=dataclasses.replace(PcsConfig(), port=sim.port))
    gw = Gateway(cfg)
    await gw.start()
    try:
        await csms.wait_for(STATION, "StatusNotification", lambda p: p["connectorId"] == 2,
                            timeout=30)

        async def start() -> int:
            r = await csms.call(STATION, "RemoteStartTransaction",
                                {"idTag": "T1", "connectorId": 1})
            assert r["status"] == "Accepted", r
            return await csms.wait_until(lambda: next(
                (t.id for t in csms.transactions.values() if t.meter_stop is None), None), 10)

        tx = await start()
        await asyncio.sleep(0.5)
        assert gw.journal is not None
        db = gw.journal.db
        counting = CountingConnection(db.connection())
        db._conn = counting  # type: ignore[assignment]
        for i in range(cycles):
            r = await csms.call(STATION, "SetChargingProfile", {
                "connectorId": 1, "csChargingProfiles": {
                    "chargingProfileId": 1, "transactionId": tx, "stackLevel": 0,
                    "chargingProfilePurpose": "TxProfile", "chargingProfileKind": "Relative",
                    "chargingSchedule": {"chargingRateUnit": "W", "chargingSchedulePeriod": [
                        {"startPeriod": 0, "limit": 20_000 + 1000 * i}]}}})
            assert r["status"] == "Accepted", r
            await csms.call(STATION, "RemoteStopTransaction", {"transactionId": tx})
            await csms.wait_until(
                lambda stopped=tx: csms.transactions[stopped].meter_stop is not None, 10)
            tx = await start()
            await asyncio.sleep(0.2)
        db._conn = counting.conn
        total = sum(counting.by_path.values())
        print(f"{cycles} cycles: {total} commits, {total / cycles:.2f} per cycle")
        times_ms = [t * 1000 for t in counting.times_s]
        print(f"event loop in COMMIT: {sum(times_ms):.1f} ms in all, "
              f"{sum(times_ms) / cycles:.2f} ms per cycle, max {max(times_ms, default=0):.2f} ms")
        for path, n in counting.by_path.most_common():
            print(f"  {n / cycles:5.2f}  {path}")
    finally:
        await gw.stop(drain_s=0)
        await csms.stop()
        sim.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=20)
    asyncio.run(run(ap.parse_args().cycles))


if __name__ == "__main__":
    main()
