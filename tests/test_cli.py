from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from bess_gateway.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "gateway.toml"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bess_gateway", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )


@pytest.mark.parametrize("command", [None, "run", "demo", "sim", "check-config"])
def test_help_of_every_command(command):
    args = ["--help"] if command is None else [command, "--help"]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: bess-gateway{' ' + command if command else ''}")
    assert proc.stderr == ""


def test_check_config_example_ok(capsys):
    assert main(["check-config", str(EXAMPLE)]) == 0
    out, err = capsys.readouterr()
    assert out == "OK: 50 endpoints (50 on 1.6, 0 on 2.0.1), PCS at 127.0.0.1:5020\n"
    assert err == ""


def test_check_config_bad_file_prints_one_line_per_error(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[control]\nperiod_ms = 5\nperod = 1\n[[endpoint]]\nid = "A"\ncsms_url = "http://x"\n'
    )
    assert main(["check-config", str(bad)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"{bad}: control.period_ms: 5 is out of range 10..1000",
        f'{bad}: control.perod: unknown key; did you mean "period_ms"?',
        f'{bad}: endpoint[0] (A).csms_url: "http://x" must start with ws:// or wss://',
    ]


def test_check_config_needs_an_endpoint(tmp_path, capsys):
    empty = tmp_path / "empty.toml"
    empty.write_text("[pcs]\nport = 502\n")
    assert main(["check-config", str(empty)]) == 2
    assert "no [[endpoint]] table" in capsys.readouterr().err


def test_missing_config_file_is_a_clear_error_not_a_traceback(tmp_path):
    for args in (["check-config", "nope.toml"], ["run", "--config", "nope.toml"]):
        proc = run_cli(*args)
        assert proc.returncode == 2
        assert "Traceback" not in proc.stderr
        assert "nope.toml: no such file" in proc.stderr


def test_usage_errors_exit_2(capsys):
    assert main([]) == 2
    assert main(["demo", "--endpoints", "0"]) == 2
    assert main(["demo", "--duration", "-1"]) == 2
    assert main(["sim", "--profile", "nope"]) == 2
    assert main(["run"]) == 2  # --config is required
    capsys.readouterr()


@pytest.fixture
def ctrl_c_interrupts() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt, as for a command started from an interactive shell.

    A shell without job control (a CI script, ``cmd &``) starts background jobs with SIGINT
    ignored, and Python keeps that: the Ctrl-C tests would find no handler to test."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def fake_module(monkeypatch, name: str, **attrs) -> None:
    module = types.ModuleType(name)
    for key, value in attrs.items():
        setattr(module, key, value)
    monkeypatch.setitem(sys.modules, name, module)


def test_run_loads_the_config_and_runs_the_gateway_on_uvloop(monkeypatch):
    seen = {}

    async def run_gateway(config):
        seen["config"] = config
        seen["loop"] = type(asyncio.get_running_loop()).__module__
        return 3

    fake_module(monkeypatch, "bess_gateway.gateway", run_gateway=run_gateway)
    assert main(["run", "--config", str(EXAMPLE), "--log-level", "warning"]) == 3
    assert len(seen["config"].endpoints) == 50
    assert seen["loop"].startswith("uvloop")


def test_run_reports_a_crash_as_exit_1(monkeypatch):
    async def run_gateway(config):
        raise RuntimeError("boom")

    fake_module(monkeypatch, "bess_gateway.gateway", run_gateway=run_gateway)
    assert main(["run", "--config", str(EXAMPLE), "--log-level", "ERROR"]) == 1


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.usefixtures("ctrl_c_interrupts")
def test_ctrl_c_and_sigterm_are_a_clean_stop(monkeypatch, sig):
    cleaned = []

    async def run_gateway(config):
        assert signal.getsignal(sig) not in (signal.SIG_DFL, signal.SIG_IGN)
        try:
            os.kill(os.getpid(), sig)
            await asyncio.sleep(10)
        finally:
            cleaned.append(True)
        return 5

    fake_module(monkeypatch, "bess_gateway.gateway", run_gateway=run_gateway)
    assert main(["run", "--config", str(EXAMPLE), "--log-level", "ERROR"]) == 0
    assert cleaned == [True]


def test_demo_passes_its_options(monkeypatch):
    seen = {}

    def run_demo(**kw):
        seen.update(kw)
        return 0

    fake_module(monkeypatch, "bess_gateway.demo.run", run_demo=run_demo)
    assert main(["demo", "--endpoints", "8", "--duration", "0", "--ocpp", "mixed"]) == 0
    assert seen == {"endpoints": 8, "duration": 0.0, "ocpp": "mixed", "site": True}
    assert main(["demo"]) == 0
    assert seen == {"endpoints": 4, "duration": 30.0, "ocpp": "1.6", "site": True}
    assert main(["demo", "--no-site"]) == 0
    assert seen["site"] is False


@pytest.mark.usefixtures("ctrl_c_interrupts")
def test_sim_passes_its_options_and_exits_quietly_on_ctrl_c(monkeypatch):
    seen = {}

    async def serve(host, port, profile, *, local_power_w, grid_meter, grid_meter_port,
                    control):
        seen.update(host=host, port=port, profile=profile, local_power_w=local_power_w,
                    meter=None if grid_meter is None else (
                        grid_meter.profile, grid_meter.model, grid_meter.load.describe()),
                    meter_port=grid_meter_port)
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.sleep(10)
        raise AssertionError("Ctrl-C did not stop the simulator")

    fake_module(monkeypatch, "bess_gateway.sim.server", serve=serve)
    assert main(["sim", "--port", "1502", "--profile", "sunspec"]) == 0
    assert seen.pop("meter")[:2] == ("generic", None)
    assert seen == {"host": "127.0.0.1", "port": 1502, "profile": "sunspec",
                    "local_power_w": 20_000.0, "meter_port": 1503}  # the next port
    assert main(["sim", "--profile", "sunspec", "--local-power-kw", "-35"]) == 0
    assert seen["local_power_w"] == -35_000.0
    assert seen["meter_port"] == 5021
    assert main(["sim", "--grid-meter-port", "-1"]) == 0
    assert seen["meter"] is None
    assert main(["sim", "--grid-meter-port", "1600", "--grid-meter-profile", "sunspec",
                 "--grid-meter-model", "204", "--hub-load", "constant:75"]) == 0
    assert seen["meter"] == ("sunspec", 204, "constant 75 kW")
    assert seen["meter_port"] == 1600
    assert main(["sim", "--hub-load", "steps:oops"]) == 2
    assert main(["sim", "--day-start", "25:00"]) == 2
