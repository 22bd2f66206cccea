"""Issue 13 item 7: CALLs with made-up action names do not grow the gateway's counters.

The action of an incoming CALL is the peer's text. Counted as it came (RpcStats, the
bess_ocpp_* metric labels), every new name was a new counter for as long as the process ran, and
a new series on every scrape. A name the version does not define counts as "unknown"; the CALL
is still answered as the spec says (NotImplemented; a known action we have no handler for:
NotSupported). The demo CSMS (the `ocpp` library) on loopback, the real simulator; both
versions."""

from __future__ import annotations

import random
import string

import orjson
import pytest
from conftest import GatewayFactory
from waiting import booted, until

from bess_gateway.demo.csms import CsmsServer
from bess_gateway.gateway import Gateway
from bess_gateway.ocpp.schemas import validator

RANDOM_CALLS = 300
# Known in the version, sent by stations only: the gateway has no handler for them.
UNHANDLED = {"1.6": "StartTransaction", "2.0.1": "TransactionEvent"}


def action_labels(gw: Gateway, metric: str) -> dict[str, float]:
    """action label -> value of `metric`, summed over endpoints (a real collection, as a scrape)."""
    assert gw.metrics is not None
    out: dict[str, float] = {}
    for family in gw.metrics.registry.collect():
        for s in family.samples:
            if s.name == metric:
                out[s.labels["action"]] = out.get(s.labels["action"], 0.0) + s.value
    return out


@pytest.mark.parametrize("ocpp", ["1.6", "2.0.1"])
async def test_calls_with_random_actions_count_as_unknown(
        gateway_factory: GatewayFactory, csms: CsmsServer, ocpp: str) -> None:
    gw = await gateway_factory(1, ocpp=ocpp, metrics_listen="127.0.0.1:0")
    (sid,) = await booted(gw, csms)
    known = validator(ocpp).actions
    rng = random.Random(13)
    names = {"".join(rng.choices(string.ascii_letters, k=rng.randint(1, 40)))
             for _ in range(RANDOM_CALLS)} - known
    for k, name in enumerate(sorted(names)):
        reply = await csms.send_raw(sid, orjson.dumps([2, f"r-{k}", name, {}]).decode(), f"r-{k}")
        assert reply[:3] == [4, f"r-{k}", "NotImplemented"], reply
    unhandled = UNHANDLED[ocpp]
    reply = await csms.send_raw(sid, orjson.dumps([2, "s-1", unhandled, {}]).decode(), "s-1")
    assert reply[:3] == [4, "s-1", "NotSupported"], reply

    allowed = known | {"unknown"}
    received = action_labels(gw, "bess_ocpp_calls_received_total")
    assert set(received) <= allowed, sorted(set(received) - allowed)[:5]
    assert received["unknown"] == len(names)
    assert received[unhandled] == 1
    # Our CALLERRORs count as sent, once they are (the last may be counted after the CSMS has it).
    await until(lambda: action_labels(gw, "bess_ocpp_messages_sent_total").get("unknown")
                == len(names), 5)
    sent = action_labels(gw, "bess_ocpp_messages_sent_total")
    assert set(sent) <= allowed, sorted(set(sent) - allowed)[:5]

    rpc = gw.endpoints[sid].ctx.rpc
    assert rpc is not None
    assert set(rpc.stats.calls_in) <= allowed, sorted(set(rpc.stats.calls_in) - allowed)[:5]
    assert rpc.stats.calls_in["unknown"] == len(names)
    assert rpc.stats.errors_out == {"NotImplemented": len(names), "NotSupported": 1}
