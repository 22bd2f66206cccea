"""Prometheus metrics, the /status JSON and the live status page, on `gateway.metrics_listen`.

Most values are read at scrape time from what the gateway already keeps (endpoint state, the
control core's snapshot, the journal), so nothing is copied on the hot path. What cannot be read
later is counted as it happens: OCPP messages per action (the RPC hooks), CALL round trips (a thin
RpcConnection subclass), PCS trips and link losses (core events), and command-to-PCS latency.

Command-to-PCS latency (approximate, see docs/operations.md): from the moment a power-changing
CALL is received (wall clock) to the start time (`now_s`) of the first control cycle whose write
carried a setpoint different from the one written when the CALL arrived. The tracker polls the
core's snapshot every `TRACK_POLL_S` while commands are pending; it reads the cycle time from the
snapshot, so the poll interval does not add to the figure, but the Modbus write's own duration
(about 0.3 ms on loopback) is not included. A command that changes nothing within
`TRACK_TIMEOUT_S` (a rejected start, a profile above the current power) is counted as unchanged.

The HTTP server is a few lines over `asyncio.start_server` (GET only, one request per
connection, `Connection: close`); rendering runs on the event loop and stays in the sub-millisecond
range for hundreds of endpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from importlib import resources
from typing import TYPE_CHECKING, Any, Final, Protocol

import orjson
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from bess_gateway import __version__
from bess_gateway.ocpp.errors import InvalidAnswer
from bess_gateway.ocpp.rpc import Payload, RpcConnection

if TYPE_CHECKING:
    from bess_gateway.config import Config
    from bess_gateway.control import ControlCore
    from bess_gateway.endpoint.link import EndpointBase
    from bess_gateway.journal import Journal


class Gateway(Protocol):
    """What metrics and /status read of the gateway. A protocol rather than an import of
    gateway.py: the gateway builds the metrics server, so ops must not import it back."""

    config: Config
    journal: Journal | None
    core: ControlCore | None
    endpoints: dict[str, EndpointBase]

log = logging.getLogger(__name__)

__all__ = ["POWER_ACTIONS", "MetricsServer"]

#: CALLs from the CSMS that can change the power a session may draw (design.md section 5).
POWER_ACTIONS: Final = frozenset({
    "RemoteStartTransaction", "RemoteStopTransaction", "RequestStartTransaction",
    "RequestStopTransaction", "SetChargingProfile", "ClearChargingProfile",
})
TRACK_POLL_S: Final = 0.005
TRACK_TIMEOUT_S: Final = 5.0
HISTORY_S: Final = 3600  # /history: the last hour, one sample a second (the page's charts)
STATUS_HISTORY_S: Final = 600  # /status carries the last ten minutes of it
#: What each history sample holds: the battery, and with a [site] table the grid connection.
HISTORY_KEYS: Final = ("t", "setpoint_w", "measured_w", "soc_pct", "grid_w", "load_w",
                       "window_avg_w", "window_target_w")
MAX_REQUEST: Final = 8192

_LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
_PCS_STATES = {0: "off", 1: "standby", 2: "running", 3: "fault"}


class _CommandTracker:
    """Turns "a power CALL arrived" into a latency sample once the PCS write carries a change."""

    def __init__(self, gateway: Gateway, histogram: Histogram, unchanged: Counter) -> None:
        self._gateway = gateway
        self._histogram = histogram
        self._unchanged = unchanged
        self._pending: list[tuple[str, float, float, int]] = []  # action, t0, setpoint, writes
        self._wake = asyncio.Event()

    def received(self, action: str) -> None:
        core = self._gateway.core
        if core is None:
            return
        snap = core.snapshot()
        last = snap.get("last_write") or {}
        self._pending.append((action, time.time(), float(last.get("setpoint_w", 0)),
                              int(snap.get("writes", 0))))
        self._wake.set()

    async def run(self) -> None:
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
            await asyncio.sleep(TRACK_POLL_S)
            core = self._gateway.core
            if core is None:
                continue
            snap = core.snapshot()
            last = snap.get("last_write") or {}
            setpoint = float(last.get("setpoint_w", 0))
            writes = int(snap.get("writes", 0))
            cycle_t = float(snap.get("now_s", time.time()))
            now = time.time()
            keep: list[tuple[str, float, float, int]] = []
            for action, t0, before, writes0 in self._pending:
                if writes > writes0 and setpoint != before:
                    self._histogram.labels(action).observe(max(0.0, cycle_t - t0))
                elif now - t0 > TRACK_TIMEOUT_S:
                    self._unchanged.labels(action).inc()
                else:
                    keep.append((action, t0, before, writes0))
            self._pending = keep


class MeteredRpc(RpcConnection):
    """An RpcConnection that times its own CALLs (round trip, including queueing for the slot)."""

    round_trip: Histogram
    outcomes: Counter
    endpoint_id: str

    async def call(self, action: str, payload: Payload, timeout: float | None = None, *,
                   unique_id: str | None = None) -> Payload:
        t0 = time.perf_counter()
        outcome = "error"
        try:
            result = await super().call(action, payload, timeout, unique_id=unique_id)
            outcome = "result"
            return result
        except TimeoutError:
            outcome = "timeout"
            raise
        except InvalidAnswer:
            outcome = "invalid"
            raise
        finally:
            if outcome != "timeout":
                self.round_trip.labels(action).observe(time.perf_counter() - t0)
            self.outcomes.labels(self.endpoint_id, action, outcome).inc()


class _GatewayCollector(Collector):
    """Everything read at scrape time."""

    def __init__(self, server: MetricsServer) -> None:
        self._server = server

    def collect(self) -> Iterator[Any]:
        gw = self._server.gateway
        yield from self._endpoints(gw)
        yield from self._core(gw)

    def _endpoints(self, gw: Gateway) -> Iterator[Any]:
        connected = GaugeMetricFamily("bess_endpoint_connected",
                                      "1 while the endpoint's WebSocket to its CSMS is open",
                                      labels=["endpoint"])
        online = GaugeMetricFamily("bess_endpoint_online",
                                   "1 while connected and BootNotification is accepted",
                                   labels=["endpoint"])
        boot = GaugeMetricFamily("bess_endpoint_boot_status",
                                 "1 for the last BootNotification answer (none: not answered yet)",
                                 labels=["endpoint", "status"])
        connects = CounterMetricFamily("bess_endpoint_connects",
                                       "WebSocket connections opened", labels=["endpoint"])
        reconnects = CounterMetricFamily("bess_endpoint_reconnects",
                                         "connections opened after the first",
                                         labels=["endpoint"])
        depth = GaugeMetricFamily("bess_endpoint_queue_depth",
                                  "messages waiting in the journal's offline queue",
                                  labels=["endpoint"])
        status = GaugeMetricFamily("bess_connector_status",
                                   "1 for the connector's current OCPP status",
                                   labels=["endpoint", "connector", "status"])
        sessions = GaugeMetricFamily("bess_sessions_active", "open transactions")
        abandoned = CounterMetricFamily(
            "bess_transactions_abandoned",
            "transactions whose start message was given up after CALLERRORs (the CSMS never "
            "got them): ended locally, their other messages not sent", labels=["endpoint"])
        unattributed = CounterMetricFamily(
            "bess_energy_unattributed_wh",
            "Wh delivered in abandoned transactions: metered, never billed to an idTag",
            labels=["endpoint", "connector"])
        given_up = CounterMetricFamily(
            "bess_transaction_messages_given_up",
            "queued messages given up after TransactionMessageAttempts failures to process "
            "(CALLERRORs; never for timeouts)", labels=["endpoint", "action"])
        depths: dict[str, int] | None = None
        totals: dict[str, dict[str, Any]] = {}
        if gw.journal is not None:
            with contextlib.suppress(Exception):  # a closed journal at shutdown
                depths = gw.journal.outbox.depths()
                totals = gw.journal.abandoned.abandoned_totals()
        total_sessions = 0
        for eid, ep in gw.endpoints.items():
            connected.add_metric([eid], 1.0 if ep.connected.is_set() else 0.0)
            online.add_metric([eid], 1.0 if ep.ctx.online else 0.0)
            boot.add_metric([eid, ep.registration or "none"], 1.0)
            connects.add_metric([eid], float(ep.connects))
            mine = totals.get(eid) or {}
            abandoned.add_metric([eid], float(mine.get("transactions", 0)))
            for c in ("1", "2"):
                unattributed.add_metric([eid, c], float((mine.get("energy_wh") or {}).get(c, 0)))
            for action, n in sorted((mine.get("given_up") or {}).items()):
                given_up.add_metric([eid, str(action)], float(n))
            reconnects.add_metric([eid], float(max(0, ep.connects - 1)))
            if depths is not None:
                depth.add_metric([eid], float(depths.get(eid, 0)))
            station = ep.ctx.station
            total_sessions += len(station.transactions)
            for c in (0, 1, 2):
                with contextlib.suppress(Exception):
                    status.add_metric([eid, str(c), str(station.status(c).status)], 1.0)
        sessions.add_metric([], float(total_sessions))
        yield from (connected, online, boot, connects, reconnects, depth, status, sessions,
                    abandoned, unattributed, given_up)

    def _core(self, gw: Gateway) -> Iterator[Any]:
        if gw.core is None:
            return
        snap: dict[str, Any] = dict(gw.core.snapshot())

        def gauge(name: str, doc: str, value: Any) -> Iterator[Any]:
            if value is not None:
                yield GaugeMetricFamily(name, doc, value=float(value))

        def counter(name: str, doc: str, value: Any) -> Iterator[Any]:
            if value is not None:
                yield CounterMetricFamily(name, doc, value=float(value))

        last = snap.get("last_write") or {}
        yield from gauge("bess_pcs_link_up", "1 while the PCS answers Modbus requests",
                         1 if snap.get("link_up") else 0)
        yield from gauge("bess_pcs_setpoint_watts", "net setpoint decided (+ discharge)",
                         snap.get("setpoint_w"))
        yield from gauge("bess_pcs_written_setpoint_watts", "setpoint in the last PCS write",
                         last.get("setpoint_w"))
        yield from gauge("bess_pcs_measured_watts", "measured AC power (+ discharge)",
                         snap.get("measured_w"))
        yield from gauge("bess_pcs_state", "PCS state: 0 off, 1 standby, 2 running, 3 fault",
                         snap.get("pcs_state"))
        yield from gauge("bess_soc_percent", "battery state of charge", snap.get("soc_pct"))
        yield from gauge("bess_soh_percent", "battery state of health", snap.get("soh_pct"))
        yield from gauge("bess_cell_temperature_max_celsius", "hottest cell",
                         snap.get("cell_temp_max_c"))
        yield from gauge("bess_cell_temperature_min_celsius", "coldest cell",
                         snap.get("cell_temp_min_c"))
        yield from gauge("bess_dc_voltage_volts", "battery DC voltage", snap.get("dc_voltage_v"))
        yield from gauge("bess_alarm_bits", "PCS/BMS alarm register", snap.get("alarm_bits"))
        yield from gauge("bess_tripped", "1 while protection holds the PCS at 0 W",
                         1 if snap.get("tripped") else 0)
        causes = GaugeMetricFamily("bess_trip_cause", "1 for each active trip cause",
                                   labels=["cause"])
        for cause in snap.get("trip_causes") or []:
            causes.add_metric([str(cause)], 1.0)
        yield causes
        limits = GaugeMetricFamily("bess_limit_watts",
                                   "power limits in force, each protection sub-limit on its own",
                                   labels=["limit"])
        for key in ("limit_discharge_w", "limit_charge_w"):
            if snap.get(key) is not None:
                limits.add_metric([key.removesuffix("_w")], float(snap[key]))
        for key, value in (snap.get("sub_limits") or {}).items():
            limits.add_metric([str(key)], float(value))
        yield limits
        yield from gauge("bess_control_period_seconds", "configured control period",
                         gw.config.control.period_ms / 1000)
        yield from counter("bess_control_cycles", "control cycles run", snap.get("cycles"))
        yield from counter("bess_control_overruns", "control cycles that missed their slot",
                           snap.get("overruns"))
        jitter = snap.get("jitter_us_p99")
        yield from gauge("bess_control_jitter_p99_seconds", "cycle start jitter, p99",
                         None if jitter is None else jitter / 1e6)
        jitter = snap.get("jitter_us_max")
        yield from gauge("bess_control_jitter_max_seconds", "cycle start jitter, max",
                         None if jitter is None else jitter / 1e6)
        last_cycle = snap.get("last_cycle_us")
        yield from gauge("bess_control_last_cycle_seconds", "duration of the last cycle",
                         None if last_cycle is None else last_cycle / 1e6)
        yield from counter("bess_pcs_writes", "Modbus writes to the PCS", snap.get("writes"))
        yield from counter("bess_pcs_requests", "Modbus requests to the PCS",
                           snap.get("pcs_requests"))
        yield from counter("bess_pcs_errors", "failed Modbus requests", snap.get("pcs_errors"))
        yield from counter("bess_pcs_write_failures",
                           "control cycles whose PCS writes were refused or unanswered",
                           snap.get("pcs_write_failures"))
        yield from counter("bess_pcs_connects", "Modbus TCP connections opened",
                           snap.get("pcs_connects"))
        yield from counter("bess_core_events_dropped", "core events lost to a full queue",
                           snap.get("events_dropped"))
        site = snap.get("site")
        if site is not None:
            yield from gauge("bess_site_grid_w", "grid power at the connection point (+ import)",
                             site.get("grid_w"))
            yield from gauge("bess_site_grid_valid", "1 while the grid meter's reading is fresh",
                             1 if site.get("grid_valid") else 0)
            yield from gauge("bess_site_load_w", "hub load estimate (grid + battery)",
                             site.get("load_w"))
            yield from gauge("bess_site_battery_w", "battery power used for the site (+ discharge)",
                             site.get("site_w"))
            yield from gauge("bess_site_window_avg_w", "average import so far in the demand window",
                             site.get("window_avg_w"))
            yield from gauge("bess_site_window_target_w", "demand target (average per window)",
                             site.get("window_target_w"))
            yield from counter("bess_site_discharged_wh",
                               "battery energy given for the site (no session's)",
                               site.get("site_discharged_wh"))
            yield from counter("bess_site_charged_wh", "battery energy taken for the site",
                               site.get("site_charged_wh"))
            active = GaugeMetricFamily(
                "bess_site_constraint_active",
                "1 for each active site constraint (why power is what it is)",
                labels=["constraint"])
            for c in site.get("constraints") or []:
                active.add_metric([str(c)], 1.0)
            yield active
        if gw.journal is not None:
            with contextlib.suppress(Exception):
                j = gw.journal
                yield from gauge("bess_journal_queue_depth",
                                 "queued messages of the configured endpoints",
                                 j.outbox.live_depth())
                removed = j.endpoints.removed_endpoints(exclude=gw.endpoints)
                yield from gauge("bess_journal_removed_endpoints",
                                 "endpoints not in the configuration that the journal holds "
                                 "data of (bess-gateway journal list)", len(removed))
                yield from gauge("bess_journal_removed_messages",
                                 "queued messages of those endpoints (kept, not sent)",
                                 sum(r["queued_messages"] for r in removed))
                yield from gauge("bess_journal_removed_transactions",
                                 "transaction records of those endpoints",
                                 sum(r["open_transactions"] for r in removed))
                yield from gauge("bess_journal_queue_bytes",
                                 "disk the queued messages take (payload + per-message overhead)",
                                 j.outbox.outbox_bytes())
                yield from gauge("bess_journal_queue_budget_bytes", "the queue's disk budget",
                                 j.outbox.budget_bytes)
                yield from gauge("bess_journal_queue_over_budget",
                                 "1 while over budget with only never-dropped records queued",
                                 1 if j.outbox.over_budget else 0)
                yield from counter("bess_journal_queue_thinned",
                                   "sampled MeterValues removed to keep to the budget",
                                   j.outbox.thinned)
                yield from counter("bess_journal_queue_dropped",
                                   "expendable messages dropped to keep to the budget",
                                   j.outbox.dropped)


class MetricsServer:
    """/metrics, /status and / (the page) for one gateway; `port` is known after `start()`."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.registry = CollectorRegistry(auto_describe=False)
        self.started = time.time()
        self.calls_received = Counter("bess_ocpp_calls_received", "CALLs received from the CSMS",
                                      ["endpoint", "action"], registry=self.registry)
        self.messages_sent = Counter("bess_ocpp_messages_sent",
                                     "CALLs and CALLRESULTs sent to the CSMS",
                                     ["endpoint", "action"], registry=self.registry)
        self.call_outcomes = Counter("bess_ocpp_calls_sent_outcome",
                                     "our CALLs by outcome: result, invalid (a CALLRESULT that "
                                     "breaks the schema), error (CALLERROR or lost), timeout",
                                     ["endpoint", "action", "outcome"],
                                     registry=self.registry)
        self.round_trip = Histogram("bess_ocpp_call_round_trip_seconds",
                                    "our CALL to its answer (includes waiting for the slot)",
                                    ["action"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.command_latency = Histogram(
            "bess_command_to_pcs_seconds",
            "power-changing CALL received to the control cycle whose PCS write carried the "
            "change (approximate)", ["action"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.command_unchanged = Counter(
            "bess_command_no_pcs_change", "power CALLs after which the setpoint did not change "
            f"within {TRACK_TIMEOUT_S:g} s", ["action"], registry=self.registry)
        self.core_events = Counter("bess_core_events", "control core events (trip, link_lost, "
                                   "...)", ["kind"], registry=self.registry)
        self.registry.register(_GatewayCollector(self))
        # Kept here, not in the browser, so a reloaded page still shows the last hour.
        self.history: deque[tuple[float | None, ...]] = deque(maxlen=HISTORY_S)
        self.tracker = _CommandTracker(gateway, self.command_latency, self.command_unchanged)
        self._server: asyncio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._page = resources.files("bess_gateway.ops").joinpath("status_page.html").read_bytes()
        self.port = 0

    # -- wiring ----------------------------------------------------------------------------
    def rpc_factory(self, endpoint_id: str) -> Callable[..., RpcConnection]:
        """What an endpoint builds its RpcConnection with: hooks and timing attached."""
        received = self.calls_received
        sent = self.messages_sent
        tracker = self.tracker

        def on_call(action: str) -> None:
            received.labels(endpoint_id, action).inc()
            if action in POWER_ACTIONS:
                tracker.received(action)

        def on_sent(action: str) -> None:
            sent.labels(endpoint_id, action).inc()

        def make(*args: Any, **kwargs: Any) -> RpcConnection:
            rpc = MeteredRpc(*args, on_call_received=on_call, on_message_sent=on_sent, **kwargs)
            rpc.round_trip = self.round_trip
            rpc.outcomes = self.call_outcomes
            rpc.endpoint_id = endpoint_id
            return rpc

        return make

    def on_core_event(self, event: dict[str, Any]) -> None:
        self.core_events.labels(str(event.get("kind", "unknown"))).inc()

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._serve, host, port,
                                                  limit=MAX_REQUEST)
        self.port = int(self._server.sockets[0].getsockname()[1])
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._sample_history(), name="metrics:history"),
                       loop.create_task(self._guard(self.tracker.run()), name="metrics:tracker")]
        log.info("metrics and status on http://%s:%d/", host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    @staticmethod
    async def _guard(coro: Any) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("metrics task failed; command-to-PCS latency no longer measured")

    async def _sample_history(self) -> None:
        while True:
            core = self.gateway.core
            if core is not None:
                try:
                    self.history.append(self._history_sample(dict(core.snapshot())))
                except Exception:
                    log.exception("status history sample failed")
            await asyncio.sleep(1.0)

    @staticmethod
    def _history_sample(snap: dict[str, Any]) -> tuple[float | None, ...]:
        """One sample in HISTORY_KEYS order; the site's values are None without a [site]
        table, or while the grid meter has no valid reading."""

        def num(value: Any) -> float | None:
            return None if value is None else float(value)

        site = snap.get("site") or {}
        return (round(time.time(), 1), float(snap.get("setpoint_w", 0.0)),
                float(snap.get("measured_w", 0.0)), num(snap.get("soc_pct")),
                num(site.get("grid_w")), num(site.get("load_w")),
                num(site.get("window_avg_w")), num(site.get("window_target_w")))

    def history_json(self, since: float | None = None) -> dict[str, Any]:
        """/history: the ring buffer in columns (one array per key, oldest first), the samples
        after ``since`` only when given, and the site's configured limits for the charts."""
        rows = [r for r in self.history if since is None or (r[0] or 0.0) > since]
        out: dict[str, Any] = {key: [r[i] for r in rows] for i, key in enumerate(HISTORY_KEYS)}
        out["period_s"] = 1.0
        out["span_s"] = HISTORY_S
        out["limits"] = self._site_limits()
        return out

    def _site_limits(self) -> dict[str, float | None]:
        """grid_import_max / export max / peak-shave target of the [site] table, in W."""
        site = getattr(self.gateway.config, "site", None)

        def watts(name: str) -> float | None:
            value = getattr(site, name + "_kw", None) if site is not None else None
            return None if value is None else float(value) * 1000.0

        return {"grid_import_max_w": watts("grid_import_max"),
                "grid_export_max_w": watts("grid_export_max"),
                "peak_shave_w": watts("peak_shave")}

    # -- content ---------------------------------------------------------------------------
    def metrics_text(self) -> bytes:
        return generate_latest(self.registry)

    def status(self) -> dict[str, Any]:
        """The facts of /metrics for scripts; never an idTag or a secret."""
        gw = self.gateway
        snap: dict[str, Any] = dict(gw.core.snapshot()) if gw.core is not None else {}
        pcs = {k: snap.get(k) for k in (
            "link_up", "setpoint_w", "measured_w", "soc_pct", "soh_pct", "dc_voltage_v",
            "dc_current_a", "ac_voltage_v", "ac_frequency_hz", "cell_temp_max_c",
            "cell_temp_min_c", "alarm_bits", "tripped", "trip_causes", "limit_discharge_w",
            "limit_charge_w", "sub_limits", "bms_max_discharge_w", "bms_max_charge_w",
            "pcs_error", "pcs_write_error")}
        pcs["state"] = _PCS_STATES.get(snap.get("pcs_state", -1), "unknown")
        pcs["written"] = snap.get("last_write")
        control = {k: snap.get(k) for k in (
            "running", "cycles", "overruns", "jitter_us_p99", "jitter_us_max", "last_cycle_us",
            "writes", "pcs_requests", "pcs_errors", "pcs_write_failures", "pcs_connects",
            "scheduling", "failure")}
        control["period_ms"] = gw.config.control.period_ms
        allocations = snap.get("allocations") or {}
        endpoints = []
        depths: dict[str, int] | None = None
        totals: dict[str, dict[str, Any]] = {}
        if gw.journal is not None:
            with contextlib.suppress(Exception):
                depths = gw.journal.outbox.depths()
                totals = gw.journal.abandoned.abandoned_totals()
        removed: list[dict[str, Any]] = []
        if gw.journal is not None:
            with contextlib.suppress(Exception):
                removed = gw.journal.endpoints.removed_endpoints(exclude=gw.endpoints)
        for eid, ep in gw.endpoints.items():
            station = ep.ctx.station
            depth = None if depths is None else depths.get(eid, 0)
            connectors = {}
            for c in (0, 1, 2):
                with contextlib.suppress(Exception):
                    report = station.status(c)
                    connectors[str(c)] = {"status": str(report.status), "cause": report.cause}
            sessions = []
            for c, tx in sorted(station.transactions.items()):
                meter_id = station.meter_id(c)
                sessions.append({
                    "connector": c,
                    "transaction_id": tx.transaction_id,
                    "started_at": tx.started_at.isoformat(),
                    "meter_start_wh": tx.meter_start_wh,
                    "allocated_w": allocations.get(meter_id),
                    "energy_wh": (snap.get("meters") or {}).get(meter_id),
                })
            endpoints.append({
                "id": eid,
                "ocpp_version": ep.cfg.ocpp_version,
                "connected": ep.connected.is_set(),
                "online": ep.ctx.online,
                "registration": ep.registration,
                "connects": ep.connects,
                "queue_depth": depth,
                "connectors": connectors,
                "sessions": sessions,
                # Transactions the CSMS never got (start given up) and their energy per
                # connector: delivered, never billed (docs/ocpp-support.md, timeouts and retries).
                "abandoned_transactions": int((totals.get(eid) or {}).get("transactions", 0)),
                "unattributed_energy_wh": dict((totals.get(eid) or {}).get("energy_wh") or {}),
                "messages_given_up": dict((totals.get(eid) or {}).get("given_up") or {}),
            })
        extra: dict[str, Any] = {}
        if "site" in snap:
            extra["site"] = snap["site"]
        return {
            **extra,
            "version": __version__,
            "time": time.time(),
            "uptime_s": round(time.time() - self.started, 1),
            "pcs": pcs,
            "control": control,
            "journal_depth": sum(e["queue_depth"] or 0 for e in endpoints),
            "removed_endpoints": removed,
            "endpoints": endpoints,
            "history": [dict(zip(HISTORY_KEYS, r, strict=True))
                        for r in list(self.history)[-STATUS_HISTORY_S:]],
        }

    # -- HTTP ------------------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                head = await reader.readuntil(b"\r\n\r\n")
            status, ctype, body = self._route(head)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
                ConnectionError):
            writer.close()
            return
        except Exception:
            log.exception("status request failed")
            status, ctype, body = "500 Internal Server Error", "text/plain", b"internal error\n"
            head = b""
        try:
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Cache-Control: no-store\r\nConnection: close\r\n\r\n".encode()
                + (b"" if head.startswith(b"HEAD ") else body))
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    def _route(self, head: bytes) -> tuple[str, str, bytes]:
        parts = head.split(b"\r\n", 1)[0].split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            return "400 Bad Request", "text/plain", b"bad request\n"
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            return "405 Method Not Allowed", "text/plain", b"GET only\n"
        if target == b"/metrics":
            return "200 OK", CONTENT_TYPE_LATEST, self.metrics_text()
        if target == b"/status":
            return "200 OK", "application/json", orjson.dumps(self.status(), default=str)
        if target == b"/history":
            since = _query_float(parts[1], b"since")
            return "200 OK", "application/json", orjson.dumps(self.history_json(since))
        if target in (b"/", b"/index.html"):
            return "200 OK", "text/html; charset=utf-8", self._page
        return ("404 Not Found", "text/plain",
                b"not found: try /, /status, /history or /metrics\n")


def _query_float(target: bytes, key: bytes) -> float | None:
    """``key``'s value in the request target's query string as a float; None if absent or not
    a finite number (the whole history is then served)."""
    _, _, query = target.partition(b"?")
    for item in query.split(b"&"):
        name, _, value = item.partition(b"=")
        if name == key:
            try:
                number = float(value)
            except ValueError:
                return None
            return number if math.isfinite(number) else None
    return None
