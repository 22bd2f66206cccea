"""Version-agnostic station settings: what a CSMS may read and change.

OCPP 1.6 configuration keys and 2.0.1 device-model variables are both translations of these. Each
setting validates its own value, so the range rules (MeterValueSampleInterval 0-300 s, ...) live
once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

Kind = Literal["int", "bool", "str", "csv"]

MEASURANDS: tuple[str, ...] = (
    "Voltage",
    "Current.Export",
    "Current.Import",
    "Power.Active.Export",
    "Power.Active.Import",
    "SoC",
    "Temperature",
    "Energy.Active.Export.Register",
    "Energy.Active.Import.Register",
    # What the station offers the session now (its allocation: the CSMS's limits, the battery's
    # and the site's in one number); selectable, not sampled by default.
    "Power.Offered",
)
DEFAULT_SAMPLED = ",".join(m for m in MEASURANDS if m != "Power.Offered")
DEFAULT_TX_END = "Energy.Active.Export.Register,Energy.Active.Import.Register"
# 2.0.1 TxStartPoint/TxStopPoint values that mean something for a virtual connector (no cable,
# no EV communication): see docs/ocpp201.md.
TX_POINTS: tuple[str, ...] = ("Authorized", "PowerPathClosed", "EnergyTransfer")


class SettingError(ValueError):
    """A value a setting refuses; ``reason`` is 'unknown', 'readonly', 'invalid' or 'unstored'
    (valid, but the store failed: the old value stays)."""

    def __init__(
        self, name: str, reason: Literal["unknown", "readonly", "invalid", "unstored"], msg: str
    ) -> None:
        super().__init__(f"{name}: {msg}")
        self.name = name
        self.reason = reason


@dataclass(frozen=True, slots=True)
class SettingSpec:
    name: str
    kind: Kind
    default: int | bool | str
    minimum: int | None = None
    maximum: int | None = None
    readonly: bool = False
    choices: tuple[str, ...] | None = None  # for csv: the allowed items
    max_items: int | None = None

    def parse(self, raw: str) -> int | bool | str:
        """Parse the text a CSMS sends (both versions send strings) into a typed value."""
        text = raw.strip()
        if self.kind == "int":
            try:
                value = int(text)
            except ValueError:
                raise SettingError(self.name, "invalid", f"{raw!r} is not an integer") from None
            if (self.minimum is not None and value < self.minimum) or (
                self.maximum is not None and value > self.maximum
            ):
                raise SettingError(
                    self.name, "invalid", f"{value} is outside {self.minimum}..{self.maximum}"
                )
            return value
        if self.kind == "bool":
            low = text.lower()
            if low not in ("true", "false"):
                raise SettingError(self.name, "invalid", f"{raw!r} is not true/false")
            return low == "true"
        if self.kind == "csv":
            items = [i.strip() for i in text.split(",") if i.strip()]
            if self.choices is not None:
                bad = [i for i in items if i not in self.choices]
                if bad:
                    raise SettingError(self.name, "invalid", f"unsupported items {bad}")
            if self.max_items is not None and len(items) > self.max_items:
                raise SettingError(self.name, "invalid", f"more than {self.max_items} items")
            return ",".join(items)
        return text

    def render(self, value: int | bool | str) -> str:
        if self.kind == "bool":
            return "true" if value else "false"
        return str(value)


SPECS: dict[str, SettingSpec] = {
    s.name: s
    for s in (
        # 1.6 and 2.0.1 give HeartbeatInterval no range; a CSMS may ask for a heartbeat a day
        # (the datasheet's 30-3600 s is what an operator configures, config.py). 0 would spin.
        SettingSpec("heartbeat_interval_s", "int", 300, 1, 86_400),
        # 0 = no sampled data (1.6 MeterValueSampleInterval, 2.0.1 TxUpdatedInterval).
        SettingSpec("meter_sample_interval_s", "int", 10, 0, 300),
        SettingSpec("clock_aligned_interval_s", "int", 0, 0, 86400),
        # 1.6 ConnectionTimeOut / 2.0.1 TxCtrlr.EVConnectionTimeOut: how long a prepared
        # connector waits for the EV's cable. Our connectors are virtual (no cable: a session
        # starts at once), so it bounds how long a remote start may take to begin: a connector
        # no session has begun on within it is Available again (sessions.preparing_watch).
        SettingSpec("connection_timeout_s", "int", 60, 10, 600),
        # 2.0.1 OCPPCommCtrlr.MessageTimeout (1.6 vendor key MessageTimeout): how long a CALL
        # waits for its answer and a connection for its opening handshake (link.py).
        SettingSpec("message_timeout_s", "int", 60, 5, 600),
        SettingSpec("authorize_remote_tx", "bool", False),
        SettingSpec("local_authorize_offline", "bool", True),
        SettingSpec("local_pre_authorize", "bool", False),
        SettingSpec("local_auth_list_enabled", "bool", True),
        SettingSpec("authorization_cache_enabled", "bool", True),
        SettingSpec("allow_offline_tx_for_unknown_id", "bool", False),
        # 2.0.1 AuthCacheCtrlr.LifeTime: how long a cache entry without its own expiry lives
        # (0 = until the CSMS says otherwise or it is evicted).
        SettingSpec("auth_cache_lifetime_s", "int", 0, 0, 31_536_000),
        # 2.0.1 DeviceDataCtrlr.ItemsPerMessage (ReadOnly to the CSMS; an operator may store a
        # smaller value in the journal): GetReport parts, GetVariables/SetVariables items.
        SettingSpec("items_per_message_getreport", "int", 64, 1, 64, readonly=True),
        SettingSpec("items_per_message_getvariables", "int", 64, 1, 64, readonly=True),
        SettingSpec("items_per_message_setvariables", "int", 64, 1, 64, readonly=True),
        # 2.0.1 OCPPCommCtrlr: network connection profiles (SetNetworkProfile) by slot, tried in
        # this order (slot 0 = the configured endpoint). OfflineThreshold: offline longer, a
        # reconnect reports every EVSE status, else only the changed ones (link.py).
        SettingSpec("network_configuration_priority", "str", "0"),
        SettingSpec("network_profiles", "str", ""),  # JSON: slot -> NetworkConnectionProfile
        SettingSpec("network_profile_connection_attempts", "int", 3, 1, 100),
        SettingSpec("offline_threshold_s", "int", 60, 0, 86_400),
        SettingSpec("stop_tx_on_invalid_id", "bool", True),
        # 1.6 MaxEnergyOnInvalidId / 2.0.1 TxCtrlr.MaxEnergyOnInvalidId: with the above false, a
        # session the CSMS later finds invalid may deliver this many Wh from its start, then is
        # held at 0 W (0 = at once: the spec's "stop energy delivery"). sessions.id_invalidated
        SettingSpec("max_energy_on_invalid_id_wh", "int", 0, 0, 10_000_000),
        # 2.0.1 TxCtrlr.TxBeforeAcceptedEnabled (1.6 4.2.1 leaves it to the operator: vendor
        # key): may a local start begin while the boot is Pending/Rejected; its messages queue.
        SettingSpec("tx_before_accepted_enabled", "bool", False),
        SettingSpec("stop_tx_on_ev_side_disconnect", "bool", True),
        SettingSpec("unlock_on_ev_side_disconnect", "bool", True),
        SettingSpec("meter_values_sampled_data", "csv", DEFAULT_SAMPLED,
                    choices=MEASURANDS, max_items=len(MEASURANDS)),
        SettingSpec("meter_values_aligned_data", "csv", DEFAULT_TX_END,
                    choices=MEASURANDS, max_items=len(MEASURANDS)),
        SettingSpec("stop_txn_sampled_data", "csv", DEFAULT_TX_END,
                    choices=MEASURANDS, max_items=len(MEASURANDS)),
        SettingSpec("stop_txn_aligned_data", "csv", "", choices=MEASURANDS,
                    max_items=len(MEASURANDS)),
        # Intermediate values in the stop message (sessions.keep_loop). 2.0.1
        # SampledDataCtrlr.TxEndedInterval / AlignedDataCtrlr.TxEndedInterval (0: only the start
        # and end values); 1.6 takes them every MeterValueSampleInterval / ClockAlignedDataInterval
        # when StopTxnIntermediateData (a vendor key, off by default: without it a
        # StopTransaction carries only its Transaction.End value, as CSMSs expect) is true.
        SettingSpec("tx_ended_interval_s", "int", 0, 0, 86_400),
        SettingSpec("aligned_tx_ended_interval_s", "int", 0, 0, 86_400),
        SettingSpec("stop_txn_intermediate_data", "bool", False),
        # 2.0.1 SampledDataCtrlr.TxStartedMeasurands (1.6 has no counterpart: meterStart only)
        SettingSpec("tx_started_measurands", "csv", DEFAULT_TX_END, choices=MEASURANDS,
                    max_items=len(MEASURANDS)),
        # 2.0.1 AlignedDataCtrlr.SendDuringIdle: aligned MeterValues for an EVSE without a session
        SettingSpec("aligned_data_send_during_idle", "bool", False),
        # 2.0.1 TxCtrlr.TxStartPoint / TxStopPoint for a virtual connector (docs/ocpp201.md)
        SettingSpec("tx_start_point", "csv", "PowerPathClosed", choices=TX_POINTS,
                    max_items=len(TX_POINTS)),
        SettingSpec("tx_stop_point", "csv", "PowerPathClosed", choices=TX_POINTS,
                    max_items=len(TX_POINTS)),
        # Retries of a queued message the CSMS failed to process (bess_gateway.endpoint.outbox): 1.6
        # TransactionMessageAttempts / TransactionMessageRetryInterval and 2.0.1 OCPPCommCtrlr
        # MessageAttempts / MessageAttemptInterval (TransactionEvent) are both these two; the
        # wait before a resend is the interval x the failed attempts so far.
        SettingSpec("transaction_message_attempts", "int", 3, 1, 10),
        SettingSpec("transaction_message_retry_interval_s", "int", 60, 1, 3600),
        SettingSpec("reset_retries", "int", 1, 0, 10),
        SettingSpec("websocket_ping_interval_s", "int", 60, 0, 3600),
        # Reconnect back-off (2.0.1 RetryBackOff*, link.Backoff): wait minimum * 2**n (n up to
        # repeat_times) + random 0..range s. A minimum of 0 would let a failing link spin.
        SettingSpec("retry_backoff_wait_minimum_s", "int", 3, 1, 3600),
        SettingSpec("retry_backoff_random_range_s", "int", 10, 0, 3600),
        SettingSpec("retry_backoff_repeat_times", "int", 6, 0, 20),
        SettingSpec("connector_phase_rotation", "str", "0.RST,1.RST,2.RST"),
        SettingSpec("minimum_status_duration_s", "int", 0, 0, 3600),
        # Smart charging: A -> W = A x this phase-to-neutral voltage x numberPhases (default 3).
        SettingSpec("ac_phase_voltage_v", "int", 230, 100, 500),
        # 2.0.1 NotifyChargingLimit (SmartChargingCtrlr): a battery limit below the CSMS's is
        # reported when it moves by more than this percentage, with its schedule when asked.
        SettingSpec("limit_change_significance_pct", "int", 10, 1, 100),
        SettingSpec("notify_charging_limit_with_schedules", "bool", True),
        # Security: the profile only ever rises (security.profiles); basic_auth_password is the
        # CSMS-set Basic auth password's bytes as hex (1.6 AuthorizationKey), write-only, and
        # replaces the configured password; cpo_name is the O of our CSRs.
        SettingSpec("security_profile", "int", 0, 0, 3),
        SettingSpec("basic_auth_password", "str", ""),
        SettingSpec("cpo_name", "str", ""),
        # 2.0.1 A02.FR.17-19: a SignCertificate the CSMS accepted but never answered with
        # CertificateSigned is sent again after this wait, doubled each time, this many times.
        SettingSpec("cert_signing_wait_minimum_s", "int", 60, 1, 86_400),
        SettingSpec("cert_signing_repeat_times", "int", 3, 0, 100),
    )
}


class Settings:
    """One station's settings: defaults, then persisted values, then what the CSMS changes.

    ``persist`` is called with (name, text) for every accepted change, before it applies, so
    values survive restarts; the caller decides where (the journal). If it raises, the change is
    refused (SettingError 'unstored').
    """

    def __init__(
        self,
        stored: Mapping[str, str],
        *,
        overrides: Mapping[str, int | bool | str] | None = None,
        persist: Callable[[str, str], None] | None = None,
    ) -> None:
        self._values: dict[str, int | bool | str] = {n: s.default for n, s in SPECS.items()}
        for name, value in (overrides or {}).items():
            self._values[name] = value
        for name, text in stored.items():
            spec = SPECS.get(name)
            if spec is None:
                # A setting another version knew: keep going rather than refuse to start.
                continue
            try:
                self._values[name] = spec.parse(text)
            except SettingError:
                continue
        self._persist = persist
        self._listeners: list[Callable[[str], None]] = []

    def __getitem__(self, name: str) -> int | bool | str:
        return self._values[name]

    def int(self, name: str) -> int:
        value = self._values[name]
        assert isinstance(value, int)
        return value

    def bool(self, name: str) -> bool:
        return bool(self._values[name])

    def items(self, name: str) -> list[str]:
        return [i for i in str(self._values[name]).split(",") if i]

    def text(self, name: str) -> str:
        return SPECS[name].render(self._values[name])

    def set(self, name: str, raw: str) -> None:
        """Validate, store, then apply a change; raises SettingError with the reason to report."""
        spec = SPECS.get(name)
        if spec is None:
            raise SettingError(name, "unknown", "no such setting")
        if spec.readonly:
            raise SettingError(name, "readonly", "read-only")
        value = spec.parse(raw)
        if self._persist is not None:
            # Durable before it is live: a value the CSMS was told is Accepted must survive a
            # restart, and one that cannot be stored must not quietly run until the next one.
            try:
                self._persist(name, spec.render(value))
            except Exception as exc:
                raise SettingError(name, "unstored", f"not stored: {exc}") from exc
        self._values[name] = value
        for listener in list(self._listeners):
            listener(name)

    def on_change(self, listener: Callable[[str], None]) -> None:
        self._listeners.append(listener)
