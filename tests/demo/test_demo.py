"""The demo end to end on its embedded parts: simulator, demo CSMS and a mixed 1.6/2.0.1 gateway."""

from __future__ import annotations

import asyncio
import io
import json
import re
import sys
from pathlib import Path

from bess_gateway.demo.run import SitePlan, _demo, site_summary
from bess_gateway.sim.grid_meter import MeterReading

sys.path.insert(0, str(Path(__file__).resolve().parent / "ops"))
from httpget import get


async def _printed(out: io.StringIO, pattern: str, timeout: float = 20.0) -> str:
    async with asyncio.timeout(timeout):
        while not (m := re.search(pattern, out.getvalue())):
            await asyncio.sleep(0.05)
    return m.group(1)


async def test_mixed_demo_moves_energy_both_ways_on_both_versions() -> None:
    out = io.StringIO()
    demo = asyncio.create_task(_demo(4, 16.0, out, "mixed"))
    # The status page is served while the demo runs, at the URL it printed.
    url = await _printed(out, r"status page: http://127\.0\.0\.1:(\d+)/")
    status, _, page = await get(int(url), "/")
    assert status == 200 and b"chart-grid" in page
    status, _, raw = await get(int(url), "/status")
    assert status == 200 and json.loads(raw)["pcs"]["link_up"] in (True, False)
    code = await demo
    text = out.getvalue()
    assert code == 0, text
    assert "demo OK" in text
    rows = {line.split()[0]: line.split() for line in text.splitlines()
            if line.startswith("DEMO-")}
    # DEMO-01/03 speak 1.6, DEMO-02/04 2.0.1: every one ran a discharge and a charge session.
    assert sorted(rows) == ["DEMO-01", "DEMO-02", "DEMO-03", "DEMO-04"]
    for cols in rows.values():
        transactions, discharged, charged = int(cols[1]), float(cols[2]), float(cols[3])
        assert transactions == 2 and discharged > 0 and charged > 0, cols
    # The site: the live view carried the hub, and the battery kept the hub's import under the
    # limit it would have crossed without it (the demo's stretch of the day has a peak over it).
    assert re.search(r"hub load +[\d.]+ kW +grid import +-?[\d.]+ kW", text), text
    assert "window avg" in text
    peak = re.search(r"peak import: ([\d.]+) kW with the battery, ([\d.]+) kW without "
                     r"\(limit ([\d.]+) kW\)", text)
    over = re.search(r"over the import limit: ([\d.]+) s with the battery, ([\d.]+) s without",
                     text)
    assert peak and over, text
    with_kw, without_kw, limit_kw = (float(g) for g in peak.groups())
    assert without_kw > limit_kw  # the stretch the demo chose crosses the limit ...
    assert with_kw < without_kw and float(over.group(1)) < float(over.group(2))  # ... less so
    assert re.search(r"demand-charge windows met: \d+/\d+ with the battery", text)


async def test_201_demo_bills_what_the_pcs_registers_moved() -> None:
    """2.0.1 Ended events carry the register after the ramp-down (bess_gateway.endpoint.settling):
    the
    CSMS's billed energy per direction is the PCS register delta (it was ~13 % short before),
    less what the battery moved for the site (issue 14: no session's energy, never billed)."""
    out = io.StringIO()
    code = await _demo(4, 16.0, out, "2.0.1")
    text = out.getvalue()
    assert code == 0, text
    billed, moved = _billed_and_moved(text)
    site = _site_energy(text)
    for direction, kwh in moved.items():
        assert kwh > 0.1, text
        assert abs(billed[direction] + site[direction] - kwh) <= 0.01 * kwh, (
            direction, billed, site, moved)


def _billed_and_moved(text: str) -> tuple[dict[str, float], dict[str, float]]:
    total = next(line.split() for line in text.splitlines() if line.startswith("total "))
    pcs = re.search(r"PCS energy registers: ([\d.]+) kWh discharged, ([\d.]+) kWh charged", text)
    assert pcs is not None, text
    return ({"discharged": float(total[2]), "charged": float(total[3])},
            {"discharged": float(pcs.group(1)), "charged": float(pcs.group(2))})


def _site_energy(text: str) -> dict[str, float]:
    m = re.search(r"used for the site \(billed to no session\): ([\d.]+) kWh discharged, "
                  r"([\d.]+) kWh charged", text)
    assert m is not None, text
    return {"discharged": float(m.group(1)), "charged": float(m.group(2))}


async def test_a_demo_cut_short_mid_session_still_balances() -> None:
    """Ended during the charge phase: the summary waits for the stops it asked for at the end
    (their register settles after the ramp-down, ~9 Wh per session here), so billed and
    PCS-counted energy agree to the whole-Wh rounding of each meterStart/meterStop."""
    out = io.StringIO()
    # Without the site: it would move energy no session owns, which this balance leaves out
    # (the 2.0.1 test above accounts for it).
    code = await _demo(2, 9.0, out, "1.6", site=False)
    text = out.getvalue()
    assert code == 0, text
    assert "phase=charging" in text, text  # it was cut in the charge phase
    billed, moved = _billed_and_moved(text)
    for direction, kwh in moved.items():
        assert kwh > 0.02, text
        assert abs(billed[direction] - kwh) <= 0.003 + 0.01 * kwh, (direction, billed, moved)


def test_site_summary_judges_clock_aligned_windows_with_and_without_the_battery() -> None:
    """Synthetic meter readings every 0.5 s from 30 s before a minute boundary for 120 s:
    1000 kW of hub load the first minute-window, 400 kW after; the battery gives 400 kW for
    the first 60 s. Expected figures are worked out here from those inputs."""
    plan = SitePlan(start_hour=0, grid_import_max_kw=900, peak_shave_kw=700,
                    recharge_below_kw=100, recharge_max_kw=50, demand_window_min=1)
    offset = 1_800_000_030.0  # wall = t + offset; t = 30 is a wall-clock minute boundary
    readings = []
    for i in range(241):
        t = i * 0.5
        load = 1_000_000.0 if t < 90 else 400_000.0
        battery = 400_000.0 if t < 60 else 0.0
        readings.append(MeterReading(t, load, battery, load - battery))
    out = io.StringIO()
    site_summary(readings, plan, offset, True, out)
    text = out.getvalue()
    assert "peak import: 1000.0 kW with the battery, 1000.0 kW without (limit 900 kW)" in text
    # Over 900 kW: with the battery from t = 60 to 90 (30 s), without for 90 s.
    assert "time over the import limit: 30.0 s with the battery, 90.0 s without" in text
    rows = [line.split() for line in text.splitlines() if re.match(r"\d\d:\d\d:\d\d ", line)]
    assert len(rows) == 3  # partial, full, partial
    # Window 1 (t 0-29.5): 600 kW with, 1000 without -> met only with the battery; partial.
    assert rows[0][2:5] == ["600.0k", "1000.0k", "700k"] and rows[0][5:] == ["yes", "(partial)"]
    # Window 2 (t 30-89.5): half at 600 kW, half at 1000 kW = 800 kW with; 1000 without.
    assert rows[1][2:4] == ["800.0k", "1000.0k"] and rows[1][5:] == ["NO"]
    assert rows[2][2:4] == ["400.0k", "400.0k"] and rows[2][5] == "yes"
    assert "demand-charge windows met: 2/3 with the battery, 1/3 without" in text
