"""2.1 R04 DER control: SetDERControl / GetDERControl / ClearDERControl, NotifyDERStartStop.

What the PCS can do decides what is accepted. The control core writes the PCS's active-power
setpoint only (generic map: the setpoint register; SunSpec: model 704 WSet), never its
grid-support models (SunSpec 705 volt-var, 706 volt-watt, 707-710 trip curves, 711 frequency
droop, 712 watt-var; 704's power-factor and var points): the SunSpec profile does not even lay
them out. So:

- LimitMaxDischarge is **applied**: it is an active-power limit. `pctMaxDischargePower` percent
  of the endpoint's rated discharge power (its session maximum, the EVSE's rating) caps the
  discharge leg of the 2.1 transaction (bess_gateway.ocpp.v21.v2x), as a schedule the core follows
  (start and end are boundaries). With a `powerMonitoringMustTrip` curve it is NotSupported (no
  trip curves), without `pctMaxDischargePower` Rejected (nothing to limit).
- Every other controlType is answered **NotSupported**, statusInfo UnsupportedParam with the
  reason (the control type and why); nothing is stored.

Storage: each endpoint's controls are a journal fact (durable before Accepted). Supersede rules
(R04): a control with the same controlId replaces the old one; a new control supersedes every
stored control of the same controlType and isDefault whose time window overlaps its own and
whose priority is lower (a larger number; 0 is highest): those ids are the answer's
supersededIds, and they stay stored with isSuperseded true (GetDERControl reports them) but do
not apply. At equal priority the newer one applies.

NotifyDERStartStop: a scheduled (isDefault false) control that starts applying (its startTime
reached, or at once without one) or stops (duration over, cleared, superseded) is reported, with
the ids it superseded on start. While the link is down the changes are compared at the reconnect
and the current state is reported then.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson

from bess_gateway.domain.timefmt import iso, parse_iso
from bess_gateway.journal import JournalError
from bess_gateway.ocpp.errors import CallErrorReceived, InvalidAnswer
from bess_gateway.ocpp.rpc import Reply
from bess_gateway.ocpp.v21 import v2x
from bess_gateway.ocpp.v21.context import Context

log = logging.getLogger("bess_gateway.ocpp.v21")

APPLIED = "LimitMaxDischarge"
# controlType -> the request field that carries it
FIELDS: dict[str, str] = {
    "EnterService": "enterService", "FreqDroop": "freqDroop", "Gradients": "gradient",
    "FixedPFAbsorb": "fixedPFAbsorb", "FixedPFInject": "fixedPFInject", "FixedVar": "fixedVar",
    "LimitMaxDischarge": "limitMaxDischarge",
}  # the rest (trip curves, VoltVar, VoltWatt, FreqWatt, WattPF, WattVar) use `curve`
WHY_NOT = {
    "EnterService": "enter-service voltage/frequency windows are PCS settings this gateway does "
                    "not write",
    "Gradients": "the ramp rate is the gateway-wide [control] ramp_kw_per_s, not per endpoint",
    "FreqDroop": "no frequency measurement or droop control is driven by this gateway",
}
CHECK_S = 1.0
_FACT = "der_controls:"  # journal fact key prefix (+ endpoint id)


@dataclass(slots=True)
class DerControl:
    control_id: str
    control_type: str
    is_default: bool
    body: dict[str, Any]  # the wire object of its type (limitMaxDischarge: {...})
    set_at: datetime
    superseded: bool = False
    superseded_ids: list[str] = field(default_factory=list)  # what it superseded when set

    @property
    def priority(self) -> int:
        return int(self.body.get("priority", 0))

    @property
    def start(self) -> datetime | None:
        text = self.body.get("startTime")
        return None if text is None else parse_iso(text)

    @property
    def end(self) -> datetime | None:
        start, duration = self.start, self.body.get("duration")
        if duration is None:
            return None
        return (start or self.set_at) + timedelta(seconds=float(duration))

    def window(self) -> tuple[datetime | None, datetime | None]:
        return self.start, self.end

    def active_at(self, at: datetime) -> bool:
        start, end = self.window()
        return (start is None or start <= at) and (end is None or at < end)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.control_id, "type": self.control_type, "default": self.is_default,
                "body": self.body, "set_at": self.set_at.isoformat(),
                "superseded": self.superseded, "superseded_ids": self.superseded_ids}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> DerControl:
        return cls(d["id"], d["type"], bool(d["default"]), dict(d["body"]),
                   datetime.fromisoformat(d["set_at"]), bool(d.get("superseded")),
                   list(d.get("superseded_ids") or []))


def _overlap(a: DerControl, b: DerControl) -> bool:
    (a0, a1), (b0, b1) = a.window(), b.window()
    return (a1 is None or b0 is None or b0 < a1) and (b1 is None or a0 is None or a0 < b1)


def supersedes(new: DerControl, old: DerControl) -> bool:
    """Whether `new` supersedes `old` (R04; see the module docstring). Pure."""
    return (new.control_type == old.control_type and new.is_default == old.is_default
            and new.control_id != old.control_id and new.priority < old.priority
            and _overlap(new, old))


def refusal(p: dict[str, Any]) -> tuple[str, str, str] | None:
    """(status, reasonCode, additionalInfo) for a SetDERControl we do not take; None: take it."""
    kind = p["controlType"]
    if kind != APPLIED:
        why = WHY_NOT.get(kind, "the PCS's grid-support models (SunSpec 704 PF/var, 705-712) "
                                "are not driven by this gateway: it writes active power only")
        return "NotSupported", "UnsupportedParam", f"{kind}: {why}"
    body = p.get(FIELDS[kind])
    if body is None:
        return "Rejected", "MissingParam", f"{kind} without {FIELDS[kind]}"
    if body.get("powerMonitoringMustTrip") is not None:
        return ("NotSupported", "UnsupportedParam",
                "powerMonitoringMustTrip: trip curves are not driven by this gateway")
    pct = body.get("pctMaxDischargePower")
    if pct is None or not 0.0 <= float(pct) <= 100.0:
        return "Rejected", "InvalidValue", "pctMaxDischargePower 0..100 is what is limited"
    return None


class DerStore:
    """One endpoint's DER controls, durable in the journal (a fact per endpoint)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.key = _FACT + ctx.endpoint_id
        text = ctx.journal.facts.get_fact(self.key)
        self.controls: dict[str, DerControl] = {}
        if text:
            for d in orjson.loads(text):
                c = DerControl.from_json(d)
                self.controls[c.control_id] = c

    def save(self) -> None:
        self.ctx.journal.facts.put_fact(self.key, orjson.dumps(
            [c.to_json() for c in self.controls.values()]).decode())

    def set(self, new: DerControl) -> list[str]:
        """Store `new` (JournalError: nothing changed); returns the ids it superseded."""
        before = {k: DerControl.from_json(c.to_json()) for k, c in self.controls.items()}
        gone = [c.control_id for c in self.controls.values()
                if not c.superseded and supersedes(new, c)]
        for cid in gone:
            self.controls[cid].superseded = True
        # An older, higher-priority control that overlaps supersedes the new one at once.
        new.superseded = any(supersedes(c, new) for c in self.controls.values()
                             if not c.superseded)
        new.superseded_ids = gone
        self.controls[new.control_id] = new
        try:
            self.save()
        except JournalError:
            self.controls = before
            raise
        return gone

    def clear(self, is_default: bool, control_type: str | None,
              control_id: str | None) -> list[str]:
        gone = [c.control_id for c in self.controls.values()
                if c.is_default == is_default
                and (control_type is None or c.control_type == control_type)
                and (control_id is None or c.control_id == control_id)]
        if gone:
            before = dict(self.controls)
            for cid in gone:
                del self.controls[cid]
            try:
                self.save()
            except JournalError:
                self.controls = before
                raise
        return gone

    def applying(self, at: datetime) -> list[DerControl]:
        return [c for c in self.controls.values() if not c.superseded and c.active_at(at)]

    def discharge_pct_at(self, at: datetime) -> float | None:
        """The LimitMaxDischarge in force at `at` (scheduled before default, then the highest
        priority, then the newest); None: none."""
        found = [c for c in self.applying(at) if c.control_type == APPLIED]
        if not found:
            return None
        best = min(found, key=lambda c: (c.is_default, c.priority, -c.set_at.timestamp()))
        return float(best.body["pctMaxDischargePower"])

    def boundaries(self) -> list[datetime]:
        return [t for c in self.controls.values() for t in c.window() if t is not None]


def open_store(ctx: Context) -> DerStore:
    """The endpoint's DER controls, restored from the journal and given to its smart charging
    (once, when the 2.1 endpoint is built: stored controls limit the battery from the start)."""
    found = DerStore(ctx)
    _attach(ctx, found)
    return found


def _attach(ctx: Context, s: DerStore) -> None:
    """Give the V2X smart charging the discharge cap of the controls (and reapply)."""
    b = ctx.services.smart_charging
    if isinstance(b, v2x.V2XSmartCharging):
        rated = ctx.station.session_max_w

        def cap(at: datetime) -> float | None:
            pct = s.discharge_pct_at(at)
            return None if pct is None else rated * pct / 100.0

        b.discharge_cap = cap
        b.cap_boundaries = s.boundaries
        b.apply()


def handlers(ctx: Context) -> dict[str, Any]:
    async def set_control(p: dict[str, Any]) -> dict[str, Any]:
        refused = refusal(p)
        if refused is not None:
            status, reason, info = refused
            log.info("%s: SetDERControl %s %s: %s", ctx.endpoint_id, p["controlId"], status,
                     info)
            return {"status": status, "statusInfo": {"reasonCode": reason,
                                                     "additionalInfo": info[:512]}}
        s = ctx.v21.der
        new = DerControl(str(p["controlId"]), p["controlType"], bool(p["isDefault"]),
                         dict(p[FIELDS[p["controlType"]]]), ctx.station.now())
        try:
            gone = s.set(new)
        except JournalError as exc:
            log.error("%s: DER control not stored: %s", ctx.endpoint_id, exc)
            return {"status": "Rejected", "statusInfo": {"reasonCode": "InternalError"}}
        ctx.services.smart_charging.apply()
        out: dict[str, Any] = {"status": "Accepted"}
        if gone:
            out["supersededIds"] = gone
        return out

    async def get_control(p: dict[str, Any]) -> Any:
        s = ctx.v21.der
        found = [c for c in s.controls.values()
                 if (p.get("isDefault") is None or c.is_default == p["isDefault"])
                 and (p.get("controlType") is None or c.control_type == p["controlType"])
                 and (p.get("controlId") is None or c.control_id == p["controlId"])]
        if not found:
            return {"status": "NotFound"}
        parts = [found[i:i + 24] for i in range(0, len(found), 24)]  # maxItems 24

        async def report() -> None:
            for i, part in enumerate(parts):
                await ctx.call("ReportDERControl", {
                    "requestId": p["requestId"], "tbc": i < len(parts) - 1,
                    "limitMaxDischarge": [{"id": c.control_id, "isDefault": c.is_default,
                                           "isSuperseded": c.superseded,
                                           "limitMaxDischarge": c.body} for c in part]})

        return Reply({"status": "Accepted"}, report)

    async def clear_control(p: dict[str, Any]) -> dict[str, Any]:
        try:
            gone = ctx.v21.der.clear(bool(p["isDefault"]), p.get("controlType"),
                                    p.get("controlId"))
        except JournalError as exc:
            log.error("%s: DER controls not cleared: %s", ctx.endpoint_id, exc)
            return {"status": "Rejected", "statusInfo": {"reasonCode": "InternalError"}}
        if not gone:
            return {"status": "NotFound"}
        ctx.services.smart_charging.apply()
        return {"status": "Accepted"}

    return {"SetDERControl": set_control, "GetDERControl": get_control,
            "ClearDERControl": clear_control}


async def start_stop_watch(ctx: Context) -> None:
    """The connection-long job behind NotifyDERStartStop (scheduled controls only)."""
    s = ctx.v21.der
    while True:
        now = ctx.station.now()
        active = {c.control_id: c for c in s.applying(now) if not c.is_default}
        reported = ctx.v21.der_active
        try:
            for cid in sorted(set(active) - reported):
                payload: dict[str, Any] = {"controlId": cid, "started": True,
                                           "timestamp": iso(now)}
                if active[cid].superseded_ids:
                    payload["supersededIds"] = active[cid].superseded_ids
                await ctx.call("NotifyDERStartStop", payload)
                reported.add(cid)
            for cid in sorted(reported - set(active)):
                await ctx.call("NotifyDERStartStop", {"controlId": cid, "started": False,
                                                      "timestamp": iso(now)})
                reported.discard(cid)
        except (CallErrorReceived, InvalidAnswer, TimeoutError) as exc:
            log.warning("%s: NotifyDERStartStop failed: %s", ctx.endpoint_id, exc)
        await asyncio.sleep(CHECK_S)
