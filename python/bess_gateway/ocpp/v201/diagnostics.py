"""2.0.1 N Diagnostics: GetLog + LogStatusNotification, CustomerInformation (the GDPR path).

GetLog is the one implementation 1.6's security extension uses too (``log_requests``).

CustomerInformation (N09 report, N10 clear) about an idToken: the gateway holds idTokens only as
keyed hashes (the local list, the authorization cache, reservations, transaction records) and,
sealed, in queued messages not yet delivered. The report lists what this endpoint holds for the
token; clearing forgets the token on every endpoint of the requester's operator, as ``bess-gateway
forget-idtag`` does gateway-wide (``Journal.forget_id_tag``: the erasure concerns the person,
whichever of the operator's endpoints saw them; another operator's records are its own to keep
or clear, and the counts reported name nothing of them, docs/security.md); queued messages
still carrying it are the CSMS's transaction record and are kept (reported as such). A
customerIdentifier or customerCertificate is nothing the gateway
stores: the answer is Accepted and the report says no data is held. The result goes out as
NotifyCustomerInformation parts (seqNo from 0, tbc on all but the last), after the answer.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any, Final

from bess_gateway.domain.timefmt import iso
from bess_gateway.endpoint import log_requests
from bess_gateway.endpoint.link import Context
from bess_gateway.journal import JournalError
from bess_gateway.ocpp.errors import CallErrorReceived
from bess_gateway.ocpp.rpc import Reply

log = logging.getLogger("bess_gateway.ocpp.v201")

NOTIFY: Final = "NotifyCustomerInformation"
PART_CHARS: Final = 512  # NotifyCustomerInformationRequest.data maxLength
_QUEUE_SCAN: Final = 100_000  # queued messages looked through for the token (all, in practice)


def _held(ctx: Context, token: str) -> list[str]:
    """What this endpoint's journal holds about the token, one line per item, no clear value."""
    j, eid = ctx.journal, ctx.endpoint_id
    h = j.hash_id_tag(token)
    lines: list[str] = []
    entry = j.auth.auth_list_entry(eid, h)
    if entry is not None:
        lines.append(f"Local authorization list entry: status {entry.status}"
                     + (f", expires {iso(entry.expiry)}" if entry.expiry else "")
                     + (", with a group" if entry.parent_hash else "") + ".")
    entry = j.auth.auth_cache_entry(eid, h)
    if entry is not None:
        lines.append(f"Authorization cache entry: status {entry.status}"
                     + (f", expires {iso(entry.expiry)}" if entry.expiry else "") + ".")
    for r in j.reservations.reservations(eid):
        if r.id_tag_hash == h:
            lines.append(f"Reservation {r.reservation_id} on EVSE {r.connector} until "
                         f"{r.expiry}.")
    for rec in j.transactions.open_transactions(eid):
        if rec.id_tag_hash == h:
            state = "stopped, not yet acknowledged" if rec.stopped else "open"
            lines.append(f"Transaction {rec.transaction_id or rec.local_id} on EVSE "
                         f"{rec.connector} started {rec.started_at} ({state}).")
    queued = sum(1 for item in j.outbox.pending(eid, limit=_QUEUE_SCAN) if _carries(item.payload,
                                                                                    token))
    if queued:
        lines.append(f"{queued} queued message(s) not yet delivered to the CSMS carry it.")
    return lines


def _carries(payload: dict[str, Any], token: str) -> bool:
    id_token = payload.get("idToken")
    if isinstance(id_token, dict):
        return id_token.get("idToken") == token
    return payload.get("idTag") == token


def _parts(text: str) -> list[str]:
    return [text[i:i + PART_CHARS] for i in range(0, len(text), PART_CHARS)] or [""]


def handlers(ctx: Context) -> dict[str, Any]:
    async def get_log(p: dict[str, Any]) -> Any:
        return await log_requests.get_log(ctx, p)

    async def trigger_log_status(evse: int | None) -> None:
        await log_requests.send_status(ctx, evse)

    async def customer_information(p: dict[str, Any]) -> Any:
        request_id, report, clear = p["requestId"], p["report"], p["clear"]
        id_token = p.get("idToken")
        if id_token is None and p.get("customerIdentifier") is None and p.get(
                "customerCertificate") is None:
            return {"status": "Invalid", "statusInfo": {"reasonCode": "NoCustomer"}}
        if not report and not clear:
            return {"status": "Rejected", "statusInfo": {"reasonCode": "NothingRequested"}}
        token = str(id_token["idToken"]) if id_token is not None else None
        lines: list[str] = []
        try:
            held = _held(ctx, token) if token is not None else []
            if report:
                lines += held or ["No data is held for this customer."]
            if clear and token is not None:
                counts = ctx.journal.auth.forget_id_tag(token, endpoints=ctx.operator_endpoints)
                removed = sum(v for k, v in counts.items() if k not in ("undelivered",))
                lines.append(f"Cleared: {removed} stored item(s) removed.")
                if counts.get("undelivered"):
                    lines.append(f"{counts['undelivered']} queued transaction message(s) keep "
                                 "it until the CSMS has them.")
            elif clear:
                lines.append("Cleared: nothing was held.")
        except JournalError as e:
            log.error("%s: CustomerInformation %s failed: %s", ctx.endpoint_id, request_id, e)
            return {"status": "Rejected", "statusInfo": {"reasonCode": "InternalError"}}
        if clear and token is not None:
            log.info("%s: CustomerInformation %s: data of an idToken cleared", ctx.endpoint_id,
                     request_id)
        parts = _parts(" ".join(lines))

        async def notify() -> None:
            generated = iso(datetime.now(UTC))
            for seq, data in enumerate(parts):
                try:
                    await ctx.call(NOTIFY, {"data": data, "seqNo": seq,
                                            "tbc": seq < len(parts) - 1,
                                            "generatedAt": generated, "requestId": request_id})
                except (CallErrorReceived, TimeoutError) as e:
                    log.warning("%s: NotifyCustomerInformation %s failed: %s", ctx.endpoint_id,
                                request_id, e)
                    return

        return Reply({"status": "Accepted"}, notify)

    ctx.triggers["LogStatusNotification"] = trigger_log_status
    return {"GetLog": get_log, "CustomerInformation": customer_information}
