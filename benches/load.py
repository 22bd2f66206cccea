"""Load benchmark: N gateway endpoints under CSMS traffic, measured from outside the gateway.

    python benches/load.py --endpoints 50 --duration 20            # one row
    python benches/load.py --endpoints 50 200 1000 --duration 60   # the full table
    python benches/load.py --endpoints 200 --meter-values-only     # the periodic path alone
    python benches/load.py --gateway-python arm-venv/bin/python ... # the gateway on another Python
    python benches/load.py --endpoints 50 --ocpp 2.1 --no-baseline  # 2.1 V2X setpoints

On loopback, in three processes so the numbers are the gateway's own: this tester (a CSMS on the
`ocpp` library + a minimal PCS that timestamps every setpoint write), the gateway
(`bess-gateway run`), and for the baseline N plain `ocpp` ChargePoints (benches/baseline_cp.py)
driven by exactly the same traffic. Every endpoint runs a session and sends MeterValues at its
interval; the CSMS keeps sending RemoteStop/RemoteStart, SetChargingProfile (when the build
supports it) and TriggerMessage(MeterValues) to random endpoints, one command at a time so each
PCS write can be attributed to its command (design.md section 5).

The gateway ramps (300 kW/s, more for large N so the sessions ramp up in about 10 s), and the
tester waits for the PCS to settle on the
expected total (the sum of the open sessions' limits) after each command. Two latencies are
reported: cmd->PCS, to the first write that changes the setpoint, and for decreases (a lower
TxProfile, a RemoteStop) cmd->limit, to the first write at or under the new total, with the
number of writes that took (docs/control.md: a decrease holds from the first write).

With `--ocpp 2.1` the endpoints speak 2.1 and the commands are its own: RequestStart with a
CentralSetpoint TxProfile (a discharge setpoint of the session maximum), RequestStop, and
SetChargingProfile moving the running transaction's setpoint (the "setpoint command"), so
cmd->PCS is the setpoint command -> PCS latency of 2.1 endpoints. There is no plain-`ocpp` 2.1
baseline (benches/baseline_cp.py speaks 1.6).

Event-loop lag: the gateway runs with its metrics server on (`--no-metrics` turns it off, as
before this was measured); the tester scrapes `/metrics` just before and just after the measured
phase and prints the lag of that phase from the difference of `bess_event_loop_lag_seconds`
(python/bess_gateway/ops/loop_lag.py): p50 and p99 interpolated linearly within the histogram's
buckets (as Prometheus' histogram_quantile does), and the max from the last-minute max gauge
when that lies in the phase's highest occupied bucket, else that bucket's upper bound ("<=").
`--json FILE` writes the rows for benches/compare_load.py.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import orjson
from ocpp.exceptions import NotSupportedError
from pcs_stub import PcsStubProcess
from prometheus_client.parser import text_string_to_metric_families

from bess_gateway.demo.csms import CsmsServer

HERE = Path(__file__).resolve().parent
CMD_TIMEOUT_S = 5.0
SESSION_MAX_W = 90_000  # [control] session_max_kw below
SETTLE_TIMEOUT_S = 3.0
LAG = "bess_event_loop_lag_seconds"
LAG_MAX = "bess_event_loop_lag_max_seconds"


@dataclass
class Row:
    label: str
    n: int
    cmd_ms: list[float] = field(default_factory=list)
    cmd_by_kind: dict[str, list[float]] = field(default_factory=dict)  # stop, start, profile
    limit_ms: list[float] = field(default_factory=list)  # decreases: command -> limit reached
    limit_writes: list[int] = field(default_factory=list)  # writes from the command to it
    trig_ms: list[float] = field(default_factory=list)
    jitter_p99_ms: float | None = None
    jitter_max_ms: float | None = None
    cpu_ocpp_s: float = 0.0
    cpu_control_s: float = 0.0
    window_s: float = 0.0
    messages: int = 0
    rss_kib: int = 0
    errors: int = 0
    notes: list[str] = field(default_factory=list)
    lag: Lag | None = None  # event-loop lag of the measured phase (gateway runs only)

    @property
    def cpu_per_1000(self) -> float:
        return 1000 * self.cpu_ocpp_s / self.messages if self.messages else float("nan")


@dataclass
class Lag:
    """Event-loop lag of the measured phase, in ms; `max_bound`: the max is only known to be at
    most `max_ms` (its bucket's upper bound)."""

    samples: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    max_bound: bool

    def text(self) -> str:
        return (f"{self.p50_ms:.2f} / {self.p99_ms:.2f} / {'<=' if self.max_bound else ''}"
                f"{self.max_ms:.1f}")


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread name of a process, from /proc (utime + stime)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            comm = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
            fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[comm] = out.get(comm, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def free_port() -> int:
    """A free loopback port for the gateway's metrics server (free when asked; the gateway binds
    it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def scrape(port: int) -> dict[str, float]:
    """The gateway's event-loop lag samples from /metrics, keyed by sample name (+ `le`)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        async with asyncio.timeout(10):
            data = await reader.read()  # the server closes after one answer
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"/metrics: {head[:60]!r}")
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name.startswith("bess_event_loop_lag"):
                le = sample.labels.get("le")
                out[sample.name + (f"{{le={le}}}" if le else "")] = sample.value
    return out


def bucket_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' histogram_quantile over (upper bound, count in that bucket) pairs in order:
    linear within the bucket the rank falls in (the first one starts at 0); a rank in the +Inf
    bucket gives the highest finite bound."""
    total = sum(n for _, n in buckets)
    rank, below, lower = q * total, 0.0, 0.0
    for upper, n in buckets:
        if n > 0 and below + n >= rank:
            if upper == float("inf"):
                return lower
            return lower + (upper - lower) * (rank - below) / n
        below += n
        lower = upper if upper != float("inf") else lower
    return lower


def phase_lag(before: dict[str, float], after: dict[str, float]) -> Lag | None:
    """The lag of the samples taken between the two scrapes (see the module docstring)."""
    keyed = sorted((float(k[len(LAG + "_bucket{le="):-1]), k) for k in after
                   if k.startswith(LAG + "_bucket{"))
    bounds = [b for b, _ in keyed]
    cumulative = [after[k] - before.get(k, 0.0) for _, k in keyed]
    counts = [c - p for c, p in zip(cumulative, [0.0, *cumulative[:-1]], strict=True)]
    buckets = list(zip(bounds, counts, strict=True))
    total = sum(counts)
    if total <= 0:
        return None
    top = max(i for i, n in enumerate(counts) if n > 0)
    low, high = (bounds[top - 1] if top else 0.0), bounds[top]
    recent_max = after.get(LAG_MAX, float("nan"))
    exact = low < recent_max <= high
    max_s = recent_max if exact else (high if high != float("inf") else recent_max)
    return Lag(int(total), 1000 * bucket_quantile(0.5, buckets),
               1000 * bucket_quantile(0.99, buckets), 1000 * max_s, not exact)


class Traffic:
    """The CSMS side of the benchmark: boot everyone, run sessions, then measured commands."""

    def __init__(self, csms: CsmsServer, ids: list[str], pcs: PcsStubProcess | None,
                 rng: random.Random, commands: bool = True, ocpp: str = "1.6") -> None:
        self.v21 = ocpp == "2.1"
        self.commands = commands
        self.csms = csms
        self.ids = ids
        self.pcs = pcs
        self.rng = rng
        self.cursor = 0
        self.profiles = True
        self.open: dict[str, int | str] = {}
        self.limits: dict[str, int] = {}  # the TxProfile limit last set on a running session
        self.sent = 0  # CALLs the CSMS sent
        self.last_limit: tuple[float, int] | None = None  # the last decrease's (ms, writes)

    def _scan(self) -> list[Any]:
        new = self.csms.received[self.cursor:]
        self.cursor += len(new)
        return new

    async def wait_booted(self, timeout: float) -> None:
        pending = set(self.ids)
        t_end = time.monotonic() + timeout
        last_print = 0.0
        while pending:
            for m in self._scan():
                if m.action == "StatusNotification" and (
                        m.payload.get("evseId") == 1 if self.v21
                        else m.payload.get("connectorId") == 2):
                    pending.discard(m.station)
            if time.monotonic() > t_end:
                raise TimeoutError(f"{len(pending)} endpoints did not boot")
            if time.monotonic() - last_print > 5:
                print(f"  booted {len(self.ids) - len(pending)}/{len(self.ids)}", flush=True)
                last_print = time.monotonic()
            await asyncio.sleep(0.05)

    async def _effect(self, station: str, action: str, pred: Any = None) -> Any:
        t_end = time.monotonic() + CMD_TIMEOUT_S
        while time.monotonic() < t_end:
            for m in self.csms.received[self.cursor:]:
                if m.station == station and m.action == action and (pred is None or
                                                                     pred(m.payload)):
                    return m
            await asyncio.sleep(0.001)
        raise TimeoutError(f"{station}: no {action}")

    def expected_w(self) -> int:
        """The PCS setpoint every open session at its limit adds up to (the site and the BMS
        limits are far above it)."""
        return sum(self.limits.get(sid, SESSION_MAX_W) for sid in self.open)

    async def _limit(self, idx0: int, t0: float, limit_w: int) -> tuple[float, int]:
        """Command -> the first PCS write at or under `limit_w`, and how many writes since t0."""
        assert self.pcs is not None
        t_end = time.monotonic() + CMD_TIMEOUT_S
        while time.monotonic() < t_end:
            n = 0
            for t, sp in self.pcs.writes[idx0:]:
                if t < t0:
                    continue
                n += 1
                if sp <= limit_w:
                    return (t - t0) * 1000, n
            await asyncio.sleep(0.0005)
        raise TimeoutError(f"the PCS did not reach {limit_w} W")

    async def settle(self, timeout_s: float = SETTLE_TIMEOUT_S) -> bool:
        """Waits until the PCS setpoint is the expected total, so the next command's writes are
        its own; False if it did not within `timeout_s`."""
        if self.pcs is None:
            return True
        t_end = time.monotonic() + timeout_s
        while time.monotonic() < t_end:
            if abs(self.pcs.setpoint - self.expected_w()) <= len(self.open):
                return True
            await asyncio.sleep(0.002)
        return False

    async def _pcs_change(self, idx0: int, before: int, t0: float) -> float:
        assert self.pcs is not None
        t_end = time.monotonic() + CMD_TIMEOUT_S
        while time.monotonic() < t_end:
            for t, sp in self.pcs.writes[idx0:]:
                # t >= t0: a write from before the command that the pipe delivered late
                if sp != before and t >= t0:
                    return (t - t0) * 1000
            await asyncio.sleep(0.0005)
        raise TimeoutError("no changed setpoint at the PCS")

    async def start(self, sid: str) -> float | None:
        self.cursor = len(self.csms.received)
        idx0, before = (len(self.pcs.writes), self.pcs.setpoint) if self.pcs else (0, 0)
        t0 = time.monotonic()
        self.sent += 1
        if self.v21:
            r = await self.csms.call(sid, "RequestStartTransaction", {
                "idToken": {"idToken": f"T{sid[-4:]}", "type": "Central"}, "evseId": 1,
                "remoteStartId": self.sent, "chargingProfile": _setpoint_profile(SESSION_MAX_W)})
        else:
            r = await self.csms.call(sid, "RemoteStartTransaction",
                                     {"idTag": f"T{sid[-4:]}", "connectorId": 1})
        if r["status"] != "Accepted":
            raise RuntimeError(f"{sid}: RemoteStart {r['status']}")
        lat = await self._pcs_change(idx0, before, t0) if self.pcs else None
        if self.v21:
            m = await self._effect(sid, "TransactionEvent", lambda p: p["eventType"] == "Started")
            self.open[sid] = m.payload["transactionInfo"]["transactionId"]
            return lat
        await self._effect(sid, "StartTransaction")
        tx = await self.csms.wait_until(lambda: next(
            (t.id for t in self.csms.transactions.values()
             if t.station == sid and t.meter_stop is None), None), CMD_TIMEOUT_S)
        self.open[sid] = tx
        return lat

    async def stop(self, sid: str) -> float | None:
        self.cursor = len(self.csms.received)
        idx0, before = (len(self.pcs.writes), self.pcs.setpoint) if self.pcs else (0, 0)
        t0 = time.monotonic()
        self.sent += 1
        if self.v21:
            await self.csms.call(sid, "RequestStopTransaction",
                                 {"transactionId": self.open.pop(sid)})
        else:
            await self.csms.call(sid, "RemoteStopTransaction",
                                 {"transactionId": self.open.pop(sid)})
        self.limits.pop(sid, None)  # its TxProfile ends with the transaction
        lat = await self._pcs_change(idx0, before, t0) if self.pcs else None
        if self.pcs is not None:
            self.last_limit = await self._limit(idx0, t0, self.expected_w())
        if self.v21:
            await self._effect(sid, "TransactionEvent", lambda p: p["eventType"] == "Ended")
        else:
            await self._effect(sid, "StopTransaction")
        return lat

    async def profile(self, sid: str) -> float | None:
        self.cursor = len(self.csms.received)
        idx0, before = (len(self.pcs.writes), self.pcs.setpoint) if self.pcs else (0, 0)
        # A limit the session does not have already: an unchanged one moves no setpoint, and
        # the command would time out as an error.
        limit = self.rng.choice([w for w in range(20_000, 80_001, 1000)
                                 if w != self.limits.get(sid)])
        decrease = limit < self.limits.get(sid, SESSION_MAX_W)
        self.limits[sid] = limit
        t0 = time.monotonic()
        self.sent += 1
        if self.v21:
            # The setpoint command: the running V2X transaction's setpoint moves.
            r = await self.csms.call(sid, "SetChargingProfile", {
                "evseId": 1, "chargingProfile": _setpoint_profile(limit, self.open[sid])})
        else:
            r = await self.csms.call(sid, "SetChargingProfile", {
            "connectorId": 1, "csChargingProfiles": {
            "chargingProfileId": 1, "transactionId": self.open[sid], "stackLevel": 0,
            "chargingProfilePurpose": "TxProfile", "chargingProfileKind": "Relative",
            "chargingSchedule": {"chargingRateUnit": "W", "chargingSchedulePeriod": [
                {"startPeriod": 0, "limit": limit}]}}})
        if r["status"] != "Accepted":
            raise RuntimeError(f"{sid}: SetChargingProfile {r['status']}")
        lat = await self._pcs_change(idx0, before, t0) if self.pcs else None
        if self.pcs is not None and decrease:
            self.last_limit = await self._limit(idx0, t0, self.expected_w())
        return lat

    async def trigger(self, sid: str) -> float:
        self.cursor = len(self.csms.received)
        t0 = time.monotonic()
        self.sent += 1
        await self.csms.call(sid, "TriggerMessage", {"requestedMessage": "MeterValues",
                                                     **({"evse": {"id": 1}} if self.v21
                                                        else {"connectorId": 1})})
        m = await self._effect(sid, "MeterValues", lambda p: p["meterValue"][0][
            "sampledValue"][0].get("context") == "Trigger")
        return (m.at - t0) * 1000

    async def run(self, row: Row, duration: float) -> None:
        if not self.commands:  # the periodic MeterValues path alone
            await asyncio.sleep(duration)
            return
        t_end = time.monotonic() + duration
        while time.monotonic() < t_end:
            sid = self.rng.choice(self.ids)
            kind = self.rng.choice(["restart", "trigger", "profile"] if self.profiles
                                   else ["restart", "trigger"])
            self.last_limit = None
            try:
                if kind == "trigger":
                    row.trig_ms.append(await self.trigger(sid))
                elif kind == "profile":
                    try:
                        lat = await self.profile(sid)
                    except NotSupportedError:
                        self.profiles = False
                        row.notes.append("SetChargingProfile not supported by this build")
                        continue
                    if lat is not None:
                        row.cmd_ms.append(lat)
                        row.cmd_by_kind.setdefault("profile", []).append(lat)
                else:
                    stop_ms = await self.stop(sid)
                    start_ms = await self.start(sid)
                    for what, lat in (("stop", stop_ms), ("start", start_ms)):
                        if lat is not None:
                            row.cmd_ms.append(lat)
                            row.cmd_by_kind.setdefault(what, []).append(lat)
                if self.last_limit is not None:
                    row.limit_ms.append(self.last_limit[0])
                    row.limit_writes.append(self.last_limit[1])
            except Exception as exc:
                row.errors += 1
                row.notes.append(f"{kind} {sid}: {exc!r}"[:120])
                self.open.setdefault(sid, 0)
            if not await self.settle():
                row.notes.append(f"PCS not settled on the expected total after {kind}")
            await asyncio.sleep(self.rng.uniform(0.01, 0.05))


def _setpoint_profile(discharge_w: int, tx_id: int | str | None = None) -> dict[str, Any]:
    """A 2.1 TxProfile: discharge at `discharge_w` (2.1 sign: a negative setpoint)."""
    profile: dict[str, Any] = {
        "id": 1, "stackLevel": 0, "chargingProfilePurpose": "TxProfile",
        "chargingProfileKind": "Relative",
        "chargingSchedule": [{"id": 1, "chargingRateUnit": "W", "chargingSchedulePeriod": [
            {"startPeriod": 0, "operationMode": "CentralSetpoint",
             "setpoint": float(-discharge_w)}]}]}
    if tx_id is not None:
        profile["transactionId"] = tx_id
    return profile


def gateway_config(tmp: Path, n: int, url: str, pcs_port: int, interval: int,
                   ocpp: str = "1.6", metrics_port: int | None = None) -> Path:
    cfg = tmp / "gateway.toml"
    listen = "" if metrics_port is None else f"127.0.0.1:{metrics_port}"
    cfg.write_text(f"""
[gateway]
data_dir = "{tmp / 'var'}"
# On for the event-loop lag (scraped before and after the measured phase), "" with --no-metrics.
metrics_listen = "{listen}"
# Live traffic only: the outage-replay pacer (50 queued messages/s for the whole gateway) would
# hold every StartTransaction behind the 1000 start-up security events at N = 1000.
replay_rate_per_s = 0

[control]
# Increases ramp over several writes, decreases hold at once; the sessions' N x 90 kW ramp up
# within about 10 s (300 kW/s, the default, up to N = 33).
ramp_kw_per_s = {max(300, 9 * n)}
site_max_discharge_kw = 100000
site_max_charge_kw = 100000
# 1000 sessions x 90 kW stay under the site limit (at 150 kW the site saturated from session 667
# on, and a start there moved no setpoint); profiles set 20..80 kW, below it.
session_max_kw = 90

[pcs]
port = {pcs_port}

[[endpoint]]
id = "LOAD-{{n:04}}"
count = {n}
csms_url = "{url}"
meter_sample_interval_s = {interval}
ocpp_version = "{ocpp}"
""")
    return cfg


async def run_one(n: int, duration: float, interval: int, baseline: bool,
                  seed: int = 1, commands: bool = True, python: str = sys.executable,
                  ocpp: str = "1.6", metrics: bool = True) -> Row:
    """One row; `python` runs the gateway (e.g. an emulated aarch64 venv, packaging/
    test-arm-wheel.sh), while the tester, the PCS stub and the baseline stay on this one.
    `metrics`: the gateway serves /metrics, and the row gets the phase's event-loop lag."""
    label = "ocpp baseline" if baseline else "bess-gateway" + (" 2.1" if ocpp == "2.1" else "")
    if not commands:
        label += " (MeterValues only)"
    row = Row(label, n)
    csms = CsmsServer()
    await csms.start()
    pcs = None if baseline else PcsStubProcess()
    tmp = Path(tempfile.mkdtemp(prefix="bess-load-"))
    log = (tmp / "process.log").open("w")
    metrics_port = free_port() if metrics and not baseline else None
    if baseline:
        cmd = [sys.executable, str(HERE / "baseline_cp.py"), "--endpoints", str(n), "--url",
               csms.url, "--interval", str(interval)]
        ids = [f"BASE-{i:04d}" for i in range(1, n + 1)]
    else:
        assert pcs is not None
        pcs.start()
        # BESS_LOAD_PROFILE=out.prof profiles the gateway's measured window (benches/
        # profile_gateway.py); such a run's numbers are not comparable with a normal one.
        prof = os.environ.get("BESS_LOAD_PROFILE")
        cmd = [python, *([str(HERE / "profile_gateway.py"), prof] if prof
                                 else ["-m", "bess_gateway"]), "run", "--config",
               str(gateway_config(tmp, n, csms.url, pcs.port, interval, ocpp, metrics_port)),
               "--log-level", "WARNING"]
        ids = [f"LOAD-{i:04d}" for i in range(1, n + 1)]
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=log, stderr=log)
    traffic = Traffic(csms, ids, pcs, random.Random(seed), commands,
                      ocpp="1.6" if baseline else ocpp)
    try:
        print(f"[{label} N={n}] waiting for boot", flush=True)
        await traffic.wait_booted(timeout=60 + n * 0.2)
        print(f"[{label} N={n}] starting {n} sessions", flush=True)
        for i in range(0, n, 25):
            await asyncio.gather(*(traffic.start(s) for s in ids[i:i + 25]))
        await asyncio.sleep(2 * interval)  # let the periodic MeterValues settle in
        # The ramp up to every session's limit (about 10 s, see gateway_config).
        await traffic.settle(30.0)
        # Scraped before cpu0 and after cpu1: rendering /metrics is not in the CPU figures.
        lag0 = await scrape(metrics_port) if metrics_port is not None else None
        cpu0, msg0, t0 = thread_cpu(proc.pid), len(csms.received), time.monotonic()
        sent0 = traffic.sent
        if os.environ.get("BESS_LOAD_PROFILE") and not baseline:
            proc.send_signal(signal.SIGUSR1)
        print(f"[{label} N={n}] measuring {duration:.0f} s", flush=True)
        await traffic.run(row, duration)
        cpu1, t1 = thread_cpu(proc.pid), time.monotonic()
        if metrics_port is not None and lag0 is not None:
            row.lag = phase_lag(lag0, await scrape(metrics_port))
        row.window_s = t1 - t0
        received = len(csms.received) - msg0
        row.messages = received + traffic.sent - sent0
        row.cpu_control_s = cpu1.get("bess-control", 0) - cpu0.get("bess-control", 0)
        row.cpu_ocpp_s = sum(cpu1.values()) - sum(cpu0.values()) - row.cpu_control_s
        if os.environ.get("BESS_LOAD_THREADS"):
            print({k: round(v - cpu0.get(k, 0.0), 3) for k, v in cpu1.items()}, flush=True)
        row.rss_kib = rss_kib(proc.pid)
        if not baseline:
            r = await csms.call(ids[0], "DataTransfer", {"vendorId": "org.bess-gateway",
                                                         "messageId": "BatteryStatus"})
            health = orjson.loads(r["data"])
            if health.get("jitter_us_p99") is not None:
                row.jitter_p99_ms = health["jitter_us_p99"] / 1000
                row.jitter_max_ms = health["jitter_us_max"] / 1000
        row.errors += csms.connections - n  # every reconnect is an error here
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(15):
                await proc.wait()
        except TimeoutError:
            proc.kill()
        await csms.stop()
        if pcs is not None:
            pcs.stop()
        log.close()
    return row


def fmt3(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{pct(values, 50):.1f} / {pct(values, 99):.1f} / {max(values):.1f}"


def lag_line(r: Row) -> str:
    assert r.lag is not None
    return (f"event-loop lag ({r.label} N={r.n}, measured phase, {r.lag.samples} samples every "
            f"50 ms): p50 / p99 / max {r.lag.text()} ms (p50, p99 interpolated within the "
            "histogram's buckets)")


def row_json(r: Row) -> dict[str, Any]:
    """A row's figures for benches/compare_load.py."""
    def p(values: list[float], q: float) -> float | None:
        return pct(values, q) if values else None

    return {"label": r.label, "n": r.n, "cmd_p50_ms": p(r.cmd_ms, 50),
            "cmd_p99_ms": p(r.cmd_ms, 99), "cmd_max_ms": max(r.cmd_ms, default=None),
            "commands": len(r.cmd_ms), "trigger_p99_ms": p(r.trig_ms, 99),
            "cpu_per_1000": r.cpu_per_1000 if r.messages else None,
            "cpu_control_pct": 100 * r.cpu_control_s / r.window_s if r.window_s else None,
            "jitter_p99_ms": r.jitter_p99_ms, "errors": r.errors,
            "lag": None if r.lag is None else {
                "samples": r.lag.samples, "p50_ms": r.lag.p50_ms, "p99_ms": r.lag.p99_ms,
                "max_ms": r.lag.max_ms, "max_bound": r.lag.max_bound}}


def table(rows: list[Row], baselines: dict[int, Row]) -> str:
    head = ("| run | N | cmd->PCS ms p50/p99/max | trigger->MeterValues ms p50/p99/max | "
            "jitter ms p99/max | CPU s per 1000 msg | vs baseline | control thread CPU % | "
            "RSS KiB/endpoint | errors |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        base = baselines.get(r.n)
        ratio = (f"1/{base.cpu_per_1000 / r.cpu_per_1000:.1f}"
                 if base and r.label != base.label and r.cpu_per_1000 > 0 else "-")
        jitter = (f"{r.jitter_p99_ms:.2f} / {r.jitter_max_ms:.2f}"
                  if r.jitter_p99_ms is not None else "-")
        ctl = f"{100 * r.cpu_control_s / r.window_s:.1f}" if r.window_s else "-"
        lines.append(
            f"| {r.label} | {r.n} | {fmt3(r.cmd_ms)} | {fmt3(r.trig_ms)} | {jitter} | "
            f"{r.cpu_per_1000:.3f} | {ratio} | "
            f"{'-' if r.label.startswith('ocpp baseline') else ctl} | "
            f"{r.rss_kib // max(1, r.n)} | {r.errors} |")
    return "\n".join(lines)


async def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--endpoints", type=int, nargs="+", default=[50])
    ap.add_argument("--duration", type=float, default=20.0, help="measured seconds per run")
    ap.add_argument("--no-baseline", action="store_true", help="skip the plain-ocpp baseline")
    ap.add_argument("--meter-values-only", action="store_true",
                    help="no CSMS commands: the periodic MeterValues path alone")
    ap.add_argument("--ocpp", choices=("1.6", "2.1"), default="1.6",
                    help="the gateway endpoints' OCPP version (2.1: V2X setpoint commands)")
    ap.add_argument("--gateway-python", default=sys.executable, metavar="PYTHON",
                    help="interpreter that runs the gateway (default: this one)")
    ap.add_argument("--no-metrics", action="store_true",
                    help="the gateway's metrics server off (no event-loop lag figures)")
    ap.add_argument("--json", type=Path, metavar="FILE", help="also write the rows as JSON")
    args = ap.parse_args(argv)
    rows: list[Row] = []
    baselines: dict[int, Row] = {}
    for n in args.endpoints:
        interval = 1 if n <= 200 else 10
        commands = not args.meter_values_only
        rows.append(await run_one(n, args.duration, interval, baseline=False,
                                  commands=commands, python=args.gateway_python,
                                  ocpp=args.ocpp, metrics=not args.no_metrics))
        if not args.no_baseline and args.ocpp == "1.6":
            baselines[n] = await run_one(n, args.duration, interval, baseline=True,
                                         commands=commands)
            rows.append(baselines[n])
        print(table(rows, baselines), flush=True)
    print("\n" + table(rows, baselines))
    for r in rows:
        if r.cmd_by_kind:
            print(f"cmd->PCS by command ({r.label} N={r.n}): " + ", ".join(
                f"{k} {fmt3(v)} ms (n={len(v)})" for k, v in sorted(r.cmd_by_kind.items())))
    for r in rows:
        if r.lag is not None:
            print(lag_line(r))
    for r in rows:
        for note in dict.fromkeys(r.notes):
            print(f"note ({r.label} N={r.n}): {note}")
    for r in rows:
        if r.limit_ms:
            print(f"decrease->limit reached ({r.label} N={r.n}): {fmt3(r.limit_ms)} ms, writes "
                  f"to reach it p50/max {pct([float(w) for w in r.limit_writes], 50):.0f} / "
                  f"{max(r.limit_writes)} (n={len(r.limit_ms)})")
    print(f"measured commands: {sum(len(r.cmd_ms) for r in rows)}, "
          f"triggers: {sum(len(r.trig_ms) for r in rows)}; "
          f"median of all cmd->PCS: "
          f"{statistics.median([v for r in rows for v in r.cmd_ms] or [0]):.1f} ms")
    if args.json is not None:
        args.json.write_bytes(orjson.dumps([row_json(r) for r in rows], option=orjson.OPT_INDENT_2))
    return 1 if any(r.errors for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
