from importlib import resources

import pytest

from bess_gateway.sim.battery import Alarm, PcsState
from bess_gateway.sim.profiles import PROFILES, load_profile, resolve_profile
from bess_gateway.sim.regmap import (
    Direction,
    Register,
    RegisterMapError,
    RegType,
    load_register_map,
    parse_register_map,
)

# design.md section 4, transcribed independently of the TOML: (address, type, scale, unit, dir)
DESIGN_TABLE = {
    "run": (0, "u16", 1, "", "write"),
    "setpoint_w": (1, "i32", 1, "W", "write"),
    "watchdog": (3, "u16", 1, "", "write"),
    "fault_reset": (4, "u16", 1, "", "write"),
    "pcs_state": (100, "u16", 1, "", "read"),
    "measured_w": (101, "i32", 1, "W", "read"),
    "ac_voltage_v": (103, "u16", 0.1, "V", "read"),
    "ac_frequency_hz": (104, "u16", 0.01, "Hz", "read"),
    "dc_voltage_v": (105, "u16", 0.1, "V", "read"),
    "dc_current_a": (106, "i16", 0.1, "A", "read"),
    "soc_pct": (107, "u16", 0.1, "%", "read"),
    "soh_pct": (108, "u16", 0.1, "%", "read"),
    "cell_temp_max_c": (109, "i16", 0.1, "C", "read"),
    "cell_temp_min_c": (110, "i16", 0.1, "C", "read"),
    "cell_v_max_mv": (111, "u16", 1, "mV", "read"),
    "cell_v_min_mv": (112, "u16", 1, "mV", "read"),
    "bms_max_discharge_w": (113, "u32", 1, "W", "read"),
    "bms_max_charge_w": (115, "u32", 1, "W", "read"),
    "alarm_bits": (117, "u32", 1, "", "read"),
    "energy_discharged_wh": (119, "u64", 1, "Wh", "read"),
    "energy_charged_wh": (123, "u64", 1, "Wh", "read"),
    "ac_current_a": (127, "u16", 0.1, "A", "read"),
}


@pytest.fixture(scope="module")
def generic():
    return load_profile("generic")


def test_generic_profile_ships_as_package_data():
    # Loaded through importlib.resources, the way an installed wheel is read.
    res = resources.files("bess_gateway.sim").joinpath("registers", "generic.toml")
    assert res.is_file()
    assert "generic" in PROFILES


def test_generic_matches_design_table(generic):
    got = {r.name: (r.address, r.type.value, r.scale, r.unit, r.direction.value) for r in generic}
    assert got == DESIGN_TABLE


def test_read_block_is_contiguous_100_to_127(generic):
    assert generic.span(Direction.READ) == (100, 28)
    assert generic.span(Direction.WRITE) == (0, 5)


def test_alarm_bits_and_states_agree_with_model_enums(generic):
    assert dict(generic.alarm_bits) == {a.name.lower(): a.value.bit_length() - 1 for a in Alarm}
    assert dict(generic.pcs_states) == {s.name.lower(): s.value for s in PcsState}
    assert generic.alarm_names(0b100_1000_0001) == [
        "cell_over_voltage",
        "grid_fault",
        "emergency_stop",
    ]


@pytest.mark.parametrize(
    ("reg_type", "value", "words"),
    [
        ("u16", 0, [0]),
        ("u16", 65535, [0xFFFF]),
        ("i16", -1, [0xFFFF]),
        ("i16", -32768, [0x8000]),
        ("i32", 100_000, [0x0001, 0x86A0]),
        ("i32", -100_000, [0xFFFE, 0x7960]),
        ("u32", 600_000, [0x0009, 0x27C0]),
        ("u64", 0x0123_4567_89AB_CDEF, [0x0123, 0x4567, 0x89AB, 0xCDEF]),
    ],
)
def test_raw_round_trip_big_endian_high_word_first(reg_type, value, words):
    reg = Register("x", 0, RegType(reg_type))
    assert reg.encode_raw(value) == words
    assert reg.decode_raw(words) == value


@pytest.mark.parametrize(("reg_type", "raw"), [("u16", -1), ("u16", 65536), ("i32", 2**31)])
def test_out_of_range_raw_raises(reg_type, raw):
    with pytest.raises(ValueError, match="range"):
        Register("x", 0, RegType(reg_type)).encode_raw(raw)


def test_scaled_values(generic):
    temp = generic["cell_temp_max_c"]
    assert temp.encode(-12.34) == [(-123) & 0xFFFF]
    assert temp.decode([(-123) & 0xFFFF]) == -12.3
    freq = generic["ac_frequency_hz"]
    assert freq.encode(50.0) == [5000]
    assert freq.decode([4998]) == 49.98
    # Saturation pins a reading to the register's span instead of failing.
    assert generic["dc_current_a"].encode(5000.0, saturate=True) == [0x7FFF]
    with pytest.raises(ValueError):
        generic["dc_current_a"].encode(5000.0)


def test_decode_is_exact_for_counters(generic):
    energy = generic["energy_charged_wh"]
    big = 2**60 + 1
    assert energy.decode(energy.encode(big)) == big


def test_decode_block_and_encode_into(generic):
    image = [0] * 28
    generic.encode_into(image, "measured_w", -250_000, base=100)
    generic.encode_into(image, "soc_pct", 55.5, base=100)
    generic.encode_into(image, "energy_discharged_wh", 123_456_789, base=100)
    values = generic.decode_block(100, image)
    assert values["measured_w"] == -250_000
    assert values["soc_pct"] == 55.5
    assert values["energy_discharged_wh"] == 123_456_789
    # A block that cuts a register in half leaves that register out.
    assert "measured_w" not in generic.decode_block(102, image[2:])


def test_addresses_name_to_address(generic):
    assert generic.addresses()["ac_current_a"] == 127
    assert generic.addresses()["setpoint_w"] == 1


def test_parse_lists_every_problem_at_once():
    text = """
    [[register]]
    name = "a"
    address = 0
    type = "i32"
    direction = "read"

    [[register]]
    name = "b"
    address = 1
    type = "u16"
    direction = "read"

    [[register]]
    name = "a"
    address = 10
    type = "f32"
    direction = "sideways"
    """
    with pytest.raises(RegisterMapError) as err:
        parse_register_map(text, source="bad.toml")
    msg = str(err.value)
    assert msg.startswith("bad.toml: ")
    assert "overlap" in msg
    assert "type must be one of" in msg
    assert "direction must be" in msg


def test_parse_rejects_little_endian_maps():
    text = (
        '[map]\nword_order = "little"\n'
        '[[register]]\nname = "a"\naddress = 0\ntype = "u16"\ndirection = "read"\n'
    )
    with pytest.raises(RegisterMapError, match="word_order"):
        parse_register_map(text)


def test_resolve_profile_names_supported_profiles():
    assert resolve_profile("sunspec").name == "sunspec"
    with pytest.raises(RegisterMapError, match=r"unknown profile 'nope'.*generic"):
        resolve_profile("nope")


def test_resolve_profile_accepts_a_path(tmp_path, generic):
    src = resources.files("bess_gateway.sim").joinpath("registers", "generic.toml")
    path = tmp_path / "custom.toml"
    path.write_text(src.read_text(encoding="utf-8").replace('name = "generic"', 'name = "x"'))
    custom = resolve_profile(str(path))
    assert custom.name == "x"
    assert custom.registers == generic.registers
    with pytest.raises(RegisterMapError, match="cannot read"):
        load_register_map(tmp_path / "missing.toml")
