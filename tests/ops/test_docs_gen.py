"""docs/configuration.md is generated from config.py: it must be up to date."""

from __future__ import annotations

from pathlib import Path

from bess_gateway import config
from bess_gateway.tools import docs_gen


def test_generated_docs_are_current() -> None:
    docs = Path(__file__).resolve().parents[2] / "docs"
    for name, make in docs_gen.GENERATED.items():
        assert (docs / name).read_text(encoding="utf-8") == make(), (
            f"docs/{name} is stale: run `python -m bess_gateway.tools.docs_gen`")


def test_matrix_alarms_and_maps_come_from_the_code() -> None:
    from bess_gateway.domain.alarms import ALARMS
    from bess_gateway.ocpp.v16 import config_keys

    matrix = docs_gen.generate_ocpp_support()
    assert "| RemoteStartTransaction | CSMS | yes | ocpp/v16/transactions.py |" in matrix
    assert "| BootNotification | station | yes |" in matrix
    for key in config_keys.KEYS:
        assert f"| {key} |" in matrix
    alarms = docs_gen.generate_alarms()
    for cause, report in ALARMS.items():
        assert f"| `{cause}` |" in alarms and report.error_code in alarms
    maps = docs_gen.generate_register_maps()
    assert "| 107 | `soc_pct` | u16 | 0.1 | % | read |" in maps
    assert "| `setpoint_w` | 704.WSet | int32 | WSet_SF = 0 |" in maps


def test_reference_lists_every_key_with_its_range() -> None:
    text = docs_gen.generate()
    for section in (config.GatewayConfig, config.ControlConfig, config.ProtectionConfig,
                    config.PcsConfig):
        for name in section.__dataclass_fields__:
            assert f"| `{name}` |" in text
    assert "| `period_ms` | int | `100` | 10 .. 1000 |" in text
    assert "| `security_profile` | int | `0` | 0 .. 3 |" in text
    assert "| `count` |" in text


def test_check_mode_reports_staleness(tmp_path, capsys) -> None:
    assert docs_gen.main(["--check", "--output", str(tmp_path)]) == 1
    assert "stale" in capsys.readouterr().err
    assert docs_gen.main(["--output", str(tmp_path)]) == 0
    assert docs_gen.main(["--check", "--output", str(tmp_path)]) == 0
    (tmp_path / "alarms.md").write_text("edited by hand\n")
    assert docs_gen.main(["--check", "--output", str(tmp_path)]) == 1
