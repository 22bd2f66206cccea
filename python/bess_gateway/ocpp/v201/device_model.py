"""The 2.0.1 device model: components and variables, each a view of the shared domain.

A variable is backed by a domain setting (``setting``: the same value 1.6 shows as a
configuration key), a fixed value, or a live reading (``read``: battery SoC, temperatures).
GetVariables, SetVariables and the reports only consult this table. A feature block may also
contribute rows as a ``VARIABLES`` list in its own module (collected by ``table``).

Characteristics of setting-backed variables come from the setting itself (integer/boolean/
MemberList, its range and allowed items), so a range is written once, in domain/settings.py.
Values persist because settings persist (the journal); ReadOnly facts are computed.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from bess_gateway.domain.authorization import CACHE_MAX_LENGTH, LOCAL_LIST_MAX_LENGTH
from bess_gateway.domain.settings import SPECS, SettingError
from bess_gateway.domain.smart_charging import Limits as ChargingLimits
from bess_gateway.domain.station import DISCHARGE_CONNECTOR
from bess_gateway.domain.timefmt import iso
from bess_gateway.endpoint import connection_security
from bess_gateway.ocpp.v201 import network
from bess_gateway.ocpp.v201.context import Context
from bess_gateway.ocpp.v201.status import (
    CONNECTOR_ID,
    EVSES,
    V21_CONNECTOR,
    V21_EVSE,
    connector_status,
)
from bess_gateway.security.certificates import MAX_CERTIFICATES

log = logging.getLogger("bess_gateway.ocpp.v201")

Mutability = Literal["ReadOnly", "ReadWrite", "WriteOnly"]
DataType = Literal["string", "decimal", "integer", "dateTime", "boolean", "OptionList",
                   "SequenceList", "MemberList"]
Key = tuple[str, str | None, int | None, int | None, str, str | None]

# Blocks whose module may define VARIABLES (imported lazily: they import this module).
CONTRIBUTORS = ("transactions", "remote", "metering", "smart_charging", "reservation",
                "security", "availability", "firmware", "diagnostics", "data_transfer",
                "iso15118", "provisioning", "authorization")

# What the DeviceDataCtrlr advertises: a request above these gets a CALLERROR (B06.FR.16/17).
MAX_ITEMS_PER_MESSAGE = 64
MAX_BYTES_PER_MESSAGE = 65_536
VALUE_SIZE = 1000  # ConfigurationValueSize / ReportingValueSize (2.0.1 allows up to 2500)


@dataclass(frozen=True, slots=True)
class Variable:
    component: str
    name: str
    setting: str | None = None  # the domain setting it translates
    fixed: str | None = None  # a constant value
    read: Callable[[Context], str | None] | None = None  # a live value (None: not available)
    evse: int | None = None
    connector: int | None = None
    component_instance: str | None = None
    instance: str | None = None
    mutability: Mutability = "ReadWrite"
    data_type: DataType = "string"
    unit: str | None = None
    values_list: str | None = None  # OptionList/MemberList/SequenceList: allowed values
    max_limit: float | None = None
    min_limit: float | None = None
    reboot_required: bool = False
    # Wire text -> setting text, when the two differ (raises SettingError to refuse).
    to_setting: Callable[[str], str] | None = field(default=None, compare=False)
    # A live maxLimit (EVSE power from the core's limits), replacing max_limit in reports.
    read_max: Callable[[Context], float | None] | None = field(default=None, compare=False)
    # A live minLimit, given as its magnitude (2.1 EVSE power: the most it may discharge).
    read_min: Callable[[Context], float | None] | None = field(default=None, compare=False)

    @property
    def key(self) -> Key:
        return (self.component, self.component_instance, self.evse, self.connector, self.name,
                self.instance)

    @property
    def component_key(self) -> tuple[str, str | None, int | None, int | None]:
        return (self.component, self.component_instance, self.evse, self.connector)


# -- building rows ------------------------------------------------------------------------------
_KIND_TYPES: dict[str, DataType] = {"int": "integer", "bool": "boolean", "csv": "MemberList",
                                    "str": "string"}


def setting(component: str, name: str, setting_name: str, *, instance: str | None = None,
            unit: str | None = None, data_type: DataType | None = None,
            mutability: Mutability = "ReadWrite", **kw: Any) -> Variable | None:
    """A variable backed by a domain setting; None when no such setting exists (yet)."""
    spec = SPECS.get(setting_name)
    if spec is None:
        return None
    return Variable(
        component, name, setting=setting_name, instance=instance, unit=unit,
        mutability="ReadOnly" if spec.readonly else mutability,
        data_type=data_type or _KIND_TYPES[spec.kind],
        values_list=",".join(spec.choices) if spec.choices else None,
        min_limit=spec.minimum, max_limit=spec.maximum, **kw)


def fixed(component: str, name: str, value: str, data_type: DataType = "string", **kw: Any
          ) -> Variable:
    return Variable(component, name, fixed=value, mutability="ReadOnly", data_type=data_type,
                    **kw)


def live(component: str, name: str, read: Callable[[Context], str | None],
         data_type: DataType = "decimal", **kw: Any) -> Variable:
    return Variable(component, name, read=read, mutability="ReadOnly", data_type=data_type, **kw)


def _snap(key: str, digits: int = 1) -> Callable[[Context], str | None]:
    """A reading of the core's snapshot; absent until the first valid reading (never a 0)."""

    def read(ctx: Context) -> str | None:
        value = ctx.station.view.snapshot.get(key)
        return None if value is None else f"{float(value):.{digits}f}"

    return read


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _status(evse: int) -> Callable[[Context], str | None]:
    return lambda ctx: connector_status(ctx.station.status(evse).status)


def _station_state(ctx: Context) -> str:
    st = ctx.station
    if not st.view.link_up or st.view.trip_causes:
        return "Faulted"
    return "Available" if st.operative[0] else "Unavailable"


def _power(evse: int) -> Callable[[Context], str | None]:
    def read(ctx: Context) -> str | None:
        alloc = ctx.station.view.allocation(ctx.station.meter_id(evse))
        return f"{alloc or 0.0:.0f}"

    return read


def _power_max(evse: int) -> Callable[[Context], float | None]:
    """An EVSE can move its session cap at most, and never more than its direction allows."""

    def read(ctx: Context) -> float | None:
        snap = ctx.station.view.snapshot
        limit = snap.get("limit_discharge_w" if evse == 1 else "limit_charge_w")
        cap = ctx.station.session_max_w
        return cap if limit is None else min(cap, float(limit))

    return read


PCS_STATES = {0: "Off", 1: "Standby", 2: "Running", 3: "Fault"}


def _pcs_state(ctx: Context) -> str | None:
    state = ctx.station.view.snapshot.get("pcs_state")
    return None if state is None else PCS_STATES.get(int(state), str(state))


def _security_profile(ctx: Context) -> str:
    return str(connection_security.effective_profile(ctx))


def _certificate_entries(ctx: Context) -> str:
    return str(len(ctx.certificates.ids()))


def _list_entries(ctx: Context) -> str:
    return str(ctx.journal.auth.auth_list_size(ctx.endpoint_id))


def _cache_entries(ctx: Context) -> str:
    return str(ctx.journal.auth.auth_cache_size(ctx.endpoint_id))


def _password_to_setting(text: str) -> str:
    """2.0.1 BasicAuthPassword is the password's text (16..40 chars); the shared setting holds
    the Basic-auth password bytes as hex (1.6 AuthorizationKey), so it is stored as its hex."""
    if not 16 <= len(text) <= 40:
        raise SettingError("basic_auth_password", "invalid", "16 to 40 characters")
    return text.encode("utf-8").hex()


SC = ChargingLimits()
SUMMARY_NAMES = frozenset({"AvailabilityState", "Available", "Problem", "Tripped", "Fallback"})


def _rows(version: str = "2.0.1") -> Iterable[Variable | None]:
    # -- OCPPCommCtrlr ---------------------------------------------------------------------------
    c = "OCPPCommCtrlr"
    yield live(c, "ActiveNetworkProfile", lambda ctx: str(ctx.v201.active_slot),
               "integer")
    yield fixed(c, "FileTransferProtocols", "FTP,HTTP,HTTPS", "MemberList",
                values_list="FTP,FTPS,HTTP,HTTPS,SFTP")
    yield setting(c, "HeartbeatInterval", "heartbeat_interval_s", unit="s")
    yield setting(c, "MessageTimeout", "message_timeout_s", instance="Default", unit="s")
    yield setting(c, "MessageAttempts", "transaction_message_attempts",
                  instance="TransactionEvent")
    yield setting(c, "MessageAttemptInterval", "transaction_message_retry_interval_s",
                  instance="TransactionEvent", unit="s")
    yield setting(c, "NetworkConfigurationPriority", "network_configuration_priority",
                  data_type="SequenceList", reboot_required=True, to_setting=network.check_priority)
    yield setting(c, "NetworkProfileConnectionAttempts", "network_profile_connection_attempts")
    yield setting(c, "OfflineThreshold", "offline_threshold_s", unit="s")
    yield fixed(c, "QueueAllMessages", "false", "boolean")
    yield setting(c, "ResetRetries", "reset_retries")
    yield setting(c, "RetryBackOffRandomRange", "retry_backoff_random_range_s", unit="s")
    yield setting(c, "RetryBackOffRepeatTimes", "retry_backoff_repeat_times")
    yield setting(c, "RetryBackOffWaitMinimum", "retry_backoff_wait_minimum_s", unit="s")
    yield setting(c, "UnlockOnEVSideDisconnect", "unlock_on_ev_side_disconnect")
    yield setting(c, "WebSocketPingInterval", "websocket_ping_interval_s", unit="s")
    # -- DeviceDataCtrlr -------------------------------------------------------------------------
    c = "DeviceDataCtrlr"
    for inst in ("GetReport", "GetVariables", "SetVariables"):
        yield setting(c, "ItemsPerMessage", f"items_per_message_{inst.lower()}", instance=inst,
                      mutability="ReadOnly")
        yield fixed(c, "BytesPerMessage", str(MAX_BYTES_PER_MESSAGE), "integer", instance=inst)
    yield fixed(c, "ConfigurationValueSize", str(VALUE_SIZE), "integer")
    yield fixed(c, "ReportingValueSize", str(VALUE_SIZE), "integer")
    yield fixed(c, "ValueSize", str(VALUE_SIZE), "integer")
    # -- ClockCtrlr ------------------------------------------------------------------------------
    c = "ClockCtrlr"
    yield live(c, "DateTime", lambda ctx: iso(ctx.station.now()), "dateTime")
    # The gateway runs on the host's clock, which the OS keeps by NTP.
    yield fixed(c, "TimeSource", "NTP", "SequenceList", values_list="Heartbeat,NTP")
    # -- SecurityCtrlr ---------------------------------------------------------------------------
    c = "SecurityCtrlr"
    yield setting(c, "OrganizationName", "cpo_name")
    yield live(c, "CertificateEntries", _certificate_entries, "integer",
               max_limit=float(MAX_CERTIFICATES))
    yield live(c, "SecurityProfile", _security_profile, "integer")
    yield live(c, "Identity", lambda ctx: ctx.endpoint_id, "string")
    yield setting(c, "BasicAuthPassword", "basic_auth_password", mutability="WriteOnly",
                  to_setting=_password_to_setting)
    yield fixed(c, "MaxCertificateChainSize", "10000", "integer")
    yield setting(c, "CertSigningWaitMinimum", "cert_signing_wait_minimum_s", unit="s")
    yield setting(c, "CertSigningRepeatTimes", "cert_signing_repeat_times")
    # -- AuthCtrlr, AuthCacheCtrlr, LocalAuthListCtrlr --------------------------------------------
    c = "AuthCtrlr"
    yield fixed(c, "Enabled", "true", "boolean")
    yield setting(c, "AuthorizeRemoteStart", "authorize_remote_tx")
    yield setting(c, "LocalAuthorizeOffline", "local_authorize_offline")
    yield setting(c, "LocalPreAuthorize", "local_pre_authorize")
    yield setting(c, "OfflineTxForUnknownIdEnabled", "allow_offline_tx_for_unknown_id")
    c = "AuthCacheCtrlr"
    yield fixed(c, "Available", "true", "boolean")
    yield setting(c, "Enabled", "authorization_cache_enabled")
    yield setting(c, "LifeTime", "auth_cache_lifetime_s", unit="s")
    yield fixed(c, "Policy", "LRU", "OptionList", values_list="LRU")
    yield live(c, "Storage", _cache_entries, "integer", max_limit=float(CACHE_MAX_LENGTH))
    c = "LocalAuthListCtrlr"
    yield fixed(c, "Available", "true", "boolean")
    yield setting(c, "Enabled", "local_auth_list_enabled")
    yield live(c, "Entries", _list_entries, "integer", max_limit=float(LOCAL_LIST_MAX_LENGTH))
    yield fixed(c, "ItemsPerMessage", "1000", "integer")
    yield fixed(c, "BytesPerMessage", str(MAX_BYTES_PER_MESSAGE * 4), "integer")
    # -- TxCtrlr ---------------------------------------------------------------------------------
    c = "TxCtrlr"
    # No cable to plug in: a session's power path closes at start; the 1.6 ConnectionTimeOut.
    yield setting(c, "EVConnectionTimeOut", "connection_timeout_s", unit="s")
    yield setting(c, "StopTxOnEVSideDisconnect", "stop_tx_on_ev_side_disconnect")
    yield setting(c, "StopTxOnInvalidId", "stop_tx_on_invalid_id")
    yield setting(c, "TxStartPoint", "tx_start_point")
    yield setting(c, "TxStopPoint", "tx_stop_point")
    yield setting(c, "MaxEnergyOnInvalidId", "max_energy_on_invalid_id_wh", unit="Wh")
    yield setting(c, "TxBeforeAcceptedEnabled", "tx_before_accepted_enabled")
    # -- SampledDataCtrlr / AlignedDataCtrlr -----------------------------------------------------
    c = "SampledDataCtrlr"
    yield fixed(c, "Enabled", "true", "boolean")
    yield setting(c, "TxStartedMeasurands", "tx_started_measurands")
    yield setting(c, "TxUpdatedMeasurands", "meter_values_sampled_data")
    yield setting(c, "TxUpdatedInterval", "meter_sample_interval_s", unit="s")
    yield setting(c, "TxEndedMeasurands", "stop_txn_sampled_data")
    yield setting(c, "TxEndedInterval", "tx_ended_interval_s", unit="s")
    c = "AlignedDataCtrlr"
    yield fixed(c, "Enabled", "true", "boolean")
    yield setting(c, "Measurands", "meter_values_aligned_data")
    yield setting(c, "Interval", "clock_aligned_interval_s", unit="s")
    yield setting(c, "TxEndedMeasurands", "stop_txn_aligned_data")
    yield setting(c, "TxEndedInterval", "aligned_tx_ended_interval_s", unit="s")
    yield setting(c, "SendDuringIdle", "aligned_data_send_during_idle")
    # -- SmartChargingCtrlr / ReservationCtrlr ---------------------------------------------------
    c = "SmartChargingCtrlr"
    yield fixed(c, "Available", "true", "boolean")
    yield fixed(c, "Enabled", "true", "boolean")
    yield fixed(c, "Entries", str(SC.max_installed), "integer", instance="ChargingProfiles")
    yield setting(c, "LimitChangeSignificance", "limit_change_significance_pct",
                  data_type="decimal", unit="Percent")
    yield setting(c, "NotifyChargingLimitWithSchedules", "notify_charging_limit_with_schedules")
    yield fixed(c, "PeriodsPerSchedule", str(SC.max_periods), "integer")
    yield fixed(c, "ProfileStackLevel", str(SC.max_stack_level), "integer")
    yield fixed(c, "RateUnit", "A,W", "MemberList", values_list="A,W")
    yield fixed(c, "Phases3to1", "false", "boolean")
    yield fixed(c, "ExternalControlSignalsEnabled", "true", "boolean")
    c = "ReservationCtrlr"
    yield fixed(c, "Available", "true", "boolean")
    yield fixed(c, "Enabled", "true", "boolean")
    # EVSE-less reservations would not say which way (discharge/charge) to hold power back.
    yield fixed(c, "NonEvseSpecific", "false", "boolean")
    # -- the station, its EVSEs and connectors ---------------------------------------------------
    c = "ChargingStation"
    yield live(c, "AvailabilityState", _station_state, "OptionList",
               values_list="Available,Unavailable,Faulted")
    yield fixed(c, "Available", "true", "boolean")
    yield live(c, "Model", lambda ctx: ctx.cfg.model, "string")
    yield live(c, "VendorName", lambda ctx: ctx.cfg.vendor, "string")
    yield live(c, "SerialNumber", lambda ctx: ctx.cfg.serial_number, "string")
    yield fixed(c, "SupplyPhases", "3", "integer")
    yield live(c, "Problem", lambda ctx: _bool(bool(ctx.station.view.trip_causes)
                                               or not ctx.station.view.link_up), "boolean")
    if version == "2.1":
        yield from _evse_rows_21()
    for evse in EVSES if version != "2.1" else ():
        states = "Available,Occupied,Reserved,Unavailable,Faulted"
        yield live("EVSE", "AvailabilityState", _status(evse), "OptionList", evse=evse,
                   values_list=states)
        yield fixed("EVSE", "Available", "true", "boolean", evse=evse)
        yield live("EVSE", "Power", _power(evse), "decimal", evse=evse, unit="W",
                   read_max=_power_max(evse))
        yield fixed("EVSE", "SupplyPhases", "3", "integer", evse=evse)
        # What flows through the EVSE: 1 delivers the battery's energy, 2 stores energy in it.
        yield fixed("EVSE", "Direction", "Discharge" if evse == 1 else "Charge", "OptionList",
                    evse=evse, values_list="Discharge,Charge")
        yield live("Connector", "AvailabilityState", _status(evse), "OptionList", evse=evse,
                   connector=CONNECTOR_ID, values_list=states)
        yield fixed("Connector", "Available", "true", "boolean", evse=evse,
                    connector=CONNECTOR_ID)
        yield fixed("Connector", "ConnectorType", "Other3Ph", "string", evse=evse,
                    connector=CONNECTOR_ID)
        yield fixed("Connector", "SupplyPhases", "3", "integer", evse=evse,
                    connector=CONNECTOR_ID)
    # -- the battery and the PCS (alarms.py names these components in NotifyEvent) ---------------
    c = "BatteryBank"
    yield live(c, "SoC", _snap("soc_pct"), unit="Percent", min_limit=0.0, max_limit=100.0)
    yield live(c, "SoH", _snap("soh_pct"), unit="Percent", min_limit=0.0, max_limit=100.0)
    yield live(c, "Temperature", _snap("cell_temp_max_c"), instance="Max", unit="Celsius")
    yield live(c, "Temperature", _snap("cell_temp_min_c"), instance="Min", unit="Celsius")
    yield live(c, "Voltage", _snap("dc_voltage_v"), unit="V")
    yield live(c, "Current", _snap("dc_current_a"), unit="A")
    yield live(c, "Power", _snap("limit_discharge_w", 0), instance="MaxDischarge", unit="W")
    yield live(c, "Power", _snap("limit_charge_w", 0), instance="MaxCharge", unit="W")
    yield live(c, "Problem", lambda ctx: _bool(bool(ctx.station.view.trip_causes)), "boolean")
    c = "PowerConverter"
    yield live(c, "Power", _snap("measured_w", 0), unit="W")
    yield live(c, "State", _pcs_state, "OptionList", values_list="Off,Standby,Running,Fault")
    yield live(c, "Problem", lambda ctx: _bool(not ctx.station.view.link_up
                                               or ctx.station.view.snapshot.get("pcs_state") == 3),
               "boolean")


def _net_power_21(ctx: Context) -> str | None:
    """2.1's EVSE power in 2.1's sign: + the battery charges, - it discharges (allocations)."""
    st = ctx.station
    charge = st.view.allocation(st.meter_id(V21_CONNECTOR)) or 0.0
    discharge = st.view.allocation(st.meter_id(DISCHARGE_CONNECTOR)) or 0.0
    return f"{charge - discharge:.0f}"


def _evse_rows_21() -> Iterable[Variable]:
    """2.1's one bidirectional EVSE (the domain's charge connector with its discharge leg) and
    its V2XChargingCtrlr (2.1 part 2: Available, Enabled, SupportedEnergyTransferModes,
    SupportedOperationModes are the required variables)."""
    evse = V21_EVSE
    states = "Available,Occupied,Reserved,Unavailable,Faulted"
    yield live("EVSE", "AvailabilityState", _status(V21_CONNECTOR), "OptionList", evse=evse,
               values_list=states)
    yield fixed("EVSE", "Available", "true", "boolean", evse=evse)
    # maxLimit: the most it may charge; minLimit: minus the most it may discharge.
    yield live("EVSE", "Power", _net_power_21, "decimal", evse=evse, unit="W",
               read_max=_power_max(V21_CONNECTOR), read_min=_power_max(DISCHARGE_CONNECTOR))
    yield fixed("EVSE", "SupplyPhases", "3", "integer", evse=evse)
    yield live("Connector", "AvailabilityState", _status(V21_CONNECTOR), "OptionList",
               evse=evse, connector=CONNECTOR_ID, values_list=states)
    yield fixed("Connector", "Available", "true", "boolean", evse=evse, connector=CONNECTOR_ID)
    yield fixed("Connector", "ConnectorType", "Other3Ph", "string", evse=evse,
                connector=CONNECTOR_ID)
    yield fixed("Connector", "SupplyPhases", "3", "integer", evse=evse, connector=CONNECTOR_ID)
    c = "V2XChargingCtrlr"
    yield fixed(c, "Available", "true", "boolean", evse=evse)
    yield fixed(c, "Enabled", "true", "boolean", evse=evse)
    # The battery behind a DC PCS: bidirectional DC power transfer.
    yield fixed(c, "SupportedEnergyTransferModes", "DC_BPT", "MemberList", evse=evse,
                values_list="DC,DC_BPT")
    yield fixed(c, "SupportedOperationModes", V2X_MODES, "MemberList", evse=evse,
                values_list=V2X_MODES)


# What v21/v2x.py does (CentralFrequency and LocalFrequency are refused: docs/ocpp21.md).
V2X_MODES = "ChargingOnly,CentralSetpoint,ExternalSetpoint,ExternalLimits,LocalLoadBalancing,Idle"


def _contributed() -> list[Variable]:
    out: list[Variable] = []
    for name in CONTRIBUTORS:
        try:
            module = importlib.import_module(f"bess_gateway.ocpp.v201.{name}")
        except ImportError:
            continue
        out.extend(getattr(module, "VARIABLES", ()))
    return out


_TABLES: dict[str, dict[Key, Variable]] = {}


def table(version: str = "2.0.1") -> dict[Key, Variable]:
    """Every variable of `version`'s device model by key (built once per version; a block's own
    rows win over ours for the same key). 2.1 differs in its EVSEs only (one bidirectional)."""
    found = _TABLES.get(version)
    if found is None:
        rows: dict[Key, Variable] = {}
        for v in _rows(version):
            if v is not None:
                rows[v.key] = v
        for v in _contributed():
            rows[v.key] = v
        found = _TABLES[version] = rows
    return found


def components(version: str = "2.0.1") -> set[tuple[str, str | None, int | None, int | None]]:
    return {v.component_key for v in table(version).values()}


# -- lookups and values -------------------------------------------------------------------------
def component_key(component: dict[str, Any]) -> tuple[str, str | None, int | None, int | None]:
    evse = component.get("evse") or {}
    return (component["name"], component.get("instance"), evse.get("id"),
            evse.get("connectorId"))


def find(component: dict[str, Any], variable: dict[str, Any],
         version: str = "2.0.1") -> Variable | str:
    """The variable a request names, or the status that says why not: 'UnknownComponent' or
    'UnknownVariable' (a variable that exists only with an instance needs it, B06.FR.15)."""
    ckey = component_key(component)
    v = table(version).get((*ckey, variable["name"], variable.get("instance")))
    if v is not None:
        return v
    return "UnknownVariable" if ckey in components(version) else "UnknownComponent"


def value(ctx: Context, v: Variable) -> str | None:
    """The Actual value as wire text (None: no reading yet); never for WriteOnly."""
    if v.mutability == "WriteOnly":
        return None
    if v.setting is not None:
        text = ctx.station.settings.text(v.setting)
    elif v.read is not None:
        text = v.read(ctx)
    else:
        text = v.fixed
    return None if text is None else text[:VALUE_SIZE]


def set_value(ctx: Context, v: Variable, text: str) -> tuple[str, str | None]:
    """Apply a SetVariables value: ('Accepted' | 'RebootRequired', None) or ('Rejected', the
    reasonCode)."""
    if v.mutability == "ReadOnly" or v.setting is None:
        return "Rejected", "ReadOnly" if v.mutability == "ReadOnly" else "InvalidValue"
    if len(text) > VALUE_SIZE:
        return "Rejected", "InvalidValue"
    try:
        raw = v.to_setting(text) if v.to_setting is not None else text
        ctx.station.settings.set(v.setting, raw)
    except SettingError as exc:
        log.info("%s: SetVariables %s.%s refused: %s", ctx.endpoint_id, v.component, v.name, exc)
        return "Rejected", "WriteError" if exc.reason == "unstored" else "InvalidValue"
    return ("RebootRequired" if v.reboot_required else "Accepted"), None


def characteristics(ctx: Context, v: Variable) -> dict[str, Any]:
    out: dict[str, Any] = {"dataType": v.data_type, "supportsMonitoring": False}
    if v.unit is not None:
        out["unit"] = v.unit
    min_limit = -v.read_min(ctx) if v.read_min is not None else v.min_limit
    if min_limit is not None:
        out["minLimit"] = min_limit
    max_limit = v.read_max(ctx) if v.read_max is not None else v.max_limit
    if max_limit is not None:
        out["maxLimit"] = max_limit
    if v.values_list is not None:
        out["valuesList"] = v.values_list
    return out


def component_json(v: Variable) -> dict[str, Any]:
    out: dict[str, Any] = {"name": v.component}
    if v.component_instance is not None:
        out["instance"] = v.component_instance
    if v.evse is not None:
        evse: dict[str, Any] = {"id": v.evse}
        if v.connector is not None:
            evse["connectorId"] = v.connector
        out["evse"] = evse
    return out


def variable_json(v: Variable) -> dict[str, Any]:
    out: dict[str, Any] = {"name": v.name}
    if v.instance is not None:
        out["instance"] = v.instance
    return out


def report_data(ctx: Context, v: Variable) -> dict[str, Any]:
    """One ReportDataType: the Actual attribute (no value for WriteOnly) and characteristics."""
    attribute: dict[str, Any] = {"type": "Actual", "mutability": v.mutability,
                                 "persistent": v.setting is not None or v.fixed is not None,
                                 "constant": v.fixed is not None}
    text = value(ctx, v)
    if text is not None:
        attribute["value"] = text
    return {"component": component_json(v), "variable": variable_json(v),
            "variableAttribute": [attribute],
            "variableCharacteristics": characteristics(ctx, v)}


def in_report(v: Variable, base: str) -> bool:
    """Whether GetBaseReport's reportBase includes the variable (B07)."""
    if base == "FullInventory":
        return True
    if base == "ConfigurationInventory":
        return v.mutability != "ReadOnly"
    return v.name in SUMMARY_NAMES  # SummaryInventory: availability and problems
