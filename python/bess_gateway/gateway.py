"""The main job: one control core, one journal, many OCPP endpoints.

Start-up order matters for safety: the journal is opened and meter registers restored before the
core runs, and the core runs (PCS held at 0 W, no sessions) before any CSMS can ask for power.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit

from bess_gateway.aio import wait_event
from bess_gateway.config import Config, EndpointConfig
from bess_gateway.control import ControlCore
from bess_gateway.domain import site_calendar
from bess_gateway.domain import smart_charging as sc
from bess_gateway.domain.settings import Settings
from bess_gateway.domain.station import CoreView, Station, StopReason, Transaction
from bess_gateway.domain.timefmt import iso
from bess_gateway.endpoint import settling
from bess_gateway.endpoint.link import EndpointBase
from bess_gateway.endpoint.pacing import TokenBucket
from bess_gateway.journal import Journal, TxRecord
from bess_gateway.maintenance.diagnostics import BundleSources, Scope, Uploads, Window
from bess_gateway.maintenance.firmware import EXIT_RESTART, FirmwareUpdater
from bess_gateway.maintenance.service import Maintenance
from bess_gateway.ocpp.v16.endpoint import Endpoint16
from bess_gateway.ocpp.v21.endpoint import Endpoint21
from bess_gateway.ocpp.v201.endpoint import Endpoint201
from bess_gateway.ops import sdnotify
from bess_gateway.ops.logs import FileLogs
from bess_gateway.ops.loop_lag import LoopLagMonitor
from bess_gateway.ops.metrics import MetricsServer
from bess_gateway.security.certificates import (
    CertificateStore,
    migrate_shared_store,
    operator_directory,
)
from bess_gateway.wall_clock import StepDetector

log = logging.getLogger("bess_gateway")

VIEW_REFRESH_S = 1.0  # status changes that no core event announces (e.g. SoC limits) show within
# Meter registers are saved with the PCS registers they were read at: a crash loses no energy
# (the restart attributes what flowed since the save), only the split of it since the save.
METER_SAVE_S = 1.0
METER_SAVE_AFTER_CHANGE_S = 0.2
OUTAGE_SETTLE_S = 3.0  # at a restart, how long to wait for the PCS to stop before the books close
OUTAGE_QUIET_W = 1000.0  # below this the PCS counts as stopped
SITE_CALENDAR_REFRESH_S = 3600.0  # the site calendar covers days ahead; renewed hourly
SCHEDULE_REFRESH_S = sc.REFRESH.total_seconds()  # bound on energy a crash can leave unattributed
# The control thread died: exit with sysexits' EX_SOFTWARE, so the supervisor (systemd,
# Restart=on-failure) starts a fresh process, whose start-up recovers the open sessions.
EXIT_SOFTWARE = 70
FAILURE_REPORT_S = 3.0  # how long the Faulted statuses get to reach the CSMSs before that exit
GOING_AWAY_S = 3.0  # at a stop, how long the CSMSs get to answer our close frames
# The endpoint class of each ocpp_version (1.6 is the default).
ENDPOINT_KINDS: dict[str, type[Endpoint16 | Endpoint201]] = {
    "2.0.1": Endpoint201, "2.1": Endpoint21}
# Every version's stop message formats, by action: a crash's cut stops are patched in the journal
# before the endpoints exist (bess_gateway.endpoint.settling).
STOP_FORMATS = tuple({f.action: f for kind in (Endpoint16, *ENDPOINT_KINDS.values())
                      for f in kind.STOP_FORMATS}.values())


def tx_record(endpoint_id: str, tx: Transaction) -> TxRecord:
    return TxRecord(
        endpoint_id=endpoint_id,
        local_id=tx.local_id,
        connector=tx.connector,
        id_tag_hash=tx.id_tag_hash,
        meter_start_wh=tx.meter_start_wh,
        started_at=iso(tx.started_at),
        transaction_id=tx.transaction_id,
        data=tx.facts.to_dict(),  # version-layer facts (2.0.1: seqNo, remoteStartId, ...)
    )


class Gateway:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.journal: Journal | None = None
        self.stores: dict[str, CertificateStore] = {}  # operator -> its certificate store
        self.core: ControlCore | None = None
        self.view = CoreView()
        self.stations: dict[str, Station] = {}
        self.endpoints: dict[str, EndpointBase] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self._stopped = False
        self.file_logs: FileLogs | None = None
        self.maintenance: Maintenance | None = None
        self.restart_requested = asyncio.Event()  # set after a firmware install: exit, restart
        self.on_restart: Callable[[], None] | None = None  # run_gateway's stop
        # The control thread's panic message once it died; then the process must exit.
        self.control_failure: str | None = None
        self.on_failure: Callable[[], None] | None = None  # run_gateway's stop
        self.metrics: MetricsServer | None = None
        self._view_keys: dict[str, tuple[Any, ...]] = {}  # Station.view_key() at the last wake
        self._saved_meters: dict[int, float] = {}  # meter id -> value last saved
        self._meters_due = asyncio.Event()  # a session started or stopped: save soon
        self._session_keys: dict[str, frozenset[tuple[int, str]]] = {}

    @property
    def certificates(self) -> CertificateStore | None:
        """The maintenance operator's certificate store: its ManufacturerRootCertificates are
        what firmware signatures are checked against. None without a maintenance operator."""
        maintainer = self.config.maintainer
        return None if maintainer is None else self.stores.get(maintainer)

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        cfg = self.config
        if cfg.pcs.profile_path is not None:
            # The core speaks the built-in generic map and SunSpec (discovered at connect); a
            # register-map file may rescale or retype points, which the core cannot follow, so
            # commanding through it could write the wrong registers.
            raise RuntimeError(
                f"pcs.profile = {cfg.pcs.profile!r}: register-map files are not supported by the "
                "control core in this build; use profile = \"generic\" or \"sunspec\"")
        data_dir = cfg.gateway.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.file_logs = FileLogs(data_dir / "logs", cfg.gateway.log_format)
        self.journal = journal = Journal(
            data_dir / "journal.sqlite",
            outbox_budget_bytes=int(cfg.gateway.queue_budget_mb * 1_000_000))
        # One certificate store per operator (trust domain): what one CSMS installs is listed
        # to and trusted for its operator's endpoints only (security.certificates).
        certs = data_dir / "certs"
        migrate_shared_store(certs, {ep.id: ep.trust_domain for ep in cfg.endpoints})
        self.stores = {name: CertificateStore(operator_directory(certs, name))
                       for name in cfg.operators()}
        self._report_removed(journal.endpoints.set_live_endpoints(ep.id for ep in cfg.endpoints))
        self.core = core = ControlCore(cfg.core_params())
        saved = journal.meters.get_meters()
        for (endpoint_id, connector), wh in saved.items():
            ep = next((e for e in cfg.endpoints if e.id == endpoint_id), None)
            if ep is not None:
                core.set_meter(ep.index * 2 + connector - 1, wh)
        # The site's calendar goes in before the first cycle (commands queue until start).
        self._send_site_calendar()
        core.start(asyncio.get_running_loop())
        core.subscribe(self._on_core_event)
        # Statuses need the PCS's first answer (or its absence): don't boot endpoints blind.
        await core.wait_ready(max(2.0, cfg.pcs.timeout_ms / 1000 * 2))
        settled = await self._attribute_outage(journal, core, saved)
        self._finish_cut_stops(journal, settled)
        self.view.snapshot = core.snapshot()
        # One journal transaction for all start-up writes (recoveries, start-up security events):
        # one commit instead of one per endpoint matters at 1000 endpoints.
        with journal.atomic():
            for ep in cfg.endpoints:
                station = self._make_station(ep, core, journal)
                kind = ENDPOINT_KINDS.get(ep.ocpp_version, Endpoint16)
                endpoint = kind(ep, station, journal,
                                certificates=self.stores[ep.trust_domain])
                endpoint.recover(journal.transactions.open_transactions(ep.id))
                self.stations[ep.id] = station
                station.on_change(lambda s=station: self._sessions_changed(s))
                self.endpoints[ep.id] = endpoint
                # Stored charging profiles limit power from the start, CSMS reachable or not.
                endpoint.start_up()
        # From here on, writes share commits; nothing is sent before its commit (journal.py).
        journal.group_commits()
        self.maintenance = self._make_maintenance(journal)
        # One pacer for all endpoints: the bound is on what the gateway sends (pacing.py).
        pacer = TokenBucket(cfg.gateway.replay_rate_per_s)
        maintainer = cfg.maintainer
        for name, members in cfg.operators().items():
            ids = frozenset(ep.id for ep in members)
            for ep in members:
                ctx = self.endpoints[ep.id].ctx
                ctx.operator_endpoints = ids
                ctx.maintainer = name == maintainer
        for endpoint in self.endpoints.values():
            endpoint.ctx.services.maintenance = self.maintenance
            endpoint.ctx.pacer = pacer
        # A 1.6 UpdateFirmware kept before the restart (an install was running) starts now.
        self.maintenance.firmware.resume(
            lambda eid: e.firmware_notify() if (e := self.endpoints.get(eid)) else None)
        loop = asyncio.get_running_loop()
        address = cfg.gateway.metrics_address
        if address is not None:
            # Before the endpoints run, so their first connection is already counted.
            self.metrics = MetricsServer(self)
            core.subscribe(self.metrics.on_core_event)
            for endpoint in self.endpoints.values():
                endpoint.rpc_factory = self.metrics.rpc_factory(endpoint.id)
            await self.metrics.start(*address)
            # From before the endpoints run, so their start-up counts too (loop_lag.py).
            self._tasks.append(loop.create_task(LoopLagMonitor(self.metrics.registry).run(),
                                                name="loop-lag"))
        for endpoint in self.endpoints.values():
            self._tasks.append(loop.create_task(endpoint.run(), name=f"endpoint:{endpoint.id}"))
        self._tasks.append(loop.create_task(self._refresh_view(), name="view"))
        self._tasks.append(loop.create_task(self._save_meters(), name="meters"))
        self._tasks.append(loop.create_task(self._refresh_schedules(), name="schedules"))
        if cfg.site is not None:
            self._tasks.append(loop.create_task(self._refresh_site_calendar(), name="site"))
            host, port = cfg.site.meter_address
            log.info("site management on: grid meter %s:%d (%s), import max %s kW, export max "
                     "%s kW, demand target %s kW per %d min, timezone %s, %d window(s)",
                     host, port, cfg.site.grid_meter_profile, cfg.site.grid_import_max_kw,
                     cfg.site.grid_export_max_kw, cfg.site.peak_shave_kw,
                     cfg.site.demand_window_min, cfg.site.timezone, len(cfg.site.window))
        log.info("gateway started: %d endpoints, PCS %s:%d", len(self.endpoints),
                 cfg.pcs.host, cfg.pcs.port)

    @staticmethod
    def _report_removed(removed: list[dict[str, Any]]) -> None:
        """Data of endpoints the configuration no longer names: kept, never silent."""
        for r in removed:
            log.warning(
                "journal holds endpoint %s, which is not in the configuration: %d queued "
                "messages (%d bytes), %d transaction records; kept as they are (not sent, not "
                "in the queue budget, not waited for at shutdown) until the endpoint is "
                "configured again or the data is purged: see `bess-gateway journal --help`",
                r["endpoint_id"], r["queued_messages"], r["queued_bytes"],
                r["open_transactions"])

    def _make_maintenance(self, journal: Journal) -> Maintenance:
        data_dir = self.config.gateway.data_dir

        def summary(window: Window) -> dict[str, Any]:
            return journal.endpoints.summary(window.as_dict()["start"], window.as_dict()["stop"])

        sources = BundleSources(
            log_dir=data_dir / "logs", config=self.config,
            settings=lambda: {e: journal.settings.get_settings(e) for e in self.endpoints},
            journal_summary=summary, scope=self._bundle_scope)
        firmware = FirmwareUpdater(
            data_dir / "firmware", installer=self.config.gateway.firmware_installer,
            # a stop whose register is not final yet is still a session for the installer
            sessions_open=lambda: any(s.transactions for s in self.stations.values()) or any(
                e.ctx.services.settling.pending() for e in self.endpoints.values()),
            request_restart=self._request_restart, facts=journal.facts)
        return Maintenance(firmware, Uploads(data_dir / "diagnostics", sources))

    def _bundle_scope(self, endpoint_id: str) -> Scope:
        """What a bundle the endpoint's CSMS asks for may hold: its operator's endpoints, and
        no log record naming another operator (maintenance.diagnostics.Scope)."""
        operators = self.config.operators()
        if len(operators) <= 1:
            return Scope()
        mine = next((eps for eps in operators.values() if any(e.id == endpoint_id for e in eps)),
                    ())
        own = {e.id for e in mine}

        def texts(eps: Iterable[EndpointConfig]) -> Iterator[str]:
            for ep in eps:
                yield ep.trust_domain
                for url in (ep.csms_url, self._live_url(ep.id)):
                    if url:
                        yield url.rstrip("/")
                        with contextlib.suppress(ValueError):
                            yield urlsplit(url).netloc
        others = [ep for ep in self.config.endpoints if ep.id not in own]
        # Endpoints the journal still holds but the configuration no longer names: nobody's now,
        # so no operator's bundle names them either.
        gone = (self.journal.endpoints.known_endpoints() if self.journal is not None
                else set()) - own
        return Scope.of(own, [*(ep.id for ep in others), *gone], texts(others), texts(mine))

    def _live_url(self, endpoint_id: str) -> str | None:
        """The CSMS URL an endpoint uses now, when its CSMS changed it (2.0.1 network profile)."""
        endpoint = self.endpoints.get(endpoint_id)
        url = endpoint.ctx.csms_url if endpoint is not None else None
        return str(url) if url else None

    def _request_restart(self) -> None:
        self.restart_requested.set()
        if self.on_restart is not None:
            self.on_restart()

    def _make_station(self, ep: EndpointConfig, core: ControlCore, journal: Journal) -> Station:
        settings = Settings(
            journal.settings.get_settings(ep.id),
            overrides={"heartbeat_interval_s": ep.heartbeat_interval_s,
                       "meter_sample_interval_s": ep.meter_sample_interval_s,
                       # a CSMS-raised profile is stored and wins (it can only be higher)
                       "security_profile": ep.security_profile},
            persist=lambda name, text, _id=ep.id: journal.settings.put_setting(_id, name, text),
        )
        return Station(
            ep.id, ep.index, core=core, view=self.view, settings=settings,
            session_max_w=self.config.control.session_max_kw * 1000.0,
            tx_store=journal.transactions, make_record=tx_record, hash_id_tag=journal.hash_id_tag,
            discharge_as=ep.discharge_as,
        )

    async def stop(self, reason: StopReason = StopReason.REBOOT, *, drain_s: float = 3.0,
                   end_sessions: bool = True) -> None:
        """End sessions, give queued messages a moment to leave, then hold the PCS at 0 W.

        `end_sessions=False` leaves them open in the journal, as a crash would: after a control
        thread failure the core takes no command any more, and the next start's recovery ends
        them with the energy that flowed until the PCS stopped.
        """
        if self._stopped:
            return
        self._stopped = True
        if end_sessions:
            for endpoint in self.endpoints.values():
                endpoint.stop_all(reason)
        if self.journal is not None and drain_s > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(drain_s):
                    # The journal has no change signal; a bounded poll at shutdown is enough.
                    # Removed endpoints' messages have nobody to send them: not waited for.
                    while self.journal.outbox.live_depth() > 0 and any(  # noqa: ASYNC110
                            e.ctx.online for e in self.endpoints.values()):
                        await asyncio.sleep(0.05)
        # Every CSMS hears a normal departure (1001 Going Away) before the endpoints' tasks
        # are cancelled; a CSMS that does not answer the close in time gets the cancellation.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(GOING_AWAY_S):
                await asyncio.gather(*(e.go_away() for e in self.endpoints.values()),
                                     return_exceptions=True)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for endpoint in self.endpoints.values():
            endpoint.shut_down()  # no expiry may touch the core or journal after this
        if self.maintenance is not None:
            await self.maintenance.close()
        if self.metrics is not None:
            await self.metrics.stop()
        self._persist_meters()
        if self.core is not None:
            unattributed = self.core.snapshot().get("unattributed_wh") or {}
            log.info("energy no session owned since start: discharge %.1f Wh, charge %.1f Wh",
                     unattributed.get("discharge", 0.0), unattributed.get("charge", 0.0))
            await self.core.stop()
        if self.journal is not None:
            self.journal.close()
        log.info("gateway stopped")
        if self.file_logs is not None:
            self.file_logs.close()

    # -- housekeeping ----------------------------------------------------------------------
    def _on_core_event(self, event: dict[str, Any]) -> None:
        kind = event.get("kind")
        if kind == "control_failed":
            self._control_failed(str(event.get("message") or "control thread failed"))
            return
        if kind == "grid_meter_lost":
            log.warning("site: grid meter lost (%s): no site power, sessions held at what the "
                        "last valid reading allowed", event.get("message", ""))
            return
        if kind == "grid_meter_restored":
            log.info("site: grid meter reading again")
            return
        if kind == "site_constraints":
            # Why power is what it is: logged on every change of the active set.
            log.info("site: constraints now %s", ", ".join(event.get("constraints") or [])
                     or "none")
            return
        level = logging.WARNING if kind in ("link_lost", "trip") else logging.INFO
        log.log(level, "control core: %s %s", kind, event.get("causes", ""))
        self._refresh_now()

    def _control_failed(self, message: str) -> None:
        """The control thread is dead (it wrote 0 W on its way out): nothing protects or meters
        the battery any more, so every connector goes Faulted and the process exits."""
        if self.control_failure is not None or self._stopped:
            return
        self.control_failure = message
        log.critical("control thread failed: %s; every connector reports Faulted and the gateway "
                     "exits with %d so that its supervisor restarts it", message, EXIT_SOFTWARE)
        sdnotify.notify(f"STATUS=control thread failed: {message}"[:200])
        self.view.control_failure = message
        if self.core is not None:
            self.view.snapshot = self.core.snapshot()
        for station in self.stations.values():
            station.changed()
        if self.on_failure is not None:
            self.on_failure()

    async def report_failure(self, timeout_s: float = FAILURE_REPORT_S) -> bool:
        """After a control failure: wait (at most `timeout_s`) until every connected CSMS has
        answered the Faulted statuses and taken the queued messages (2.0.1 NotifyEvent); True
        when all did. An offline endpoint is not waited for: it reports at its next boot."""
        journal = self.journal

        def reported() -> bool:
            for endpoint in self.endpoints.values():
                if not endpoint.ctx.online:
                    continue
                station = endpoint.ctx.station
                if any(endpoint.confirmed_status.get(t) != station.status(t)
                       for t in endpoint.STATUS_TARGETS):
                    return False
                if journal is not None and journal.outbox.depth(endpoint.id) > 0:
                    return False
            return True

        try:
            async with asyncio.timeout(timeout_s):
                # Confirmations come from many endpoints' replies; a bounded poll is enough here.
                while not reported():  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
        except TimeoutError:
            log.error("not every CSMS confirmed the Faulted statuses within %.1f s", timeout_s)
            return False
        return True

    def _refresh_now(self) -> None:
        if self.core is None:
            return
        snap = self.core.snapshot()
        if not snap.get("running", True) and not self._stopped:
            # The control_failed event may have been lost (full queue); the snapshot still says.
            self._control_failed(str(snap.get("failure") or "control thread not running"))
        self.view.snapshot = snap
        # Wake only the stations whose status inputs moved: waking all of them every second
        # had every endpoint's reporter recompute its three statuses for nothing.
        keys = self._view_keys
        for endpoint_id, station in self.stations.items():
            key = station.view_key()
            if keys.get(endpoint_id) != key:
                keys[endpoint_id] = key
                station.changed()

    async def _refresh_view(self) -> None:
        clock = StepDetector()
        while True:
            await asyncio.sleep(VIEW_REFRESH_S)
            self._refresh_now()
            step = clock.check()
            if step is not None:
                log.warning("wall clock stepped by %+.1f s: rebuilding every charging schedule "
                            "for the new time", step)
                self._refresh_all_schedules()
                self._send_site_calendar()

    def _persist_meters(self) -> None:
        """Save the meters with the PCS registers and allocations of the same control step."""
        if self.core is None or self.journal is None:
            return
        for endpoint in self.endpoints.values():
            try:
                # stops whose meter settled: final meterStop
                endpoint.ctx.services.settling.resolve()
            except Exception:
                log.exception("%s: could not finish a stop's register", endpoint.id)
        snap = self.core.snapshot()
        meters = snap.get("meters") or {}
        allocs = snap.get("allocations") or {}
        values: dict[tuple[str, int], float] = {}
        allocated: list[list[Any]] = []
        for station in self.stations.values():
            for connector in (1, 2):
                meter_id = station.meter_id(connector)
                wh = meters.get(meter_id)
                if wh is not None and self._saved_meters.get(meter_id) != wh:
                    values[(station.endpoint_id, connector)] = float(wh)
                tx = station.transactions.get(connector)
                if allocs.get(meter_id, 0.0) > 0.0 and tx is not None:
                    allocated.append([station.endpoint_id, connector, float(allocs[meter_id]),
                                      tx.local_id])
        # stops whose meter is still settling: a crash must not lose what they counted so far
        waiting = [[eid, connector, local_id, stop_wh]
                   for eid, endpoint in self.endpoints.items()
                   for local_id, connector, stop_wh in endpoint.ctx.services.settling.pending()]
        basis = None
        if "energy_discharged_wh" in snap:
            basis = {"time_s": snap["now_s"], "discharged_wh": snap["energy_discharged_wh"],
                     "charged_wh": snap.get("energy_charged_wh", 0), "allocations": allocated,
                     "settling": waiting}
            site = snap.get("site")
            if site is not None:
                # The site's own power (+ discharge) owns its part of what a crash leaves
                # unaccounted: it is no session's energy (docs/site.md).
                basis["site_w"] = float(site.get("site_w") or 0.0)
        try:
            self.journal.meters.put_meters(values, basis)
        except Exception:
            log.exception("could not save meter registers; will retry")
            return
        for (endpoint_id, connector), wh in values.items():
            self._saved_meters[self.stations[endpoint_id].meter_id(connector)] = wh

    def _finish_cut_stops(self, journal: Journal, registers: dict[tuple[str, int], float]) -> None:
        """Stops the crash caught settling (bess_gateway.endpoint.settling) get their connector's
        register as restored (`_attribute_outage`): it counted their ramp-down up to the last
        save, and after it when no session of their direction was open; their StopTransaction
        is still queued."""
        basis = journal.meters.meter_basis() or {}
        for endpoint_id, connector, local_id, stop_wh in basis.get("settling", []):
            later = [r for r in journal.transactions.open_transactions(endpoint_id)
                     if r.connector == connector]
            # A session started on the connector since: the register it started at.
            final = later[0].meter_start_wh if later else \
                math.floor(registers.get((endpoint_id, int(connector)), 0.0))
            if final > stop_wh:
                # Whichever version's stop message it is (the endpoint's version may have
                # changed with the configuration since).
                settling.patch_stop(journal, endpoint_id, local_id, final, STOP_FORMATS)

    async def _attribute_outage(self, journal: Journal, core: ControlCore,
                                saved: dict[tuple[str, int], float]
                                ) -> dict[tuple[str, int], float]:
        """Energy that flowed between the last meter save and the PCS stopping (the crash, the
        PCS watchdog's delay) goes to the sessions the crash cut, before recovery ends them.

        A connector's register restores first to the highest register a journaled message gave
        it since the save (a session's start, a stop's final register: `Journal.meter_floors`),
        so no session starts below what the last one was billed to. The rest of the PCS
        registers' increase since the save is split over the cut sessions by the allocations
        saved with it; one that started after the save counts with the mean allocation of its
        direction. With none of a direction open, the stops the crash caught settling own it
        (their ramp-down was what flowed). Returns the registers as restored, and saves them
        with the PCS registers they now stand for, so a second crash does not count the gap
        again.
        """
        basis = journal.meters.meter_basis()
        open_tx = {ep.id: journal.transactions.open_transactions(ep.id)
                   for ep in self.config.endpoints}
        floors = {k: wh for k, wh in journal.meters.meter_floors().items() if k[0] in open_tx}
        for endpoint_id, recs in open_tx.items():
            for r in recs:
                key = (endpoint_id, r.connector)
                floors[key] = max(floors.get(key, 0.0), float(r.meter_start_wh))
        restored: dict[tuple[str, int], float] = dict(saved)
        changed: dict[tuple[str, int], float] = {}
        for key, wh in floors.items():
            if wh > saved.get(key, 0.0):
                restored[key] = changed[key] = wh
        new_basis = None
        if basis is not None and (changed or any(open_tx.values()) or basis.get("settling")):
            snap = core.snapshot()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(OUTAGE_SETTLE_S):
                    # The first write of the new core is 0 W; the books close once the PCS
                    # follows.
                    while abs(float(snap.get("measured_w", 0.0))) > OUTAGE_QUIET_W:
                        await asyncio.sleep(0.05)
                        snap = core.snapshot()
            if "energy_discharged_wh" in snap:
                self._split_gap(basis, snap, open_tx, saved, restored, changed)
                new_basis = {"time_s": snap["now_s"],
                             "discharged_wh": snap["energy_discharged_wh"],
                             "charged_wh": snap.get("energy_charged_wh", 0),
                             "allocations": [], "settling": basis.get("settling", [])}
            else:
                log.warning("PCS not readable at start: the energy that flowed since the last "
                            "meter save is not attributed to the sessions the stop cut")
        if not changed:
            return restored
        index = {ep.id: ep.index for ep in self.config.endpoints}
        for (endpoint_id, connector), wh in changed.items():
            core.set_meter(index[endpoint_id] * 2 + connector - 1, wh)
        journal.meters.put_meters(changed, new_basis)
        # recover() reads the core's meters: wait until the control thread has applied them.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                while any(float(core.meter(index[e] * 2 + c - 1)["energy_wh"]) < wh - 1e-6  # noqa: ASYNC110
                          for (e, c), wh in changed.items()):
                    await asyncio.sleep(0.01)
        return restored

    def _split_gap(self, basis: dict[str, Any], snap: dict[str, Any],
                   open_tx: dict[str, list[TxRecord]], saved: dict[tuple[str, int], float],
                   restored: dict[tuple[str, int], float],
                   changed: dict[tuple[str, int], float]) -> None:
        """`_attribute_outage`'s split of what the PCS registers counted since the save and the
        journaled registers (already in `restored`) do not account for."""
        elapsed_h = max(0.0, float(snap["now_s"]) - float(basis.get("time_s", 0.0))) / 3600
        site_w = 1000.0 * max(self.config.control.site_max_discharge_kw,
                              self.config.control.site_max_charge_kw)
        saved_alloc = {(e, int(c)): float(w) for e, c, w, *_ in basis.get("allocations", [])}
        for connector, key in ((1, "discharged_wh"), (2, "charged_wh")):
            gap = float(snap.get(f"energy_{key}", 0)) - float(basis.get(key, 0))
            # What journaled registers already gave this direction's connectors since the save.
            gap -= sum(wh - saved.get(k, 0.0) for k, wh in changed.items() if k[1] == connector)
            if gap <= 0 or gap > 2 * site_w * elapsed_h + 1000.0:
                if abs(gap) > 1.0:  # below a Wh: the whole-Wh journaled registers' rounding
                    log.warning("PCS %s register moved by %.0f Wh during the outage: not "
                                "attributed (PCS replaced or reset?)", key, gap)
                continue
            side = [w for (_, c), w in saved_alloc.items() if c == connector]
            mean = sum(side) / len(side) if side else 1.0
            cut = {(e, connector): saved_alloc.get((e, connector), mean)
                   for e, recs in open_tx.items() for r in recs if r.connector == connector}
            if not cut:
                cut = {(e, connector): 1.0 for e, c, _, _ in basis.get("settling", [])
                       if int(c) == connector and e in open_tx}
            if not cut:
                if gap >= 1.0:
                    log.warning("%.0f Wh (%s) flowed during the outage with no session to own "
                                "it", gap, key)
                continue
            # The battery power the site used at the save is the site's, never a session's.
            site_saved = float(basis.get("site_w", 0.0))
            site_part = max(site_saved, 0.0) if connector == 1 else max(-site_saved, 0.0)
            total = sum(cut.values()) + site_part
            if site_part > 0 and total > 0:
                log.warning("%.0f Wh (%s) that flowed during the outage was the site's: no "
                            "session's", gap * site_part / total, key)
            for k, w in cut.items():
                share = gap * w / total if total > 0 else gap / len(cut)
                restored[k] = changed[k] = restored.get(k, 0.0) + share
                log.warning("%s connector %d: %.1f Wh that flowed during the outage attributed",
                            k[0], k[1], share)

    async def _save_meters(self) -> None:
        """Every METER_SAVE_S, and soon after a session starts or stops: the allocations saved
        with the registers then name the sessions that have the power, which are the ones a
        crash cuts (`_attribute_outage`) unless it comes within the short delay below."""
        while True:
            await wait_event(self._meters_due, METER_SAVE_S)
            self._meters_due.clear()
            # Lets the control thread apply the start or stop (a cycle); bounds the save rate.
            await asyncio.sleep(METER_SAVE_AFTER_CHANGE_S)
            self._persist_meters()

    def _send_site_calendar(self) -> None:
        site = self.config.site
        if site is None or self.core is None:
            return
        try:
            offsets, windows = site_calendar.calendar(site, site_calendar.utc_now())
            self.core.set_site_calendar(offsets, windows)
        except Exception:
            log.exception("site calendar refresh failed")

    async def _refresh_site_calendar(self) -> None:
        while True:
            await asyncio.sleep(SITE_CALENDAR_REFRESH_S)
            self._send_site_calendar()

    def _sessions_changed(self, station: Station) -> None:
        sessions = frozenset((c, tx.local_id) for c, tx in station.transactions.items())
        if self._session_keys.get(station.endpoint_id) != sessions:
            self._session_keys[station.endpoint_id] = sessions
            self._meters_due.set()

    async def _refresh_schedules(self) -> None:
        """Charging profiles limit power offline too: renew the core's schedules either way."""
        while True:
            await asyncio.sleep(SCHEDULE_REFRESH_S)
            self._refresh_all_schedules()

    def _refresh_all_schedules(self) -> None:
        for endpoint in self.endpoints.values():
            try:
                endpoint.refresh_schedules()
            except Exception:
                log.exception("%s: schedule refresh failed", endpoint.id)


async def run_gateway(config: Config, *, stop: asyncio.Event | None = None) -> int:
    """Run until SIGINT/SIGTERM (or `stop` is set); exit code 0 on a clean stop, EXIT_SOFTWARE
    (70) after the control thread died.

    Under systemd (Type=notify) it reports READY=1 once every endpoint task runs, pings the
    watchdog while the control thread keeps cycling, and reports STOPPING=1 on the way out.
    """
    gateway = Gateway(config)
    stop = stop if stop is not None else asyncio.Event()
    gateway.on_restart = stop.set
    gateway.on_failure = stop.set
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    watchdog: asyncio.Task[None] | None = None
    try:
        try:
            await gateway.start()
        except Exception as exc:
            log.error("gateway could not start: %s", exc)
            sdnotify.notify(f"STATUS=could not start: {exc}"[:200])
            await gateway.stop(drain_s=0)
            return 1
        sdnotify.notify(f"READY=1\nSTATUS=running {len(gateway.endpoints)} endpoints")
        watchdog = loop.create_task(sdnotify.watchdog(_cycling(gateway)), name="watchdog")
        await stop.wait()
        sdnotify.notify("STOPPING=1")
        if gateway.control_failure is not None:
            await gateway.report_failure()
            await gateway.stop(drain_s=0, end_sessions=False)
            return EXIT_SOFTWARE
        await gateway.stop()
        # A distinct code after a firmware install, so the supervisor starts the new version.
        return EXIT_RESTART if gateway.restart_requested.is_set() else 0
    finally:
        if watchdog is not None:
            watchdog.cancel()
            await asyncio.gather(watchdog, return_exceptions=True)
        for sig in installed:
            loop.remove_signal_handler(sig)


def _cycling(gateway: Gateway) -> Callable[[], bool]:
    """True while the control thread has run a cycle since the previous question."""
    last = -1

    def healthy() -> bool:
        nonlocal last
        if gateway.core is None:
            return False
        cycles = int(gateway.core.snapshot().get("cycles", 0))
        alive, last = cycles != last, cycles
        return alive

    return healthy
