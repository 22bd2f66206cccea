"""The main job: one control core, one journal, many OCPP endpoints.

Start-up order matters for safety: the journal is opened and meter registers restored before the
core runs, and the core runs (PCS held at 0 W, no sessions) before any CSMS can ask for power.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from typing import Any

from bess_gateway import sdnotify
from bess_gateway.config import Config, EndpointConfig
from bess_gateway.control import ControlCore
from bess_gateway.domain import smart_charging as sc
from bess_gateway.domain.settings import Settings
from bess_gateway.domain.station import CoreView, Station, StopReason, Transaction
from bess_gateway.domain.timefmt import iso
from bess_gateway.journal import Journal, TxRecord
from bess_gateway.link import EndpointBase
from bess_gateway.logs import FileLogs
from bess_gateway.maintenance.diagnostics import BundleSources, Uploads, Window
from bess_gateway.maintenance.firmware import EXIT_RESTART, FirmwareUpdater
from bess_gateway.maintenance.service import Maintenance
from bess_gateway.metrics import MetricsServer
from bess_gateway.security.certificates import CertificateStore
from bess_gateway.v16.endpoint import Endpoint16
from bess_gateway.v201.endpoint import Endpoint201

log = logging.getLogger("bess_gateway")

VIEW_REFRESH_S = 1.0  # status changes that no core event announces (e.g. SoC limits) show within
METER_SAVE_S = 5.0
SCHEDULE_REFRESH_S = sc.REFRESH.total_seconds()  # bound on energy a crash can leave unattributed


def tx_record(endpoint_id: str, tx: Transaction) -> TxRecord:
    return TxRecord(
        endpoint_id=endpoint_id,
        local_id=tx.local_id,
        connector=tx.connector,
        id_tag_hash=tx.id_tag_hash,
        meter_start_wh=tx.meter_start_wh,
        started_at=iso(tx.started_at),
        transaction_id=tx.transaction_id,
    )


class Gateway:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.journal: Journal | None = None
        self.certificates: CertificateStore | None = None
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
        self.metrics: MetricsServer | None = None
        self._view_keys: dict[str, tuple[Any, ...]] = {}  # Station.view_key() at the last wake

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
        self.journal = journal = Journal(data_dir / "journal.sqlite")
        # One CA store per gateway: its endpoints trust the same roots (security.certificates).
        self.certificates = CertificateStore(data_dir / "certs")
        self.core = core = ControlCore(cfg.core_params())
        for (endpoint_id, connector), wh in journal.get_meters().items():
            ep = next((e for e in cfg.endpoints if e.id == endpoint_id), None)
            if ep is not None:
                core.set_meter(ep.index * 2 + connector - 1, wh)
        core.start(asyncio.get_running_loop())
        core.subscribe(self._on_core_event)
        # Statuses need the PCS's first answer (or its absence): don't boot endpoints blind.
        await core.wait_ready(max(2.0, cfg.pcs.timeout_ms / 1000 * 2))
        self.view.snapshot = core.snapshot()
        # One journal transaction for all start-up writes (recoveries, start-up security events):
        # one commit instead of one per endpoint matters at 1000 endpoints.
        with journal.atomic():
            for ep in cfg.endpoints:
                station = self._make_station(ep, core, journal)
                kind = Endpoint201 if ep.ocpp_version == "2.0.1" else Endpoint16
                endpoint = kind(ep, station, journal, certificates=self.certificates)
                endpoint.recover(journal.open_transactions(ep.id))
                self.stations[ep.id] = station
                self.endpoints[ep.id] = endpoint
                # Stored charging profiles limit power from the start, CSMS reachable or not.
                endpoint.start_up()
        self.maintenance = self._make_maintenance(journal)
        for endpoint in self.endpoints.values():
            endpoint.ctx.maintenance = self.maintenance
        loop = asyncio.get_running_loop()
        address = cfg.gateway.metrics_address
        if address is not None:
            # Before the endpoints run, so their first connection is already counted.
            self.metrics = MetricsServer(self)
            core.subscribe(self.metrics.on_core_event)
            for endpoint in self.endpoints.values():
                endpoint.rpc_factory = self.metrics.rpc_factory(endpoint.id)
            await self.metrics.start(*address)
        for endpoint in self.endpoints.values():
            self._tasks.append(loop.create_task(endpoint.run(), name=f"endpoint:{endpoint.id}"))
        self._tasks.append(loop.create_task(self._refresh_view(), name="view"))
        self._tasks.append(loop.create_task(self._save_meters(), name="meters"))
        self._tasks.append(loop.create_task(self._refresh_schedules(), name="schedules"))
        log.info("gateway started: %d endpoints, PCS %s:%d", len(self.endpoints),
                 cfg.pcs.host, cfg.pcs.port)

    def _make_maintenance(self, journal: Journal) -> Maintenance:
        data_dir = self.config.gateway.data_dir

        def summary(window: Window) -> dict[str, Any]:
            return journal.summary(window.as_dict()["start"], window.as_dict()["stop"])

        sources = BundleSources(
            log_dir=data_dir / "logs", config=self.config,
            settings=lambda: {e: journal.get_settings(e) for e in self.endpoints},
            journal_summary=summary)
        firmware = FirmwareUpdater(
            data_dir / "firmware", installer=self.config.gateway.firmware_installer,
            sessions_open=lambda: any(s.transactions for s in self.stations.values()),
            request_restart=self._request_restart)
        return Maintenance(firmware, Uploads(data_dir / "diagnostics", sources))

    def _request_restart(self) -> None:
        self.restart_requested.set()
        if self.on_restart is not None:
            self.on_restart()

    def _make_station(self, ep: EndpointConfig, core: ControlCore, journal: Journal) -> Station:
        settings = Settings(
            journal.get_settings(ep.id),
            overrides={"heartbeat_interval_s": ep.heartbeat_interval_s,
                       "meter_sample_interval_s": ep.meter_sample_interval_s,
                       # a CSMS-raised profile is stored and wins (it can only be higher)
                       "security_profile": ep.security_profile},
            persist=lambda name, text, _id=ep.id: journal.put_setting(_id, name, text),
        )
        return Station(
            ep.id, ep.index, core=core, view=self.view, settings=settings,
            session_max_w=self.config.control.session_max_kw * 1000.0,
            tx_store=journal, make_record=tx_record, hash_id_tag=journal.hash_id_tag,
        )

    async def stop(self, reason: StopReason = StopReason.REBOOT, *, drain_s: float = 3.0) -> None:
        """End sessions, give queued messages a moment to leave, then hold the PCS at 0 W."""
        if self._stopped:
            return
        self._stopped = True
        for endpoint in self.endpoints.values():
            endpoint.stop_all(reason)
        if self.journal is not None and drain_s > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(drain_s):
                    # The journal has no change signal; a bounded poll at shutdown is enough.
                    while self.journal.depth() > 0 and any(  # noqa: ASYNC110
                            e.ctx.online for e in self.endpoints.values()):
                        await asyncio.sleep(0.05)
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
            await self.core.stop()
        if self.journal is not None:
            self.journal.close()
        log.info("gateway stopped")
        if self.file_logs is not None:
            self.file_logs.close()

    # -- housekeeping ----------------------------------------------------------------------
    def _on_core_event(self, event: dict[str, Any]) -> None:
        kind = event.get("kind")
        level = logging.WARNING if kind in ("link_lost", "trip") else logging.INFO
        log.log(level, "control core: %s %s", kind, event.get("causes", ""))
        self._refresh_now()

    def _refresh_now(self) -> None:
        if self.core is None:
            return
        self.view.snapshot = self.core.snapshot()
        # Wake only the stations whose status inputs moved: waking all of them every second
        # had every endpoint's reporter recompute its three statuses for nothing.
        keys = self._view_keys
        for endpoint_id, station in self.stations.items():
            key = station.view_key()
            if keys.get(endpoint_id) != key:
                keys[endpoint_id] = key
                station.changed()

    async def _refresh_view(self) -> None:
        while True:
            await asyncio.sleep(VIEW_REFRESH_S)
            self._refresh_now()

    def _persist_meters(self) -> None:
        if self.core is None or self.journal is None:
            return
        values: dict[tuple[str, int], float] = {}
        meters = self.view.snapshot.get("meters") or {}
        meters = self.core.snapshot().get("meters") or meters
        for station in self.stations.values():
            for connector in (1, 2):
                wh = meters.get(station.meter_id(connector))
                if wh is not None:
                    values[(station.endpoint_id, connector)] = float(wh)
        try:
            self.journal.put_meters(values)
        except Exception:
            log.exception("could not save meter registers; will retry")

    async def _save_meters(self) -> None:
        while True:
            await asyncio.sleep(METER_SAVE_S)
            self._persist_meters()

    async def _refresh_schedules(self) -> None:
        """Charging profiles limit power offline too: renew the core's schedules either way."""
        while True:
            await asyncio.sleep(SCHEDULE_REFRESH_S)
            for endpoint in self.endpoints.values():
                try:
                    endpoint.refresh_schedules()
                except Exception:
                    log.exception("%s: schedule refresh failed", endpoint.id)


async def run_gateway(config: Config, *, stop: asyncio.Event | None = None) -> int:
    """Run until SIGINT/SIGTERM (or `stop` is set); exit code 0 on a clean stop.

    Under systemd (Type=notify) it reports READY=1 once every endpoint task runs, pings the
    watchdog while the control thread keeps cycling, and reports STOPPING=1 on the way out.
    """
    gateway = Gateway(config)
    stop = stop if stop is not None else asyncio.Event()
    gateway.on_restart = stop.set
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
