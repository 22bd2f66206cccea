"""Logs never carry an idTag: not for a normal session, not for a request that fails schema
validation, not for a malformed frame (everything at DEBUG, through the JSON formatter)."""

from __future__ import annotations

import io
import logging

import orjson
import pytest
from waiting import until

from bess_gateway.demo.csms import CsmsServer
from bess_gateway.ops.logs import setup_logging

TAG = "SECRETTAG42"
LONG_TAG = "SECRETTAG-TOO-LONG-FOR-CISTRING20"


@pytest.fixture
def json_log():
    """The gateway's own set-up (`bess-gateway run --log-level DEBUG` with log_format json)."""
    out = io.StringIO()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    ws_level = logging.getLogger("websockets").level
    setup_logging("json", "DEBUG", stream=out)
    yield out
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("websockets").setLevel(ws_level)


async def test_id_tags_never_reach_the_log(gateway_factory, csms: CsmsServer, json_log) -> None:
    gw = await gateway_factory(1)
    (sid,) = gw.endpoints
    await until(lambda: gw.endpoints[sid].ctx.online, 20)
    after = csms.last_seq()
    r = await csms.call(sid, "RemoteStartTransaction", {"idTag": TAG, "connectorId": 1})
    assert r == {"status": "Accepted"}
    await csms.wait_for(sid, "StartTransaction", after=after)
    # Fails schema validation (idTag is CiString20): a CALLERROR, and the value stays out of logs.
    frame = orjson.dumps([2, "bad-1", "RemoteStartTransaction", {"idTag": LONG_TAG}]).decode()
    reply = await csms.send_raw(sid, frame, "bad-1")
    assert reply[0] == 4
    # Not even JSON: no id to answer to; the next CALL's answer shows it has been processed.
    await csms.stations[sid]._connection.send(
        '[2, "bad-2", "RemoteStopTransaction", {"transactionId": 1, ' f'"x": "{TAG}"')
    r = await csms.call(sid, "RemoteStopTransaction",
                        {"transactionId": next(iter(csms.transactions.values())).id})
    await csms.wait_for(sid, "StopTransaction", after=after)
    lines = json_log.getvalue().splitlines()
    assert len(lines) > 10
    leaks = []
    for line in lines:
        record = orjson.loads(line)  # one JSON object per line, tracebacks included
        # "ocpp" and "websockets.server" are the test CSMS's, which prints what it sends.
        if record["logger"] in ("ocpp", "websockets.server"):
            continue
        if "SECRETTAG" in line:
            leaks.append(line)
    assert not leaks, leaks[:3]
