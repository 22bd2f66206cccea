"""1.6 configuration keys: each is a domain setting under its 1.6 name, or a read-only fact.

GetConfiguration and ChangeConfiguration only consult this table, so adding a key is one line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from bess_gateway.domain.authorization import LOCAL_LIST_MAX_LENGTH, SEND_LOCAL_LIST_MAX_LENGTH
from bess_gateway.domain.settings import MEASURANDS, SettingError, Settings
from bess_gateway.domain.smart_charging import STATION_LIMITS
from bess_gateway.ocpp.errors import OccurrenceConstraintViolationError
from bess_gateway.security.certificates import MAX_CERTIFICATES

CERTIFICATE_SIGNED_MAX_CHAIN_SIZE = 10000  # the schema's maxLength of certificateChain
# GetConfigurationMaxKeys: the most keys one GetConfiguration.req may name (a request naming none
# gets every key, however many there are).
MAX_KEYS = 64


@dataclass(frozen=True, slots=True)
class Key:
    setting: str | None = None  # domain setting it translates, or None for a fixed value
    fixed: str | None = None
    write_only: bool = False  # never read back (AuthorizationKey, Security Whitepaper)


SC_LIMITS = STATION_LIMITS  # smart charging: fixed, read-only in 1.6

FEATURE_PROFILES = ("Core,RemoteTrigger,Reservation,LocalAuthListManagement,FirmwareManagement"
                    ",SmartCharging")

KEYS: dict[str, Key] = {
    "AdditionalRootCertificateCheck": Key(fixed="false"),
    "AuthorizationKey": Key("basic_auth_password", write_only=True),
    "AllowOfflineTxForUnknownId": Key("allow_offline_tx_for_unknown_id"),
    "AuthorizationCacheEnabled": Key("authorization_cache_enabled"),
    "AuthorizeRemoteTxRequests": Key("authorize_remote_tx"),
    "ClockAlignedDataInterval": Key("clock_aligned_interval_s"),
    "CertificateSignedMaxChainSize": Key(fixed=str(CERTIFICATE_SIGNED_MAX_CHAIN_SIZE)),
    "CertificateStoreMaxLength": Key(fixed=str(MAX_CERTIFICATES)),
    "ChargeProfileMaxStackLevel": Key(fixed=str(SC_LIMITS.max_stack_level)),
    "ChargingScheduleAllowedChargingRateUnit": Key(fixed="Current,Power"),
    "ChargingScheduleMaxPeriods": Key(fixed=str(SC_LIMITS.max_periods)),
    "ConnectionTimeOut": Key("connection_timeout_s"),
    "ConnectorPhaseRotation": Key("connector_phase_rotation"),
    "ConnectorPhaseRotationMaxLength": Key(fixed="3"),
    "CpoName": Key("cpo_name"),
    "GetConfigurationMaxKeys": Key(fixed=str(MAX_KEYS)),
    "HeartbeatInterval": Key("heartbeat_interval_s"),
    "LocalAuthListEnabled": Key("local_auth_list_enabled"),
    "LocalAuthListMaxLength": Key(fixed=str(LOCAL_LIST_MAX_LENGTH)),
    "LocalAuthorizeOffline": Key("local_authorize_offline"),
    "LocalPreAuthorize": Key("local_pre_authorize"),
    "MaxChargingProfilesInstalled": Key(fixed=str(SC_LIMITS.max_installed)),
    "MaxEnergyOnInvalidId": Key("max_energy_on_invalid_id_wh"),
    # Vendor key under its 2.0.1 name (OCPPCommCtrlr): 1.6's ConnectionTimeOut is the cable
    # timeout, and 1.6 leaves the message timeout open.
    "MessageTimeout": Key("message_timeout_s"),
    "MeterValuesAlignedData": Key("meter_values_aligned_data"),
    "MeterValuesAlignedDataMaxLength": Key(fixed=str(len(MEASURANDS))),
    "MeterValuesSampledData": Key("meter_values_sampled_data"),
    "MeterValuesSampledDataMaxLength": Key(fixed=str(len(MEASURANDS))),
    "MeterValueSampleInterval": Key("meter_sample_interval_s"),
    "MinimumStatusDuration": Key("minimum_status_duration_s"),
    "NumberOfConnectors": Key(fixed="2"),
    # Reservation: connector 0 would not say which way (discharge/charge) to hold power back.
    "ReserveConnectorZeroSupported": Key(fixed="false"),
    "ResetRetries": Key("reset_retries"),
    # Vendor keys under their 2.0.1 names (OCPPCommCtrlr): 1.6 leaves reconnect timing open.
    "RetryBackOffRandomRange": Key("retry_backoff_random_range_s"),
    "RetryBackOffRepeatTimes": Key("retry_backoff_repeat_times"),
    "RetryBackOffWaitMinimum": Key("retry_backoff_wait_minimum_s"),
    "SecurityProfile": Key("security_profile"),
    "SendLocalListMaxLength": Key(fixed=str(SEND_LOCAL_LIST_MAX_LENGTH)),
    "StopTransactionOnEVSideDisconnect": Key("stop_tx_on_ev_side_disconnect"),
    "StopTransactionOnInvalidId": Key("stop_tx_on_invalid_id"),
    "StopTxnAlignedData": Key("stop_txn_aligned_data"),
    "StopTxnAlignedDataMaxLength": Key(fixed=str(len(MEASURANDS))),
    # Vendor key: StopTransaction.transactionData with the values StopTxnSampledData /
    # StopTxnAlignedData name every MeterValueSampleInterval / ClockAlignedDataInterval.
    "StopTxnIntermediateData": Key("stop_txn_intermediate_data"),
    "StopTxnSampledData": Key("stop_txn_sampled_data"),
    "StopTxnSampledDataMaxLength": Key(fixed=str(len(MEASURANDS))),
    "SupportedFeatureProfiles": Key(fixed=FEATURE_PROFILES),
    "TransactionMessageAttempts": Key("transaction_message_attempts"),
    # Vendor key under its 2.0.1 name (TxCtrlr): 1.6 4.2.1 lets the operator choose whether
    # transactions may start before the Central System accepted the boot.
    "TxBeforeAcceptedEnabled": Key("tx_before_accepted_enabled"),
    "TransactionMessageRetryInterval": Key("transaction_message_retry_interval_s"),
    "UnlockConnectorOnEVSideDisconnect": Key("unlock_on_ev_side_disconnect"),
    "WebSocketPingInterval": Key("websocket_ping_interval_s"),
}


def get_configuration(settings: Settings, keys: list[str] | None) -> dict[str, Any]:
    """GetConfiguration.conf payload; unknown keys are listed, never an error.

    More keys than GetConfigurationMaxKeys is an OccurenceConstraintViolation CALLERROR: 1.6
    (5.8) lets the station limit the count but says no more, and answering only the first ones
    would look like a complete answer (the rest neither known nor unknown), while listing them
    as unknown would be false. The CSMS can read the limit and ask again in parts; 2.0.1
    answers GetVariables beyond ItemsPerMessage the same way (B06.FR.16).
    """
    if keys and len(keys) > MAX_KEYS:
        raise OccurrenceConstraintViolationError(
            f"{len(keys)} keys requested; GetConfigurationMaxKeys is {MAX_KEYS}")
    wanted = list(KEYS) if not keys else keys
    known: list[dict[str, Any]] = []
    unknown: list[str] = []
    for name in wanted:
        key = KEYS.get(name)
        if key is None:
            unknown.append(name)
            continue
        if key.write_only:
            continue  # neither its value nor "unknown": it exists, but is not readable
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
