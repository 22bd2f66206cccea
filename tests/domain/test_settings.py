"""Station settings (bess_gateway.domain.settings): a change is durable before it is live."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from bess_gateway.domain.settings import SettingError, Settings
from bess_gateway.journal import JournalError
from bess_gateway.ocpp.v16 import config_keys
from bess_gateway.ocpp.v201 import provisioning


class FailingStore:
    """A journal whose writes fail (disk full): records what was attempted."""

    def __init__(self) -> None:
        self.fail = True
        self.stored: dict[str, str] = {}
        self.attempts: list[tuple[str, str]] = []

    def __call__(self, name: str, text: str) -> None:
        self.attempts.append((name, text))
        if self.fail:
            raise JournalError("database or disk is full")
        self.stored[name] = text


def test_a_change_that_cannot_be_stored_is_refused_and_the_old_value_stays_live() -> None:
    store = FailingStore()
    settings = Settings({}, persist=store)
    seen: list[tuple[str, int]] = []
    settings.on_change(lambda name: seen.append((name, settings.int(name))))

    with pytest.raises(SettingError) as err:
        settings.set("heartbeat_interval_s", "45")
    assert err.value.reason == "unstored"
    assert store.attempts == [("heartbeat_interval_s", "45")]
    assert settings.int("heartbeat_interval_s") == 300  # the default, still in force
    assert seen == []  # nobody acted on a value that is not durable

    store.fail = False
    settings.set("heartbeat_interval_s", "45")
    assert store.stored == {"heartbeat_interval_s": "45"}
    assert settings.int("heartbeat_interval_s") == 45 and seen == [("heartbeat_interval_s", 45)]


def test_the_value_is_stored_before_it_is_live() -> None:
    order: list[str] = []

    def persist(name: str, text: str) -> None:
        order.append(f"store {text} while {settings.text(name)} is live")

    settings = Settings({}, persist=persist)
    settings.on_change(lambda name: order.append(f"applied {settings.text(name)}"))
    settings.set("meter_sample_interval_s", "7")
    assert order == ["store 7 while 10 is live", "applied 7"]


def test_change_configuration_answers_rejected_when_the_store_fails() -> None:
    settings = Settings({}, persist=FailingStore())
    assert config_keys.change_configuration(settings, "HeartbeatInterval", "45") == "Rejected"
    assert settings.int("heartbeat_interval_s") == 300


def test_set_variables_answers_rejected_write_error_when_the_store_fails() -> None:
    settings = Settings({}, persist=FailingStore())
    ctx = SimpleNamespace(station=SimpleNamespace(settings=settings), endpoint_id="E",
                          version="2.0.1")
    out = provisioning.set_variable(ctx, {  # type: ignore[arg-type]
        "component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"},
        "attributeValue": "45"})
    assert out["attributeStatus"] == "Rejected"
    assert out["attributeStatusInfo"] == {"reasonCode": "WriteError"}
    assert settings.int("heartbeat_interval_s") == 300
