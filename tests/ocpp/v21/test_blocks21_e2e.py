"""The 2.0.1 functional blocks over 2.1, end to end (the demo CSMS on ocpp.v21 validates every
CALL we send against the 2.1 schemas; the suite schema-checks every frame before it leaves):
reservations, availability, local list and authorization, device model, reset, on the one
bidirectional EVSE. And a setpoint the core cannot meet is told to the CSMS."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from waiting import booted, until

from bess_gateway.demo.csms import CsmsServer
from bess_gateway.domain.timefmt import iso
from bess_gateway.sim.server import SimulatorThread
from v21.test_v2x_e2e import set_profile, start_tx, v2x_profile

_ids = itertools.count(1)


def token(text: str) -> dict[str, str]:
    return {"idToken": text, "type": "Central"}


async def test_reservation_availability_and_local_list_on_evse_1(
        gateway_factory, csms: CsmsServer) -> None:
    gw = await gateway_factory(1, ocpp="2.1")
    (sid,) = await booted(gw, csms)

    # H: a reservation on EVSE 1 holds it for its token; EVSE 2 does not exist.
    expiry = iso(datetime.now(UTC) + timedelta(minutes=10))
    after = csms.last_seq()
    r = await csms.call(sid, "ReserveNow", {"id": 1, "expiryDateTime": expiry,
                                            "idToken": token("ALICE"), "evseId": 1})
    assert r["status"] == "Accepted", r
    await csms.wait_for(sid, "StatusNotification",
                        lambda p: p["evseId"] == 1 and p["connectorStatus"] == "Reserved",
                        after=after)
    r = await csms.call(sid, "ReserveNow", {"id": 2, "expiryDateTime": expiry,
                                            "idToken": token("BOB"), "evseId": 2})
    assert r["status"] == "Rejected" and r["statusInfo"]["reasonCode"] == "UnknownEvse"
    r = await csms.call(sid, "RequestStartTransaction", {
        "idToken": token("BOB"), "remoteStartId": next(_ids), "evseId": 1})
    assert r["status"] == "Rejected"
    assert (await csms.call(sid, "CancelReservation", {"reservationId": 1}))["status"] == \
        "Accepted"

    # G: ChangeAvailability on EVSE 1 (and an unknown EVSE 2).
    after = csms.last_seq()
    r = await csms.call(sid, "ChangeAvailability", {"operationalStatus": "Inoperative",
                                                    "evse": {"id": 1}})
    assert r["status"] == "Accepted"
    await csms.wait_for(sid, "StatusNotification",
                        lambda p: p["evseId"] == 1 and p["connectorStatus"] == "Unavailable",
                        after=after)
    r = await csms.call(sid, "ChangeAvailability", {"operationalStatus": "Operative",
                                                    "evse": {"id": 2}})
    assert r["status"] == "Rejected"
    assert (await csms.call(sid, "ChangeAvailability", {
        "operationalStatus": "Operative", "evse": {"id": 1}}))["status"] == "Accepted"

    # D/C: the local list, and a start for a listed token.
    r = await csms.call(sid, "SendLocalList", {
        "versionNumber": 3, "updateType": "Full",
        "localAuthorizationList": [{"idToken": token("CAROL"),
                                    "idTokenInfo": {"status": "Accepted"}}]})
    assert r["status"] == "Accepted"
    assert (await csms.call(sid, "GetLocalListVersion", {}))["versionNumber"] == 3
    started = await start_tx(csms, sid)
    assert started["idToken"]["idToken"] == "TAG-1"

    # B: a reset ends the transaction and boots again (RemoteReset).
    after = csms.last_seq()
    assert (await csms.call(sid, "Reset", {"type": "Immediate"}))["status"] == "Accepted"
    ended = await csms.wait_for(sid, "TransactionEvent", lambda p: p["eventType"] == "Ended",
                                after=after, timeout=20)
    assert ended.payload["transactionInfo"]["stoppedReason"] == "ImmediateReset"
    boot = await csms.wait_for(sid, "BootNotification", after=after, timeout=30)
    assert boot.payload["reason"] == "RemoteReset"
    await until(lambda: gw.endpoints[sid].ctx.online, 20)


async def test_a_setpoint_the_core_cannot_meet_is_told(
        gateway_factory, csms: CsmsServer, sim: SimulatorThread) -> None:
    # The first NotifyChargingLimit after the setpoint must be its report. A PCS silent for the
    # suite's usual 400 ms (a busy machine starving the simulator's thread) trips the link, the
    # battery then allows 0 W and rightly says so first (the battery-limit report). With 5 s
    # a busy machine holds the last write instead, and the station cap stays the only limit.
    gw = await gateway_factory(1, ocpp="2.1", pcs_timeout_ms=5000)
    (sid,) = await booted(gw, csms)
    started = await start_tx(csms, sid)
    tx_id = started["transactionInfo"]["transactionId"]
    # The station cap (ChargingStationMaxProfile, ChargingOnly) is 30 kW; the setpoint asks 100.
    r = await set_profile(csms, sid, 0, v2x_profile(
        1, [{"startPeriod": 0, "limit": 30_000.0}], purpose="ChargingStationMaxProfile"))
    assert r == {"status": "Accepted"}, r
    after = csms.last_seq()
    r = await set_profile(csms, sid, 1, v2x_profile(
        5, [{"startPeriod": 0, "operationMode": "CentralSetpoint", "setpoint": -100_000.0}],
        purpose="TxProfile", transactionId=tx_id))
    assert r == {"status": "Accepted"}, r
    await until(lambda: sim.written.setpoint_w == 30_000, 20)
    told = await csms.wait_for(sid, "NotifyChargingLimit", after=after, timeout=10)
    (period,) = told.payload["chargingSchedule"][0]["chargingSchedulePeriod"]
    assert told.payload["evseId"] == 1
    assert period["operationMode"] == "CentralSetpoint" and period["setpoint"] == -30_000.0
    assert period["dischargeLimit"] == -30_000.0

    # The cap goes: the setpoint is met, and the CSMS hears the limit cleared.
    after = csms.last_seq()
    assert (await csms.call(sid, "ClearChargingProfile", {"chargingProfileId": 1}))[
        "status"] == "Accepted"
    await until(lambda: sim.written.setpoint_w == 100_000, 20)
    await csms.wait_for(sid, "ClearedChargingLimit", lambda p: p.get("evseId") == 1,
                        after=after, timeout=10)
