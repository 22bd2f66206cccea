"""1.6 configuration keys: each is a domain setting under its 1.6 name, or a read-only fact.

GetConfiguration and ChangeConfiguration only consult this table, so adding a key is one line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from bess_gateway.domain.settings import MEASURANDS, SettingError, Settings


@dataclass(frozen=True, slots=True)
class Key:
    setting: str | None = None  # domain setting it translates, or None for a fixed value
    fixed: str | None = None


FEATURE_PROFILES = "Core,RemoteTrigger"

KEYS: dict[str, Key] = {
    "AllowOfflineTxForUnknownId": Key(fixed="false"),
    "AuthorizationCacheEnabled": Key(fixed="false"),
    "AuthorizeRemoteTxRequests": Key("authorize_remote_tx"),
    "ClockAlignedDataInterval": Key("clock_aligned_interval_s"),
    "ConnectionTimeOut": Key("connection_timeout_s"),
    "ConnectorPhaseRotation": Key("connector_phase_rotation"),
    "ConnectorPhaseRotationMaxLength": Key(fixed="3"),
    "GetConfigurationMaxKeys": Key(fixed="64"),
    "HeartbeatInterval": Key("heartbeat_interval_s"),
    "LocalAuthorizeOffline": Key("local_authorize_offline"),
    "LocalPreAuthorize": Key("local_pre_authorize"),
    "MeterValuesAlignedData": Key("meter_values_aligned_data"),
    "MeterValuesAlignedDataMaxLength": Key(fixed=str(len(MEASURANDS))),
    "MeterValuesSampledData": Key("meter_values_sampled_data"),
    "MeterValuesSampledDataMaxLength": Key(fixed=str(len(MEASURANDS))),
    "MeterValueSampleInterval": Key("meter_sample_interval_s"),
    "MinimumStatusDuration": Key("minimum_status_duration_s"),
    "NumberOfConnectors": Key(fixed="2"),
    "ResetRetries": Key("reset_retries"),
    "StopTransactionOnEVSideDisconnect": Key("stop_tx_on_ev_side_disconnect"),
    "StopTransactionOnInvalidId": Key("stop_tx_on_invalid_id"),
    "StopTxnAlignedData": Key("stop_txn_aligned_data"),
    "StopTxnAlignedDataMaxLength": Key(fixed=str(len(MEASURANDS))),
    "StopTxnSampledData": Key("stop_txn_sampled_data"),
    "StopTxnSampledDataMaxLength": Key(fixed=str(len(MEASURANDS))),
    "SupportedFeatureProfiles": Key(fixed=FEATURE_PROFILES),
    "TransactionMessageAttempts": Key("transaction_message_attempts"),
    "TransactionMessageRetryInterval": Key("transaction_message_retry_interval_s"),
    "UnlockConnectorOnEVSideDisconnect": Key("unlock_on_ev_side_disconnect"),
    "WebSocketPingInterval": Key("websocket_ping_interval_s"),
}
MAX_KEYS = 64


def get_configuration(settings: Settings, keys: list[str] | None) -> dict[str, Any]:
    """GetConfiguration.conf payload; unknown keys are listed, never an error."""
    wanted = list(KEYS) if not keys else keys
    known: list[dict[str, Any]] = []
    unknown: list[str] = []
    for name in wanted[:MAX_KEYS] if keys else wanted:
        key = KEYS.get(name)
        if key is None:
            unknown.append(name)
            continue
        value = key.fixed if key.setting is None else settings.text(key.setting)
        known.append({"key": name, "readonly": key.setting is None, "value": value})
    out: dict[str, Any] = {"configurationKey": known}
    if unknown:
        out["unknownKey"] = unknown
    return out


def change_configuration(
    settings: Settings, name: str, value: str
) -> Literal["Accepted", "Rejected", "NotSupported"]:
    key = KEYS.get(name)
    if key is None:
        return "NotSupported"
    if key.setting is None:
        return "Rejected"
    try:
        settings.set(key.setting, value)
    except SettingError:
        return "Rejected"
    return "Accepted"
