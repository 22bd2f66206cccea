"""Reconnect wave: N endpoints on wss:// (security profile 2) lose their CSMS and get it back.

    python benches/reconnect_wave.py                          # 1000 endpoints, system CA store
    python benches/reconnect_wave.py --endpoints 50           # smoke run
    python benches/reconnect_wave.py --trust file --runs 3    # CA from the config's ca_file

What it measures: after a CSMS outage, the time until every endpoint is Accepted again (its
BootNotification answered) and every message it queued while the CSMS was down has arrived at the
CSMS, and the gateway's CPU seconds over that wave. This is the path where the gateway builds a
TLS client context for each connection attempt (issue 12: ``SSLContext`` +
``load_default_certs`` + the certificate store, per attempt).

Parts, all real: this process runs a minimal OCPP 1.6J CSMS on ``websockets`` with TLS (a
trustme CA, certificate for 127.0.0.1) and Basic auth for every station, the gateway runs as a
subprocess (``bess-gateway run --config ...``, profile 2 for all N endpoints) against
benches/pcs_stub.py. The CSMS is deliberately minimal (no schema validation, fixed answers): the
demo CSMS on the ``ocpp`` library spends about 1 ms of this process's CPU per message, which on
a 2-core box would make the wave measure the tester. The gateway's CPU comes from
/proc/<pid>/stat (utime + stime, all threads).

Steps:
 1. Every endpoint boots (Accepted); the CSMS sets RetryBackOffWaitMinimum=1,
    RetryBackOffRandomRange=2, RetryBackOffRepeatTimes=0 and starts one session per endpoint
    (RemoteStartTransaction), so MeterValues are sampled every ``--sample`` s (3).
 2. The CSMS stops (its server closes: 1001 to every station, then connection refused) for
    ``--outage`` s (10). Endpoints keep retrying (each attempt builds its TLS context) and queue
    MeterValues. The gateway's CPU over the outage is reported too.
 3. Just before the CSMS comes back, the outbox of the gateway's journal (the real SQLite file,
    read-only) is read: the unique ids of the CALLs queued per endpoint are what must be replayed.
 4. The CSMS listens again on the same port. Per endpoint: t(Accepted) = its first
    BootNotification after that; t(replayed) = when the last of its queued unique ids arrived.
    The wave ends when every endpoint has both; one that has not after ``--wave-timeout`` s
    (120) is reported INCOMPLETE with how far it got (the old per-attempt contexts with
    ``--trust system`` did not finish at 1000 endpoints on a busy 2-core box).

A run at 1000 endpoints takes about 40-60 s (boot and session start included).

Knobs set so the TLS/connect cost is what is measured, not configuration: the back-off above
(constant 1..3 s instead of the default 3 s doubling to 192 s + up to 10 s: with the defaults a
wave takes minutes of sleeping whatever the CPU does) and ``replay_rate_per_s = 0`` (the default
50 messages/s for the whole gateway would hold N x queued messages behind the pacer; that
pacing is by design and measured by its own tests). Heartbeats are hourly.

``--trust``: where the CSMS's CA comes from, which decides what building a context costs:
``system`` (default): no ca_file, no installed root: the gateway loads the system store
(``load_default_certs``), as for a CSMS with a certificate from a public CA; the subprocess gets
``SSL_CERT_FILE`` = the system bundle plus the test CA, so the store is as big as production's.
``file``: ``ca_file`` in the config. ``store``: a CentralSystemRootCertificate installed in the
operator's certificate store (as InstallCertificate leaves it), parsed by the store per context.

Printed: p50/p99 of per-endpoint reconnect time (CSMS back -> Accepted) and of
CSMS back -> replayed, total wave time, gateway CPU seconds in the wave and during the outage,
messages queued, the gateway's peak RSS, and the load average before the run (the box may be
shared: interleave before/after runs, ``--gateway-python`` of a worktree at the old commit).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import itertools
import os
import signal
import sqlite3
import ssl
import sys
import tempfile
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import orjson
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pcs_stub import PcsStubProcess
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

PASSWORD = "wave-bench-password"
OPERATOR = "bench"
SYSTEM_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
CALL_TIMEOUT_S = 30.0


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def peak_rss_mib(pid: int) -> float:
    """VmHWM: the most resident memory the process had so far."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_s(pid: int) -> float:
    """utime + stime of the whole process (all threads), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class WaveCsms:
    """A minimal OCPP 1.6J CSMS: Basic auth, fixed answers, records what each station sent."""

    def __init__(self, ids: list[str], tls: ssl.SSLContext) -> None:
        self.tls = tls
        self.port = 0
        token = {sid: base64.b64encode(f"{sid}:{PASSWORD}".encode()).decode() for sid in ids}
        self._auth = {sid: f"Basic {t}" for sid, t in token.items()}
        # station -> unique id of each CALL it sent -> when it (first) arrived
        self.received: dict[str, dict[str, float]] = {sid: {} for sid in ids}
        self.boots: dict[str, list[float]] = {sid: [] for sid in ids}  # Accepted at
        self.started: set[str] = set()  # stations that sent a StartTransaction
        self.actions: dict[str, int] = {}  # CALLs received per action
        self.refused = 0
        self._conns: dict[str, ServerConnection] = {}
        self._waiting: dict[str, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._server: Server | None = None

    async def start(self) -> None:
        self._server = await serve(self._handle, "127.0.0.1", self.port, ssl=self.tls,
                                   subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                                   process_request=self._check_auth, compression=None,
                                   ping_interval=None)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    @property
    def url(self) -> str:
        return f"wss://127.0.0.1:{self.port}/ocpp"

    def _check_auth(self, conn: ServerConnection, request: Request) -> Response | None:
        sid = request.path.rstrip("/").rsplit("/", 1)[-1]
        if request.headers.get("Authorization") != self._auth.get(sid):
            self.refused += 1
            return conn.respond(HTTPStatus.UNAUTHORIZED, "unauthorized\n")
        return None

    def _answer(self, sid: str, action: str) -> dict[str, Any]:
        if action == "BootNotification":
            self.boots[sid].append(time.monotonic())
            return {"status": "Accepted", "currentTime": now_iso(), "interval": 3600}
        if action == "Heartbeat":
            return {"currentTime": now_iso()}
        if action == "StartTransaction":
            self.started.add(sid)
            return {"transactionId": next(self._ids), "idTagInfo": {"status": "Accepted"}}
        if action == "Authorize":
            return {"idTagInfo": {"status": "Accepted"}}
        if action == "DataTransfer":
            return {"status": "UnknownVendorId"}
        return {}  # StatusNotification, MeterValues, StopTransaction, SecurityEvent..., ...

    async def _handle(self, ws: ServerConnection) -> None:
        sid = ws.request.path.rstrip("/").rsplit("/", 1)[-1] if ws.request else "?"
        self._conns[sid] = ws
        try:
            async for text in ws:
                msg = orjson.loads(text)
                if msg[0] == 2:
                    _, uid, action, _payload = msg
                    self.received[sid].setdefault(uid, time.monotonic())
                    self.actions[action] = self.actions.get(action, 0) + 1
                    await ws.send(orjson.dumps([3, uid, self._answer(sid, action)]).decode())
                elif msg[0] in (3, 4):
                    fut = self._waiting.pop(msg[1], None)
                    if fut is not None and not fut.done():
                        fut.set_result(msg)
        except ConnectionClosed:
            pass
        finally:
            if self._conns.get(sid) is ws:
                del self._conns[sid]

    async def call(self, sid: str, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        uid = f"csms-{next(self._ids)}"
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[uid] = fut
        await self._conns[sid].send(orjson.dumps([2, uid, action, payload]).decode())
        async with asyncio.timeout(CALL_TIMEOUT_S):
            msg = await fut
        if msg[0] != 3:
            raise RuntimeError(f"{sid}: {action} answered {msg}")
        return dict(msg[2])


@dataclass
class Wave:
    n: int
    trust: str
    reconnect_s: list[float] = field(default_factory=list)  # CSMS back -> Accepted
    replayed_s: list[float] = field(default_factory=list)  # CSMS back -> queue replayed
    wave_s: float = 0.0
    cpu_wave_s: float = 0.0
    cpu_outage_s: float = 0.0
    outage_s: float = 0.0
    queued: int = 0
    endpoints_with_queue: int = 0
    load_before: str = ""
    incomplete: str = ""  # why the wave did not end within --wave-timeout
    peak_rss_mib: float = 0.0

    def report(self) -> str:
        return (
            f"reconnect wave: {self.n} endpoints, profile 2, trust={self.trust}\n"
            f"  load average before: {self.load_before}\n"
            f"  queued during the outage: {self.queued} messages "
            f"({self.endpoints_with_queue}/{self.n} endpoints with a queue)\n"
            f"  CSMS back -> Accepted   p50 {pct(self.reconnect_s, 50):.2f} s   "
            f"p99 {pct(self.reconnect_s, 99):.2f} s   max {pct(self.reconnect_s, 100):.2f} s\n"
            f"  CSMS back -> replayed   p50 {pct(self.replayed_s, 50):.2f} s   "
            f"p99 {pct(self.replayed_s, 99):.2f} s\n"
            f"  wave (all Accepted and replayed): {self.wave_s:.2f} s {self.incomplete}\n"
            f"  gateway CPU in the wave: {self.cpu_wave_s:.2f} s\n"
            f"  gateway CPU during the {self.outage_s:.0f} s outage: {self.cpu_outage_s:.2f} s\n"
            f"  gateway peak RSS (VmHWM): {self.peak_rss_mib:.0f} MiB")


def gateway_config(tmp: Path, n: int, url: str, pcs_port: int, sample_s: int, trust: str,
                   ca_file: Path) -> Path:
    cfg = tmp / "gateway.toml"
    cfg.write_text(f"""
[gateway]
data_dir = "{tmp / 'var'}"
metrics_listen = ""
# Unpaced replay: the wave measures reconnecting, not the pacer (see the module docstring).
replay_rate_per_s = 0

[control]
ramp_kw_per_s = {max(300, 9 * n)}
site_max_discharge_kw = 100000
site_max_charge_kw = 100000
session_max_kw = 90

[pcs]
port = {pcs_port}

[[endpoint]]
id = "WAVE-{{n:04}}"
count = {n}
csms_url = "{url}"
operator = "{OPERATOR}"
security_profile = 2
password = "env:BESS_WAVE_PASSWORD"
meter_sample_interval_s = {sample_s}
{f'ca_file = "{ca_file}"' if trust == "file" else ""}
""")
    return cfg


def install_root(tmp: Path, ca: trustme.CA) -> None:
    """The CA as InstallCertificate(CentralSystemRootCertificate) leaves it in the operator's
    store: <data_dir>/certs/operators/<operator>/<type>/<sha256 of the DER>.pem."""
    cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    der = cert.public_bytes(serialization.Encoding.DER)
    folder = tmp / "var" / "certs" / "operators" / OPERATOR / "CentralSystemRootCertificate"
    folder.mkdir(parents=True)
    (folder / f"{hashlib.sha256(der).hexdigest()}.pem").write_bytes(ca.cert_pem.bytes())


def trust_files(tmp: Path, trust: str, ca: trustme.CA) -> dict[str, str]:
    """The CA where ``trust`` puts it; the gateway's environment."""
    (tmp / "csms-ca.pem").write_bytes(ca.cert_pem.bytes())
    env = {**os.environ, "BESS_WAVE_PASSWORD": PASSWORD}
    if trust == "system":
        bundle = tmp / "system-plus-test-ca.pem"
        bundle.write_bytes(SYSTEM_BUNDLE.read_bytes() + b"\n" + ca.cert_pem.bytes())
        env["SSL_CERT_FILE"] = str(bundle)
    elif trust == "store":
        install_root(tmp, ca)
    return env


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().strip()


def queued(db: Path) -> dict[str, set[str]]:
    """The CALLs waiting in the gateway's outbox, by endpoint (read-only, beside the writer)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        out: dict[str, set[str]] = {}
        for endpoint, uid in con.execute("SELECT endpoint_id, unique_id FROM outbox"):
            out.setdefault(endpoint, set()).add(uid)
        return out
    finally:
        con.close()


async def gather_limited(aws: list[Awaitable[Any]], limit: int) -> list[Any]:
    sem = asyncio.Semaphore(limit)

    async def one(aw: Awaitable[Any]) -> Any:
        async with sem:
            return await aw
    return await asyncio.gather(*(one(a) for a in aws))


async def wait(what: str, cond: Any, timeout: float, progress: Any = None) -> None:
    t_end = time.monotonic() + timeout
    last = time.monotonic()
    while not cond():
        if time.monotonic() > t_end:
            raise TimeoutError(f"{what}: not done in {timeout:.0f} s"
                               + (f" ({progress()})" if progress else ""))
        if progress and time.monotonic() - last > 5:
            print(f"  {what}: {progress()}", flush=True)
            last = time.monotonic()
        await asyncio.sleep(0.01)


async def run_wave(n: int, trust: str, outage: float, sample_s: int, python: str,
                   wave_timeout: float = 120.0) -> Wave:
    wave = Wave(n, trust, load_before=loadavg())
    ids = [f"WAVE-{i:04d}" for i in range(1, n + 1)]
    ca = trustme.CA()
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(server_tls)
    csms = WaveCsms(ids, server_tls)
    await csms.start()
    pcs = PcsStubProcess()
    pcs.start()
    tmp = Path(tempfile.mkdtemp(prefix="bess-wave-"))
    env = trust_files(tmp, trust, ca)
    cfg = gateway_config(tmp, n, csms.url, pcs.port, sample_s, trust, tmp / "csms-ca.pem")
    log = (tmp / "process.log").open("w")
    proc = await asyncio.create_subprocess_exec(
        python, "-m", "bess_gateway", "run", "--config", str(cfg), "--log-level", "ERROR",
        stdout=log, stderr=log, env=env)
    try:
        print(f"[wave N={n} trust={trust}] gateway pid {proc.pid}, log {tmp / 'process.log'}",
              flush=True)
        await wait("boot", lambda: all(csms.boots[s] for s in ids), 60 + n * 0.2,
                   lambda: f"{sum(1 for s in ids if csms.boots[s])}/{n} accepted")
        # Let each connection's boot traffic (statuses, StartupOfTheDevice) finish first.
        await asyncio.sleep(1.0)
        print(f"[wave N={n}] back-off 1+2 s, constant; one session per endpoint", flush=True)
        for key, value in (("RetryBackOffWaitMinimum", "1"), ("RetryBackOffRandomRange", "2"),
                           ("RetryBackOffRepeatTimes", "0")):
            answers = await gather_limited([csms.call(s, "ChangeConfiguration",
                                                      {"key": key, "value": value})
                                            for s in ids], 100)
            bad = [a for a in answers if a.get("status") != "Accepted"]
            if bad:
                raise RuntimeError(f"ChangeConfiguration {key}: {bad[:3]}")
        answers = await gather_limited([csms.call(s, "RemoteStartTransaction",
                                                  {"idTag": f"T{s[-4:]}", "connectorId": 1})
                                        for s in ids], 50)
        if any(a.get("status") != "Accepted" for a in answers):
            raise RuntimeError("a RemoteStartTransaction was not accepted")
        await wait("sessions", lambda: len(csms.started) == n, 60 + n * 0.1,
                   lambda: f"{len(csms.started)}/{n} started")
        await asyncio.sleep(sample_s)  # the sessions' MeterValues are flowing

        print(f"[wave N={n}] CSMS down for {outage:.0f} s", flush=True)
        t_down, cpu_down = time.monotonic(), cpu_s(proc.pid)
        await csms.stop()
        await asyncio.sleep(outage)
        waiting = queued(tmp / "var" / "journal.sqlite")
        wave.cpu_outage_s = cpu_s(proc.pid) - cpu_down
        wave.outage_s = time.monotonic() - t_down
        wave.queued = sum(len(v) for v in waiting.values())
        wave.endpoints_with_queue = len(waiting)

        cpu0 = cpu_s(proc.pid)
        t_up = time.monotonic()
        await csms.start()
        print(f"[wave N={n}] CSMS back ({wave.queued} messages queued)", flush=True)

        def accepted(s: str) -> bool:
            return any(t >= t_up for t in csms.boots[s])

        def replayed(s: str) -> bool:
            return waiting.get(s, set()) <= csms.received[s].keys()

        def done(s: str) -> bool:
            return accepted(s) and replayed(s)

        reconnect: dict[str, float] = {}
        replay: dict[str, float] = {}

        def progress() -> bool:
            for s in ids:
                if s not in reconnect and accepted(s):
                    reconnect[s] = next(b for b in csms.boots[s] if b >= t_up) - t_up
                if s not in replay and done(s):
                    # its Boot and the arrival of the last of its queued messages
                    last = max((csms.received[s][u] for u in waiting.get(s, ())), default=0.0)
                    replay[s] = max(reconnect[s] + t_up, last) - t_up
            return len(replay) == n

        try:
            await wait("wave", progress, wave_timeout,
                       lambda: f"{len(reconnect)}/{n} accepted, {len(replay)}/{n} replayed")
            wave.wave_s = max(replay.values())
        except TimeoutError:
            # Reported, not raised: a wave that does not end is the figure (the p50/p99 are
            # then over the endpoints that made it).
            wave.wave_s = time.monotonic() - t_up
            wave.incomplete = (f"INCOMPLETE after {wave.wave_s:.0f} s: {len(reconnect)}/{n} "
                               f"accepted, {len(replay)}/{n} replayed")
        wave.cpu_wave_s = cpu_s(proc.pid) - cpu0
        wave.peak_rss_mib = peak_rss_mib(proc.pid)
        wave.reconnect_s = list(reconnect.values())
        wave.replayed_s = list(replay.values())
        if proc.returncode is not None:
            raise RuntimeError(f"the gateway exited ({proc.returncode}); see {tmp}")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(20):
                await proc.wait()
        except TimeoutError:
            proc.kill()
        await csms.stop()
        pcs.stop()
        log.close()
    return wave


async def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--endpoints", type=int, default=1000, help="gateway endpoints (1000)")
    ap.add_argument("--trust", choices=("system", "file", "store"), default="system",
                    help="where the CSMS's CA comes from (see above; default system)")
    ap.add_argument("--outage", type=float, default=10.0, help="seconds the CSMS is down (10)")
    ap.add_argument("--sample", type=int, default=3,
                    help="meter_sample_interval_s: MeterValues queued per outage (5)")
    ap.add_argument("--wave-timeout", type=float, default=120.0,
                    help="give up on a wave after this many seconds and report it (120)")
    ap.add_argument("--runs", type=int, default=1, help="waves, each with a fresh gateway")
    ap.add_argument("--gateway-python", default=sys.executable, metavar="PYTHON",
                    help="interpreter that runs the gateway, e.g. another worktree's venv")
    args = ap.parse_args(argv)
    waves = []
    for i in range(args.runs):
        wave = await run_wave(args.endpoints, args.trust, args.outage, args.sample,
                              args.gateway_python, args.wave_timeout)
        print(f"run {i + 1}/{args.runs}: " + wave.report(), flush=True)
        waves.append(wave)
    if len(waves) > 1:
        print("runs: wave s " + ", ".join(f"{w.wave_s:.2f}" for w in waves)
              + " | CPU s in the wave " + ", ".join(f"{w.cpu_wave_s:.2f}" for w in waves)
              + " | CPU s in the outage " + ", ".join(f"{w.cpu_outage_s:.2f}" for w in waves))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(asyncio.run(main()))
