"""framing.py: round trips, the classification of every kind of bad frame, and fuzzing."""

from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bess_gateway.ocpp.errors import (
    CallErrorReceived,
    ErrorKind,
    PropertyConstraintViolationError,
)
from bess_gateway.ocpp.framing import (
    Call,
    CallError,
    CallResult,
    FrameError,
    call_error_for,
    decode,
    encode,
    new_unique_id,
)

VERSIONS = ["1.6", "2.0.1"]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    "msg",
    [
        Call("id-1", "Heartbeat", {}),
        Call("x" * 36, "BootNotification", {"chargePointVendor": "V", "n": [1, 2.5, None, True]}),
        CallResult("id-2", {"status": "Accepted", "currentTime": "2024-01-01T00:00:00Z"}),
        CallResult("", {}),
        CallError("id-3", "NotSupported", "nope", {"cause": "x"}),
    ],
)
def test_round_trip(msg, version):
    text = encode(msg)
    assert isinstance(text, str)
    assert decode(text, version) == msg
    assert decode(text.encode(), version) == msg  # binary frames are accepted too


def test_encode_is_compact_and_in_wire_order():
    assert encode(Call("a", "Heartbeat", {})) == '[2,"a","Heartbeat",{}]'
    assert encode(CallResult("a", {"x": 1})) == '[3,"a",{"x":1}]'
    assert encode(CallError("a", "GenericError", "d", {})) == '[4,"a","GenericError","d",{}]'


def test_encode_datetimes_as_utc_z_and_decimals_as_numbers():
    naive = datetime(2024, 5, 1, 12, 0, 0)
    aware = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    text = encode(CallResult("a", {"t": naive, "u": aware, "limit": Decimal("7.5")}))
    assert orjson.loads(text)[2] == {
        "t": "2024-05-01T12:00:00Z",
        "u": "2024-05-01T12:00:00Z",
        "limit": 7.5,
    }


def test_encode_rejects_unserializable_payload():
    with pytest.raises(TypeError):
        encode(CallResult("a", {"x": object()}))


# (frame, version, kind, unique id in the error, answer?)
BAD_FRAMES = [
    # unreadable -> "-1": FormationViolation in 1.6, RpcFrameworkError in 2.0.1
    ("not json", "1.6", ErrorKind.FORMAT_VIOLATION, "-1", True),
    ("not json", "2.0.1", ErrorKind.RPC_FRAMEWORK_ERROR, "-1", True),
    (b"\xff\xfe", "2.0.1", ErrorKind.RPC_FRAMEWORK_ERROR, "-1", True),
    ('{"a": 1}', "2.0.1", ErrorKind.RPC_FRAMEWORK_ERROR, "-1", True),
    ("[]", "1.6", ErrorKind.FORMAT_VIOLATION, "-1", True),
    ("[2]", "2.0.1", ErrorKind.RPC_FRAMEWORK_ERROR, "-1", True),
    ('[2, 17, "Heartbeat", {}]', "2.0.1", ErrorKind.RPC_FRAMEWORK_ERROR, "-1", True),
    ('[2, "' + "x" * 37 + '", "Heartbeat", {}]', "1.6", ErrorKind.FORMAT_VIOLATION, "-1", True),
    # a reply whose id is unreadable is never answered
    ("[3, null, {}]", "2.0.1", ErrorKind.RPC_FRAMEWORK_ERROR, "-1", False),
    # id readable, shape wrong -> Format(ion)Violation with the id
    ('[2, "a", "Heartbeat"]', "1.6", ErrorKind.FORMAT_VIOLATION, "a", True),
    ('[2, "a", "Heartbeat", {}, 1]', "2.0.1", ErrorKind.FORMAT_VIOLATION, "a", True),
    ('[2, "a", 5, {}]', "2.0.1", ErrorKind.FORMAT_VIOLATION, "a", True),
    ('[2, "a", "", {}]', "2.0.1", ErrorKind.FORMAT_VIOLATION, "a", True),
    ('[2, "a", "Heartbeat", []]', "1.6", ErrorKind.FORMAT_VIOLATION, "a", True),
    ('["2", "a", "Heartbeat", {}]', "2.0.1", ErrorKind.FORMAT_VIOLATION, "a", True),
    ('[true, "a", "Heartbeat", {}]', "1.6", ErrorKind.FORMAT_VIOLATION, "a", True),
    ('[3, "a", "x"]', "2.0.1", ErrorKind.FORMAT_VIOLATION, "a", False),
    ('[3, "a", {}, {}]', "1.6", ErrorKind.FORMAT_VIOLATION, "a", False),
    ('[4, "a", "GenericError", "d"]', "2.0.1", ErrorKind.FORMAT_VIOLATION, "a", False),
    ('[4, "a", "GenericError", "d", null]', "1.6", ErrorKind.FORMAT_VIOLATION, "a", False),
    ('[4, "a", 1, "d", {}]', "1.6", ErrorKind.FORMAT_VIOLATION, "a", False),
    # unknown message type number: answered in 2.0.1, ignored in 1.6 (4.1.3)
    ('[7, "a", "Heartbeat", {}]', "2.0.1", ErrorKind.MESSAGE_TYPE_NOT_SUPPORTED, "a", True),
    ('[5, "a", {}]', "2.0.1", ErrorKind.MESSAGE_TYPE_NOT_SUPPORTED, "a", True),
    ('[7, "a", "Heartbeat", {}]', "1.6", ErrorKind.FORMAT_VIOLATION, "a", False),
]


@pytest.mark.parametrize(("frame", "version", "kind", "uid", "answer"), BAD_FRAMES)
def test_bad_frames_are_classified(frame, version, kind, uid, answer):
    with pytest.raises(FrameError) as info:
        decode(frame, version)
    err = info.value
    assert (err.kind, err.unique_id, err.answer) == (kind, uid, answer)


@pytest.mark.parametrize(
    ("frame", "version", "code"),
    [
        ("nope", "1.6", "FormationViolation"),
        ("nope", "2.0.1", "RpcFrameworkError"),
        ('[2, "a", "Heartbeat"]', "2.0.1", "FormatViolation"),
        ('[9, "a"]', "2.0.1", "MessageTypeNotSupported"),
    ],
)
def test_frame_errors_become_callerrors_spelled_per_version(frame, version, code):
    with pytest.raises(FrameError) as info:
        decode(frame, version)
    err = call_error_for(info.value, info.value.unique_id, version)
    assert err.code == code
    assert orjson.loads(encode(err))[0] == 4


def test_call_error_for_maps_exceptions():
    err = call_error_for(PropertyConstraintViolationError("x" * 400, {"p": 1}), "u", "1.6")
    assert (err.unique_id, err.code, err.details) == ("u", "PropertyConstraintViolation", {"p": 1})
    assert len(err.description) == 255

    crash = call_error_for(RuntimeError("secret path /etc/x"), "u", "2.0.1")
    assert crash.code == "InternalError"
    assert "secret" not in crash.description
    assert crash.details == {}

    # the peer refusing one of our CALLs inside a handler is *our* internal failure
    relayed = call_error_for(CallErrorReceived("SecurityError", "no"), "u", "2.0.1")
    assert relayed.code == "InternalError"


def test_decode_rejects_unknown_version():
    with pytest.raises(ValueError):
        decode('[2, "a", "Heartbeat", {}]', "1.5")


def test_new_unique_id():
    ids = {new_unique_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(len(i) == 36 for i in ids)


# ---- fuzzing: decode returns a message or raises FrameError, never anything else

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)

VALID_FRAMES = [
    [2, "id-1", "Heartbeat", {}],
    [3, "id-1", {"status": "Accepted"}],
    [4, "id-1", "GenericError", "d", {}],
]


def _check(data: str | bytes, version: str) -> None:
    try:
        msg = decode(data, version)
    except FrameError as err:
        assert isinstance(err.unique_id, str)
        assert err.unique_id == "-1" or len(err.unique_id) <= 36
    else:
        assert isinstance(msg, Call | CallResult | CallError)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=200), version=st.sampled_from(VERSIONS))
def test_fuzz_random_bytes(data, version):
    _check(data, version)


@settings(max_examples=200, deadline=None)
@given(value=json_values, version=st.sampled_from(VERSIONS))
def test_fuzz_random_json(value, version):
    _check(orjson.dumps(value), version)


@settings(max_examples=300, deadline=None)
@given(
    base=st.sampled_from(VALID_FRAMES),
    index=st.integers(min_value=0, max_value=5),
    replacement=json_values,
    how=st.sampled_from(["replace", "insert", "delete", "truncate"]),
    version=st.sampled_from(VERSIONS),
)
def test_fuzz_mutated_valid_frames(base, index, replacement, how, version):
    frame = list(base)
    i = min(index, len(frame) - 1)
    if how == "replace":
        frame[i] = replacement
    elif how == "insert":
        frame.insert(i, replacement)
    elif how == "delete":
        del frame[i]
    else:
        frame = frame[:i]
    _check(orjson.dumps(frame), version)
    text = orjson.dumps(frame)
    _check(text[: index * 7], version)  # cut mid-JSON


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=100), version=st.sampled_from(VERSIONS))
def test_fuzz_random_text(text, version):
    _check(text, version)
    _check('[2,"a",' + text, version)
