"""OCPP-J RPC over one WebSocket: incoming CALLs to handlers, outgoing CALLs awaiting replies.

A thin asyncio shell around the pure `framing` and `schemas` modules. One `RpcConnection` per
WebSocket; version-agnostic (1.6 and 2.0.1 differ only in schema set and error spelling).

Concurrency model (why it cannot deadlock like the `ocpp` library's ChargePoint):

- `run()` is the only reader. It decodes every frame and routes it at once: replies (CALLRESULT /
  CALLERROR) resolve the outstanding `call()` directly in the reader; CALLs go to a queue.
- One worker task takes CALLs from the queue and handles them one at a time, in arrival order
  (a peer keeps at most one CALL outstanding anyway, OCPP-J 1.6 4.1.1 / 2.0.1 4.1.1), and sends
  the CALLRESULT or CALLERROR.
- So a handler, or the `after` callable of its `Reply`, may `await conn.call(...)`: the reader
  keeps reading while the worker waits. Prefer `Reply.after` for CALLs that the peer expects to
  follow our answer (StartTransaction after RemoteStartTransaction): it starts only after the
  CALLRESULT is on the wire.
- Outgoing CALLs are serialized by a lock: one outstanding CALL of ours at a time.
- `before_send`, when given, is awaited before every frame goes out, in send order: the gateway
  makes it wait for the journal's pending commit, so nothing leaves before what was written
  ahead of it is on disk (a CALLRESULT that promises persistence, a queued message).

Every task the connection starts (the worker, `after` tasks) is owned by it, has its exceptions
logged, and is cancelled when `run()` ends. Nothing a peer sends makes `run()` raise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from websockets.exceptions import ConnectionClosed

from .errors import (
    ActionNotImplementedError,
    ActionNotSupportedError,
    CallErrorReceived,
    ConnectionLost,
    GenericError,
    InternalError,
    InvalidAnswer,
    OcppError,
    check_version,
    is_known_code,
)
from .framing import (
    CALLERROR,
    CALLRESULT,
    MAX_UNIQUE_ID,
    Call,
    CallError,
    CallResult,
    FrameError,
    call_error_for,
    decode,
    encode,
    new_unique_id,
)
from .schemas import Validator, validator

log = logging.getLogger(__name__)

# What an incoming CALL of an action not in the version's schema set is counted under (stats,
# metric labels), and a received CALLERROR with a code no version defines: the text is the
# peer's, and keying counters on it would let a peer grow every table (and every scrape) without
# bound.
UNKNOWN_ACTION: Final = "unknown"
UNKNOWN_CODE: Final = "unknown"

Payload = dict[str, Any]
After = Callable[[], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Reply:
    """A handler's answer plus an optional coroutine function started after it is sent, and
    what undoes the answer's promise when it could not be sent (`after` then never runs)."""

    payload: Payload
    after: After | None = None
    unsent: Callable[[], None] | None = None


Handler = Callable[[Payload], Awaitable[Payload | Reply]]
Hook = Callable[[str], None]


class WebSocketLike(Protocol):
    """What RpcConnection needs from a socket (websockets' asyncio connections fit)."""

    async def recv(self) -> str | bytes: ...

    async def send(self, message: str) -> None: ...


@dataclass(slots=True)
class RpcStats:
    """Message counters for metrics. Per action unless noted."""

    calls_in: Counter[str] = field(default_factory=Counter)  # CALLs received
    calls_out: Counter[str] = field(default_factory=Counter)  # CALLs sent
    results_in: Counter[str] = field(default_factory=Counter)  # CALLRESULTs received
    results_out: Counter[str] = field(default_factory=Counter)  # CALLRESULTs sent
    errors_in: Counter[str] = field(default_factory=Counter)  # CALLERRORs received, per code
    errors_out: Counter[str] = field(default_factory=Counter)  # CALLERRORs sent, per code
    answers_invalid: Counter[str] = field(default_factory=Counter)  # CALLRESULTs off schema
    malformed_in: int = 0  # frames that failed to decode
    replies_dropped: int = 0  # replies with an unknown or stale message id
    timeouts: int = 0  # our CALLs that got no reply in time

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls_in": dict(self.calls_in),
            "calls_out": dict(self.calls_out),
            "results_in": dict(self.results_in),
            "results_out": dict(self.results_out),
            "errors_in": dict(self.errors_in),
            "errors_out": dict(self.errors_out),
            "answers_invalid": dict(self.answers_invalid),
            "malformed_in": self.malformed_in,
            "replies_dropped": self.replies_dropped,
            "timeouts": self.timeouts,
        }


@dataclass(slots=True)
class _Pending:
    unique_id: str
    action: str
    future: asyncio.Future[Payload]


def _consume(fut: asyncio.Future[Any]) -> None:
    # A pending future may be failed (connection lost) just as its waiter is cancelled; mark the
    # exception retrieved so asyncio does not log "exception was never retrieved" for it.
    if not fut.cancelled():
        fut.exception()


class RpcConnection:
    """OCPP-J RPC endpoint over one WebSocket.

    `handlers` maps an action to `async def handler(payload) -> dict | Reply`. Actions must exist
    in the version's schema set (ValueError otherwise: catches typos at start-up).
    """

    # A well-behaved peer has one CALL outstanding; beyond this many queued we answer GenericError
    # at once instead of letting a misbehaving peer grow the queue without bound.
    MAX_QUEUED_CALLS: Final = 32

    def __init__(
        self,
        ws: WebSocketLike,
        version: str,
        handlers: Mapping[str, Handler],
        *,
        call_timeout: float = 30.0,
        validate_outgoing: bool = False,
        name: str = "",
        on_call_received: Hook | None = None,
        on_message_sent: Hook | None = None,
        before_send: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.version = check_version(version)
        self.name = name or f"ocpp{version}"
        self.call_timeout = call_timeout
        self.validate_outgoing = validate_outgoing
        self.on_call_received = on_call_received
        self.on_message_sent = on_message_sent
        self.before_send = before_send
        self.stats = RpcStats()
        self._ws = ws
        self._validator: Validator = validator(version)
        unknown = sorted(a for a in handlers if not self._validator.knows(a))
        if unknown:
            raise ValueError(f"handlers for actions unknown in OCPP {version}: {unknown}")
        self._handlers = dict(handlers)
        self._queue: asyncio.Queue[Call] = asyncio.Queue()
        self._call_lock = asyncio.Lock()
        self._send_lock = asyncio.Lock()
        self._pending: _Pending | None = None
        self._after_tasks: set[asyncio.Task[None]] = set()
        # (action, error kind) of invalid answers already logged at WARNING: a CSMS that answers
        # one message wrongly does so every time, once a heartbeat interval for Heartbeat.
        self._invalid_logged: set[tuple[str, str]] = set()
        self._started = False
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once `run()` has ended (the socket closed); `call()` then raises ConnectionLost."""
        return self._closed

    # ---------------------------------------------------------------- reading

    async def run(self) -> None:
        """Read and dispatch frames until the socket closes; then cancel everything it owns."""
        if self._started:
            raise RuntimeError(f"{self.name}: run() may be called once")
        self._started = True
        worker = asyncio.create_task(self._work(), name=f"{self.name}-rpc-worker")
        cause: BaseException | None = None
        try:
            while True:
                try:
                    data = await self._ws.recv()
                except (ConnectionClosed, ConnectionError, EOFError) as exc:
                    cause = exc
                    break
                try:
                    await self._on_frame(data)
                except Exception:
                    # Routing a frame has no expected failure left; if one appears anyway, the
                    # frame is lost but the connection must not be.
                    log.exception("%s: failed to process a frame", self.name)
        finally:
            self._closed = True
            lost = ConnectionLost(f"{self.name}: connection closed")
            lost.__cause__ = cause
            pending = self._pending
            if pending is not None and not pending.future.done():
                pending.future.set_exception(lost)
            tasks = [worker, *self._after_tasks]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            log.debug("%s: RPC stopped (%r)", self.name, cause)

    async def _on_frame(self, data: str | bytes) -> None:
        try:
            msg = decode(data, self.version)
        except FrameError as exc:
            await self._on_bad_frame(exc, data)
            return
        if isinstance(msg, Call):
            label = self.action_label(msg.action)
            self.stats.calls_in[label] += 1
            self._hook(self.on_call_received, label)
            if self._queue.qsize() >= self.MAX_QUEUED_CALLS:
                log.warning("%s: %s CALL refused, too many queued", self.name, label)
                busy = GenericError("too many CALLs outstanding")
                err = call_error_for(busy, msg.unique_id, self.version)
                await self._send_quietly(err, label)
                return
            self._queue.put_nowait(msg)
        else:
            self._on_reply(msg)

    def _on_reply(self, msg: CallResult | CallError) -> None:
        pending = self._pending
        if pending is None or pending.unique_id != msg.unique_id or pending.future.done():
            self.stats.replies_dropped += 1
            log.warning(
                "%s: dropped a reply with unknown or stale message id %r", self.name, msg.unique_id
            )
            return
        if isinstance(msg, CallResult):
            self.stats.results_in[pending.action] += 1
            pending.future.set_result(msg.payload)
        else:
            self.stats.errors_in[msg.code if is_known_code(msg.code) else UNKNOWN_CODE] += 1
            pending.future.set_exception(
                CallErrorReceived(msg.code, msg.description, msg.details, action=pending.action)
            )

    async def _on_bad_frame(self, exc: FrameError, data: str | bytes) -> None:
        self.stats.malformed_in += 1
        # Never the frame itself: its payload may hold an idTag or a password.
        log.warning(
            "%s: malformed frame (%s: %s), %d characters, message id %r", self.name, exc.code,
            exc.description, len(data), exc.unique_id,
        )
        pending = self._pending
        if (
            exc.message_type in (CALLRESULT, CALLERROR)
            and pending is not None
            and pending.unique_id == exc.unique_id
            and not pending.future.done()
        ):
            # A broken answer to our CALL: tell the caller now rather than let it time out.
            pending.future.set_exception(exc)
        if exc.answer:
            await self._send_quietly(call_error_for(exc, exc.unique_id, self.version), "")

    # ---------------------------------------------------------------- handling CALLs

    async def _work(self) -> None:
        while True:
            call = await self._queue.get()
            try:
                await self._handle(call)
            except Exception:
                # _handle answers every failure it expects; this keeps the worker alive (and
                # later CALLs answered) should the socket raise something unforeseen.
                log.exception("%s: failed to answer %s", self.name, call.action)

    async def _handle(self, call: Call) -> None:
        after: After | None = None
        unsent: Callable[[], None] | None = None
        answer: CallResult | CallError
        try:
            reply = await self._dispatch(call)
            answer = CallResult(call.unique_id, reply.payload)
            text = encode(answer)
            after, unsent = reply.after, reply.unsent
        except CallErrorReceived as exc:
            log.warning("%s: %s handler got a peer CALLERROR: %s", self.name, call.action, exc)
            answer = call_error_for(exc, call.unique_id, self.version)
            text = self._encode_error(answer)
        except OcppError as exc:
            log.info("%s: answering %s with %s: %s", self.name, call.action, exc.code, exc)
            answer = call_error_for(exc, call.unique_id, self.version)
            text = self._encode_error(answer)
        except Exception:
            log.exception("%s: %s handler crashed", self.name, call.action)
            answer = call_error_for(InternalError(), call.unique_id, self.version)
            text = self._encode_error(answer)
        try:
            await self._send(text)
        except ConnectionLost:
            log.debug("%s: %s answer not sent, connection lost", self.name, call.action)
            if unsent is not None:
                try:
                    unsent()
                except Exception:
                    log.exception("%s: undoing the unsent %s answer failed", self.name,
                                  call.action)
            return
        self._count_answer(answer, self.action_label(call.action))
        if after is not None and not self._closed:
            task = asyncio.create_task(
                self._run_after(after, call.action), name=f"{self.name}-after-{call.action}"
            )
            self._after_tasks.add(task)
            task.add_done_callback(self._after_tasks.discard)

    async def _dispatch(self, call: Call) -> Reply:
        action = call.action
        if not self._validator.knows(action):
            raise ActionNotImplementedError(f"unknown action {action!r}")
        handler = self._handlers.get(action)
        if handler is None:
            raise ActionNotSupportedError(f"{action} is not supported")
        self._validator.request(action, call.payload)
        result = await handler(call.payload)
        reply = result if isinstance(result, Reply) else Reply(result)
        if not isinstance(reply.payload, dict):
            raise TypeError(f"{action} handler returned {type(reply.payload).__name__}, not dict")
        if self.validate_outgoing:
            try:
                self._validator.response(action, reply.payload)
            except OcppError as exc:
                # Our own bug: never send a response our schema says is wrong.
                log.error("%s: %s handler returned an invalid response: %s", self.name, action, exc)
                raise InternalError(f"{action} response failed validation") from exc
        return reply

    async def _run_after(self, after: After, action: str) -> None:
        try:
            await after()
        except Exception:
            log.exception("%s: after-task of %s failed", self.name, action)

    def _encode_error(self, err: CallError) -> str:
        try:
            return encode(err)
        except TypeError:
            # details the handler attached were not JSON-serializable: drop them, keep the code.
            log.exception("%s: CALLERROR details not serializable", self.name)
            return encode(CallError(err.unique_id, err.code, err.description, {}))

    def _count_answer(self, answer: CallResult | CallError, action: str) -> None:
        if isinstance(answer, CallResult):
            self.stats.results_out[action] += 1
        else:
            self.stats.errors_out[answer.code] += 1
        if action:  # "" = an answer to a frame we could not parse: no action to count it under
            self._hook(self.on_message_sent, action)

    # ---------------------------------------------------------------- sending CALLs

    # The timeout parameter is the contract (architecture.md): it must count from when this CALL
    # gets the slot, which an asyncio.timeout() around call() (covering the queueing) cannot do.
    @contextlib.asynccontextmanager
    async def calls_held(self, grace_s: float) -> AsyncIterator[bool]:
        """Hold our own CALLs for the block: wait (at most `grace_s`) until the CALL in flight,
        if any, has its answer, and start no new one until the block ends. Yields whether the
        hold was had in time (False: the block runs anyway, a CALL may still be in flight).

        What a deliberate close needs (link.EndpointBase._reconnect): a CSMS whose answer to
        our CALL fails on the closed socket may drop what we sent just before the close."""
        held = False
        try:
            async with asyncio.timeout(grace_s):
                await self._call_lock.acquire()
            held = True
        except TimeoutError:
            pass
        try:
            yield held
        finally:
            if held:
                self._call_lock.release()

    async def call(
        self,
        action: str,
        payload: Payload,
        timeout: float | None = None,
        *,
        unique_id: str | None = None,
    ) -> Payload:
        """Send a CALL and return the peer's CALLRESULT payload (schema-validated).

        One outstanding CALL at a time: concurrent callers queue on a lock; `timeout` (default
        `call_timeout`) counts from when this CALL gets the slot, not from queueing.

        `unique_id` (default: a fresh UUID4) lets a journaled message be re-sent with the id it
        was first sent with, so a CSMS can recognise the repeat; at most 36 characters.

        Raises CallErrorReceived (peer answered CALLERROR), InvalidAnswer (the peer's response
        failed validation; counted in `stats.answers_invalid`, logged once per action and error
        kind at WARNING), OcppError (our payload, with `validate_outgoing`, failed validation;
        or the action is unknown),
        TimeoutError (no reply in time; the slot is freed and a late reply is dropped),
        ConnectionLost (the socket closed before the reply came).
        """
        if not self._validator.knows(action):
            raise ActionNotImplementedError(f"unknown action {action!r} in OCPP {self.version}")
        if unique_id is not None and not 0 < len(unique_id) <= MAX_UNIQUE_ID:
            raise ValueError(f"unique_id must be 1..{MAX_UNIQUE_ID} characters: {unique_id!r}")
        if self.validate_outgoing:
            self._validator.request(action, payload)
        limit = self.call_timeout if timeout is None else timeout
        async with self._call_lock:
            if self._closed:
                raise ConnectionLost(f"{self.name}: connection closed")
            if unique_id is None:
                unique_id = new_unique_id()
            text = encode(Call(unique_id, action, payload))
            future: asyncio.Future[Payload] = asyncio.get_running_loop().create_future()
            future.add_done_callback(_consume)
            self._pending = _Pending(unique_id, action, future)
            try:
                async with asyncio.timeout(limit):
                    await self._send(text)
                    self.stats.calls_out[action] += 1
                    self._hook(self.on_message_sent, action)
                    result = await future
            except TimeoutError:
                self.stats.timeouts += 1
                log.warning("%s: %s got no reply within %.1f s", self.name, action, limit)
                raise
            finally:
                self._pending = None
        try:
            self._validator.response(action, result)
        except OcppError as exc:
            self.stats.answers_invalid[action] += 1
            first = (action, exc.kind.value) not in self._invalid_logged
            self._invalid_logged.add((action, exc.kind.value))
            log.log(logging.WARNING if first else logging.DEBUG,
                    "%s: invalid %s response from peer: %s%s", self.name, action, exc,
                    " (further ones of this kind are logged at DEBUG)" if first else "")
            raise InvalidAnswer(exc, action=action, payload=result) from exc
        return result

    # ---------------------------------------------------------------- plumbing

    def action_label(self, action: str) -> str:
        """`action` if the version defines it, else UNKNOWN_ACTION: what counters may key on."""
        return action if self._validator.knows(action) else UNKNOWN_ACTION

    async def _send(self, text: str) -> None:
        # The lock keeps the reader's error answers, the worker's answers and call()'s CALLs from
        # interleaving inside a duck-typed socket; websockets itself would cope.
        async with self._send_lock:
            if self.before_send is not None:
                await self.before_send()
            try:
                await self._ws.send(text)
            except (ConnectionClosed, ConnectionError, EOFError) as exc:
                raise ConnectionLost(f"{self.name}: connection closed") from exc

    async def _send_quietly(self, err: CallError, action: str) -> None:
        """Send a CALLERROR from the reader; a closed socket is noticed by the next recv()."""
        try:
            await self._send(self._encode_error(err))
        except ConnectionLost:
            return
        self._count_answer(err, action)

    def _hook(self, hook: Hook | None, action: str) -> None:
        if hook is None:
            return
        try:
            hook(action)
        except Exception:
            log.exception("%s: metrics hook failed", self.name)


__all__ = ["UNKNOWN_ACTION", "UNKNOWN_CODE", "After", "Handler", "Hook", "Reply", "RpcConnection",
           "RpcStats", "WebSocketLike"]
