"""schemas.py: official schemas compiled by fastjsonschema, failures mapped to OCPP-J codes."""

import copy

import pytest

from bess_gateway.ocpp.errors import (
    ActionNotImplementedError,
    ErrorKind,
    OcppError,
    code_for,
)
from bess_gateway.ocpp.schemas import Validator, validator

V16 = validator("1.6")
V201 = validator("2.0.1")

REMOTE_START_16 = {
    "connectorId": 1,
    "idTag": "TAG-1",
    "chargingProfile": {
        "chargingProfileId": 7,
        "stackLevel": 0,
        "chargingProfilePurpose": "TxProfile",
        "chargingProfileKind": "Absolute",
        "chargingSchedule": {
            "chargingRateUnit": "W",
            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 50000.0}],
        },
    },
}

REQUEST_START_201 = {
    "evseId": 1,
    "remoteStartId": 42,
    "idToken": {"idToken": "TAG-1", "type": "ISO14443"},
    "chargingProfile": {
        "id": 7,
        "stackLevel": 0,
        "chargingProfilePurpose": "TxProfile",
        "chargingProfileKind": "Absolute",
        "chargingSchedule": [
            {
                "id": 1,
                "chargingRateUnit": "W",
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 50000.0}],
            }
        ],
    },
}


def _fails(v: Validator, action: str, payload: dict, response: bool = False) -> OcppError:
    with pytest.raises(OcppError) as info:
        (v.response if response else v.request)(action, payload)
    return info.value


def _without(payload: dict, *path: str) -> dict:
    out = copy.deepcopy(payload)
    node = out
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return out


def _with(payload: dict, value: object, *path: str) -> dict:
    out = copy.deepcopy(payload)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


def test_valid_payloads_pass():
    V16.request("RemoteStartTransaction", REMOTE_START_16)
    V16.response("RemoteStartTransaction", {"status": "Accepted"})
    V201.request("RequestStartTransaction", REQUEST_START_201)
    V201.response("RequestStartTransaction", {"status": "Accepted", "transactionId": "t-1"})


def test_1_6_missing_required_is_occurence_violation():
    err = _fails(V16, "RemoteStartTransaction", _without(REMOTE_START_16, "idTag"))
    assert err.kind is ErrorKind.OCCURRENCE_CONSTRAINT_VIOLATION
    assert code_for(err.kind, "1.6") == "OccurenceConstraintViolation"
    assert "idTag" in err.description


def test_1_6_wrong_type_is_type_violation():
    err = _fails(V16, "RemoteStartTransaction", _with(REMOTE_START_16, "x", "connectorId"))
    assert err.kind is ErrorKind.TYPE_CONSTRAINT_VIOLATION
    assert err.details["path"] == "payload.connectorId"


def test_1_6_nested_failures_name_the_path():
    bad = _with(REMOTE_START_16, "Sometimes", "chargingProfile", "chargingProfileKind")
    err = _fails(V16, "RemoteStartTransaction", bad)
    assert err.kind is ErrorKind.PROPERTY_CONSTRAINT_VIOLATION
    assert err.details == {"path": "payload.chargingProfile.chargingProfileKind", "rule": "enum"}


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        ({"idTag": "x" * 21}, ErrorKind.PROPERTY_CONSTRAINT_VIOLATION),  # maxLength
        ({"idTag": "a", "unknown": 1}, ErrorKind.FORMAT_VIOLATION),  # additionalProperties
        ({"idTag": 5}, ErrorKind.TYPE_CONSTRAINT_VIOLATION),
        ({"idTag": None}, ErrorKind.TYPE_CONSTRAINT_VIOLATION),
        ({"idTag": "a", "connectorId": True}, ErrorKind.TYPE_CONSTRAINT_VIOLATION),
        # draft-04 (1.6): 1.0 is not an integer
        ({"idTag": "a", "connectorId": 1.0}, ErrorKind.TYPE_CONSTRAINT_VIOLATION),
    ],
)
def test_1_6_rule_mapping(payload, kind):
    assert _fails(V16, "RemoteStartTransaction", payload).kind is kind


def test_2_0_1_request_start_transaction_mapping():
    missing = _fails(
        V201, "RequestStartTransaction", _without(REQUEST_START_201, "idToken", "type")
    )
    assert missing.kind is ErrorKind.OCCURRENCE_CONSTRAINT_VIOLATION
    assert code_for(missing.kind, "2.0.1") == "OccurrenceConstraintViolation"
    wrong = _fails(V201, "RequestStartTransaction", _with(REQUEST_START_201, "42", "remoteStartId"))
    assert wrong.kind is ErrorKind.TYPE_CONSTRAINT_VIOLATION
    enum = _fails(
        V201, "RequestStartTransaction", _with(REQUEST_START_201, "Magic", "idToken", "type")
    )
    assert enum.kind is ErrorKind.PROPERTY_CONSTRAINT_VIOLATION
    extra = _fails(V201, "RequestStartTransaction", _with(REQUEST_START_201, 1, "bogus"))
    assert extra.kind is ErrorKind.FORMAT_VIOLATION
    assert code_for(extra.kind, "2.0.1") == "FormatViolation"
    empty = _with(REQUEST_START_201, [], "chargingProfile", "chargingSchedule")
    assert _fails(V201, "RequestStartTransaction", empty).kind is (
        ErrorKind.OCCURRENCE_CONSTRAINT_VIOLATION  # minItems
    )


def test_2_0_1_custom_data_may_carry_vendor_fields():
    payload = _with(REQUEST_START_201, {"vendorId": "acme", "anything": [1, 2]}, "customData")
    V201.request("RequestStartTransaction", payload)


def test_responses_are_validated_with_the_response_schema():
    err = _fails(V16, "BootNotification", {"status": "Accepted"}, response=True)
    assert err.kind is ErrorKind.OCCURRENCE_CONSTRAINT_VIOLATION
    assert "response" in err.description
    V16.response(
        "BootNotification",
        {"status": "Accepted", "currentTime": "2024-01-01T00:00:00.000Z", "interval": 300},
    )


@pytest.mark.parametrize(
    ("timestamp", "ok"),
    [
        ("2024-01-01T00:00:00Z", True),
        ("2024-01-01T00:00:00.123456789Z", True),
        ("2024-01-01T00:00:00+02:00", True),
        ("2024-01-01T00:00:00", True),  # no zone: seen in the field, accepted (documented)
        ("2024-01-01T00:00", True),
        ("2024-01-01", False),
        ("yesterday", False),
        ("", False),
    ],
)
def test_date_time_format_is_iso8601_but_lenient(timestamp, ok):
    payload = {
        "connectorId": 1,
        "errorCode": "NoError",
        "status": "Available",
        "timestamp": timestamp,
    }
    if ok:
        V16.request("StatusNotification", payload)
    else:
        assert _fails(V16, "StatusNotification", payload).kind is (
            ErrorKind.PROPERTY_CONSTRAINT_VIOLATION
        )


def test_multiple_of_is_not_enforced():
    # 1.6 limit has multipleOf 0.1; a CSMS sending 7.36 A still gets its cap applied.
    payload = {
        "connectorId": 1,
        "csChargingProfiles": {
            "chargingProfileId": 1,
            "stackLevel": 0,
            "chargingProfilePurpose": "TxDefaultProfile",
            "chargingProfileKind": "Absolute",
            "chargingSchedule": {
                "chargingRateUnit": "A",
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 7.36}],
            },
        },
    }
    V16.request("SetChargingProfile", payload)


def test_schema_defaults_are_not_inserted():
    payload = {
        "evseId": 1,
        "meterValue": [{"timestamp": "2024-01-01T00:00:00Z", "sampledValue": [{"value": 12.5}]}],
    }
    before = copy.deepcopy(payload)
    V201.request("MeterValues", payload)
    assert payload == before  # no "context"/"measurand"/"location" defaults added


def test_unknown_action_is_not_implemented():
    assert V16.knows("Heartbeat") and not V16.knows("Nope")
    assert V201.knows("TransactionEvent") and not V201.knows("StartTransaction")
    with pytest.raises(ActionNotImplementedError):
        V16.request("TransactionEvent", {})  # a 2.0.1 action
    with pytest.raises(ActionNotImplementedError):
        V201.response("Nope", {})


def test_validator_is_shared_and_compiles_once():
    assert validator("1.6") is V16
    V16.request("Heartbeat", {})
    compiled = V16._compiled[("Heartbeat", False)]
    V16.request("Heartbeat", {})
    assert V16._compiled[("Heartbeat", False)] is compiled
    with pytest.raises(ValueError):
        validator("1.5")


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
def test_every_schema_compiles(version):
    # A private instance so the shared cache stays lazy; also proves no $ref needs the network.
    v = Validator(version)
    for action in v.actions:
        for compile_response in (False, True):
            try:
                v._validate(action, {}, response=compile_response)
            except OcppError:
                pass  # {} is rarely a valid payload; compiling is what is tested
    assert len(v._compiled) == 2 * len(v.actions)
