"""Wall-clock steps in the real gateway process: schedules keep limiting (issue 11 item 1).

An RTC-less controller boots and NTP steps its clock later, forward or back. The gateway process
runs under libfaketime with the monotonic clock left alone, its wall clock read from a timestamp
file the test rewrites while it runs (`+300`, `-300`: offsets against the real clock), so only
the wall clock steps, as with NTP. The CSMS and the PCS simulator run unfaked in this process
(libfaketime 0.9.10 with FAKETIME_DONT_FAKE_MONOTONIC breaks Python's `time.sleep`,
wolfcw/libfaketime#426: nothing here may run under it but the gateway).

What the PCS got is read from the simulator's log of every setpoint write (holding registers
1-2, design.md section 4), so no write between two polls goes unseen.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from gateway_process import one_endpoint_config
from waiting import until

from bess_gateway.demo.csms import CsmsServer
from bess_gateway.sim.server import SimulatorThread

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
SID = "CLOCK-01"
CAP_W = 10_000  # the session's TxProfile
CLOSE_W = 9_500  # "close to the cap": power flows, the limit is not met by delivering nothing
OBSERVE_S = 2.0  # a window of about 20 control cycles
CLOCK_SLACK_S = 10.0  # the gateway's timestamps vs the real clock + the offset set


class FakeClock:
    """The timestamp file the gateway's libfaketime reads on every wall-clock call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset_s = 0
        self.set(0)

    def set(self, offset_s: int) -> None:
        """From now on the gateway's wall clock reads real time + `offset_s` (a step)."""
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(f"{offset_s:+d}\n")
        os.replace(tmp, self.path)  # the reader sees the old offset or the new one, never ""
        self.offset_s = offset_s

    def env(self) -> dict[str, str]:
        return {
            "LD_PRELOAD": str(LIBFAKETIME),
            "FAKETIME_TIMESTAMP_FILE": str(self.path),
            "FAKETIME_NO_CACHE": "1",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        }


@contextlib.asynccontextmanager
async def faked_gateway(cfg_path: Path, clock: FakeClock) -> AsyncIterator[None]:
    """`bess-gateway run --config cfg_path` under libfaketime (its wall clock = `clock`),
    SIGKILLed when the block ends; its output in gateway.log (printed on the way out, so a
    failure shows it)."""
    log_path = cfg_path.parent / "gateway.log"
    with log_path.open("a") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bess_gateway", "run", "--config", str(cfg_path),
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **clock.env()})
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        async with asyncio.timeout(10):
            await proc.wait()
        print(f"--- gateway.log ---\n{log_path.read_text()[-8000:]}")


def noticed_steps(cfg_path: Path) -> int:
    """Wall-clock steps the gateway has logged (gateway.py `_refresh_view`)."""
    return (cfg_path.parent / "gateway.log").read_text().count("wall clock stepped by")


def parse_ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def ts(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat().replace("+00:00", "Z")


async def boot(csms: CsmsServer, version: str) -> None:
    """The gateway is up, Accepted, and has reported both connectors (EVSEs)."""
    key = "connectorId" if version == "1.6" else "evseId"
    await csms.wait_for(SID, "StatusNotification", lambda p: p[key] == 2, timeout=30)


async def gateway_clock_offset(csms: CsmsServer, version: str) -> float:
    """The gateway's wall clock minus the real one, from a triggered StatusNotification's
    timestamp (s; within the message's round trip)."""
    after = csms.last_seq()
    before = time.time()
    if version == "1.6":
        trigger: dict[str, Any] = {"requestedMessage": "StatusNotification", "connectorId": 2}
        key = "connectorId"
    else:
        trigger = {"requestedMessage": "StatusNotification", "evse": {"id": 2, "connectorId": 1}}
        key = "evseId"
    r = await csms.call(SID, "TriggerMessage", trigger)
    assert r["status"] == "Accepted"
    msg = await csms.wait_for(SID, "StatusNotification", lambda p: p[key] == 2, after=after)
    return parse_ts(msg.payload["timestamp"]) - before


async def step_clock(clock: FakeClock, csms: CsmsServer, version: str, offset_s: int) -> None:
    """Step the gateway's wall clock to real + `offset_s`; returns once the process reads it."""
    clock.set(offset_s)
    seen = await gateway_clock_offset(csms, version)
    assert abs(seen - offset_s) < CLOCK_SLACK_S, \
        f"the gateway's wall clock is {seen:+.1f} s off the real one, not {offset_s:+d} s"


def writes_since(sim: SimulatorThread, t0: float) -> list[float]:
    """Setpoints (W) of every write the PCS got since monotonic time `t0`."""
    return [w for t, w in sim.setpoint_writes() if t >= t0]


async def observe(sim: SimulatorThread, seconds: float) -> list[float]:
    """Every setpoint written over the next `seconds` (an observation window, not a wait for
    something to happen: the limit must hold throughout)."""
    t0 = time.monotonic()
    await asyncio.sleep(seconds)
    writes = writes_since(sim, t0)
    assert writes, "the gateway wrote no setpoint for seconds (the watchdog needs a write " \
                   "every cycle)"
    return writes


def profile_16(profile_id: int, periods: list[tuple[int, float]], *,
               purpose: str = "TxProfile", kind: str = "Relative",
               start: float | None = None) -> dict[str, Any]:
    schedule: dict[str, Any] = {
        "chargingRateUnit": "W",
        "chargingSchedulePeriod": [{"startPeriod": s, "limit": w} for s, w in periods],
    }
    if start is not None:
        schedule["startSchedule"] = ts(start)
    return {"chargingProfileId": profile_id, "stackLevel": 0,
            "chargingProfilePurpose": purpose, "chargingProfileKind": kind,
            "chargingSchedule": schedule}


def start_profile(version: str, limit_w: float) -> dict[str, Any]:
    """A remote start's TxProfile: `limit_w` from the session's start on (Relative)."""
    if version == "1.6":
        return profile_16(1, [(0, limit_w)])
    return {"id": 1, "stackLevel": 0, "chargingProfilePurpose": "TxProfile",
            "chargingProfileKind": "Relative",
            "chargingSchedule": [{"id": 1, "chargingRateUnit": "W",
                                  "chargingSchedulePeriod": [{"startPeriod": 0,
                                                              "limit": limit_w}]}]}


async def remote_start(csms: CsmsServer, version: str,
                       profile: dict[str, Any] | None = None) -> float:
    """A remote start on connector (EVSE) 1, BESS discharge; the gateway's start timestamp."""
    after = csms.last_seq()
    payload: dict[str, Any]
    if version == "1.6":
        payload = {"idTag": "TAG", "connectorId": 1}
    else:
        payload = {"idToken": {"idToken": "TAG", "type": "ISO14443"}, "remoteStartId": 1,
                   "evseId": 1}
    if profile is not None:
        payload["chargingProfile"] = profile
    action = "RemoteStartTransaction" if version == "1.6" else "RequestStartTransaction"
    r = await csms.call(SID, action, payload)
    assert r["status"] == "Accepted"
    if version == "1.6":
        start = await csms.wait_for(SID, "StartTransaction", after=after)
    else:
        start = await csms.wait_for(SID, "TransactionEvent",
                                    lambda p: p["eventType"] == "Started", after=after)
    return parse_ts(start.payload["timestamp"])


@pytest.fixture
def clock(tmp_path: Path) -> FakeClock:
    if not LIBFAKETIME.exists():
        pytest.fail(f"{LIBFAKETIME} is missing: these tests step the gateway's wall clock with "
                    "libfaketime; install it with `apt-get install libfaketime`")
    return FakeClock(tmp_path / "faketime")


VERSIONS = pytest.mark.parametrize("version", ["1.6", "2.0.1"])


@VERSIONS
async def test_forward_step_before_the_session_keeps_its_tx_profile(
        tmp_path: Path, sim: SimulatorThread, csms: CsmsServer, clock: FakeClock,
        version: str) -> None:
    """The issue's case: the clock steps +300 s after the gateway started, then a session with a
    10 kW TxProfile starts. The old core (start wall clock + monotonic time) saw the new schedule
    as 300 s in the future and let the session run at its 150 kW default."""
    cfg_path = one_endpoint_config(tmp_path, sim.port, csms.url, SID, ocpp_version=version,
                                   sample_interval_s=1)
    async with faked_gateway(cfg_path, clock):
        await boot(csms, version)
        await step_clock(clock, csms, version, +300)

        t0 = time.monotonic()
        started = await remote_start(csms, version, start_profile(version, CAP_W))
        assert abs(started - time.time() - 300) < CLOCK_SLACK_S, "started on the stepped clock"
        await until(lambda: sim.written.setpoint_w >= CLOSE_W, 10)
        writes = writes_since(sim, t0) + await observe(sim, OBSERVE_S)

        assert max(writes) <= CAP_W, f"the PCS got {max(writes):.0f} W under a 10 kW TxProfile"
        assert sim.written.setpoint_w >= CLOSE_W, "the session still delivers"


@VERSIONS
async def test_steps_both_ways_with_the_schedule_installed_keep_the_limit(
        tmp_path: Path, sim: SimulatorThread, csms: CsmsServer, clock: FakeClock,
        version: str) -> None:
    """A session limited to 10 kW by its TxProfile; the clock steps back 300 s (to before the
    session started), then forward to +1 h: the limit holds after each step and after the
    rebuild of the schedules that the step triggers, and power still flows."""
    cfg_path = one_endpoint_config(tmp_path, sim.port, csms.url, SID, ocpp_version=version,
                                   sample_interval_s=1)
    async with faked_gateway(cfg_path, clock):
        await boot(csms, version)
        t0 = time.monotonic()
        await remote_start(csms, version, start_profile(version, CAP_W))
        await until(lambda: sim.written.setpoint_w >= CLOSE_W, 10)

        for n, offset in enumerate((-300, +3600), start=1):
            await step_clock(clock, csms, version, offset)
            # The gateway noticed the step and rebuilt its schedules for the new time: the
            # window below covers what the core runs on after the rebuild.
            await until(lambda n=n: noticed_steps(cfg_path) >= n, 10)
            writes = await observe(sim, OBSERVE_S)
            assert max(writes) <= CAP_W, \
                f"after a step to {offset:+d} s the PCS got {max(writes):.0f} W (cap 10 kW)"
            assert sim.written.setpoint_w >= CLOSE_W, \
                f"after a step to {offset:+d} s the session no longer delivers"
        everything = writes_since(sim, t0)
        assert max(everything) <= CAP_W, f"the PCS got {max(everything):.0f} W at some point"
        assert len(sim.setpoint_writes()) < 4096, "the simulator's write log overflowed"


@pytest.mark.parametrize("kind", ["Absolute", "Relative"])
async def test_backward_step_does_not_start_later_periods_early(
        tmp_path: Path, sim: SimulatorThread, csms: CsmsServer, clock: FakeClock,
        kind: str) -> None:
    """1.6: the clock steps back 300 s, then a two-period TxDefaultProfile (40 kW from its
    start, 10 kW from 120 s on) is installed and a session starts: it runs at 40 kW. The old
    core, 300 s ahead of the clock the schedule was built on, was already in the 10 kW period.
    Absolute: starting at the gateway's (stepped) now; Relative: at the session's start."""
    cfg_path = one_endpoint_config(tmp_path, sim.port, csms.url, SID, sample_interval_s=1)
    async with faked_gateway(cfg_path, clock):
        await boot(csms, "1.6")
        await step_clock(clock, csms, "1.6", -300)

        # Read from the real clock before the gateway reads its own: not after the gateway's now.
        start = time.time() - 300 if kind == "Absolute" else None
        profile = profile_16(7, [(0, 40_000), (120, 10_000)], purpose="TxDefaultProfile",
                             kind=kind, start=start)
        r = await csms.call(SID, "SetChargingProfile",
                            {"connectorId": 1, "csChargingProfiles": profile})
        assert r["status"] == "Accepted"
        t0 = time.monotonic()
        await remote_start(csms, "1.6")
        await until(lambda: sim.written.setpoint_w >= 35_000, 10)
        writes = writes_since(sim, t0) + await observe(sim, OBSERVE_S)

        assert max(writes) <= 40_000, f"the PCS got {max(writes):.0f} W (first period 40 kW)"
        assert sim.written.setpoint_w >= 35_000, "the 10 kW period started early"
