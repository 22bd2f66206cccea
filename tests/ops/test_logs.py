from __future__ import annotations

import io
import logging

import orjson
import pytest

from bess_gateway.ops.logs import FileLogs, setup_logging


@pytest.fixture
def restore_root():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_with_extra_fields(restore_root):
    out = io.StringIO()
    setup_logging("json", "debug", stream=out)
    log = logging.getLogger("bess_gateway.test")
    log.info("connected %s", "HUB-001", extra={"endpoint": "HUB-001", "attempt": 2})
    try:
        raise ValueError("bad")
    except ValueError:
        log.exception("failed")
    first, second = (orjson.loads(line) for line in out.getvalue().splitlines())
    assert first["level"] == "INFO" and first["logger"] == "bess_gateway.test"
    assert first["msg"] == "connected HUB-001"
    assert (first["endpoint"], first["attempt"]) == ("HUB-001", 2)
    assert first["ts"].endswith("Z") and first["ts"][10] == "T"
    assert second["level"] == "ERROR" and "ValueError: bad" in second["exc"]


def test_text_one_line_per_event_and_setup_replaces_its_handler(restore_root):
    first, out = io.StringIO(), io.StringIO()
    setup_logging("json", "INFO", stream=first)
    setup_logging("text", "WARNING", stream=out)
    log = logging.getLogger("bess_gateway.test")
    log.info("hidden")
    log.warning("trip %s", "over_temperature", extra={"meter": 3})
    (line,) = out.getvalue().splitlines()
    ts, level, name, message = line.split(" ", 3)
    assert ts.endswith("Z") and level == "WARNING" and name == "bess_gateway.test:"
    assert message == "trip over_temperature meter=3"
    assert first.getvalue() == ""


def test_file_logs_write_gateway_and_security_files(restore_root, tmp_path):
    out = io.StringIO()
    setup_logging("text", "warning", stream=out)
    files = FileLogs(tmp_path / "logs", "json")
    try:
        logging.getLogger("bess_gateway.ocpp.v16").info("connected HUB-001")
        logging.getLogger("bess_gateway.security").warning("InvalidFirmwareSignature")
    finally:
        files.close()
    logging.getLogger("bess_gateway.ocpp.v16").info("after close")
    main = [orjson.loads(line) for line in (tmp_path / "logs" / "gateway.log").read_text()
            .splitlines()]
    assert [m["msg"] for m in main] == ["connected HUB-001", "InvalidFirmwareSignature"]
    security = (tmp_path / "logs" / "security.log").read_text()
    assert "InvalidFirmwareSignature" in security and "HUB-001" not in security
    # stderr keeps its own level: the INFO line went to the file only.
    assert "connected HUB-001" not in out.getvalue()
    assert "InvalidFirmwareSignature" in out.getvalue()
    assert logging.getLogger("bess_gateway").level == logging.NOTSET
