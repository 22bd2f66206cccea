"""Type stubs of the Rust extension `bess_gateway._core` (rust/bindings).

Units: W, Wh, V, A, degC, %, seconds. `meter_id = endpoint_index * 2 + (connector - 1)`;
`direction` is +1 (discharge, connector 1) or -1 (charge, connector 2). Bad values raise
ValueError naming the key or argument; a loop used in the wrong state raises RuntimeError.
"""

from bess_gateway.control import (
    ControlParams,
    CoreEvent,
    MeterReading,
    Snapshot,
    StepResult,
)

__version__: str

class ControlLoop:
    """The control thread that owns the PCS link (Modbus TCP)."""

    def __init__(self, params: ControlParams | dict[str, object] | None = None) -> None: ...
    def start(self) -> None:
        """Starts the thread; RuntimeError if already started or stopped."""
    def stop(self) -> None:
        """Writes setpoint 0 + standby (best effort) and joins the thread; releases the GIL."""
    def start_session(
        self,
        meter_id: int,
        direction: int,
        cap_w: float,
        group: int | None = None,
        schedule: list[tuple[float, float]] | None = None,
    ) -> None:
        """Starts (or replaces) the session on `meter_id` with `schedule` (default: empty).

        With `group`, the meter joins that group (as `set_session_group`). All in one command,
        so no control cycle sees the session without its group or schedule.
        """
    def set_session_cap(self, meter_id: int, cap_w: float) -> None: ...
    def set_session_group(self, meter_id: int, group_id: int | None) -> None:
        """Group membership belongs to the meter and outlives sessions; None leaves the group."""
    def set_group_schedule(self, group_id: int, schedule: list[tuple[float, float]]) -> None:
        """Caps the sum of the group's allocations, discharge and charge counted together, like
        a session schedule: no limit before the first period, [] never limits."""
    def clear_group(self, group_id: int) -> None: ...
    def set_hold(self, hold_id: int, direction: int, power_w: float) -> None:
        """Sets `power_w` of one direction aside (replaces hold `hold_id`): the holds of a
        direction are taken off its limit before allocation (never below 0); no setpoint."""
    def clear_hold(self, hold_id: int) -> None: ...
    def set_session_schedule(self, meter_id: int, schedule: list[tuple[float, float]]) -> None:
        """`(start_epoch_s, limit_w)` periods, starts strictly increasing; [] clears."""
    def stop_session(self, meter_id: int) -> None: ...
    def set_site_calendar(self, offsets: list[tuple[float, float]],
                          windows: list[tuple[float, float, str, float]]) -> None: ...
    def set_meter(self, meter_id: int, energy_wh: float) -> None:
        """Restores a meter register (at start-up, from the journal)."""
    def meter(self, meter_id: int) -> MeterReading:
        """As of the last cycle; an unknown meter reads 0 Wh, inactive."""
    def snapshot(self) -> Snapshot: ...
    def event_fd(self) -> int:
        """Readable while events are queued (register with `loop.add_reader`)."""
    def drain_events(self) -> list[CoreEvent]:
        """Takes all queued events and empties the wake socket."""
    def _inject_panic(self) -> None:
        """Fault injection for tests: the control thread panics in its next cycle."""

class Controller:
    """The pure control step: no thread, no socket, no clock."""

    def __init__(self, params: ControlParams | dict[str, object] | None = None) -> None: ...
    def start_session(
        self,
        meter_id: int,
        direction: int,
        cap_w: float,
        group: int | None = None,
        schedule: list[tuple[float, float]] | None = None,
    ) -> None: ...
    def set_session_cap(self, meter_id: int, cap_w: float) -> None: ...
    def set_session_schedule(self, meter_id: int, schedule: list[tuple[float, float]]) -> None: ...
    def set_session_group(self, meter_id: int, group_id: int | None) -> None: ...
    def set_group_schedule(self, group_id: int, schedule: list[tuple[float, float]]) -> None: ...
    def clear_group(self, group_id: int) -> None: ...
    def set_hold(self, hold_id: int, direction: int, power_w: float) -> None: ...
    def clear_hold(self, hold_id: int) -> None: ...
    def stop_session(self, meter_id: int) -> None: ...
    def set_site_calendar(self, offsets: list[tuple[float, float]],
                          windows: list[tuple[float, float, str, float]]) -> None: ...
    def set_meter(self, meter_id: int, energy_wh: float) -> None: ...
    def step(self, now_s: float, registers: list[int] | None, wall_s: float | None = None,
             grid_w: float | None = None) -> StepResult:
        """One cycle at `now_s` (epoch s) with the 28 words from address 100, None = no answer."""

def default_register_map() -> dict[str, int]:
    """The `generic` profile: register name -> zero-based holding-register address."""
