"""TxFacts, the typed form of a transaction's journaled facts (TxRecord.data).

The dicts below are written out by hand in the format the untyped `Transaction.extra` was
journaled in before issue 12 (keys and value shapes as the version layers wrote them), and go
through a real journal file, so an old journal is what is read."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bess_gateway.domain import metering
from bess_gateway.domain.station import MeterSample
from bess_gateway.domain.transaction_facts import KeptSamples, KeptSeries, TxFacts
from bess_gateway.journal import Journal, TxRecord

# A 2.1 transaction late in its life: remote start on a reservation, Started sent (seqNo 0-4
# used), a rate and operation mode reported, an energy allowance reached, samples kept for
# its Ended event. Packed samples: [ms, Wh, W, A, V, SoC %, degC] (None: not measured).
OLD_201: dict[str, Any] = {
    "reservation_id": 17,
    "token_type": "ISO14443",
    "remote_start_id": 4242,
    "started": True,
    "charging_state": "Charging",
    "seq_no": 5,
    "tx_ended": {
        "Transaction.Begin": [1_765_000_000_123, 1000.0, 0.0, None, 751.5, 80.0, 25.0],
        "Sample.Periodic": {"n": 3, "stride": 1, "rows": [
            [1_765_000_010_123, 1400.5, 150000.0, 200.0, 750.0, 80.1, 25.2],
            [1_765_000_020_123, 1817.25, 150000.0, 200.0, 750.0, 80.2, 25.4],
            [1_765_000_030_123, 2234.0, 149000.0, None, None, None, None],
        ]},
        "Sample.Clock": {"n": 1, "stride": 1, "rows": [
            [1_765_000_015_000, 1610.0, 150000.0, 200.0, 750.0, 80.15, 25.3],
        ]},
    },
    "rate_reported_w": 150000.0,
    "operation_mode": "ChargingOnly",
    "energy_cap_wh": 2234,
    "energy_limited": True,
}
# A 2.0.1 transaction waiting for its TxStartPoint (EnergyTransfer): nothing sent yet.
OLD_DEFERRED: dict[str, Any] = {"token_type": "Central", "started": False}
# A 1.6 transaction: only what 1.6 keeps (reservation, StopTxnSampledData values).
OLD_16: dict[str, Any] = {
    "reservation_id": 3,
    "tx_ended": {"Transaction.Begin": [1_765_000_000_000, 52.0, 0.0, None, None, 55.0, None]},
}


def through_journal(tmp_path: Path, data: dict[str, Any]) -> dict[str, Any]:
    """`data` as it comes back from an open transaction's record in a journal file."""
    with Journal(tmp_path / "journal.sqlite") as j:
        j.transactions.put_transaction(TxRecord(
            endpoint_id="HUB-1", local_id="L1", connector=1, id_tag_hash="h" * 32,
            meter_start_wh=1000, started_at="2025-12-06T05:46:40.123Z", data=data))
        [rec] = j.transactions.open_transactions("HUB-1")
    return rec.data


def test_an_old_2_0_1_record_loads_typed_and_round_trips(tmp_path: Path) -> None:
    data = through_journal(tmp_path, copy.deepcopy(OLD_201))
    facts = TxFacts.from_dict(data)
    assert facts.seq_no == 5
    assert facts.token_type == "ISO14443"
    assert facts.remote_start_id == 4242
    assert facts.reservation_id == 17
    assert facts.started is True and facts.is_started
    assert facts.charging_state == "Charging"
    assert facts.operation_mode == "ChargingOnly"
    assert facts.rate_reported_w == 150_000.0
    assert facts.energy_cap_wh == 2234 and facts.energy_limited
    assert facts.kept.begin == [1_765_000_000_123, 1000.0, 0.0, None, 751.5, 80.0, 25.0]
    periodic = facts.kept.series["Sample.Periodic"]
    assert (periodic.n, periodic.stride, len(periodic.rows)) == (3, 1, 3)
    assert facts.other == {} and facts.kept.other == {}
    assert facts.to_dict() == OLD_201
    # Written back by this gateway and read again: still the old format.
    assert through_journal(tmp_path / "again", facts.to_dict()) == OLD_201


@pytest.mark.parametrize("old", [OLD_DEFERRED, OLD_16, {}], ids=["deferred", "1.6", "empty"])
def test_every_key_written_stays_and_no_key_is_added(tmp_path: Path,
                                                     old: dict[str, Any]) -> None:
    facts = TxFacts.from_dict(through_journal(tmp_path, copy.deepcopy(old)))
    assert facts.to_dict() == old


def test_absent_facts_read_as_the_untyped_readers_defaulted() -> None:
    """An absent "started" is a started transaction (1.6, or 2.0.1 started at once); absent
    seq_no is 0; nothing is kept."""
    facts = TxFacts.from_dict(OLD_16)
    assert facts.is_started and facts.started is None
    assert facts.seq_no == 0 and facts.rate_reported_w is None and not facts.energy_limited
    assert facts.kept.series == {}
    assert not TxFacts.from_dict(OLD_DEFERRED).is_started


def test_keys_of_a_newer_gateway_are_kept_at_every_level(tmp_path: Path) -> None:
    newer = copy.deepcopy(OLD_201)
    newer["bidirectional_contract"] = {"id": "C-9", "until": "2026-01-01T00:00:00Z"}
    newer["tx_ended"]["Sample.Trigger"] = {"n": 1, "stride": 1, "rows": [[1, 2.0]]}
    newer["tx_ended"]["Sample.Periodic"]["since_ms"] = 1_765_000_000_123
    facts = TxFacts.from_dict(through_journal(tmp_path, copy.deepcopy(newer)))
    assert facts.to_dict() == newer
    # And still after this gateway changed what it knows of.
    facts.seq_no += 1
    facts.kept.series["Sample.Periodic"].n += 1
    out = facts.to_dict()
    assert out["seq_no"] == 6 and out["tx_ended"]["Sample.Periodic"]["n"] == 4
    assert out["bidirectional_contract"] == newer["bidirectional_contract"]
    assert out["tx_ended"]["Sample.Trigger"] == newer["tx_ended"]["Sample.Trigger"]
    assert out["tx_ended"]["Sample.Periodic"]["since_ms"] == 1_765_000_000_123


def test_a_written_record_shares_nothing_with_the_live_facts() -> None:
    """The record is encoded later than it is made (one commit per start): a sample kept in
    between must not leak into it."""
    facts = TxFacts.from_dict(copy.deepcopy(OLD_201))
    written = facts.to_dict()
    facts.kept.series["Sample.Periodic"].rows.append([0, 0.0, 0.0, None, None, None, None])
    facts.other["x"] = 1
    assert written == OLD_201


def sample(t: float, wh: float) -> MeterSample:
    return MeterSample(timestamp=datetime.fromtimestamp(t, UTC), connector=1, energy_wh=wh,
                       power_w=1000.0, current_a=None, voltage_v=None, soc_pct=50.0,
                       temperature_c=None)


def test_keeping_goes_on_from_an_old_record() -> None:
    """A series read back continues where it was: the next sample is the 4th offered, kept
    at stride 1, and the values come out Begin first, then in time order across kinds."""
    facts = TxFacts.from_dict(copy.deepcopy(OLD_201))
    assert metering.keep(facts.kept, metering.PERIODIC, sample(1_765_000_040.5, 2650.0))
    periodic = facts.to_dict()["tx_ended"]["Sample.Periodic"]
    assert periodic["n"] == 4 and periodic["stride"] == 1
    assert periodic["rows"][-1] == [1_765_000_040_500, 2650.0, 1000.0, None, None, 50.0, None]
    kept = metering.kept(facts.kept, 1)
    assert [c for c, _ in kept] == ["Transaction.Begin", "Sample.Periodic", "Sample.Clock",
                                    "Sample.Periodic", "Sample.Periodic", "Sample.Periodic"]
    assert [s.energy_wh for _, s in kept] == [1000.0, 1400.5, 1610.0, 1817.25, 2234.0, 2650.0]


def test_a_full_series_thins_to_every_other_sample() -> None:
    """97 samples offered: the 97th overflows MAX_KEPT (96), so every other one goes (49
    left: the 1st, 3rd, ... 97th) and from then on every 2nd offered is kept."""
    store = KeptSamples()
    for i in range(97):
        metering.keep(store, metering.PERIODIC, sample(1_765_000_000 + i, float(i)))
    series = store.series[metering.PERIODIC]
    assert (series.n, series.stride, len(series.rows)) == (97, 2, 49)
    assert [row[1] for row in series.rows] == [float(i) for i in range(0, 97, 2)]
    assert not metering.keep(store, metering.PERIODIC, sample(1_765_000_097, 97.0))  # 98th
    assert metering.keep(store, metering.PERIODIC, sample(1_765_000_098, 98.0))  # 99th
    assert series == KeptSeries(n=99, stride=2, rows=series.rows)
    assert len(series.rows) == 50
