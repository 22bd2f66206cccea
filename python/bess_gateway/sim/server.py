"""The PCS/BMS simulator served over Modbus TCP (pymodbus 3.16 asyncio server).

``Simulator`` owns a ``BatteryModel`` and a register image laid out by a register map. Writes
from the gateway land in the image through pymodbus's ``SimDevice.action`` hook (called on every
register access, inside the event loop) and become the model's command; a tick task advances the
model with the measured loop time and publishes its state into the read registers.

``SimulatorThread`` runs a Simulator on its own event loop in a thread, for tests and benchmarks
that drive the gateway synchronously. ``serve()`` is the ``bess-gateway sim`` command.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from types import TracebackType
from typing import Any, Final, Self, TextIO, TypeVar, cast

from pymodbus.constants import ExcCodes
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from .battery import BatteryModel, BatteryParams, BatteryState, PcsCommand, PcsState
from .grid_meter import GridMeter, MeterReading
from .hub_load import HubLoad
from .profiles import resolve_profile
from .regmap import Direction, RegisterMap, RegisterMapError

__all__ = [
    "CONTROL_HELP",
    "DEFAULT_LOCAL_POWER_W",
    "SetpointWrite",
    "Simulator",
    "SimulatorThread",
    "WrittenCommands",
    "control_command",
    "serve",
]

log = logging.getLogger(__name__)

#: Registers the gateway writes; a map without them cannot command the model.
WRITE_REGISTERS: Final[tuple[str, ...]] = ("run", "setpoint_w", "watchdog", "fault_reset")

#: What the simulated PCS runs at under its own control (local mode; a SunSpec device with
#: 704.WSetEna = 0): a steady 20 kW discharge, so a test sees at once that nobody commands it.
DEFAULT_LOCAL_POWER_W: Final = 20_000.0

#: Function codes that write holding registers: refused in local mode.
_WRITE_FUNCTIONS: Final[frozenset[int]] = frozenset({6, 16, 22, 23})

#: Function codes that address holding registers. Anything else (coils, input registers) would
#: alias the same shared block in pymodbus's SimDevice, which no real PCS does.
_HOLDING_FUNCTIONS: Final[frozenset[int]] = frozenset({3, 6, 16, 22, 23})

_STATE_FIELDS: Final[frozenset[str]] = frozenset(f.name for f in fields(BatteryState))

SetpointWrite = tuple[float, float]  # (loop.time() of arrival, setpoint in W)


@dataclass(frozen=True, slots=True)
class WrittenCommands:
    """What the gateway has written so far, as the PCS saw it."""

    run: int
    setpoint_w: int
    watchdog: int
    fault_reset_writes: int  # writes of 1 to the fault-reset register
    write_count: int  # write requests that reached the write registers
    last_write_t: float | None  # loop.time() of the latest write


class Simulator:
    """A simulated PCS + BMS answering Modbus TCP on one port, for any unit id."""

    def __init__(
        self,
        *,
        profile: str | RegisterMap = "generic",
        params: BatteryParams | None = None,
        tick_s: float = 0.02,
        autotick: bool = True,
        setpoint_log_size: int = 4096,
        local_power_w: float = DEFAULT_LOCAL_POWER_W,
        grid_meter: GridMeter | None = None,
    ) -> None:
        """``autotick=False`` leaves time to the caller: nothing moves until ``step(dt)``.

        ``grid_meter``: the hub's grid meter, served on its own port by ``start`` and updated at
        every step with the PCS's measured power (sim/grid_meter.py).

        ``local_power_w`` (+ discharge, - charge) is the PCS's local setting, what it runs at
        under its own control: in local mode (``set_local_mode``) and, with the ``sunspec``
        profile, while 704.WSetEna = 0 (SunSpec: WSet control disabled, the inverter follows
        its own mode). The BMS limits still clamp it.
        """
        if tick_s <= 0:
            raise ValueError("tick_s must be > 0")
        self._map = profile if isinstance(profile, RegisterMap) else resolve_profile(profile)
        _check_map(self._map)
        self._model = BatteryModel(params)
        self._tick_s = tick_s
        self._autotick = autotick

        starts = [r.address for r in self._map] + list(self._map.constants)
        ends = [r.end for r in self._map] + [a + len(w) for a, w in self._map.constants.items()]
        self._base = min(starts)
        self._image = [0] * (max(ends) - self._base)
        for address, words in self._map.constants.items():
            self._image[address - self._base : address - self._base + len(words)] = words
        self._command = PcsCommand()
        self._fault_reset_pending = False
        self._fault_reset_writes = 0
        self._write_count = 0
        self._last_write_t: float | None = None
        self._setpoint_writes: deque[SetpointWrite] = deque(maxlen=setpoint_log_size)
        self._silent = False
        self._dropped_requests = 0
        self._connections = 0
        self._setpoint_written_t = 0.0  # model time of the last setpoint write
        self._reverted = False
        self._raw: dict[str, list[int]] = {}  # read points pinned to raw words (force_raw)
        self._local_power_w = float(local_power_w)
        self._local_mode = False
        self._refused_writes = 0
        # On a SunSpec device 704.WSetEna = 0 hands control back to the inverter's own mode.
        # The image starts at WSetEna = 1 with WSet = 0: an idle device that no heartbeat keeps
        # running, so it stays in standby until commanded, as with the generic map.
        self._own_mode_when_disabled = self._map.name == "sunspec"
        if self._own_mode_when_disabled:
            self._map.encode_into(self._image, "run", 1, base=self._base)

        self._meter = grid_meter
        self._server: ModbusTcpServer | None = None
        self._tick_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._host = ""
        self._port = 0
        self._state = self._model.state()
        self._publish(self._state)

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0,
                    grid_meter_port: int = 0) -> None:
        """Listen on ``host:port`` (port 0 picks a free one, see ``.port``) and start ticking;
        the grid meter (if any) listens on ``host:grid_meter_port``."""
        if self._server is not None:
            raise RuntimeError("simulator already started")
        self._loop = asyncio.get_running_loop()
        if self._meter is not None:
            await self._meter.start(host, grid_meter_port)
            self._meter.update(self._state.t_s, 0.0, self._state.measured_w, t=self._loop.time())
        device = SimDevice(
            id=0,  # 0 = answer every unit id, like a PCS behind a single-device gateway
            simdata=self._simdata(),
            action=self._on_access,
        )
        server = ModbusTcpServer(
            device,
            address=(host, port),
            # pymodbus keeps a received request only if this hook returns it; returning None is
            # how set_silent() drops requests (the hook is typed as always returning a PDU).
            trace_pdu=cast(Callable[[bool, ModbusPDU], ModbusPDU], self._trace_pdu),
            trace_connect=self._trace_connect,
        )
        try:
            await server.serve_forever(background=True)
        except RuntimeError as exc:
            if self._meter is not None:
                await self._meter.stop()
            raise OSError(f"simulator cannot listen on {host}:{port}: {exc}") from exc
        listener = cast(asyncio.Server, server.transport)
        self._server = server
        self._host = host
        self._port = int(listener.sockets[0].getsockname()[1])
        if self._autotick:
            self._tick_task = asyncio.create_task(self._tick_loop(), name="sim-tick")

    async def stop(self) -> None:
        task, self._tick_task = self._tick_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        server, self._server = self._server, None
        if server is not None:
            # shutdown() closes the listener and every open connection.
            await server.shutdown()
        if self._meter is not None:
            await self._meter.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        """The bound port (0 until started)."""
        return self._port

    @property
    def register_map(self) -> RegisterMap:
        return self._map

    @property
    def grid_meter(self) -> GridMeter | None:
        return self._meter

    @property
    def grid_meter_port(self) -> int:
        """The grid meter's bound port (0 without a meter or until started)."""
        return self._meter.port if self._meter is not None else 0

    @property
    def model(self) -> BatteryModel:
        return self._model

    @property
    def state(self) -> BatteryState:
        """The state last published to the read registers."""
        return self._state

    # -- time -----------------------------------------------------------------------------------

    def step(self, dt_s: float) -> BatteryState:
        """Advance the model by ``dt_s`` under the latest written command and publish it."""
        command = self._command
        if self._fault_reset_pending:
            # The fault-reset register acts once per write of 1, then reads back 0 as on
            # typical PCS controllers, so a reset is never applied twice.
            command = replace(command, fault_reset=True)
            self._fault_reset_pending = False
            self._map.encode_into(self._image, "fault_reset", 0, base=self._base)
            self._command = replace(self._command, fault_reset=False)
        command = self._pcs_side_limits(command)
        self._state = self._model.step(dt_s, command)
        self._publish(self._state)
        if self._meter is not None:
            # The meter sees the PCS's actual AC power, not the setpoint: the PCS's response
            # time is part of what a site controller has to deal with.
            self._meter.update(self._state.t_s, dt_s, self._state.measured_w,
                               t=self._loop.time() if self._loop is not None else self._state.t_s)
        return self._state

    async def _tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(self._tick_s)
            now = loop.time()
            try:
                self.step(now - last)
            except Exception:
                # A model bug must not silently freeze the registers forever without a trace,
                # nor kill the server: log it and keep ticking.
                log.exception("simulator tick failed")
            last = now

    # -- fault injection ------------------------------------------------------------------------

    def force_alarm_bits(self, mask: int) -> None:
        """OR ``mask`` into the alarm register (until cleared); any alarm trips the PCS."""
        self._model.forced_alarm_bits = mask
        self._republish()

    def clear_forced_alarms(self) -> None:
        """Stop forcing alarm bits. The fault stays latched until a fault reset is written."""
        self._model.forced_alarm_bits = 0
        self._republish()

    def force_temperature(self, celsius: float | None) -> None:
        """Pin both cell-temperature sensors to ``celsius``; None returns to the thermal model."""
        self._model.forced_temperature_c = celsius
        self._republish()

    def force_soc(self, pct: float) -> None:
        self._model.set_soc(pct)
        self._republish()

    def force_raw(self, name: str, words: list[int] | None) -> None:
        """Pin a read point to raw register words, whatever the model says (a broken sensor or
        a device's "not available" sentinel such as 0x8000, a SoC above 100 %); None releases it.
        """
        if name not in self._map:
            raise KeyError(f"no register {name!r} in map {self._map.name!r}")
        if words is None:
            self._raw.pop(name, None)
        else:
            reg = self._map[name]
            if len(words) != reg.end - reg.address or not all(0 <= w <= 0xFFFF for w in words):
                raise ValueError(f"{name}: {reg.end - reg.address} words of 0..65535 expected")
            self._raw[name] = list(words)
        self._republish()

    def set_silent(self, on: bool) -> None:
        """While on, requests are read and discarded unanswered (writes are not applied either);
        TCP connections stay open and new ones are still accepted."""
        self._silent = on

    def set_local_mode(self, on: bool) -> None:
        """A PCS switched to local mode at its panel: while on, every write is answered with a
        Modbus exception (04 SERVER_DEVICE_FAILURE) and not applied, reads are served as usual,
        and the PCS runs at its local setting (``set_local_power``) whatever was written before.
        Off: it follows the written command again (the next write, or the last one applied)."""
        self._local_mode = on

    def set_local_power(self, watts: float) -> None:
        """The local setting (+ discharge, - charge) the PCS runs at under its own control."""
        self._local_power_w = float(watts)

    @property
    def local_mode(self) -> bool:
        return self._local_mode

    @property
    def local_power_w(self) -> float:
        return self._local_power_w

    @property
    def local_control(self) -> bool:
        """True while the PCS follows its local setting, not the gateway: local mode, or (sunspec
        profile) 704.WSetEna = 0."""
        return self._local_mode or (self._own_mode_when_disabled and self._word("run") == 0)

    @property
    def refused_writes(self) -> int:
        """Write requests answered with an exception because of local mode."""
        return self._refused_writes

    @property
    def silent(self) -> bool:
        return self._silent

    @property
    def dropped_requests(self) -> int:
        return self._dropped_requests

    @property
    def connections(self) -> int:
        """Open client connections."""
        return self._connections

    # -- what the gateway wrote -----------------------------------------------------------------

    @property
    def written(self) -> WrittenCommands:
        def raw(name: str) -> int:
            reg = self._map[name]
            return reg.decode_raw(self._image[reg.address - self._base : reg.end - self._base])

        return WrittenCommands(
            run=raw("run"),
            setpoint_w=raw("setpoint_w"),
            watchdog=raw("watchdog"),
            fault_reset_writes=self._fault_reset_writes,
            write_count=self._write_count,
            last_write_t=self._last_write_t,
        )

    def setpoint_writes(self) -> list[SetpointWrite]:
        """(loop.time(), W) of every write that carried the setpoint, oldest first (bounded)."""
        return list(self._setpoint_writes)

    def clear_setpoint_writes(self) -> None:
        self._setpoint_writes.clear()

    def registers(self, address: int, count: int) -> list[int]:
        """The register words a read of ``count`` registers at ``address`` would return now."""
        lo = address - self._base
        if lo < 0 or lo + count > len(self._image):
            raise ValueError(f"registers {address}..{address + count - 1} are outside the map")
        return self._image[lo : lo + count]

    def status_line(self) -> str:
        s = self._state
        written = self.written
        return (
            f"state={PcsState(s.pcs_state).name.lower():<7} "
            f"setpoint={written.setpoint_w / 1000:+8.1f} kW "
            f"measured={s.measured_w / 1000:+8.1f} kW "
            f"soc={s.soc_pct:5.1f} % "
            f"temp={s.cell_temp_max_c:5.1f} C "
            f"alarms=0x{s.alarm_bits:04x} "
            f"writes={written.write_count}" + (" SILENT" if self._silent else "")
            + (" LOCAL" if self.local_control else "")
            + (f" | hub load={self._meter.load_w / 1000:7.1f} kW "
               f"grid={self._meter.grid_w / 1000:+8.1f} kW" if self._meter is not None else "")
        )

    # -- pymodbus hooks (run inside the event loop) ---------------------------------------------

    def _simdata(self) -> list[SimData]:
        blocks = [
            SimData(
                address=r.address,
                values=[0] * r.words,
                datatype=DataType.REGISTERS,
                # pymodbus then answers a write to a measurement with ILLEGAL_ADDRESS itself.
                readonly=r.direction is Direction.READ,
            )
            for r in self._map
        ]
        blocks += [
            SimData(address=address, values=list(words), datatype=DataType.REGISTERS,
                    readonly=True)
            for address, words in self._map.constants.items()
        ]
        return sorted(blocks, key=lambda b: b.address)

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU | None:
        if not sending and self._silent:
            self._dropped_requests += 1
            return None
        return pdu

    def _trace_connect(self, connected: bool) -> None:
        self._connections += 1 if connected else -1

    async def _on_access(
        self,
        func_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        if func_code not in _HOLDING_FUNCTIONS:
            return ExcCodes.ILLEGAL_FUNCTION
        if self._local_mode and (set_values is not None or func_code in _WRITE_FUNCTIONS):
            # pymodbus sends the exception response and leaves the registers as they were.
            self._refused_writes += 1
            return ExcCodes.DEVICE_FAILURE
        if set_values is None:
            # pymodbus answers from its own copy of the block: refresh the requested slice.
            lo = address - start_address
            src = address - self._base
            registers[lo : lo + count] = self._image[src : src + count]
        else:
            self._on_write(address, [int(v) for v in set_values])
        return None

    def _on_write(self, address: int, values: list[int]) -> None:
        now = self._loop.time() if self._loop is not None else 0.0
        lo = address - self._base
        self._image[lo : lo + len(values)] = values
        self._write_count += 1
        self._last_write_t = now
        end = address + len(values)

        def touched(name: str) -> bool:
            reg = self._map[name]
            return reg.address < end and address < reg.end

        setpoint = self._map["setpoint_w"]
        setpoint_w = setpoint.decode(
            self._image[setpoint.address - self._base : setpoint.end - self._base]
        )
        if touched("setpoint_w"):
            self._setpoint_writes.append((now, float(setpoint_w)))
            self._setpoint_written_t = self._state.t_s
        fault_reset = self._map["fault_reset"]
        if touched("fault_reset") and self._image[fault_reset.address - self._base] == 1:
            # Remembered here, not sampled at the tick, so a 1 followed by a 0 within one tick
            # still resets.
            self._fault_reset_pending = True
            self._fault_reset_writes += 1
        run = self._map["run"]
        watchdog = self._map["watchdog"]
        self._command = PcsCommand(
            run=self._image[run.address - self._base] == 1,
            setpoint_w=float(setpoint_w),
            watchdog=self._image[watchdog.address - self._base],
        )

    @property
    def reverted(self) -> bool:
        """True while a SunSpec PCS-side reversion (WSetRvrtTms expired) is in force."""
        return self._reverted

    def _word(self, name: str) -> float | None:
        if name not in self._map:
            return None
        reg = self._map[name]
        return reg.decode(self._image[reg.address - self._base : reg.end - self._base])

    def _pcs_side_limits(self, command: PcsCommand) -> PcsCommand:
        """What the PCS does on its own. Under local control (local mode; a SunSpec device with
        WSetEna = 0) it runs at its local setting, not the written command. A SunSpec PCS
        (model 704) also reverts WSet to WSetRvrt when it is not rewritten within WSetRvrtTms,
        and caps |W| at WMaxLimPct of the rating when enabled. Maps without these points
        (generic) are unaffected by the SunSpec rules."""
        timeout = self._word("704.WSetRvrtTms")
        self._reverted = bool(timeout) and (
            self._state.t_s - self._setpoint_written_t >= float(timeout or 0))
        if self._reverted:
            command = replace(command, setpoint_w=float(self._word("704.WSetRvrt") or 0.0))
        if self.local_control:
            command = replace(command, run=True, setpoint_w=self._local_power_w, supervised=False)
        if self._word("704.WMaxLimPctEna") == 1:
            cap = self._model.params.pcs_rating_w * float(self._word("704.WMaxLimPct") or 0) / 100
            command = replace(command, setpoint_w=max(-cap, min(cap, command.setpoint_w)))
        return command

    def _publish(self, state: BatteryState) -> None:
        computed = self._map.computed
        for reg in self._map.by_direction(Direction.READ):
            fn = computed.get(reg.name)
            value = fn(state) if fn is not None else getattr(state, reg.name)
            self._map.encode_into(
                self._image, reg.name, float(value), base=self._base, saturate=True
            )
        for name, words in self._raw.items():
            reg = self._map[name]
            self._image[reg.address - self._base : reg.end - self._base] = words

    def _republish(self) -> None:
        self._state = self._model.state()
        self._publish(self._state)


def _check_map(regmap: RegisterMap) -> None:
    problems: list[str] = []
    for name in WRITE_REGISTERS:
        if name not in regmap:
            problems.append(f"missing write register {name!r}")
        elif regmap[name].direction is not Direction.WRITE:
            problems.append(f"register {name!r} must have direction 'write'")
    for reg in regmap.by_direction(Direction.READ):
        if reg.name in regmap.computed:
            continue
        if reg.name not in _STATE_FIELDS or reg.name in ("t_s", "target_w"):
            problems.append(f"read register {reg.name!r} is not a quantity the model produces")
    if problems:
        raise RegisterMapError(
            f"register map {regmap.name!r} cannot drive the simulator: " + "; ".join(problems)
        )


# -- a Simulator on its own thread ------------------------------------------------------------

_T = TypeVar("_T")


class SimulatorThread:
    """A Simulator running on its own event loop in a daemon thread.

    Every method is safe to call from any thread: it runs on the simulator's loop and returns
    its result, so an effect (e.g. ``force_alarm_bits``) is in place when the call returns.
    """

    def __init__(
        self,
        *,
        profile: str | RegisterMap = "generic",
        params: BatteryParams | None = None,
        tick_s: float = 0.02,
        setpoint_log_size: int = 4096,
        local_power_w: float = DEFAULT_LOCAL_POWER_W,
        grid_meter: GridMeter | None = None,
    ) -> None:
        self._kwargs: dict[str, Any] = {
            "profile": profile,
            "params": params,
            "tick_s": tick_s,
            "setpoint_log_size": setpoint_log_size,
            "local_power_w": local_power_w,
            "grid_meter": grid_meter,
        }
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sim: Simulator | None = None
        self._stop_event: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._timeout_s = 5.0

    def start(self, host: str = "127.0.0.1", port: int = 0, *, timeout_s: float = 5.0,
              grid_meter_port: int = 0) -> None:
        """Return once the simulator listens (see ``.port``); re-raises a start failure."""
        if self._thread is not None:
            raise RuntimeError("simulator thread already started")
        self._timeout_s = timeout_s
        # Build it here so a bad profile raises in the caller's thread.
        sim = Simulator(**self._kwargs)
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(
            target=self._run, args=(sim, host, port, grid_meter_port), name="sim", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError(f"simulator did not start within {timeout_s} s")
        if self._error is not None:
            self._thread.join(timeout_s)
            self._thread = None
            raise self._error

    def _run(self, sim: Simulator, host: str, port: int, meter_port: int) -> None:
        # The stdlib loop, whatever policy the process installed: its loop.time() is
        # time.monotonic(), so setpoint_writes() timestamps compare with other threads' clocks
        # (uvloop's time() has millisecond resolution).
        with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
            runner.run(self._main(sim, host, port, meter_port))

    async def _main(self, sim: Simulator, host: str, port: int, meter_port: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        try:
            await sim.start(host, port, meter_port)
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._sim = sim
        self._ready.set()
        try:
            await self._stop_event.wait()
        finally:
            await sim.stop()

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        loop, stop_event = self._loop, self._stop_event
        if loop is not None and stop_event is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop may have just finished
                loop.call_soon_threadsafe(stop_event.set)
        thread.join(self._timeout_s)
        self._sim = None

    def __enter__(self) -> Self:
        if self._thread is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _call(self, fn: Callable[[Simulator], _T]) -> _T:
        sim, loop = self._sim, self._loop
        if sim is None or loop is None:
            raise RuntimeError("simulator thread is not running")

        async def run() -> _T:
            return fn(sim)

        return asyncio.run_coroutine_threadsafe(run(), loop).result(self._timeout_s)

    @property
    def host(self) -> str:
        return self._sim.host if self._sim is not None else ""

    @property
    def port(self) -> int:
        return self._sim.port if self._sim is not None else 0

    @property
    def grid_meter_port(self) -> int:
        return self._sim.grid_meter_port if self._sim is not None else 0

    def _meter(self) -> GridMeter:
        meter = self._kwargs["grid_meter"]
        if meter is None:
            raise RuntimeError("this simulator has no grid meter")
        return cast(GridMeter, meter)

    def set_hub_load(self, watts: float | None) -> float:
        """Hold the hub load at ``watts`` from the next tick (None: back to the profile);
        returns the simulator loop's time (time.monotonic()) at which it was set."""
        meter = self._meter()

        def apply(s: Simulator) -> float:
            meter.set_override(watts)
            return asyncio.get_running_loop().time()

        return self._call(apply)

    def set_hub_profile(self, load: HubLoad) -> None:
        meter = self._meter()
        self._call(lambda s: meter.set_load(load))

    def meter_readings(self, since: float | None = None) -> list[MeterReading]:
        """The grid meter's readings, stamped on the simulator loop's clock (time.monotonic())."""
        meter = self._meter()
        return self._call(lambda s: meter.readings(since))

    def meter_registers(self, address: int, count: int) -> list[int]:
        meter = self._meter()
        return self._call(lambda s: meter.registers(address, count))

    def force_meter_words(self, address: int, words: list[int] | None) -> None:
        meter = self._meter()
        self._call(lambda s: meter.force_words(address, words))

    def set_meter_silent(self, on: bool) -> None:
        meter = self._meter()
        self._call(lambda s: meter.set_silent(on))

    @property
    def state(self) -> BatteryState:
        return self._call(lambda s: s.state)

    @property
    def reverted(self) -> bool:
        return self._call(lambda s: s.reverted)

    def step(self, dt_s: float) -> BatteryState:
        return self._call(lambda s: s.step(dt_s))

    def force_alarm_bits(self, mask: int) -> None:
        self._call(lambda s: s.force_alarm_bits(mask))

    def clear_forced_alarms(self) -> None:
        self._call(lambda s: s.clear_forced_alarms())

    def force_temperature(self, celsius: float | None) -> None:
        self._call(lambda s: s.force_temperature(celsius))

    def force_soc(self, pct: float) -> None:
        self._call(lambda s: s.force_soc(pct))

    def force_raw(self, name: str, words: list[int] | None) -> None:
        self._call(lambda s: s.force_raw(name, words))

    def set_silent(self, on: bool) -> None:
        self._call(lambda s: s.set_silent(on))

    def set_local_mode(self, on: bool) -> None:
        self._call(lambda s: s.set_local_mode(on))

    def set_local_power(self, watts: float) -> None:
        self._call(lambda s: s.set_local_power(watts))

    @property
    def local_control(self) -> bool:
        return self._call(lambda s: s.local_control)

    @property
    def refused_writes(self) -> int:
        return self._call(lambda s: s.refused_writes)

    @property
    def written(self) -> WrittenCommands:
        return self._call(lambda s: s.written)

    def setpoint_writes(self) -> list[SetpointWrite]:
        return self._call(lambda s: s.setpoint_writes())

    def clear_setpoint_writes(self) -> None:
        self._call(lambda s: s.clear_setpoint_writes())

    def registers(self, address: int, count: int) -> list[int]:
        return self._call(lambda s: s.registers(address, count))

    def loop_time(self) -> float:
        """The simulator loop's clock, the time base of ``setpoint_writes`` (time.monotonic())."""
        return self._call(lambda s: asyncio.get_running_loop().time())


# -- `bess-gateway sim` -------------------------------------------------------------------------

CONTROL_HELP: Final = (
    "commands: 'load KW' holds the hub load at KW, 'load profile' returns to the profile, "
    "'meter silent' / 'meter answer' stop and resume the grid meter's answers, 'status'"
)


def control_command(sim: Simulator, line: str) -> str:
    """One line of the simulator's console (stdin of ``bess-gateway sim``) -> its answer.

    This is how a benchmark or an operator steps the hub load of a running simulator process
    (``load 900``) without a second protocol: the meter reads the new load from the next tick.
    """
    words = line.split()
    meter = sim.grid_meter
    if not words:
        return ""
    if words == ["status"]:
        return sim.status_line()
    if words[0] in ("load", "meter") and meter is None:
        return "error: this simulator has no grid meter"
    if meter is not None and len(words) == 2 and words[0] == "load":
        if words[1] in ("profile", "off"):
            meter.set_override(None)
            return f"hub load: {meter.load.describe()}"
        try:
            kw = float(words[1])
        except ValueError:
            kw = math.nan
        if not math.isfinite(kw):
            return f"error: {words[1]!r} is not a number of kW"
        meter.set_override(kw * 1000.0)
        return f"hub load held at {kw:g} kW"
    if meter is not None and words[0] == "meter" and words[1:] in (["silent"], ["answer"]):
        meter.set_silent(words[1] == "silent")
        return f"grid meter {'silent' if meter.silent else 'answering'}"
    return f"error: unknown command {line.strip()!r}; {CONTROL_HELP}"


def _read_lines(stream: TextIO, loop: asyncio.AbstractEventLoop,
                queue: asyncio.Queue[str | None]) -> None:
    # A daemon thread: a blocking readline must not keep the process alive at exit.
    try:
        for line in iter(stream.readline, ""):
            loop.call_soon_threadsafe(queue.put_nowait, line)
    except (OSError, ValueError, RuntimeError):  # stdin closed, or the loop already gone
        pass
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(queue.put_nowait, None)


async def serve(
    host: str = "127.0.0.1",
    port: int = 5020,
    profile: str = "generic",
    *,
    status_interval_s: float = 5.0,
    out: TextIO | None = None,
    local_power_w: float = DEFAULT_LOCAL_POWER_W,
    grid_meter: GridMeter | None = None,
    grid_meter_port: int = 0,
    control: TextIO | None = None,
) -> None:
    """Run the simulator until cancelled, printing a status line every ``status_interval_s``.

    ``profile`` is a shipped profile name or a path to a register-map TOML file; anything else
    raises RegisterMapError (a ValueError) naming the supported profiles. ``local_power_w`` is
    the PCS's local setting (``Simulator``). ``grid_meter`` is served on ``grid_meter_port``;
    ``control`` (stdin for the command) takes the console commands of ``control_command``.
    """
    sim = Simulator(profile=profile, local_power_w=local_power_w, grid_meter=grid_meter)

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    await sim.start(host, port, grid_meter_port)
    reader: asyncio.Task[None] | None = None
    try:
        say(
            f"PCS/BMS simulator (profile {sim.register_map.name}) listening on "
            f"{host}:{sim.port}, Modbus TCP, any unit id"
        )
        if grid_meter is not None:
            kind = ("generic map" if grid_meter.profile == "generic"
                    else f"SunSpec models 1 + {grid_meter.model}")
            say(f"grid meter ({kind}) listening on {host}:{sim.grid_meter_port}, any unit id; "
                f"hub load: {grid_meter.load.describe()}")
        if control is not None:
            queue: asyncio.Queue[str | None] = asyncio.Queue()
            threading.Thread(target=_read_lines, args=(control, asyncio.get_running_loop(),
                                                       queue), name="sim-console",
                             daemon=True).start()

            async def console() -> None:
                while (line := await queue.get()) is not None:
                    answer = control_command(sim, line)
                    if answer:
                        say(answer)

            reader = asyncio.create_task(console(), name="sim-console")
        while True:
            await asyncio.sleep(status_interval_s)
            say(sim.status_line())
    finally:
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        await sim.stop()
