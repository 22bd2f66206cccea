"""One charging-station identity as the battery sees it: two virtual connectors and their sessions.

This is the single domain model behind both OCPP versions. It owns the rules (which connector may
start, what status a connector is in, what a meter sample contains); the 1.6 and 2.0.1 layers only
translate its results into messages.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import IntEnum, StrEnum
from typing import Any, Protocol

from bess_gateway.domain import alarms
from bess_gateway.domain.reservations import (
    ConnectorFacts,
    Reservation,
    ReservationBook,
    ReserveStatus,
)
from bess_gateway.domain.settings import Settings
from bess_gateway.domain.transaction_facts import TxFacts

log = logging.getLogger(__name__)

DISCHARGE_CONNECTOR = 1
CHARGE_CONNECTOR = 2
CONNECTORS = (DISCHARGE_CONNECTOR, CHARGE_CONNECTOR)
CONTROL_FAILED = "control_failed"  # the cause of every status once the control thread died


class Direction(IntEnum):
    """Sign of the PCS setpoint a session contributes: + discharge, - charge."""

    DISCHARGE = 1
    CHARGE = -1


DIRECTION = {DISCHARGE_CONNECTOR: Direction.DISCHARGE, CHARGE_CONNECTOR: Direction.CHARGE}


class ConnectorStatus(StrEnum):
    # 1.6 names; 2.0.1 folds Preparing/Charging/Suspended*/Finishing into Occupied.
    AVAILABLE = "Available"
    PREPARING = "Preparing"
    CHARGING = "Charging"
    SUSPENDED_EVSE = "SuspendedEVSE"
    FINISHING = "Finishing"
    RESERVED = "Reserved"
    UNAVAILABLE = "Unavailable"
    FAULTED = "Faulted"


class StopReason(StrEnum):
    # Domain reasons; both versions' enums carry these names (2.0.1 adds a few of its own).
    LOCAL = "Local"
    REMOTE = "Remote"
    DEAUTHORIZED = "DeAuthorized"
    HARD_RESET = "HardReset"
    SOFT_RESET = "SoftReset"
    REBOOT = "Reboot"
    POWER_LOSS = "PowerLoss"
    UNLOCK_COMMAND = "UnlockCommand"
    OTHER = "Other"


class StartRefusal(StrEnum):
    UNKNOWN_CONNECTOR = "unknown connector"
    BUSY = "connector has a transaction"
    UNAVAILABLE = "connector is unavailable"
    FAULTED = "battery is faulted"
    RESERVED = "connector is reserved for another idTag"


@dataclass(frozen=True, slots=True)
class StatusReport:
    status: ConnectorStatus
    cause: str | None = None  # trip cause code when Faulted

    @property
    def alarm(self) -> alarms.AlarmReport | None:
        return alarms.report_for(self.cause) if self.cause else None


@dataclass(slots=True)
class Transaction:
    local_id: str
    connector: int
    id_tag: str
    id_tag_hash: str
    meter_start_wh: int
    started_at: datetime
    transaction_id: str | None = None  # the CSMS's (1.6) or our own (2.0.1) id, once known
    meter_stop_wh: int | None = None
    stopped_at: datetime | None = None
    stop_reason: StopReason | None = None
    end_sample: MeterSample | None = None  # taken with meter_stop_wh, so the two agree
    facts: TxFacts = field(default_factory=TxFacts)  # the version layers' memory (journaled)


# How long a connector may show Finishing while its stop message waits (settling, then the
# CSMS's answer): a message the CSMS never confirms must not keep it from Available for ever.
FINISHING_MAX = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class MeterSample:
    """One connector's reading. None = the PCS/BMS does not report it (never a made-up 0)."""

    timestamp: datetime
    connector: int
    energy_wh: float
    power_w: float
    current_a: float | None
    voltage_v: float | None
    soc_pct: float | None
    temperature_c: float | None
    offered_w: float | None = None  # the session's allocation (Power.Offered); None: no session
    # The measurand word of this connector's own energy and power, "Import" or "Export"; None:
    # by direction (connector 1 discharge Export, connector 2 charge Import). See
    # domain.metering and EndpointConfig.discharge_as.
    flow: str | None = None


class CorePort(Protocol):
    """What a station needs from the control core (bess_gateway.control.ControlCore)."""

    def start_session(self, meter_id: int, direction: int, cap_w: float,
                      group: int | None = None,
                      schedule: list[tuple[float, float]] | None = None) -> None: ...
    def stop_session(self, meter_id: int) -> None: ...
    def set_session_cap(self, meter_id: int, cap_w: float) -> None: ...
    def meter(self, meter_id: int) -> dict[str, Any]: ...
    def set_hold(self, hold_id: int, direction: int, power_w: float) -> None: ...
    def clear_hold(self, hold_id: int) -> None: ...


class ReservationStore(Protocol):
    """Where reservations are made durable (the journal, through the version layer)."""

    def save_reservation(self, endpoint_id: str, reservation: Reservation) -> None: ...
    def drop_reservation(self, endpoint_id: str, reservation_id: int) -> None: ...


class TxStore(Protocol):
    """Where open transactions are made durable (the journal's transactions store)."""

    def put_transaction(self, rec: Any) -> None: ...
    def finish_transaction(self, endpoint_id: str, local_id: str) -> None: ...
    def flush(self) -> None: ...  # commit what is written so far, now


class CoreView:
    """The latest control-core snapshot, shared by every station of a gateway.

    One snapshot per refresh instead of one per station keeps 1000 endpoints cheap.
    """

    def __init__(self) -> None:
        self.snapshot: dict[str, Any] = {}
        # Set once by the gateway when the control thread died (CONTROL_FAILED): from then on
        # every connector is Faulted, whatever the last snapshot said, until the process exits.
        self.control_failure: str | None = None

    @property
    def link_up(self) -> bool:
        return bool(self.snapshot.get("link_up", True))

    @property
    def trip_causes(self) -> list[str]:
        if not self.snapshot.get("tripped"):
            return []
        return list(self.snapshot.get("trip_causes") or ["pcs_fault_state"])

    def soc_allows(self, direction: int) -> bool:
        """Whether the SoC window lets power flow this way now (no snapshot yet: assume so)."""
        subs = self.snapshot.get("sub_limits") or {}
        key = "soc_discharge" if direction > 0 else "soc_charge"
        value = subs.get(key)
        return value is None or float(value) > 0.0

    def allocation(self, meter_id: int) -> float | None:
        allocs = self.snapshot.get("allocations") or {}
        value = allocs.get(meter_id)
        return None if value is None else float(value)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Station:
    """Sessions, availability and status of one endpoint's two virtual connectors."""

    def __init__(
        self,
        endpoint_id: str,
        index: int,
        *,
        core: CorePort,
        view: CoreView,
        settings: Settings,
        session_max_w: float,
        tx_store: TxStore,
        make_record: Callable[[str, Transaction], Any],
        hash_id_tag: Callable[[str], str],
        clock: Callable[[], datetime] = utcnow,
        discharge_as: str = "import",
    ) -> None:
        self.endpoint_id = endpoint_id
        # How connector 1 (discharge) names its own energy and power (EndpointConfig).
        self.discharge_as = discharge_as
        self.index = index
        self.core = core
        self.view = view
        self.settings = settings
        self.session_max_w = session_max_w
        self._tx_store = tx_store
        self._make_record = make_record
        self._hash = hash_id_tag
        self._clock = clock
        self.transactions: dict[int, Transaction] = {}
        self.operative: dict[int, bool] = {0: True, 1: True, 2: True}
        self._scheduled_availability: dict[int, bool] = {}
        # Connectors a remote start has taken (Preparing) until its session begins -> when the
        # preparation lapses (monotonic s; ConnectionTimeOut after the RemoteStart): a start
        # that never follows must not hold the connector until a restart.
        self.preparing: dict[int, float] = {}
        # Stopped sessions whose stop message has not been confirmed by the CSMS yet:
        # local id -> (connector, until). Their connector shows Finishing meanwhile, so the CSMS
        # hears Available after the StopTransaction / Ended event, not before it.
        self.finishing: dict[str, tuple[int, datetime]] = {}
        self._listeners: list[Callable[[], None]] = []
        self.reservations = ReservationBook()
        self._reservation_store: ReservationStore | None = None
        # Smart charging's schedule for a session about to start (connector -> core schedule),
        # handed to the core with the start so no cycle runs the session without its limit.
        self.start_schedule: Callable[[int], list[tuple[float, float]]] | None = None
        # idTag hash -> its parent's hash, as far as the version layer knows (local list, cache)
        self.parent_of: Callable[[str], str | None] = lambda _hash: None

    def now(self) -> datetime:
        """The station's wall clock (injected: tests and the demo jump it), for every layer
        that stamps or schedules on the station's behalf."""
        return self._clock()

    # -- observers -------------------------------------------------------------------------
    def on_change(self, listener: Callable[[], None]) -> None:
        """Called whenever something a status depends on may have changed."""
        self._listeners.append(listener)

    def changed(self) -> None:
        for listener in list(self._listeners):
            try:
                listener()
            except Exception:
                log.exception("%s: status listener failed", self.endpoint_id)

    # -- identity --------------------------------------------------------------------------
    def meter_id(self, connector: int) -> int:
        return self.index * 2 + (connector - 1)

    @staticmethod
    def valid_connector(connector: int) -> bool:
        return connector in CONNECTORS

    # -- sessions --------------------------------------------------------------------------
    def pick_connector(self, id_tag: str | None = None) -> int | None:
        """For a start without a connector: the idTag's reserved connector, else the first free
        one, discharge first (EV charging)."""
        if id_tag is not None:
            for r in self.reservations.all():
                if self._admitted(r.connector, id_tag) and \
                        self.refusal(r.connector, id_tag) is None:
                    return r.connector
        for c in CONNECTORS:
            if self.refusal(c, id_tag) is None:
                return c
        return None

    def refusal(self, connector: int, id_tag: str | None = None) -> StartRefusal | None:
        """Why a session cannot start on this connector now, or None when it can.

        A connector reserved for another idTag (or a start for no idTag) is refused.
        """
        if not self.valid_connector(connector):
            return StartRefusal.UNKNOWN_CONNECTOR
        if connector in self.transactions or connector in self.preparing:
            return StartRefusal.BUSY
        if not (self.operative[0] and self.operative[connector]):
            return StartRefusal.UNAVAILABLE
        if (self.view.control_failure is not None or not self.view.link_up
                or self.view.trip_causes):
            return StartRefusal.FAULTED
        if self.reservations.on(connector) is not None and not self._admitted(connector, id_tag):
            return StartRefusal.RESERVED
        return None

    def _tag_and_parent(self, connector: int, id_tag: str) -> tuple[str, str | None]:
        """The idTag's hash, and its parent's when that could matter (asked only then)."""
        tag_hash = self._hash(id_tag)
        held = self.reservations.on(connector)
        parent = None
        if held is not None and held.id_tag_hash != tag_hash and held.parent_id_tag_hash:
            try:
                parent = self.parent_of(tag_hash)
            except Exception:
                log.exception("%s: parent idTag lookup failed", self.endpoint_id)
        return tag_hash, parent

    def _admitted(self, connector: int, id_tag: str | None) -> bool:
        if id_tag is None:
            return False
        return self.reservations.admits(connector, *self._tag_and_parent(connector, id_tag))

    def prepare(self, connector: int, until: float = math.inf) -> None:
        """A start is coming (RemoteStart accepted): Preparing until it begins, it fails
        (`unprepare`) or `until` (monotonic s) passes (`expire_preparing`)."""
        self.preparing[connector] = until
        self.changed()

    def unprepare(self, connector: int) -> None:
        if self.preparing.pop(connector, None) is not None:
            self.changed()

    def expire_preparing(self, now: float) -> list[int]:
        """Release every preparation whose time has passed (no start followed); returns the
        connectors released (they are Available again)."""
        lapsed = [c for c, until in self.preparing.items() if until <= now]
        for c in lapsed:
            del self.preparing[c]
        if lapsed:
            self.changed()
        return lapsed

    def next_preparing_deadline(self) -> float | None:
        finite = [until for until in self.preparing.values() if until != math.inf]
        return min(finite) if finite else None

    def begin(self, connector: int, id_tag: str, *, cap_w: float | None = None,
              journal_with: Callable[[Transaction], None] | None = None) -> Transaction:
        """Start a session: durable record first, then power, so a crash never hides energy.

        `journal_with(tx)` writes what belongs with the record (the version layer's queued start
        message): both reach the disk in the one commit made before power flows.
        """
        meter = self.core.meter(self.meter_id(connector))
        tx = Transaction(
            local_id=uuid.uuid4().hex,
            connector=connector,
            id_tag=id_tag,
            id_tag_hash=self._hash(id_tag),
            meter_start_wh=math.floor(float(meter["energy_wh"])),
            started_at=self._clock(),
        )
        tag_parent = self._tag_and_parent(connector, id_tag)
        used = self.reservations.on(connector)
        if used is not None and not self.reservations.admits(connector, *tag_parent):
            used = None
        if used is not None:
            tx.facts.reservation_id = used.reservation_id
        self._tx_store.put_transaction(self._make_record(self.endpoint_id, tx))
        if journal_with is not None:
            journal_with(tx)
        self._tx_store.flush()
        self.transactions[connector] = tx
        self.preparing.pop(connector, None)
        cap = self.session_max_w if cap_w is None else min(cap_w, self.session_max_w)
        schedule = None if self.start_schedule is None else self.start_schedule(connector)
        self.core.start_session(self.meter_id(connector), int(DIRECTION[connector]), cap,
                                schedule=schedule)
        if used is not None:
            # The session now draws the held power itself; the hold is released after the start
            # command so no other session can take the power in between.
            self.reservations.consume(connector, *tag_parent)
            self._release(used)
        log.info("%s: connector %d session %s started at %d Wh", self.endpoint_id, connector,
                 tx.local_id[:8], tx.meter_start_wh)
        self.changed()
        return tx

    def adopt(self, tx: Transaction) -> None:
        """Take back a transaction restored from the journal (it is no longer powered)."""
        self.transactions[tx.connector] = tx

    def record(self, tx: Transaction) -> None:
        """Persist a change of a transaction (e.g. its CSMS id became known)."""
        self._tx_store.put_transaction(self._make_record(self.endpoint_id, tx))

    def end(self, connector: int, reason: StopReason) -> Transaction | None:
        """Stop a session: power first (safety), then the final register reading."""
        tx = self.transactions.pop(connector, None)
        if tx is None:
            return None
        self.core.stop_session(self.meter_id(connector))
        tx.end_sample = self.sample(connector)
        tx.meter_stop_wh = max(tx.meter_start_wh, math.floor(tx.end_sample.energy_wh))
        tx.stopped_at = tx.end_sample.timestamp
        tx.stop_reason = reason
        self._tx_store.finish_transaction(self.endpoint_id, tx.local_id)
        log.info("%s: connector %d session %s stopped (%s), %d Wh", self.endpoint_id, connector,
                 tx.local_id[:8], reason, tx.meter_stop_wh - tx.meter_start_wh)
        scheduled = self._scheduled_availability.pop(connector, None)
        if scheduled is not None:
            self.operative[connector] = scheduled
        if not self.transactions and 0 in self._scheduled_availability:
            self.operative[0] = self._scheduled_availability.pop(0)
        self.changed()
        return tx

    # -- energy allowances (MaxEnergyOnInvalidId) -------------------------------------------
    def limit_energy(self, connector: int, allowance_wh: int) -> bool:
        """Let the connector's session deliver at most `allowance_wh` counted from its start,
        then hold it at 0 W (suspended: it stays open until the CSMS or the EV ends it).

        A second verdict never raises an allowance already set. False: no session there.
        """
        tx = self.transactions.get(connector)
        if tx is None:
            return False
        cap = tx.meter_start_wh + max(0, allowance_wh)
        if tx.facts.energy_cap_wh is None or cap < tx.facts.energy_cap_wh:
            tx.facts.energy_cap_wh = cap
            self.record(tx)
        log.info("%s: connector %d session %s may deliver up to register %d Wh",
                 self.endpoint_id, connector, tx.local_id[:8], tx.facts.energy_cap_wh)
        self.enforce_energy_limits()
        return True

    def energy_limits_pending(self) -> bool:
        """Whether a session runs under an allowance it has not used up yet (to be watched)."""
        return any(tx.facts.energy_cap_wh is not None and not tx.facts.energy_limited
                   for tx in self.transactions.values())

    def enforce_energy_limits(self) -> list[Transaction]:
        """Hold at 0 W every session whose meter reached its allowance; returns those held now.

        The core's session cap does it: schedules and limits only lower a session below its
        cap, so nothing raises it again, and the allocation at 0 makes it SuspendedEVSE.
        """
        held = []
        for tx in list(self.transactions.values()):
            cap = tx.facts.energy_cap_wh
            if cap is None or tx.facts.energy_limited:
                continue
            meter_id = self.meter_id(tx.connector)
            if float(self.core.meter(meter_id)["energy_wh"]) < cap:
                continue
            self.core.set_session_cap(meter_id, 0.0)
            tx.facts.energy_limited = True
            self.record(tx)
            log.info("%s: connector %d session %s reached its allowance (%d Wh); suspended",
                     self.endpoint_id, tx.connector, tx.local_id[:8],
                     cap - tx.meter_start_wh)
            held.append(tx)
        if held:
            self.changed()
        return held

    def end_all(self, reason: StopReason) -> list[Transaction]:
        return [tx for c in list(self.transactions) if (tx := self.end(c, reason)) is not None]

    def find(self, transaction_id: str) -> Transaction | None:
        for tx in self.transactions.values():
            if tx.transaction_id == transaction_id:
                return tx
        return None

    # -- reservations ----------------------------------------------------------------------
    def use_reservation_store(self, store: ReservationStore,
                              restored: list[Reservation]) -> list[Reservation]:
        """Attach the durable store and take back reservations saved before a restart.

        Those past their deadline, or on a connector that can no longer have one, are dropped;
        the rest hold their power again at once. Returns the ones taken back.
        """
        self._reservation_store = store
        now = self._clock()
        kept: list[Reservation] = []
        for r in restored:
            if r.expiry <= now or not self.valid_connector(r.connector) or \
                    self.reservations.on(r.connector) is not None:
                self._drop(r)
                continue
            self.reservations.put(r)
            self._hold(r)
            kept.append(r)
        if kept:
            self.changed()
        return kept

    def reserve(self, reservation_id: int, connector: int, id_tag: str, expiry: datetime,
                parent_id_tag: str | None = None) -> ReserveStatus:
        """Reserve a connector for an idTag until `expiry` (rules: domain/reservations.py)."""
        request = Reservation(
            reservation_id=reservation_id,
            connector=connector,
            id_tag_hash=self._hash(id_tag),
            expiry=expiry,
            parent_id_tag_hash=None if parent_id_tag is None else self._hash(parent_id_tag),
        )
        valid = self.valid_connector(connector)
        facts = ConnectorFacts(
            exists=valid,
            faulted=not self.view.link_up or bool(self.view.trip_causes),
            operative=valid and self.operative[0] and self.operative[connector],
            busy=connector in self.transactions or connector in self.preparing,
            direction_allowed=valid and self.view.soc_allows(int(DIRECTION[connector])),
        )
        verdict = self.reservations.decide(request, facts, self._clock())
        if verdict != ReserveStatus.ACCEPTED:
            return verdict
        # Durable first: a reservation we answered Accepted must survive a crash.
        if self._reservation_store is not None:
            self._reservation_store.save_reservation(self.endpoint_id, request)
        old = self.reservations.put(request)
        if old is not None and old.connector != connector:
            self.core.clear_hold(self.meter_id(old.connector))
        self._hold(request)
        log.info("%s: connector %d reserved (id %d) until %s", self.endpoint_id, connector,
                 reservation_id, expiry.isoformat())
        self.changed()
        return verdict

    def cancel_reservation(self, reservation_id: int) -> bool:
        found = self.reservations.cancel(reservation_id)
        if found is None:
            return False
        self._release(found)
        log.info("%s: reservation %d cancelled", self.endpoint_id, reservation_id)
        self.changed()
        return True

    def expire_reservations(self) -> list[Reservation]:
        """End every reservation whose deadline has come (the caller's timer says when)."""
        gone = self.reservations.expire(self._clock())
        for r in gone:
            self._release(r)
            log.info("%s: reservation %d on connector %d expired", self.endpoint_id,
                     r.reservation_id, r.connector)
        if gone:
            self.changed()
        return gone

    def _hold(self, r: Reservation) -> None:
        self.core.set_hold(self.meter_id(r.connector), int(DIRECTION[r.connector]),
                           self.session_max_w)

    def _release(self, r: Reservation) -> None:
        """Power first (it is what others wait for), then the durable record."""
        try:
            self.core.clear_hold(self.meter_id(r.connector))
        finally:
            self._drop(r)

    def _drop(self, r: Reservation) -> None:
        if self._reservation_store is None:
            return
        try:
            self._reservation_store.drop_reservation(self.endpoint_id, r.reservation_id)
        except Exception:
            # A stale row is harmless: it is dropped as expired at the next start.
            log.exception("%s: could not forget reservation %d", self.endpoint_id,
                          r.reservation_id)

    # -- availability ----------------------------------------------------------------------
    def set_availability(self, connector: int, operative: bool) -> str:
        """'Accepted', 'Scheduled' (a running session finishes first) or 'Rejected'."""
        if connector != 0 and not self.valid_connector(connector):
            return "Rejected"
        busy = bool(self.transactions) if connector == 0 else connector in self.transactions
        if busy and not operative:
            self._scheduled_availability[connector] = operative
            return "Scheduled"
        self._scheduled_availability.pop(connector, None)
        self.operative[connector] = operative
        self.changed()
        return "Accepted"

    # -- status and metering ---------------------------------------------------------------
    def view_key(self) -> tuple[Any, ...]:
        """Everything status() reads from the shared core view, and nothing else: while it
        stays equal, a new snapshot cannot change a status (the rest of a status changes only
        through this station, which calls changed() itself)."""
        view = self.view
        suspended = tuple(
            (alloc := view.allocation(self.meter_id(c))) is not None and alloc <= 0.0
            for c in self.transactions)
        return (view.control_failure, view.link_up, tuple(view.trip_causes),
                tuple(self.transactions), suspended, self._finishing_connectors())

    # -- Finishing: a stop message the CSMS has not confirmed yet ---------------------------
    def hold_finishing(self, local_id: str, connector: int) -> None:
        """The stop message of `local_id` is queued: its connector is Finishing until
        `finished` (the CSMS answered it) or FINISHING_MAX has passed."""
        self.finishing[local_id] = (connector, self._clock() + FINISHING_MAX)
        self.changed()

    def finished(self, local_id: str | None) -> None:
        if local_id is not None and self.finishing.pop(local_id, None) is not None:
            self.changed()

    def _finishing_connectors(self) -> frozenset[int]:
        now = self._clock()
        return frozenset(c for c, until in self.finishing.values() if now < until)

    def status(self, connector: int) -> StatusReport:
        if self.view.control_failure is not None:
            return StatusReport(ConnectorStatus.FAULTED, CONTROL_FAILED)
        if not self.view.link_up:
            return StatusReport(ConnectorStatus.FAULTED, "pcs_link_lost")
        primary = alarms.primary(self.view.trip_causes)
        if primary is not None:
            return StatusReport(ConnectorStatus.FAULTED, primary.cause)
        if connector == 0:
            return StatusReport(
                ConnectorStatus.AVAILABLE if self.operative[0] else ConnectorStatus.UNAVAILABLE
            )
        if connector in self.transactions:
            alloc = self.view.allocation(self.meter_id(connector))
            # No allocation yet means the core has not stepped since the start: still charging.
            if alloc is not None and alloc <= 0.0:
                return StatusReport(ConnectorStatus.SUSPENDED_EVSE)
            return StatusReport(ConnectorStatus.CHARGING)
        if connector in self.preparing:
            return StatusReport(ConnectorStatus.PREPARING)
        if connector in self._finishing_connectors():
            return StatusReport(ConnectorStatus.FINISHING)
        if not (self.operative[0] and self.operative[connector]):
            return StatusReport(ConnectorStatus.UNAVAILABLE)
        if self.reservations.on(connector) is not None:
            return StatusReport(ConnectorStatus.RESERVED)
        return StatusReport(ConnectorStatus.AVAILABLE)

    def flow(self, connector: int) -> str:
        """The measurand word ("Import"/"Export") of `connector`'s own energy and power."""
        if connector == DISCHARGE_CONNECTOR and self.discharge_as == "export":
            return "Export"
        return "Import"

    def sample(self, connector: int) -> MeterSample:
        m = self.core.meter(self.meter_id(connector))
        return MeterSample(
            flow=self.flow(connector),
            timestamp=self._clock(),
            connector=connector,
            energy_wh=float(m["energy_wh"]),
            power_w=max(0.0, float(m.get("power_w") or 0.0)),
            current_a=_reading(m, "current_a", floor=0.0),
            voltage_v=_reading(m, "voltage_v"),
            soc_pct=_reading(m, "soc_pct"),
            temperature_c=_reading(m, "temperature_c"),
            offered_w=float(m.get("allocated_w") or 0.0) if m.get("active") else None,
        )


def _reading(m: dict[str, Any], key: str, *, floor: float | None = None) -> float | None:
    value = m.get(key)
    if value is None:
        return None
    return float(value) if floor is None else max(floor, float(value))
