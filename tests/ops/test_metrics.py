"""/metrics and /status of a running gateway, scraped over real HTTP."""

from __future__ import annotations

import orjson
from httpget import get
from prometheus_client.parser import text_string_to_metric_families
from waiting import until

from bess_gateway.demo.csms import CsmsServer
from bess_gateway.gateway import Gateway
from bess_gateway.sim.server import SimulatorThread


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def scrape(gw: Gateway) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    assert gw.metrics is not None
    status, headers, body = await get(gw.metrics.port, "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    return samples(body.decode())


async def booted(gw: Gateway, csms: CsmsServer) -> list[str]:
    for sid in gw.endpoints:
        await csms.wait_for(sid, "BootNotification", timeout=20)
        await until(lambda s=sid: gw.endpoints[s].ctx.online, 20)
    return list(gw.endpoints)


async def test_metrics_off_when_listen_is_empty(gateway_factory) -> None:
    gw = await gateway_factory(1)
    assert gw.metrics is None


async def test_scrape_shows_endpoints_pcs_and_control_loop(
        gateway_factory, csms: CsmsServer, sim: SimulatorThread) -> None:
    gw = await gateway_factory(2, metrics_listen="127.0.0.1:0")
    ids = await booted(gw, csms)
    assert gw.metrics is not None and gw.metrics.port > 0
    await until(lambda: gw.journal.outbox.depth() == 0, 10)
    got = await scrape(gw)
    for sid in ids:
        assert got[("bess_endpoint_connected", (("endpoint", sid),))] == 1
        assert got[("bess_endpoint_online", (("endpoint", sid),))] == 1
        assert got[("bess_endpoint_boot_status", (("endpoint", sid), ("status", "Accepted")))] == 1
        assert got[("bess_endpoint_connects_total", (("endpoint", sid),))] == 1
        assert got[("bess_endpoint_reconnects_total", (("endpoint", sid),))] == 0
        assert got[("bess_endpoint_queue_depth", (("endpoint", sid),))] == 0
        assert got[("bess_ocpp_messages_sent_total",
                    (("action", "BootNotification"), ("endpoint", sid)))] >= 1
        assert got[("bess_connector_status",
                    (("connector", "1"), ("endpoint", sid), ("status", "Available")))] == 1
    assert got[("bess_pcs_link_up", ())] == 1
    assert got[("bess_control_cycles_total", ())] > 0
    assert ("bess_control_overruns_total", ()) in got
    assert ("bess_control_jitter_p99_seconds", ()) in got
    assert got[("bess_control_period_seconds", ())] == 0.1
    assert abs(got[("bess_soc_percent", ())] - sim.state.soc_pct) < 1.0
    assert ("bess_soh_percent", ()) in got
    assert ("bess_cell_temperature_max_celsius", ()) in got
    assert got[("bess_tripped", ())] == 0
    assert got[("bess_ocpp_call_round_trip_seconds_count", (("action", "BootNotification"),))] >= 2


async def test_remote_start_counts_the_call_and_the_command_latency(
        gateway_factory, csms: CsmsServer, sim: SimulatorThread) -> None:
    gw = await gateway_factory(1, metrics_listen="127.0.0.1:0")
    (sid,) = await booted(gw, csms)
    r = await csms.call(sid, "RemoteStartTransaction", {"idTag": "SECRET-TAG-7", "connectorId": 1})
    assert r == {"status": "Accepted"}
    await until(lambda: abs(sim.state.measured_w) > 1000, 20)
    key = ("bess_command_to_pcs_seconds_count", (("action", "RemoteStartTransaction"),))
    got = await scrape(gw)
    for _ in range(100):  # bounded: the tracker records within a few control periods
        if got.get(key, 0) >= 1:
            break
        got = await scrape(gw)
    assert got[key] == 1
    total = got[("bess_command_to_pcs_seconds_sum", (("action", "RemoteStartTransaction"),))]
    assert 0 <= total < 5
    assert got[("bess_ocpp_calls_received_total",
                (("action", "RemoteStartTransaction"), ("endpoint", sid)))] == 1
    assert got[("bess_sessions_active", ())] == 1
    await until(lambda: gw.core.snapshot().get("measured_w", 0) > 1000, 10)  # next PCS read
    got = await scrape(gw)
    assert got[("bess_pcs_measured_watts", ())] > 1000
    assert got[("bess_pcs_written_setpoint_watts", ())] > 0

    # /status: the same facts for scripts, and never the idTag.
    status, headers, body = await get(gw.metrics.port, "/status")
    assert status == 200 and headers["content-type"] == "application/json"
    assert b"SECRET-TAG-7" not in body
    doc = orjson.loads(body)
    (ep,) = doc["endpoints"]
    assert ep["id"] == sid and ep["online"] is True and ep["registration"] == "Accepted"
    (session,) = ep["sessions"]
    assert session["connector"] == 1 and session["transaction_id"] is not None
    assert ep["connectors"]["1"]["status"] == "Charging"
    assert doc["pcs"]["link_up"] is True and doc["pcs"]["soc_pct"] > 0
    assert doc["control"]["cycles"] > 0 and doc["control"]["period_ms"] == 100


async def test_trip_and_link_loss_show_in_metrics(
        gateway_factory, csms: CsmsServer, sim: SimulatorThread) -> None:
    gw = await gateway_factory(1, metrics_listen="127.0.0.1:0")
    await booted(gw, csms)
    sim.force_alarm_bits(1 << 2)  # over-temperature
    got = await scrape(gw)
    # The snapshot shows the trip one wake-up before the event reaches the counters: wait for both.
    for _ in range(200):
        if got.get(("bess_tripped", ())) == 1 and got.get(
                ("bess_core_events_total", (("kind", "trip"),)), 0) >= 1:
            break
        got = await scrape(gw)
    assert got[("bess_tripped", ())] == 1
    assert got[("bess_trip_cause", (("cause", "over_temperature"),))] == 1
    assert got[("bess_core_events_total", (("kind", "trip"),))] >= 1
    sim.clear_forced_alarms()
    sim.set_silent(True)
    await until(lambda: not gw.core.snapshot()["link_up"], 10)
    got = await scrape(gw)
    assert got[("bess_pcs_link_up", ())] == 0
    sim.set_silent(False)


async def test_http_edges(gateway_factory) -> None:
    gw = await gateway_factory(1, metrics_listen="127.0.0.1:0")
    port = gw.metrics.port
    status, _, body = await get(port, "/nope")
    assert status == 404
    status, _, _ = await get(port, "/metrics", method="POST")
    assert status == 405
    status, headers, body = await get(port, "/status", method="HEAD")
    assert status == 200 and int(headers["content-length"]) > 0 and body == b""
    status, headers, body = await get(port, "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b"<script>" in body and b"http://" not in body and b"https://" not in body
