"""The 2.0.1 device-model table itself: every setting has its variable, rows are well formed."""

from __future__ import annotations

import pytest

from bess_gateway.domain.settings import SPECS, SettingSpec
from bess_gateway.ocpp.v201 import device_model, network
from bess_gateway.ocpp.v201.device_model import Variable

# Settings with no 2.0.1 variable, and why.
NOT_IN_201 = {
    "ac_phase_voltage_v": "A -> W conversion of smart charging; 2.0.1 has no such variable",
    "connector_phase_rotation": "1.6's per-connector notation; virtual connectors have none",
    "minimum_status_duration_s": "1.6 only",
    "network_profiles": "SetNetworkProfile's slots, not a variable",
    "security_profile": "SecurityCtrlr.SecurityProfile reads the effective profile (live)",
    "stop_txn_intermediate_data": "1.6 vendor key; 2.0.1 has TxEndedInterval instead",
}
DATA_TYPES = {"string", "decimal", "integer", "dateTime", "boolean", "OptionList",
              "SequenceList", "MemberList"}


def test_every_setting_is_a_variable() -> None:
    mapped = {v.setting for v in device_model.table().values() if v.setting is not None}
    assert sorted(set(SPECS) - mapped - set(NOT_IN_201)) == []
    assert not set(NOT_IN_201) - set(SPECS), "a setting listed here no longer exists"


@pytest.mark.parametrize("v", list(device_model.table().values()),
                         ids=lambda v: f"{v.component}.{v.name}.{v.instance}.{v.evse}")
def test_rows_are_well_formed(v: Variable) -> None:
    assert v.data_type in DATA_TYPES
    sources = [v.setting is not None, v.fixed is not None, v.read is not None]
    assert sum(sources) == 1
    if v.setting is None:
        assert v.mutability == "ReadOnly"
    if v.data_type in ("OptionList", "MemberList", "SequenceList") and v.fixed is not None:
        assert v.values_list is not None or v.data_type == "SequenceList"
    if v.fixed is not None and v.data_type == "integer":
        int(v.fixed)
    if v.fixed is not None and v.data_type == "boolean":
        assert v.fixed in ("true", "false")


def test_setting_characteristics_come_from_the_setting() -> None:
    hb = device_model.find({"name": "OCPPCommCtrlr"}, {"name": "HeartbeatInterval"})
    assert isinstance(hb, Variable)
    spec: SettingSpec = SPECS["heartbeat_interval_s"]
    assert (hb.min_limit, hb.max_limit, hb.data_type) == (spec.minimum, spec.maximum, "integer")


def test_find_says_why_not() -> None:
    assert device_model.find({"name": "Nope"}, {"name": "X"}) == "UnknownComponent"
    assert device_model.find({"name": "AuthCtrlr"}, {"name": "X"}) == "UnknownVariable"
    assert device_model.find({"name": "EVSE", "evse": {"id": 9}},
                             {"name": "Power"}) == "UnknownComponent"


def test_network_priority_text() -> None:
    assert network.check_priority(" 2, 1,0 ") == "2,1,0"
    for bad in ("", "1,1", "4", "a"):
        with pytest.raises(ValueError):
            network.check_priority(bad)
