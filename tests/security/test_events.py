"""Security events: logged, queued in the journal's outbox, coalesced, contained on failure."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bess_gateway.journal import Journal
from bess_gateway.security import events

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_events_are_logged_and_queued_in_order(tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bess_gateway.security")
    with Journal(tmp_path / "j.sqlite") as j:
        assert events.record(j, "A", "StartupOfTheDevice", now=lambda: T0)
        assert events.record(j, "A", "InvalidCentralSystemCertificate", "x" * 300,
                             now=lambda: T0)
        assert events.record(j, "B", "ResetOrReboot", now=lambda: T0)
        items = j.outbox.pending("A")
        assert [i.action for i in items] == ["SecurityEventNotification"] * 2
        assert items[0].payload == {"type": "StartupOfTheDevice",
                                    "timestamp": "2026-01-02T03:04:05.000Z"}
        assert items[1].payload["techInfo"] == "x" * 255  # the schema's maxLength
        assert items[0].local_tx_id is None
    logged = [(r.levelno, r.getMessage()) for r in caplog.records
              if r.name == "bess_gateway.security"]
    assert (logging.INFO, "A: security event StartupOfTheDevice") in logged
    assert any(level == logging.WARNING and "InvalidCentralSystemCertificate" in msg
               for level, msg in logged)


def test_repeating_connection_events_are_coalesced_until_delivered(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite") as j:
        for _ in range(5):
            events.record(j, "A", "InvalidCentralSystemCertificate")
            events.record(j, "A", "FailedToAuthenticateAtCentralSystem")
        assert j.outbox.depth("A") == 2
        # once delivered (acked), the next occurrence is queued again
        j.outbox.ack(j.outbox.pending("A")[0].seq)
        assert events.record(j, "A", "InvalidCentralSystemCertificate")
        assert not events.record(j, "A", "FailedToAuthenticateAtCentralSystem")
        assert j.outbox.depth("A") == 2
        # other endpoints and non-repeating events are not coalesced
        assert events.record(j, "B", "InvalidCentralSystemCertificate")
        assert events.record(j, "A", "ResetOrReboot") and events.record(j, "A", "ResetOrReboot")


def test_a_journal_failure_is_contained(tmp_path: Path,
                                        caplog: pytest.LogCaptureFixture) -> None:
    j = Journal(tmp_path / "j.sqlite")
    j.close()
    assert events.record(j, "A", "StartupOfTheDevice") is False
    assert any("not queued" in r.getMessage() for r in caplog.records)
