"""2.0.1 smart-charging translation and the battery-limit report rule, without a socket."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bess_gateway.domain import smart_charging as sc
from bess_gateway.ocpp.v201.smart_charging import (
    LimitChange,
    limit_change,
    profile_from_201,
    profile_to_201,
)


def test_limit_reported_once_per_significant_move_and_cleared_with_hysteresis() -> None:
    sig = 0.10
    # Within the significance below the CSMS's limit: not limited yet.
    assert limit_change(140_000, 150_000, None, sig) is None
    assert limit_change(130_000, 150_000, None, sig) == LimitChange(130_000)
    # Reported at 130 kW: small moves say nothing, a move beyond 15 kW (10 % of 150) does.
    assert limit_change(140_000, 150_000, 130_000, sig) is None
    assert limit_change(120_000, 150_000, 130_000, sig) is None
    assert limit_change(110_000, 150_000, 130_000, sig) == LimitChange(110_000)
    # Back to the edge: still limited until the battery allows at least what the CSMS does.
    assert limit_change(149_000, 150_000, 140_000, sig) is None
    assert limit_change(150_000, 150_000, 140_000, sig) == LimitChange(None, cleared=True)
    # A floor at 0 W (SoC window) and a CSMS limit of 0 W.
    assert limit_change(0.0, 150_000, None, sig) == LimitChange(0.0)
    assert limit_change(0.0, 0.0, None, sig) is None


def test_profile_round_trip_keeps_the_2_0_1_names_and_schedule_id() -> None:
    wire = {
        "id": 4, "stackLevel": 2, "chargingProfilePurpose": "ChargingStationMaxProfile",
        "chargingProfileKind": "Recurring", "recurrencyKind": "Daily",
        "validFrom": "2026-01-01T00:00:00.000Z",
        "chargingSchedule": [{"id": 9, "startSchedule": "2026-01-01T06:00:00.000Z",
                              "duration": 3600, "chargingRateUnit": "A",
                              "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 32.0,
                                                          "numberPhases": 3}]}],
    }
    p = profile_from_201(0, wire)
    assert p.purpose == sc.Purpose.CHARGE_POINT_MAX and p.schedule.schedule_id == 9
    assert p.valid_from == datetime(2026, 1, 1, tzinfo=UTC)
    assert profile_to_201(p) == wire
    # Stored neutral: the journal's form reads back the same.
    assert sc.ChargingProfile.from_dict(p.to_dict()) == p


@pytest.mark.parametrize(("evse", "change", "reason"), [
    (1, {"chargingProfilePurpose": "ChargingStationMaxProfile"}, "InvalidValue"),
    (1, {"chargingProfilePurpose": "TxProfile"}, "MissingParam"),
    (0, {"chargingProfilePurpose": "ChargingStationExternalConstraints"}, "InvalidValue"),
    (1, {"chargingProfileKind": "Relative"}, "InvalidSchedule"),
])
def test_2_0_1_rules_refuse_with_a_reason(evse: int, change: dict[str, str], reason: str) -> None:
    wire = {"id": 1, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
            "chargingProfileKind": "Absolute",
            "chargingSchedule": [{"id": 1, "startSchedule": "2026-01-01T00:00:00Z",
                                  "chargingRateUnit": "W",
                                  "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 1.0}]}]}
    with pytest.raises(sc.ProfileError) as err:
        profile_from_201(evse, {**wire, **change})
    assert err.value.reason == reason
