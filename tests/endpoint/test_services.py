"""An endpoint's services (bess_gateway.endpoint.services, settling, link.merge_handlers): what each
version hands them at construction decides what they do; no registry fills in the rest."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bess_gateway.control import ControlCore
from bess_gateway.domain.settings import Settings
from bess_gateway.domain.station import CoreView, Station
from bess_gateway.endpoint import settling
from bess_gateway.endpoint.link import merge_handlers
from bess_gateway.endpoint.settling import Settling
from bess_gateway.gateway import STOP_FORMATS, tx_record
from bess_gateway.journal import Journal
from bess_gateway.ocpp.v16 import transactions as tx16
from bess_gateway.ocpp.v201 import transactions as tx201

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
# A 1.6 stop message (StopTransaction.req) and a 2.0.1 one (TransactionEvent Ended), each with
# the register 1000 Wh, as the OCPP specifications shape them.
STOP_16 = {"transactionId": 7, "meterStop": 1000, "timestamp": "2026-03-02T12:00:00Z",
           "reason": "Local"}
ENDED_201 = {"eventType": "Ended", "timestamp": "2026-03-02T12:00:00Z",
             "triggerReason": "StopAuthorized", "seqNo": 3,
             "transactionInfo": {"transactionId": "L1", "stoppedReason": "Local"},
             "meterValue": [{"timestamp": "2026-03-02T12:00:00Z", "sampledValue": [
                 {"value": 1000.0, "context": "Transaction.End",
                  "measurand": "Energy.Active.Import.Register", "unitOfMeasure": {"unit": "Wh"}}]}]}
UPDATED_201 = {**ENDED_201, "eventType": "Updated", "triggerReason": "MeterValuePeriodic"}


@pytest.fixture
def station(tmp_path: Path) -> Iterator[tuple[Station, Journal]]:
    journal = Journal(tmp_path / "j.sqlite")
    st = Station("CP-1", 0, core=ControlCore(), view=CoreView(), settings=Settings({}),
                 session_max_w=150_000.0, tx_store=journal.transactions, make_record=tx_record,
                 hash_id_tag=journal.hash_id_tag, clock=lambda: T0)
    try:
        yield st, journal
    finally:
        journal.close()


def test_merged_handler_tables_refuse_an_action_two_blocks_name() -> None:
    async def a(_p: dict[str, Any]) -> dict[str, Any]:
        return {}

    async def b(_p: dict[str, Any]) -> dict[str, Any]:
        return {}

    assert merge_handlers({"Reset": a}, {"TriggerMessage": b}) == {"Reset": a,
                                                                    "TriggerMessage": b}
    with pytest.raises(ValueError, match="TriggerMessage"):
        merge_handlers({"TriggerMessage": a}, {"Reset": a}, {"TriggerMessage": b})


def test_settling_knows_the_stop_messages_of_the_version_that_built_it(
        station: tuple[Station, Journal]) -> None:
    st, journal = station
    v16 = Settling(st, journal, (tx16.STOP_FORMAT,))
    v201 = Settling(st, journal, (tx201.STOP_FORMAT,))
    assert v16.stop_register("StopTransaction", STOP_16) == (True, 1000)
    assert v16.stop_register("TransactionEvent", ENDED_201) == (False, None)
    assert v201.stop_register("TransactionEvent", ENDED_201) == (True, 1000)
    assert v201.stop_register("TransactionEvent", UPDATED_201) == (False, None)
    assert v201.stop_register("StopTransaction", STOP_16) == (False, None)


def test_a_crash_path_patch_reaches_either_versions_queued_stop(
        station: tuple[Station, Journal]) -> None:
    """The gateway patches a crash's cut stops before any endpoint exists: with every
    version's formats, whichever version queued the stop."""
    _, journal = station
    journal.outbox.enqueue("CP-1", "StopTransaction", dict(STOP_16), "L16", "u1")
    journal.outbox.enqueue("CP-2", "TransactionEvent", dict(UPDATED_201), "L201", "u2")
    journal.outbox.enqueue("CP-2", "TransactionEvent", dict(ENDED_201), "L201", "u3")
    settling.patch_stop(journal, "CP-1", "L16", 1234, STOP_FORMATS)
    settling.patch_stop(journal, "CP-2", "L201", 1234, STOP_FORMATS)
    assert [p["meterStop"] for p in journal.outbox.queued_of("CP-1", "L16", "StopTransaction")] == [
        1234]
    registers = [p["meterValue"][0]["sampledValue"][0]["value"]
                 for p in journal.outbox.queued_of("CP-2", "L201", "TransactionEvent")]
    assert registers == [1000.0, 1234.0]  # the Updated event keeps its reading
