"""RpcConnection against a real websockets server on 127.0.0.1 (port 0), in both directions.

Nothing here sleeps to let time pass: tests wait on events and frames with bounded timeouts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve

from bess_gateway.ocpp.errors import (
    CallErrorReceived,
    ConnectionLost,
    ErrorKind,
    OcppError,
    PropertyConstraintViolationError,
)
from bess_gateway.ocpp.framing import FrameError
from bess_gateway.ocpp.rpc import Reply, RpcConnection

WAIT = 5.0  # upper bound for anything that should happen "at once"

BOOT_16 = {"chargePointVendor": "Acme", "chargePointModel": "BESS"}
BOOT_16_RESULT = {"status": "Accepted", "currentTime": "2024-01-01T00:00:00Z", "interval": 300}
START_16 = {"connectorId": 1, "idTag": "TAG", "meterStart": 0, "timestamp": "2024-01-01T00:00:00Z"}
START_16_RESULT = {"transactionId": 7, "idTagInfo": {"status": "Accepted"}}


@asynccontextmanager
async def ws_pair() -> AsyncIterator[tuple[ClientConnection, ServerConnection]]:
    """A connected (client, server) pair of real websockets connections."""
    server_side: asyncio.Future[ServerConnection] = asyncio.get_running_loop().create_future()
    release = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        server_side.set_result(ws)
        await release.wait()  # the connection lives until the test is done with it

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}") as client:
            srv = await asyncio.wait_for(server_side, WAIT)
            try:
                yield client, srv
            finally:
                release.set()


@asynccontextmanager
async def running(*conns: RpcConnection) -> AsyncIterator[list[asyncio.Task[None]]]:
    tasks = [asyncio.create_task(c.run()) for c in conns]
    try:
        yield tasks
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def recv_json(ws: Any) -> Any:
    return orjson.loads(await asyncio.wait_for(ws.recv(), WAIT))


async def send_json(ws: Any, frame: Any) -> None:
    await ws.send(orjson.dumps(frame).decode())


# ---------------------------------------------------------------- two RpcConnections talking


async def test_calls_in_both_directions():
    async def on_boot(payload: dict) -> dict:
        assert payload == BOOT_16
        return BOOT_16_RESULT

    async def on_remote_start(payload: dict) -> dict:
        return {"status": "Accepted" if payload["idTag"] == "TAG" else "Rejected"}

    async with ws_pair() as (client, srv):
        cp = RpcConnection(client, "1.6", {"RemoteStartTransaction": on_remote_start}, name="cp")
        csms = RpcConnection(srv, "1.6", {"BootNotification": on_boot}, name="csms")
        async with running(cp, csms):
            assert await cp.call("BootNotification", BOOT_16) == BOOT_16_RESULT
            reply = await csms.call("RemoteStartTransaction", {"idTag": "TAG"})
            assert reply == {"status": "Accepted"}
        assert cp.stats.calls_out["BootNotification"] == 1
        assert cp.stats.results_in["BootNotification"] == 1
        assert csms.stats.results_out["BootNotification"] == 1
        assert cp.stats.as_dict()["calls_in"] == {"RemoteStartTransaction": 1}


async def test_after_task_calls_back_without_deadlock():
    order: list[str] = []
    started = asyncio.Event()
    cp: RpcConnection

    async def start_transaction() -> None:
        order.append("cp: StartTransaction sent")
        result = await cp.call("StartTransaction", START_16)
        order.append(f"cp: got transactionId {result['transactionId']}")
        started.set()

    async def on_remote_start(payload: dict) -> Reply:
        order.append("cp: RemoteStart handled")
        return Reply({"status": "Accepted"}, after=start_transaction)

    async def on_start(payload: dict) -> dict:
        order.append("csms: StartTransaction handled")
        return START_16_RESULT

    async with ws_pair() as (client, srv):
        cp = RpcConnection(client, "1.6", {"RemoteStartTransaction": on_remote_start})
        csms = RpcConnection(srv, "1.6", {"StartTransaction": on_start})
        async with running(cp, csms):
            assert await csms.call("RemoteStartTransaction", {"idTag": "TAG"}) == {
                "status": "Accepted"
            }
            order.append("csms: RemoteStart answered")
            await asyncio.wait_for(started.wait(), WAIT)
    # the after-task started only once the CALLRESULT was out
    assert order.index("cp: RemoteStart handled") < order.index("cp: StartTransaction sent")
    assert order[-1] == "cp: got transactionId 7"


async def test_handler_may_call_peer_directly_while_handling():
    async def on_boot(payload: dict) -> dict:
        # a CSMS asking something back before it answers: the reader must keep reading
        conf = await csms.call("GetConfiguration", {"key": ["HeartbeatInterval"]})
        assert conf["configurationKey"][0]["value"] == "300"
        return BOOT_16_RESULT

    async def on_get_config(payload: dict) -> dict:
        return {
            "configurationKey": [{"key": "HeartbeatInterval", "readonly": False, "value": "300"}]
        }

    async with ws_pair() as (client, srv):
        cp = RpcConnection(client, "1.6", {"GetConfiguration": on_get_config})
        csms = RpcConnection(srv, "1.6", {"BootNotification": on_boot})
        async with running(cp, csms):
            assert await cp.call("BootNotification", BOOT_16) == BOOT_16_RESULT


async def test_2_0_1_pair():
    async def on_request_start(payload: dict) -> dict:
        return {"status": "Accepted"}

    async with ws_pair() as (client, srv):
        cs = RpcConnection(client, "2.0.1", {"RequestStartTransaction": on_request_start})
        csms = RpcConnection(srv, "2.0.1", {})
        async with running(cs, csms):
            reply = await csms.call(
                "RequestStartTransaction",
                {"remoteStartId": 1, "idToken": {"idToken": "TAG", "type": "ISO14443"}},
            )
            assert reply == {"status": "Accepted"}
            with pytest.raises(CallErrorReceived) as info:
                await cs.call("Heartbeat", {})  # no handler on the CSMS side
            assert info.value.code == "NotSupported"


# ---------------------------------------------------------------- a raw peer on the other side


async def test_unknown_and_unsupported_actions():
    async with ws_pair() as (client, srv):
        cp = RpcConnection(srv, "1.6", {})
        async with running(cp):
            await send_json(client, [2, "a", "FlyToTheMoon", {}])
            assert await recv_json(client) == [
                4,
                "a",
                "NotImplemented",
                "unknown action 'FlyToTheMoon'",
                {},
            ]
            await send_json(client, [2, "b", "Reset", {"type": "Hard"}])
            frame = await recv_json(client)
            assert frame[:3] == [4, "b", "NotSupported"]


async def test_payload_validation_answers_with_spelled_codes():
    async def on_remote_start(payload: dict) -> dict:
        raise AssertionError("an invalid payload must not reach the handler")

    async with ws_pair() as (client, srv):
        cp = RpcConnection(srv, "1.6", {"RemoteStartTransaction": on_remote_start})
        async with running(cp):
            await send_json(client, [2, "a", "RemoteStartTransaction", {"connectorId": 1}])
            frame = await recv_json(client)
            assert frame[:3] == [4, "a", "OccurenceConstraintViolation"]
            assert frame[4] == {"path": "payload", "rule": "required"}
            await send_json(client, [2, "b", "RemoteStartTransaction", {"idTag": 1}])
            assert (await recv_json(client))[:3] == [4, "b", "TypeConstraintViolation"]


@pytest.mark.parametrize(
    ("version", "frame", "expected"),
    [
        ("1.6", "garbage", ["-1", "FormationViolation"]),
        ("1.6", '[2, "a", "Heartbeat"]', ["a", "FormationViolation"]),
        ("2.0.1", '[2, "a", "Heartbeat"]', ["a", "FormatViolation"]),
        ("2.0.1", "garbage", ["-1", "RpcFrameworkError"]),
        ("2.0.1", '[2, 5, "Heartbeat", {}]', ["-1", "RpcFrameworkError"]),
        ("2.0.1", '[6, "a", "Heartbeat", {}]', ["a", "MessageTypeNotSupported"]),
    ],
)
async def test_malformed_frames_are_answered(version, frame, expected):
    async with ws_pair() as (client, srv):
        conn = RpcConnection(srv, version, {})
        async with running(conn) as (task,):
            await client.send(frame)
            answer = await recv_json(client)
            assert answer[0] == 4 and answer[1:3] == expected
            assert not task.done()  # run() goes on
        assert conn.stats.malformed_in == 1


async def test_silent_cases_get_no_answer_and_reading_goes_on():
    async def on_reset(payload: dict) -> dict:
        return {"status": "Accepted"}

    async with ws_pair() as (client, srv):
        conn = RpcConnection(srv, "1.6", {"Reset": on_reset})
        async with running(conn):
            await send_json(client, [7, "x", "Reset", {}])  # 1.6: unknown type -> ignore
            await send_json(client, [3, "y", "not an object"])  # replies are never answered
            await send_json(client, [3, "z", {}])  # a reply nobody waits for: dropped
            await send_json(client, [2, "ok", "Reset", {"type": "Soft"}])
            # the first frame back is the answer to the valid CALL: nothing else was answered
            assert await recv_json(client) == [3, "ok", {"status": "Accepted"}]
        assert conn.stats.malformed_in == 2
        assert conn.stats.replies_dropped == 1


async def test_crashing_handler_gives_internal_error_and_connection_goes_on(caplog):
    calls = 0

    async def on_reset(payload: dict) -> dict:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom: /secret/path")
        if calls == 2:
            raise PropertyConstraintViolationError("type Medium?", {"field": "type"})
        if calls == 3:
            return ["not", "a", "dict"]  # type: ignore[return-value]
        return {"status": "Accepted"}

    async with ws_pair() as (client, srv):
        conn = RpcConnection(srv, "2.0.1", {"Reset": on_reset})
        async with running(conn):
            with caplog.at_level(logging.ERROR, logger="bess_gateway.ocpp.rpc"):
                await send_json(client, [2, "1", "Reset", {"type": "Immediate"}])
                first = await recv_json(client)
            assert first[:3] == [4, "1", "InternalError"]
            assert "secret" not in orjson.dumps(first).decode()
            assert "boom" in caplog.text  # the traceback is logged locally
            await send_json(client, [2, "2", "Reset", {"type": "Immediate"}])
            assert await recv_json(client) == [
                4,
                "2",
                "PropertyConstraintViolation",
                "type Medium?",
                {"field": "type"},
            ]
            await send_json(client, [2, "3", "Reset", {"type": "Immediate"}])
            assert (await recv_json(client))[:3] == [4, "3", "InternalError"]
            await send_json(client, [2, "4", "Reset", {"type": "Immediate"}])
            assert await recv_json(client) == [3, "4", {"status": "Accepted"}]
        assert conn.stats.errors_out == {"InternalError": 2, "PropertyConstraintViolation": 1}


async def test_calls_are_handled_one_at_a_time_in_order():
    gate = asyncio.Event()
    seen: list[str] = []

    async def on_reset(payload: dict) -> dict:
        seen.append(payload["type"])
        if payload["type"] == "Hard":
            await gate.wait()
        return {"status": "Accepted"}

    async with ws_pair() as (client, srv):
        conn = RpcConnection(srv, "1.6", {"Reset": on_reset})
        async with running(conn):
            await send_json(client, [2, "1", "Reset", {"type": "Hard"}])
            await send_json(client, [2, "2", "Reset", {"type": "Soft"}])
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(client.recv(), 0.1)
            assert seen == ["Hard"]  # the second waits for the first
            gate.set()
            assert (await recv_json(client))[1] == "1"
            assert (await recv_json(client))[1] == "2"


async def test_callerror_raises_call_error_received():
    async with ws_pair() as (client, srv):
        conn = RpcConnection(srv, "1.6", {})
        async with running(conn):
            task = asyncio.create_task(conn.call("Heartbeat", {}))
            frame = await recv_json(client)
            await send_json(client, [4, frame[1], "OccurenceConstraintViolation", "no", {"a": 1}])
            with pytest.raises(CallErrorReceived) as info:
                await task
            err = info.value
            assert (err.code, err.kind, err.details) == (
                "OccurenceConstraintViolation",
                ErrorKind.OCCURRENCE_CONSTRAINT_VIOLATION,
                {"a": 1},
            )
            assert err.action == "Heartbeat"
        assert conn.stats.errors_in == {"OccurenceConstraintViolation": 1}


async def test_callerror_codes_no_version_defines_count_as_unknown():
    # The code is the peer's text: keyed as it came, made-up codes would grow errors_in for ever.
    async with ws_pair() as (client, srv):
        conn = RpcConnection(srv, "2.0.1", {})
        async with running(conn):
            for code in ("NoSuchCode-1", "NoSuchCode-2", "GenericError", "NoSuchCode-3"):
                task = asyncio.create_task(conn.call("Heartbeat", {}))
                frame = await recv_json(client)
                await send_json(client, [4, frame[1], code, "", {}])
                with pytest.raises(CallErrorReceived) as info:
                    await task
                assert info.value.code == code  # the caller still sees what was sent
        assert conn.stats.errors_in == {"unknown": 3, "GenericError": 1}


async def test_invalid_response_payload_raises_ocpp_error():
    async with ws_pair() as (client, srv):
        conn = RpcConnection(srv, "1.6", {})
        async with running(conn):
            task = asyncio.create_task(conn.call("Heartbeat", {}))
            frame = await recv_json(client)
            await send_json(client, [3, frame[1], {"currentTime": 12}])
            with pytest.raises(OcppError) as info:
                await task
            assert info.value.kind is ErrorKind.TYPE_CONSTRAINT_VIOLATION


async def test_malformed_reply_to_our_call_fails_it_at_once():
    async with ws_pair() as (client, srv):
        conn = RpcConnection(srv, "2.0.1", {})
        async with running(conn):
            task = asyncio.create_task(conn.call("Heartbeat", {}, timeout=WAIT * 2))
            frame = await recv_json(client)
            await send_json(client, [3, frame[1], "not an object"])
            with pytest.raises(FrameError):
                await asyncio.wait_for(task, WAIT)


async def test_timeout_frees_the_slot_and_late_reply_is_dropped():
    async with ws_pair() as (client, srv):
        conn = RpcConnection(srv, "1.6", {}, call_timeout=0.2)
        async with running(conn):
            with pytest.raises(TimeoutError):
                await conn.call("Heartbeat", {})
            late = await recv_json(client)
            second = asyncio.create_task(conn.call("Heartbeat", {}, timeout=WAIT))
            frame = await recv_json(client)
            assert frame[1] != late[1]
            await send_json(client, [3, late[1], {"currentTime": "2024-01-01T00:00:00Z"}])
            await send_json(client, [3, frame[1], {"currentTime": "2024-01-02T00:00:00Z"}])
            assert await second == {"currentTime": "2024-01-02T00:00:00Z"}
        assert conn.stats.timeouts == 1
        assert conn.stats.replies_dropped == 1


async def test_concurrent_calls_are_serialized():
    async with ws_pair() as (client, srv):
        conn = RpcConnection(srv, "1.6", {})
        async with running(conn):
            first = asyncio.create_task(conn.call("Heartbeat", {}))
            second = asyncio.create_task(conn.call("Heartbeat", {}))
            f1 = await recv_json(client)
            with pytest.raises(TimeoutError):  # the second is not sent while the first is out
                await asyncio.wait_for(client.recv(), 0.1)
            await send_json(client, [3, f1[1], {"currentTime": "2024-01-01T00:00:01Z"}])
            f2 = await recv_json(client)
            await send_json(client, [3, f2[1], {"currentTime": "2024-01-01T00:00:02Z"}])
            assert (await first)["currentTime"].endswith("01Z")
            assert (await second)["currentTime"].endswith("02Z")


async def test_peer_call_while_ours_is_outstanding_is_handled():
    async def on_reset(payload: dict) -> dict:
        return {"status": "Accepted"}

    async with ws_pair() as (client, srv):
        conn = RpcConnection(srv, "1.6", {"Reset": on_reset})
        async with running(conn):
            ours = asyncio.create_task(conn.call("Heartbeat", {}))
            out = await recv_json(client)
            await send_json(client, [2, "theirs", "Reset", {"type": "Soft"}])
            assert await recv_json(client) == [3, "theirs", {"status": "Accepted"}]
            await send_json(client, [3, out[1], {"currentTime": "2024-01-01T00:00:00Z"}])
            assert await asyncio.wait_for(ours, WAIT) == {"currentTime": "2024-01-01T00:00:00Z"}


async def test_closed_socket_wakes_every_waiter():
    async with ws_pair() as (client, srv):
        conn = RpcConnection(srv, "1.6", {})
        async with running(conn) as (task,):
            outstanding = asyncio.create_task(conn.call("Heartbeat", {}))
            queued = asyncio.create_task(conn.call("Heartbeat", {}))
            await recv_json(client)  # the first is on the wire, the second waits for the slot
            await client.close()
            for waiter in (outstanding, queued):
                with pytest.raises(ConnectionLost):
                    await asyncio.wait_for(waiter, WAIT)
            await asyncio.wait_for(task, WAIT)  # run() returned normally
        assert conn.closed
        with pytest.raises(ConnectionLost):
            await conn.call("Heartbeat", {})


async def test_run_end_cancels_after_tasks_and_logs_their_failures(caplog):
    cancelled = asyncio.Event()
    failed = asyncio.Event()

    async def hang() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def fail() -> None:
        failed.set()
        raise RuntimeError("after-task broke")

    async def on_reset(payload: dict) -> Reply:
        return Reply({"status": "Accepted"}, after=hang if payload["type"] == "Hard" else fail)

    async with ws_pair() as (client, srv):
        conn = RpcConnection(srv, "1.6", {"Reset": on_reset})
        async with running(conn) as (task,):
            with caplog.at_level(logging.ERROR, logger="bess_gateway.ocpp.rpc"):
                await send_json(client, [2, "1", "Reset", {"type": "Soft"}])
                await recv_json(client)
                await asyncio.wait_for(failed.wait(), WAIT)
                await send_json(client, [2, "2", "Reset", {"type": "Hard"}])
                assert await recv_json(client) == [3, "2", {"status": "Accepted"}]
            assert "after-task of Reset failed" in caplog.text
            await client.close()
            await asyncio.wait_for(task, WAIT)
            assert cancelled.is_set()


async def test_validate_outgoing():
    async def on_reset(payload: dict) -> dict:
        return {"status": "Maybe"}  # not in the enum

    async with ws_pair() as (client, srv):
        conn = RpcConnection(srv, "1.6", {"Reset": on_reset}, validate_outgoing=True)
        async with running(conn):
            with pytest.raises(OcppError) as info:
                await conn.call("BootNotification", {"chargePointVendor": "Acme"})
            assert info.value.kind is ErrorKind.OCCURRENCE_CONSTRAINT_VIOLATION
            await send_json(client, [2, "1", "Reset", {"type": "Soft"}])
            # the first frame the peer sees is the answer: the invalid CALL was never sent
            assert (await recv_json(client))[:3] == [4, "1", "InternalError"]


async def test_hooks_and_unknown_outgoing_action():
    received: list[str] = []
    sent: list[str] = []

    async def on_reset(payload: dict) -> dict:
        return {"status": "Accepted"}

    def broken_hook(action: str) -> None:
        raise RuntimeError("metrics down")

    async with ws_pair() as (client, srv):
        conn = RpcConnection(
            srv,
            "1.6",
            {"Reset": on_reset},
            on_call_received=received.append,
            on_message_sent=sent.append,
        )
        async with running(conn):
            await send_json(client, [2, "1", "Reset", {"type": "Soft"}])
            await recv_json(client)
            call = asyncio.create_task(conn.call("Heartbeat", {}))
            frame = await recv_json(client)
            await send_json(client, [3, frame[1], {"currentTime": "2024-01-01T00:00:00Z"}])
            await call
            with pytest.raises(OcppError) as info:
                await conn.call("NoSuchAction", {})
            assert info.value.kind is ErrorKind.NOT_IMPLEMENTED
            conn.on_call_received = broken_hook  # a failing hook never breaks the RPC
            await send_json(client, [2, "2", "Reset", {"type": "Soft"}])
            assert await recv_json(client) == [3, "2", {"status": "Accepted"}]
    assert received == ["Reset"]
    assert sent == ["Reset", "Heartbeat", "Reset"]


def test_handlers_for_unknown_actions_are_refused():
    async def h(payload: dict) -> dict:
        return {}

    with pytest.raises(ValueError, match="StartTransaction"):
        RpcConnection(object(), "2.0.1", {"StartTransaction": h})  # a 1.6-only action


async def test_call_with_a_given_unique_id():
    async with ws_pair() as (client, srv):
        conn = RpcConnection(srv, "1.6", {})
        async with running(conn):
            task = asyncio.create_task(conn.call("Heartbeat", {}, unique_id="journal-17"))
            frame = await recv_json(client)
            assert frame == [2, "journal-17", "Heartbeat", {}]
            await send_json(client, [3, "journal-17", {"currentTime": "2024-01-01T00:00:00Z"}])
            assert await task == {"currentTime": "2024-01-01T00:00:00Z"}
            with pytest.raises(ValueError):
                await conn.call("Heartbeat", {}, unique_id="x" * 37)


async def test_calls_held_waits_for_the_call_in_flight_and_starts_none_until_released():
    """A deliberate close (link.EndpointBase._reconnect) holds our CALLs: the hold comes once
    the CALL in flight has its answer, and a CALL made meanwhile leaves only after it."""
    entered, release = asyncio.Event(), asyncio.Event()
    seen: list[str] = []

    async def on_boot(payload: dict) -> dict:
        seen.append(payload["chargePointModel"])
        entered.set()
        await release.wait()
        return BOOT_16_RESULT

    async with ws_pair() as (client, srv):
        cp = RpcConnection(client, "1.6", {}, name="cp")
        csms = RpcConnection(srv, "1.6", {"BootNotification": on_boot}, name="csms")
        async with running(cp, csms):
            first = asyncio.create_task(cp.call("BootNotification", BOOT_16))
            await asyncio.wait_for(entered.wait(), WAIT)
            # The answer does not come within the grace: the block runs without the hold.
            async with cp.calls_held(0.01) as held:
                assert not held
            release.set()
            async with cp.calls_held(WAIT) as held:
                assert held and first.done()  # held only once the CALL in flight was answered
                second = asyncio.create_task(
                    cp.call("BootNotification", {**BOOT_16, "chargePointModel": "second"}))
                done, _ = await asyncio.wait({second}, timeout=0.2)
                assert not done and seen == ["BESS"]  # nothing left while held
            assert await asyncio.wait_for(second, WAIT) == BOOT_16_RESULT
            assert seen == ["BESS", "second"]
