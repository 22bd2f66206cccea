from __future__ import annotations

from pathlib import Path

import pytest

from bess_gateway.config import (
    Config,
    ConfigError,
    ControlConfig,
    EndpointConfig,
    ProtectionConfig,
    load_config,
    parse_config,
)

ROOT = Path(__file__).resolve().parents[1]
EP = {"id": "BESS-01", "csms_url": "ws://127.0.0.1:9000/ocpp"}


def parse(data: dict, tmp_path: Path, **kw) -> Config:
    return parse_config(data, base_dir=tmp_path, **kw)


def errors_of(data: dict, tmp_path: Path, **kw) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(data, tmp_path, **kw)
    return info.value.errors


def one_error(data: dict, tmp_path: Path) -> str:
    errors = errors_of(data, tmp_path)
    assert len(errors) == 1, errors
    return errors[0]


def test_defaults_match_the_design(tmp_path):
    cfg = parse({"endpoint": [EP]}, tmp_path)
    assert cfg.gateway.data_dir == tmp_path / "var"
    assert cfg.gateway.metrics_listen == "127.0.0.1:9464"
    assert cfg.gateway.metrics_address == ("127.0.0.1", 9464)
    assert cfg.gateway.log_format == "text"
    assert cfg.control == ControlConfig()
    assert (cfg.control.period_ms, cfg.control.session_max_kw) == (100, 150.0)
    assert cfg.protection == ProtectionConfig()
    assert (cfg.pcs.host, cfg.pcs.port, cfg.pcs.unit_id, cfg.pcs.profile, cfg.pcs.timeout_ms) == (
        "127.0.0.1",
        5020,
        1,
        "generic",
        1000,
    )
    (ep,) = cfg.endpoints
    assert (ep.ocpp_version, ep.security_profile, ep.password) == ("1.6", 0, None)
    assert (ep.vendor, ep.model, ep.serial_number) == ("bess-gateway", "BESS-OCPP", "BESS-01")
    assert (ep.heartbeat_interval_s, ep.meter_sample_interval_s, ep.index) == (300, 10, 0)
    assert ep.url == "ws://127.0.0.1:9000/ocpp/BESS-01"
    assert cfg.warnings == ()


def test_no_endpoints_is_valid_unless_required(tmp_path):
    assert parse({}, tmp_path).endpoints == ()
    (err,) = errors_of({}, tmp_path, require_endpoints=True)
    assert err.startswith("endpoint: no [[endpoint]]")


def test_core_params_has_the_control_loop_keys(tmp_path):
    cfg = parse({"control": {"period_ms": 50}, "pcs": {"port": 1502}, "endpoint": [EP]}, tmp_path)
    params = cfg.core_params()
    assert set(params) == {
        "period_ms",
        "ramp_kw_per_s",
        "site_max_discharge_kw",
        "site_max_charge_kw",
        "soc_min_pct",
        "soc_max_pct",
        "dc_voltage_min_v",
        "dc_voltage_max_v",
        "cell_temp_min_c",
        "cell_temp_max_c",
        "pcs_host",
        "pcs_port",
        "pcs_unit_id",
        "pcs_timeout_ms",
        "pcs_profile",
    }
    assert params["period_ms"] == 50 and params["pcs_port"] == 1502
    assert params["pcs_profile"] == "generic"


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        ("control", "period_ms", 5, "control.period_ms: 5 is out of range 10..1000"),
        ("control", "period_ms", 1001, "control.period_ms: 1001 is out of range 10..1000"),
        ("control", "period_ms", 100.5, "control.period_ms: expected an integer"),
        ("control", "ramp_kw_per_s", 0, "control.ramp_kw_per_s: 0 is out of range 0.001..100000"),
        ("control", "site_max_charge_kw", 1e6, "control.site_max_charge_kw: 1000000 is out of"),
        ("control", "session_max_kw", -1, "control.session_max_kw: -1 must be greater than 0"),
        ("control", "site_max_discharge_kw", -5, "control.site_max_discharge_kw: -5 is out of"),
        ("control", "site_max_charge_kw", "600", "control.site_max_charge_kw: expected a number"),
        ("control", "ramp_kw_per_s", float("inf"), "control.ramp_kw_per_s: inf is not a finite"),
        ("protection", "soc_min_pct", -1, "protection.soc_min_pct: -1 is out of range 0..100"),
        ("protection", "soc_max_pct", 101, "protection.soc_max_pct: 101 is out of range 0..100"),
        ("protection", "dc_voltage_max_v", 5000, "protection.dc_voltage_max_v: 5000 is out of"),
        ("protection", "cell_temp_max_c", 150, "protection.cell_temp_max_c: 150 is out of"),
        ("protection", "cell_temp_min_c", True, "protection.cell_temp_min_c: expected a number"),
        ("pcs", "port", 0, "pcs.port: 0 is out of range 1..65535"),
        ("pcs", "unit_id", 248, "pcs.unit_id: 248 is out of range 0..247"),
        ("pcs", "timeout_ms", 10, "pcs.timeout_ms: 10 is out of range 50..60000"),
        ("pcs", "host", "", "pcs.host: must not be empty"),
        ("pcs", "profile", "modbus", 'pcs.profile: "modbus" is not "generic", "sunspec"'),
        ("pcs", "profile", "maps/x.toml", "pcs.profile: register-map file not found"),
        ("gateway", "log_format", "xml", 'gateway.log_format: "xml" is not one of "text"'),
        ("gateway", "metrics_listen", "9464", 'gateway.metrics_listen: "9464" is not "host:port"'),
        ("gateway", "queue_budget_mb", 0, "gateway.queue_budget_mb: 0 is out of range 0.01..1000"),
        ("gateway", "queue_budget_mb", "1GB", "gateway.queue_budget_mb: expected a number"),
        ("gateway", "replay_rate_per_s", -1, "gateway.replay_rate_per_s: -1 is out of range 0.."),
    ],
)
def test_each_bad_value_names_its_key(tmp_path, section, key, value, expected):
    assert one_error({section: {key: value}}, tmp_path).startswith(expected)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("heartbeat_interval_s", 10, "heartbeat_interval_s: 10 is out of range 30..3600"),
        ("meter_sample_interval_s", 0, "meter_sample_interval_s: 0 is out of range 1..300"),
        ("security_profile", 4, "security_profile: 4 is out of range 0..3"),
        ("ocpp_version", 1.6,
         'ocpp_version: 1.6 is not one of "1.6" or "2.0.1" or "2.1" (quote it)'),
        ("csms_url", "http://x/ocpp", 'csms_url: "http://x/ocpp" must start with ws:// or wss://'),
        ("csms_url", "ws://x/ocpp?a=1", 'csms_url: "ws://x/ocpp?a=1" must not have a query'),
        ("csms_url", "ws:///ocpp", 'csms_url: "ws:///ocpp" has no host'),
        ("vendor", "v" * 21, "vendor: " + '"' + "v" * 21 + '" is 21 characters'),
        ("model", "Modèle", 'model: "Modèle" must be printable ASCII'),
        ("ca_file", "missing.pem", "ca_file: file not found"),
    ],
)
def test_endpoint_errors_name_the_endpoint_and_key(tmp_path, key, value, expected):
    err = one_error({"endpoint": [EP, {**EP, "id": "BESS-02", key: value}]}, tmp_path)
    assert err.startswith(f"endpoint[1] (BESS-02).{expected}")


def test_all_errors_are_collected_and_the_message_says_what_to_do(tmp_path):
    data = {
        "control": {"period_ms": 5, "ramp_kw_per_s": -1},
        "pcs": {"port": 70000},
        "endpoint": [{"id": "A", "csms_url": "ftp://x"}, {"csms_url": "ws://x"}],
    }
    with pytest.raises(ConfigError) as info:
        parse(data, tmp_path)
    keys = [e.split(":")[0] for e in info.value.errors]
    assert keys == [
        "control.period_ms",
        "control.ramp_kw_per_s",
        "pcs.port",
        "endpoint[0] (A).csms_url",
        "endpoint[1].id",
    ]
    text = str(info.value)
    assert "5 configuration errors" in text and "check-config" in text


def test_min_must_be_below_max(tmp_path):
    err = one_error({"protection": {"soc_min_pct": 96}}, tmp_path)
    assert err == "protection.soc_min_pct: soc_min_pct (96) must be less than soc_max_pct (95)"
    errors = errors_of(
        {
            "protection": {
                "dc_voltage_min_v": 900,
                "dc_voltage_max_v": 900,
                "cell_temp_min_c": 40,
                "cell_temp_max_c": 30,
            }
        },
        tmp_path,
    )
    assert [e.split(":")[0] for e in errors] == [
        "protection.dc_voltage_min_v",
        "protection.cell_temp_min_c",
    ]
    err = one_error({"protection": {"soc_max_pct": 4}}, tmp_path)
    assert err.startswith("protection.soc_max_pct: soc_min_pct (5) must be less than")


def test_unknown_keys_get_a_suggestion(tmp_path):
    data = {
        "control": {"perod_ms": 100},
        "endpoint": [{**EP, "heartbeat_interval": 60}],
        "gatway": {},
        "period_ms": 100,
        "zzz": 1,
    }
    errors = errors_of(data, tmp_path)
    assert 'control.perod_ms: unknown key; did you mean "period_ms"?' in errors
    assert (
        "endpoint[0] (BESS-01).heartbeat_interval: unknown key; "
        'did you mean "heartbeat_interval_s"?' in errors
    )
    assert 'gatway: unknown key; did you mean "gateway"?' in errors
    assert "period_ms: unknown top-level key; it belongs in the [control] table" in errors
    assert any(e.startswith("zzz: unknown key; known keys are gateway, control") for e in errors)


def test_count_block_expands_with_format_and_start(tmp_path):
    cfg = parse(
        {
            "endpoint": [
                EP,
                {"id": "HUB-{n:03}", "count": 3, "csms_url": "wss://csms.example/ocpp"},
                {"id": "X{n}", "count": 2, "start": 0, "serial_number": "SN{n:04}", **_v201},
            ]
        },
        tmp_path,
    )
    ids = [e.id for e in cfg.endpoints]
    assert ids == ["BESS-01", "HUB-001", "HUB-002", "HUB-003", "X0", "X1"]
    assert [e.index for e in cfg.endpoints] == list(range(6))
    assert [e.serial_number for e in cfg.endpoints[-2:]] == ["SN0000", "SN0001"]
    assert cfg.version_counts() == {"1.6": 4, "2.0.1": 2, "2.1": 0}


_v201 = {"csms_url": "ws://h/ocpp", "ocpp_version": "2.0.1"}


def test_count_block_errors(tmp_path):
    errors = errors_of(
        {
            "endpoint": [
                {"id": "HUB", "count": 3, "csms_url": "ws://h"},
                {"id": "HUB-{x}", "count": 3, "csms_url": "ws://h"},
                {"id": "A", "start": 2, "csms_url": "ws://h"},
                {"id": "B{n}", "count": 0, "csms_url": "ws://h"},
                {"id": "C {n}", "count": 5, "csms_url": "ws://h"},
            ]
        },
        tmp_path,
    )
    assert errors[0].startswith('endpoint[0].id: "HUB" gives the same id 3 times; use {n}')
    assert errors[1].startswith('endpoint[1].id: cannot expand "HUB-{x}"')
    assert errors[2].startswith("endpoint[2].start: only has a meaning with count")
    assert errors[3] == "endpoint[3].count: 0 is out of range 1..10000"
    assert errors[4].startswith(
        'endpoint[4] (C 1..C 5).id: "C 1", "C 2", "C 3" and 2 more: an id is 1 to 48 characters'
    )
    assert len(errors) == 5


def test_ids_must_be_unique_ignoring_case_and_short(tmp_path):
    errors = errors_of(
        {
            "endpoint": [
                {"id": "HUB-{n:03}", "count": 5, "csms_url": "ws://h"},
                {"id": "hub-003", "csms_url": "ws://h"},
                {"id": "L" * 49, "csms_url": "ws://h"},
            ]
        },
        tmp_path,
    )
    assert errors[0] == (
        'endpoint[1] (hub-003).id: duplicate id "hub-003" (already in endpoint[0] '
        "(HUB-001..HUB-005)); ids must be unique (ignoring case)"
    )
    assert errors[1].startswith("endpoint[2] (" + "L" * 49 + ").id:")
    assert "1 to 48 characters" in errors[1]


def test_long_id_needs_an_explicit_serial_number(tmp_path):
    ident = "STATION-" + "9" * 20
    err = one_error({"endpoint": [{"id": ident, "csms_url": "ws://h"}]}, tmp_path)
    assert err.startswith(f"endpoint[0] ({ident}).serial_number: defaults to the id")
    cfg = parse(
        {"endpoint": [{"id": ident, "csms_url": "ws://h", "serial_number": "S1"}]}, tmp_path
    )
    assert cfg.endpoints[0].serial_number == "S1"


def test_env_passwords_are_resolved_at_load(tmp_path, monkeypatch):
    monkeypatch.setenv("BESS01_PASSWORD", "s3cret-s3cret-s3cret")
    monkeypatch.setenv("HUB_001_PW", "one")
    monkeypatch.setenv("HUB_002_PW", "two")
    cfg = parse(
        {
            "endpoint": [
                {**EP, "security_profile": 1, "password": "env:BESS01_PASSWORD"},
                {
                    "id": "HUB-{n:03}",
                    "count": 2,
                    "csms_url": "ws://h",
                    "security_profile": 1,
                    "password": "env:HUB_{n:03}_PW",
                },
            ]
        },
        tmp_path,
    )
    assert [e.password for e in cfg.endpoints] == ["s3cret-s3cret-s3cret", "one", "two"]
    assert "s3cret" not in repr(cfg)


def test_missing_env_password_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("NOT_SET_PW", raising=False)
    err = one_error(
        {"endpoint": [{**EP, "security_profile": 1, "password": "env:NOT_SET_PW"}]}, tmp_path
    )
    assert err.startswith(
        "endpoint[0] (BESS-01).password: environment variable NOT_SET_PW is not set"
    )


def test_relative_paths_resolve_against_the_config_folder(tmp_path):
    (tmp_path / "certs").mkdir()
    for name in ("ca.pem", "me.pem", "me.key"):
        (tmp_path / "certs" / name).write_text("x")
    (tmp_path / "maps").mkdir()
    (tmp_path / "maps" / "mine.toml").write_text("")
    cfg_file = tmp_path / "gateway.toml"
    cfg_file.write_text(
        '[gateway]\ndata_dir = "state"\n[pcs]\nprofile = "maps/mine.toml"\n'
        '[[endpoint]]\nid = "A"\ncsms_url = "wss://h/ocpp"\nsecurity_profile = 3\n'
        'ca_file = "certs/ca.pem"\ncert_file = "certs/me.pem"\nkey_file = "certs/me.key"\n'
    )
    cfg = load_config(cfg_file)
    assert cfg.source == cfg_file
    assert cfg.gateway.data_dir == tmp_path / "state"
    assert cfg.pcs.profile == str(tmp_path / "maps" / "mine.toml")
    assert cfg.pcs.profile_path == tmp_path / "maps" / "mine.toml"
    ep = cfg.endpoints[0]
    assert (ep.ca_file, ep.cert_file, ep.key_file) == (
        tmp_path / "certs" / "ca.pem",
        tmp_path / "certs" / "me.pem",
        tmp_path / "certs" / "me.key",
    )


def test_security_profile_requirements(tmp_path):
    errors = errors_of(
        {
            "endpoint": [
                {"id": "P1", "csms_url": "ws://h", "security_profile": 1},
                {"id": "P2", "csms_url": "ws://h", "security_profile": 2, "password": "pw"},
                {"id": "P3", "csms_url": "wss://h", "security_profile": 3},
            ]
        },
        tmp_path,
    )
    assert errors == [
        "endpoint[0] (P1).password: required for security_profile 1 (basic auth); "
        'set password = "env:NAME" and export NAME',
        "endpoint[1] (P2).csms_url: security_profile 2 needs TLS: use a wss:// URL",
        "endpoint[2] (P3).cert_file: required for security_profile 3 (TLS client certificate)",
        "endpoint[2] (P3).key_file: required for security_profile 3 (TLS client certificate)",
    ]


def test_profile_2_without_ca_file_is_valid_and_unused_keys_warn(tmp_path):
    cfg = parse(
        {
            "endpoint": [
                # one operator: two would warn about the unset maintenance_operator
                {"id": "P2", "csms_url": "wss://h", "security_profile": 2, "password": "pw",
                 "operator": "op"},
                {"id": "P0", "csms_url": "ws://h", "password": "env:WHATEVER_UNSET",
                 "operator": "op"},
            ]
        },
        tmp_path,
    )
    assert cfg.endpoints[0].uses_tls and cfg.endpoints[0].ca_file is None
    assert cfg.endpoints[1].password is None
    assert cfg.warnings == ("endpoint[1] (P0).password: is not used with security_profile 0",)


def test_wrong_table_shapes(tmp_path):
    errors = errors_of({"control": 3, "endpoint": {"id": "A"}}, tmp_path)
    assert errors == [
        "control: expected a table [control], got an integer",
        "endpoint: write [[endpoint]] (an array of tables), not [endpoint]",
    ]


def test_load_config_reports_file_problems_as_config_errors(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml")
    assert info.value.errors[0].startswith("no such file")
    assert str(tmp_path / "nope.toml") in str(info.value)
    bad = tmp_path / "bad.toml"
    bad.write_text("[control\nperiod_ms = 1")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert info.value.errors[0].startswith("not valid TOML")


def test_with_endpoints_builds_a_validated_config_in_code(tmp_path):
    cfg = Config.with_endpoints(
        [{"id": "DEMO-{n:02}", "count": 3, "csms_url": "ws://127.0.0.1:9000"}],
        gateway={"data_dir": tmp_path / "d", "metrics_listen": ""},
        pcs={"port": 15020},
    )
    assert [e.id for e in cfg.endpoints] == ["DEMO-01", "DEMO-02", "DEMO-03"]
    assert cfg.gateway.data_dir == tmp_path / "d" and cfg.gateway.metrics_address is None
    assert cfg.pcs.port == 15020
    with pytest.raises(ConfigError):
        Config.with_endpoints([{"id": "A", "csms_url": "ws://h"}], control={"period_ms": 1})


def test_direct_construction_fills_the_serial_number():
    ep = EndpointConfig(id="X", csms_url="ws://h")
    assert ep.serial_number == "X"


def test_example_file_is_valid():
    cfg = load_config(ROOT / "examples" / "gateway.toml", require_endpoints=True)
    assert len(cfg.endpoints) == 50
    assert cfg.version_counts() == {"1.6": 50, "2.0.1": 0, "2.1": 0}
    assert cfg.endpoints[-1].id == "HUB-050" and cfg.endpoints[-1].index == 49
    assert cfg.warnings == ()
    # One operator over both CSMSs: it maintains the gateway.
    assert list(cfg.operators()) == ["hub-operator"] and cfg.maintainer == "hub-operator"


def test_an_id_with_a_colon_is_refused_for_basic_auth_profiles(tmp_path):
    """RFC 7617: a Basic auth user-id cannot contain ':' (the CSMS would split the id there)."""
    errors = errors_of(
        {
            "endpoint": [
                {"id": "HUB:01", "csms_url": "ws://h", "security_profile": 1, "password": "pw"},
                {"id": "HUB:{n}", "count": 2, "csms_url": "wss://h", "security_profile": 2,
                 "password": "pw"},
            ]
        },
        tmp_path,
    )
    assert errors == [
        "endpoint[0] (HUB:01).id: 'HUB:01' contains ':', which Basic auth (RFC 7617) cannot "
        "carry in a user-id; security_profile 1 sends the id as the Basic auth user: use an id "
        "without ':' or security_profile 3",
        "endpoint[1] (HUB:1..HUB:2).id: 'HUB:1' contains ':', which Basic auth (RFC 7617) "
        "cannot carry in a user-id; security_profile 2 sends the id as the Basic auth user: use "
        "an id without ':' or security_profile 3",
    ]
    # Without Basic auth the id is only a URL path segment, where ':' is fine.
    for name in ("c.pem", "k.pem"):
        (tmp_path / name).write_text("unused: only its existence is checked here")
    cfg = parse({"endpoint": [{"id": "HUB:01", "csms_url": "ws://h"},
                              {"id": "HUB:02", "csms_url": "wss://h", "security_profile": 3,
                               "cert_file": "c.pem", "key_file": "k.pem"}]}, tmp_path)
    assert [e.id for e in cfg.endpoints] == ["HUB:01", "HUB:02"]


# -- operators (trust domains, design.md section 10) --------------------------------------------
def test_an_endpoints_operator_defaults_to_its_csms_scheme_host_and_port(tmp_path):
    cfg = parse({"endpoint": [
        {"id": "A", "csms_url": "wss://CSMS.example/ocpp"},
        {"id": "B", "csms_url": "wss://csms.example:443/other"},  # the same address
        {"id": "C", "csms_url": "ws://csms.example/ocpp"},  # another scheme and port
        {"id": "D", "csms_url": "ws://[::1]:9000/ocpp"},
        {"id": "E", "csms_url": "ws://10.0.0.5:9000/ocpp", "operator": "acme"},
    ]}, tmp_path)
    assert [ep.trust_domain for ep in cfg.endpoints] == [
        "wss://csms.example:443", "wss://csms.example:443", "ws://csms.example:80",
        "ws://[::1]:9000", "acme"]
    assert list(cfg.operators()) == ["wss://csms.example:443", "ws://csms.example:80",
                                     "ws://[::1]:9000", "acme"]


def test_the_maintenance_operator_defaults_to_the_only_operator(tmp_path):
    one = parse({"endpoint": [{"id": "A", "csms_url": "ws://h:9000/x"},
                              {"id": "B", "csms_url": "ws://h:9000/y"}]}, tmp_path)
    assert one.maintainer == "ws://h:9000" and one.warnings == ()
    named = parse({"endpoint": [{"id": "A", "csms_url": "ws://h:1", "operator": "acme"},
                                {"id": "B", "csms_url": "ws://g:2", "operator": "acme"}]},
                  tmp_path)
    assert named.maintainer == "acme"


def test_several_operators_and_no_maintenance_operator_is_a_warning(tmp_path):
    two = parse({"endpoint": [{"id": "A", "csms_url": "ws://h:1", "operator": "acme"},
                              {"id": "B", "csms_url": "ws://h:1", "operator": "beta"}]}, tmp_path)
    assert two.maintainer is None
    assert len(two.warnings) == 1
    assert two.warnings[0].startswith("gateway.maintenance_operator: unset with 2 operators")
    chosen = parse({"gateway": {"maintenance_operator": "beta"},
                    "endpoint": [{"id": "A", "csms_url": "ws://h:1", "operator": "acme"},
                                 {"id": "B", "csms_url": "ws://h:1", "operator": "beta"}]},
                   tmp_path)
    assert chosen.maintainer == "beta" and chosen.warnings == ()


def test_a_maintenance_operator_naming_no_operator_is_an_error(tmp_path):
    endpoints = [{"id": "A", "csms_url": "ws://h:1", "operator": "acme"},
                 {"id": "B", "csms_url": "ws://h:2"}]
    error = one_error({"gateway": {"maintenance_operator": "acme-ops"}, "endpoint": endpoints},
                      tmp_path)
    assert error == ('gateway.maintenance_operator: "acme-ops" is no endpoint\'s operator; did '
                     'you mean "acme"?')
    error = one_error({"gateway": {"maintenance_operator": "zzz"}, "endpoint": endpoints},
                      tmp_path)
    assert error == ('gateway.maintenance_operator: "zzz" is no endpoint\'s operator; the '
                     'operators are "acme", "ws://h:2"')
    # The default operator is a name like any other.
    assert parse({"gateway": {"maintenance_operator": "ws://h:2"}, "endpoint": endpoints},
                 tmp_path).maintainer == "ws://h:2"


def test_operator_names_are_checked(tmp_path):
    errors = errors_of({"gateway": {"maintenance_operator": True},
                        "endpoint": [{"id": "A", "csms_url": "ws://h", "operator": " acme"},
                                     {"id": "B", "csms_url": "ws://h", "operator": "x" * 101}]},
                       tmp_path)
    assert errors == [
        "gateway.maintenance_operator: expected a string, got true (boolean)",
        'endpoint[0] (A).operator: " acme" must be a non-empty name without surrounding spaces',
        f'endpoint[1] (B).operator: "{"x" * 101}" must be 1 to 100 printable characters',
    ]


def test_check_config_names_a_bad_maintenance_operator(tmp_path, capsys):
    from bess_gateway.cli import main

    path = tmp_path / "gateway.toml"
    path.write_text('[gateway]\nmaintenance_operator = "nobody"\n'
                    '[[endpoint]]\nid = "A"\ncsms_url = "ws://h:1/ocpp"\noperator = "acme"\n')
    assert main(["check-config", str(path)]) != 0
    assert 'gateway.maintenance_operator: "nobody" is no endpoint\'s operator' in \
        capsys.readouterr().err
