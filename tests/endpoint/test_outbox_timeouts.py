"""Issue 13 item 1: a stalled CSMS loses no transaction; a start it refuses is given up openly.

A timeout is not a refusal: 1.6 3.7.1 lets a charge point skip a transaction-related message only
when the Central System reports a "failure to process the message", and OCPP-J (1.6 and 2.0.1
part 4, CALLERROR) says a CSMS reports that with a CALLERROR. So a start left unanswered more
times than TransactionMessageAttempts (2.0.1 MessageAttempts) stays queued and is sent again
until the CSMS answers; then the CSMS gets the transaction, every meter value taken meanwhile and
the stop with the energy the PCS delivered. A start refused with CALLERRORs that many times is
given up: the session ends here, nothing else of that transaction is sent, and its energy is
counted as unattributed (metrics, /status).

The scripted CSMS (tests/scripted_csms.py) on a real WebSocket, both versions; the real simulator,
whose lifetime energy register is the reference for the energy; a real SQLite journal.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from scripted_csms import Got, ScriptedCsms, booted, scripted_csms, start_gateway
from waiting import until

from bess_gateway.gateway import Gateway
from bess_gateway.sim.server import SimulatorThread

CALL_TIMEOUT_S = 0.4  # the live link's MessageTimeout, short for the test
ATTEMPTS = 2
STALLS = ATTEMPTS + 1  # unanswered sends of the start: more than the attempts allow


@pytest.fixture
async def csms() -> AsyncIterator[ScriptedCsms]:
    async with scripted_csms() as server:
        yield server


@pytest.fixture
async def gateways(tmp_path: Path, sim: SimulatorThread,
                   csms: ScriptedCsms) -> AsyncIterator[Callable[..., Awaitable[Gateway]]]:
    running: list[Gateway] = []

    async def make(ocpp: str, **keys: Any) -> Gateway:
        gw = await start_gateway(tmp_path / "var", csms, sim.port, 1, sample_s=1, ocpp=ocpp,
                                 **keys)
        running.append(gw)
        return gw

    yield make
    for gw in running:
        async with asyncio.timeout(10):
            await gw.stop(drain_s=0)


def discharged_wh(sim: SimulatorThread) -> int:
    """The PCS's lifetime discharge register (whole Wh): the reference, outside the gateway."""
    words = sim.registers(119, 4)
    return int.from_bytes(b"".join(w.to_bytes(2, "big") for w in words), "big")


def register(event: dict[str, Any], context: str) -> int | None:
    """The energy register of a 2.0.1 TransactionEvent's meter values of `context` (Wh)."""
    for mv in event.get("meterValue") or []:
        for sv in mv.get("sampledValue") or []:
            measurand = str(sv.get("measurand", ""))
            if (sv.get("context") == context and measurand.startswith("Energy.Active.")
                    and measurand.endswith(".Register")):
                return math.floor(float(sv["value"]))
    return None


async def configure(gw: Gateway, sid: str) -> None:
    """Short retries for the test: the settings the CSMS would set (TransactionMessageAttempts
    / MessageAttempts, ...RetryInterval / MessageAttemptInterval) and a short MessageTimeout on
    the live link (its minimum as a setting is 5 s)."""
    settings = gw.stations[sid].settings
    settings.set("transaction_message_attempts", str(ATTEMPTS))
    settings.set("transaction_message_retry_interval_s", "1")
    rpc = gw.endpoints[sid].ctx.rpc
    assert rpc is not None
    rpc.call_timeout = CALL_TIMEOUT_S


async def remote_start(csms: ScriptedCsms, sid: str, ocpp: str, connector: int) -> None:
    if ocpp == "1.6":
        r = await csms.call(sid, "RemoteStartTransaction",
                            {"idTag": "TAG-1", "connectorId": connector})
    else:
        r = await csms.call(sid, "RequestStartTransaction", {
            "idToken": {"idToken": "TAG-1", "type": "Central"}, "evseId": connector,
            "remoteStartId": 7})
    assert r["status"] == "Accepted"


async def remote_stop(csms: ScriptedCsms, sid: str, ocpp: str, tx_id: int | str) -> None:
    action = "RemoteStopTransaction" if ocpp == "1.6" else "RequestStopTransaction"
    r = await csms.call(sid, action, {"transactionId": tx_id})
    assert r["status"] == "Accepted"


def starts(csms: ScriptedCsms, sid: str, ocpp: str) -> list[Got]:
    if ocpp == "1.6":
        return csms.of(sid, "StartTransaction")
    return [g for g in csms.of(sid, "TransactionEvent") if g.payload["eventType"] == "Started"]


def stops(csms: ScriptedCsms, sid: str, ocpp: str) -> list[Got]:
    if ocpp == "1.6":
        return csms.of(sid, "StopTransaction")
    return [g for g in csms.of(sid, "TransactionEvent") if g.payload["eventType"] == "Ended"]


def values(csms: ScriptedCsms, sid: str, ocpp: str) -> list[Got]:
    """The meter values of the session: 1.6 MeterValues, 2.0.1 Updated events."""
    if ocpp == "1.6":
        return csms.of(sid, "MeterValues")
    return [g for g in csms.of(sid, "TransactionEvent") if g.payload["eventType"] == "Updated"]


@pytest.mark.parametrize("ocpp", ["1.6", "2.0.1"])
async def test_a_start_left_unanswered_more_times_than_the_attempts_still_reaches_the_csms(
        gateways: Callable[..., Awaitable[Gateway]], csms: ScriptedCsms, sim: SimulatorThread,
        ocpp: str) -> None:
    gw = await gateways(ocpp)
    (sid,) = await booted(gw)
    await configure(gw, sid)
    journal = gw.journal
    assert journal is not None
    start_action = "StartTransaction" if ocpp == "1.6" else "TransactionEvent"
    csms.script[start_action] = ["silent"] * STALLS  # the link stays up; no answer comes
    e0 = discharged_wh(sim)

    await remote_start(csms, sid, ocpp, 1)
    # While the start waits, the session's meter values queue behind it (one a second).
    queued: set[str] = set()

    def stalled_through() -> bool:
        queued.update(i.unique_id for i in journal.outbox.pending(sid, limit=1000)
                      if i.action == "MeterValues" or i.payload.get("eventType") == "Updated")
        return len(starts(csms, sid, ocpp)) > STALLS

    await until(stalled_through, 30)
    sent = starts(csms, sid, ocpp)
    assert [g.answered for g in sent] == ["silent"] * STALLS + ["answer"]
    assert len({g.unique_id for g in sent}) == 1  # the same message, resent under its id
    # Not a flood either: resent after a back-off (interval x n, n capped at the attempts).
    assert all(b.at - a.at >= CALL_TIMEOUT_S + 0.9 for a, b in itertools.pairwise(sent))

    await until(lambda: journal.outbox.depth(sid) == 0, 15)  # what queued meanwhile went out
    if ocpp == "1.6":
        tx_id: int | str = csms.tx_ids[sent[0].unique_id]
    else:
        tx_id = sent[0].payload["transactionInfo"]["transactionId"]
    assert 1 in gw.stations[sid].transactions  # the session ran on throughout
    await remote_stop(csms, sid, ocpp, tx_id)
    await until(lambda: stops(csms, sid, ocpp) and journal.outbox.depth(sid) == 0, 15)
    await until(lambda: abs(sim.state.measured_w) < 1.0, 10)
    e1 = discharged_wh(sim)

    # Every meter value taken while the start waited reached the CSMS, with the transaction.
    delivered = values(csms, sid, ocpp)
    assert len(queued) >= 2 and queued <= {g.unique_id for g in delivered}
    if ocpp == "1.6":
        assert {g.payload.get("transactionId") for g in delivered
                if g.payload["connectorId"] == 1} == {tx_id}
    else:
        events = [g for g in csms.of(sid, "TransactionEvent")]
        assert {g.payload["transactionInfo"]["transactionId"] for g in events} == {tx_id}
        seq_nos = {g.payload["seqNo"] for g in events}
        assert seq_nos == set(range(len(seq_nos)))  # no event of the transaction missing
    # The stop carries the energy the PCS delivered (its register counts whole Wh).
    (stop,) = stops(csms, sid, ocpp)
    if ocpp == "1.6":
        billed = stop.payload["meterStop"] - sent[0].payload["meterStart"]
    else:
        end, begin = register(stop.payload, "Transaction.End"), register(sent[0].payload,
                                                                          "Transaction.Begin")
        assert end is not None and begin is not None
        billed = end - begin
    assert e1 - e0 > 20  # enough flowed for the comparison to mean something
    assert abs(billed - (e1 - e0)) <= 2, (billed, e1 - e0)
    assert gw.endpoints[sid].connects == 1  # all on one link: no reconnect hid the stall
    assert journal.abandoned.abandoned_totals() == {}


def unattributed(gw: Gateway, sid: str) -> tuple[float, float]:
    assert gw.metrics is not None
    reg = gw.metrics.registry
    return (reg.get_sample_value("bess_transactions_abandoned_total", {"endpoint": sid}) or 0.0,
            reg.get_sample_value("bess_energy_unattributed_wh_total",
                                 {"endpoint": sid, "connector": "1"}) or 0.0)


@pytest.mark.parametrize("ocpp", ["1.6", "2.0.1"])
async def test_a_start_refused_as_often_as_the_attempts_is_given_up_openly(
        gateways: Callable[..., Awaitable[Gateway]], csms: ScriptedCsms, sim: SimulatorThread,
        ocpp: str) -> None:
    gw = await gateways(ocpp, metrics_listen="127.0.0.1:0")
    (sid,) = await booted(gw)
    await configure(gw, sid)
    journal = gw.journal
    assert journal is not None
    start_action = "StartTransaction" if ocpp == "1.6" else "TransactionEvent"
    csms.script[start_action] = ["error"] * ATTEMPTS
    e0 = discharged_wh(sim)

    await remote_start(csms, sid, ocpp, 1)
    await until(lambda: starts(csms, sid, ocpp), 10)
    if ocpp == "2.0.1":
        # Here the session ends before the start is given up (the resend waits 3 s): its Ended
        # queues behind it, once some energy has flowed.
        gw.stations[sid].settings.set("transaction_message_retry_interval_s", "3")
        await until(lambda: discharged_wh(sim) - e0 >= 10, 10)
        await remote_stop(csms, sid, ocpp,
                          starts(csms, sid, ocpp)[0].payload["transactionInfo"]["transactionId"])
    # Given up after the last refusal: the session ends here (1.6: it was still running).
    await until(lambda: len(starts(csms, sid, ocpp)) == ATTEMPTS
                and 1 not in gw.stations[sid].transactions and journal.outbox.depth(sid) == 0, 15)
    await until(lambda: abs(sim.state.measured_w) < 1.0, 10)
    await until(lambda: unattributed(gw, sid)[1] > 0, 15)
    e1 = discharged_wh(sim)

    # Nothing of that transaction went out after its start: no orphaned meter values or stop.
    assert [g.answered for g in starts(csms, sid, ocpp)] == ["error"] * ATTEMPTS
    assert values(csms, sid, ocpp) == [] and stops(csms, sid, ocpp) == []
    # Said so: counted, and its energy (the PCS's reference) is the unattributed energy.
    abandoned, energy = unattributed(gw, sid)
    assert abandoned == 1.0
    assert e1 - e0 > 5 and abs(energy - (e1 - e0)) <= 2, (energy, e1 - e0)
    assert gw.metrics is not None
    (status,) = gw.metrics.status()["endpoints"]
    assert status["abandoned_transactions"] == 1
    assert status["unattributed_energy_wh"] == {"1": int(energy)}
    assert status["messages_given_up"] == {start_action: 1}
    assert gw.metrics.registry.get_sample_value(
        "bess_transaction_messages_given_up_total",
        {"endpoint": sid, "action": start_action}) == 1.0

    # The queue goes on: the next session reaches the CSMS as usual.
    await remote_start(csms, sid, ocpp, 1)
    await until(lambda: len(starts(csms, sid, ocpp)) == ATTEMPTS + 1
                and journal.outbox.depth(sid) == 0, 15)
    assert starts(csms, sid, ocpp)[-1].answered == "answer"
    assert unattributed(gw, sid) == (1.0, energy)


@pytest.mark.parametrize("ocpp", ["1.6", "2.0.1"])
async def test_off_schema_answers_to_transaction_messages(
        gateways: Callable[..., Awaitable[Gateway]], csms: ScriptedCsms, ocpp: str) -> None:
    """An off-schema answer is an answer (the CSMS got the message: no resend), except for a
    1.6 StartTransaction.conf without the transactionId the rest of the transaction needs: that
    one is a failed attempt. A readable transactionId is taken, an unreadable idTagInfo is no
    verdict on the idTag (the session runs on)."""
    gw = await gateways(ocpp)
    (sid,) = await booted(gw)
    await configure(gw, sid)
    journal = gw.journal
    assert journal is not None
    if ocpp == "1.6":
        csms.script["StartTransaction"] = ["invalid_no_id", "invalid"]
        csms.script["MeterValues"] = ["invalid"] * 100
        csms.script["StopTransaction"] = ["invalid"]
    else:
        csms.script["TransactionEvent"] = ["invalid"] * 100
    await remote_start(csms, sid, ocpp, 1)
    await until(lambda: len(values(csms, sid, ocpp)) >= 2 and journal.outbox.depth(sid) == 0, 15)
    sent = starts(csms, sid, ocpp)
    tx = gw.stations[sid].transactions[1]  # running: no verdict was read into the answer
    if ocpp == "1.6":
        assert [g.answered for g in sent] == ["invalid_no_id", "invalid"]
        assert sent[0].unique_id == sent[1].unique_id
        tx_id: int | str = csms.tx_ids[sent[0].unique_id]
        assert tx.transaction_id == str(tx_id)
    else:
        assert [g.answered for g in sent] == ["invalid"]
        tx_id = sent[0].payload["transactionInfo"]["transactionId"]
    await remote_stop(csms, sid, ocpp, tx_id)
    await until(lambda: stops(csms, sid, ocpp) and journal.outbox.depth(sid) == 0, 15)
    # Answered off the schema, every other message went out once: none was resent.
    rest = [g for g in csms.of(sid, "MeterValues", "StopTransaction", "TransactionEvent")
            if g.unique_id != sent[0].unique_id]
    assert all(g.answered == "invalid" for g in rest)
    assert len({g.unique_id for g in rest}) == len(rest)
    assert journal.abandoned.abandoned_totals().get(sid, {}).get("given_up", {}) == {}
