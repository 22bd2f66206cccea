"""Per-message CPU cost of the OCPP-J path: decode + schema-validate + encode.

Run: .venv/bin/pytest benches/bench_ocppj.py
Our path is orjson + fastjsonschema (bess_gateway.ocpp); the reference is the `ocpp` library's own
path (json + jsonschema: messages.unpack, _validate_payload, to_json), printed once as a table.
"""

from __future__ import annotations

import timeit
from collections.abc import Callable

import orjson
import pytest
from ocpp import messages as ocpp_messages

from bess_gateway.ocpp.framing import Call, decode, encode
from bess_gateway.ocpp.schemas import validator

TS = "2024-05-01T12:00:00.000Z"

METER_VALUES_16 = {
    "connectorId": 1,
    "transactionId": 7,
    "meterValue": [
        {
            "timestamp": TS,
            "sampledValue": [
                {
                    "value": "123456.0",
                    "context": "Sample.Periodic",
                    "measurand": "Energy.Active.Export.Register",
                    "location": "Outlet",
                    "unit": "Wh",
                },
                {
                    "value": "98000.0",
                    "context": "Sample.Periodic",
                    "measurand": "Power.Active.Export",
                    "location": "Outlet",
                    "unit": "W",
                },
                {
                    "value": "140.2",
                    "context": "Sample.Periodic",
                    "measurand": "Current.Export",
                    "location": "Outlet",
                    "unit": "A",
                },
                {
                    "value": "699.5",
                    "context": "Sample.Periodic",
                    "measurand": "Voltage",
                    "location": "Outlet",
                    "unit": "V",
                },
                {
                    "value": "63.4",
                    "context": "Sample.Periodic",
                    "measurand": "SoC",
                    "location": "EV",
                    "unit": "Percent",
                },
                {
                    "value": "31.5",
                    "context": "Sample.Periodic",
                    "measurand": "Temperature",
                    "location": "Body",
                    "unit": "Celsius",
                },
            ],
        }
    ],
}

SET_CHARGING_PROFILE_16 = {
    "connectorId": 1,
    "csChargingProfiles": {
        "chargingProfileId": 12,
        "transactionId": 7,
        "stackLevel": 1,
        "chargingProfilePurpose": "TxProfile",
        "chargingProfileKind": "Absolute",
        "chargingSchedule": {
            "duration": 3600,
            "startSchedule": TS,
            "chargingRateUnit": "W",
            "chargingSchedulePeriod": [
                {"startPeriod": 0, "limit": 150000.0},
                {"startPeriod": 900, "limit": 90000.0, "numberPhases": 3},
                {"startPeriod": 1800, "limit": 45000.5},
            ],
            "minChargingRate": 1000.0,
        },
    },
}


def _sampled_201(measurand: str, value: float, unit: str) -> dict:
    return {
        "value": value,
        "context": "Sample.Periodic",
        "measurand": measurand,
        "location": "Outlet",
        "unitOfMeasure": {"unit": unit},
    }


TRANSACTION_EVENT_201 = {
    "eventType": "Updated",
    "timestamp": TS,
    "triggerReason": "MeterValuePeriodic",
    "seqNo": 3,
    "transactionInfo": {"transactionId": "tx-0001", "chargingState": "Charging"},
    "evse": {"id": 1, "connectorId": 1},
    "meterValue": [
        {
            "timestamp": TS,
            "sampledValue": [
                _sampled_201("Energy.Active.Export.Register", 123456.0, "Wh"),
                _sampled_201("Power.Active.Export", 98000.0, "W"),
                _sampled_201("Current.Export", 140.2, "A"),
                _sampled_201("Voltage", 699.5, "V"),
                _sampled_201("SoC", 63.4, "Percent"),
                _sampled_201("Frequency", 50.01, "Hz"),
            ],
        }
    ],
}

CASES = {
    "1.6 MeterValues (6 values)": ("1.6", "MeterValues", METER_VALUES_16),
    "1.6 SetChargingProfile": ("1.6", "SetChargingProfile", SET_CHARGING_PROFILE_16),
    "2.0.1 TransactionEvent": ("2.0.1", "TransactionEvent", TRANSACTION_EVENT_201),
}


def _frame(action: str, payload: dict) -> str:
    return encode(Call("0f3e2d1c-aaaa-bbbb-cccc-000000000001", action, payload))


def ours(version: str, action: str, payload: dict) -> Callable[[], str]:
    text = _frame(action, payload)
    v = validator(version)

    def run() -> str:
        msg = decode(text, version)
        assert isinstance(msg, Call)
        v.request(msg.action, msg.payload)
        return encode(msg)

    run()  # compile the schema outside the measurement
    return run


def ocpp_library(version: str, action: str, payload: dict) -> Callable[[], str]:
    text = _frame(action, payload)
    ocpp_messages.ASYNC_VALIDATION = False  # no executor hop: measure the CPU work only

    def run() -> str:
        msg = ocpp_messages.unpack(text)
        ocpp_messages._validate_payload(msg, version)
        return msg.to_json()

    run()
    return run


@pytest.mark.parametrize("case", list(CASES))
def test_ocppj_decode_validate_encode(benchmark, case):
    fn = ours(*CASES[case])
    assert orjson.loads(benchmark(fn))[2] == CASES[case][1]


@pytest.mark.parametrize("case", list(CASES))
def test_ocpp_library_jsonschema_reference(benchmark, case):
    fn = ocpp_library(*CASES[case])
    assert orjson.loads(benchmark(fn))[2] == CASES[case][1]


def _per_call_us(fn: Callable[[], str], number: int) -> float:
    # best of 5 repeats: the least-disturbed measurement on a shared 2-core machine
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def test_print_comparison(capsys):
    rows = []
    for case, args in CASES.items():
        a = _per_call_us(ours(*args), 2000)
        b = _per_call_us(ocpp_library(*args), 200)
        rows.append(f"{case:<30} {a:>10.1f} {b:>14.1f} {b / a:>8.1f}x")
    with capsys.disabled():
        print()
        print(f"{'decode+validate+encode, us':<30} {'ocppj':>10} {'ocpp library':>14} {'ratio':>9}")
        print("\n".join(rows))
