"""Bundles: log lines by time window, rotated files in order, secrets redacted."""

from __future__ import annotations

import zipfile
from datetime import UTC, datetime
from pathlib import Path

import orjson

from bess_gateway.config import Config, EndpointConfig
from bess_gateway.maintenance.diagnostics import (
    REDACTED,
    Scope,
    Window,
    build_bundle,
    lines_in_window,
    log_files,
    records_in_scope,
    redact,
)


def t(hh: int, mm: int = 0) -> datetime:
    return datetime(2026, 1, 2, hh, mm, tzinfo=UTC)


def test_lines_in_window_keeps_continuations_with_their_line(tmp_path: Path) -> None:
    log = tmp_path / "gateway.log"
    log.write_text(
        "2026-01-02T09:00:00.000Z INFO  a: early\n"
        "2026-01-02T10:30:00.000Z ERROR a: inside\n"
        "Traceback (most recent call last):\n"
        '{"ts": "2026-01-02T11:00:00.500Z", "level": "INFO", "msg": "json inside"}\n'
        "2026-01-02T12:00:01.000Z INFO  a: late\n")
    got = "".join(lines_in_window([log], Window(t(10), t(12))))
    assert "inside" in got and "Traceback" in got and "json inside" in got
    assert "early" not in got and "late" not in got
    assert "".join(lines_in_window([log], Window())) == log.read_text()
    assert "early" in "".join(lines_in_window([log], Window(stop=t(9, 30))))


def test_log_files_oldest_first(tmp_path: Path) -> None:
    for name in ("gateway.log", "gateway.log.1", "gateway.log.2", "gateway.log.10",
                 "gateway.log.x", "security.log"):
        (tmp_path / name).write_text(name)
    assert [p.name for p in log_files(tmp_path, "gateway.log")] == [
        "gateway.log.10", "gateway.log.2", "gateway.log.1", "gateway.log"]
    assert log_files(tmp_path / "absent", "gateway.log") == []


def test_redact_by_key_name() -> None:
    cfg = Config(endpoints=(
        EndpointConfig(id="A", csms_url="ws://x/ocpp", security_profile=1, password="pw-1"),
        EndpointConfig(id="B", csms_url="ws://x/ocpp")))
    out = redact(cfg)
    assert out["endpoints"][0]["password"] == REDACTED
    assert out["endpoints"][1]["password"] is None  # nothing to hide: shown as unset
    assert out["endpoints"][0]["id"] == "A"
    assert isinstance(out["gateway"]["data_dir"], str)
    assert redact({"auth_key": "k", "basic_auth_password": "p", "authorize_remote_tx": "true",
                   "nested": {"client_secret": "s", "token": ["a"]}}) == {
        "auth_key": REDACTED, "basic_auth_password": REDACTED, "authorize_remote_tx": "true",
        "nested": {"client_secret": REDACTED, "token": [REDACTED]}}


def test_build_bundle_contents(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "gateway.log").write_text("2026-01-02T10:00:00.000Z INFO  a: hello\n")
    (logs / "security.log").write_text("2026-01-02T10:00:00.000Z WARN  s: event\n")
    parts = {"config": {"x": 1}, "journal": {"schema_version": 3}}
    path = build_bundle("diagnostics", tmp_path / "out" / "d.zip", logs, parts, Window(),
                        "EP-1")
    with zipfile.ZipFile(path) as z:
        assert sorted(z.namelist()) == ["config.json", "gateway.log", "journal.json",
                                        "manifest.json"]
        assert orjson.loads(z.read("journal.json")) == {"schema_version": 3}
        assert orjson.loads(z.read("manifest.json"))["requested_by"] == "EP-1"
    path = build_bundle("security", tmp_path / "s.zip", logs, {}, Window(), "EP-1")
    with zipfile.ZipFile(path) as z:
        assert sorted(z.namelist()) == ["manifest.json", "security.log"]
        assert z.read("security.log").decode().endswith("s: event\n")


def test_a_scope_finds_another_operators_ids_as_words_and_its_addresses() -> None:
    scope = Scope.of(own={"HUB-1", "hub.2"}, foreign_ids=["HUB-10", "site:7", "HUB-1"],
                     foreign_text=["ws://10.0.0.9:9000", "10.0.0.9:9000", "Beta", "shared:1"],
                     own_text=["shared:1"])
    assert scope.foreign_ids == {"hub-10", "site:7"}  # an own id is never foreign
    assert scope.foreign_text == ("10.0.0.9:9000", "beta", "ws://10.0.0.9:9000")
    named = ["HUB-10: connected", "hub-10 lower case", "ids site:7.", "to 10.0.0.9:9000/x",
             "operator 'beta'", "at ws://h:1/ocpp/HUB-10 failed"]
    clean = ["HUB-1: connected", "HUB-100 is no HUB-10", "hub.2 and site:77",
             "shared:1 is both operators' CSMS", "10.0.0.99:9000"]
    assert [scope.names_foreign(t) for t in named] == [True] * len(named)
    assert [t for t in clean if scope.names_foreign(t)] == ["HUB-100 is no HUB-10"]
    assert not Scope().names_foreign("HUB-10 site:7 beta")


def test_records_naming_another_operator_leave_with_their_continuation_lines() -> None:
    scope = Scope.of(own={"A-1"}, foreign_ids=["B-1"], foreign_text=[])
    lines = ["2026-01-02T10:00:00.000Z INFO  x: A-1: connected\n",
             "2026-01-02T10:00:01.000Z ERROR x: job failed\n",
             "Traceback (most recent call last):\n",
             "  ConnectionError: B-1: not connected\n",
             "2026-01-02T10:00:02.000Z INFO  x: gateway started\n"]
    assert list(records_in_scope(lines, scope)) == [lines[0], lines[4]]
    assert list(records_in_scope(lines, Scope())) == lines
