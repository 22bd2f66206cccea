"""Security events (Security Whitepaper, "Security Events" list; 2.0.1 uses the same names).

Every event is logged to ``bess_gateway.security``. Events are then queued in the journal's
outbox as SecurityEventNotification: the whitepaper requires them to reach the CSMS even when
they happen offline, and the outbox already gives durability, order and at-least-once delivery
after the next accepted boot. They are not transaction messages (no transactionId), so they never
wait for a StartTransaction; they share the queue's order with transaction messages, which keeps
"what happened first" visible to the CSMS.

Decision: all whitepaper events are sent, not only those it marks critical, because the issue
asks for InvalidCentralSystemCertificate and ReconfigurationOfSecurityParameters to be delivered.
Events that repeat while nothing can be delivered (a TLS or auth failure on every reconnect) are
coalesced: one of a type waits in the queue at a time, so an outage cannot fill the disk.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from bess_gateway.domain.timefmt import iso
from bess_gateway.journal import Journal, JournalError, Retention
from bess_gateway.ocpp.framing import new_unique_id

log = logging.getLogger("bess_gateway.security")

ACTION = "SecurityEventNotification"

# The whitepaper's events, and whether it calls them critical.
EVENTS: dict[str, bool] = {
    "FirmwareUpdated": True,
    "FailedToAuthenticateAtCentralSystem": False,
    "CentralSystemFailedToAuthenticate": False,
    "SettingSystemTime": True,
    "StartupOfTheDevice": True,
    "ResetOrReboot": True,
    "SecurityLogWasCleared": True,
    "ReconfigurationOfSecurityParameters": False,
    "MemoryExhaustion": True,
    "InvalidMessages": False,
    "AttemptedReplayAttacks": False,
    "TamperDetectionActivated": True,
    "InvalidFirmwareSignature": False,
    "InvalidFirmwareSigningCertificate": False,
    "InvalidCentralSystemCertificate": False,
    "InvalidChargePointCertificate": False,
    "InvalidTLSVersion": False,
    "InvalidTLSCipherSuite": False,
}

# 2.0.1 renamed the events that named the Central System or the Charge Point (Part 2,
# appendix "Security Events"); the others keep their 1.6 names. Callers use the 1.6 names.
NAMES_201: dict[str, str] = {
    "FailedToAuthenticateAtCentralSystem": "FailedToAuthenticateAtCsms",
    "CentralSystemFailedToAuthenticate": "CsmsFailedToAuthenticate",
    "InvalidCentralSystemCertificate": "InvalidCsmsCertificate",
    "InvalidChargePointCertificate": "InvalidChargingStationCertificate",
}


def name_for(version: str, event_type: str) -> str:
    """The event's name in an OCPP version."""
    return NAMES_201.get(event_type, event_type) if version in ("2.0.1", "2.1") else event_type


# Events that can recur on every reconnect attempt: at most one of each waits in the outbox.
_RECURRING = ("FailedToAuthenticateAtCentralSystem", "InvalidCentralSystemCertificate",
              "InvalidTLSVersion", "InvalidTLSCipherSuite", "InvalidChargePointCertificate")
COALESCED = frozenset({*_RECURRING, *(NAMES_201.get(e, e) for e in _RECURRING)})

# Expected in normal operation (every start, reset, CSMS reconfiguration): logged at INFO, so a
# 1000-endpoint start does not fill the log with warnings.
ROUTINE = frozenset({"StartupOfTheDevice", "ResetOrReboot", "ReconfigurationOfSecurityParameters",
                     "FirmwareUpdated", "SettingSystemTime"})


def record(
    journal: Journal,
    endpoint_id: str,
    event_type: str,
    tech_info: str | None = None,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    send: bool = True,
) -> bool:
    """Log the event and queue its notification; False if it was coalesced or not stored.

    `send=False`: logged only (the CSMS said it does not implement the notification)."""
    detail = f": {tech_info}" if tech_info else ""
    if not send:
        level = logging.INFO if event_type in ROUTINE else logging.WARNING
        log.log(level, "%s: security event %s%s (not sent: the CSMS does not implement %s)",
                endpoint_id, event_type, detail, ACTION)
        return False
    payload: dict[str, str] = {"type": event_type[:50], "timestamp": iso(now())}
    if tech_info:
        payload["techInfo"] = tech_info[:255]
    try:
        if event_type in COALESCED and any(
                p.get("type") == event_type for p in journal.outbox.queued_payloads(endpoint_id,
                                                                                    ACTION)):
            log.info("%s: security event %s again%s (one is already queued)", endpoint_id,
                     event_type, detail)
            return False
        level = logging.INFO if event_type in ROUTINE else logging.WARNING
        log.log(level, "%s: security event %s%s", endpoint_id, event_type, detail)
        # Over the outbox's disk budget, non-critical events may go (they stay in security.log);
        # critical ones are kept like billing records (docs/operations.md, "Offline queue").
        retention = Retention.ALWAYS if EVENTS.get(event_type) else Retention.EXPENDABLE
        journal.outbox.enqueue(endpoint_id, ACTION, payload, None, new_unique_id(), retention)
    except JournalError as e:
        # Logged here at least; losing its notification must not take the endpoint down.
        log.error("%s: security event %s not queued: %s", endpoint_id, event_type, e)
        return False
    return True
