"""asyncio bridge over the control thread (`bess_gateway._core.ControlLoop`).

The thread runs without the GIL and never calls into Python. When it queues events it writes one
byte to a socketpair; `ControlCore` watches the other end with `loop.add_reader`, drains the queue
and hands each event to the subscribers, all on the event loop's thread. Commands go straight to
the core (they only enqueue), and `stop()` joins the thread in a worker thread so the event loop
keeps running meanwhile.

The dict shapes returned by the core are spelled out below as TypedDicts; `_core.pyi` uses them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import NotRequired, TypedDict

from bess_gateway._core import ControlLoop

log = logging.getLogger(__name__)


class ControlParams(TypedDict, total=False):
    """Keys accepted by `ControlLoop`/`Controller`; all optional, defaults from design.md."""

    period_ms: int  # 10..1000, default 100
    ramp_kw_per_s: float  # default 300
    session_max_kw: float  # ceiling of any session cap, default 150
    site_max_discharge_kw: float  # default 600
    site_max_charge_kw: float  # default 600
    soc_min_pct: float  # default 5
    soc_max_pct: float  # default 95
    dc_voltage_min_v: float  # default 600
    dc_voltage_max_v: float  # default 900
    cell_temp_min_c: float  # default 0
    cell_temp_max_c: float  # default 55
    pcs_host: str  # default "127.0.0.1"
    pcs_port: int  # default 5020
    pcs_unit_id: int  # 0..255, default 1
    pcs_timeout_ms: int  # 20..60000, default 1000
    register_map: dict[str, int]  # every name of default_register_map(); default generic
    pcs_profile: str  # "generic" (uses register_map, the default) or "sunspec" (discovered)
    # [site] (design.md section 8; config.py `Config.site_params`): any key turns it on
    site_grid_meter_host: str  # the grid meter; absent: no meter is read (grid_w per step)
    site_grid_meter_port: int
    site_grid_meter_unit_id: int
    site_grid_meter_profile: str  # "generic" or "sunspec" (models 201-204, discovered)
    site_grid_meter_timeout_ms: int  # request deadline; an older reading is stale
    site_grid_import_max_kw: float
    site_grid_export_max_kw: float
    site_peak_shave_kw: float
    site_demand_window_min: int
    site_recharge_below_kw: float
    site_recharge_max_kw: float
    site_reserve_soc_pct: float
    site_peak_margin_pct: float
    site_grid_limit_margin_pct: float


class CoreEvent(TypedDict):
    """`kind` is link_lost, link_restored, trip (with `causes`), trip_cleared or control_failed
    (with `message`); with a `[site]` table also grid_meter_lost (with `message`),
    grid_meter_restored and site_constraints (with `constraints`, when the set changes).

    link_restored also announces the first answer after start; link_lost also the PCS never
    answering within `pcs_timeout_ms` of start. A lost link also trips with `pcs_link_lost`.
    control_failed is the control thread's last word: it panicked, wrote 0 W (best effort) and
    runs no more cycles.
    """

    kind: str
    time_s: float
    causes: NotRequired[list[str]]
    message: NotRequired[str]
    constraints: NotRequired[list[str]]


class SubLimits(TypedDict):
    site_discharge: float
    bms_discharge: float
    soc_discharge: float
    temperature_discharge: float
    site_charge: float
    bms_charge: float
    soc_charge: float
    temperature_charge: float


class UnattributedWh(TypedDict):
    discharge: float
    charge: float


class HoldsW(TypedDict):
    discharge: float
    charge: float


class SiteStatus(TypedDict):
    """The `site` key of a step and a snapshot (absent without a `[site]` table); the contract
    shared with the status page and the demo (issue 14)."""

    grid_w: float | None  # + import from the grid, - export; None until a valid reading
    grid_valid: bool  # the last valid reading is younger than grid_meter_timeout_ms
    grid_meter_error: str | None  # why the last read failed, None after a good one
    load_w: float | None  # hub load estimate = grid_w + battery measured_w
    battery_w: float  # battery power, + discharge
    site_w: float  # power the site controller asks of the battery, + discharge
    window_start_s: float | None  # wall-clock start of the current demand window
    window_avg_w: float | None  # average import so far in this window
    window_target_w: float | None  # peak_shave_kw in W
    window_allowed_w: float | None  # import the window law allows for the rest of the window
    constraints: list[str]  # active constraints: grid_import_max, peak_shave, meter_stale, ...
    soc_pct: float | None
    site_discharged_wh: float  # battery energy used for the site: no session's energy
    site_charged_wh: float


class CoreState(TypedDict):
    """What every control step decides; a step result and a snapshot both carry it."""

    now_s: float
    setpoint_w: float
    run: bool
    fault_reset: bool
    limit_discharge_w: float
    limit_charge_w: float
    sub_limits: SubLimits
    tripped: bool
    trip_causes: list[str]
    link_up: bool
    allocations: dict[int, float]
    meters: dict[int, float]
    unattributed_wh: UnattributedWh
    holds_w: HoldsW  # power set aside per direction by set_hold (as requested)
    site: NotRequired[SiteStatus]


class StepResult(CoreState):
    events: list[CoreEvent]


class LastWrite(TypedDict):
    run: bool
    setpoint_w: int
    watchdog: int
    fault_reset: bool


class Snapshot(CoreState):
    # decoded measurements: absent until the first valid reading, and those the PCS profile does
    # not report (sunspec: cell temperatures, and any point the device marks not implemented)
    soc_pct: NotRequired[float]
    soh_pct: NotRequired[float]
    dc_voltage_v: NotRequired[float]
    dc_current_a: NotRequired[float]
    ac_voltage_v: NotRequired[float]
    ac_current_a: NotRequired[float]
    ac_frequency_hz: NotRequired[float]
    measured_w: NotRequired[float]
    pcs_state: NotRequired[int]
    cell_temp_max_c: NotRequired[float]
    cell_temp_min_c: NotRequired[float]
    cell_v_max_mv: NotRequired[float]
    cell_v_min_mv: NotRequired[float]
    bms_max_discharge_w: NotRequired[float]
    bms_max_charge_w: NotRequired[float]
    alarm_bits: NotRequired[int]
    energy_discharged_wh: NotRequired[int]
    energy_charged_wh: NotRequired[int]
    # loop health
    running: bool
    cycles: int
    command_cycles: int  # cycles run at once for a command, not at a tick
    overruns: int
    jitter_us_p99: int
    jitter_us_max: int
    scheduling: str  # "SCHED_FIFO 10", or "normal (why not)": see docs/deployment.md
    last_cycle_us: int
    writes: int
    last_write: LastWrite | None
    pcs_requests: int
    pcs_errors: int
    pcs_connects: int
    pcs_stale_replies: int
    events_dropped: int
    pcs_error: str | None  # last PCS discovery/decode problem (sunspec), None after a good read
    pcs_write_failures: int  # cycles whose PCS writes were refused or unanswered
    pcs_write_error: str | None  # why the last failed write failed
    failure: str | None  # the control thread's panic message once it died (running is False)


class MeterReading(TypedDict):
    energy_wh: float
    power_w: float
    current_a: NotRequired[float]  # absent when the PCS does not report AC current
    voltage_v: NotRequired[float]  # 0.0 until the first reading; absent when not reported
    soc_pct: float
    temperature_c: NotRequired[float]  # absent when the profile has no cell temperatures
    allocated_w: float
    active: bool
    # stopped, but power it had still flows (ramp-down, PCS response) and is still counted:
    # energy_wh is not final yet (docs/control.md)
    settling: bool
    direction: int | None


Subscriber = Callable[[CoreEvent], None]


class ControlCore:
    """One control thread and its event stream, for code running on an asyncio loop."""

    def __init__(self, params: ControlParams | dict[str, object] | None = None) -> None:
        self._core = ControlLoop(dict(params or {}))
        self._subscribers: list[Subscriber] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd = self._core.event_fd()
        self._link_known = asyncio.Event()

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Starts the thread; events are dispatched on `loop` (default: the running loop)."""
        loop = loop if loop is not None else asyncio.get_running_loop()
        loop.add_reader(self._fd, self._on_readable)
        try:
            self._core.start()
        except BaseException:
            loop.remove_reader(self._fd)
            raise
        self._loop = loop

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Calls `callback(event)` for every event; returns a function that unsubscribes."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    async def wait_ready(self, timeout: float) -> bool:
        """Waits until the loop has a verdict on the PCS link; False if `timeout` s pass first.

        The verdict is the first answer (`link_restored`) or `pcs_timeout_ms` of silence
        (`link_lost`). Until then `snapshot()["link_up"]` is False because nothing is known yet,
        so code that reports status at start-up should wait for this first.
        """
        try:
            async with asyncio.timeout(timeout):
                await self._link_known.wait()
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        """Stops the thread (setpoint 0 + standby written) without blocking the event loop."""
        if self._loop is not None:
            self._loop.remove_reader(self._fd)
            self._loop = None
        await asyncio.to_thread(self._core.stop)
        # What the last cycles raised still reaches the subscribers.
        self._dispatch(self._core.drain_events())

    def _on_readable(self) -> None:
        self._dispatch(self._core.drain_events())

    def _dispatch(self, events: Iterable[CoreEvent]) -> None:
        for event in events:
            if event["kind"] in ("link_restored", "link_lost"):
                if not self._link_known.is_set():
                    self._log_scheduling()
                self._link_known.set()
            # A copy of the list: a callback may unsubscribe itself.
            for callback in list(self._subscribers):
                try:
                    callback(event)
                except Exception:
                    log.exception("control event subscriber %r failed on %r", callback, event)

    def start_session(
        self,
        meter_id: int,
        direction: int,
        cap_w: float,
        group: int | None = None,
        schedule: list[tuple[float, float]] | None = None,
    ) -> None:
        self._core.start_session(meter_id, direction, cap_w, group, schedule)

    def set_session_group(self, meter_id: int, group_id: int | None) -> None:
        self._core.set_session_group(meter_id, group_id)

    def set_group_schedule(self, group_id: int, schedule: list[tuple[float, float]]) -> None:
        """Caps the sum of the group's allocations, discharge and charge counted together."""
        self._core.set_group_schedule(group_id, schedule)

    def clear_group(self, group_id: int) -> None:
        self._core.clear_group(group_id)

    def set_hold(self, hold_id: int, direction: int, power_w: float) -> None:
        """Sets power of one direction aside (a reservation); never makes a setpoint."""
        self._core.set_hold(hold_id, direction, power_w)

    def clear_hold(self, hold_id: int) -> None:
        self._core.clear_hold(hold_id)

    def set_session_cap(self, meter_id: int, cap_w: float) -> None:
        self._core.set_session_cap(meter_id, cap_w)

    def set_session_schedule(self, meter_id: int, schedule: list[tuple[float, float]]) -> None:
        self._core.set_session_schedule(meter_id, schedule)

    def stop_session(self, meter_id: int) -> None:
        self._core.stop_session(meter_id)

    def set_site_calendar(self, offsets: list[tuple[float, float]],
                          windows: list[tuple[float, float, str, float]]) -> None:
        """The site's UTC offsets and time-of-use windows
        (`bess_gateway.domain.site_calendar.calendar`)."""
        self._core.set_site_calendar(offsets, windows)

    def set_meter(self, meter_id: int, energy_wh: float) -> None:
        self._core.set_meter(meter_id, energy_wh)

    def meter(self, meter_id: int) -> MeterReading:
        return self._core.meter(meter_id)

    def snapshot(self) -> Snapshot:
        return self._core.snapshot()

    def _log_scheduling(self) -> None:
        # Once, at the first link verdict: by then the thread has set its policy.
        how = self._core.snapshot().get("scheduling", "")
        if how.startswith("SCHED_FIFO"):
            log.info("control thread runs %s", how)
        else:
            log.warning("control thread runs %s: its period may jitter while the OCPP side is "
                        "busy (docs/deployment.md, real-time priority)", how)
