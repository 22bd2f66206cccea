"""The `[site]` table (config.py) and the site calendar (site.py): check-config names each bad
key, and the calendar's DST edges and window intervals are the ones the EU rule and the local
clock give, written out here as UTC instants."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bess_gateway._core import Controller
from bess_gateway.config import ConfigError, parse_config
from bess_gateway.domain import site_calendar as site


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()  # type: ignore[misc]


def site_config(**site_keys: object):
    return parse_config({"site": {"grid_meter": "192.0.2.20:502", **site_keys}},
                        base_dir=Path("."))


def test_design_example_parses_and_reaches_the_core() -> None:
    cfg = site_config(grid_meter_unit_id=1, grid_meter_profile="generic", grid_import_max_kw=800,
                      grid_export_max_kw=0, peak_shave_kw=500, demand_window_min=15,
                      recharge_below_kw=300, recharge_max_kw=100, reserve_soc_pct=30,
                      timezone="Europe/Berlin",
                      window=[{"days": "Mon-Fri", "start": "17:00", "end": "21:00",
                               "mode": "discharge", "power_kw": 200}])
    assert cfg.site is not None
    assert cfg.site.window[0].weekdays == (0, 1, 2, 3, 4)
    params = cfg.core_params()
    assert params["site_grid_meter_host"] == "192.0.2.20"
    assert params["site_grid_meter_port"] == 502
    assert params["site_grid_export_max_kw"] == 0.0  # 0 is a limit, not "absent"
    assert "site_grid_import_max_kw" in params and params["site_reserve_soc_pct"] == 30.0
    # The hard limits are aimed 1 % inside by default; the limit itself is sent unchanged.
    assert params["site_grid_limit_margin_pct"] == 1.0
    assert params["site_grid_import_max_kw"] == 800.0
    Controller(params)  # the core takes every key
    # Absent keys are off: nothing is sent for them.
    assert "site_peak_shave_kw" not in site_config().core_params()
    assert "site_grid_meter_host" not in parse_config({}, base_dir=Path(".")).core_params()


@pytest.mark.parametrize(("keys", "expected"), [
    ({"grid_meter": "meter.local"}, 'site.grid_meter: "meter.local" is not "host:port"'),
    ({"grid_meter_profile": "modbus"}, "site.grid_meter_profile"),
    ({"demand_window_min": 0}, "site.demand_window_min: 0 is out of range 1..60"),
    ({"peak_shave_kw": -5}, "site.peak_shave_kw: -5 is out of range"),
    ({"grid_limit_margin_pct": 11}, "site.grid_limit_margin_pct: 11 is out of range"),
    ({"timezone": "Europe/Atlantis"}, "site.timezone"),
    ({"peak_shave": 500}, 'site.peak_shave: unknown key; did you mean "peak_shave_kw"?'),
    ({"window": [{"days": "Mon-Fry", "start": "17:00", "end": "21:00", "mode": "hold"}]},
     "site.window[0].days"),
    ({"window": [{"start": "17:00", "end": "17:00", "mode": "hold"}]}, "site.window[0].end"),
    ({"window": [{"start": "7:00", "end": "9:00", "mode": "hold"}]}, "site.window[0].start"),
    ({"window": [{"start": "07:00", "end": "09:00", "mode": "discharge"}]},
     "site.window[0].power_kw: missing"),
    ({"window": [{"mode": "idle"}]}, "site.window[0].mode"),
    ({"window": [{"mode": "hold", "power": 3}]}, "site.window[0].power: unknown key"),
])
def test_each_bad_site_key_is_named(keys: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as e:
        site_config(**keys)
    assert expected in str(e.value)


def test_a_site_without_a_meter_is_an_error() -> None:
    with pytest.raises(ConfigError) as e:
        parse_config({"site": {"peak_shave_kw": 500}}, base_dir=Path("."))
    assert "site.grid_meter: missing" in str(e.value)


def test_check_config_names_bad_site_keys(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text('[site]\ngrid_meter = "127.0.0.1:502"\ngrid_import_max = 800\n'
                    '[[site.window]]\ndays = "Sat,Sun"\nstart = "22:00"\nend = "06:00"\n'
                    'mode = "charge"\npower_kw = 50\nbogus = 1\n', encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", "bess_gateway", "check-config", str(path)],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert "site.grid_import_max: unknown key" in out and "grid_import_max_kw" in out
    assert "site.window[0].bogus: unknown key" in out


def test_check_config_accepts_the_design_example_and_says_what_the_site_does(
        tmp_path: Path) -> None:
    # The `[site]` example of design.md section 8, as written there.
    path = tmp_path / "gw.toml"
    path.write_text('[site]\ngrid_meter = "192.0.2.20:502"\ngrid_meter_unit_id = 1\n'
                    'grid_meter_profile = "generic"\ngrid_import_max_kw = 800\n'
                    'grid_export_max_kw = 0\npeak_shave_kw = 500\ndemand_window_min = 15\n'
                    'recharge_below_kw = 300\nrecharge_max_kw = 100\nreserve_soc_pct = 30\n'
                    'timezone = "Europe/Berlin"\n[[site.window]]\ndays = "Mon-Fri"\n'
                    'start = "17:00"\nend = "21:00"\nmode = "discharge"\npower_kw = 200\n'
                    '[[endpoint]]\nid = "HUB-1"\ncsms_url = "ws://127.0.0.1:9000/ocpp"\n',
                    encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", "bess_gateway", "check-config", str(path)],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert ("site: grid meter 192.0.2.20:502 (generic), import max 800 kW, export max 0 kW, "
            "demand target 500 kW, hard limits aimed 1 % inside, 1 window(s) in Europe/Berlin"
            ) in r.stdout


def test_calendar_offsets_change_at_the_eu_dst_instants() -> None:
    cfg = site_config(timezone="Europe/Berlin")
    assert cfg.site is not None
    # EU rule: summer time from the last Sunday of March, 01:00 UTC, to the last Sunday of
    # October, 01:00 UTC.
    offsets, _ = site.calendar(cfg.site, utc(2024, 3, 30, 12))
    assert offsets == [(utc(2024, 3, 29, 12), 3600.0), (utc(2024, 3, 31, 1), 7200.0)]
    offsets, _ = site.calendar(cfg.site, utc(2024, 10, 26, 12))
    assert offsets == [(utc(2024, 10, 25, 12), 7200.0), (utc(2024, 10, 27, 1), 3600.0)]


def test_calendar_windows_follow_the_local_clock_across_dst() -> None:
    cfg = site_config(timezone="Europe/Berlin", window=[
        {"days": "Mon-Fri", "start": "17:00", "end": "21:00", "mode": "discharge",
         "power_kw": 200},
        {"days": "Sat", "start": "22:00", "end": "06:00", "mode": "charge", "power_kw": 50}])
    assert cfg.site is not None
    _, windows = site.calendar(cfg.site, utc(2024, 3, 30, 12))  # Saturday, CET
    assert (utc(2024, 3, 29, 16), utc(2024, 3, 29, 20), "discharge", 200_000.0) in windows
    # Saturday 22:00 CET to Sunday 06:00 CEST: the night is an hour shorter.
    assert (utc(2024, 3, 30, 21), utc(2024, 3, 31, 4), "charge", 50_000.0) in windows
    # Monday, CEST: 17:00 local is 15:00 UTC.
    assert (utc(2024, 4, 1, 15), utc(2024, 4, 1, 19), "discharge", 200_000.0) in windows
    assert not any(w[0] == utc(2024, 3, 30, 16) for w in windows), "no window on Saturday"
    assert windows == sorted(windows)


def test_the_core_takes_the_calendar_and_aligns_windows_to_local_time() -> None:
    # Asia/Kathmandu is UTC+05:45: an hour-long demand window starts at local full hours.
    cfg = site_config(timezone="Asia/Kathmandu", demand_window_min=60, peak_shave_kw=500)
    assert cfg.site is not None
    ctl = Controller(cfg.core_params())
    now = utc(2024, 6, 1, 12, 30)  # 18:15 local
    ctl.set_site_calendar(*site.calendar(cfg.site, now))
    out = ctl.step(now, None, grid_w=100_000.0)
    assert out["site"]["window_start_s"] == utc(2024, 6, 1, 12, 15)  # 18:00 local
    with pytest.raises(ValueError):
        ctl.set_site_calendar([(1.0, 0.0)], [(5.0, 4.0, "charge", 1.0)])  # ends before it starts


def test_a_crash_gap_is_split_with_the_site_owning_its_power() -> None:
    """gateway._split_gap: the PCS counted 300 Wh while the gateway was down; at the last save
    a discharge session had 50 kW and the site 100 kW of discharge: the session is billed a
    third, the site's two thirds are no session's (before the site, all 300 Wh went to it)."""
    from bess_gateway.gateway import Gateway
    from bess_gateway.journal import TxRecord

    cfg = site_config(grid_import_max_kw=800)
    gw = Gateway(cfg)
    basis = {"time_s": 1000.0, "discharged_wh": 10_000, "charged_wh": 0,
             "allocations": [["HUB-1", 1, 50_000.0, "tx-1"]], "settling": [], "site_w": 100_000.0}
    snap = {"now_s": 1060.0, "energy_discharged_wh": 10_300, "energy_charged_wh": 0}
    tx = TxRecord(endpoint_id="HUB-1", local_id="tx-1", connector=1, id_tag_hash="h",
                  meter_start_wh=0, started_at="2026-01-01T00:00:00Z")
    restored: dict[tuple[str, int], float] = {}
    changed: dict[tuple[str, int], float] = {}
    gw._split_gap(basis, snap, {"HUB-1": [tx]}, {}, restored, changed)
    assert restored[("HUB-1", 1)] == pytest.approx(100.0)
    # Without site power at the save the session owned the whole gap, as before.
    restored.clear()
    changed.clear()
    gw._split_gap({**basis, "site_w": 0.0}, snap, {"HUB-1": [tx]}, {}, restored, changed)
    assert restored[("HUB-1", 1)] == pytest.approx(300.0)
