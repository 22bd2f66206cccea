"""What the stores hand out and take in (records, the outbox's retention classes) and the JSON
and time helpers they share. No SQL here."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any

import orjson

from bess_gateway.journal.db import JournalError


class Retention(IntEnum):
    """What the outbox may do with a queued message when it is over its disk budget."""

    ALWAYS = 0  # billing records (start, stop, transaction-end data): never dropped
    THIN = 1  # sampled meter values of a transaction: every other one may go, first/last stay
    EXPENDABLE = 2  # non-transaction messages (non-critical security events): oldest go first


@dataclass(frozen=True, slots=True)
class TxRecord:
    endpoint_id: str
    local_id: str
    connector: int
    id_tag_hash: str
    meter_start_wh: int
    started_at: str  # ISO-8601
    transaction_id: str | None = None  # the CSMS's (1.6) or our own (2.0.1) id, once known
    stopped: bool = False  # stopped locally; the stop message may still be in the outbox
    data: dict[str, Any] = field(default_factory=dict)  # version-specific extras (JSON)


@dataclass(frozen=True, slots=True)
class ReservationRecord:
    endpoint_id: str
    reservation_id: int
    connector: int
    id_tag_hash: str
    expiry: str  # ISO-8601
    parent_hash: str | None = None


@dataclass(frozen=True, slots=True)
class OutboxItem:
    seq: int
    endpoint_id: str
    action: str
    payload: dict[str, Any]
    local_tx_id: str | None
    unique_id: str
    attempts: int


def set_meter_stop(payload: dict[str, Any], meter_stop: int) -> None:
    """A StopTransaction's final register: `meterStop` and the energy register of its
    Transaction.End sample (taken with meterStop, so the two agree)."""
    payload["meterStop"] = int(meter_stop)
    for mv in payload.get("transactionData") or []:
        for sv in mv.get("sampledValue") or []:
            if (sv.get("context") == "Transaction.End" and sv.get("unit", "Wh") == "Wh"
                    and str(sv.get("measurand", "")).startswith("Energy.Active.")
                    and str(sv.get("measurand", "")).endswith(".Register")):
                sv["value"] = str(int(meter_stop))


def dumps(value: Any) -> str:
    try:
        return orjson.dumps(value).decode("utf-8")
    except TypeError as e:
        raise JournalError(f"cannot store as JSON: {e}") from e


def loads(text: str | bytes) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as e:
        raise JournalError(f"corrupt JSON in the journal: {e}") from e


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
