"""The live status page in a real headless browser (Debian chromium): its JavaScript fills the
endpoints table from /status and draws the history charts from /history."""

from __future__ import annotations

import asyncio
import dataclasses
import html
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from httpget import get
from waiting import until

from bess_gateway.config import SiteConfig
from bess_gateway.demo.csms import CsmsServer
from bess_gateway.demo.run import demo_config
from bess_gateway.gateway import Gateway
from bess_gateway.sim.grid_meter import GridMeter
from bess_gateway.sim.hub_load import ConstantLoad
from bess_gateway.sim.server import SimulatorThread

CHROMIUM = shutil.which("chromium") or "chromium"


async def chromium(tmp_path: Path, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=4000", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(90):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode()


async def test_page_shows_endpoints_and_plot(gateway_factory, csms: CsmsServer,
                                             tmp_path: Path) -> None:
    gw = await gateway_factory(3, metrics_listen="127.0.0.1:0")
    for sid in gw.endpoints:
        await until(lambda s=sid: gw.endpoints[s].ctx.online, 20)
    await csms.call("DEMO-02", "RemoteStartTransaction", {"idTag": "PAGE-TAG", "connectorId": 1})
    await until(lambda: len(gw.metrics.history) >= 3, 10)  # something to plot
    url = f"http://127.0.0.1:{gw.metrics.port}/"

    # The served HTML has an empty table: rows can only come from the page's script.
    _, _, raw = await get(gw.metrics.port, "/")
    assert b"DEMO-01" not in raw

    dom = await chromium(tmp_path, "--dump-dom", url)
    assert 'data-loaded="1"' in dom
    rows = re.findall(r'<tr data-endpoint="([^"]+)">(.*?)</tr>', dom, re.S)
    assert [r[0] for r in rows] == ["DEMO-01", "DEMO-02", "DEMO-03"]
    cells = dict(rows)
    assert "online" in cells["DEMO-01"] and "Accepted" in cells["DEMO-01"]
    assert "c1 tx" in cells["DEMO-02"]  # the session shows up
    assert "PAGE-TAG" not in dom
    assert "PCS link: up" in dom

    shot = tmp_path / "status.png"
    await chromium(tmp_path, f"--screenshot={shot}", "--window-size=1100,800", url)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def chart_paths(dom: str, chart_id: str) -> tuple[dict[str, str], dict[str, list[tuple[float,
                                                                                      float]]]]:
    """The <svg> data-* attributes of one chart and each drawn series as (x, y) pixels."""
    m = re.search(rf'<figure class="chart" id="{chart_id}">(.*?)</figure>', dom, re.S)
    assert m, f"no {chart_id} in the page"
    body = m.group(1)
    svg = re.search(r"<svg([^>]*)>", body)
    assert svg is not None
    attrs = {k: html.unescape(v) for k, v in re.findall(r'data-([\w-]+)="([^"]*)"', svg.group(1))}
    series: dict[str, list[tuple[float, float]]] = {}
    for tag in re.findall(r"<path[^>]*>", body):
        key = re.search(r'data-series="([^"]+)"', tag)
        d = re.search(r' d="([^"]+)"', tag)
        assert key and d
        pts = [(float(x), float(y)) for x, y in re.findall(r"[ML]([-\d.]+),([-\d.]+)", d.group(1))]
        assert int(re.search(r'data-points="(\d+)"', tag).group(1)) == len(pts)
        series[key.group(1)] = pts
    return attrs, series


def assert_drawn_from(attrs: dict[str, str], pts: list[tuple[float, float]],
                      served: dict[str, Any], key: str, scale: float) -> None:
    """Every drawn point maps back (through the chart's own axes) to a served sample."""
    left, top, right, bottom = (float(v) for v in attrs["box"].split(","))
    t0, t1 = float(attrs["t0"]), float(attrs["t1"])
    lo, hi = float(attrs["vmin"]), float(attrs["vmax"])
    samples = [(t, v * scale) for t, v in zip(served["t"], served[key], strict=True)
               if v is not None]
    assert len(pts) >= 3
    tol_t = (t1 - t0) / (right - left) * 0.6 + 1e-6
    tol_v = (hi - lo) / (bottom - top) * 0.6
    for x, y in pts:
        t = t0 + (x - left) / (right - left) * (t1 - t0)
        v = lo + (1 - (y - top) / (bottom - top)) * (hi - lo)
        assert any(abs(t - ts) <= tol_t and abs(v - vs) <= tol_v for ts, vs in samples), (
            key, t, v, samples[-5:])


async def test_history_charts_are_drawn_from_the_served_history(
        gateway_factory, csms: CsmsServer, tmp_path: Path) -> None:
    gw = await gateway_factory(1, metrics_listen="127.0.0.1:0")
    await until(lambda: gw.endpoints["DEMO-01"].ctx.online, 20)
    await csms.call("DEMO-01", "RemoteStartTransaction", {"idTag": "T", "connectorId": 1})
    await until(lambda: len(gw.metrics.history) >= 4, 10)
    url = f"http://127.0.0.1:{gw.metrics.port}/"

    dom = await chromium(tmp_path, "--dump-dom", url)
    _, _, raw = await get(gw.metrics.port, "/history")  # after the page: a superset of its data
    served = json.loads(raw)
    assert len(served["t"]) >= 4 and served["span_s"] >= 3600

    attrs, series = chart_paths(dom, "chart-battery")
    assert set(series) == {"setpoint_w", "measured_w"}
    for key, pts in series.items():
        assert_drawn_from(attrs, pts, served, key, 1 / 1000)
    # The discharge shows: the highest measured point is well above the chart's zero.
    assert max(s for s in served["measured_w"]) > 10_000

    attrs, series = chart_paths(dom, "chart-soc")
    assert (attrs["vmin"], attrs["vmax"]) == ("0", "100")
    assert_drawn_from(attrs, series["soc_pct"], served, "soc_pct", 1)

    # No [site] table: the grid charts say so instead of drawing nothing silently.
    for chart_id in ("chart-grid", "chart-window"):
        attrs, series = chart_paths(dom, chart_id)
        assert attrs.get("empty") == "1" and not series
    assert "no grid meter data" in dom


async def test_history_endpoint_serves_columns_and_increments(gateway_factory) -> None:
    gw = await gateway_factory(1, metrics_listen="127.0.0.1:0")
    await until(lambda: len(gw.metrics.history) >= 3, 10)
    status, headers, raw = await get(gw.metrics.port, "/history")
    assert status == 200 and headers["content-type"] == "application/json"
    h = json.loads(raw)
    n = len(h["t"])
    assert n >= 3 and all(len(h[k]) == n for k in ("setpoint_w", "measured_w", "soc_pct",
                                                      "grid_w", "load_w", "window_avg_w",
                                                      "window_target_w"))
    assert h["t"] == sorted(h["t"])
    assert h["grid_w"] == [None] * n  # no [site] table
    assert h["limits"] == {"grid_import_max_w": None, "grid_export_max_w": None,
                           "peak_shave_w": None}
    _, _, raw = await get(gw.metrics.port, f"/history?since={h['t'][-2]}")
    later = json.loads(raw)
    assert later["t"][0] == h["t"][-1]  # only what came after
    _, _, raw = await get(gw.metrics.port, "/history?since=nan")
    assert len(json.loads(raw)["t"]) >= n  # a bad value serves everything


async def test_grid_charts_draw_the_site_history(csms: CsmsServer, tmp_path: Path) -> None:
    """With a [site] table on the simulator's grid meter: the grid and window charts draw the
    served samples, and the import limit and target are lines at their configured values."""
    meter = GridMeter(ConstantLoad(900_000))  # over the 800 kW limit: the battery must work
    sim = SimulatorThread(grid_meter=meter)
    sim.start()
    cfg = demo_config(tmp_path / "var", csms.url, sim.port, 1, sample_s=1,
                      metrics_listen="127.0.0.1:0")
    cfg = dataclasses.replace(cfg, site=SiteConfig(
        grid_meter=f"127.0.0.1:{sim.grid_meter_port}", grid_import_max_kw=800.0,
        peak_shave_kw=600.0, demand_window_min=1))
    gw = Gateway(cfg)
    await gw.start()
    try:
        await until(lambda: sum(1 for r in gw.metrics.history if r[4] is not None) >= 4, 20)
        dom = await chromium(tmp_path, "--dump-dom", f"http://127.0.0.1:{gw.metrics.port}/")
        _, _, raw = await get(gw.metrics.port, "/history")
    finally:
        async with asyncio.timeout(10):
            await gw.stop(drain_s=0)
        sim.stop()
    served = json.loads(raw)
    assert served["limits"] == {"grid_import_max_w": 800_000.0, "grid_export_max_w": None,
                                "peak_shave_w": 600_000.0}

    attrs, series = chart_paths(dom, "chart-grid")
    assert set(series) == {"grid_w", "load_w"}
    for key, pts in series.items():
        assert_drawn_from(attrs, pts, served, key, 1 / 1000)
    top, bottom = (float(v) for v in attrs["box"].split(",")[1::2])
    lo, hi = float(attrs["vmin"]), float(attrs["vmax"])
    for label, kw in (("grid_import_max", 800.0), ("peak_shave", 600.0)):
        m = re.search(rf'<line[^>]*y1="([\d.]+)"[^>]*data-limit="{label}"', dom)
        assert m, label
        assert float(m.group(1)) == pytest.approx(
            top + (bottom - top) * (1 - (kw - lo) / (hi - lo)), abs=0.1)
    # The battery took the hub under the limit: the meter's served history shows it.
    assert served["load_w"][-1] == 900_000 and served["grid_w"][-1] <= 800_000 * 1.01

    attrs, series = chart_paths(dom, "chart-window")
    assert set(series) == {"window_avg_w", "window_target_w"}
    for key, pts in series.items():
        assert_drawn_from(attrs, pts, served, key, 1 / 1000)
    assert "grid import" in dom and "window average" in dom
