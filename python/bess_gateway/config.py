"""Configuration: TOML -> frozen dataclasses, validated key by key.

The file format is the contract in docs/design.md section 3. Every key has a default except the
`[[endpoint]]` tables. Validation never stops at the first problem: it collects every error, each
naming its key path (`control.period_ms`, `endpoint[1] (HUB-001..HUB-050).csms_url`), and raises one
`ConfigError`. `endpoint[k]` is the k-th `[[endpoint]]` table of the file, counting from 0.

A table with `count = N` (and optional `start = 1`) is a block of N endpoints: `{n}` in `id`, in
`serial_number` and in an `env:` password name is replaced by the counter with `str.format`, so
`id = "HUB-{n:03}"` gives HUB-001, HUB-002, ...

Direct construction of the dataclasses is unvalidated (meant for tests); `parse_config`,
`load_config` and `Config.with_endpoints` validate.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from bess_gateway.security.profiles import basic_auth_id_problem

__all__ = [
    "Config",
    "ConfigError",
    "ControlConfig",
    "EndpointConfig",
    "GatewayConfig",
    "PcsConfig",
    "ProtectionConfig",
    "SiteConfig",
    "SiteWindow",
    "load_config",
    "parse_config",
]

LogFormat = Literal["text", "json"]
OcppVersion = Literal["1.6", "2.0.1", "2.1"]

OCPP_VERSIONS: tuple[str, ...] = ("1.6", "2.0.1", "2.1")
DischargeAs = Literal["import", "export"]
DISCHARGE_AS: tuple[str, ...] = ("import", "export")
PCS_PROFILES: tuple[str, ...] = ("generic", "sunspec")
METER_PROFILES: tuple[str, ...] = ("generic", "sunspec")
WINDOW_MODES: tuple[str, ...] = ("discharge", "charge", "hold")
DAY_NAMES: tuple[str, ...] = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_HHMM = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])|24:00")
ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,48}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MAX_BLOCK = 10_000  # endpoints in one count block
OPERATOR_MAX = 100  # characters of an operator name (it names a folder, escaped)
# OCPP CiString limits of BootNotification (1.6 is the stricter of the two versions)
_CISTRING_MAX = {"vendor": 20, "model": 20, "serial_number": 25}


class ConfigError(Exception):
    """An invalid configuration. `errors` holds one message per problem, each naming its key."""

    def __init__(self, errors: list[str], *, source: Path | None = None) -> None:
        self.errors = list(errors)
        self.source = source
        where = f"{source}: " if source is not None else ""
        n = len(self.errors)
        lines = "\n".join(f"  {e}" for e in self.errors)
        super().__init__(
            f"{where}{n} configuration error{'s' if n != 1 else ''}:\n{lines}\n"
            "Fix the keys above (see examples/gateway.toml), then check the file with "
            "`bess-gateway check-config PATH`."
        )


# -- the configuration --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayConfig:
    data_dir: Path = Path("var")  # SQLite journal, logs, diagnostics bundles
    metrics_listen: str = "127.0.0.1:9464"  # "" turns /metrics and /status off; port 0 = any free
    log_format: LogFormat = "text"
    # Unset: firmware updates end in InstallationFailed (nothing can install them).
    firmware_installer: str | None = None  # command run with the firmware file appended; 0 = ok
    queue_budget_mb: float = 256.0  # offline queue's disk budget, 10^6 B (operations.md)
    replay_rate_per_s: float = 50.0  # queued messages sent per s, whole gateway; 0 = unpaced
    maintenance_operator: str | None = None  # may update firmware; unset: the only operator

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        """(host, port) to listen on, or None when metrics are off."""
        if not self.metrics_listen:
            return None
        host, _, port = self.metrics_listen.rpartition(":")
        return host.strip("[]"), int(port)


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlConfig:
    period_ms: int = 100
    ramp_kw_per_s: float = 300.0
    session_max_kw: float = 150.0
    site_max_discharge_kw: float = 600.0
    site_max_charge_kw: float = 600.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ProtectionConfig:
    soc_min_pct: float = 5.0
    soc_max_pct: float = 95.0
    dc_voltage_min_v: float = 600.0
    dc_voltage_max_v: float = 900.0
    cell_temp_min_c: float = 0.0
    cell_temp_max_c: float = 55.0


@dataclass(frozen=True, slots=True, kw_only=True)
class PcsConfig:
    host: str = "127.0.0.1"
    port: int = 5020
    unit_id: int = 1
    profile: str = "generic"  # "generic", "sunspec" or the absolute path of a register-map TOML
    timeout_ms: int = 1000

    @property
    def profile_path(self) -> Path | None:
        """The register-map file when `profile` is a path, else None (a built-in profile)."""
        return None if self.profile in PCS_PROFILES else Path(self.profile)


@dataclass(frozen=True, slots=True, kw_only=True)
class SiteWindow:
    """One `[[site.window]]` (time of use, in the site's `timezone`)."""

    days: str = "Mon-Sun"  # Mon..Sun, ranges and lists ("Mon-Fri", "Sat,Sun")
    start: str = "00:00"  # local "HH:MM"
    end: str = "24:00"  # local "HH:MM"; at or before start: ends the next day
    mode: str = "hold"  # discharge | charge | hold
    power_kw: float = 0.0  # discharge: at least this much; charge: this much (hold: unused)
    weekdays: tuple[int, ...] = ()  # derived from days (0 = Monday)


@dataclass(frozen=True, slots=True, kw_only=True)
class SiteConfig:
    """The optional `[site]` table (design.md section 8); absent, nothing of it runs."""

    grid_meter: str = ""  # Modbus TCP meter at the grid connection point ("host:port")
    grid_meter_unit_id: int = 1  # its Modbus unit id
    grid_meter_profile: str = "generic"  # or "sunspec" (meter models 201/202/203/204, discovered)
    grid_meter_timeout_ms: int = 500  # request deadline; a reading older than this is stale
    grid_import_max_kw: float | None = None  # hard limit of the connection (absent: none)
    grid_export_max_kw: float | None = None  # hard export limit (0 = no export from the battery)
    peak_shave_kw: float | None = None  # demand-charge target: average import per window
    demand_window_min: int = 15  # clock-aligned billing window, minutes
    recharge_below_kw: float | None = None  # recharge only while import stays below (absent: never)
    recharge_max_kw: float = 100.0  # at most this much grid power for recharging
    reserve_soc_pct: float | None = None  # CSMS discharge sessions stop here
    timezone: str = "UTC"  # IANA name, for the windows and the demand window's alignment
    peak_margin_pct: float = 1.0  # part of the target the window law keeps in hand (control lag)
    grid_limit_margin_pct: float = 1.0  # the law aims this much inside the hard grid limits
    window: tuple[SiteWindow, ...] = ()  # [[site.window]] tables

    @property
    def meter_address(self) -> tuple[str, int]:
        host, _, port = self.grid_meter.rpartition(":")
        return host.strip("[]"), int(port)


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointConfig:
    id: str
    csms_url: str
    ocpp_version: OcppVersion = "1.6"
    security_profile: int = 0
    password: str | None = field(default=None, repr=False)  # resolved: never "env:..."
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    vendor: str = "bess-gateway"
    model: str = "BESS-OCPP"
    serial_number: str = ""  # "" = the id
    heartbeat_interval_s: int = 300
    meter_sample_interval_s: int = 10
    operator: str = ""  # trust domain (docs/security.md); "" = scheme://host:port of csms_url
    discharge_as: DischargeAs = "import"  # connector 1's energy/power measurands: Import or Export
    index: int = 0  # position in the expanded endpoint list; meter ids derive from it

    def __post_init__(self) -> None:
        if not self.serial_number:
            object.__setattr__(self, "serial_number", self.id)

    @property
    def url(self) -> str:
        """The URL to connect to: csms_url with "/<id>" appended."""
        return f"{self.csms_url.rstrip('/')}/{self.id}"

    @property
    def uses_tls(self) -> bool:
        return self.csms_url.startswith("wss://")

    @property
    def trust_domain(self) -> str:
        """The operator this endpoint belongs to: `operator`, else its CSMS's address."""
        return self.operator or default_operator(self.csms_url)


def default_operator(csms_url: str) -> str:
    """scheme://host:port of a CSMS URL (design.md section 10); the port always written, so
    "wss://csms.example" and "wss://csms.example:443" are one operator."""
    try:
        parts = urlsplit(csms_url)
        port = parts.port
    except ValueError:
        return csms_url
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"  # IPv6
    if port is None:
        port = {"ws": 80, "wss": 443}.get(scheme)
    return f"{scheme}://{host}" + (f":{port}" if port is not None else "")


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    protection: ProtectionConfig = field(default_factory=ProtectionConfig)
    pcs: PcsConfig = field(default_factory=PcsConfig)
    site: SiteConfig | None = None  # the [site] table, when the file has one
    endpoints: tuple[EndpointConfig, ...] = ()
    source: Path | None = None  # the file it was loaded from
    warnings: tuple[str, ...] = ()  # valid but probably not what was meant

    @classmethod
    def with_endpoints(
        cls,
        endpoints: Iterable[Mapping[str, Any]],
        *,
        base_dir: Path | None = None,
        **sections: Mapping[str, Any],
    ) -> Config:
        """Build a validated Config in code, e.g. for the demo.

        `endpoints` are tables as in the file (count blocks allowed); `sections` are the other
        tables by name (`gateway={"data_dir": tmp}`, `pcs={"port": 15020}`). Paths may be Path
        objects. Raises ConfigError like the file loader.
        """
        data: dict[str, Any] = dict(sections)
        data["endpoint"] = [dict(e) for e in endpoints]
        return parse_config(data, base_dir=base_dir or Path.cwd())

    def core_params(self) -> dict[str, Any]:
        """The parameters of the Rust ControlLoop / Controller (docs/architecture.md)."""
        c, p, pcs = self.control, self.protection, self.pcs
        return {
            "period_ms": c.period_ms,
            "ramp_kw_per_s": c.ramp_kw_per_s,
            "site_max_discharge_kw": c.site_max_discharge_kw,
            "site_max_charge_kw": c.site_max_charge_kw,
            "soc_min_pct": p.soc_min_pct,
            "soc_max_pct": p.soc_max_pct,
            "dc_voltage_min_v": p.dc_voltage_min_v,
            "dc_voltage_max_v": p.dc_voltage_max_v,
            "cell_temp_min_c": p.cell_temp_min_c,
            "cell_temp_max_c": p.cell_temp_max_c,
            "pcs_host": pcs.host,
            "pcs_port": pcs.port,
            "pcs_unit_id": pcs.unit_id,
            "pcs_timeout_ms": pcs.timeout_ms,
            # A register-map file is refused by Gateway.start (the core takes built-ins only).
            "pcs_profile": pcs.profile if pcs.profile_path is None else "generic",
            **self.site_params(),
        }

    def site_params(self) -> dict[str, Any]:
        """The `[site]` table as core parameters (none without it)."""
        site = self.site
        if site is None:
            return {}
        host, port = site.meter_address
        params: dict[str, Any] = {
            "site_grid_meter_host": host,
            "site_grid_meter_port": port,
            "site_grid_meter_unit_id": site.grid_meter_unit_id,
            "site_grid_meter_profile": site.grid_meter_profile,
            "site_grid_meter_timeout_ms": site.grid_meter_timeout_ms,
            "site_demand_window_min": site.demand_window_min,
            "site_recharge_max_kw": site.recharge_max_kw,
            "site_peak_margin_pct": site.peak_margin_pct,
            "site_grid_limit_margin_pct": site.grid_limit_margin_pct,
        }
        for key in ("grid_import_max_kw", "grid_export_max_kw", "peak_shave_kw",
                    "recharge_below_kw", "reserve_soc_pct"):
            value = getattr(site, key)
            if value is not None:
                params[f"site_{key}"] = value
        return params

    def unsupported(self) -> list[str]:
        """Valid keys this build cannot run, one message per key naming it.

        `run` and `check-config` refuse them like errors, so a file check-config passes starts.
        """
        if self.pcs.profile_path is not None:
            return [f"pcs.profile: {_show(self.pcs.profile)} is a register-map file, which the "
                    'control core of this build does not support; use "generic" or "sunspec"']
        return []

    def operators(self) -> dict[str, tuple[EndpointConfig, ...]]:
        """The trust domains: operator -> its endpoints, in configuration order."""
        out: dict[str, list[EndpointConfig]] = {}
        for ep in self.endpoints:
            out.setdefault(ep.trust_domain, []).append(ep)
        return {name: tuple(eps) for name, eps in out.items()}

    @property
    def maintainer(self) -> str | None:
        """The operator allowed actions on the shared gateway (firmware): the configured
        maintenance_operator, else the operator when all endpoints share one, else none."""
        if self.gateway.maintenance_operator is not None:
            return self.gateway.maintenance_operator
        names = self.operators()
        return next(iter(names)) if len(names) == 1 else None

    def version_counts(self) -> dict[str, int]:
        """Number of endpoints per OCPP version, every version present (possibly 0)."""
        counts = dict.fromkeys(OCPP_VERSIONS, 0)
        for ep in self.endpoints:
            counts[ep.ocpp_version] += 1
        return counts


# -- loading ------------------------------------------------------------------------------------
def load_config(path: str | os.PathLike[str], *, require_endpoints: bool = False) -> Config:
    """Read and validate a TOML file. Relative paths in it resolve against its folder.

    Every problem (missing file, TOML syntax, bad keys) raises ConfigError.
    """
    p = Path(path)
    try:
        with p.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(
            ["no such file; give the path of a TOML configuration (see examples/gateway.toml)"],
            source=p,
        ) from None
    except IsADirectoryError:
        raise ConfigError(["is a folder, not a TOML file"], source=p) from None
    except OSError as e:
        raise ConfigError([f"cannot read: {e.strerror or e}"], source=p) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"not valid TOML: {e}"], source=p) from None
    except UnicodeDecodeError as e:
        raise ConfigError([f"not valid UTF-8 text: {e}"], source=p) from None
    return parse_config(
        data, base_dir=p.parent.absolute(), require_endpoints=require_endpoints, source=p
    )


def parse_config(
    data: Mapping[str, Any],
    *,
    base_dir: Path,
    require_endpoints: bool = False,
    source: Path | None = None,
) -> Config:
    """Validate a parsed TOML document. Relative paths resolve against `base_dir`."""
    ctx = _Context(base_dir=Path(base_dir))
    _check_root(data, ctx)

    gw = _Table(_section(data, "gateway", ctx), "gateway", ctx)
    gateway = GatewayConfig(
        data_dir=gw.path("data_dir", must_exist=False) or Path("var"),
        metrics_listen=gw.listen_address("metrics_listen"),
        log_format=gw.choice("log_format", ("text", "json")),  # type: ignore[arg-type]
        firmware_installer=gw.optional_string("firmware_installer") or None,
        queue_budget_mb=gw.number("queue_budget_mb", 0.01, 1e6),
        replay_rate_per_s=gw.number("replay_rate_per_s", 0.0, 1e5),
        maintenance_operator=gw.operator_name("maintenance_operator"),
    )
    if gateway.data_dir.exists() and not gateway.data_dir.is_dir():
        gw.error("data_dir", f"{gateway.data_dir} exists and is not a folder")
    gw.finish()

    ct = _Table(_section(data, "control", ctx), "control", ctx)
    control = ControlConfig(
        period_ms=ct.integer("period_ms", 10, 1000),
        ramp_kw_per_s=ct.number("ramp_kw_per_s", 0.001, 1e5),
        session_max_kw=ct.number("session_max_kw", 0.0, 1e5, low_open=True),
        site_max_discharge_kw=ct.number("site_max_discharge_kw", 0.0, 1e5),
        site_max_charge_kw=ct.number("site_max_charge_kw", 0.0, 1e5),
    )
    ct.finish()

    pr = _Table(_section(data, "protection", ctx), "protection", ctx)
    protection = ProtectionConfig(
        soc_min_pct=pr.number("soc_min_pct", 0.0, 100.0),
        soc_max_pct=pr.number("soc_max_pct", 0.0, 100.0),
        dc_voltage_min_v=pr.number("dc_voltage_min_v", 0.0, 1500.0),
        dc_voltage_max_v=pr.number("dc_voltage_max_v", 0.0, 1500.0),
        cell_temp_min_c=pr.number("cell_temp_min_c", -40.0, 100.0),
        cell_temp_max_c=pr.number("cell_temp_max_c", -40.0, 100.0),
    )
    pr.ordered("soc_min_pct", "soc_max_pct")
    pr.ordered("dc_voltage_min_v", "dc_voltage_max_v")
    pr.ordered("cell_temp_min_c", "cell_temp_max_c")
    pr.finish()

    pc = _Table(_section(data, "pcs", ctx), "pcs", ctx)
    pcs = PcsConfig(
        host=pc.string("host", non_empty=True),
        port=pc.integer("port", 1, 65535),
        unit_id=pc.integer("unit_id", 0, 247),
        profile=pc.profile("profile"),
        timeout_ms=pc.integer("timeout_ms", 50, 60000),
    )
    pc.finish()

    site = _site(data["site"], ctx) if "site" in data else None

    endpoints = _endpoints(data.get("endpoint", []), ctx)
    if require_endpoints and not data.get("endpoint") and "endpoint" not in ctx.bad_roots:
        ctx.errors.append(
            'endpoint: no [[endpoint]] table; add at least one (id = "...", csms_url = "ws://...")'
        )

    _check_operators(gateway, endpoints, ctx)

    if ctx.errors:
        raise ConfigError(ctx.errors, source=source)
    return Config(
        gateway=gateway,
        control=control,
        protection=protection,
        pcs=pcs,
        site=site,
        endpoints=tuple(endpoints),
        source=source,
        warnings=tuple(ctx.warnings),
    )


# -- validation machinery -----------------------------------------------------------------------
_SECTIONS: dict[str, type] = {
    "gateway": GatewayConfig,
    "control": ControlConfig,
    "protection": ProtectionConfig,
    "pcs": PcsConfig,
}
_ROOT_KEYS = (*_SECTIONS, "site", "endpoint")
_ENDPOINT_KEYS = (*(f.name for f in fields(EndpointConfig) if f.name != "index"), "count", "start")


def _defaults(cls: type) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(cls):
        if f.default is not MISSING:
            out[f.name] = f.default
        elif f.default_factory is not MISSING:
            out[f.name] = f.default_factory()
    return out


def _show(value: Any) -> str:
    """A value as it would be written in TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, os.PathLike):
        return _show(os.fspath(value))
    if isinstance(value, float):
        return _num(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return str(value)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return "a date/time" if hasattr(value, "isoformat") else type(value).__name__


def _num(x: float) -> str:
    if math.isfinite(x) and x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return repr(x)


def _unknown_key_message(key: str, known: Iterable[str]) -> str:
    known = list(known)
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f'unknown key; did you mean "{close[0]}"?'
    return "unknown key; known keys are " + ", ".join(known)


@dataclass
class _Context:
    base_dir: Path
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    bad_roots: set[str] = field(default_factory=set)

    def resolve(self, value: str | os.PathLike[str]) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.base_dir / p


def _check_root(data: Mapping[str, Any], ctx: _Context) -> None:
    for key in data:
        if key in _ROOT_KEYS:
            continue
        owners = [s for s, cls in _SECTIONS.items() if key in _defaults(cls)]
        if owners:
            ctx.errors.append(
                f"{key}: unknown top-level key; it belongs in the [{owners[0]}] table"
            )
        elif key in _ENDPOINT_KEYS:
            ctx.errors.append(f"{key}: unknown top-level key; it belongs in an [[endpoint]] table")
        else:
            ctx.errors.append(f"{key}: {_unknown_key_message(key, _ROOT_KEYS)}")


def _section(data: Mapping[str, Any], name: str, ctx: _Context) -> Mapping[str, Any]:
    value = data.get(name, {})
    if isinstance(value, Mapping):
        return value
    ctx.errors.append(f"{name}: expected a table [{name}], got {_kind(value)}")
    return {}


class _Table:
    """Typed reads from one TOML table. A bad value records an error and yields the default."""

    def __init__(
        self,
        table: Mapping[str, Any],
        label: str,
        ctx: _Context,
        defaults: Mapping[str, Any] | None = None,
        extra_keys: Iterable[str] = (),
    ) -> None:
        self.table = table
        self.label = label
        self.ctx = ctx
        self.defaults = dict(defaults if defaults is not None else _defaults(_SECTIONS[label]))
        self.known: list[str] = [*self.defaults, *extra_keys]
        self.bad: set[str] = set()
        self.values: dict[str, Any] = {}

    def error(self, key: str, message: str) -> None:
        self.bad.add(key)
        self.ctx.errors.append(f"{self.label}.{key}: {message}")

    def warn(self, key: str, message: str) -> None:
        self.ctx.warnings.append(f"{self.label}.{key}: {message}")

    def has(self, key: str) -> bool:
        return key in self.table

    def _get(self, key: str) -> tuple[Any, bool]:
        if key in self.table:
            return self.table[key], True
        return self.defaults.get(key), False

    def _keep(self, key: str, value: Any) -> Any:
        self.values[key] = value
        return value

    def integer(self, key: str, low: int, high: int) -> int:
        value, given = self._get(key)
        default = self.defaults.get(key, low)
        if not given and value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            hint = " (drop the decimal point)" if isinstance(value, float) else ""
            self.error(key, f"expected an integer, got {_show(value)} ({_kind(value)[2:]}){hint}")
            return default
        if not low <= value <= high:
            self.error(key, f"{value} is out of range {low}..{high}")
            return default
        return self._keep(key, value)

    def number(self, key: str, low: float, high: float, *, low_open: bool = False) -> float:
        value, _ = self._get(key)
        given_default = self.defaults.get(key)
        default = float(low if given_default is None else given_default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.error(key, f"expected a number, got {_show(value)} ({_kind(value)[2:]})")
            return default
        value = float(value)
        if not math.isfinite(value):
            self.error(key, f"{_show(value)} is not a finite number")
            return default
        if low_open and value <= low:
            self.error(key, f"{_num(value)} must be greater than {_num(low)}")
            return default
        if not low <= value <= high:
            self.error(key, f"{_num(value)} is out of range {_num(low)}..{_num(high)}")
            return default
        return self._keep(key, value)

    def optional_number(self, key: str, low: float, high: float) -> float | None:
        """A number that is off (None) when the key is absent."""
        return self.number(key, low, high) if key in self.table else None

    def string(self, key: str, *, non_empty: bool = False) -> str:
        value, _ = self._get(key)
        default = self.defaults.get(key) or ""
        if not isinstance(value, str):
            self.error(key, f"expected a string, got {_show(value)} ({_kind(value)[2:]})")
            return default
        if non_empty and not value.strip():
            self.error(key, "must not be empty")
            return default
        return self._keep(key, value)

    def optional_string(self, key: str) -> str | None:
        if key not in self.table:
            return None
        value = self.table[key]
        if not isinstance(value, str):
            self.error(key, f"expected a string, got {_show(value)} ({_kind(value)[2:]})")
            return None
        return self._keep(key, value)

    def choice(self, key: str, choices: tuple[str, ...]) -> str:
        value, _ = self._get(key)
        if value in choices and isinstance(value, str):
            return self._keep(key, value)
        options = " or ".join(f'"{c}"' for c in choices)
        hint = (
            " (quote it)" if isinstance(value, int | float) and not isinstance(value, bool) else ""
        )
        self.error(key, f"{_show(value)} is not one of {options}{hint}")
        return str(self.defaults.get(key, choices[0]))

    def path(self, key: str, *, must_exist: bool) -> Path | None:
        if key not in self.table:
            default = self.defaults.get(key)
            return None if default is None else self.ctx.resolve(default)
        value = self.table[key]
        if not isinstance(value, str | os.PathLike) or not os.fspath(value):
            self.error(key, f"expected a path string, got {_show(value)}")
            return None
        p = self.ctx.resolve(value)
        if must_exist and not p.is_file():
            self.error(key, f"file not found: {p}")
            return None
        return self._keep(key, p)

    def listen_address(self, key: str) -> str:
        value = self.string(key)
        if key in self.bad or value == "":
            return value
        host, sep, port = value.rpartition(":")
        if not sep or not host.strip("[]") or not port.isdigit() or int(port) > 65535:
            self.error(key, f'{_show(value)} is not "host:port" (or "" to turn it off)')
            return str(self.defaults[key])
        return value

    def operator_name(self, key: str) -> str | None:
        """An operator name (a trust domain, docs/security.md); None when the key is absent."""
        value = self.optional_string(key)
        if value is None or key in self.bad:
            return None
        if not value.strip() or value != value.strip():
            self.error(key, f"{_show(value)} must be a non-empty name without surrounding spaces")
            return None
        if len(value) > OPERATOR_MAX or not value.isprintable():
            self.error(key, f"{_show(value)} must be 1 to {OPERATOR_MAX} printable characters")
            return None
        return value

    def profile(self, key: str) -> str:
        value = self.string(key, non_empty=True)
        if key in self.bad or value in PCS_PROFILES:
            return value
        if not value.endswith(".toml"):
            self.error(key, f'{_show(value)} is not "generic", "sunspec" or a path to a .toml file')
            return str(self.defaults[key])
        p = self.ctx.resolve(value)
        if not p.is_file():
            self.error(key, f"register-map file not found: {p}")
            return str(self.defaults[key])
        return str(p)

    def ordered(self, low_key: str, high_key: str) -> None:
        if low_key in self.bad or high_key in self.bad:
            return
        low = self.values.get(low_key, self.defaults[low_key])
        high = self.values.get(high_key, self.defaults[high_key])
        if not low < high:
            key = high_key if high_key in self.table and low_key not in self.table else low_key
            self.error(key, f"{low_key} ({_num(low)}) must be less than {high_key} ({_num(high)})")

    def finish(self) -> None:
        for key in self.table:
            if key not in self.known:
                self.error(key, _unknown_key_message(key, self.known))


# -- site ---------------------------------------------------------------------------------------
def _site(raw: Any, ctx: _Context) -> SiteConfig | None:
    if not isinstance(raw, Mapping):
        ctx.errors.append(f"site: expected a table [site], got {_kind(raw)}")
        return None
    t = _Table(raw, "site", ctx, defaults=_defaults(SiteConfig))

    if not t.has("grid_meter"):
        t.error("grid_meter", 'missing: the site needs its grid meter ("host:port")')
        meter = ""
    else:
        meter = t.string("grid_meter", non_empty=True)
        if "grid_meter" not in t.bad:
            host, sep, port = meter.rpartition(":")
            if not sep or not host.strip("[]") or not port.isdigit() or not 0 < int(port) <= 65535:
                t.error("grid_meter", f'{_show(meter)} is not "host:port"')
    timezone = t.string("timezone", non_empty=True)
    if "timezone" not in t.bad:
        try:
            from zoneinfo import ZoneInfo

            ZoneInfo(timezone)
        except (ValueError, KeyError, OSError):
            t.error("timezone", f"{_show(timezone)} is not a known IANA time zone "
                    '(e.g. "Europe/Berlin", "UTC")')
    site = SiteConfig(
        grid_meter=meter,
        grid_meter_unit_id=t.integer("grid_meter_unit_id", 0, 247),
        grid_meter_profile=t.choice("grid_meter_profile", METER_PROFILES),
        grid_meter_timeout_ms=t.integer("grid_meter_timeout_ms", 20, 60000),
        grid_import_max_kw=t.optional_number("grid_import_max_kw", 0.0, 1e5),
        grid_export_max_kw=t.optional_number("grid_export_max_kw", 0.0, 1e5),
        peak_shave_kw=t.optional_number("peak_shave_kw", 0.0, 1e5),
        demand_window_min=t.integer("demand_window_min", 1, 60),
        recharge_below_kw=t.optional_number("recharge_below_kw", 0.0, 1e5),
        recharge_max_kw=t.number("recharge_max_kw", 0.0, 1e5),
        reserve_soc_pct=t.optional_number("reserve_soc_pct", 0.0, 100.0),
        timezone=timezone,
        peak_margin_pct=t.number("peak_margin_pct", 0.0, 50.0),
        grid_limit_margin_pct=t.number("grid_limit_margin_pct", 0.0, 10.0),
        window=_site_windows(raw.get("window", []), ctx),
    )
    t.finish()
    return site


def _site_windows(raw: Any, ctx: _Context) -> tuple[SiteWindow, ...]:
    if not isinstance(raw, list):
        ctx.errors.append(f"site.window: write [[site.window]] (an array of tables), "
                          f"got {_kind(raw)}")
        return ()
    out = []
    defaults = _defaults(SiteWindow)
    defaults.pop("weekdays")
    for i, table in enumerate(raw):
        label = f"site.window[{i}]"
        if not isinstance(table, Mapping):
            ctx.errors.append(f"{label}: expected a table, got {_kind(table)}")
            continue
        t = _Table(table, label, ctx, defaults=defaults)
        days = t.string("days", non_empty=True)
        weekdays = _weekdays(days) if "days" not in t.bad else ()
        if weekdays is None:
            t.error("days", f"{_show(days)} is not a list of days and ranges of "
                    f"{', '.join(DAY_NAMES)} (e.g. \"Mon-Fri\", \"Sat,Sun\")")
            weekdays = ()
        start = t.string("start", non_empty=True)
        end = t.string("end", non_empty=True)
        for key, value in (("start", start), ("end", end)):
            if key not in t.bad and not _HHMM.fullmatch(value):
                t.error(key, f'{_show(value)} is not a local time "HH:MM" (00:00..24:00)')
        if "start" not in t.bad and "end" not in t.bad and start == end:
            t.error("end", f"end {_show(end)} equals start: the window would be empty")
        if "start" not in t.bad and start == "24:00":
            t.error("start", '"24:00" is an end, not a start; use "00:00"')
        mode = t.choice("mode", WINDOW_MODES)
        power = t.number("power_kw", 0.0, 1e5)
        if mode in ("discharge", "charge") and not t.has("power_kw") and "mode" not in t.bad:
            t.error("power_kw", f"missing: a {mode} window needs its power")
        t.finish()
        out.append(SiteWindow(days=days, start=start, end=end, mode=mode, power_kw=power,
                              weekdays=tuple(weekdays)))
    return tuple(out)


def _weekdays(days: str) -> list[int] | None:
    """"Mon-Fri" -> [0..4], "Sat,Sun" -> [5, 6], "Fri-Mon" wraps; None when it does not parse."""
    out: set[int] = set()
    for part in days.split(","):
        part = part.strip()
        first, sep, last = part.partition("-")
        names = [first.strip(), last.strip()] if sep else [part]
        if any(n.title() not in DAY_NAMES or len(n) != 3 for n in names):
            return None
        a = DAY_NAMES.index(names[0].title())
        b = DAY_NAMES.index(names[-1].title())
        out.update((a + k) % 7 for k in range((b - a) % 7 + 1))
    return sorted(out)


# -- endpoints ----------------------------------------------------------------------------------
def _expand(template: str, n: int) -> str:
    return template.format(n=n)


def _many(items: list[str], limit: int = 3) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _endpoints(raw: Any, ctx: _Context) -> list[EndpointConfig]:
    if isinstance(raw, Mapping):
        ctx.bad_roots.add("endpoint")
        ctx.errors.append("endpoint: write [[endpoint]] (an array of tables), not [endpoint]")
        return []
    if not isinstance(raw, list):
        ctx.bad_roots.add("endpoint")
        ctx.errors.append(f"endpoint: expected [[endpoint]] tables, got {_kind(raw)}")
        return []

    out: list[EndpointConfig] = []
    seen: dict[str, str] = {}  # lower-cased id -> label of its table
    for k, table in enumerate(raw):
        if not isinstance(table, Mapping):
            ctx.errors.append(f"endpoint[{k}]: expected a table, got {_kind(table)}")
            continue
        out.extend(_endpoint_block(k, table, seen, ctx))
    return [replace(ep, index=i) for i, ep in enumerate(out)]


def _endpoint_block(
    k: int, table: Mapping[str, Any], seen: dict[str, str], ctx: _Context
) -> list[EndpointConfig]:
    defaults = _defaults(EndpointConfig)
    defaults.pop("index")
    defaults.update(id=None, csms_url=None, count=None, start=1)
    t = _Table(table, f"endpoint[{k}]", ctx, defaults)

    # -- count block and ids: decide the label first so every error names the endpoints
    count: int | None = None
    if t.has("count"):
        count = t.integer("count", 1, _MAX_BLOCK)
        if "count" in t.bad:
            count = None
    elif t.has("start"):
        t.error("start", "only has a meaning with count; add count = N or remove start")
    start = t.integer("start", 0, 1_000_000_000)
    numbers = list(range(start, start + count)) if count is not None else []

    template = t.string("id", non_empty=True) if t.has("id") else None
    if template is None and "id" not in t.bad:
        t.error("id", 'missing; every [[endpoint]] needs an id (e.g. "BESS-01" or "HUB-{n:03}")')
    ids: list[str] = []
    if template and "id" not in t.bad and "count" not in t.bad:
        if count is None:
            ids = [template]
        else:
            try:
                ids = [_expand(template, n) for n in numbers]
            except (KeyError, IndexError, ValueError, AttributeError) as e:
                t.error(
                    "id", f'cannot expand {_show(template)} ({e}); use {{n}}, e.g. "HUB-{{n:03}}"'
                )
            else:
                if count > 1 and len(set(ids)) == 1:
                    t.error(
                        "id",
                        f"{_show(template)} gives the same id {count} times; use {{n}}, "
                        'e.g. "HUB-{n:03}"',
                    )
                    ids = []
    if ids:
        t.label = (
            f"endpoint[{k}] ({ids[0]})"
            if len(ids) == 1
            else (f"endpoint[{k}] ({ids[0]}..{ids[-1]})")
        )

    # -- shared keys
    csms_url = t.string("csms_url", non_empty=True) if t.has("csms_url") else ""
    if not t.has("csms_url"):
        t.error(
            "csms_url", 'missing; set the CSMS WebSocket URL, e.g. "ws://csms.example:9000/ocpp"'
        )
    version = t.choice("ocpp_version", OCPP_VERSIONS)
    profile = t.integer("security_profile", 0, 3)
    password_raw = t.optional_string("password")
    ca_file = t.path("ca_file", must_exist=True)
    cert_file = t.path("cert_file", must_exist=True)
    key_file = t.path("key_file", must_exist=True)
    vendor = t.string("vendor", non_empty=True)
    model = t.string("model", non_empty=True)
    serial_raw = t.optional_string("serial_number")
    heartbeat = t.integer("heartbeat_interval_s", 30, 3600)
    sample = t.integer("meter_sample_interval_s", 1, 300)
    operator = t.operator_name("operator") or ""
    discharge_as = t.choice("discharge_as", DISCHARGE_AS)
    t.finish()

    for key, value in (("vendor", vendor), ("model", model)):
        _check_cistring(t, key, value)

    scheme = ""
    if csms_url and "csms_url" not in t.bad:
        scheme = _check_url(t, csms_url)

    # -- security profile requirements
    if "security_profile" not in t.bad:
        if profile in (2, 3) and scheme == "ws":
            t.error("csms_url", f"security_profile {profile} needs TLS: use a wss:// URL")
        if profile in (1, 2) and password_raw is None and "password" not in t.bad:
            t.error(
                "password",
                f"required for security_profile {profile} (basic auth); "
                'set password = "env:NAME" and export NAME',
            )
        if profile == 3:
            for key, value in (("cert_file", cert_file), ("key_file", key_file)):
                if value is None and key not in t.bad:
                    t.error(key, "required for security_profile 3 (TLS client certificate)")
        if profile in (0, 3) and password_raw is not None:
            t.warn("password", f"is not used with security_profile {profile}")
        if profile < 3 and (cert_file or key_file):
            t.warn("cert_file", f"client certificate is not used with security_profile {profile}")
        if scheme == "ws" and ca_file is not None:
            t.warn("ca_file", "is not used with a ws:// URL")

    # -- per endpoint: ids, serial numbers, passwords
    if profile in (0, 3):
        password_raw = None  # not used (warned above): an unset env: variable is no error
    passwords = _passwords(t, password_raw, numbers if count is not None else [None])
    serials = _serials(t, serial_raw, ids, numbers if count is not None else [None])

    bad_ids = [i for i in ids if not ID_PATTERN.fullmatch(i)]
    if bad_ids:
        t.error(
            "id",
            f"{_many([_show(i) for i in bad_ids])}: an id is 1 to 48 characters of "
            "A-Z a-z 0-9 . _ : - (it becomes a URL path segment)",
        )
    if profile in (1, 2) and "security_profile" not in t.bad:
        for i in ids:
            problem = basic_auth_id_problem(i)
            if problem is not None:
                t.error("id", f"{problem}; security_profile {profile} sends the id as the Basic "
                        "auth user: use an id without ':' or security_profile 3")
                break
    dups: list[str] = []
    for i in ids:
        previous = seen.get(i.lower())
        if previous is not None:
            dups.append(f"{_show(i)} (already in {previous})")
        else:
            seen[i.lower()] = t.label
    if dups:
        t.error("id", f"duplicate id {_many(dups)}; ids must be unique (ignoring case)")

    if t.bad:
        return []
    return [
        EndpointConfig(
            id=ident,
            csms_url=csms_url,
            ocpp_version=version,  # type: ignore[arg-type]  # checked by choice()
            security_profile=profile,
            password=password,
            ca_file=ca_file,
            cert_file=cert_file,
            key_file=key_file,
            vendor=vendor,
            model=model,
            serial_number=serial,
            heartbeat_interval_s=heartbeat,
            meter_sample_interval_s=sample,
            operator=operator,
            discharge_as=discharge_as,  # type: ignore[arg-type]  # checked by choice()
        )
        for ident, password, serial in zip(ids, passwords, serials, strict=True)
    ]


def _check_operators(gateway: GatewayConfig, endpoints: list[EndpointConfig],
                     ctx: _Context) -> None:
    """maintenance_operator must name an endpoint's operator; with several operators and none
    named, no CSMS may update the firmware (a warning, since that may be meant)."""
    names = list(dict.fromkeys(ep.trust_domain for ep in endpoints))
    wanted = gateway.maintenance_operator
    if wanted is not None and endpoints and wanted not in names:
        close = difflib.get_close_matches(wanted, names, n=1, cutoff=0.6)
        hint = f'; did you mean "{close[0]}"?' if close else \
            "; the operators are " + _many([_show(n) for n in names], 5)
        ctx.errors.append(f"gateway.maintenance_operator: {_show(wanted)} is no endpoint's "
                          f"operator{hint}")
    elif wanted is None and len(names) > 1:
        ctx.warnings.append(
            f"gateway.maintenance_operator: unset with {len(names)} operators "
            f"({_many([_show(n) for n in names], 3)}): no CSMS may update the firmware; name "
            "the operator that maintains the gateway")


def _check_cistring(t: _Table, key: str, value: str) -> bool:
    if key in t.bad:
        return False
    limit = _CISTRING_MAX[key]
    if len(value) > limit:
        t.error(key, f"{_show(value)} is {len(value)} characters; OCPP allows at most {limit}")
        return False
    if not value.isascii() or not value.isprintable():
        t.error(key, f"{_show(value)} must be printable ASCII (an OCPP CiString)")
        return False
    return True


def _check_url(t: _Table, url: str) -> str:
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a bad port
    except ValueError as e:
        t.error("csms_url", f"{_show(url)} is not a valid URL ({e})")
        return ""
    if parts.scheme not in ("ws", "wss"):
        t.error("csms_url", f"{_show(url)} must start with ws:// or wss://")
        return ""
    if not parts.hostname:
        t.error("csms_url", f"{_show(url)} has no host")
        return ""
    if parts.query or parts.fragment:
        t.error(
            "csms_url",
            f'{_show(url)} must not have a query or fragment (the gateway appends "/<id>")',
        )
        return ""
    return parts.scheme


def _passwords(t: _Table, raw: str | None, numbers: list[int | None]) -> list[str | None]:
    if raw is None or "password" in t.bad:
        return [None] * len(numbers)
    if not raw.startswith("env:"):
        if not raw:
            t.error("password", 'must not be empty; remove it or use "env:NAME"')
        elif len(raw) > 40:
            t.error("password", "is longer than 40 characters (the OCPP limit)")
        return [raw] * len(numbers)
    out: list[str | None] = []
    missing: list[str] = []
    for n in numbers:
        try:
            name = raw[4:] if n is None else _expand(raw[4:], n)
        except (KeyError, IndexError, ValueError, AttributeError) as e:
            t.error(
                "password",
                f'cannot expand {_show(raw)} ({e}); use {{n}}, e.g. "env:HUB_{{n:03}}_PASSWORD"',
            )
            return [None] * len(numbers)
        if not _ENV_NAME.fullmatch(name):
            t.error("password", f"{_show(name)} is not an environment variable name")
            return [None] * len(numbers)
        value = os.environ.get(name)
        if not value:
            missing.append(name)
        out.append(value)
    if missing:
        t.error(
            "password",
            f"environment variable{'s' if len(missing) > 1 else ''} {_many(missing)} "
            f"{'are' if len(missing) > 1 else 'is'} not set (or empty); "
            "export it before starting the gateway",
        )
    return out


def _serials(t: _Table, raw: str | None, ids: list[str], numbers: list[int | None]) -> list[str]:
    if raw is None or "serial_number" in t.bad:
        long_ids = [
            i for i in ids if len(i) > _CISTRING_MAX["serial_number"] and ID_PATTERN.fullmatch(i)
        ]
        if long_ids and "serial_number" not in t.bad:
            limit = _CISTRING_MAX["serial_number"]
            t.error(
                "serial_number",
                f"defaults to the id, and {_many(long_ids)} is longer than {limit} characters "
                "(the OCPP limit); set serial_number",
            )
        return list(ids)
    out: list[str] = []
    for n in numbers:
        try:
            out.append(raw if n is None else _expand(raw, n))
        except (KeyError, IndexError, ValueError, AttributeError) as e:
            t.error("serial_number", f"cannot expand {_show(raw)} ({e}); use {{n}}")
            return list(ids)
    for s in dict.fromkeys(out):
        if not _check_cistring(t, "serial_number", s):
            break
    return out
