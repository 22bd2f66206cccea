"""One station's smart charging as a stateful service: the domain's profiles and rules
(bess_gateway.domain.smart_charging, pure functions of time) held against the control core and a
profile store (the journal).

`SmartCharging` keeps the installed profiles, restores them from the store, makes every change
durable before it applies it, and hands the core schedules; the endpoint builds one at
construction (bess_gateway.endpoint.charging_limits.make). It lives outside `domain/` because it
does
I/O (core commands, the store); the domain module stays free of both.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from bess_gateway.domain.smart_charging import (
    HORIZON,
    UNLIMITED_W,
    ChargingProfile,
    Electrical,
    Limits,
    ProfileError,
    ProfileSet,
    Purpose,
    Segment,
    StationProfiles,
    composite,
    endpoint_schedule,
    session_schedule,
    to_core,
    utc,
    validate,
)

if TYPE_CHECKING:
    from bess_gateway.domain.station import Station

log = logging.getLogger("bess_gateway.domain.smart_charging")

class ScheduleCore(Protocol):
    """What smart charging needs from the control core (bess_gateway.control.ControlCore)."""

    def set_session_schedule(self, meter_id: int, schedule: list[tuple[float, float]]) -> None: ...
    def set_session_group(self, meter_id: int, group_id: int | None) -> None: ...
    def set_group_schedule(self, group_id: int, schedule: list[tuple[float, float]]) -> None: ...
    def clear_group(self, group_id: int) -> None: ...


class ProfileStore(Protocol):
    """Where installed profiles are made durable (the journal)."""

    def put_charging_profile(self, endpoint_id: str, profile_id: int, data: dict[str, Any],
                             installed_at: str) -> None: ...
    def delete_charging_profiles(self, endpoint_id: str, profile_ids: list[int]) -> None: ...
    def charging_profiles(self, endpoint_id: str) -> list[tuple[dict[str, Any], str]]: ...


class SmartCharging:
    """A station's installed profiles and the limits they put on its sessions in the core.

    Every change (install, clear, a session starting or ending) hands the core fresh schedules
    for the next `HORIZON`; the version layer calls `refresh()` every `REFRESH` so the core never
    runs past the end of what it was given. The core follows period boundaries by itself.
    """

    def __init__(self, station: Station, core: ScheduleCore, *, store: ProfileStore | None,
                 limits: Callable[[], Limits], electrical: Callable[[], Electrical],
                 clock: Callable[[], datetime],
                 mono: Callable[[], float] = time.monotonic) -> None:
        self.station = station
        self.core = core
        self.store = store
        self.limits = limits
        self.electrical = electrical
        self.clock = clock
        self.mono = mono
        # Local wall-clock anchors (a session's start, an Absolute profile's install time) ->
        # the monotonic time they stand for, so they keep their age across a wall-clock step.
        self._anchors: dict[tuple[str, int], tuple[datetime, float]] = {}
        self.installed = ProfileSet()
        self.installed_at: dict[int, datetime] = {}
        self._sessions: dict[int, str] = {}  # connector -> local id of the session we know
        for c in (1, 2):
            # The endpoint is one group in the core: its index (the ChargePointMaxProfile cap).
            core.set_session_group(station.meter_id(c), station.index)
        if store is not None:
            self._restore(store)

    def _restore(self, store: ProfileStore) -> None:
        stale: list[int] = []
        for data, installed_at in store.charging_profiles(self.station.endpoint_id):
            try:
                p = ChargingProfile.from_dict(data)
                at = datetime.fromisoformat(installed_at)
            except (KeyError, TypeError, ValueError):
                log.warning("%s: unreadable stored charging profile %r dropped",
                            self.station.endpoint_id, data.get("id"))
                if isinstance(data.get("id"), int):
                    stale.append(data["id"])
                continue
            if p.purpose == Purpose.TX:
                stale.append(p.profile_id)  # its transaction ended with the restart
                continue
            self.installed.profiles[p.profile_id] = p
            self.installed_at[p.profile_id] = at
        if stale:
            store.delete_charging_profiles(self.station.endpoint_id, stale)

    # -- the view the composite needs ---------------------------------------------------------
    def snapshot(self) -> StationProfiles:
        for key in [k for k in self._anchors
                    if k[0] == "installed" and k[1] not in self.installed_at]:
            del self._anchors[key]  # a removed profile's anchor (ids come and go for ever)
        installed_at = {pid: self._carried(("installed", pid), at)
                        for pid, at in self.installed_at.items()}
        return StationProfiles(tuple(self.installed), installed_at)

    def _carried(self, key: tuple[str, int], anchor: datetime) -> datetime:
        """`anchor`, a time this process read from its own wall clock, carried over wall-clock
        steps since: the time as far before the wall clock now as it is on the monotonic clock.
        Without a step it is `anchor` itself; after an NTP step a session's Relative profile
        keeps its elapsed time instead of looking like it has not started (docs/control.md,
        "Time base"). Times a CSMS sent (startSchedule, validFrom) are not anchors: they stay."""
        seen = self._anchors.get(key)
        if seen is None or seen[0] != anchor:
            ago = (self.clock() - anchor).total_seconds()
            seen = (anchor, self.mono() - ago)
            self._anchors[key] = seen
        return self.clock() - timedelta(seconds=self.mono() - seen[1])

    def tx_start(self, connector: int) -> datetime | None:
        tx = self.station.transactions.get(connector)
        return None if tx is None else self._carried(("tx", connector), utc(tx.started_at))

    # -- changes ------------------------------------------------------------------------------
    def set_profile(self, p: ChargingProfile) -> list[ChargingProfile]:
        """Install `p` (ProfileError if refused) and apply it; returns what it replaced."""
        validate(p, self.limits(), (1, 2))
        if p.purpose == Purpose.TX:
            tx = self.station.transactions.get(p.connector)
            if tx is None:
                raise ProfileError("a TxProfile needs a running transaction on its connector",
                                   "TxNotFound")
            if p.transaction_id is not None and p.transaction_id != tx.transaction_id:
                raise ProfileError(f"transaction {p.transaction_id} is not running on "
                                   f"connector {p.connector}", "TxNotFound")
        return self._install(p)

    def set_start_profile(self, p: ChargingProfile) -> None:
        """A TxProfile for the session about to start on `p.connector` (a remote start's)."""
        validate(p, self.limits(), (1, 2))
        if p.purpose != Purpose.TX or p.transaction_id is not None:
            raise ProfileError("a start's profile is a TxProfile without a transaction id")
        self._install(p)

    def drop_start_profile(self, connector: int) -> None:
        """The start did not happen: its TxProfile goes (unless a session runs there)."""
        if connector not in self.station.transactions:
            self.clear(connector=connector, purpose=Purpose.TX)

    def _install(self, p: ChargingProfile) -> list[ChargingProfile]:
        now = self.clock()
        gone = self.installed.install(p, self.limits())
        if self.store is not None:
            # Durable before it is applied: an Accepted profile must survive a restart. TxProfiles
            # are kept too, so a store sees every replacement; they are dropped at restore.
            try:
                if gone:
                    self.store.delete_charging_profiles(self.station.endpoint_id,
                                                        [q.profile_id for q in gone])
                self.store.put_charging_profile(self.station.endpoint_id, p.profile_id,
                                                p.to_dict(), now.isoformat())
            except Exception:
                # Not stored, so not installed: the set goes back to what it was.
                del self.installed.profiles[p.profile_id]
                for q in gone:
                    self.installed.profiles[q.profile_id] = q
                raise
        for q in gone:
            self.installed_at.pop(q.profile_id, None)
        self.installed_at[p.profile_id] = now
        self.apply()
        return gone

    def clear(self, **criteria: Any) -> list[ChargingProfile]:
        gone = self.installed.clear(**criteria)
        for q in gone:
            self.installed_at.pop(q.profile_id, None)
        if gone:
            if self.store is not None:
                try:
                    self.store.delete_charging_profiles(self.station.endpoint_id,
                                                        [q.profile_id for q in gone])
                except Exception:
                    # A stale row only comes back as a TxProfile (dropped) or is cleared again.
                    log.exception("%s: could not forget cleared profiles",
                                  self.station.endpoint_id)
            self.apply()
        return gone

    def sessions_changed(self) -> None:
        """Called on every station change: a session that ended takes its TxProfiles along."""
        now_sessions = {c: tx.local_id for c, tx in self.station.transactions.items()}
        if now_sessions == self._sessions:
            return
        ended = [c for c, lid in self._sessions.items() if now_sessions.get(c) != lid]
        self._sessions = now_sessions
        for c in ended:
            if c not in now_sessions:
                self.clear(connector=c, purpose=Purpose.TX)
        self.apply()

    # -- what the core gets ---------------------------------------------------------------
    def start_schedule(self, connector: int) -> list[tuple[float, float]]:
        """The schedule a session on `connector` starts with (its transaction is registered)."""
        now = self.clock()
        segs = session_schedule(self.snapshot(), connector, now, HORIZON, self.electrical(),
                                tx_start=self.tx_start(connector) or now)
        return to_core(segs, UNLIMITED_W)

    def apply(self) -> None:
        """Hand the core the current schedules of the endpoint and of each running session."""
        now = self.clock()
        sp = self.snapshot()
        el = self.electrical()
        group = to_core(endpoint_schedule(sp, now, HORIZON, el), UNLIMITED_W)
        if group:
            self.core.set_group_schedule(self.station.index, group)
        else:
            self.core.clear_group(self.station.index)
        for connector in list(self.station.transactions):
            segs = session_schedule(sp, connector, now, HORIZON, el,
                                    tx_start=self.tx_start(connector))
            self.core.set_session_schedule(self.station.meter_id(connector),
                                           to_core(segs, UNLIMITED_W))

    refresh = apply

    def composite(self, connector: int, duration: timedelta, *,
                  physical_w: float) -> list[Segment]:
        now = self.clock()
        return composite(self.snapshot(), connector, now, duration, self.electrical(),
                         tx_start=self.tx_start(connector), physical_w=physical_w)
