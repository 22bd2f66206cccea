"""2.0.1 G Availability: ChangeAvailability, and protection trips as NotifyEvent.

StatusNotification is the endpoint's (``Endpoint201.send_status``, shared reporter in ``link``).
Availability itself is the domain's (``Station.set_availability``: Accepted, Scheduled while a
session runs, Rejected); this module only maps EVSEs onto it.

Trips: every trip cause the control core reports (and a lost PCS link, and a dead control thread) is
a device-model event on the component/variable ``alarms.py`` names for it, the same table 1.6 takes
its error codes from. A cause that appears is sent as trigger Alerting; when it goes, the same
component/variable is sent again with ``cleared: true``. The notifications are queued in the
journal's outbox, so they reach the CSMS in order with the transaction messages, after an outage
too.
"""

from __future__ import annotations

import itertools
import logging
import time
from typing import Any, Final

from bess_gateway.domain import alarms
from bess_gateway.domain.station import CONTROL_FAILED
from bess_gateway.domain.timefmt import iso
from bess_gateway.journal import JournalError
from bess_gateway.ocpp.framing import new_unique_id
from bess_gateway.ocpp.v201.context import Context
from bess_gateway.ocpp.v201.status import CONNECTOR_ID, connector_of

log = logging.getLogger("bess_gateway.ocpp.v201")

NOTIFY_EVENT: Final = "NotifyEvent"
LINK_LOST: Final = "pcs_link_lost"
# The reading that shows a measurement-type cause (actualValue); scale turns it into the unit.
_READINGS: Final[dict[str, tuple[str, float]]] = {
    "cell_over_voltage": ("cell_v_max_mv", 0.001),
    "cell_under_voltage": ("cell_v_min_mv", 0.001),
    "over_temperature": ("cell_temp_max_c", 1.0),
    "under_temperature": ("cell_temp_min_c", 1.0),
    "over_current": ("dc_current_a", 1.0),
    "dc_over_voltage": ("dc_voltage_v", 1.0),
    "dc_under_voltage": ("dc_voltage_v", 1.0),
}


def active_causes(ctx: Context) -> set[str]:
    """The trip causes in force now (a lost PCS link is one even when the core says no trip, and
    so is a dead control thread)."""
    view = ctx.station.view
    causes = set(view.trip_causes)
    if not view.link_up:
        causes.add(LINK_LOST)
    if view.control_failure is not None:
        causes.add(CONTROL_FAILED)
    return causes


class AlarmEvents:
    """Turns changes of the active trip causes into queued NotifyEvent messages."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.reported: set[str] = set()
        # Unique across restarts in practice: ids start from the clock, then count up.
        self._ids = itertools.count(int(time.time()) & 0x3FFFFFFF)

    def check(self) -> None:
        now = active_causes(self.ctx)
        raised, cleared = now - self.reported, self.reported - now
        if not raised and not cleared:
            return
        stamp = iso(self.ctx.station.now())
        events = [self._event(c, stamp, cleared=False) for c in sorted(raised)]
        events += [self._event(c, stamp, cleared=True) for c in sorted(cleared)]
        payload = {"generatedAt": stamp, "seqNo": 0, "tbc": False, "eventData": events}
        try:
            self.ctx.journal.outbox.enqueue(self.ctx.endpoint_id, NOTIFY_EVENT, payload, None,
                                     new_unique_id())
        except JournalError as e:
            # Not marked reported: the next change tries again with the whole difference.
            log.error("%s: NotifyEvent not queued: %s", self.ctx.endpoint_id, e)
            return
        self.reported = now
        self.ctx.outbox_wake.set()

    def _event(self, cause: str, stamp: str, *, cleared: bool) -> dict[str, Any]:
        report = alarms.report_for(cause)
        event: dict[str, Any] = {
            "eventId": next(self._ids),
            "timestamp": stamp,
            "trigger": "Alerting",
            "actualValue": self._actual(cause, cleared),
            "techCode": report.vendor_error_code[:50],
            "techInfo": report.description[:500],
            "eventNotificationType": "HardWiredNotification",
            "component": {"name": report.component},
            "variable": {"name": report.variable},
        }
        if cleared:
            event["cleared"] = True
        return event

    def _actual(self, cause: str, cleared: bool) -> str:
        reading = _READINGS.get(cause)
        if reading is not None:
            value = self.ctx.station.view.snapshot.get(reading[0])
            if value is not None:
                return f"{float(value) * reading[1]:g}"
        # Problem / Tripped are booleans in the device model.
        return "false" if cleared else "true"


def watch(ctx: Context) -> AlarmEvents:
    """Start reporting trips for this endpoint (once, at construction: trips are reported
    even when they happen before the first connection)."""
    watcher = ctx.v201.alarms
    if watcher is None:
        watcher = ctx.v201.alarms = AlarmEvents(ctx)
        ctx.station.on_change(watcher.check)
        watcher.check()
    return watcher


def handlers(ctx: Context) -> dict[str, Any]:
    station = ctx.station

    async def change_availability(p: dict[str, Any]) -> dict[str, Any]:
        operative = p["operationalStatus"] == "Operative"
        evse = p.get("evse")
        if evse is None:
            return {"status": station.set_availability(0, operative)}
        connector = connector_of(ctx, evse["id"])
        if not connector or evse.get("connectorId", CONNECTOR_ID) != CONNECTOR_ID:
            return {"status": "Rejected",
                    "statusInfo": {"reasonCode": "UnknownEvse"}}
        # The domain connector behind the EVSE id (v201.status).
        return {"status": station.set_availability(connector, operative)}

    return {"ChangeAvailability": change_availability}
