"""Fuzzing the OCPP-J layer with malformed and mutated frames (Hypothesis), against real parts.

1.6: a real gateway (two endpoints, the real simulator, a real SQLite journal) behind the demo
CSMS; each example sends one bad frame to endpoint A, then a valid probe CALL. Frames are handled
in order, so everything A answered to the bad frame has arrived when the probe's answer does: no
waiting for silence. Each example asserts the exact answer the OCPP-J rules give (or none), and
at the end the connection was never lost and endpoint B was never disturbed.

2.0.1: RpcConnection("2.0.1") over a real WebSocket pair with the same strategies, spelled the
2.0.1 way (FormatViolation, OccurrenceConstraintViolation, MessageTypeNotSupported,
RpcFrameworkError), and the 2.0.1 endpoint of a mixed gateway for the frame-level cases.

The rules (ocppj.framing, ocppj.schemas): unreadable message id -> FormationViolation (1.6) /
RpcFrameworkError (2.0.1) under id "-1"; an unknown message type number -> ignored (1.6) /
MessageTypeNotSupported (2.0.1); a broken CALL whose id was read -> Formation/FormatViolation
under its id; a CALLRESULT/CALLERROR is never answered; unknown action -> NotImplemented; an action
this side has no handler for -> NotSupported; wrong JSON type -> TypeConstraintViolation; missing
required field -> Occu(r)renceConstraintViolation; unknown field -> Formation/FormatViolation;
value outside an enum or over a maxLength -> PropertyConstraintViolation.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from waiting import until
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve

from bess_gateway.demo.csms import CsmsServer
from bess_gateway.endpoint.link import MAX_FRAME
from bess_gateway.gateway import Gateway
from bess_gateway.ocpp.errors import V16, V201
from bess_gateway.ocpp.rpc import RpcConnection
from bess_gateway.ocpp.schemas import validator

FUZZ = settings(max_examples=300, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.data_too_large])

# -- what a frame should get back -----------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One frame and the answer the rules give: None = no answer at all."""

    frame: str | bytes
    code: str | None = None  # CALLERROR code (spelled for the version); "result" = CALLRESULT
    uid: str | None = None  # id the answer must carry
    binary: bool = False

    def __repr__(self) -> str:  # Hypothesis prints failing examples: keep huge frames short
        text = self.frame if len(self.frame) < 300 else self.frame[:300]
        return f"Case({text!r}..., code={self.code!r}, uid={self.uid!r}, binary={self.binary})"


def spelled(version: str, kind: str) -> str:
    """The wire code of a kind in `version`: the two 1.6 typos, and no frame-level codes in 1.6."""
    if version == V16:
        return {"FormatViolation": "FormationViolation",
                "OccurrenceConstraintViolation": "OccurenceConstraintViolation",
                "RpcFrameworkError": "FormationViolation",
                "MessageTypeNotSupported": "FormationViolation"}.get(kind, kind)
    return kind


# -- the messages we mutate -----------------------------------------------------------------------

FieldKind = Literal["string", "integer", "strings"]


@dataclass(frozen=True)
class Field:
    kind: FieldKind
    required: bool = False
    enum: tuple[str, ...] = ()
    max_length: int | None = None


@dataclass(frozen=True)
class Base:
    """A CALL whose valid form is harmless (answered Rejected, Unknown, ...)."""

    action: str
    fields: dict[str, Field] = field(default_factory=dict)


TRIGGER_16 = ("BootNotification", "DiagnosticsStatusNotification", "FirmwareStatusNotification",
              "Heartbeat", "MeterValues", "StatusNotification")
BASES_16 = (
    Base("DataTransfer", {"vendorId": Field("string", True, max_length=255),
                          "messageId": Field("string", max_length=50),
                          "data": Field("string")}),
    Base("RemoteStopTransaction", {"transactionId": Field("integer", True)}),
    Base("CancelReservation", {"reservationId": Field("integer", True)}),
    Base("TriggerMessage", {"requestedMessage": Field("string", True, TRIGGER_16),
                            "connectorId": Field("integer")}),
    Base("GetCompositeSchedule", {"connectorId": Field("integer", True),
                                  "duration": Field("integer", True),
                                  "chargingRateUnit": Field("string", enum=("A", "W"))}),
    Base("GetConfiguration", {"key": Field("strings")}),
    Base("ClearCache"),
    Base("GetLocalListVersion"),
)
# Actions a charge point sends, never receives: known to the schema set, handled by nobody here.
CP_ACTIONS_16 = ("Authorize", "BootNotification", "Heartbeat", "MeterValues", "StartTransaction",
                 "StatusNotification", "StopTransaction", "DiagnosticsStatusNotification",
                 "FirmwareStatusNotification")

BASES_201 = (
    Base("RequestStopTransaction", {"transactionId": Field("string", True, max_length=36)}),
    Base("CancelReservation", {"reservationId": Field("integer", True)}),
    Base("GetTransactionStatus", {"transactionId": Field("string", max_length=36)}),
    Base("ClearCache"),
)
CP_ACTIONS_201 = ("Authorize", "BootNotification", "Heartbeat", "MeterValues",
                  "StatusNotification", "TransactionEvent", "NotifyEvent")

# -- strategies -----------------------------------------------------------------------------------

INT32 = st.integers(-(2**31), 2**31 - 1)
JSON_LEAF = st.none() | st.booleans() | INT32 | st.floats(allow_nan=False, allow_infinity=False) \
    | st.text(max_size=20)
JSON = st.recursive(JSON_LEAF, lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)
UIDS = st.text(max_size=36)
uid_counter = itertools.count()


def fresh(prefix: str) -> str:
    return f"{prefix}-{next(uid_counter)}"


def dump(frame: Any) -> str:
    return orjson.dumps(frame).decode()


def valid_value(f: Field) -> st.SearchStrategy[Any]:
    if f.kind == "integer":
        return INT32
    if f.kind == "strings":
        return st.lists(st.text(max_size=50), max_size=5)
    if f.enum:
        return st.sampled_from(f.enum)
    if f.max_length is None:  # huge strings too, well below the frame limit
        return st.text(max_size=30) | st.integers(1, 100_000).map(lambda n: "x" * n)
    return st.text(max_size=min(f.max_length, 40))


def wrong_type(f: Field) -> st.SearchStrategy[Any]:
    objects = st.dictionaries(st.text(max_size=5), JSON_LEAF, max_size=2)
    floats = st.floats(allow_nan=False, allow_infinity=False)
    if f.kind == "integer":
        return st.text(max_size=10) | floats | st.booleans() | st.none() \
            | st.lists(INT32, max_size=2) | objects
    if f.kind == "strings":
        return st.text(max_size=10) | INT32 | st.booleans() | st.none() | objects
    return INT32 | floats | st.booleans() | st.none() | st.lists(st.text(max_size=3), max_size=2) \
        | objects


@st.composite
def mutated_call(draw: st.DrawFn, version: str, bases: tuple[Base, ...]) -> Case:
    """A valid CALL of a base message, then at most one mutation whose answer the rules fix."""
    base = draw(st.sampled_from(bases))
    uid = draw(UIDS)
    payload: dict[str, Any] = {}
    for name, f in base.fields.items():
        if f.required or draw(st.booleans()):
            payload[name] = draw(valid_value(f))
    kinds = ["valid", "extra"]
    present = [n for n in payload]
    if present:
        kinds.append("wrong_type")
    if any(base.fields[n].required for n in present):
        kinds.append("missing")
    if any(base.fields[n].enum or base.fields[n].max_length for n in present):
        kinds.append("out_of_range")
    kind = draw(st.sampled_from(kinds))
    code: str = "result"
    if kind == "extra":
        name = draw(st.text(min_size=1, max_size=12).filter(lambda n: n not in base.fields))
        payload[name] = draw(JSON)
        code = "FormatViolation"
    elif kind == "wrong_type":
        name = draw(st.sampled_from(present))
        payload[name] = draw(wrong_type(base.fields[name]))
        code = "TypeConstraintViolation"
    elif kind == "missing":
        name = draw(st.sampled_from([n for n in present if base.fields[n].required]))
        del payload[name]
        code = "OccurrenceConstraintViolation"
    elif kind == "out_of_range":
        name = draw(st.sampled_from(
            [n for n in present if base.fields[n].enum or base.fields[n].max_length]))
        f = base.fields[name]
        if f.enum:
            payload[name] = draw(st.text(max_size=30).filter(lambda v: v not in f.enum))
        else:
            assert f.max_length is not None
            n = draw(st.integers(f.max_length + 1, 100_000))
            payload[name] = draw(st.sampled_from("aZ9é-")) * n
        code = "PropertyConstraintViolation"
    frame = dump([2, uid, base.action, payload])
    return Case(frame, code if code == "result" else spelled(version, code), uid)


@st.composite
def action_errors(draw: st.DrawFn, version: str) -> Case:
    uid = draw(UIDS)
    known = validator(version).actions
    if draw(st.booleans()):
        action = draw(st.text(min_size=1, max_size=40).filter(lambda a: a not in known))
        return Case(dump([2, uid, action, draw(st.dictionaries(st.text(max_size=5), JSON_LEAF,
                                                                  max_size=2))]),
                    "NotImplemented", uid)
    cp_actions = CP_ACTIONS_16 if version == V16 else CP_ACTIONS_201
    action = draw(st.sampled_from(cp_actions))
    return Case(dump([2, uid, action, draw(st.dictionaries(st.text(max_size=5), JSON_LEAF,
                                                          max_size=3))]), "NotSupported", uid)


def _not_an_array(text: str) -> bool:
    return not text.lstrip(" \t\r\n").startswith("[")


@st.composite
def garbage(draw: st.DrawFn, version: str) -> Case:
    """Not JSON, or JSON that is not an array: the id cannot be read."""
    code = spelled(version, "RpcFrameworkError")
    if draw(st.booleans()):
        data = draw(st.binary(max_size=60).filter(lambda b: _not_an_array(
            b.decode("latin-1"))))
        return Case(data, code, "-1", binary=True)
    text = draw(st.text(max_size=60).filter(_not_an_array)
                | JSON.filter(lambda v: not isinstance(v, list)).map(dump)
                | st.just("[]"))
    return Case(text, code, "-1")


BAD_IDS = st.none() | INT32 | st.booleans() | st.lists(st.text(max_size=3), max_size=2) \
    | st.text(min_size=37, max_size=60)


@st.composite
def unreadable_id(draw: st.DrawFn, version: str) -> Case:
    """An array whose message id is missing, not a string or too long."""
    rest = draw(st.lists(JSON, max_size=3))
    answered = draw(st.booleans())
    if answered:  # it may have been a CALL: CALL itself, or a type that is no integer at all
        mtype = draw(st.sampled_from([2, "2", None, 2.5, True, [2]]))
    elif version == V16:  # a reply (never answered) or, in 1.6, an unknown type (ignored)
        mtype = draw(st.sampled_from([3, 4]) | st.integers(-100, 100).filter(
            lambda t: t not in (2, 3, 4)))
    else:
        mtype = draw(st.sampled_from([3, 4]))
    frame = [mtype] if draw(st.booleans()) and not rest else [mtype, draw(BAD_IDS), *rest]
    if answered:
        return Case(dump(frame), spelled(version, "RpcFrameworkError"), "-1")
    return Case(dump(frame))


@st.composite
def broken_frames(draw: st.DrawFn, version: str) -> Case:
    """Frames whose id was read but whose structure is wrong."""
    uid = draw(UIDS)
    fmt = spelled(version, "FormatViolation")
    kind = draw(st.sampled_from(["type_not_int", "unknown_type", "call_shape", "reply"]))
    if kind == "type_not_int":
        mtype = draw(st.sampled_from(["2", 2.0, None, True, [2], {"t": 2}]))
        return Case(dump([mtype, uid, "Heartbeat", {}]), fmt, uid)
    if kind == "unknown_type":
        mtype = draw(st.integers(-1000, 1000).filter(lambda t: t not in (2, 3, 4)))
        frame = dump([mtype, uid, *draw(st.lists(JSON, max_size=3))])
        if version == V16:
            return Case(frame)  # OCPP-J 1.6 4.1.3: ignored
        return Case(frame, "MessageTypeNotSupported", uid)
    if kind == "call_shape":
        shape = draw(st.sampled_from(["count", "action", "payload"]))
        if shape == "count":
            frame = [2, uid, *draw(st.lists(JSON, max_size=4).filter(lambda r: len(r) != 2))]
        elif shape == "action":
            action = draw(JSON.filter(lambda a: not isinstance(a, str)) | st.just(""))
            frame = [2, uid, action, {}]
        else:
            frame = [2, uid, "Heartbeat", draw(JSON.filter(lambda p: not isinstance(p, dict)))]
        return Case(dump(frame), fmt, uid)
    # A CALLRESULT or CALLERROR nobody waits for, well-formed or not: never answered.
    mtype = draw(st.sampled_from([3, 4]))
    return Case(dump([mtype, uid, *draw(st.lists(JSON, max_size=4))]))


def cases(version: str, bases: tuple[Base, ...]) -> st.SearchStrategy[Case]:
    return st.one_of(mutated_call(version, bases), action_errors(version), garbage(version),
                     unreadable_id(version), broken_frames(version))


# -- 1.6: a real gateway behind the demo CSMS -----------------------------------------------------


@dataclass
class Rig:
    gw: Gateway
    csms: CsmsServer
    a: str
    b: str
    examples: int = 0


@pytest.fixture
async def rig(gateway_factory, csms: CsmsServer) -> AsyncIterator[Rig]:
    gw = await gateway_factory(2)
    a, b = list(gw.endpoints)
    for sid in (a, b):
        await csms.wait_for(sid, "BootNotification", timeout=20)
        await until(lambda s=sid: gw.endpoints[s].booted.is_set(), 20)
    yield Rig(gw, csms, a, b)


async def exchange(csms: CsmsServer, sid: str, case: Case) -> dict[str, list[Any]]:
    """Send the case's frame, then a probe CALL; return every reply that came before the probe's.

    The probe's answer comes after anything the bad frame caused: the endpoint reads frames in
    order, answers broken ones from the reader at once and handles CALLs one at a time in order.
    """
    cp = csms.stations[sid]
    cp.raw_replies.clear()
    ws = cp._connection
    await ws.send(case.frame)
    probe = fresh("probe")
    answer = await csms.send_raw(sid, dump([2, probe, "GetLocalListVersion", {}]), probe)
    assert answer[0] == 3 and "listVersion" in answer[2]
    return dict(cp.raw_replies)


def check(case: Case, replies: dict[str, list[Any]]) -> None:
    if case.code is None:
        assert replies == {}, "this frame must not be answered"
        return
    assert list(replies) == [case.uid], replies
    reply = replies[case.uid]
    if case.code == "result":
        assert reply[0] == 3 and isinstance(reply[2], dict), reply
        return
    assert reply[0] == 4 and len(reply) == 5, reply
    assert reply[2] == case.code, reply
    assert isinstance(reply[3], str) and len(reply[3]) <= 255 and isinstance(reply[4], dict)


@FUZZ
@given(case=cases(V16, BASES_16))
async def test_1_6_endpoint_answers_every_bad_frame_by_the_rules(rig: Rig, case: Case) -> None:
    check(case, await exchange(rig.csms, rig.a, case))
    assert rig.gw.endpoints[rig.a].connects == 1  # the connection survived every frame so far
    rig.examples += 1
    if rig.examples % 40 == 0:  # the other endpoint is not disturbed, now and then
        await b_still_works(rig)


async def b_still_works(rig: Rig) -> None:
    r = await rig.csms.call(rig.b, "DataTransfer", {"vendorId": "acme"})
    assert r["status"] == "UnknownVendorId"
    assert rig.gw.endpoints[rig.b].connects == 1


async def test_invalid_utf8_text_frame_closes_1007_and_the_endpoint_reconnects(
        rig: Rig) -> None:
    await closes_and_reconnects(rig, b"[2,\"x\",\"Heartbeat\",{\"a\":\"\xff\xfe\"}]", 1007)


async def test_frame_over_the_limit_closes_1009_and_the_endpoint_reconnects(rig: Rig) -> None:
    big = dump([2, "big", "DataTransfer", {"vendorId": "acme", "data": "x" * MAX_FRAME}])
    await closes_and_reconnects(rig, big.encode(), 1009)


async def closes_and_reconnects(rig: Rig, frame: bytes, code: int) -> None:
    ep = rig.gw.endpoints[rig.a]
    settings = rig.gw.stations[rig.a].settings
    settings.set("retry_backoff_wait_minimum_s", "1")
    settings.set("retry_backoff_random_range_s", "0")
    ws = rig.csms.stations[rig.a]._connection
    boots = len(rig.csms.of(rig.a, "BootNotification"))
    await ws.send(frame, text=True)
    await ws.wait_closed()
    assert ws.close_code == code
    await until(lambda: len(rig.csms.of(rig.a, "BootNotification")) > boots, 15)
    await until(lambda: ep.booted.is_set() and rig.a in rig.csms.stations)
    assert ep.connects == 2
    # Back in service, and B never noticed.
    r = await rig.csms.call(rig.a, "DataTransfer", {"vendorId": "acme"})
    assert r["status"] == "UnknownVendorId"
    await b_still_works(rig)


# -- 2.0.1: RpcConnection over a real WebSocket pair ----------------------------------------------


@asynccontextmanager
async def rpc_201() -> AsyncIterator[tuple[ClientConnection, RpcConnection]]:
    """A 2.0.1 RpcConnection serving the server side of a real pair; yields the client side."""
    async def stop(p: dict[str, Any]) -> dict[str, Any]:
        return {"status": "Rejected"}

    async def status(p: dict[str, Any]) -> dict[str, Any]:
        return {"messagesInQueue": False}

    async def clear(p: dict[str, Any]) -> dict[str, Any]:
        return {"status": "Accepted"}

    handlers = {"RequestStopTransaction": stop, "CancelReservation": stop,
                "GetTransactionStatus": status, "ClearCache": clear}
    ready: asyncio.Future[RpcConnection] = asyncio.get_running_loop().create_future()

    async def handler(ws: ServerConnection) -> None:
        conn = RpcConnection(ws, V201, handlers, validate_outgoing=True, name="fuzz201")
        ready.set_result(conn)
        await conn.run()

    async with serve(handler, "127.0.0.1", 0, max_size=MAX_FRAME) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}", max_size=None) as client:
            async with asyncio.timeout(5):
                conn = await ready
            yield client, conn


async def exchange_raw(client: ClientConnection, case: Case) -> dict[str, list[Any]]:
    await client.send(case.frame)
    probe = fresh("probe")
    await client.send(dump([2, probe, "ClearCache", {}]))
    replies: dict[str, list[Any]] = {}
    async with asyncio.timeout(5):
        while True:
            frame = orjson.loads(await client.recv())
            if frame[1] == probe:
                assert frame == [3, probe, {"status": "Accepted"}]
                return replies
            replies[frame[1]] = frame


@pytest.fixture
async def pair_201() -> AsyncIterator[tuple[ClientConnection, RpcConnection]]:
    async with rpc_201() as pair:
        yield pair


@FUZZ
@given(case=cases(V201, BASES_201))
async def test_2_0_1_rpc_answers_every_bad_frame_by_the_rules(
        pair_201: tuple[ClientConnection, RpcConnection], case: Case) -> None:
    client, conn = pair_201
    check(case, await exchange_raw(client, case))
    assert not conn.closed


# -- 2.0.1: the endpoint of a mixed gateway -------------------------------------------------------


async def test_2_0_1_endpoint_frame_errors(gateway_factory, csms: CsmsServer) -> None:
    gw = await gateway_factory(2, ocpp="mixed")  # DEMO-01 on 1.6, DEMO-02 on 2.0.1
    v16, v201 = list(gw.endpoints)
    for sid in (v16, v201):
        await csms.wait_for(sid, "BootNotification", timeout=20)
        await until(lambda s=sid: gw.endpoints[s].booted.is_set(), 20)
    fixed = [
        Case("not json", "RpcFrameworkError", "-1"),
        Case(b"\x00\xff binary", "RpcFrameworkError", "-1", binary=True),
        Case('[2, 17, "Heartbeat", {}]', "RpcFrameworkError", "-1"),
        Case('[5, "m1", "Heartbeat", {}]', "MessageTypeNotSupported", "m1"),
        Case('[2, "m2", "Heartbeat"]', "FormatViolation", "m2"),
        Case('[2, "m3", "MakeCoffee", {}]', "NotImplemented", "m3"),
        Case('[2, "m4", "BootNotification", {}]', "NotSupported", "m4"),
        Case('[2, "m5", "GetTransactionStatus", {"transactionId": 5}]',
             "TypeConstraintViolation", "m5"),
        Case('[2, "m6", "GetTransactionStatus", {"transactionId": "t", "x": 1}]',
             "FormatViolation", "m6"),
        Case('[2, "m7", "GetTransactionStatus", {"transactionId": "' + "t" * 37 + '"}]',
             "PropertyConstraintViolation", "m7"),
        Case('[2, "m8", "SendLocalList", {"versionNumber": 1}]',
             "OccurrenceConstraintViolation", "m8"),
        Case('[3, "nobody-asked", {}]'),
    ]
    for case in fixed:
        cp = csms.stations[v201]
        cp.raw_replies.clear()
        await cp._connection.send(case.frame)
        probe = fresh("probe")
        answer = await csms.send_raw(v201, dump([2, probe, "ClearCache", {}]), probe)
        assert answer[0] == 3, answer
        check(case, dict(cp.raw_replies))
    assert gw.endpoints[v201].connects == 1
    assert gw.endpoints[v16].connects == 1
    r = await csms.call(v16, "DataTransfer", {"vendorId": "acme"})
    assert r["status"] == "UnknownVendorId"
