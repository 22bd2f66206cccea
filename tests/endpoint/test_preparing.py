"""Issue 13 item 5: a connector a remote start took (Preparing) never stays so until a restart.

Each way the start can fail between the RemoteStart's Accepted and the session's begin: the
Accepted answer cannot be sent, the link drops while Authorize is on its way, the journal fails to
write the session's record, and no start at all within ConnectionTimeOut (1.6; 2.0.1
TxCtrlr.EVConnectionTimeOut). The scripted CSMS on a real WebSocket, both versions where the
version's handler is involved; the real simulator and SQLite journal. Faults at our own edges are
injected (a socket send that fails, a journal write that fails), as SQLite's tests do.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from scripted_csms import ScriptedCsms, booted, scripted_csms, start_gateway
from waiting import until
from websockets.exceptions import ConnectionClosed

from bess_gateway.domain.station import ConnectorStatus
from bess_gateway.gateway import Gateway
from bess_gateway.journal import JournalError
from bess_gateway.sim.server import SimulatorThread


@pytest.fixture
async def csms() -> AsyncIterator[ScriptedCsms]:
    async with scripted_csms() as server:
        yield server


@pytest.fixture
async def gateways(tmp_path: Path, sim: SimulatorThread,
                   csms: ScriptedCsms) -> AsyncIterator[Callable[..., Awaitable[Gateway]]]:
    running: list[Gateway] = []

    async def make(ocpp: str) -> Gateway:
        gw = await start_gateway(tmp_path / "var", csms, sim.port, 1, sample_s=60, ocpp=ocpp)
        running.append(gw)
        return gw

    yield make
    for gw in running:
        async with asyncio.timeout(10):
            await gw.stop(drain_s=0)


def start_request(ocpp: str) -> tuple[str, dict[str, Any]]:
    if ocpp == "1.6":
        return "RemoteStartTransaction", {"idTag": "TAG-1", "connectorId": 1}
    return "RequestStartTransaction", {"idToken": {"idToken": "TAG-1", "type": "ISO14443"},
                                       "evseId": 1, "remoteStartId": 3}


def available(gw: Gateway, sid: str) -> bool:
    st = gw.stations[sid]
    return 1 not in st.preparing and st.status(1).status == ConnectorStatus.AVAILABLE


def start_messages(csms: ScriptedCsms, sid: str) -> list[Any]:
    return csms.of(sid, "StartTransaction", "TransactionEvent")


@pytest.mark.parametrize("ocpp", ["1.6", "2.0.1"])
async def test_an_accepted_answer_that_cannot_be_sent_releases_the_connector(
        gateways: Callable[..., Awaitable[Gateway]], csms: ScriptedCsms, ocpp: str) -> None:
    gw = await gateways(ocpp)
    (sid,) = await booted(gw)
    ws = gw.endpoints[sid]._ws
    assert ws is not None
    real_send = ws.send

    async def send(message: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(message, str) and message.startswith('[3,"csms-'):
            ws.transport.abort()  # the link breaks as our Accepted goes out
            raise ConnectionClosed(None, None)
        await real_send(message, *args, **kwargs)

    ws.send = send  # type: ignore[method-assign]
    action, payload = start_request(ocpp)
    with pytest.raises(TimeoutError):
        await csms.call(sid, action, payload)  # never answered: the link is gone
    # The CSMS never heard Accepted, so no start follows: the connector is released at once.
    await until(lambda: available(gw, sid), 5)
    await until(lambda: gw.endpoints[sid].booted.is_set(), 20)  # back on a new link
    assert start_messages(csms, sid) == [] and gw.stations[sid].transactions == {}


@pytest.mark.parametrize("ocpp", ["1.6", "2.0.1"])
async def test_a_link_lost_during_authorize_releases_the_connector(
        gateways: Callable[..., Awaitable[Gateway]], csms: ScriptedCsms, ocpp: str) -> None:
    gw = await gateways(ocpp)
    (sid,) = await booted(gw)
    gw.stations[sid].settings.set("authorize_remote_tx", "true")
    csms.script["Authorize"] = ["outage"]  # the CSMS goes down as the Authorize arrives
    action, payload = start_request(ocpp)
    r = await csms.call(sid, action, payload)
    assert r["status"] == "Accepted"
    await until(lambda: csms.of(sid, "Authorize"), 10)
    # The start died with the link (its job is the connection's): Available again at once.
    await until(lambda: available(gw, sid), 5)
    await csms.start()
    await until(lambda: gw.endpoints[sid].booted.is_set(), 20)
    assert gw.stations[sid].transactions == {}
    assert available(gw, sid)


@pytest.mark.parametrize("ocpp", ["1.6", "2.0.1"])
async def test_a_journal_failure_at_the_start_releases_the_connector(
        gateways: Callable[..., Awaitable[Gateway]], csms: ScriptedCsms, sim: SimulatorThread,
        ocpp: str) -> None:
    gw = await gateways(ocpp)
    (sid,) = await booted(gw)
    journal = gw.journal
    assert journal is not None
    real_put = journal.transactions.put_transaction
    failed: list[str] = []

    def put_transaction(rec: Any) -> None:
        if not failed:
            failed.append(rec.local_id)
            raise JournalError("disk I/O error (injected)")
        real_put(rec)

    journal.transactions.put_transaction = put_transaction  # type: ignore[method-assign]
    action, payload = start_request(ocpp)
    r = await csms.call(sid, action, payload)
    assert r["status"] == "Accepted"
    await until(lambda: failed, 10)
    await until(lambda: available(gw, sid), 5)
    # No session, no power, nothing queued: the record it could not write never existed.
    assert gw.stations[sid].transactions == {} and journal.outbox.depth(sid) == 0
    assert sim.written.setpoint_w == 0
    # The connector takes the next start as usual.
    r = await csms.call(sid, action, payload)
    assert r["status"] == "Accepted"
    await until(lambda: 1 in gw.stations[sid].transactions, 10)


async def test_no_start_within_the_connection_timeout_makes_the_connector_available(
        gateways: Callable[..., Awaitable[Gateway]], csms: ScriptedCsms) -> None:
    gw = await gateways("1.6")
    (sid,) = await booted(gw)
    settings = gw.stations[sid].settings
    settings.set("authorize_remote_tx", "true")
    settings.set("allow_offline_tx_for_unknown_id", "true")  # no answer would let it start
    settings.set("connection_timeout_s", "10")  # its minimum
    rpc = gw.endpoints[sid].ctx.rpc
    assert rpc is not None
    rpc.call_timeout = 12.0  # Authorize waits longer than the connection timeout
    csms.script["Authorize"] = ["silent"]
    r = await csms.call(sid, "RemoteStartTransaction", {"idTag": "TAG-1", "connectorId": 1})
    assert r["status"] == "Accepted"
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await until(lambda: gw.stations[sid].status(1).status == ConnectorStatus.PREPARING, 5)
    await until(lambda: available(gw, sid), 15)
    assert loop.time() - t0 >= 9.0  # not before ConnectionTimeOut
    # When Authorize then gives up, the offline rules would allow the start: too late, the
    # connector was given back, so no session begins on it.
    await until(lambda: rpc.stats.timeouts >= 1, 10)
    await asyncio.sleep(0.5)
    assert gw.stations[sid].transactions == {} and start_messages(csms, sid) == []
    assert available(gw, sid)
