"""Reconnect back-off: the 2.0.1 rule (RetryBackOff*), for 1.6 too, against every failure class.

The schedule is tested pure (seeded random); then real gateways retry against real failing
servers: a refused port, a TCP listener that never answers the handshake, TLS with a certificate
from a CA the endpoint does not trust, and HTTP 401, 404 and 503 from a real WebSocket server.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import random
import socket
import ssl
import statistics
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from http import HTTPStatus
from pathlib import Path

import pytest
import trustme
from waiting import until
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from bess_gateway.config import Config, ControlConfig, PcsConfig
from bess_gateway.demo.csms import CsmsServer
from bess_gateway.demo.run import demo_config
from bess_gateway.domain.settings import Settings
from bess_gateway.endpoint.link import Backoff
from bess_gateway.gateway import Gateway
from bess_gateway.sim.server import SimulatorThread

# -- the schedule ---------------------------------------------------------------------------------


def test_schedule_doubles_up_to_repeat_times_plus_fresh_jitter() -> None:
    backoff = Backoff(2.0, 3.0, 2, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(6)]
    twin = random.Random(7)
    expected = [2.0 * 2 ** min(n, 2) + twin.uniform(0.0, 3.0) for n in range(6)]
    assert delays == pytest.approx(expected)
    for n, d in enumerate(delays):
        base = 2.0 * 2 ** min(n, 2)
        assert base <= d <= base + 3.0
    # After repeat_times doublings the wait stops growing, but its random part still varies.
    assert len({round(d, 6) for d in delays[2:]}) == 4
    backoff.reset()
    assert 2.0 <= backoff.next_delay() <= 5.0


def test_never_gives_up_and_stays_bounded() -> None:
    backoff = Backoff(3.0, 10.0, 6, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(10_000)]
    assert all(3.0 <= d <= 3.0 * 2**6 + 10.0 for d in delays)
    assert backoff.attempt == 10_000


def test_reads_the_endpoint_settings_at_every_attempt() -> None:
    settings = Settings({})
    assert (settings.int("retry_backoff_wait_minimum_s"), settings.int(
        "retry_backoff_random_range_s"), settings.int("retry_backoff_repeat_times")) == (3, 10, 6)
    backoff = Backoff(settings=settings, rng=random.Random(3))
    assert 3.0 <= backoff.next_delay() <= 13.0
    settings.set("retry_backoff_wait_minimum_s", "20")
    settings.set("retry_backoff_random_range_s", "0")
    assert backoff.next_delay() == 40.0  # second failure: one doubling, no jitter
    settings.set("retry_backoff_repeat_times", "0")
    assert backoff.next_delay() == 20.0


@pytest.mark.parametrize(("name", "bad"), [
    ("retry_backoff_wait_minimum_s", "0"),  # would spin on a dead link
    ("retry_backoff_random_range_s", "-1"),
    ("retry_backoff_repeat_times", "21"),
])
def test_settings_refuse_values_that_break_the_rule(name: str, bad: str) -> None:
    from bess_gateway.domain.settings import SettingError

    with pytest.raises(SettingError):
        Settings({}).set(name, bad)


async def test_1_6_exposes_the_2_0_1_names(gateway_factory, csms: CsmsServer) -> None:
    gw = await gateway_factory(1)
    sid = "DEMO-01"
    await csms.wait_for(sid, "BootNotification", timeout=20)
    await until(lambda: gw.endpoints[sid].booted.is_set(), 20)
    names = ["RetryBackOffWaitMinimum", "RetryBackOffRandomRange", "RetryBackOffRepeatTimes"]
    conf = await csms.call(sid, "GetConfiguration", {"key": names})
    assert {k["key"]: (k["value"], k["readonly"]) for k in conf["configurationKey"]} == {
        "RetryBackOffWaitMinimum": ("3", False), "RetryBackOffRandomRange": ("10", False),
        "RetryBackOffRepeatTimes": ("6", False)}
    for key, value, status in (("RetryBackOffWaitMinimum", "0", "Rejected"),
                               ("RetryBackOffWaitMinimum", "5", "Accepted"),
                               ("RetryBackOffRandomRange", "2", "Accepted"),
                               ("RetryBackOffRepeatTimes", "x", "Rejected")):
        r = await csms.call(sid, "ChangeConfiguration", {"key": key, "value": value})
        assert r["status"] == status, key
    # The endpoint's back-off follows at once and the values are in the journal.
    backoff = gw.endpoints[sid].backoff
    assert backoff.settings is gw.stations[sid].settings
    assert gw.journal is not None
    stored = gw.journal.settings.get_settings(sid)
    assert stored["retry_backoff_wait_minimum_s"] == "5"
    assert stored["retry_backoff_random_range_s"] == "2"


# -- real failing servers -------------------------------------------------------------------------

Attempts = dict[str, list[float]]  # endpoint id -> monotonic times of its failed attempts


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _station(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


class Failures(logging.Handler):
    """Times of the endpoints' "connection ... failed" log lines, per endpoint."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.times: Attempts = defaultdict(list)

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if "connection to " in text and " failed: " in text:
            self.times[str(record.args[0])].append(time.monotonic())  # type: ignore[index]


@pytest.fixture
def failures() -> Iterator[Failures]:
    handler = Failures()
    logger = logging.getLogger("bess_gateway.endpoint.link")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


class HttpRefusals:
    """A real WebSocket server that refuses every handshake with one HTTP status."""

    def __init__(self, status: HTTPStatus) -> None:
        self.status = status
        self.seen: Attempts = defaultdict(list)
        self.port = 0

    def _refuse(self, conn: ServerConnection, request: Request) -> Response:
        self.seen[_station(request.path)].append(time.monotonic())
        return conn.respond(self.status, f"{self.status.phrase}\n")

    async def _never(self, ws: ServerConnection) -> None:
        raise AssertionError("no handshake may succeed")

    def serve(self, **kwargs: object):
        return serve(self._never, "127.0.0.1", 0, process_request=self._refuse,
                     subprotocols=["ocpp1.6", "ocpp2.0.1"], **kwargs)  # type: ignore[arg-type]


class SilentListener:
    """Accepts TCP connections and never says a word: the handshake can only time out."""

    def __init__(self) -> None:
        self.seen: list[float] = []
        self._writers: list[asyncio.StreamWriter] = []

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.seen.append(time.monotonic())
        self._writers.append(writer)

    async def start(self) -> asyncio.Server:
        return await asyncio.start_server(self._accept, "127.0.0.1", 0)

    def close(self) -> None:
        for w in self._writers:
            w.close()


async def _gateway(tmp_path: Path, sim: SimulatorThread, urls: dict[str, str], *,
                   ca_file: Path | None = None, ocpp: str = "1.6") -> Gateway:
    cfg: Config = demo_config(tmp_path / "var", "ws://unused", sim.port, len(urls), ocpp=ocpp)
    cfg = dataclasses.replace(
        cfg, control=ControlConfig(),
        pcs=dataclasses.replace(PcsConfig(), port=sim.port, timeout_ms=400),
        endpoints=tuple(
            dataclasses.replace(ep, csms_url=url,
                                ca_file=ca_file if url.startswith("wss") else None)
            for ep, url in zip(cfg.endpoints, urls.values(), strict=True)))
    gw = Gateway(cfg)
    await gw.start()
    return gw


def _pace(gw: Gateway, minimum: int, random_range: int, repeat_times: int) -> None:
    # Gateway.start has not yielded since creating the endpoint tasks: no attempt failed yet.
    for station in gw.stations.values():
        station.settings.set("retry_backoff_wait_minimum_s", str(minimum))
        station.settings.set("retry_backoff_random_range_s", str(random_range))
        station.settings.set("retry_backoff_repeat_times", str(repeat_times))


def _record_delays(gw: Gateway) -> dict[str, list[float]]:
    """The back-off waits each endpoint draws from now on (its Backoff, as the link uses it).

    What the schedule says is checked on these; the wall clock only shows that an endpoint
    waited at least that long (on a busy machine it may wait longer, never shorter)."""
    delays: dict[str, list[float]] = {}
    for sid, endpoint in gw.endpoints.items():
        drawn = delays[sid] = []
        draw = endpoint.backoff.next_delay

        def recorded(draw: Callable[[], float] = draw, drawn: list[float] = drawn) -> float:
            delay = draw()
            drawn.append(delay)
            return delay

        endpoint.backoff.next_delay = recorded  # type: ignore[method-assign]
    return delays


# How much earlier than asked a loop timer may fire (clock granularity), in s.
TIMER_SLACK_S = 0.01


async def _stopping(gw: Gateway, body: Callable[[], Awaitable[None]]) -> None:
    try:
        await body()
    finally:
        async with asyncio.timeout(10):
            await gw.stop(drain_s=0)


OPEN_TIMEOUT_S = 0.5


async def test_every_failure_class_is_retried_with_the_configured_pacing(
        tmp_path: Path, sim: SimulatorThread, failures: Failures) -> None:
    trusted, untrusted = trustme.CA(), trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    untrusted.issue_cert("127.0.0.1").configure_cert(server_ctx)
    ca_file = tmp_path / "trusted-ca.pem"
    trusted.cert_pem.write_to_path(str(ca_file))

    refusals = {code: HttpRefusals(code) for code in (
        HTTPStatus.UNAUTHORIZED, HTTPStatus.NOT_FOUND, HTTPStatus.SERVICE_UNAVAILABLE)}
    tls = HttpRefusals(HTTPStatus.OK)  # never reached: the TLS handshake fails first
    silent = SilentListener()
    silent_server = await silent.start()
    async with (refusals[HTTPStatus.UNAUTHORIZED].serve() as s401,
                refusals[HTTPStatus.NOT_FOUND].serve() as s404,
                refusals[HTTPStatus.SERVICE_UNAVAILABLE].serve() as s503,
                tls.serve(ssl=server_ctx) as stls):
        def port(server: object) -> int:
            return int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]

        urls = {
            "refused": f"ws://127.0.0.1:{_free_port()}/ocpp",
            "timeout": f"ws://127.0.0.1:{port(silent_server)}/ocpp",
            "tls": f"wss://127.0.0.1:{port(stls)}/ocpp",
            "401": f"ws://127.0.0.1:{port(s401)}/ocpp",
            "404": f"ws://127.0.0.1:{port(s404)}/ocpp",
            "503": f"ws://127.0.0.1:{port(s503)}/ocpp",
        }
        gw = await _gateway(tmp_path, sim, urls, ca_file=ca_file)
        ids = dict(zip(urls, gw.endpoints, strict=True))  # failure class -> endpoint id
        _pace(gw, minimum=1, random_range=1, repeat_times=1)  # waits 1..2 s, then 2..3 s
        delays = _record_delays(gw)
        gw.endpoints[ids["timeout"]].open_timeout_s = OPEN_TIMEOUT_S

        async def body() -> None:
            await until(lambda: all(len(failures.times[i]) >= 4 for i in ids.values()), 25)
            for kind, sid in ids.items():
                # The waits drawn: minimum * 2**min(n, repeat_times) + 0..random_range.
                drawn = delays[sid][:3]
                lows = [1.0, 2.0, 2.0]
                assert len(drawn) == 3
                assert all(low <= d <= low + 1.0 for d, low in zip(drawn, lows, strict=True)), (
                    kind, drawn)
                # ... and waited: attempt k+1 fails at least wait k after attempt k failed (a
                # timeout attempt lasts OPEN_TIMEOUT_S besides).
                t = failures.times[sid]
                took = OPEN_TIMEOUT_S if kind == "timeout" else 0.0
                gaps = [b - a for a, b in itertools.pairwise(t)][:3]
                for gap, wait in zip(gaps, drawn, strict=True):
                    assert gap >= wait + took - TIMER_SLACK_S, (kind, gaps, drawn)
                assert not gw.endpoints[sid].booted.is_set()
            # The attempts really reached the servers (the refused port has no server).
            for code, server in refusals.items():
                sid = ids[str(code.value)]
                assert len(server.seen[sid]) >= 4, code
            assert len(silent.seen) >= 4
            assert not tls.seen  # TLS failed before any HTTP request was made

        try:
            await _stopping(gw, body)
        finally:
            silent.close()
            silent_server.close()


async def test_twenty_endpoints_failing_together_do_not_retry_in_lockstep(
        tmp_path: Path, sim: SimulatorThread) -> None:
    server = HttpRefusals(HTTPStatus.SERVICE_UNAVAILABLE)
    async with server.serve() as s503:
        url = f"ws://127.0.0.1:{s503.sockets[0].getsockname()[1]}/ocpp"
        gw = await _gateway(tmp_path, sim, {f"e{i}": url for i in range(20)})
        _pace(gw, minimum=1, random_range=4, repeat_times=0)
        delays = _record_delays(gw)

        async def body() -> None:
            await until(lambda: len(server.seen) == 20
                        and all(len(t) >= 3 for t in server.seen.values()), 20)
            # All 20 failed together; each waits 1 s + its own random 0..4 s before the next
            # attempt, so the attempts spread out instead of coming in lockstep.
            for k in (0, 1):
                kth = sorted(d[k] for d in delays.values())
                assert all(1.0 <= d <= 5.0 for d in kth), kth
                spread = kth[-1] - kth[0]
                assert spread > 1.5, (k, spread)  # uniform 0..4 s: 20 draws almost never < 1.5
                assert len({int(x * 5) for x in kth}) >= 8  # >= 8 distinct 200 ms slots
                assert statistics.pstdev(kth) > 0.5
            # ... and each endpoint waited what it drew before its next attempt.
            for sid, t in server.seen.items():
                for gap, wait in zip(itertools.pairwise(t), delays[sid][:2], strict=False):
                    assert gap[1] - gap[0] >= wait - TIMER_SLACK_S, (sid, t, delays[sid])
            # No endpoint gave up: every one keeps coming.
            counts = {sid: len(t) for sid, t in server.seen.items()}
            await until(lambda: all(len(server.seen[s]) > counts[s] for s in counts), 15)

        await _stopping(gw, body)


async def test_a_2_0_1_endpoint_backs_off_the_same_way(
        tmp_path: Path, sim: SimulatorThread) -> None:
    server = HttpRefusals(HTTPStatus.SERVICE_UNAVAILABLE)
    async with server.serve() as s503:
        url = f"ws://127.0.0.1:{s503.sockets[0].getsockname()[1]}/ocpp"
        gw = await _gateway(tmp_path, sim, {"a": url, "b": url}, ocpp="2.0.1")
        _pace(gw, minimum=1, random_range=1, repeat_times=1)
        delays = _record_delays(gw)

        async def body() -> None:
            await until(lambda: len(server.seen) == 2
                        and all(len(t) >= 3 for t in server.seen.values()), 20)
            for sid, t in server.seen.items():
                drawn = delays[sid][:2]
                assert 1.0 <= drawn[0] <= 2.0 and 2.0 <= drawn[1] <= 3.0, drawn
                gaps = [b - a for a, b in itertools.pairwise(t)][:2]
                assert all(gap >= wait - TIMER_SLACK_S
                           for gap, wait in zip(gaps, drawn, strict=True)), (gaps, drawn)

        await _stopping(gw, body)
